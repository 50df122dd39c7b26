"""Mask scoring (Mask Scoring R-CNN): IoU targets, loss, re-scoring inside the BMask head."""
import pytest
import torch

from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.mask_head import build_mask_head
from detectron2.structures import BitMasks, Instances, PolygonMasks
from detectron2.utils.events import EventStorage
from seg_d2.modeling.mask_scoring import full_mask_areas, mask_iou_inference, mask_iou_loss, mask_iou_targets

from .test_bmask_head import make_cfg, roi_batch, two_detections


def test_mask_iou_target_hand_computed():
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])  # one RoI cell = one image pixel
    gt = torch.zeros(1, 4, 4)
    gt[0, :, :2] = 1  # 8 pixels, all inside the RoI
    pred = torch.zeros(1, 4, 4)
    pred[0, :, :3] = 0.9  # 12 pixels, 8 of them on the gt
    assert mask_iou_targets(pred, gt, box, torch.tensor([8.0])).item() == pytest.approx(8 / 12)

    # The object extends beyond the RoI (16 px in all, 8 inside): the union counts all of it.
    assert mask_iou_targets(gt.clone(), gt, box, torch.tensor([16.0])).item() == pytest.approx(8 / 16)

    # A larger box: one RoI cell is 2x2 image pixels, so 32 image px = 8 cells = the crop: IoU 1.
    big = torch.tensor([[0.0, 0.0, 8.0, 8.0]])
    assert mask_iou_targets(gt.clone(), gt, big, torch.tensor([32.0])).item() == pytest.approx(1.0)

    # Probabilities are binarised at 0.5; an empty prediction has IoU 0.
    assert mask_iou_targets(torch.full((1, 4, 4), 0.4), gt, box, torch.tensor([8.0])).item() == 0.0


def test_full_mask_areas_of_bitmasks_and_polygons():
    bits = torch.zeros(2, 10, 10, dtype=torch.bool)
    bits[0, :3, :4] = True
    bits[1, 5:, 5:] = True
    assert full_mask_areas(BitMasks(bits)).tolist() == [12.0, 25.0]
    polys = PolygonMasks([[[0.0, 0.0, 4.0, 0.0, 4.0, 3.0, 0.0, 3.0]]])
    assert full_mask_areas(polys).tolist() == [12.0]


def test_mask_iou_loss_uses_the_gt_class():
    pred = torch.tensor([[0.1, 0.8, 0.0], [0.5, 0.5, 0.2]])
    loss = mask_iou_loss(pred, torch.tensor([1, 2]), torch.tensor([1.0, 0.0]))
    assert loss.item() == pytest.approx(((0.8 - 1.0) ** 2 + 0.2 ** 2) / 2)


def test_rescoring_multiplies_scores_by_the_predicted_class_iou():
    a, b = Instances((8, 8)), Instances((8, 8))
    a.pred_classes, a.scores = torch.tensor([1, 0]), torch.tensor([0.9, 0.5])
    b.pred_classes, b.scores = torch.tensor([2]), torch.tensor([0.8])
    ious = torch.tensor([[0.1, 0.5, 0.9], [0.4, 0.0, 0.0], [0.3, 0.2, 1.7]])
    mask_iou_inference(ious, [a, b])
    assert torch.allclose(a.scores, torch.tensor([0.45, 0.2]))
    assert torch.allclose(b.scores, torch.tensor([0.8]))  # predicted IoU clamped to 1
    assert torch.allclose(a.pred_mask_ious, torch.tensor([0.5, 0.4]))


def test_bmask_head_with_mask_scoring():
    torch.manual_seed(0)
    head = build_mask_head(make_cfg(**{"MODEL.MASK_SCORING.ENABLED": True}), ShapeSpec(channels=8, height=14, width=14))
    assert head.mask_iou_head is not None
    with EventStorage():
        losses = head(torch.randn(5, 8, 14, 14), roi_batch())
    assert "loss_mask_iou" in losses and torch.isfinite(losses["loss_mask_iou"])
    losses["loss_mask_iou"].backward()
    # The IoU loss trains the MaskIoU head only: the predicted mask enters it detached.
    assert head.mask_iou_head.predictor.weight.grad.abs().sum() > 0
    assert head.mask_predictor.weight.grad is None or head.mask_predictor.weight.grad.abs().sum() == 0

    head.eval()
    det = two_detections()
    with torch.no_grad():
        (out,) = head(torch.randn(2, 8, 14, 14), [det])
    assert out.pred_masks.shape == (2, 1, 28, 28)
    assert torch.allclose(out.scores, torch.tensor([0.9, 0.3]) * out.pred_mask_ious)
