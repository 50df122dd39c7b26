"""BMask R-CNN as published (Cheng et al., ECCV 2020): BoundaryROIHeads pools mask and boundary RoI
features, BoundaryPreservingHead fuses its two branches both ways; losses, inference, gradients."""
import pytest
import torch
from torch.nn import functional as F

import seg_d2  # noqa: F401
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, mask_rcnn_loss
from detectron2.utils.events import EventStorage
from seg_d2.modeling.bmask_head import BoundaryPreservingHead
from seg_d2.modeling.roi_heads import BoundaryROIHeads

from .test_light_boundary_head import make_cfg as light_cfg
from .test_mask_losses import authors_dice, authors_targets
from .test_light_boundary_head import roi_batch, two_detections
from .test_mask_scoring import image, tiny_rcnn

MASK, BOUNDARY = ShapeSpec(channels=8, height=14, width=14), ShapeSpec(channels=6, height=28, width=28)


def make_cfg(**overrides):
    cfg = light_cfg(**overrides)
    cfg.MODEL.ROI_HEADS.NAME = "BoundaryROIHeads"
    cfg.MODEL.ROI_MASK_HEAD.NAME = "BoundaryPreservingHead"
    return cfg


def make_head(boundary=BOUNDARY, **overrides):
    torch.manual_seed(0)
    return BoundaryPreservingHead(make_cfg(**overrides), MASK, boundary_shape=boundary)


def roi_features(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, 14, 14, generator=g), torch.randn(n, 6, 28, 28, generator=g)


def test_registered_under_the_authors_names():
    assert ROI_MASK_HEAD_REGISTRY.get("BoundaryPreservingHead") is BoundaryPreservingHead
    assert ROI_HEADS_REGISTRY.get("BoundaryROIHeads") is BoundaryROIHeads


def test_layers_shapes_and_the_paper_losses():
    head = make_head()
    # The paper's layout: the 28x28 boundary features are brought to 14x14 by one stride-2 conv.
    assert len(head.boundary_downsample) == 1 and head.boundary_downsample[0].stride == (2, 2)
    assert len(head.mask_fcns) == 2 and len(head.boundary_fcns) == 2
    x, b = roi_features(5)
    instances = roi_batch()
    with EventStorage():
        mask_logits, boundary_logits = head.layers(x, b)
        losses = head(x, b, instances)
    assert mask_logits.shape == boundary_logits.shape == (5, 3, 28, 28)
    # Mask BCE, boundary BCE + Dice; no Dice on masks unless switched on.
    assert set(losses) == {"loss_mask", "loss_boundary", "loss_boundary_dice"}
    with EventStorage():
        # The mask loss is detectron2's Mask R-CNN loss on the same logits.
        assert losses["loss_mask"].item() == pytest.approx(mask_rcnn_loss(mask_logits, instances).item(), rel=1e-5)
    # The boundary losses as the authors' boundary_loss_func computes them: targets from the zero-padded
    # Laplacian of the 28x28 mask targets, BCE with logits, and their Dice on the sigmoid.
    gt = torch.cat([i.gt_masks.crop_and_resize(i.proposal_boxes.tensor, 28) for i in instances]).float()
    classes = torch.cat([i.gt_classes for i in instances])
    picked = boundary_logits[torch.arange(5), classes]
    targets = authors_targets(gt)
    assert targets.sum() > 0
    assert losses["loss_boundary"].item() == pytest.approx(
        F.binary_cross_entropy_with_logits(picked, targets).item(), rel=1e-5)
    assert losses["loss_boundary_dice"].item() == pytest.approx(authors_dice(picked.sigmoid(), targets).item(), rel=1e-5)

    switched = make_head(**{"MODEL.BOUNDARY_MASK_HEAD.MASK_DICE_WEIGHT": 0.5})
    with EventStorage():
        losses = switched(x, b, roi_batch())
    assert losses["loss_mask_dice"].item() == pytest.approx(
        0.5 * authors_dice(mask_logits[torch.arange(5), classes].sigmoid(), gt).item(), rel=1e-5)


