"""seg_d2's config keys, added to a detectron2 config by ``add_seg_d2_config``."""
from detectron2.config import CfgNode as CN


def add_seg_d2_config(cfg):
    """Add seg_d2's config keys (with their defaults) to ``cfg``, in place."""
    cfg.SEG_D2 = CN()
    # Switch MODEL.DEVICE from "cuda" to "cpu" when no GPU is visible, instead of failing.
    cfg.SEG_D2.CPU_FALLBACK = True
