"""Boundary-preserving mask head (BMask R-CNN, Cheng 2020), with optional mask scoring
(Mask Scoring R-CNN, Huang 2019).

A mask branch and a boundary branch share the RoI features and exchange features both ways:
mask -> boundary (the boundary branch sees where the object is) and boundary -> mask (the mask
branch sees where its edges are). Boundary targets come from the ground-truth masks on the fly.

Unlike the paper, the boundary branch starts from the mask features (through a 1x1 conv) instead of
a second, finer RoI pooler, so the head plugs into detectron2's StandardROIHeads unchanged; and its
output is added back into the mask features before upsampling, without an extra fusion conv. With
ROI_MASK_HEAD.NUM_CONV 2 and BMASK.NUM_BOUNDARY_CONV 2 the head has as many 3x3 convs as detectron2's
stock head (4); the boundary predictor only trains and is skipped at inference.
"""
from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, mask_rcnn_inference
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from .mask_losses import boundary_targets, dice_loss
from .mask_scoring import MaskIoUHead, mask_iou_inference, mask_scoring_loss

__all__ = ["BoundaryPreservingMaskHead"]


def _conv3x3(in_channels: int, out_channels: int, norm: str) -> Conv2d:
    return Conv2d(in_channels, out_channels, 3, padding=1, bias=not norm, norm=get_norm(norm, out_channels),
                  activation=nn.ReLU())