def test_both_fusions_carry_gradients_between_the_branches():
    head = make_head()
    x, b = roi_features(5)
    x.requires_grad_(True), b.requires_grad_(True)
    with EventStorage():
        losses = head(x, b, roi_batch())
    # boundary -> mask: the mask loss reaches the boundary branch and its RoI features.
    grads = torch.autograd.grad(losses["loss_mask"], [b, head.boundary_fcns[0].weight, head.boundary_downsample[0].weight],
                                retain_graph=True)
    assert all(g.abs().sum() > 0 for g in grads)
    # mask -> boundary: the boundary losses reach the mask branch and its RoI features.
    grads = torch.autograd.grad(losses["loss_boundary"] + losses["loss_boundary_dice"], [x, head.mask_fcns[0].weight])
    assert all(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("agnostic", [False, True])
def test_inference_skips_the_boundary_predictor_only(agnostic):
    head = make_head(**{"MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": agnostic}).eval()
    x, b = roi_features(2)
    calls = []
    head.boundary_predictor.register_forward_hook(lambda *a: calls.append("predictor"))
    head.boundary_fcns.register_forward_hook(lambda *a: calls.append("fcns"))
    with torch.no_grad():
        (out,) = head(x, b, [two_detections()])
    assert calls == ["fcns"]  # the mask prediction needs the boundary features, not the boundary logits
    assert out.pred_masks.shape == (2, 1, 28, 28)
    with torch.no_grad():
        # ... which is why other boundary RoI features give other masks.
        (other,) = head(x, b + 1, [two_detections()])
    assert not torch.equal(out.pred_masks, other.pred_masks)


def test_boundary_resolution_must_be_the_mask_resolution_times_a_power_of_two():
    with pytest.raises(ValueError, match="boundary RoI resolution 21 .* mask RoI resolution 14 .* power of two"):
        make_head(ShapeSpec(channels=6, height=21, width=21))
    head = make_head(ShapeSpec(channels=6, height=56, width=56))  # two stride-2 convs
    with torch.no_grad():
        mask_logits, _ = head.layers(torch.randn(1, 8, 14, 14), torch.randn(1, 6, 56, 56))
    assert len(head.boundary_downsample) == 2 and mask_logits.shape == (1, 3, 28, 28)


def test_no_foreground_roi_gives_zero_losses_that_reach_every_parameter():
    head = make_head(**{"MODEL.ROI_MASK_HEAD.NUM_CONV": 0})
    with EventStorage():
        losses = head(torch.zeros(0, 8, 14, 14), torch.zeros(0, 6, 28, 28), roi_batch((0,)))
    assert all(v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())  # DistributedDataParallel needs them all


def test_head_fits_masks_and_boundaries():
    """Sixty steps on fixed RoIs: both the mask and the boundary losses go down."""
    head = make_head()
    x, b = roi_features(5)
    instances = roi_batch()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    with EventStorage():
        for _ in range(60):
            losses = head(x, b, instances)
            history.append({k: v.item() for k, v in losses.items()})
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
    for key in ("loss_mask", "loss_boundary", "loss_boundary_dice"):
        assert history[-1][key] < 0.5 * history[0][key], key


# The whole model: a tiny R-18-FPN BMask R-CNN on 64x64 images.

def test_boundary_roi_heads_pool_twice_and_gradients_reach_both_branches_and_the_shared_features():
    model = tiny_rcnn("bmask", False)
    roi_heads = model.roi_heads
    assert roi_heads.boundary_in_features == ["p2"] and roi_heads.mask_in_features == ["p2", "p3", "p4", "p5"]
    seen = {}

    def spy(module, args):
        seen["mask"], seen["boundary"] = args[0].shape, args[1].shape

    roi_heads.mask_head.register_forward_pre_hook(spy)
    features = {}
    model.backbone.register_forward_hook(lambda m, i, out: features.update(out))
    with EventStorage():
        losses = model([image(2), image(1, seed=1)])
    n = seen["mask"][0]
    assert n > 0
    assert seen["mask"] == (n, 16, 14, 14)  # FPN channels, ROI_MASK_HEAD.POOLER_RESOLUTION
    assert seen["boundary"] == (n, 16, 28, 28)  # BOUNDARY_MASK_HEAD.POOLER_RESOLUTION, from p2
    assert {"loss_mask", "loss_boundary", "loss_boundary_dice"} <= set(losses)

    head = roi_heads.mask_head
    mask_branch = [head.mask_fcns[0].weight, head.mask_predictor.weight]
    boundary_branch = [head.boundary_downsample[0].weight, head.boundary_fcns[0].weight]
    for name in ("loss_mask", "loss_boundary"):
        grads = torch.autograd.grad(losses[name], mask_branch + boundary_branch + [features["p2"]], retain_graph=True,
                                    allow_unused=True)
        reached = [g is not None and g.abs().sum() > 0 for g in grads]
        if name == "loss_mask":
            assert all(reached), reached
        else:  # the boundary loss trains everything but the mask predictor
            assert reached == [True, False, True, True, True], reached
    # The boundary pooler reads p2 only; the finest level carries gradients from the boundary loss
    # even where the mask pooler would have assigned the RoIs to coarser levels.
    (p2_grad,) = torch.autograd.grad(losses["loss_boundary"], [features["p2"]])
    assert p2_grad.abs().sum() > 0


def test_boundary_preserving_head_needs_boundary_roi_heads_and_the_other_way_round():
    with pytest.raises(ValueError, match="reads two RoI features.*BoundaryROIHeads"):
        tiny_rcnn("bmask", False, "MODEL.ROI_HEADS.NAME", "StandardROIHeads")
    with pytest.raises(ValueError, match="BoundaryROIHeads.*got 'MaskRCNNConvUpsampleHead'"):
        tiny_rcnn("bmask", False, "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead")
    boxes_only = tiny_rcnn("bmask", False, "MODEL.MASK_ON", False)
    assert not boxes_only.roi_heads.mask_on


def test_model_infers_masks():
    model = tiny_rcnn("bmask", False).eval()
    inputs = [{k: v for k, v in image(0, seed=2).items() if k != "instances"}]
    with torch.no_grad():
        (out,) = model(inputs)
    inst = out["instances"]
    assert len(inst) > 0 and inst.pred_masks.shape == (len(inst), 64, 64) and inst.pred_masks.dtype == torch.bool


# Cascade BMask R-CNN: detectron2's CascadeROIHeads with the same two-pooler mask path.
CASCADE = ("MODEL.ROI_HEADS.NAME", "CascadeBoundaryROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True)


def test_cascade_boundary_roi_heads_are_detectron2s_cascade_with_the_boundary_mask_path():
    from detectron2.modeling.roi_heads import CascadeROIHeads

    from seg_d2.modeling.roi_heads import CascadeBoundaryROIHeads

    assert ROI_HEADS_REGISTRY.get("CascadeBoundaryROIHeads") is CascadeBoundaryROIHeads
    model = tiny_rcnn("bmask", False, *CASCADE)
    roi_heads = model.roi_heads
    assert isinstance(roi_heads, CascadeROIHeads) and roi_heads.num_cascade_stages == 3
    assert isinstance(roi_heads.mask_head, BoundaryPreservingHead) and roi_heads.boundary_pooler.output_size == (28, 28)
    with EventStorage():
        losses = model([image(2), image(1, seed=1)])
    assert {f"loss_cls_stage{k}" for k in range(3)} | {"loss_mask", "loss_boundary", "loss_boundary_dice"} <= set(losses)
    # detectron2's cascade ignores TRAIN_ON_PRED_BOXES; seg_d2 says so rather than train something else
    with pytest.raises(ValueError, match="CascadeBoundaryROIHeads' does not use MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES"):
        tiny_rcnn("bmask", False, *CASCADE, "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", True)


def test_cascade_bmask_rcnn_learns_masks():
    """80 SGD steps on two 64x64 images (three squares): afterwards, every square has a detection among
    the five highest-scored whose mask overlaps it with IoU >= 0.6 (IoU computed here, pixel by pixel)."""
    model = tiny_rcnn("bmask", False, *CASCADE)
    data = [image(2), image(1, seed=1)]
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    with EventStorage():
        for _ in range(80):
            loss = sum(model(data).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        outputs = model([{k: v for k, v in d.items() if k != "instances"} for d in data])
    for d, out in zip(data, outputs):
        inst = out["instances"]
        top = inst.pred_masks[inst.scores.argsort(descending=True)[:5]]
        for gt in d["instances"].gt_masks.tensor:
            best = max(((m & gt).sum() / (m | gt).sum()).item() for m in top)
            assert best >= 0.6, best
