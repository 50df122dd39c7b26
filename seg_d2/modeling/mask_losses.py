"""Losses and targets for per-RoI instance masks (BMask R-CNN, Cheng 2020).

Kept apart from the semantic-segmentation losses: these work on (N, M, M) RoI masks, one Dice
term per instance.
"""
import torch

from ..layers import boundary_band


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss, averaged over instances (Milletari 2016; BMask R-CNN's boundary loss).

    Args:
        logits: (N, ...) predicted logits, one instance per row.
        targets: (N, ...) targets in [0, 1], same shape.
        smooth: added to numerator and denominator, so that an empty target with an empty
            prediction costs 0 rather than 0/0.

    Returns:
        Scalar: mean over the N instances of ``1 - (2|P∩T| + s) / (|P| + |T| + s)``; 0 when N is 0.
    """
    if logits.numel() == 0:
        return logits.sum() * 0
    probs = logits.sigmoid().flatten(1)
    targets = targets.to(probs.dtype).flatten(1)
    inter = (probs * targets).sum(1)
    dice = (2 * inter + smooth) / (probs.sum(1) + targets.sum(1) + smooth)
    return (1 - dice).mean()


def boundary_targets(masks: torch.Tensor) -> torch.Tensor:
    """Boundary targets of binary RoI masks (BMask R-CNN): their inner contour, 1 pixel wide.

    A pixel is boundary when it is inside the mask and has at least one 8-neighbour outside it
    (what the paper's 3x3 Laplacian finds), from the shared band :func:`seg_d2.layers.boundary_band`.
    The RoI's own edge is not a boundary: a proposal's crop cuts objects where they do not end.

    Args:
        masks: (N, M, M) masks (bool or float in [0, 1], binarised at 0.5).

    Returns:
        (N, M, M) float tensor of 0/1.
    """
    m = masks > 0.5
    return (m & boundary_band(m, 1, border_is_boundary=False)).to(torch.float32)
