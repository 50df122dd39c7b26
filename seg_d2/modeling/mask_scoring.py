"""MaskIoU head (Mask Scoring R-CNN, Huang 2019): predicts the IoU of each predicted mask with its
ground truth, so that inference can rank masks by ``class score * predicted mask IoU``.

That product is each instance's ``mask_scores``, for mask results only: ``scores`` stay the box
classifier's, so box AP does not change with mask scoring. The head needs only the RoI features and
the predicted masks, which a mask head has: the boundary heads (``BoundaryPreservingHead``,
``LightBoundaryMaskHead``) hold one themselves, and ``MaskScoringROIHeads`` adds one to detectron2's
own mask heads.
"""
from typing import List, Optional

import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, cat
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_inference
from detectron2.structures import BitMasks, Instances, PolygonMasks


class MaskIoUHead(nn.Module):
    """Convs over [RoI features, max-pooled mask probabilities], then FCs to one IoU per class."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_classes: int, num_conv: int, conv_dim: int, fc_dim: int):
        """
        Args:
            input_shape: shape of the RoI features given to the mask head (C, P, P).
            num_classes: number of foreground classes; the head predicts one IoU per class.
            num_conv: number of 3x3 convs; the last one has stride 2.
            conv_dim, fc_dim: widths of the convs and of the two hidden FC layers.
        """
        super().__init__()
        self.resolution = input_shape.height
        channels = input_shape.channels + 1  # + the predicted mask
        self.convs = []
        for k in range(num_conv):
            conv = Conv2d(channels, conv_dim, 3, stride=2 if k == num_conv - 1 else 1, padding=1,
                          activation=nn.ReLU())
            self.add_module(f"maskiou_fcn{k + 1}", conv)
            self.convs.append(conv)
            channels = conv_dim
        side = (self.resolution + 1) // 2 if num_conv > 0 else self.resolution
        self.fc1 = nn.Linear(channels * side * side, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.predictor = nn.Linear(fc_dim, num_classes)
        for layer in self.convs:
            weight_init.c2_msra_fill(layer)
        for layer in (self.fc1, self.fc2):
            weight_init.c2_xavier_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "num_conv": cfg.MODEL.MASK_SCORING.NUM_CONV,
            "conv_dim": cfg.MODEL.MASK_SCORING.CONV_DIM,
            "fc_dim": cfg.MODEL.MASK_SCORING.FC_DIM,
        }

    def forward(self, features: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: (N, C, P, P) RoI features.
            mask_probs: (N, 1, M, M) mask probabilities of the class being scored (M ≥ P).

        Returns:
            (N, num_classes) predicted mask IoUs.
        """
        x = torch.cat([features, pool_to(mask_probs, self.resolution)], dim=1)
        for layer in self.convs:
            x = layer(x)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.predictor(x)


def pool_to(mask_probs: torch.Tensor, size: int) -> torch.Tensor:
    """Adaptive max pooling of (N, 1, M, M) to (N, 1, size, size); a plain max pooling (the same
    values) when ``size`` divides M, as it does for every mask head here (28 -> 14): ONNX has no
    adaptive max pooling, and the exporter converts max pooling."""
    m = int(mask_probs.shape[-1])  # the head's fixed mask resolution, a constant in traced graphs too
    if m % size == 0 and int(mask_probs.shape[-2]) == m:
        return F.max_pool2d(mask_probs, m // size)
    return F.adaptive_max_pool2d(mask_probs, size)


def full_mask_areas(gt_masks) -> torch.Tensor:
    """Area in image pixels of each whole ground-truth mask (not only its part inside the RoI)."""
    if isinstance(gt_masks, PolygonMasks):
        return gt_masks.area().to(torch.float32)
    if isinstance(gt_masks, BitMasks):
        return gt_masks.tensor.flatten(1).sum(1).to(torch.float32)
    raise TypeError(f"Mask scoring needs gt_masks as PolygonMasks or BitMasks, got {type(gt_masks)}")


@torch.no_grad()
def mask_iou_targets(pred_masks: torch.Tensor, gt_crops: torch.Tensor, boxes: torch.Tensor,
                     gt_full_areas: torch.Tensor) -> torch.Tensor:
    """IoU of each binarised predicted mask with its whole ground-truth mask (Mask Scoring R-CNN).

    The prediction covers only the RoI, while the ground-truth object may extend beyond it; as in
    the paper, the union uses the whole ground-truth area, converted to RoI-grid pixels.

    Args:
        pred_masks: (N, M, M) predicted masks (bool, or probabilities binarised at 0.5).
        gt_crops: (N, M, M) ground-truth masks cropped to the RoIs and resized to M x M.
        boxes: (N, 4) RoIs (x0, y0, x1, y1) in image pixels.
        gt_full_areas: (N,) area of each whole ground-truth mask in image pixels.

    Returns:
        (N,) IoUs in [0, 1].
    """
    pred = (pred_masks > 0.5).flatten(1).to(torch.float32)
    gt = (gt_crops > 0.5).flatten(1).to(torch.float32)
    m2 = pred.shape[1]
    box_area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6)
    gt_area = (gt_full_areas.to(pred.device) * m2 / box_area).clamp(min=gt.sum(1))  # in RoI-grid pixels
    inter = (pred * gt).sum(1)
    union = pred.sum(1) + gt_area - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-6), torch.zeros_like(union))


