"""Losses and targets for per-RoI instance masks (BMask R-CNN, Cheng 2020).

Kept apart from the semantic-segmentation losses: these work on (N, M, M) RoI masks, one Dice
term per instance.
"""
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import cat
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from ..layers import boundary_band
from .mask_scoring import mask_scoring_loss

# The loss terms of the boundary heads, in the order of their weight arguments; the last is mask scoring's.
LOSS_TERMS = ("loss_mask", "loss_mask_dice", "loss_boundary", "loss_boundary_dice", "loss_mask_iou")


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
    """Boundary targets of binary RoI masks, as the BMask R-CNN authors compute them (Cheng 2020,
    hustvl/BMaskR-CNN ``boundary_loss_func``): a 3x3 Laplacian of the mask target, zero-padded, > 0.

    A pixel is boundary when it is inside the mask and has an 8-neighbour outside it, the outside
    of the RoI included: mask pixels on the RoI's edge are boundary (a box that fits its object ends
    exactly there, and Boundary AP scores those pixels). This is
    :func:`seg_d2.layers.mask_boundary` of width 1 with the border as background.

    Args:
        masks: (N, M, M) masks (bool or float in [0, 1], binarised at 0.5).

    Returns:
        (N, M, M) float tensor of 0/1.
    """
    m = masks > 0.5
    return (m & boundary_band(m, 1, border_is_boundary=True)).to(torch.float32)


def mask_and_boundary_losses(
    mask_logits: torch.Tensor,
    boundary_logits: torch.Tensor,
    instances: List[Instances],
    weights: Dict[str, float],
    mask_iou_head: Optional[nn.Module] = None,
    features: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """Training losses of a mask head with a boundary branch, each times its weight.

    ``loss_mask`` / ``loss_mask_dice``: BCE / Dice of the masks; ``loss_boundary`` /
    ``loss_boundary_dice``: BCE / Dice of the boundaries, whose targets are :func:`boundary_targets`
    of the ground-truth masks at the logits' resolution; ``loss_mask_iou``: the MaskIoU head's loss
    (with ``mask_iou_head``). A term of weight 0 is neither computed nor returned.

    Args:
        mask_logits, boundary_logits: (N, K, M, M) logits (K = 1: class-agnostic) of the N
            foreground RoIs.
        instances: the foreground proposals, N in all, with ``proposal_boxes``, ``gt_classes``, ``gt_masks``.
        weights: weight of each term, keys :data:`LOSS_TERMS`.
        mask_iou_head, features: the MaskIoU head and the (N, C, P, P) mask RoI features it reads.
    """
    terms = [k for k in LOSS_TERMS if k != "loss_mask_iou" and weights[k] != 0]
    side = mask_logits.size(2)
    gt_masks, gt_classes = [], []
    for inst in instances:
        if len(inst) == 0:
            continue
        gt_masks.append(inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor, side).to(mask_logits.device))
        gt_classes.append(inst.gt_classes.to(torch.int64))
    losses = {}
    if not gt_masks:  # no foreground RoI in the batch: zero losses that keep the graph connected
        zero = mask_logits.sum() * 0 + boundary_logits.sum() * 0
        losses = {k: zero for k in terms}
        if mask_iou_head is not None:
            losses["loss_mask_iou"] = mask_scoring_loss(mask_iou_head, features, mask_logits, instances)
        return {k: v * weights[k] for k, v in losses.items()}

    gt_masks = cat(gt_masks).to(torch.float32)
    gt_classes = cat(gt_classes)
    if mask_iou_head is not None:
        losses["loss_mask_iou"] = mask_scoring_loss(mask_iou_head, features, mask_logits, instances, gt_masks)
    idx = torch.arange(len(gt_classes), device=mask_logits.device)
    channel = gt_classes if mask_logits.size(1) > 1 else torch.zeros_like(gt_classes)
    mask_logits = mask_logits[idx, channel]
    boundary_logits = boundary_logits[idx, channel]
    gt_masks = (gt_masks > 0.5).to(torch.float32)
    gt_boundaries = boundary_targets(gt_masks)

    storage = get_event_storage()
    storage.put_scalar("mask_rcnn/accuracy", ((mask_logits > 0) == (gt_masks > 0.5)).float().mean().item())
    storage.put_scalar("bmask/boundary_fraction", gt_boundaries.mean().item())

    compute = {
        "loss_mask": lambda: F.binary_cross_entropy_with_logits(mask_logits, gt_masks),
        "loss_mask_dice": lambda: dice_loss(mask_logits, gt_masks),
        "loss_boundary": lambda: F.binary_cross_entropy_with_logits(boundary_logits, gt_boundaries),
        "loss_boundary_dice": lambda: dice_loss(boundary_logits, gt_boundaries),
    }
    losses.update({k: compute[k]() for k in terms})
    return {k: v * weights[k] for k, v in losses.items()}
