"""Fast-COCOeval entry points of detectron2._C, in Python and NumPy.

detectron2's ``COCOeval_opt`` (evaluation/fast_eval_api.py) replaces pycocotools'
``evaluateImg`` and ``accumulate`` with these. They follow the C++ ``cocoeval.cpp`` (which
mirrors pycocotools) and compute precision exactly as pycocotools' accumulate() does, so the
resulting AP numbers are identical to pycocotools' own. The matching loop is vectorised over
IoU thresholds and ground truths, the accumulation over detections.
"""

import datetime

import numpy as np

__all__ = ["InstanceAnnotation", "ImageEvaluation", "COCOevalEvaluateImages", "COCOevalAccumulate"]


class InstanceAnnotation:
    """One ground-truth or detected instance: ``InstanceAnnotation(id, score, area, is_crowd, ignore)``."""

    __slots__ = ("id", "score", "area", "is_crowd", "ignore")

    def __init__(self, id, score, area, is_crowd, ignore):  # noqa: A002  (the C++ field name)
        self.id = int(id)
        self.score = float(score)
        self.area = float(area)
        self.is_crowd = bool(is_crowd)
        self.ignore = bool(ignore)

    def __repr__(self):
        return (
            f"InstanceAnnotation(id={self.id}, score={self.score}, area={self.area}, "
            f"is_crowd={self.is_crowd}, ignore={self.ignore})"
        )


class ImageEvaluation:
    """Matching results of one (category, area range, image), for every IoU threshold.

    ``detection_matches`` [T, D]: id of the matched ground truth, 0 if unmatched;
    ``detection_ignores`` [T, D]; ``detection_scores`` [D] (detections by decreasing score);
    ``ground_truth_ignores`` [G].
    """

    __slots__ = ("detection_matches", "detection_scores", "ground_truth_ignores", "detection_ignores")

    def __init__(self):
        self.detection_matches = np.zeros((0, 0), dtype=np.int64)
        self.detection_scores = np.zeros(0)
        self.ground_truth_ignores = np.zeros(0, dtype=bool)
        self.detection_ignores = np.zeros((0, 0), dtype=bool)


def _last_argmax(values):
    """Per row, the last column holding the row maximum (the C++ loop takes ``>=`` updates)."""
    return values.shape[1] - 1 - np.argmax(values[:, ::-1], axis=1)


def _match(ious, iou_thresholds, gt_ignore, gt_crowd, gt_ids, dt_ids):
    """Greedy matching of score-sorted detections to ground truths sorted by ignore flag.

    Per threshold and detection: among still unmatched (or crowd) ground truths with IoU at
    least the threshold, take the best, preferring any regular ground truth over ignored ones;
    ties go to the later ground truth. Returns (matched gt id [T, D], matched gt ignored [T, D]).
    """
    n_thr, n_dt = len(iou_thresholds), ious.shape[0]
    matches = np.zeros((n_thr, n_dt), dtype=np.int64)
    ignored = np.zeros((n_thr, n_dt), dtype=bool)
    if n_dt == 0 or ious.shape[1] == 0:
        return matches, ignored
    thr = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), 1 - 1e-10)[:, None]
    gt_matched_by = np.zeros((n_thr, ious.shape[1]), dtype=np.int64)  # detection id, 0 = free
    n_regular = int(np.count_nonzero(~gt_ignore))
    rows = np.arange(n_thr)
    # A detection below the lowest threshold against every ground truth matches nothing.
    for d in np.flatnonzero(ious.max(axis=1) >= thr.min()):
        free = (gt_matched_by == 0) | gt_crowd[None]
        cand = np.where(free & (ious[d][None] >= thr), ious[d][None], -np.inf)  # [T, G]
        regular, extra = cand[:, :n_regular], cand[:, n_regular:]
        m = np.full(n_thr, -1)
        if n_regular:
            m = np.where(np.isfinite(regular).any(1), _last_argmax(regular), -1)
        if extra.shape[1]:
            m = np.where((m < 0) & np.isfinite(extra).any(1), n_regular + _last_argmax(extra), m)
        hit = m >= 0
        if hit.any():
            t, g = rows[hit], m[hit]
            matches[t, d] = gt_ids[g]
            ignored[t, d] = gt_ignore[g]
            gt_matched_by[t, g] = dt_ids[d]
    return matches, ignored


