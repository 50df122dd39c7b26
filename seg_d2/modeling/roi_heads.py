"""ROI heads: BMask R-CNN's BoundaryROIHeads and CascadeBoundaryROIHeads (Cheng 2020), which pool RoI
features twice, and MaskScoringROIHeads (Mask Scoring R-CNN, Huang 2019) for detectron2's own mask heads."""
from typing import Dict, List, Optional

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    CascadeROIHeads,
    StandardROIHeads,
    select_foreground_proposals,
)
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, BaseMaskRCNNHead, mask_rcnn_loss
from detectron2.structures import Instances

from .bmask_head import BoundaryPreservingHead
from .mask_scoring import MaskIoUHead, mask_head_inference, mask_scoring_loss

__all__ = ["BoundaryROIHeads", "CascadeBoundaryROIHeads", "MaskScoringROIHeads", "check_mask_scoring_config"]


class _BoundaryMaskPath:
    """The mask path of BMask R-CNN (Cheng et al., "Boundary-preserving Mask R-CNN", ECCV 2020), mixed
    into a detectron2 ROI heads class: it pools twice, for :class:`BoundaryPreservingHead`.

    The mask RoI features come from MODEL.ROI_HEADS.IN_FEATURES at ROI_MASK_HEAD.POOLER_RESOLUTION
    (14), the boundary RoI features from MODEL.BOUNDARY_MASK_HEAD.IN_FEATURES (p2) at
    BOUNDARY_MASK_HEAD.POOLER_RESOLUTION (28); both poolers use ROI_MASK_HEAD.POOLER_TYPE and
    POOLER_SAMPLING_RATIO. Boxes and the rest are the base class's.
    """

    @configurable
    def __init__(self, *, boundary_in_features: Optional[List[str]] = None,
                 boundary_pooler: Optional[ROIPooler] = None, **kwargs):
        """
        Args:
            boundary_in_features: feature maps that the boundary pooler reads (with a mask head).
            boundary_pooler: pooler of the boundary RoI features (with a mask head).
            kwargs: as :class:`StandardROIHeads`; ``mask_head`` must be a :class:`BoundaryPreservingHead`.
        """
        super().__init__(**kwargs)
        if self.mask_on:
            if not isinstance(self.mask_head, BoundaryPreservingHead) or self.mask_pooler is None \
                    or boundary_pooler is None or not boundary_in_features:
                raise ValueError(f"{type(self).__name__} needs a BoundaryPreservingHead, a mask pooler and a "
                                 f"boundary pooler")
            self.boundary_in_features = list(boundary_in_features)
            self.boundary_pooler = boundary_pooler

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        if not cfg.MODEL.MASK_ON:
            return {}
        head_cls = ROI_MASK_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASK_HEAD.NAME)
        if not (isinstance(head_cls, type) and issubclass(head_cls, BoundaryPreservingHead)):
            raise ValueError(
                f"MODEL.ROI_HEADS.NAME {cls.__name__!r} pools mask and boundary RoI features for "
                f"MODEL.ROI_MASK_HEAD.NAME 'BoundaryPreservingHead', got {cfg.MODEL.ROI_MASK_HEAD.NAME!r}"
            )
        if not cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE:
            raise ValueError(f"{cls.__name__} needs a RoI pooler: MODEL.ROI_MASK_HEAD.POOLER_TYPE is empty")
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        boundary_in_features = list(cfg.MODEL.BOUNDARY_MASK_HEAD.IN_FEATURES)
        resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        boundary_resolution = cfg.MODEL.BOUNDARY_MASK_HEAD.POOLER_RESOLUTION

        def pooler(features, size):
            return ROIPooler(output_size=size, scales=tuple(1.0 / input_shape[f].stride for f in features),
                             sampling_ratio=cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO,
                             pooler_type=cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE)

        mask_shape = ShapeSpec(channels=input_shape[in_features[0]].channels, height=resolution, width=resolution)
        boundary_shape = ShapeSpec(channels=input_shape[boundary_in_features[0]].channels,
                                   height=boundary_resolution, width=boundary_resolution)
        return {
            "mask_in_features": in_features,
            "mask_pooler": pooler(in_features, resolution),
            "mask_head": head_cls(cfg, mask_shape, boundary_shape=boundary_shape),
            "boundary_in_features": boundary_in_features,
            "boundary_pooler": pooler(boundary_in_features, boundary_resolution),
        }

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        if not self.mask_on:
            return {} if self.training else instances
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        mask_features = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        boundary_features = self.boundary_pooler([features[f] for f in self.boundary_in_features], boxes)
        return self.mask_head(mask_features, boundary_features, instances)


@ROI_HEADS_REGISTRY.register()
class BoundaryROIHeads(_BoundaryMaskPath, StandardROIHeads):
    """BMask R-CNN's ROI heads (Cheng 2020): StandardROIHeads with BMask R-CNN's two-pooler mask path
    (see :class:`_BoundaryMaskPath`)."""


