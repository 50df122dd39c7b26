"""Instant train_net runs of models that need detectron2's C++ ops (seg_d2's pure-PyTorch ``detectron2._C`` on
the provisioned build; on a compiled one, its kernels and torchvision's CPU deformable convolution): deformable convolution (detectron2's own DCN config) and rotated boxes (RRPN +
RROIHeads with ROIAlignRotated, rotated NMS and rotated IoU), plus the rotated shapes data they train on.
"""
import json
import math

import numpy as np
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode, RotatedBoxes

from seg_d2 import add_seg_d2_config
from seg_d2.data.build import build_mapper
from seg_d2.data.datasets.shapes_rotated import mask_to_rotated_box, rotated_box_dicts
from seg_d2.data.rotated_mapper import RotatedDatasetMapper, uses_rotated_boxes
from seg_d2.model_zoo import get_detectron2_config_file
from tests.conftest import REPO, run_tool
from tests.tools.test_train_net import INSTANT, TRAIN_NET, read_metrics

DCONV = get_detectron2_config_file("Misc/mask_rcnn_R_50_FPN_1x_dconv_c3-c5.yaml")  # detectron2's model zoo, unmodified
ROTATED = REPO / "configs" / "Shapes-RotatedDetection" / "rotated_faster_rcnn_R_18_FPN_scratch_bs4_600it.yaml"

# detectron2's COCO recipe, adapted by opts only: shapes data, no download, R-50 sized for a CPU instant run.
DCONV_OPTS = [
    "MODEL.WEIGHTS", "", "DATASETS.TRAIN", '("seg_d2_shapes_train",)', "DATASETS.TEST", '("seg_d2_shapes_val_mini",)',
    "MODEL.ROI_HEADS.NUM_CLASSES", "4", "INPUT.MASK_FORMAT", "bitmask",
    "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MAX_SIZE_TEST", "160",
    # from scratch, FrozenBN is an identity and R-50's activations blow up: learn BN, clip gradients
    "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0", "SOLVER.BASE_LR", "0.002",
    "SOLVER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "5.0",
    # few proposals and RoIs: the mask head's cost grows with the sampled positives
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "TEST.DETECTIONS_PER_IMAGE", "20",
    "SOLVER.MAX_ITER", "4",
]


def train(config, out_dir, *opts):
    res = run_tool([TRAIN_NET, "--config-file", config, *INSTANT, "OUTPUT_DIR", out_dir, *opts])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


def assert_finite_losses(metrics, names):
    for name in names:
        values = [m[name] for m in metrics if name in m]
        assert values and all(math.isfinite(v) for v in values), (name, values)


def test_dconv_mask_rcnn_from_model_zoo(tmp_path):
    train(DCONV, tmp_path, *DCONV_OPTS)
    metrics = read_metrics(tmp_path)
    assert_finite_losses(metrics, ["total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls",
                                   "loss_rpn_loc"])
    final = metrics[-1]
    for key in ("bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50"):
        assert key in final and math.isfinite(final[key]), key
    # DEFORM_ON_PER_STAGE [False, True, True, True] of R-50: every 3x3 conv of res3-res5 (4 + 6 + 3 blocks).
    log = (tmp_path / "log.txt").read_text()
    assert log.count("(conv2): DeformConv(") == 13
    assert "ModulatedDeformConv" not in log  # DEFORM_MODULATED: False


@pytest.mark.long
def test_rotated_faster_rcnn(tmp_path):
    # an untrained model's many rotated proposals make NMS and rotated-box evaluation the slow part: fewer of them
    # in training too (a step took 6.4 s on detectron2 main with the default 2000 before NMS per level, 2.0 s with 200)
    train(ROTATED, tmp_path, "SOLVER.MAX_ITER", "5", "DATASETS.TEST", '("seg_d2_shapes_rotated_val_mini",)', "MODEL.RPN.PRE_NMS_TOPK_TEST", "200",
          "MODEL.RPN.POST_NMS_TOPK_TEST", "50", "TEST.DETECTIONS_PER_IMAGE", "20",
          "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100")
    metrics = read_metrics(tmp_path)
    assert_finite_losses(metrics, ["total_loss", "loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"])
    final = metrics[-1]
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75"):
        assert key in final and math.isfinite(final[key]), key
    log = (tmp_path / "log.txt").read_text()
    assert "(proposal_generator): RRPN(" in log and "(roi_heads): RROIHeads(" in log
    assert "ROIAlignRotated(" in log
    # Evaluated on rotated boxes: ground truth and detections are (cx, cy, w, h, angle).
    inference = tmp_path / "inference" / "seg_d2_shapes_rotated_val_mini"
    gt = json.loads((inference / "seg_d2_shapes_rotated_val_mini_coco_format.json").read_text())
    dt = json.loads((inference / "coco_instances_results.json").read_text())
    assert dt and all(len(a["bbox"]) == 5 for a in gt["annotations"] + dt)
    assert any(abs(a["bbox"][4]) > 1 for a in gt["annotations"])


