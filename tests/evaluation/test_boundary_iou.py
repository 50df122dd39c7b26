"""Boundary IoU (Cheng 2021): boundary bands, known shapes, Boundary AP through COCOeval."""
import contextlib
import copy
import importlib
import io

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seg_d2.evaluation import boundary_iou, evaluate_boundary_on_coco, mask_to_boundary
from seg_d2.evaluation.boundary_iou import dilation_pixels
from tests.conftest import COCOEVAL_FAST_ATOL


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


# --- boundaries on bounding boxes, batched, in a process pool: the numbers of the full-image official code ---

def random_masks(rng, h, w, n):
    """Blobs, some cut by the image border; full columns, full images, empty masks, noise."""
    masks = []
    for i in range(n):
        m = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cv2.circle(m, (int(rng.integers(-5, w + 5)), int(rng.integers(-5, h + 5))), int(rng.integers(1, 25)), 1, -1)
        kind = i % 7
        if kind == 1:
            m[:, int(rng.integers(0, w)):][:, :3] = 1  # whole columns: runs across columns in the RLE
        elif kind == 2:
            m = (rng.random((h, w)) < 0.5).astype(np.uint8)
        elif kind == 3:
            m[:] = i % 2  # empty or full
        masks.append(m)
    return masks


def official_rle_boundary(mask, dilation_ratio):
    return mask_util.encode(np.asfortranarray(official_mask_to_boundary(mask, dilation_ratio)))


@pytest.mark.parametrize("ratio", [0.02, 0.1])
def test_boundaries_on_bounding_boxes_are_the_full_image_ones(ratio):
    from seg_d2.evaluation.boundary_iou import _rle_boundaries

    rng = np.random.default_rng(int(ratio * 100))
    for h, w in [(37, 50), (64, 45), (1, 9)]:
        masks = random_masks(rng, h, w, 14)
        rles = [mask_util.encode(np.asfortranarray(m)) for m in masks]
        for r in rles[::2]:
            r["counts"] = r["counts"].decode()  # results json: str counts
        for m, b in zip(masks, _rle_boundaries(rles, ratio)):
            assert b == official_rle_boundary(m, ratio)  # the same RLE, so the same IoUs


class OfficialBoundaryCOCOeval(COCOeval):
    """Reference Boundary AP as the boundary-iou-api computes it: full-image boundaries of every mask,
    min(mask IoU, boundary IoU) for non-crowd ground truth; pycocotools for everything else."""

    def computeIoU(self, imgId, catId):
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return []
        dt = [dt[i] for i in np.argsort([-d["score"] for d in dt], kind="mergesort")][: self.params.maxDets[-1]]
        crowd = [int(g["iscrowd"]) for g in gt]
        ious = mask_util.iou([d["segmentation"] for d in dt], [g["segmentation"] for g in gt], crowd)
        if len(gt) == 0 or len(dt) == 0:
            return ious

        def boundary(a):
            return official_rle_boundary(mask_util.decode(a["segmentation"]), 0.02)

        b = mask_util.iou([boundary(d) for d in dt], [boundary(g) for g in gt], crowd)
        ious = np.array(ious)
        nc = ~np.array(crowd, bool)
        ious[:, nc] = np.minimum(ious[:, nc], np.asarray(b)[:, nc])
        return ious


def random_coco(rng, n_images=6, n_instances=8, h=48, w=64):
    images, anns, results = [], [], []
    for img in range(1, n_images + 1):
        images.append({"id": img, "height": h, "width": w, "file_name": f"{img}.png"})
        for i, m in enumerate(random_masks(rng, h, w, n_instances)):
            if not m.any():
                continue
            rle = mask_util.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode()
            cat = 1 + i % 2
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat, "segmentation": rle,
                         "area": float(m.sum()), "bbox": mask_util.toBbox(rle).tolist(), "iscrowd": int(i == 5)})
            shifted = np.roll(m, tuple(int(v) for v in rng.integers(-2, 3, 2)), axis=(0, 1))
            for det in (shifted, random_masks(rng, h, w, 1)[0]):  # a near miss, a random one
                if det.any():
                    r = mask_util.encode(np.asfortranarray(det))
                    r["counts"] = r["counts"].decode()
                    results.append({"image_id": img, "category_id": cat, "segmentation": r,
                                    "score": float(rng.random())})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, results


@pytest.mark.parametrize("fast,workers", [(True, 0), (False, 2)])
def test_boundary_ap_equals_the_official_computation(monkeypatch, fast, workers):
    """Boundary AP from bounding-box boundaries (in-process, or in a pool of 2) equals pycocotools with
    the official full-image boundaries, to the last bit."""
    biou = importlib.import_module("seg_d2.evaluation.boundary_iou")  # the package's name is the function's
    monkeypatch.setattr(biou, "POOL_MIN_MASKS", 0)  # the pool even for this small set
    coco, results = random_coco(np.random.default_rng(7))
    with contextlib.redirect_stdout(io.StringIO()):
        ref = OfficialBoundaryCOCOeval(coco, coco.loadRes(copy.deepcopy(results)), "segm")
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
        ours = evaluate_boundary_on_coco(coco, results, use_fast_impl=fast, workers=workers)
    assert 0 < ref.stats[0] < 1
    atol = COCOEVAL_FAST_ATOL if fast else 0.0  # 0: to the last bit
    np.testing.assert_allclose(ours.stats, ref.stats, rtol=0, atol=atol)
    np.testing.assert_allclose(ours.eval["precision"], ref.eval["precision"], rtol=0, atol=atol)
    assert ours.ious.keys() == ref.ious.keys()
    for k, v in ref.ious.items():
        assert np.array_equal(np.asarray(ours.ious[k]), np.asarray(v)), k
