"""tools/synthesize.py: a generator trained through train_net writes pairs (and COCO instances) that train_net reads
back with its --sem-seg-folder and --coco-dataset flags and trains on; every bad input is refused, naming the file,
before anything is written."""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from tests.conftest import REPO, run_tool
from tests.tools.test_train_net_pix2pix import _args

SYNTHESIZE = REPO / "tools" / "synthesize.py"


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """A tiny Pix2Pix trained 4 iterations through train_net on the shapes scenes: its run folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("seg_d2_train_net_synth", REPO / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("pix2pix_run")
    module.main(_args(out, opts=["MODEL.PIX2PIX.SAMPLE_PERIOD", "0"]))
    return out


def _synthesize(generator, out, *extra):
    return run_tool([str(SYNTHESIZE), "--config-file", str(generator / "config.yaml"), "--weights",
                     str(generator / "model_final.pth"), "--output", str(out), *extra], cwd=REPO)


def test_synthesize_register_and_train(generator, tmp_path):
    out = tmp_path / "synthetic"
    res = _synthesize(generator, out, "--num", "6", "--instances", "--seed", "3")
    assert res.returncode == 0, res.stderr
    images, labels = sorted(os.listdir(out / "images")), sorted(os.listdir(out / "labels"))
    assert images == labels == [f"{k:06d}.png" for k in range(6)]
    assert (out / "classes.txt").read_text().split() == ["background", "circle", "square", "triangle", "star"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["num"] == 6 and manifest["mask_sampler"]["mode"] == "warp+paste"
    assert manifest["generator"]["weights"] == str(generator / "model_final.pth")
    assert len(manifest["generator"]["weights_sha256"]) == 64
    for name in images:  # each image is its label map's size
        assert cv2.imread(str(out / "images" / name)).shape[:2] == cv2.imread(str(out / "labels" / name), 0).shape
    # the instances json: decoded by pycocotools, each class's masks together are exactly its pixels in the label map
    coco = json.loads((out / "instances.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["circle", "square", "triangle", "star"]
    assert len(coco["images"]) == 6 and coco["annotations"]
    for img in coco["images"]:
        label = cv2.imread(str(out / "labels" / img["file_name"]), 0)
        for cat in coco["categories"]:
            anns = [a for a in coco["annotations"] if a["image_id"] == img["id"] and a["category_id"] == cat["id"]]
            union = np.zeros(label.shape, bool)
            for a in anns:
                union |= mask_util.decode(a["segmentation"]).astype(bool)
            assert np.array_equal(union, label == cat["id"]), (img["file_name"], cat["name"])
    # the same seed, the same pairs
    again = _synthesize(generator, tmp_path / "again", "--num", "6", "--instances", "--seed", "3")
    assert again.returncode == 0
    for name in images:
        assert np.array_equal(cv2.imread(str(out / "images" / name)), cv2.imread(str(tmp_path / "again/images" / name)))

    # train_net reads them with its own flags: a U-Net on the semantic folder, a Mask R-CNN on the COCO json
    unet = REPO / "configs/Shapes-SemanticSegmentation/unet_classic_c16_d3_scratch_adam_bs4_160it.yaml"
    res = run_tool([str(REPO / "tools/train_net.py"), "--config-file", str(unet),
                    "--sem-seg-folder", "synth", f"{out}/images", f"{out}/labels", f"{out}/classes.txt",
                    "DATASETS.TRAIN", "('synth',)", "DATASETS.TEST", "('synth',)", "SOLVER.MAX_ITER", "2",
                    "TEST.VIS_NUM_IMAGES", "0", "OUTPUT_DIR", str(tmp_path / "unet")], cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    final = json.loads((tmp_path / "unet" / "metrics.json").read_text().splitlines()[-1])
    assert 0 <= final["sem_seg/mIoU"] <= 100
    rcnn = REPO / "configs/Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"
    res = run_tool([str(REPO / "tools/train_net.py"), "--config-file", str(rcnn),
                    "--coco-dataset", "synth_inst", f"{out}/instances.json", f"{out}/images",
                    "DATASETS.TRAIN", "('synth_inst',)", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "1",
                    "SOLVER.IMS_PER_BATCH", "2", "MODEL.ROI_HEADS.NUM_CLASSES", "4", "OUTPUT_DIR", str(tmp_path / "rcnn")],
                   cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "rcnn" / "model_final.pth").is_file()


def test_bad_inputs_are_refused_before_anything_is_written(generator, tmp_path):
    # an output folder holding a dataset: refused, untouched; --overwrite replaces it
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("a dataset")
    res = _synthesize(generator, out, "--num", "2")
    assert res.returncode == 1 and f"Output folder {out} exists and is not empty" in res.stderr
    assert os.listdir(out) == ["keep.txt"]
    assert _synthesize(generator, out, "--num", "2", "--overwrite").returncode == 0
    assert sorted(os.listdir(out)) == ["classes.txt", "images", "labels", "manifest.json"]

    # a config of another meta-architecture
    res = run_tool([str(SYNTHESIZE), "--config-file", "configs/Shapes-InstanceSegmentation/"
                    "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml", "--weights", str(generator / "model_final.pth"),
                    "--output", str(tmp_path / "a")], cwd=REPO)
    assert res.returncode == 1 and "is a GeneralizedRCNN config: synthesize.py needs a label map -> image" in res.stderr

    # weights of another model under the generator's config
    other = tmp_path / "unet_run"
    other.mkdir()
    import torch

    torch.save({"model": {"backbone.blocks.0.0.0.weight": torch.zeros(16, 3, 3, 3)}}, other / "model_final.pth")
    res = run_tool([str(SYNTHESIZE), "--config-file", str(generator / "config.yaml"), "--weights",
                    str(other / "model_final.pth"), "--output", str(tmp_path / "b")], cwd=REPO)
    assert res.returncode == 1 and "do not fit this config's model: they lack" in res.stderr

    # a source label map with a value the generator was not trained on: the file named (by the folder's own check, at
    # registration; the generator's own check is in tests/modeling/test_pix2pix.py), nothing written
    folder = tmp_path / "odd"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    label = np.zeros((64, 64), np.uint8)
    label[10:20, 10:20] = 9
    cv2.imwrite(str(folder / "images" / "odd.png"), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(folder / "labels" / "odd.png"), label)
    res = _synthesize(generator, tmp_path / "c", "--source", "odd", "--sem-seg-folder", "odd", f"{folder}/images",
                      f"{folder}/labels", "background,circle,square,triangle,star")
    assert res.returncode == 1
    assert f"{folder}/labels/odd.png has values [9]" in res.stderr
    assert not (tmp_path / "c").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".c_tmp")]

    # a label map smaller than the generator takes
    cv2.imwrite(str(folder / "labels" / "odd.png"), np.zeros((64, 4), np.uint8))
    cv2.imwrite(str(folder / "images" / "odd.png"), np.zeros((64, 4, 3), np.uint8))
    res = _synthesize(generator, tmp_path / "c", "--source", "odd", "--sem-seg-folder", "odd", f"{folder}/images",
                      f"{folder}/labels", "background,circle,square,triangle,star")
    assert res.returncode == 1 and f"{folder}/labels/odd.png is 64x4: the generator takes maps of at least 8" in res.stderr


def test_label_maps_from_a_vae_trained_by_train_net(generator, tmp_path):
    """--masks vae: a LabelMapVAE run (train_net, 2 iterations) draws the label maps; its config and weights are in
    the manifest. Without them, or with another model's config, the tool refuses before writing."""
    import importlib.util

    from detectron2.engine import default_argument_parser

    spec = importlib.util.spec_from_file_location("seg_d2_train_net_vae", REPO / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    vae = tmp_path / "vae"
    config = REPO / "configs/Shapes-ImageSynthesis/label_map_vae_c32_d4_z64_bs8_600it.yaml"
    module.main(default_argument_parser().parse_args([
        "--config-file", str(config), "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "MODEL.LABEL_MAP_VAE.SIZE",
        "[64, 64]", "MODEL.LABEL_MAP_VAE.CHANNELS", "8", "TEST.VIS_NUM_IMAGES", "0", "OUTPUT_DIR", str(vae)]))
    final = json.loads((vae / "metrics.json").read_text().splitlines()[-1])
    assert 0 <= final["sem_seg/mIoU"] <= 100  # the reconstruction's, against its input

    out = tmp_path / "from_vae"
    res = _synthesize(generator, out, "--num", "3", "--masks", "vae", "--mask-config", str(vae / "config.yaml"),
                      "--mask-weights", str(vae / "model_final.pth"))
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mask_sampler"]["mode"] == "vae"
    assert manifest["generator"]["mask_vae_weights"] == str(vae / "model_final.pth")
    for name in sorted(os.listdir(out / "labels")):
        label = cv2.imread(str(out / "labels" / name), -1)
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4, 255}
        assert cv2.imread(str(out / "images" / name)).shape[:2] == label.shape

    res = _synthesize(generator, tmp_path / "x", "--masks", "vae")
    assert res.returncode == 1 and "--masks vae needs the VAE's --mask-config and --mask-weights" in res.stderr
    res = _synthesize(generator, tmp_path / "x", "--masks", "vae", "--mask-config", str(generator / "config.yaml"),
                      "--mask-weights", str(generator / "model_final.pth"))
    assert res.returncode == 1 and "is a Pix2Pix config, not a LabelMapVAE's" in res.stderr
    assert not (tmp_path / "x").exists()
