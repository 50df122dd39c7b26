"""detectron2's COCOEvaluator plus Boundary AP (Boundary IoU, Cheng 2021), reported as task "boundary",
and separate mask scores (Mask Scoring R-CNN, Huang 2019) for the mask tasks."""
import copy
import itertools
import json
import os

import numpy as np
from tabulate import tabulate

from detectron2.evaluation import COCOEvaluator
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from ..compat import evaluate_predictions_on_coco
from .boundary_iou import boundary_cocoeval_class

__all__ = ["COCOBoundaryEvaluator", "evaluate_boundary_on_coco"]

BOUNDARY_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
COCO_METRICS = {"bbox": BOUNDARY_METRICS, "segm": BOUNDARY_METRICS, "keypoints": ["AP", "AP50", "AP75", "APm", "APl"]}


def evaluate_boundary_on_coco(coco_gt, coco_results, *, dilation_ratio=0.02, use_fast_impl=True, img_ids=None,
                              max_dets_per_image=None, workers=0):
    """Boundary AP of COCO-format mask results, set up as detectron2 sets up mask AP.

    ``workers`` processes compute the masks' boundaries (0 or 1: this process).

    Returns:
        The evaluated, accumulated and summarized COCOeval.
    """
    from detectron2 import _C

    if use_fast_impl and not getattr(_C, "HAS_FAST_COCOEVAL", True):
        use_fast_impl = False  # as detectron2 does: pycocotools computes the same numbers
    max_dets_per_image = max_dets_per_image or [1, 10, 100]
    results = copy.deepcopy(coco_results)
    for r in results:
        r.pop("bbox", None)  # areas (small/medium/large) from the masks, as for segm AP
    coco_dt = coco_gt.loadRes(results)
    cls = boundary_cocoeval_class(use_fast_impl, custom_max_dets=max_dets_per_image[2] != 100)
    coco_eval = cls(coco_gt, coco_dt, "segm")
    coco_eval.dilation_ratio = dilation_ratio
    coco_eval.workers = workers
    coco_eval.params.maxDets = max_dets_per_image
    if img_ids is not None:
        coco_eval.params.imgIds = img_ids
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