@ROI_HEADS_REGISTRY.register()
class CascadeBoundaryROIHeads(_BoundaryMaskPath, CascadeROIHeads):
    """Cascade BMask R-CNN (Cheng 2020; the authors' ``CascadeBoundaryROIHeads``): detectron2's
    CascadeROIHeads (Cai & Vasconcelos 2018: MODEL.ROI_BOX_CASCADE_HEAD's stages) with BMask R-CNN's
    two-pooler mask path. As in detectron2's cascade, the mask head trains on the sampled proposals and
    predicts on the last stage's boxes."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        if cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES:
            # detectron2's cascade would silently ignore it: its stages refine the boxes themselves
            raise ValueError("MODEL.ROI_HEADS.NAME 'CascadeBoundaryROIHeads' does not use "
                             "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES (the cascade stages refine the boxes); "
                             "set it to False")
        return super().from_config(cfg, input_shape)


@ROI_HEADS_REGISTRY.register()
class MaskScoringROIHeads(StandardROIHeads):
    """StandardROIHeads plus, with MODEL.MASK_SCORING.ENABLED, a MaskIoU head on the mask branch.

    It works with detectron2's mask heads (MaskRCNNConvUpsampleHead, or any ``BaseMaskRCNNHead``
    that keeps its ``forward``): the MaskIoU head reads the pooled RoI features and the mask head's
    predicted masks, adds ``loss_mask_iou`` in training and ``pred_mask_ious`` / ``mask_scores`` at
    inference. A mask head that scores its masks itself (``LightBoundaryMaskHead``) is left to do so.
    Without mask scoring, this is StandardROIHeads.
    """

    @configurable
    def __init__(self, *, mask_iou_head: Optional[nn.Module] = None, mask_iou_weight: float = 1.0, **kwargs):
        """
        Args:
            mask_iou_head: a :class:`MaskIoUHead`, or None.
            mask_iou_weight: weight of the mask IoU regression loss.
            kwargs: as :class:`StandardROIHeads`.
        """
        super().__init__(**kwargs)
        self.mask_iou_head = mask_iou_head
        self.mask_iou_weight = mask_iou_weight

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        ret = super()._init_mask_head(cfg, input_shape)
        if not cfg.MODEL.MASK_ON or not cfg.MODEL.MASK_SCORING.ENABLED:
            return ret
        mask_head = ret["mask_head"]
        if getattr(mask_head, "mask_iou_head", None) is not None:
            return ret  # the mask head scores its masks itself
        if not isinstance(mask_head, BaseMaskRCNNHead) or type(mask_head).forward is not BaseMaskRCNNHead.forward \
                or ret["mask_pooler"] is None:
            raise ValueError(
                f"MODEL.MASK_SCORING.ENABLED: MaskScoringROIHeads scores masks of mask heads that are "
                f"BaseMaskRCNNHead with its forward and a RoI pooler (MODEL.ROI_MASK_HEAD.POOLER_TYPE), "
                f"but MODEL.ROI_MASK_HEAD.NAME is {cfg.MODEL.ROI_MASK_HEAD.NAME!r}"
            )
        resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
        channels = input_shape[cfg.MODEL.ROI_HEADS.IN_FEATURES[0]].channels
        ret["mask_iou_head"] = MaskIoUHead(cfg, ShapeSpec(channels=channels, height=resolution, width=resolution))
        ret["mask_iou_weight"] = cfg.MODEL.MASK_SCORING.LOSS_WEIGHT
        return ret

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        if self.mask_iou_head is None or not self.mask_on:
            return super()._forward_mask(features, instances)
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
        boxes = [x.proposal_boxes if self.training else x.pred_boxes for x in instances]
        x = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        # BaseMaskRCNNHead.forward, keeping the mask logits for the MaskIoU head.
        mask_logits = self.mask_head.layers(x)
        if self.training:
            loss_mask = mask_rcnn_loss(mask_logits, instances, self.mask_head.vis_period) * self.mask_head.loss_weight
            loss_mask_iou = mask_scoring_loss(self.mask_iou_head, x, mask_logits, instances) * self.mask_iou_weight
            return {"loss_mask": loss_mask, "loss_mask_iou": loss_mask_iou}
        return mask_head_inference(mask_logits, instances, self.mask_iou_head, x)


def check_mask_scoring_config(cfg) -> None:
    """Raise if MODEL.MASK_SCORING.ENABLED would be silently ignored: detectron2's own ROI heads know
    nothing of it, so only MaskScoringROIHeads or a mask head that scores its masks itself
    (BoundaryPreservingHead under BoundaryROIHeads, LightBoundaryMaskHead) can honour it."""
    if not (cfg.MODEL.MASK_ON and cfg.MODEL.MASK_SCORING.ENABLED):
        return
    head_cls = ROI_MASK_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASK_HEAD.NAME)
    if cfg.MODEL.ROI_HEADS.NAME == "MaskScoringROIHeads" or getattr(head_cls, "scores_own_masks", False):
        return
    raise ValueError(
        f"MODEL.MASK_SCORING.ENABLED is True, but neither MODEL.ROI_HEADS.NAME ({cfg.MODEL.ROI_HEADS.NAME!r}) nor "
        f"MODEL.ROI_MASK_HEAD.NAME ({cfg.MODEL.ROI_MASK_HEAD.NAME!r}) scores masks: set MODEL.ROI_HEADS.NAME "
        f"\"MaskScoringROIHeads\" (any detectron2 mask head), or MODEL.ROI_MASK_HEAD.NAME \"BoundaryPreservingHead\" "
        f"(with MODEL.ROI_HEADS.NAME \"BoundaryROIHeads\") or \"LightBoundaryMaskHead\"."
    )
