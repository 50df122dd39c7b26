"""Semantic segmentation losses: cross-entropy, soft Dice, focal and a boundary-band term.

Every loss takes logits ``(N, C, H, W)`` and targets ``(N, H, W)`` (int64) in which ``ignore_value``
marks pixels that are left out. ``C == 1`` is the binary case: a sigmoid over one foreground logit,
targets in {0, 1} (anything else raises ValueError). :class:`SemSegLoss` combines the terms with the
weights chosen in config.
"""
from typing import Dict, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable

from ..layers import boundary_band

LOSS_TYPES = ("ce", "dice", "focal", "boundary")


def _valid(targets: torch.Tensor, ignore_value: int) -> torch.Tensor:
    return targets != ignore_value


def _valid_and_safe(logits, targets, ignore_value):
    """The valid-pixel mask and the targets with 0 at ignored pixels (safe to index with).

    Binary logits (C == 1) need labels in {0, 1}: BCE of any other label is silently wrong
    (label 2 gives a negative loss), so it raises instead.
    """
    valid = _valid(targets, ignore_value)
    safe = torch.where(valid, targets, torch.zeros_like(targets))
    if logits.shape[1] == 1 and ((safe < 0) | (safe > 1)).any():
        bad = torch.unique(targets[valid & ((safe < 0) | (safe > 1))]).tolist()
        raise ValueError(
            f"Binary semantic segmentation (MODEL.SEM_SEG_HEAD.NUM_CLASSES 1) takes labels 0 (background), "
            f"1 (foreground) and {ignore_value} (ignored); the targets have {bad[:10]}"
        )
    return valid, safe


def check_class_weights(num_weights: int, num_classes: int) -> None:
    """Raise ValueError unless there is one weight per class; a binary model (1 logit) has two."""
    expected = max(num_classes, 2)
    if num_weights != expected:
        what = "background and foreground, for NUM_CLASSES 1" if num_classes == 1 else f"for {num_classes} classes"
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS has {num_weights} weights: it needs {expected} ({what})"
        )


def _pixel_ce(logits, targets, ignore_value, class_weights=None):
    """Per-pixel cross-entropy (N, H, W), 0 at ignored pixels, and the per-pixel class weights."""
    valid, safe = _valid_and_safe(logits, targets, ignore_value)
    if logits.shape[1] == 1:
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], safe.to(logits.dtype), reduction="none")
    else:
        loss = F.cross_entropy(logits, safe, reduction="none")
    weights = valid.to(logits.dtype)
    if class_weights is not None:
        weights = weights * class_weights.to(logits)[safe]
    return loss * weights, weights


