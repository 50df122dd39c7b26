"""Every shipped semantic segmentation config parses and builds its model (Cityscapes included)."""
import importlib.util

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.projects.deeplab.lr_scheduler import WarmupPolyLR

from seg_d2 import add_seg_d2_config
from tests.conftest import REPO

CONFIGS = sorted(
    str(p.relative_to(REPO / "configs"))
    for folder in ("Shapes-SemanticSegmentation", "Cityscapes-SemanticSegmentation")
    for p in (REPO / "configs" / folder).glob("*.yaml")
    if not p.name.startswith("Base-")
)


def load(rel):
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / rel))
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_every_family_is_shipped():
    names = " ".join(CONFIGS)
    for family in ("unet_R_50", "unet_classic", "fcn8s_R_50"):
        assert f"Shapes-SemanticSegmentation/{family}" in names and f"Cityscapes-SemanticSegmentation/{family}" in names


@pytest.mark.parametrize("rel", CONFIGS)
def test_config_builds(rel):
    cfg = load(rel)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert cfg.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"
    if rel.startswith("Cityscapes"):
        assert cfg.DATASETS.TRAIN == ("seg_d2_cityscapes_fine_sem_seg_train",)
        assert cfg.DATASETS.TEST == ("seg_d2_cityscapes_fine_sem_seg_val",)
        assert cfg.SOLVER.MAX_ITER == 90000 and cfg.SOLVER.IMS_PER_BATCH == 8
        assert cfg.INPUT.CROP.ENABLED and tuple(cfg.INPUT.CROP.SIZE) == (512, 1024)
        assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 19


def test_trainer_builds_poly_lr():
    spec = importlib.util.spec_from_file_location("seg_d2_train_net", REPO / "tools" / "train_net.py")
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    cfg = load("Cityscapes-SemanticSegmentation/unet_R_50_bs8_90k.yaml")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    assert isinstance(train_net.Trainer.build_lr_scheduler(cfg, opt), WarmupPolyLR)
