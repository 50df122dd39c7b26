"""Mask scoring (Mask Scoring R-CNN): IoU targets, loss, mask scores from the boundary heads (BMask R-CNN's
BoundaryPreservingHead, the light head) and from MaskScoringROIHeads on detectron2's stock mask head;
box scores never change."""
import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, build_mask_head
from detectron2.structures import BitMasks, Instances, PolygonMasks
from detectron2.utils.events import EventStorage
from seg_d2 import add_seg_d2_config
from seg_d2.modeling.bmask_head import BoundaryPreservingHead
from seg_d2.modeling.mask_scoring import full_mask_areas, mask_iou_inference, mask_iou_loss, mask_iou_targets
from tests.conftest import REPO

from .test_light_boundary_head import make_cfg, roi_batch, two_detections


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


def test_mask_scores_are_scores_times_the_predicted_class_iou_and_scores_stay():
    a, b = Instances((8, 8)), Instances((8, 8))
    a.pred_classes, a.scores = torch.tensor([1, 0]), torch.tensor([0.9, 0.5])
    b.pred_classes, b.scores = torch.tensor([2]), torch.tensor([0.8])
    ious = torch.tensor([[0.1, 0.5, 0.9], [0.4, 0.0, 0.0], [0.3, 0.2, 1.7]])
    mask_iou_inference(ious, [a, b])
    assert torch.allclose(a.mask_scores, torch.tensor([0.45, 0.2]))
    assert torch.allclose(b.mask_scores, torch.tensor([0.8]))  # predicted IoU clamped to 1
    assert torch.allclose(a.pred_mask_ious, torch.tensor([0.5, 0.4]))
    # The box scores (and so box AP) are those of the box head.
    assert torch.equal(a.scores, torch.tensor([0.9, 0.5])) and torch.equal(b.scores, torch.tensor([0.8]))


def boundary_head(kind, **overrides):
    """A boundary head with 8-channel 14x14 mask RoI features, and a call on n RoIs (random features)."""
    torch.manual_seed(0)
    cfg = make_cfg(**overrides)
    shape = ShapeSpec(channels=8, height=14, width=14)
    if kind == "light":
        head = build_mask_head(cfg, shape)
        return head, lambda n, instances: head(torch.randn(n, 8, 14, 14), instances)
    head = BoundaryPreservingHead(cfg, shape, boundary_shape=ShapeSpec(channels=4, height=28, width=28))
    return head, lambda n, instances: head(torch.randn(n, 8, 14, 14), torch.randn(n, 4, 28, 28), instances)


@pytest.mark.parametrize("kind", ["bmask", "light"])
def test_boundary_head_with_mask_scoring(kind):
    head, call = boundary_head(kind, **{"MODEL.MASK_SCORING.ENABLED": True})
    assert head.mask_iou_head is not None
    with EventStorage():
        losses = call(5, roi_batch())
    assert "loss_mask_iou" in losses and torch.isfinite(losses["loss_mask_iou"])
    losses["loss_mask_iou"].backward()
    # The IoU loss trains the MaskIoU head only: the predicted mask enters it detached.
    assert head.mask_iou_head.predictor.weight.grad.abs().sum() > 0
    assert head.mask_predictor.weight.grad is None or head.mask_predictor.weight.grad.abs().sum() == 0

    head.eval()
    raw = []
    head.mask_iou_head.register_forward_hook(lambda m, i, out: raw.append(out))
    with torch.no_grad():
        (out,) = call(2, [two_detections()])
    assert out.pred_masks.shape == (2, 1, 28, 28)
    assert torch.equal(out.scores, torch.tensor([0.9, 0.3]))
    # The paper's mask score, by hand from the MaskIoU head's raw (N, K) output: box score x the IoU
    # predicted for the detected class (classes 2 and 0), clamped to [0, 1].
    (ious,) = raw
    expected = [0.9 * min(max(ious[0, 2].item(), 0.0), 1.0), 0.3 * min(max(ious[1, 0].item(), 0.0), 1.0)]
    assert out.mask_scores.tolist() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", ["bmask", "light"])
def test_boundary_head_without_foreground_rois_still_trains_every_mask_iou_parameter(kind):
    # One DDP process may sample no foreground RoI: its MaskIoU head parameters need (zero) gradients.
    head, call = boundary_head(kind, **{"MODEL.MASK_SCORING.ENABLED": True})
    with EventStorage():
        losses = call(0, roi_batch((0, 0)))
    assert losses["loss_mask_iou"].item() == 0
    sum(losses.values()).backward()
    for name, p in head.mask_iou_head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() == 0, name