class COCOBoundaryEvaluator(COCOEvaluator):
    """COCOEvaluator that also reports Boundary AP next to segm AP, and ranks masks by their mask score.

    Results gain a task "boundary" with AP, AP50, AP75, APs, APm, APl and per-category AP-<name>,
    computed whenever mask AP is. Instances with ``mask_scores`` (mask scoring) are scored by them for
    segm and Boundary AP, and by ``scores`` for bbox AP; the saved results hold both ("score",
    "mask_score"). Everything else is detectron2's COCOEvaluator.
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, dilation_ratio=0.02,
                 score_thresh_test=None, boundary_ap_workers=0, **kwargs):
        """
        Args:
            dilation_ratio: boundary band width as a fraction of the image diagonal (2% in the paper).
            boundary_ap_workers: processes computing the masks' boundaries for Boundary AP (0 or 1: this one).
            score_thresh_test: (config key, value) of the model's test score threshold, named in the hint
                logged when there is no detection at all.
            Others: as :class:`detectron2.evaluation.COCOEvaluator`.
        """
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)
        self._dilation_ratio = dilation_ratio
        self._score_thresh_test = score_thresh_test
        self._boundary_ap_workers = boundary_ap_workers

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            num_predictions = len(self._predictions)
            super().process([input], [output])
            instances = output.get("instances")
            if len(self._predictions) > num_predictions and instances is not None and instances.has("mask_scores"):
                # instances_to_coco_json writes one score per instance, for boxes and masks alike.
                for result, score in zip(self._predictions[-1]["instances"], instances.mask_scores.tolist()):
                    result["mask_score"] = score

    def _eval_predictions(self, predictions, img_ids=None):
        """COCOEvaluator._eval_predictions, with mask scores for segm and Boundary AP."""
        self._logger.info("Preparing results for COCO format ...")
        # Copies: mapping category ids back in place would corrupt a second evaluate().
        coco_results = [dict(r) for r in itertools.chain(*[x["instances"] for x in predictions])]
        tasks = self._tasks or self._tasks_from_predictions(coco_results)

        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if id_map:
            num_classes = len(id_map)
            assert min(id_map.values()) == 0 and max(id_map.values()) == num_classes - 1
            reverse = {v: k for k, v in id_map.items()}
            for r in coco_results:
                assert r["category_id"] < num_classes, (
                    f"A prediction has class={r['category_id']}, but the dataset only has {num_classes} classes"
                )
                r["category_id"] = reverse[r["category_id"]]

        if self._output_dir:
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {file_path}")
            with PathManager.open(file_path, "w") as f:
                f.write(json.dumps(coco_results))
                f.flush()

        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        if not coco_results:
            key, value = self._score_thresh_test or ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", None)
            self._logger.warning(
                f"No detections: none scored above the test score threshold"
                f"{f' {value}' if value is not None else ''} ({key}), so every AP below is NaN. A model trained "
                f"briefly scores below it: lower it (e.g. {key} 0.0) to evaluate its detections anyway.")
        mask_results = [{**r, "score": r["mask_score"]} if "mask_score" in r else r for r in coco_results]
        self._logger.info(f"Evaluating predictions with {'unofficial' if self._use_fast_impl else 'official'} "
                          "COCO API...")
        for task in sorted(tasks):
            assert task in {"bbox", "segm", "keypoints"}, f"Got unknown task: {task}!"
            results = mask_results if task == "segm" else coco_results
            coco_eval = evaluate_predictions_on_coco(
                self._coco_api, results, task, kpt_oks_sigmas=self._kpt_oks_sigmas,
                use_fast_impl=self._use_fast_impl, img_ids=img_ids, max_dets_per_image=self._max_dets_per_image,
            ) if results else None  # cocoapi does not handle empty results well
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes"))

        if "segm" not in tasks:
            return
        self._logger.info(f"Evaluating Boundary AP (dilation ratio {self._dilation_ratio}) ...")
        coco_eval = None
        if mask_results:
            coco_eval = evaluate_boundary_on_coco(
                self._coco_api, mask_results, dilation_ratio=self._dilation_ratio,
                use_fast_impl=self._use_fast_impl, img_ids=img_ids, max_dets_per_image=self._max_dets_per_image,
                workers=self._boundary_ap_workers,
            )
        self._results["boundary"] = self._derive_boundary_results(coco_eval, self._metadata.get("thing_classes"))

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        """detectron2's, with plain floats (not np.float64, which NumPy 2 prints as ``np.float64(...)``), and
        without detections the table of NaN metrics rather than "No predictions from the model!" (the
        reason is logged once, by _eval_predictions)."""
        if coco_eval is None:
            results = {m: float("nan") for m in COCO_METRICS[iou_type]}
            self._logger.info(f"Evaluation results for {iou_type}: \n" + create_small_table(results))
            return results
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        return {k: float(v) for k, v in results.items()}

    def _derive_boundary_results(self, coco_eval, class_names=None):
        """Like COCOEvaluator._derive_coco_results for segm, under the name "boundary"."""
        if coco_eval is None:
            results = {m: float("nan") for m in BOUNDARY_METRICS}
            self._logger.info("Evaluation results for boundary: \n" + create_small_table(results))
            return results
        results = {m: float(coco_eval.stats[i] * 100 if coco_eval.stats[i] >= 0 else "nan")
                   for i, m in enumerate(BOUNDARY_METRICS)}
        self._logger.info("Evaluation results for boundary: \n" + create_small_table(results))
        if class_names is None or len(class_names) <= 1:
            return results
        precisions = coco_eval.eval["precision"]  # (iou, recall, class, area range, max dets)
        per_category = []
        for idx, name in enumerate(class_names):
            p = precisions[:, :, idx, 0, -1]
            p = p[p > -1]
            per_category.append((name, float(np.mean(p) * 100) if p.size else float("nan")))
        n_cols = min(6, len(per_category) * 2)
        flat = list(itertools.chain(*per_category))
        table = tabulate(itertools.zip_longest(*[flat[i::n_cols] for i in range(n_cols)]), tablefmt="pipe",
                         floatfmt=".3f", headers=["category", "AP"] * (n_cols // 2), numalign="left")
        self._logger.info("Per-category boundary AP: \n" + table)
        results.update({"AP-" + name: ap for name, ap in per_category})
        return results
