"""Boundary IoU (Cheng 2021): boundary bands, known shapes, Boundary AP through COCOeval."""
import contextlib
import io

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seg_d2.evaluation import boundary_iou, evaluate_boundary_on_coco, mask_to_boundary
from seg_d2.evaluation.boundary_iou import dilation_pixels


def official_mask_to_boundary(mask, dilation_ratio=0.02):
    """The boundary-iou-api's algorithm, verbatim in substance: d erosions by a 3x3 square."""
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * np.sqrt(h ** 2 + w ** 2))))
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:h + 1, 1:w + 1]
    return mask - eroded


def square(h=100, w=100, y=20, x=30, side=40):
    m = np.zeros((h, w), np.uint8)
    m[y:y + side, x:x + side] = 1
    return m


def test_band_width_is_two_percent_of_the_diagonal():
    assert dilation_pixels(100, 100) == 3  # 0.02 * 141.4 = 2.83
    assert dilation_pixels(480, 640) == 16  # 0.02 * 800
    assert dilation_pixels(10, 10) == 1  # never below one pixel


def test_boundary_band_of_a_square():
    b = mask_to_boundary(square())
    # A 40x40 square, d = 3: everything but the inner 34x34.
    assert b.sum() == 40 * 40 - 34 * 34
    assert b[20:23, 30:70].all() and b[23:57, 33:67].sum() == 0


@pytest.mark.parametrize("seed", range(4))
def test_same_band_as_the_official_implementation(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(40, 120, size=2)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(3):  # blobs, some cut by the image border
        cv2.circle(mask, tuple(int(v) for v in rng.integers(0, [w, h])), int(rng.integers(5, 30)), 1, -1)
    for ratio in (0.02, 0.05):
        assert np.array_equal(mask_to_boundary(mask, ratio), official_mask_to_boundary(mask, ratio))


def test_boundary_iou_of_known_shapes():
    a = square()
    assert boundary_iou(a, a) == 1.0
    # Shifted 2 px right. Each band: 40*40 - 34*34 = 444 px. Overlap: the top and bottom bands
    # (3 rows each) share columns 32..69 = 38 -> 6*38 = 228; in the 34 rows between, the side bands
    # share column 32 and column 69 -> 34*2 = 68. Intersection 296, union 888 - 296 = 592: IoU 0.5.
    b = square(x=32)
    assert boundary_iou(a, b) == pytest.approx(296 / 592)
    assert boundary_iou(a, np.zeros_like(a)) == 0.0
    assert boundary_iou(np.zeros_like(a), np.zeros_like(a)) == 0.0


def _coco(gt_masks, categories=({"id": 1, "name": "thing"},), iscrowd=None):
    h, w = gt_masks[0].shape
    anns = []
    for i, m in enumerate(gt_masks):
        rle = mask_util.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode()
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": rle, "area": float(m.sum()),
                     "bbox": mask_util.toBbox(rle).tolist(), "iscrowd": (iscrowd or [0] * len(gt_masks))[i]})
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "height": h, "width": w, "file_name": "x.png"}], "annotations": anns,
                    "categories": list(categories)}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _results(masks, scores):
    out = []
    for m, s in zip(masks, scores):
        rle = mask_util.encode(np.asfortranarray(m))
        rle["counts"] = rle["counts"].decode()
        out.append({"image_id": 1, "category_id": 1, "segmentation": rle, "score": s})
    return out


def _segm_ap(coco, results):
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(coco, coco.loadRes(results), "segm")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


@pytest.mark.parametrize("fast", [True, False])
def test_boundary_ap_of_a_shifted_mask(fast):
    """Mask IoU 1520/1680 = 0.905 (matches at IoU 0.50..0.90), boundary IoU 0.5 (matches at 0.50 only)."""
    coco = _coco([square()])
    results = _results([square(x=32)], [0.9])
    segm = _segm_ap(coco, results)
    assert segm[0] == pytest.approx(0.9) and segm[1] == pytest.approx(1.0) and segm[2] == pytest.approx(1.0)
    with contextlib.redirect_stdout(io.StringIO()):
        boundary = evaluate_boundary_on_coco(coco, results, use_fast_impl=fast).stats
    assert boundary[0] == pytest.approx(0.1)  # AP: 1 of the 10 IoU thresholds
    assert boundary[1] == pytest.approx(1.0)  # AP50
    assert boundary[2] == pytest.approx(0.0)  # AP75


def test_boundary_ap_is_100_for_perfect_masks_and_crowd_is_ignored():
    a, crowd = square(side=30), square(y=60, x=10, side=30)
    coco = _coco([a, crowd], iscrowd=[0, 1])
    # The crowd region is detected too: matched to the crowd gt by mask IoU, it is ignored, not a false positive.
    with contextlib.redirect_stdout(io.StringIO()):
        stats = evaluate_boundary_on_coco(coco, _results([a, crowd], [0.9, 0.8])).stats
    assert stats[0] == pytest.approx(1.0)
