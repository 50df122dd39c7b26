"""Selecting a semantic head's input features from the backbone's output shapes."""
from typing import Dict

from detectron2.layers import ShapeSpec


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
