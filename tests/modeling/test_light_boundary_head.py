"""LightBoundaryMaskHead (seg_d2's light boundary head, not BMask R-CNN's): registration, shapes, training."""
import pytest
import torch

import seg_d2  # noqa: F401
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, build_mask_head
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage
from seg_d2 import add_seg_d2_config
from seg_d2.modeling.light_boundary_head import LightBoundaryMaskHead


def make_cfg(**overrides):
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.MODEL.ROI_MASK_HEAD.NAME = "LightBoundaryMaskHead"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.MASK_SCORING.CONV_DIM = 16
    cfg.MODEL.MASK_SCORING.FC_DIM = 32
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = getattr(node, p)
        setattr(node, last, value)
    return cfg


def two_detections():
    """Inference-time detections on a 32x32 image, as the box head hands them to the mask head."""
    det = Instances((32, 32))
    det.pred_boxes = Boxes(torch.tensor([[2.0, 3.0, 20.0, 25.0], [0.0, 0.0, 31.0, 31.0]]))
    det.pred_classes = torch.tensor([2, 0])
    det.scores = torch.tensor([0.9, 0.3])
    return det


def roi_batch(n_per_image=(3, 2), size=32, seed=0):
    """Foreground proposals with gt boxes, classes and BitMasks, as StandardROIHeads passes them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in n_per_image:
        inst = Instances((size, size))
        masks = torch.zeros(n, size, size, dtype=torch.bool)
        boxes = []
        for i in range(n):
            x0, y0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
            masks[i, y0:y0 + 10, x0:x0 + 12] = True
            boxes.append([x0 - 1.0, y0 - 2.0, x0 + 13.0, y0 + 11.0])
        inst.proposal_boxes = Boxes(torch.tensor(boxes))
        inst.gt_classes = torch.randint(0, 3, (n,), generator=g)
        inst.gt_masks = BitMasks(masks)
        out.append(inst)
    return out


def test_import_seg_d2_registers_the_head_under_a_name_of_its_own():
    assert ROI_MASK_HEAD_REGISTRY.get("LightBoundaryMaskHead") is LightBoundaryMaskHead
    # Its former name, so close to the paper's "BoundaryPreservingHead", is gone from the registry.
    assert "BoundaryPreservingMaskHead" not in ROI_MASK_HEAD_REGISTRY


@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("resolution", [28, 56])
def test_head_trains_and_infers_at_28_and_56(agnostic, resolution):
    torch.manual_seed(0)
    cfg = make_cfg(**{"MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": agnostic, "MODEL.LIGHT_BOUNDARY_HEAD.MASK_RESOLUTION": resolution})
    head = build_mask_head(cfg, ShapeSpec(channels=8, height=14, width=14))
    assert isinstance(head, LightBoundaryMaskHead)
    instances = roi_batch()
    x = torch.randn(5, 8, 14, 14)
    with EventStorage():
        losses = head(x, instances)
    assert set(losses) == {"loss_mask", "loss_mask_dice", "loss_boundary", "loss_boundary_dice"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for module in (head.mask_to_boundary, head.boundary_to_mask, head.boundary_predictor, head.mask_predictor):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0

    head.eval()
    det = two_detections()
    with torch.no_grad():
        (out,) = head(torch.randn(2, 8, 14, 14), [det])
    assert out.pred_masks.shape == (2, 1, resolution, resolution)
    assert torch.equal(out.scores, torch.tensor([0.9, 0.3]))  # no mask scoring: scores untouched
    # detectron2's post-processing pastes any mask resolution into the image.
    pasted = detector_postprocess(out, 64, 64)
    assert pasted.pred_masks.shape == (2, 64, 64) and pasted.pred_masks.dtype == torch.bool


def test_resolution_must_be_pooler_times_power_of_two():
    cfg = make_cfg(**{"MODEL.LIGHT_BOUNDARY_HEAD.MASK_RESOLUTION": 42})
    with pytest.raises(ValueError, match="mask resolution 42 must be the RoI pooler resolution 14 times a power"):
        build_mask_head(cfg, ShapeSpec(channels=8, height=14, width=14))


def test_no_foreground_roi_gives_zero_losses():
    # NUM_CONV 0 (detectron2's default): the boundary branch reads the RoI features directly.
    head = build_mask_head(make_cfg(**{"MODEL.ROI_MASK_HEAD.NUM_CONV": 0}), ShapeSpec(channels=8, height=14, width=14))
    empty = roi_batch((0,))
    with EventStorage():
        losses = head(torch.zeros(0, 8, 14, 14), empty)
    assert all(v.item() == 0 for v in losses.values())


def test_loss_weights_scale_each_term():
    torch.manual_seed(0)
    head = build_mask_head(make_cfg(), ShapeSpec(channels=8, height=14, width=14))
    torch.manual_seed(0)
    weighted = build_mask_head(make_cfg(**{"MODEL.LIGHT_BOUNDARY_HEAD.MASK_DICE_WEIGHT": 0.0,
                                           "MODEL.LIGHT_BOUNDARY_HEAD.BOUNDARY_BCE_WEIGHT": 3.0}),
                               ShapeSpec(channels=8, height=14, width=14))
    x = torch.randn(5, 8, 14, 14)
    with EventStorage():
        a, b = head(x, roi_batch()), weighted(x, roi_batch())
    assert "loss_mask_dice" not in b  # a term of weight 0 is neither computed nor reported
    assert b["loss_boundary"].item() == pytest.approx(3 * a["loss_boundary"].item(), rel=1e-5)
    assert b["loss_mask"].item() == pytest.approx(a["loss_mask"].item(), rel=1e-5)


def test_head_fits_masks_and_boundaries():
    """Eighty steps on fixed RoIs: both the mask and the boundary losses go down."""
    torch.manual_seed(0)
    head = build_mask_head(make_cfg(), ShapeSpec(channels=8, height=14, width=14))
    instances = roi_batch()
    x = torch.randn(5, 8, 14, 14)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    with EventStorage():
        for _ in range(80):
            losses = head(x, instances)
            history.append({k: v.item() for k, v in losses.items()})
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
    for key in ("loss_mask", "loss_mask_dice", "loss_boundary", "loss_boundary_dice"):
        assert history[-1][key] < 0.5 * history[0][key], key
