"""seg_d2's light boundary mask head: a boundary branch grafted onto the mask branch's own RoI features.

Inspired by BMask R-CNN (Cheng et al., "Boundary-preserving Mask R-CNN", ECCV 2020) but NOT the
paper's head (that is :class:`seg_d2.modeling.bmask_head.BoundaryPreservingHead`): the boundary branch
starts from the mask features (a 1x1 conv) instead of its own, finer RoI features from a second
pooler, so it plugs into detectron2's StandardROIHeads unchanged; its output is added back into the
mask features before upsampling, without the paper's fusion conv; and Dice on masks is on by
default. With ROI_MASK_HEAD.NUM_CONV 2 and LIGHT_BOUNDARY_HEAD.NUM_BOUNDARY_CONV 2 it has as many 3x3
convs as detectron2's stock head (4); the boundary predictor only trains and is skipped at inference.
Optional mask scoring (Mask Scoring R-CNN, Huang 2019).
"""
from typing import List, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, get_norm
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY
from detectron2.structures import Instances

from .mask_losses import LOSS_TERMS, mask_and_boundary_losses
from .mask_scoring import MaskIoUHead, mask_head_inference

__all__ = ["LightBoundaryMaskHead"]


def shared_head_args(cfg, input_shape) -> dict:
    """``from_config`` arguments of both boundary heads that come from detectron2's and mask scoring's keys:
    the mask channels, the mask branch (MODEL.ROI_MASK_HEAD) and the MaskIoU head."""
    return {
        "input_shape": input_shape,
        "num_classes": 1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        "conv_dim": cfg.MODEL.ROI_MASK_HEAD.CONV_DIM,
        "num_mask_conv": cfg.MODEL.ROI_MASK_HEAD.NUM_CONV,
        "conv_norm": cfg.MODEL.ROI_MASK_HEAD.NORM,
        "mask_iou_head": MaskIoUHead(cfg, input_shape) if cfg.MODEL.MASK_SCORING.ENABLED else None,
        "mask_iou_weight": cfg.MODEL.MASK_SCORING.LOSS_WEIGHT,
    }


def conv3x3(in_channels: int, out_channels: int, norm: str, stride: int = 1) -> Conv2d:
    """3x3 conv (+ norm) + ReLU, as detectron2's mask heads build them."""
    return Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not norm,
                  norm=get_norm(norm, out_channels), activation=nn.ReLU())


@ROI_MASK_HEAD_REGISTRY.register()
class LightBoundaryMaskHead(nn.Module):
    """Mask head predicting masks and mask boundaries from one RoI feature map (not BMask R-CNN's head).

    Training returns the losses ``loss_mask``, ``loss_mask_dice``, ``loss_boundary``,
    ``loss_boundary_dice`` (those of non-zero weight; and ``loss_mask_iou`` with mask scoring);
    inference adds ``pred_masks`` (N, 1, M, M) to the instances, as detectron2's mask heads do, and
    with mask scoring ``pred_mask_ious`` and ``mask_scores``.
    """

    scores_own_masks = True  # holds its MaskIoU head (MODEL.MASK_SCORING) itself

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
                f"LightBoundaryMaskHead: mask resolution {mask_resolution} must be the RoI pooler "
                f"resolution {pooler_resolution} times a power of two (≥ 2), e.g. {2 * pooler_resolution}"
            )
        self.mask_resolution = mask_resolution
        self.loss_weights = dict(zip(LOSS_TERMS, (mask_bce_weight, mask_dice_weight, boundary_bce_weight,
                                                  boundary_dice_weight, mask_iou_weight)))

        self.mask_fcns = nn.Sequential(*[
            conv3x3(input_shape.channels if k == 0 else conv_dim, conv_dim, conv_norm) for k in range(num_mask_conv)
        ])
        mask_channels = conv_dim if num_mask_conv else input_shape.channels
        # mask -> boundary (1x1), the boundary convs, boundary -> mask (1x1, added to the mask features).
        self.mask_to_boundary = Conv2d(mask_channels, conv_dim, 1, activation=nn.ReLU())
        self.boundary_fcns = nn.Sequential(*[conv3x3(conv_dim, conv_dim, conv_norm) for _ in range(num_boundary_conv)])
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
        h = cfg.MODEL.LIGHT_BOUNDARY_HEAD
        return {
            **shared_head_args(cfg, input_shape),
            "num_boundary_conv": h.NUM_BOUNDARY_CONV,
            "mask_resolution": h.MASK_RESOLUTION,
            "mask_bce_weight": h.MASK_BCE_WEIGHT,
            "mask_dice_weight": h.MASK_DICE_WEIGHT,
            "boundary_bce_weight": h.BOUNDARY_BCE_WEIGHT,
            "boundary_dice_weight": h.BOUNDARY_DICE_WEIGHT,
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
            return mask_and_boundary_losses(mask_logits, boundary_logits, instances, self.loss_weights,
                                            self.mask_iou_head, x)
        return mask_head_inference(mask_logits, instances, self.mask_iou_head, x)
