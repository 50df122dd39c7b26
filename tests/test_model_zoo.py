"""seg_d2.model_zoo: seg_d2's configs found from any folder and from an installed wheel, loaded with
seg_d2's keys and the CPU fallback."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from seg_d2 import model_zoo
from tests.conftest import REPO

SEM = "Shapes-SemanticSegmentation/unet_classic_c16_scratch_bs8_600it.yaml"
INSTANCE = "Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"


def test_get_config_file_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: "configs/..." means nothing here
    path = model_zoo.get_config_file(SEM)
    assert os.path.isabs(path) and os.path.isfile(path)
    assert model_zoo.get_config_file("configs/" + SEM) == path  # the repository-relative spelling works too
    assert model_zoo.resolve_config_file("configs/" + SEM) == path
    assert SEM in model_zoo.list_configs() and "Base-UNet.yaml" in model_zoo.list_configs()


def test_unknown_config_names_the_closest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"not one of seg_d2's configs.*Closest: .*unet_classic_c16_scratch"):
        model_zoo.get_config_file("Shapes-SemanticSegmentation/unet_classic_c16.yaml")
    with pytest.raises(FileNotFoundError, match=r"neither a file .* nor one of seg_d2's configs"):
        model_zoo.resolve_config_file("configs/nope.yaml")


@pytest.mark.parametrize("name", [SEM, INSTANCE, "Cityscapes-SemanticSegmentation/unet_R_50_bs8_90k.yaml"])
def test_get_config_has_seg_d2_keys_and_the_cpu_fallback(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = model_zoo.get_config(name)
    assert cfg.MODEL.DEVICE == "cpu"
    assert "SEG_D2" in cfg and "DATASETS" in cfg.SEG_D2  # seg_d2's keys were added before merging
    assert cfg.DATASETS.TRAIN  # the file was merged


def test_get_config_of_a_lazy_config(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = model_zoo.get_config("Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.py")
    assert cfg.train.device == "cpu" and cfg.model.sem_seg_head.num_classes == 5


def test_a_built_wheel_ships_the_configs(tmp_path):
    """pip wheel of (a copy of) the repository, installed into a throwaway folder: the configs come with
    it and model_zoo finds them from another folder, without the repository."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "MANIFEST.in"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "seg_d2", src / "seg_d2", ignore=ignore)
    shutil.copytree(REPO / "configs", src / "configs", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("seg_d2-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"seg_d2/model_zoo/configs/{SEM}" in names and "seg_d2/model_zoo/configs/Base-UNet.yaml" in names
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import seg_d2; from seg_d2 import model_zoo; print(seg_d2.__file__); "
            f"print(model_zoo.get_config_file({SEM!r})); print(model_zoo.get_config({INSTANCE!r}).MODEL.DEVICE)")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    res = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    module, config, device = res.stdout.split()[-3:]
    site = str(tmp_path / "site")
    assert module.startswith(site) and config == os.path.join(site, "seg_d2", "model_zoo", "configs", *SEM.split("/"))
    assert device in ("cpu", "cuda")
