"""seg_d2.get_cfg, the entry point for user code: detectron2's config, seg_d2's keys and the CPU fallback
that tools/train_net.py applies, so that build_model works on a machine without GPU."""
import torch

import seg_d2
from detectron2.modeling import build_model
from tests.conftest import REPO

SEM = REPO / "configs" / "Shapes-SemanticSegmentation" / "unet_classic_c16_scratch_bs8_600it.yaml"


def test_seg_d2_get_cfg_builds_a_model_on_cpu(monkeypatch):
    """A machine without GPU: detectron2's get_cfg says MODEL.DEVICE "cuda", and build_model fails with
    "Found no NVIDIA driver"; seg_d2.get_cfg applies the same CPU fallback as tools/train_net.py."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = seg_d2.get_cfg()
    assert cfg.MODEL.DEVICE == "cpu"
    cfg.merge_from_file(str(SEM))
    cfg.MODEL.UNET.BASE_CHANNELS = 4
    model = build_model(cfg)
    assert next(model.parameters()).device.type == "cpu"


def test_apply_cpu_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = seg_d2.get_cfg()
    cfg.MODEL.DEVICE = "cuda:1"
    cfg.freeze()
    assert seg_d2.apply_cpu_fallback(cfg) is cfg and cfg.MODEL.DEVICE == "cpu" and cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.DEVICE, cfg.SEG_D2.CPU_FALLBACK = "cuda", False
    assert seg_d2.apply_cpu_fallback(cfg).MODEL.DEVICE == "cuda"  # switched off: left alone
