"""SegD2PanopticFPN pastes mask-scored instances in mask_scores order; detectron2's PanopticFPN with mask scoring is
refused; build_resnet_unet_fpn_backbone gives detectron2's FPN levels plus the fine features."""
from unittest import mock

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import PanopticFPN, build_backbone
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.structures import Instances
from seg_d2 import add_seg_d2_config
from seg_d2.modeling import SegD2PanopticFPN, check_model_config

H = W = 8


def _instances(with_mask_scores):
    # two overlapping squares: A (box score 0.9) rows/cols 0-4, B (box score 0.8) rows/cols 2-6, overlap 3x3 = 9 px
    a, b = torch.zeros(H, W, dtype=torch.bool), torch.zeros(H, W, dtype=torch.bool)
    a[0:5, 0:5] = True
    b[2:7, 2:7] = True
    inst = Instances((H, W), pred_masks=torch.stack([a, b]), scores=torch.tensor([0.9, 0.8]),
                     pred_classes=torch.tensor([0, 1]))
    if with_mask_scores:
        inst.mask_scores = torch.tensor([0.6, 0.7])  # B's mask is the better one
    return inst


def _model():
    model = object.__new__(SegD2PanopticFPN)
    torch.nn.Module.__init__(model)
    model.combine_overlap_thresh, model.combine_stuff_area_thresh, model.combine_instances_score_thresh = 0.5, 0, 0.65
    return model


@pytest.mark.parametrize("with_mask_scores", [True, False])
def test_instances_are_pasted_in_mask_score_order(with_mask_scores):
    sem_seg = torch.zeros(2, H, W)
    sem_seg[1] = 1.0  # all stuff class 1 where no thing is pasted
    inst = _instances(with_mask_scores)
    # what detectron2's PanopticFPN.inference returns: its merge, by box scores
    raw = [{"sem_seg": sem_seg, "instances": inst,
            "panoptic_seg": combine_semantic_and_instance_outputs(inst, sem_seg.argmax(0), 0.5, 0, 0.65)}]
    with mock.patch.object(PanopticFPN, "inference", return_value=raw):
        seg, info = _model().inference([{}])[0]["panoptic_seg"]
    things = [s for s in info if s["isthing"]]
    if with_mask_scores:
        # by hand: B first (0.7); A's mask score 0.6 is under the 0.65 threshold: B alone, all 25 px
        assert [s["category_id"] for s in things] == [1]
        assert (seg == things[0]["id"]).sum() == 25
    else:  # PanopticFPN exactly: A (0.9) first with 25 px, then B (0.8) less the overlap: 16 px
        assert [s["category_id"] for s in things] == [0, 1]
        assert [(seg == s["id"]).sum().item() for s in things] == [25, 16]
    assert (seg > 0).all()  # the rest is stuff


def test_detectron2_panoptic_fpn_with_mask_scoring_is_refused():
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "PanopticFPN"
    cfg.MODEL.MASK_SCORING.ENABLED = True
    cfg.MODEL.ROI_HEADS.NAME = "MaskScoringROIHeads"
    with pytest.raises(ValueError, match="Use 'SegD2PanopticFPN'"):
        check_model_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "SegD2PanopticFPN"
    check_model_config(cfg)


def test_unet_fpn_backbone_outputs_fpn_levels_and_fine_features():
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file("configs/Shapes-PanopticSegmentation/panoptic_unet_R_18_FPN_scratch_bs4_600it.yaml")
    backbone = build_backbone(cfg, ShapeSpec(channels=3))
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "s1": 1, "s2": 2}
    out = backbone(torch.randn(1, 3, 128, 192))
    for k, v in out.items():
        assert v.shape == (1, shapes[k].channels, 128 // shapes[k].stride, 192 // shapes[k].stride), k
    # the FPN levels are detectron2's FPN of the same ResNet: same result from the same weights
    from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

    reference = FPN(bottom_up=backbone.encoder.resnet, in_features=["res2", "res3", "res4", "res5"],
                    out_channels=cfg.MODEL.FPN.OUT_CHANNELS, top_block=LastLevelMaxPool())
    reference.load_state_dict({k: v for k, v in backbone.fpn.state_dict().items()}, strict=False)
    backbone.eval(), reference.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = backbone(x), reference(x)
    for k in ("p2", "p3", "p4", "p5", "p6"):
        torch.testing.assert_close(ours[k], theirs[k])
