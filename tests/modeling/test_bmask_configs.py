"""The BMask R-CNN configs parse and build their models (COCO, shapes, Cityscapes recipes)."""
import pytest

import seg_d2  # noqa: F401
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from seg_d2 import add_seg_d2_config
from seg_d2.modeling.bmask_head import BoundaryPreservingMaskHead
from tests.conftest import REPO

CONFIGS = {
    "COCO-InstanceSegmentation/mask_rcnn_bmask_R_50_FPN_1x.yaml": (False, 80, 90000),
    "COCO-InstanceSegmentation/mask_rcnn_bmask_R_50_FPN_3x.yaml": (False, 80, 270000),
    "COCO-InstanceSegmentation/mask_rcnn_bmask_ms_R_50_FPN_1x.yaml": (True, 80, 90000),
    "Cityscapes-InstanceSegmentation/mask_rcnn_bmask_R_50_FPN_bs8_24k.yaml": (False, 8, 24000),
    "Shapes-InstanceSegmentation/mask_rcnn_bmask_R_18_FPN_scratch_bs4_600it.yaml": (False, 4, 600),
    "Shapes-InstanceSegmentation/mask_rcnn_bmask_ms_R_18_FPN_scratch_bs4_600it.yaml": (True, 4, 600),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_builds_a_bmask_rcnn(name):
    scoring, num_classes, max_iter = CONFIGS[name]
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / name))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    assert cfg.SOLVER.MAX_ITER == max_iter
    model = build_model(cfg)
    head = model.roi_heads.mask_head
    assert isinstance(head, BoundaryPreservingMaskHead)
    assert (head.mask_iou_head is not None) == scoring
    assert head.mask_predictor.out_channels == num_classes


def test_faster_rcnn_shapes_config_has_no_mask_head():
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(REPO / "configs/Shapes-InstanceSegmentation/faster_rcnn_R_18_FPN_scratch_bs4_600it.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert not model.roi_heads.mask_on