def _rotated_rect_mask(w, h, angle, cx=80.0, cy=70.0, size=(160, 160)):
    """Pixels whose centres lie in the rotated rectangle (detectron2's XYWHA convention)."""
    yy, xx = np.mgrid[0:size[0], 0:size[1]] + 0.5
    t = math.radians(angle)
    u = (xx - cx) * math.cos(t) - (yy - cy) * math.sin(t)  # along w: (cos a, -sin a) in image coordinates
    v = (xx - cx) * math.sin(t) + (yy - cy) * math.cos(t)
    return ((np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)).astype(np.uint8)


@pytest.mark.parametrize("box, expected", [
    ((40, 40, 30), (40, 40, 30)),  # a square rotated 30 degrees counter-clockwise
    ((48, 20, 30), (48, 20, 30)),
    ((48, 20, -20), (48, 20, -20)),  # clockwise
    ((48, 20, 60), (20, 48, -30)),  # canonical angle in (-45, 45]: w and h swap
])
def test_mask_to_rotated_box(box, expected):
    cx, cy, w, h, angle = mask_to_rotated_box(_rotated_rect_mask(*box))
    assert (cx, cy) == pytest.approx((80, 70), abs=0.6)
    assert angle == pytest.approx(expected[2], abs=1.0)
    # enclosing the pixels adds at most one pixel's diagonal to each side
    assert expected[0] - 0.5 <= w <= expected[0] + 1.5 and expected[1] - 0.5 <= h <= expected[1] + 1.5
    # in detectron2's convention (w along (cos a, -sin a) in image coordinates) the box covers the mask
    mask = _rotated_rect_mask(*box)
    assert _rotated_rect_mask(w + 1e-3, h + 1e-3, angle, cx, cy)[mask > 0].all()


def test_mask_to_rotated_box_axis_aligned_matches_coco_bbox():
    mask = np.zeros((50, 60), np.uint8)
    mask[10:20, 5:35] = 1
    assert mask_to_rotated_box(mask) == pytest.approx([20.0, 15.0, 30.0, 10.0, 0.0])
    with pytest.raises(ValueError, match="empty mask"):
        mask_to_rotated_box(np.zeros((5, 5), np.uint8))


def test_rotated_shapes_dataset_and_mapper():
    name = "seg_d2_shapes_rotated_train"
    assert MetadataCatalog.get(name).evaluator_type == "rotated_coco"
    assert MetadataCatalog.get(name).thing_classes == MetadataCatalog.get("seg_d2_shapes_train").thing_classes
    rotated, plain = DatasetCatalog.get(name), DatasetCatalog.get("seg_d2_shapes_train")
    assert [r["file_name"] for r in rotated] == [r["file_name"] for r in plain]
    annos = [a for r in rotated for a in r["annotations"]]
    assert all(a["bbox_mode"] == BoxMode.XYWHA_ABS and len(a["bbox"]) == 5 for a in annos)
    # A rotated box is at most the axis-aligned one, which it equals when its angle is 0.
    areas = [(a["bbox"][2] * a["bbox"][3], b["bbox"][2] * b["bbox"][3])
             for r, p in zip(rotated, plain) for a, b in zip(r["annotations"], p["annotations"])]
    assert all(ra <= pa * 1.0001 + 1e-3 for ra, pa in areas) and sum(ra < pa - 1 for ra, pa in areas) > len(areas) / 2

    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(ROTATED))
    mapper = build_mapper(cfg, True)  # picked for "rotated_coco" datasets
    assert isinstance(mapper, RotatedDatasetMapper)
    assert not isinstance(build_mapper(cfg, False), RotatedDatasetMapper)  # inference needs no boxes
    torch.manual_seed(0)
    record = rotated[0]
    out = mapper(record)
    boxes = out["instances"].gt_boxes
    assert isinstance(boxes, RotatedBoxes) and boxes.tensor.shape == (len(record["annotations"]), 5)
    scale = out["image"].shape[1] / record["height"]  # ResizeShortestEdge keeps the aspect ratio
    expected = torch.tensor([a["bbox"][2] * a["bbox"][3] for a in record["annotations"]]) * scale**2
    assert torch.allclose(boxes.area(), expected, rtol=0.02)


def test_rotated_data_errors():
    with pytest.raises(ValueError, match="mix rotated-box ones"):
        uses_rotated_boxes(["seg_d2_shapes_rotated_train", "seg_d2_shapes_train"])
    record = {"file_name": "x.png", "height": 8, "width": 8, "annotations": [{"bbox": [0, 0, 2, 2], "category_id": 0}]}
    with pytest.raises(ValueError, match=r"'x.png', annotation #0: no segmentation"):
        rotated_box_dicts([record], "toy")
    # the mapper refuses axis-aligned boxes and masks instead of silently dropping the angle or the masks
    mapper = RotatedDatasetMapper(True, augmentations=[], image_format="BGR")
    with pytest.raises(ValueError, match=r"annotation #0: RotatedDatasetMapper expects 5-value boxes"):
        mapper(DatasetCatalog.get("seg_d2_shapes_train")[0])
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(ROTATED))
    cfg.MODEL.MASK_ON = True
    with pytest.raises(ValueError, match="maps boxes only"):
        build_mapper(cfg, True)
