"""The config-derived arguments that every seg_d2 semantic head (U-Net, FCN) shares."""
from typing import Dict

from detectron2.layers import ShapeSpec

from .norm import resolve_norm
from .sem_seg_losses import SemSegLoss


def select_head_features(cfg, input_shape: Dict[str, ShapeSpec]) -> Dict[str, ShapeSpec]:
    """The backbone shapes named in ``MODEL.SEM_SEG_HEAD.IN_FEATURES``, with a clear error if absent."""
    wanted = list(cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES)
    missing = [f for f in wanted if f not in input_shape]
    if missing:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.IN_FEATURES {wanted}: the backbone "
            f"{cfg.MODEL.BACKBONE.NAME} has no {missing}; it has {sorted(input_shape)}"
        )
    return {k: v for k, v in input_shape.items() if k in wanted}


def common_head_args(cfg, input_shape: Dict[str, ShapeSpec]) -> dict:
    """``from_config`` arguments shared by the semantic heads: inputs, classes, norm and loss."""
    h = cfg.MODEL.SEM_SEG_HEAD
    return {
        "input_shape": select_head_features(cfg, input_shape),
        "num_classes": h.NUM_CLASSES,
        "norm": resolve_norm(h.NORM, cfg.MODEL.DEVICE),
        "loss": SemSegLoss(cfg),
        "loss_weight": h.LOSS_WEIGHT,
        "ignore_value": h.IGNORE_VALUE,
    }
