"""What every seg_d2 semantic head (U-Net, FCN) shares: its config-derived arguments, and how its
logits meet the image grid (in training and in inference alike) and the binary output contract."""
from typing import Dict, Sequence

import torch
from torch.nn import functional as F

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


def upsample(x: torch.Tensor, factor: int, mode: str = "bilinear") -> torch.Tensor:
    """``x`` (N, C, h, w) upsampled by an integer ``factor`` (``mode`` "bilinear" or "nearest"), to
    (N, C, factor*h, factor*w).

    Applied to logits with the output stride, the result covers the (padded) input, which inference
    then crops to each image (``SemanticSegmentor``) and training to the targets (:func:`crop_to`).
    """
    if factor == 1:
        return x
    if mode == "nearest":
        return F.interpolate(x, scale_factor=factor, mode="nearest")
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)


def stride_ratio(coarse: int, fine: int) -> int:
    """The integer upsampling factor from stride ``coarse`` to stride ``fine``."""
    if coarse % fine:
        raise ValueError(f"Semantic head features of strides {coarse} and {fine}: {coarse} is not a multiple of {fine}")
    return coarse // fine


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The top-left ``size`` (H, W) of ``x`` (..., h, w), h >= H and w >= W.

    Maps upsampled from a coarser grid are cropped, never resized, onto a finer one: inference crops
    the logits to the image (top-left) the same way, so that training meets each label with the
    logit that inference gives its pixel (resizing would shift it by up to one stride).
    """
    h, w = size[0], size[1]  # not int(): under torch.jit.trace sizes are tensors, and int() would freeze them
    if not torch.jit.is_tracing() and (x.shape[-2] < h or x.shape[-1] < w):
        raise ValueError(
            f"An upsampled map of size {tuple(x.shape[-2:])} does not cover ({h}, {w}): the backbone must "
            "round odd feature sizes up (ceil), as detectron2's ResNet and seg_d2's encoders do"
        )
    return x[..., :h, :w]


def two_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """Binary (one foreground logit ``z``, channel dim -3) to two-class logits ``[0, z]``.

    Their softmax is ``[1 - sigmoid(z), sigmoid(z)]``: the argmax is foreground iff sigmoid(z) > 0.5,
    so evaluators, visualizers, sliding window and TTA see a standard 2-class ``sem_seg``. Logits of
    more than one class are returned unchanged.
    """
    if logits.shape[-3] != 1:
        return logits
    return torch.cat([torch.zeros_like(logits), logits], dim=-3)
