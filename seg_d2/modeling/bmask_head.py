"""BMask R-CNN's boundary-preserving mask head.

T. Cheng, X. Wang, L. Huang, W. Liu, "Boundary-preserving Mask R-CNN", ECCV 2020 (arXiv:2007.08921);
the authors' detectron2 project is hustvl/BMaskR-CNN. The head has two sub-networks that read their
own RoI features and exchange features both ways (the paper's Fig. 2):

- mask sub-network: ``ROI_MASK_HEAD.NUM_CONV`` 3x3 convs on the P x P (14 x 14) mask RoI features;
- boundary sub-network: its own, finer RoI features (``BOUNDARY_MASK_HEAD.POOLER_RESOLUTION``, 28 x 28,
  from ``BOUNDARY_MASK_HEAD.IN_FEATURES``, p2), brought to P x P by a stride-2 3x3 conv;
- mask -> boundary fusion: a 1x1 conv of the mask features is added to the boundary features, then
  ``BOUNDARY_MASK_HEAD.NUM_CONV`` 3x3 convs;
- boundary -> mask fusion: a 1x1 conv of the boundary features is added to the mask features, then a
  3x3 fusion conv;
- each sub-network ends with a 2x2 stride-2 deconv and a 1x1 predictor: 2P x 2P (28 x 28) mask and
  boundary logits, one channel per class (or one, class-agnostic).

Losses as in the paper: BCE on masks; BCE + Dice on boundaries, whose targets are the boundaries of
the ground-truth masks (:func:`~seg_d2.modeling.mask_losses.boundary_targets`: the authors' zero-padded
3x3 Laplacian, so mask pixels on the RoI edge are boundary). Dice on masks is not in the paper; it is
a switch (``BOUNDARY_MASK_HEAD.MASK_DICE_WEIGHT`` > 0). The mask prediction depends on the boundary
features, so the boundary sub-network runs at inference too; only its deconv and predictor, which
feed nothing but the boundary loss, are skipped. Optional mask scoring (Mask Scoring R-CNN, Huang
2019) on the mask RoI features and the predicted masks.

The head needs both RoI features: build it inside :class:`seg_d2.modeling.roi_heads.BoundaryROIHeads`
(or :class:`~seg_d2.modeling.roi_heads.CascadeBoundaryROIHeads`).
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

from .light_boundary_head import conv3x3, shared_head_args
from .mask_losses import LOSS_TERMS, mask_and_boundary_losses
from .mask_scoring import mask_head_inference

__all__ = ["BoundaryPreservingHead"]


@ROI_MASK_HEAD_REGISTRY.register()
class BoundaryPreservingHead(nn.Module):
    """BMask R-CNN's boundary-preserving mask head (Cheng et al., ECCV 2020).

    ``forward(mask_features, boundary_features, instances)``: in training, returns the losses
    ``loss_mask`` (BCE), ``loss_boundary`` (BCE), ``loss_boundary_dice`` (and ``loss_mask_dice``
    when switched on, ``loss_mask_iou`` with mask scoring); in inference, adds ``pred_masks``
    (N, 1, 2P, 2P) to the instances (and, with mask scoring, ``pred_mask_ious`` and ``mask_scores``).
    """

    scores_own_masks = True  # holds its MaskIoU head (MODEL.MASK_SCORING) itself

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        boundary_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dim: int,
        num_mask_conv: int,
        num_boundary_conv: int,
        conv_norm: str = "",
        mask_bce_weight: float = 1.0,
        mask_dice_weight: float = 0.0,
        boundary_bce_weight: float = 1.0,
        boundary_dice_weight: float = 1.0,
        mask_iou_head: Optional[nn.Module] = None,
        mask_iou_weight: float = 1.0,
    ):
        """
        Args:
            input_shape: shape (C, P, P) of the mask RoI features.
            boundary_shape: shape (C', B, B) of the boundary RoI features, B = P x 2^k (the paper: 28 = 2 x 14).
            num_classes: number of mask channels: 1 for class-agnostic masks, else #classes.
            conv_dim: width of every conv.
            num_mask_conv, num_boundary_conv: 3x3 convs of the mask and of the boundary sub-network
                (the paper: 4 and 2).
            conv_norm: normalization of the convs (see :func:`detectron2.layers.get_norm`).
            mask_bce_weight, mask_dice_weight: weights of the mask BCE and Dice losses (paper: 1, 0).
            boundary_bce_weight, boundary_dice_weight: weights of the boundary BCE and Dice losses (paper: 1, 1).
            mask_iou_head: a :class:`MaskIoUHead` to score the masks, or None.
            mask_iou_weight: weight of the mask IoU regression loss.
        """
        super().__init__()
        p, b = input_shape.height, boundary_shape.height
        num_down = (b // p).bit_length() - 1
        if b < p or p << num_down != b:
            raise ValueError(
                f"BoundaryPreservingHead: the boundary RoI resolution {b} (MODEL.BOUNDARY_MASK_HEAD.POOLER_RESOLUTION) "
                f"must be the mask RoI resolution {p} (MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION) times a power "
                f"of two, e.g. {2 * p}"
            )
        self.loss_weights = dict(zip(LOSS_TERMS, (mask_bce_weight, mask_dice_weight, boundary_bce_weight,
                                                  boundary_dice_weight, mask_iou_weight)))
        self.mask_fcns = nn.Sequential(*[
            conv3x3(input_shape.channels if k == 0 else conv_dim, conv_dim, conv_norm) for k in range(num_mask_conv)
        ])
        mask_channels = conv_dim if num_mask_conv else input_shape.channels
        # B x B -> P x P: stride-2 3x3 convs (the paper: one, 28 -> 14); at B = P one stride-1 3x3 conv.
        self.boundary_downsample = nn.Sequential(*[
            conv3x3(boundary_shape.channels if k == 0 else conv_dim, conv_dim, conv_norm, stride=2 if num_down else 1)
            for k in range(max(num_down, 1))
        ])
        self.mask_to_boundary = Conv2d(mask_channels, conv_dim, 1, bias=not conv_norm,
                                       norm=get_norm(conv_norm, conv_dim), activation=nn.ReLU())
        self.boundary_fcns = nn.Sequential(*[conv3x3(conv_dim, conv_dim, conv_norm) for _ in range(num_boundary_conv)])
        self.boundary_to_mask = Conv2d(conv_dim, mask_channels, 1, bias=not conv_norm,
                                       norm=get_norm(conv_norm, mask_channels), activation=nn.ReLU())
        self.mask_fusion = conv3x3(mask_channels, conv_dim, conv_norm)
        self.mask_deconv = ConvTranspose2d(conv_dim, conv_dim, kernel_size=2, stride=2)
        self.mask_predictor = Conv2d(conv_dim, num_classes, 1)
        self.boundary_deconv = ConvTranspose2d(conv_dim, conv_dim, kernel_size=2, stride=2)
        self.boundary_predictor = Conv2d(conv_dim, num_classes, 1)

        for module in (self.mask_fcns, self.boundary_downsample, self.mask_to_boundary, self.boundary_fcns,
                       self.boundary_to_mask, self.mask_fusion, self.mask_deconv, self.boundary_deconv):
            for layer in module.modules():
                if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                    weight_init.c2_msra_fill(layer)
        for layer in (self.mask_predictor, self.boundary_predictor):
            nn.init.normal_(layer.weight, std=0.001)
            nn.init.constant_(layer.bias, 0)
        self.mask_iou_head = mask_iou_head

    @classmethod
    def from_config(cls, cfg, input_shape, boundary_shape=None):
        if boundary_shape is None:
            raise ValueError(
                "MODEL.ROI_MASK_HEAD.NAME 'BoundaryPreservingHead' reads two RoI features (mask and boundary): "
                "set MODEL.ROI_HEADS.NAME 'BoundaryROIHeads' (or 'CascadeBoundaryROIHeads'), which pools both"
            )
        h = cfg.MODEL.BOUNDARY_MASK_HEAD
        return {
            **shared_head_args(cfg, input_shape),
            "boundary_shape": boundary_shape,
            "num_boundary_conv": h.NUM_CONV,
            "mask_dice_weight": h.MASK_DICE_WEIGHT,
            "boundary_bce_weight": h.BOUNDARY_BCE_WEIGHT,
            "boundary_dice_weight": h.BOUNDARY_DICE_WEIGHT,
        }

    def layers(self, mask_features: torch.Tensor, boundary_features: torch.Tensor, with_boundary: bool = True):
        """Returns (mask logits, boundary logits or None), each (N, num_classes, 2P, 2P)."""
        m = self.mask_fcns(mask_features)
        b = self.boundary_downsample(boundary_features)
        b = self.boundary_fcns(b + self.mask_to_boundary(m))  # mask -> boundary fusion
        m = self.mask_fusion(m + self.boundary_to_mask(b))  # boundary -> mask fusion
        mask_logits = self.mask_predictor(F.relu(self.mask_deconv(m)))
        # The boundary predictions feed only the boundary loss: skipped at inference.
        boundary_logits = self.boundary_predictor(F.relu(self.boundary_deconv(b))) if with_boundary else None
        return mask_logits, boundary_logits

    def forward(self, mask_features: torch.Tensor, boundary_features: torch.Tensor, instances: List[Instances]):
        """
        Args:
            mask_features: (N, C, P, P) mask RoI features of all images.
            boundary_features: (N, C', B, B) boundary RoI features of the same RoIs.
            instances: training: the foreground proposals with ``proposal_boxes``, ``gt_classes`` and
                ``gt_masks``; inference: the detections with ``pred_classes``.

        Returns:
            Training: a dict of losses. Inference: ``instances`` with ``pred_masks`` (and mask scores).
        """
        if self.training:
            mask_logits, boundary_logits = self.layers(mask_features, boundary_features)
            return mask_and_boundary_losses(mask_logits, boundary_logits, instances, self.loss_weights,
                                            self.mask_iou_head, mask_features)
        if torch.jit.is_tracing():
            # Exported: one zero RoI more, dropped after the layers. onnxruntime's NCHWc layout optimisation
            # (on by default on x86 CPUs) cannot prove that the two fusion Adds' inputs, from two RoI poolers,
            # have one shape, and reshapes both to (0, -1, 0, 0, block): no solution for 0 RoIs, so an image
            # without detections failed.
            num_rois = mask_features.shape[0]
            pad_one = [0, 0] * (mask_features.dim() - 1) + [0, 1]  # F.pad's order: last dim first
            mask_logits, _ = self.layers(F.pad(mask_features, pad_one), F.pad(boundary_features, pad_one),
                                         with_boundary=False)
            mask_logits = mask_logits[:num_rois]
        else:
            mask_logits, _ = self.layers(mask_features, boundary_features, with_boundary=False)
        return mask_head_inference(mask_logits, instances, self.mask_iou_head, mask_features)
