"""seg_d2_ops' fast COCOeval entry points (detectron2._C's, in the provisioned build) against pycocotools' COCOeval,
through detectron2's COCOeval_opt. They run with seg_d2_ops as its _C on a compiled detectron2 too."""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import seg_d2_ops as ops

import detectron2.evaluation.fast_eval_api as fast_eval_api

SIZE = 200  # images are SIZE x SIZE


@pytest.fixture(autouse=True)
def _seg_d2_ops_as_c(monkeypatch):
    """detectron2's COCOeval_opt calls these ops through its module's _C: make that seg_d2_ops, whichever
    detectron2 is installed."""
    monkeypatch.setattr(fast_eval_api, "_C", ops)


def _box_polygon(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _dataset(seed):
    """Ground truth with crowd regions, all area ranges, an image without annotations and a
    category without any; detections with duplicates, false positives, tied scores, one
    category that has no ground truth at all, and an image with more than 100 detections."""
    rng = np.random.RandomState(seed)
    images = [{"id": i, "width": SIZE, "height": SIZE} for i in range(1, 8)]
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 7)]  # 7: never annotated
    anns, dets = [], []
    for img in images[:-1]:  # the last image has no annotations
        for _ in range(rng.randint(1, 7)):
            side = rng.choice([8, 20, 60, 120])  # small / medium / large areas
            w, h = float(side * rng.uniform(0.6, 1.4)), float(side * rng.uniform(0.6, 1.4))
            x, y = float(rng.uniform(0, SIZE - w)), float(rng.uniform(0, SIZE - h))
            cat = int(rng.choice([1, 2, 3]))
            crowd = int(rng.rand() < 0.15)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": crowd,
                    "segmentation": _box_polygon(x, y, w, h),
                }
            )
            for _ in range(rng.randint(0, 4)):  # detections near this object, some duplicated
                jx, jy = rng.normal(0, 0.15 * w), rng.normal(0, 0.15 * h)
                dw, dh = w * rng.uniform(0.7, 1.3), h * rng.uniform(0.7, 1.3)
                dcat = cat if rng.rand() < 0.85 else int(rng.choice([1, 2, 3, 7]))
                dets.append(
                    {
                        "image_id": img["id"],
                        "category_id": dcat,
                        "bbox": [x + jx, y + jy, dw, dh],
                        "score": float(np.round(rng.rand(), 1)),
                    }
                )
    for img in images:  # false positives everywhere, including in categories 3 and 7
        for _ in range(rng.randint(0, 6)):
            w, h = rng.uniform(5, 80, size=2)
            x, y = rng.uniform(0, SIZE - 80, size=2)
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": int(rng.choice([1, 2, 3, 7])),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "score": float(rng.rand()),
                }
            )
    for k in range(130):  # image 1: more detections than maxDets=100
        dets.append(
            {
                "image_id": 1,
                "category_id": 1,
                "bbox": [float(k % 13) * 14, float(k // 13) * 18, 12.0, 15.0],
                "score": float(rng.rand()),
            }
        )
    for d in dets:  # masks for segm evaluation, from the boxes
        x, y, w, h = d["bbox"]
        d["segmentation"] = mask_utils.merge(mask_utils.frPyObjects(_box_polygon(x, y, w, h), SIZE, SIZE))
        d["segmentation"]["counts"] = d["segmentation"]["counts"].decode()
    return {"images": images, "categories": categories, "annotations": anns}, dets


def _evaluate(cls, gt, dets, iou_type, use_cats=1):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        results = copy.deepcopy(dets)
        if iou_type == "segm":
            for r in results:
                r.pop("bbox")
        coco_dt = coco_gt.loadRes(results)
        ev = cls(coco_gt, coco_dt, iou_type)
        ev.params.useCats = use_cats
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("iou_type, use_cats, seed", [("bbox", 1, 0), ("bbox", 1, 1), ("segm", 1, 2), ("bbox", 0, 3)])
def test_fast_cocoeval_equals_pycocotools(iou_type, use_cats, seed):
    gt, dets = _dataset(seed)
    ref = _evaluate(COCOeval, gt, dets, iou_type, use_cats)
    fast = _evaluate(fast_eval_api.COCOeval_opt, gt, dets, iou_type, use_cats)
    assert np.array_equal(fast.stats, ref.stats), (fast.stats, ref.stats)
    for key in ("precision", "recall", "scores"):
        assert np.array_equal(fast.eval[key], ref.eval[key]), key
    assert fast.eval["counts"] == ref.eval["counts"]
    # the dataset exercises what it should: a category without ground truth (-1), real AP
    assert 0 < ref.stats[0] < 1
    if use_cats:
        assert (ref.eval["precision"][:, :, -1] == -1).all()


def test_fast_path_is_enabled():
    assert ops.HAS_FAST_COCOEVAL is True
    inst = ops.InstanceAnnotation(5, 0.5, 12.0, True, False)
    assert (inst.id, inst.score, inst.area, inst.is_crowd, inst.ignore) == (5, 0.5, 12.0, True, False)
    ev = ops.ImageEvaluation()
    assert len(ev.detection_scores) == 0


def test_detectron2_evaluator_uses_fast_path():
    from seg_d2.compat import evaluate_predictions_on_coco

    gt, dets = _dataset(4)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        fast = evaluate_predictions_on_coco(coco_gt, copy.deepcopy(dets), "bbox", use_fast_impl=True)
    assert isinstance(fast, fast_eval_api.COCOeval_opt)
    ref = _evaluate(COCOeval, gt, dets, "bbox")
    assert np.array_equal(fast.stats, ref.stats)