# A tiny R-18-FPN Mask R-CNN on 64x64 images, with BMask R-CNN's head, the light head or detectron2's stock head.
HEADS = {
    "bmask": ["MODEL.ROI_HEADS.NAME", "BoundaryROIHeads", "MODEL.ROI_MASK_HEAD.NAME", "BoundaryPreservingHead"],
    "light": ["MODEL.ROI_MASK_HEAD.NAME", "LightBoundaryMaskHead", "MODEL.ROI_MASK_HEAD.NUM_CONV", 2],
    "stock": ["MODEL.ROI_HEADS.NAME", "MaskScoringROIHeads"],
}


def tiny_rcnn(head, scoring, *opts):
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(REPO / "configs/Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", 16, "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
        "MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.MASK_SCORING.CONV_DIM", 16, "MODEL.MASK_SCORING.FC_DIM", 32,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "INPUT.MASK_FORMAT", "bitmask", "MODEL.MASK_SCORING.ENABLED", scoring, *HEADS[head], *opts,
    ])
    torch.manual_seed(0)
    return build_model(cfg)


def image(n_objects, seed=0):
    """A 64x64 image with ``n_objects`` gt squares, as a dataset mapper gives it."""
    g = torch.Generator().manual_seed(seed)
    inst = Instances((64, 64))
    masks = torch.zeros(n_objects, 64, 64, dtype=torch.bool)
    for i in range(n_objects):
        y, x = torch.randint(0, 40, (2,), generator=g).tolist()
        masks[i, y:y + 20, x:x + 20] = True
    inst.gt_masks = BitMasks(masks)
    inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
    inst.gt_classes = torch.arange(n_objects) % 4
    return {"image": torch.rand(3, 64, 64, generator=g) * 255, "instances": inst, "height": 64, "width": 64}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_model_trains_the_mask_iou_head_with_and_without_foreground(head):
    model = tiny_rcnn(head, True)
    mask_iou_head = model.roi_heads.mask_iou_head if head == "stock" else model.roi_heads.mask_head.mask_iou_head
    assert mask_iou_head is not None
    with EventStorage():
        losses = model([image(2), image(1, seed=1)])
        assert torch.isfinite(losses["loss_mask_iou"]) and losses["loss_mask_iou"] > 0
        sum(losses.values()).backward()
        assert mask_iou_head.predictor.weight.grad.abs().sum() > 0

        # No ground truth, so no foreground RoI: the loss is 0 and every parameter gets a zero gradient.
        model.zero_grad(set_to_none=True)
        losses = model([image(0), image(0, seed=1)])
        assert losses["loss_mask_iou"].item() == 0
        sum(losses.values()).backward()
    for name, p in mask_iou_head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() == 0, name


@pytest.mark.parametrize("head", sorted(HEADS))
def test_mask_scoring_leaves_boxes_and_scores_unchanged(head):
    plain, scored = tiny_rcnn(head, False).eval(), tiny_rcnn(head, True).eval()
    missing = scored.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all("mask_iou_head." in k for k in missing)  # the models differ by the MaskIoU head only
    inputs = [{k: v for k, v in image(0, seed=2).items() if k != "instances"}]
    mask_iou_head = scored.roi_heads.mask_iou_head if head == "stock" else scored.roi_heads.mask_head.mask_iou_head
    raw = []
    mask_iou_head.register_forward_hook(lambda m, i, out: raw.append(out))
    with torch.no_grad():
        (a,), (b,) = plain(inputs), scored(inputs)
    a, b = a["instances"], b["instances"]
    assert len(a) > 0 and not a.has("mask_scores")
    assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor) and torch.equal(a.scores, b.scores)
    assert torch.equal(a.pred_masks, b.pred_masks)
    # box score x the raw IoU of the detected class, clamped, one detection at a time (Huang 2019)
    (ious,) = raw
    expected = [s * min(max(ious[i, c].item(), 0.0), 1.0)
                for i, (s, c) in enumerate(zip(b.scores.tolist(), b.pred_classes.tolist()))]
    assert b.mask_scores.tolist() == pytest.approx(expected, rel=1e-6)


def test_mask_scoring_roi_heads_without_scoring_is_standard_roi_heads():
    plain = tiny_rcnn("stock", False, "MODEL.ROI_HEADS.NAME", "StandardROIHeads")
    ours = tiny_rcnn("stock", False)
    assert ours.roi_heads.mask_iou_head is None
    assert plain.state_dict().keys() == ours.state_dict().keys()


@ROI_MASK_HEAD_REGISTRY.register()
class _MaskHeadOfItsOwn(nn.Module):
    """A mask head that is no BaseMaskRCNNHead: the MaskIoU head cannot read its masks."""

    def __init__(self, cfg, input_shape):
        super().__init__()


def test_mask_scoring_with_an_unsupported_mask_head_fails_at_build_time():
    with pytest.raises(ValueError, match="MODEL.MASK_SCORING.ENABLED.*MODEL.ROI_MASK_HEAD.NAME is '_MaskHeadOfItsOwn'"):
        tiny_rcnn("stock", True, "MODEL.ROI_MASK_HEAD.NAME", "_MaskHeadOfItsOwn")