def cross_entropy_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_value: int = 255,
    class_weights: Optional[torch.Tensor] = None,
    topk_ratio: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy over the non-ignored pixels.

    Args:
        class_weights: (C,) per-class weights ((2,): background, foreground, for C == 1); the loss is
            then the weighted mean ``sum(w_y * l) / sum(w_y)``, as ``F.cross_entropy(weight=...)``.
        topk_ratio: keep only the hardest ``topk_ratio`` fraction of the valid pixels (online hard
            pixel mining, as DeepLab's ``hard_pixel_mining``); 1.0 keeps all.
    """
    loss, weights = _pixel_ce(logits, targets, ignore_value, class_weights)
    valid = _valid(targets, ignore_value)
    if topk_ratio < 1.0:
        loss, weights = loss[valid], weights[valid]
        k = max(1, int(round(topk_ratio * loss.numel()))) if loss.numel() else 0
        loss, idx = torch.topk(loss, k)
        weights = weights[idx]
    return loss.sum() / weights.sum().clamp(min=1e-12)


def _probs_and_onehot(logits, targets, ignore_value):
    """Probabilities and one-hot targets (N, C', H, W), both zeroed at ignored pixels.

    In the binary case (C == 1), C' = 1: the foreground probability and foreground mask.
    """
    valid, safe = _valid_and_safe(logits, targets, ignore_value)
    if logits.shape[1] == 1:
        probs = torch.sigmoid(logits)
        onehot = safe[:, None].to(logits.dtype)
    else:
        probs = F.softmax(logits, dim=1)
        onehot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    mask = valid[:, None].to(logits.dtype)
    return probs * mask, onehot * mask


def dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, ignore_value: int = 255, smooth: float = 1.0
) -> torch.Tensor:
    """Soft Dice loss, ``1 - mean_c (2 |P_c G_c| + s) / (|P_c| + |G_c| + s)`` over the batch.

    Ignored pixels count in neither P nor G. A class absent from both scores 1 (no penalty).
    """
    probs, onehot = _probs_and_onehot(logits, targets, ignore_value)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_value: int = 255,
    gamma: float = 2.0,
    alpha: float = -1.0,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017), ``-alpha_t (1 - p_t)^gamma log p_t``, mean over valid pixels.

    ``alpha < 0`` disables the alpha balancing. In the multi-class case alpha weights every class
    alike, so only the binary case uses ``alpha_t = alpha`` for foreground, ``1 - alpha`` otherwise.
    """
    valid, safe = _valid_and_safe(logits, targets, ignore_value)
    if logits.shape[1] == 1:
        y = safe.to(logits.dtype)
        logp_t = -F.binary_cross_entropy_with_logits(logits[:, 0], y, reduction="none")
        alpha_t = alpha * y + (1 - alpha) * (1 - y) if alpha >= 0 else 1.0
    else:
        logp_t = F.log_softmax(logits, dim=1).gather(1, safe[:, None])[:, 0]
        alpha_t = alpha if alpha >= 0 else 1.0
    loss = -alpha_t * (1 - logp_t.exp()).pow(gamma) * logp_t
    return (loss * valid).sum() / valid.sum().clamp(min=1)


def boundary_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_value: int = 255,
    width: int = 3,
    class_weights: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Cross-entropy restricted to a band of ``width`` pixels around the ground-truth boundaries.

    It puts extra weight where region losses are weakest (cf. the boundary losses of BMask R-CNN,
    Cheng et al. 2020). The band is :func:`seg_d2.layers.boundary_band`, the image border not being a
    boundary (a crop cuts objects). Without any boundary in the batch it is 0 (and keeps the graph
    connected).
    """
    band = boundary_band(targets, width, ignore_value=ignore_value, border_is_boundary=False)
    banded = torch.where(band, targets, torch.full_like(targets, ignore_value))
    if not band.any():
        return logits.sum() * 0.0
    return cross_entropy_loss(logits, banded, ignore_value=ignore_value, class_weights=class_weights)


class SemSegLoss(nn.Module):
    """A weighted combination of the losses above, as chosen in config.

    Returns a dict: ``loss_sem_seg`` for cross-entropy (detectron2's name) and
    ``loss_sem_seg_{dice,focal,boundary}`` for the others, each already multiplied by its weight.
    """

    @configurable
    def __init__(
        self,
        *,
        losses: Sequence[str] = ("ce", "dice"),
        weights: Sequence[float] = (1.0, 1.0),
        ignore_value: int = 255,
        num_classes: Optional[int] = None,
        class_weights: Optional[Sequence[float]] = None,
        topk_ratio: float = 1.0,
        dice_smooth: float = 1.0,
        focal_gamma: float = 2.0,
        focal_alpha: float = -1.0,
        boundary_width: int = 3,
    ):
        """
        Args:
            losses: names from ``LOSS_TYPES``.
            weights: one weight per loss.
            num_classes: if given, ``class_weights`` are checked against it here, else on each call.
            class_weights: per-class weights for the cross-entropy terms ("ce" and "boundary"); two
                (background, foreground) for a binary model.
            topk_ratio: fraction of hardest pixels kept by "ce".
            dice_smooth, focal_gamma, focal_alpha, boundary_width: see the functions above.
        """
        super().__init__()
        losses, weights = list(losses), list(weights)
        unknown = [x for x in losses if x not in LOSS_TYPES]
        if unknown or not losses:
            raise ValueError(f"Unknown semantic segmentation loss(es) {unknown or losses}: choose from {LOSS_TYPES}")
        if len(weights) != len(losses):
            raise ValueError(f"{len(losses)} losses {losses} but {len(weights)} weights {weights}")
        if not 0.0 < topk_ratio <= 1.0:
            raise ValueError(f"topk_ratio must be in (0, 1], got {topk_ratio}")
        if class_weights and num_classes is not None:
            check_class_weights(len(class_weights), num_classes)
        self.losses = dict(zip(losses, weights))
        self.ignore_value = ignore_value
        self.register_buffer(
            "class_weights", torch.tensor(class_weights, dtype=torch.float32) if class_weights else None, False
        )
        self.topk_ratio = topk_ratio
        self.dice_smooth = dice_smooth
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.boundary_width = boundary_width

    @classmethod
    def from_config(cls, cfg):
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            "losses": h.LOSSES,
            "weights": h.LOSS_WEIGHTS,
            "ignore_value": h.IGNORE_VALUE,
            "num_classes": h.NUM_CLASSES,
            "class_weights": list(h.CLASS_WEIGHTS) or None,
            "topk_ratio": h.TOPK_PIXEL_RATIO,
            "dice_smooth": h.DICE_SMOOTH,
            "focal_gamma": h.FOCAL_GAMMA,
            "focal_alpha": h.FOCAL_ALPHA,
            "boundary_width": h.BOUNDARY_WIDTH,
        }

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
        logits = logits.float()  # https://github.com/pytorch/pytorch/issues/48163
        if self.class_weights is not None:
            check_class_weights(self.class_weights.numel(), logits.shape[1])
        out = {}
        for name, weight in self.losses.items():
            if name == "ce":
                value = cross_entropy_loss(
                    logits, targets, ignore_value=self.ignore_value,
                    class_weights=self.class_weights, topk_ratio=self.topk_ratio,
                )
                out["loss_sem_seg"] = value * weight
                continue
            if name == "dice":
                value = dice_loss(logits, targets, ignore_value=self.ignore_value, smooth=self.dice_smooth)
            elif name == "focal":
                value = focal_loss(
                    logits, targets, ignore_value=self.ignore_value, gamma=self.focal_gamma, alpha=self.focal_alpha
                )
            else:
                value = boundary_loss(
                    logits, targets, ignore_value=self.ignore_value, width=self.boundary_width,
                    class_weights=self.class_weights,
                )
            out[f"loss_sem_seg_{name}"] = value * weight
        return out