@ROI_MASK_HEAD_REGISTRY.register()
class BoundaryPreservingMaskHead(nn.Module):
    """Mask head predicting masks and mask boundaries with two feature-exchanging branches.

    Training returns the losses ``loss_mask``, ``loss_mask_dice``, ``loss_boundary``,
    ``loss_boundary_dice`` (and ``loss_mask_iou`` with mask scoring); inference adds ``pred_masks``
    (N, 1, M, M) to the instances, as detectron2's mask heads do, and with mask scoring
    ``pred_mask_ious`` and ``mask_scores``.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dim: int,
        num_mask_conv: int,
        num_boundary_conv: int,
        conv_norm: str = "",
        mask_resolution: int = 28,
        mask_bce_weight: float = 1.0,
        mask_dice_weight: float = 1.0,
        boundary_bce_weight: float = 1.0,
        boundary_dice_weight: float = 1.0,
        mask_iou_head: Optional[nn.Module] = None,
        mask_iou_weight: float = 1.0,
    ):
        """
        Args:
            input_shape: shape (C, P, P) of the RoI features.
            num_classes: number of mask channels: 1 for class-agnostic masks, else #classes.
            conv_dim: width of every conv.
            num_mask_conv, num_boundary_conv: 3x3 convs in the mask and in the boundary branch.
            conv_norm: normalization of the convs (see :func:`detectron2.layers.get_norm`).
            mask_resolution: side M of the predicted masks: P times a power of two (28 or 56 for P=14).
            mask_bce_weight, mask_dice_weight: weights of the mask BCE and Dice losses.
            boundary_bce_weight, boundary_dice_weight: weights of the boundary BCE and Dice losses.
            mask_iou_head: a :class:`MaskIoUHead` to score the masks, or None.
            mask_iou_weight: weight of the mask IoU regression loss.
        """
        super().__init__()
        pooler_resolution = input_shape.height
        num_up = (mask_resolution // pooler_resolution).bit_length() - 1
        if num_up < 1 or pooler_resolution << num_up != mask_resolution:
            raise ValueError(
                f"BoundaryPreservingMaskHead: mask resolution {mask_resolution} must be the RoI pooler "
                f"resolution {pooler_resolution} times a power of two (≥ 2), e.g. {2 * pooler_resolution}"
            )
        self.mask_resolution = mask_resolution
        self.loss_weights = {
            "loss_mask": mask_bce_weight, "loss_mask_dice": mask_dice_weight,
            "loss_boundary": boundary_bce_weight, "loss_boundary_dice": boundary_dice_weight,
            "loss_mask_iou": mask_iou_weight,
        }

        self.mask_fcns = nn.Sequential(*[
            _conv3x3(input_shape.channels if k == 0 else conv_dim, conv_dim, conv_norm) for k in range(num_mask_conv)
        ])
        mask_channels = conv_dim if num_mask_conv else input_shape.channels
        # mask -> boundary (1x1), the boundary convs, boundary -> mask (1x1, added to the mask features).
        self.mask_to_boundary = Conv2d(mask_channels, conv_dim, 1, activation=nn.ReLU())
        self.boundary_fcns = nn.Sequential(*[_conv3x3(conv_dim, conv_dim, conv_norm) for _ in range(num_boundary_conv)])
        self.boundary_to_mask = Conv2d(conv_dim, mask_channels, 1)

        def upsample(channels):
            layers = []
            for _ in range(num_up):
                layers += [ConvTranspose2d(channels, conv_dim, kernel_size=2, stride=2), nn.ReLU()]
                channels = conv_dim
            return nn.Sequential(*layers)

        self.mask_upsample = upsample(mask_channels)
        self.mask_predictor = Conv2d(conv_dim, num_classes, 1)
        self.boundary_upsample = upsample(conv_dim)
        self.boundary_predictor = Conv2d(conv_dim, num_classes, 1)

        for module in [self.mask_fcns, self.boundary_fcns, self.mask_upsample, self.boundary_upsample]:
            for layer in module.modules():
                if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                    weight_init.c2_msra_fill(layer)
        for layer in (self.mask_to_boundary, self.boundary_to_mask):
            weight_init.c2_xavier_fill(layer)
        for layer in (self.mask_predictor, self.boundary_predictor):
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.constant_(layer.bias, 0)
        self.mask_iou_head = mask_iou_head

    @classmethod
    def from_config(cls, cfg, input_shape):
        b = cfg.MODEL.BMASK
        return {
            "input_shape": input_shape,
            "num_classes": 1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dim": cfg.MODEL.ROI_MASK_HEAD.CONV_DIM,
            "num_mask_conv": cfg.MODEL.ROI_MASK_HEAD.NUM_CONV,
            "num_boundary_conv": b.NUM_BOUNDARY_CONV,
            "conv_norm": cfg.MODEL.ROI_MASK_HEAD.NORM,
            "mask_resolution": b.MASK_RESOLUTION,
            "mask_bce_weight": b.MASK_BCE_WEIGHT,
            "mask_dice_weight": b.MASK_DICE_WEIGHT,
            "boundary_bce_weight": b.BOUNDARY_BCE_WEIGHT,
            "boundary_dice_weight": b.BOUNDARY_DICE_WEIGHT,
            "mask_iou_head": MaskIoUHead(cfg, input_shape) if cfg.MODEL.MASK_SCORING.ENABLED else None,
            "mask_iou_weight": cfg.MODEL.MASK_SCORING.LOSS_WEIGHT,
        }

    def layers(self, x: torch.Tensor, with_boundary: bool = True):
        """Returns (mask logits, boundary logits or None), each (N, num_classes, M, M)."""
        m = self.mask_fcns(x)
        b = self.boundary_fcns(self.mask_to_boundary(m))
        m = F.relu(m + self.boundary_to_mask(b))
        mask_logits = self.mask_predictor(self.mask_upsample(m))
        # Boundary predictions only train the shared features: skipped at inference.
        boundary_logits = self.boundary_predictor(self.boundary_upsample(b)) if with_boundary else None
        return mask_logits, boundary_logits

    def forward(self, x: torch.Tensor, instances: List[Instances]):
        """
        Args:
            x: (N, C, P, P) RoI features of all images.
            instances: training: the foreground proposals with ``proposal_boxes``, ``gt_classes`` and
                ``gt_masks``; inference: the detections with ``pred_classes``.

        Returns:
            Training: a dict of losses. Inference: ``instances`` with ``pred_masks`` (and mask scores).
        """
        mask_logits, boundary_logits = self.layers(x, with_boundary=self.training)
        if self.training:
            return self.losses(x, mask_logits, boundary_logits, instances)
        mask_rcnn_inference(mask_logits, instances)
        if self.mask_iou_head is not None:
            probs = cat([i.pred_masks for i in instances])
            mask_iou_inference(self.mask_iou_head(x, probs), instances)
        return instances

    def losses(self, x, mask_logits, boundary_logits, instances: List[Instances]) -> Dict[str, torch.Tensor]:
        """BCE + Dice on masks and on boundaries (+ mask IoU regression), each with its weight."""
        side = mask_logits.size(2)
        gt_masks, gt_classes = [], []
        for inst in instances:
            if len(inst) == 0:
                continue
            gt_masks.append(inst.gt_masks.crop_and_resize(inst.proposal_boxes.tensor, side).to(mask_logits.device))
            gt_classes.append(inst.gt_classes.to(torch.int64))
        if not gt_masks:  # no foreground RoI in the batch: zero losses that keep the graph connected
            zero = mask_logits.sum() * 0 + boundary_logits.sum() * 0
            losses = {k: zero for k in ["loss_mask", "loss_mask_dice", "loss_boundary", "loss_boundary_dice"]}
            if self.mask_iou_head is not None:
                losses["loss_mask_iou"] = mask_scoring_loss(self.mask_iou_head, x, mask_logits, instances)
            return {k: v * self.loss_weights[k] for k, v in losses.items()}

        gt_masks = cat(gt_masks).to(torch.float32)
        gt_classes = cat(gt_classes)
        losses = {}
        if self.mask_iou_head is not None:
            losses["loss_mask_iou"] = mask_scoring_loss(self.mask_iou_head, x, mask_logits, instances, gt_masks)
        idx = torch.arange(len(gt_classes), device=mask_logits.device)
        channel = gt_classes if mask_logits.size(1) > 1 else torch.zeros_like(gt_classes)
        mask_logits = mask_logits[idx, channel]
        boundary_logits = boundary_logits[idx, channel]
        gt_masks = (gt_masks > 0.5).to(torch.float32)
        gt_boundaries = boundary_targets(gt_masks)

        storage = get_event_storage()
        storage.put_scalar("mask_rcnn/accuracy", ((mask_logits > 0) == (gt_masks > 0.5)).float().mean().item())
        storage.put_scalar("bmask/boundary_fraction", gt_boundaries.mean().item())

        losses.update({
            "loss_mask": F.binary_cross_entropy_with_logits(mask_logits, gt_masks),
            "loss_mask_dice": dice_loss(mask_logits, gt_masks),
            "loss_boundary": F.binary_cross_entropy_with_logits(boundary_logits, gt_boundaries),
            "loss_boundary_dice": dice_loss(boundary_logits, gt_boundaries),
        })
        return {k: v * self.loss_weights[k] for k, v in losses.items()}