def COCOevalEvaluateImages(
    area_ranges,
    max_detections,
    iou_thresholds,
    image_category_ious,
    image_category_ground_truth_instances,
    image_category_detection_instances,
):
    """Match detections to ground truths for every (category, area range, image).

    ``image_category_ious[i][c]`` is the [D, G] IoU matrix of image i, category c (detections
    by decreasing score, as pycocotools' computeIoU returns it); the instance lists hold
    ``InstanceAnnotation`` objects. Returns a list of ``ImageEvaluation``, index
    ``c * n_areas * n_images + a * n_images + i``.
    """
    n_images = len(image_category_ground_truth_instances)
    n_cats = len(image_category_ious[0]) if len(image_category_ious) else 0
    n_areas = len(area_ranges)
    n_thr = len(iou_thresholds)
    results = [None] * (n_images * n_areas * n_cats)
    for i in range(n_images):
        for c in range(n_cats):
            gts = image_category_ground_truth_instances[i][c]
            dts = image_category_detection_instances[i][c]
            dt_scores = np.array([d.score for d in dts], dtype=np.float64)
            dt_order = np.argsort(-dt_scores, kind="mergesort")[:max_detections]  # stable, as the C++
            dt_area = np.array([dts[j].area for j in dt_order], dtype=np.float64)
            dt_ids = np.array([dts[j].id for j in dt_order], dtype=np.int64)
            gt_area = np.array([g.area for g in gts], dtype=np.float64)
            gt_flag = np.array([g.ignore for g in gts], dtype=bool)
            gt_crowd_all = np.array([g.is_crowd for g in gts], dtype=bool)
            gt_ids_all = np.array([g.id for g in gts], dtype=np.int64)
            ious = np.asarray(image_category_ious[i][c], dtype=np.float64)
            ious = ious.reshape(len(ious), -1) if ious.size else np.zeros((len(dt_order), len(gts)))
            ious = ious[: len(dt_order)]
            for a, (lo, hi) in enumerate(area_ranges):
                gt_ignore = gt_flag | (gt_area < lo) | (gt_area > hi)
                gt_order = np.argsort(gt_ignore, kind="stable")  # regular ground truths first
                ev = ImageEvaluation()
                ev.ground_truth_ignores = gt_ignore[gt_order]
                ev.detection_scores = dt_scores[dt_order]
                matches, ignored = _match(
                    ious[:, gt_order],
                    iou_thresholds,
                    ev.ground_truth_ignores,
                    gt_crowd_all[gt_order],
                    gt_ids_all[gt_order],
                    dt_ids,
                )
                # unmatched detections outside the area range are ignored too
                outside = (dt_area < lo) | (dt_area > hi)
                ev.detection_matches = matches.reshape(n_thr, len(dt_order))
                ev.detection_ignores = ignored | ((matches == 0) & outside[None])
                results[c * n_areas * n_images + a * n_images + i] = ev
    return results


def COCOevalAccumulate(params, evaluations):
    """Precision / recall / score tables from ``COCOevalEvaluateImages``' results.

    Returns a dict like pycocotools' ``COCOeval.eval``: params, counts [T, R, K, A, M], date,
    precision [T, R, K, A, M], recall [T, K, A, M], scores [T, R, K, A, M] (-1 where a
    category has no ground truth).
    """
    rec_thrs = np.asarray(params.recThrs, dtype=np.float64)
    max_dets = [int(m) for m in params.maxDets]
    n_thr, n_rec = len(params.iouThrs), len(rec_thrs)
    n_cats = len(params.catIds) if int(params.useCats) == 1 else 1
    n_areas, n_max, n_images = len(params.areaRng), len(max_dets), len(params.imgIds)
    precision = -np.ones((n_thr, n_rec, n_cats, n_areas, n_max))
    recall = -np.ones((n_thr, n_cats, n_areas, n_max))
    scores = -np.ones((n_thr, n_rec, n_cats, n_areas, n_max))
    for c in range(n_cats):
        for a in range(n_areas):
            evs = evaluations[c * n_areas * n_images + a * n_images :][:n_images]
            n_regular = sum(int(np.count_nonzero(~e.ground_truth_ignores)) for e in evs)
            if n_regular == 0:
                continue
            for m, max_det in enumerate(max_dets):
                dt_scores = np.concatenate([e.detection_scores[:max_det] for e in evs])
                order = np.argsort(-dt_scores, kind="mergesort")
                sorted_scores = dt_scores[order]
                dtm = np.concatenate([e.detection_matches.reshape(n_thr, -1)[:, :max_det] for e in evs], axis=1)[
                    :, order
                ]
                dt_ig = np.concatenate([e.detection_ignores.reshape(n_thr, -1)[:, :max_det] for e in evs], axis=1)[
                    :, order
                ]
                tp_sum = np.cumsum((dtm != 0) & ~dt_ig, axis=1).astype(float)
                fp_sum = np.cumsum((dtm == 0) & ~dt_ig, axis=1).astype(float)
                n_dt = tp_sum.shape[1]
                for t in range(n_thr):
                    tp, fp = tp_sum[t], fp_sum[t]
                    rc = tp / n_regular
                    pr = tp / (fp + tp + np.spacing(1))  # pycocotools' formula, for identical numbers
                    recall[t, c, a, m] = rc[-1] if n_dt else 0
                    pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope
                    idx = np.searchsorted(rc, rec_thrs, side="left")
                    ok = idx < n_dt
                    q = np.zeros(n_rec)
                    ss = np.zeros(n_rec)
                    # pycocotools stops at the first recall threshold it cannot reach
                    reach = np.cumprod(ok).astype(bool)
                    q[reach] = pr[idx[reach]]
                    ss[reach] = sorted_scores[idx[reach]]
                    precision[t, :, c, a, m] = q
                    scores[t, :, c, a, m] = ss
    return {
        "params": params,
        "counts": [n_thr, n_rec, n_cats, n_areas, n_max],
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        "precision": precision,
        "recall": recall,
        "scores": scores,
    }
