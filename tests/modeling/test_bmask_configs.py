"""The boundary-head configs parse and build their models: BMask R-CNN as published (BoundaryROIHeads +
BoundaryPreservingHead) and seg_d2's light head, on the COCO, Cityscapes and shapes recipes."""
import pytest

import seg_d2  # noqa: F401
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import StandardROIHeads
from seg_d2 import add_seg_d2_config
from seg_d2.modeling.bmask_head import BoundaryPreservingHead
from seg_d2.modeling.light_boundary_head import LightBoundaryMaskHead
from seg_d2.modeling.roi_heads import BoundaryROIHeads
from tests.conftest import REPO

CONFIGS = {  # config -> (BMask R-CNN as published?, mask scoring, classes, iterations)
    "COCO-InstanceSegmentation/bmask_rcnn_R_50_FPN_1x.yaml": (True, False, 80, 90000),
    "COCO-InstanceSegmentation/bmask_rcnn_R_50_FPN_3x.yaml": (True, False, 80, 270000),
    "COCO-InstanceSegmentation/bmask_rcnn_ms_R_50_FPN_1x.yaml": (True, False, 80, 90000),
    "COCO-InstanceSegmentation/bmask_rcnn_mask_scoring_R_50_FPN_1x.yaml": (True, True, 80, 90000),
    "COCO-InstanceSegmentation/mask_rcnn_light_boundary_R_50_FPN_1x.yaml": (False, False, 80, 90000),
    "COCO-InstanceSegmentation/mask_rcnn_light_boundary_R_50_FPN_3x.yaml": (False, False, 80, 270000),
    "COCO-InstanceSegmentation/mask_rcnn_light_boundary_mask_scoring_R_50_FPN_1x.yaml": (False, True, 80, 90000),
    "Cityscapes-InstanceSegmentation/bmask_rcnn_R_50_FPN_bs8_24k.yaml": (True, False, 8, 24000),
    "Cityscapes-InstanceSegmentation/mask_rcnn_light_boundary_R_50_FPN_bs8_24k.yaml": (False, False, 8, 24000),
    "Shapes-InstanceSegmentation/bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml": (True, False, 4, 600),
    "Shapes-InstanceSegmentation/bmask_rcnn_mask_scoring_R_18_FPN_scratch_bs4_600it.yaml": (True, True, 4, 600),
    "Shapes-InstanceSegmentation/mask_rcnn_light_boundary_R_18_FPN_scratch_bs4_600it.yaml": (False, False, 4, 600),
    "Shapes-InstanceSegmentation/mask_rcnn_light_boundary_mask_scoring_R_18_FPN_scratch_bs4_600it.yaml": (False, True, 4, 600),
}


def load(name):
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / name))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    return cfg


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_builds_its_boundary_head(name):
    published, scoring, num_classes, max_iter = CONFIGS[name]
    cfg = load(name)
    assert cfg.SOLVER.MAX_ITER == max_iter
    model = build_model(cfg)
    roi_heads, head = model.roi_heads, model.roi_heads.mask_head
    assert (head.mask_iou_head is not None) == scoring
    assert head.mask_predictor.out_channels == num_classes
    if published:
        # The paper's head: 4 mask convs on 14x14 RoI features; 2 boundary convs on 28x28 RoI features
        # from p2; mask BCE, boundary BCE + Dice.
        assert type(roi_heads) is BoundaryROIHeads and type(head) is BoundaryPreservingHead
        assert len(head.mask_fcns) == 4 and len(head.boundary_fcns) == 2
        assert roi_heads.mask_pooler.output_size == (14, 14) and roi_heads.boundary_pooler.output_size == (28, 28)
        assert roi_heads.boundary_in_features == ["p2"] and len(roi_heads.boundary_pooler.level_poolers) == 1
        assert head.loss_weights["loss_mask_dice"] == 0
        # the authors' recipe (hustvl/BMaskR-CNN configs): the mask head trains on the refined boxes
        assert roi_heads.train_on_pred_boxes
    else:
        assert type(roi_heads) is StandardROIHeads and type(head) is LightBoundaryMaskHead
        assert len(head.mask_fcns) + len(head.boundary_fcns) == 4  # the stock head's 4 convs


def test_recipes_differ_from_stock_by_the_mask_head_only():
    """Same data, schedule and backbone as the stock Mask R-CNN config beside them: the benchmark compares
    heads (BMask R-CNN with the authors' TRAIN_ON_PRED_BOXES), nothing else."""
    stock = load("Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml")
    for name in ("bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml", "mask_rcnn_light_boundary_R_18_FPN_scratch_bs4_600it.yaml"):
        cfg = load(f"Shapes-InstanceSegmentation/{name}")
        for key in ("SOLVER", "INPUT", "DATASETS", "TEST", "DATALOADER", "SEED"):
            assert cfg[key] == stock[key], (name, key)
        for key in ("BACKBONE", "RESNETS", "FPN", "ANCHOR_GENERATOR", "RPN"):
            assert cfg.MODEL[key] == stock.MODEL[key], (name, key)
        box = cfg.MODEL.ROI_BOX_HEAD.clone()
        box.TRAIN_ON_PRED_BOXES = False
        assert box == stock.MODEL.ROI_BOX_HEAD, name
        assert cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES == name.startswith("bmask")


def test_coco_recipes_single_scale_as_the_paper_and_multi_scale_under_ms():
    # The paper and the authors' configs train at 800 px; detectron2's stock recipe draws 640-800 px.
    assert load("COCO-InstanceSegmentation/bmask_rcnn_R_50_FPN_1x.yaml").INPUT.MIN_SIZE_TRAIN == (800,)
    for name in ("bmask_rcnn_ms_R_50_FPN_1x.yaml", "bmask_rcnn_R_50_FPN_3x.yaml"):
        cfg = load(f"COCO-InstanceSegmentation/{name}")
        assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800)
        assert cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice"


def test_faster_rcnn_shapes_config_has_no_mask_head():
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(REPO / "configs/Shapes-InstanceSegmentation/faster_rcnn_R_18_FPN_scratch_bs4_600it.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert not model.roi_heads.mask_on