def mask_iou_loss(pred_ious: torch.Tensor, classes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L2 loss between the predicted IoU of each RoI's ground-truth class and its IoU target."""
    if pred_ious.numel() == 0:
        return pred_ious.sum() * 0
    selected = pred_ious[torch.arange(len(classes), device=pred_ious.device), classes]
    return F.mse_loss(selected, targets, reduction="mean")


def mask_scoring_loss(mask_iou_head: nn.Module, features: torch.Tensor, mask_logits: torch.Tensor,
                      instances: List[Instances], gt_crops: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The MaskIoU head's L2 loss on the foreground RoIs of a training batch.

    With no foreground RoI (one process of a distributed run may have none) the loss is 0 and still
    depends on every parameter of the head, so that DistributedDataParallel finds all their gradients.

    Args:
        mask_iou_head: the :class:`MaskIoUHead`.
        features: (N, C, P, P) RoI features of the foreground RoIs, as given to the mask head.
        mask_logits: (N, K, M, M) mask logits (K = 1: class-agnostic masks).
        instances: the foreground proposals, N in all, with ``proposal_boxes``, ``gt_classes``, ``gt_masks``.
        gt_crops: (N, M, M) ground-truth masks cropped to the RoIs, if the caller has them already.

    Returns:
        Scalar loss.
    """
    instances = [i for i in instances if len(i)]
    if not instances:
        return sum(p.sum() for p in mask_iou_head.parameters()) * 0.0
    side = mask_logits.size(2)
    boxes = cat([i.proposal_boxes.tensor for i in instances])
    classes = cat([i.gt_classes for i in instances]).to(torch.int64)
    if gt_crops is None:
        gt_crops = cat([i.gt_masks.crop_and_resize(i.proposal_boxes.tensor, side) for i in instances])
    idx = torch.arange(len(classes), device=mask_logits.device)
    channel = classes if mask_logits.size(1) > 1 else torch.zeros_like(classes)
    # The predicted mask enters detached: the IoU loss trains the MaskIoU head only.
    probs = mask_logits[idx, channel].detach().sigmoid()
    areas = cat([full_mask_areas(i.gt_masks) for i in instances])
    targets = mask_iou_targets(probs, gt_crops.to(probs.device), boxes, areas)
    return mask_iou_loss(mask_iou_head(features, probs[:, None]), classes, targets)


def mask_iou_inference(pred_ious: torch.Tensor, pred_instances: List[Instances]) -> None:
    """Add ``pred_mask_ious`` (predicted IoU of the predicted class, clamped to [0, 1]) and
    ``mask_scores = scores * pred_mask_ious`` to each image's instances; ``scores`` are left as they are.
    """
    if len(pred_instances) == 0:
        return
    # Shape operations only, no len(): torch.jit.trace records len() as a constant (detectron2's
    # TracingAdapter patches it in detectron2's modules only), which would fix the exported model to
    # its sample image's number of detections.
    classes = cat([i.pred_classes for i in pred_instances]).to(torch.int64)
    ious = pred_ious.gather(1, classes[:, None])[:, 0].clamp(0, 1)
    for instances, iou in zip(pred_instances, ious.split([i.pred_classes.shape[0] for i in pred_instances])):
        instances.pred_mask_ious = iou
        instances.mask_scores = instances.scores * iou


def mask_head_inference(mask_logits: torch.Tensor, pred_instances: List[Instances],
                        mask_iou_head: Optional[nn.Module] = None,
                        features: Optional[torch.Tensor] = None) -> List[Instances]:
    """detectron2's ``mask_rcnn_inference`` (``pred_masks``), then, with a MaskIoU head reading the
    mask RoI ``features``, ``pred_mask_ious`` and ``mask_scores`` (:func:`mask_iou_inference`)."""
    mask_rcnn_inference(mask_logits, pred_instances)
    if mask_iou_head is not None:
        mask_iou_inference(mask_iou_head(features, cat([i.pred_masks for i in pred_instances])), pred_instances)
    return pred_instances
