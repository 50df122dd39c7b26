"""Semantic segmentation evaluation: detectron2's SemSegEvaluator plus per-class Dice and Boundary IoU."""
import os
from collections.abc import Mapping

import numpy as np
import torch
from tabulate import tabulate

from detectron2.evaluation import SemSegEvaluator
from detectron2.utils.comm import all_gather, is_main_process
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from ..data.sem_seg_io import SemSegDataError, read_label_map
from ..layers import boundary_band
from .boundary_iou import dilation_pixels

__all__ = ["SemSegBoundaryEvaluator"]


class _NoDictLogs:
    """A logger that drops messages that are dicts (detectron2's SemSegEvaluator logs its raw results
    dict), passing everything else on."""

    def __init__(self, logger):
        self._logger = logger

    def info(self, msg, *args, **kwargs):
        if not isinstance(msg, Mapping):
            self._logger.info(msg, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._logger, name)


class SemSegBoundaryEvaluator(SemSegEvaluator):
    """detectron2's SemSegEvaluator: mIoU, fwIoU, mACC, pACC, per-class IoU and ACC, and the
    predictions saved as COCO-format RLE json (``sem_seg_predictions.json``); plus

    - ``Dice-{class}`` and ``mDice``: ``2 TP / (2 TP + FP + FN)`` per class, from the same confusion matrix;
    - ``BoundaryIoU-{class}`` and ``mBoundaryIoU`` (Cheng et al. 2021): the IoU of the boundary
      bands (``seg_d2.layers.boundary_band``, width d = 2% of the image diagonal, the image border
      counting as background) of the predicted and ground-truth masks of each class, accumulated
      over the dataset like mIoU. Ignored pixels are "don't care": they count in neither band, and
      the edge of an ignored region is no boundary.

    mIoU, mDice and mBoundaryIoU average over the same classes, detectron2's mIoU set: those present
    in the ground truth or in the predictions (a class only predicted scores 0); per-class values are
    NaN for the other classes (detectron2's ``IoU-{class}`` is NaN for a class only predicted, too).

    Label maps are read with seg_d2's reader, so ``.npy`` and 16-bit label maps work too.
    A 1-channel ``sem_seg`` output is a binary model's foreground logit (foreground iff > 0).
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None, *, dilation_ratio: float = 0.02):
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir)
        self._dilation_ratio = dilation_ratio

    def reset(self):
        super().reset()
        self._b_inter = np.zeros(self._num_classes, dtype=np.int64)
        self._b_union = np.zeros(self._num_classes, dtype=np.int64)

    def _predicted_labels(self, sem_seg: torch.Tensor) -> np.ndarray:
        n, c = self._num_classes, sem_seg.shape[0] if sem_seg.dim() == 3 else None
        if c == 1 and n == 2:
            pred = sem_seg[0] > 0
        elif c == n:
            pred = sem_seg.argmax(dim=0)
        else:
            # A class index past the last one would land in the ignore row of the confusion
            # matrix (silently inflating IoU) or make it fail to reshape.
            raise ValueError(
                f"Dataset '{self._dataset_name}' has {n} classes {list(self._class_names)}, but the model's "
                f"sem_seg output has shape {tuple(sem_seg.shape)}: expected ({n}, H, W)"
                + (" or (1, H, W) (binary)" if n == 2 else "")
                + f". Set MODEL.SEM_SEG_HEAD.NUM_CLASSES to {n}."
            )
        return pred.to(self._cpu_device).numpy().astype(np.int64)

    def process(self, inputs, outputs):
        n = self._num_classes
        for input, output in zip(inputs, outputs):
            pred = self._predicted_labels(output["sem_seg"])
            gt_file = self.input_file_to_gt_file[input["file_name"]]
            gt = read_label_map(gt_file).astype(np.int64)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"Prediction for {input['file_name']} is {pred.shape[0]}x{pred.shape[1]} but its ground "
                    f"truth {gt_file} is {gt.shape[0]}x{gt.shape[1]}"
                )
            valid = gt != self._ignore_label
            bad = np.unique(gt[valid & ((gt < 0) | (gt >= n))])
            if len(bad):
                raise SemSegDataError(
                    f"Ground truth {gt_file} has label values {bad[:20].tolist()} that are neither one of the "
                    f"{n} classes of dataset '{self._dataset_name}' (0..{n - 1}) nor its ignore_label "
                    f"{self._ignore_label}"
                )
            gt[~valid] = n
            self._conf_matrix += np.bincount(
                (n + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=self._conf_matrix.size
            ).reshape(self._conf_matrix.shape)
            self._accumulate_boundaries(pred, gt, valid)
            self._predictions.extend(self.encode_json_sem_seg(pred, input["file_name"]))

    def _accumulate_boundaries(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray):
        # All classes at once: the band of class c is band & (labels == c). The ignored pixels of the
        # ground truth (label n in ``gt``) are "don't care" in the prediction too.
        n = self._num_classes
        d = dilation_pixels(*gt.shape, self._dilation_ratio)
        pred = np.where(valid, pred, n)
        gb = boundary_band(gt, d, ignore_value=n, border_is_boundary=True)
        pb = boundary_band(pred, d, ignore_value=n, border_is_boundary=True)
        g_count = np.bincount(gt[gb], minlength=n)
        p_count = np.bincount(pred[pb], minlength=n)
        inter = np.bincount(gt[gb & pb & (gt == pred)], minlength=n)
        self._b_inter += inter
        self._b_union += g_count + p_count - inter

    def evaluate(self):
        if self._distributed:  # gather ours on every rank before super() gathers the rest
            inter, union = all_gather(self._b_inter), all_gather(self._b_union)
            if is_main_process():
                self._b_inter, self._b_union = sum(inter), sum(union)
        logger, self._logger = self._logger, _NoDictLogs(self._logger)  # its raw dict of np.float64: our tables instead
        try:
            results = super().evaluate()
        finally:
            self._logger = logger
        if results is None:  # not the main process
            return None
        res = results["sem_seg"]
        tp = self._conf_matrix.diagonal()[:-1].astype(float)
        pos_gt = self._conf_matrix[:-1, :-1].sum(axis=0).astype(float)
        pos_pred = self._conf_matrix[:-1, :-1].sum(axis=1).astype(float)
        present = (pos_gt + pos_pred) > 0  # detectron2's mIoU classes: in the ground truth or predicted
        dice = np.full(self._num_classes, np.nan)
        dice[present] = 2 * tp[present] / (pos_gt[present] + pos_pred[present])
        # A class with no band pixel at all (its every edge ignored) falls back to its mask IoU, the
        # limit of Boundary IoU as the band widens.
        biou = np.full(self._num_classes, np.nan)
        biou[present] = tp[present] / (pos_gt + pos_pred - tp)[present]
        has_band = self._b_union > 0
        biou[has_band] = self._b_inter[has_band] / self._b_union[has_band]
        res["mDice"] = 100 * float(np.mean(dice[present])) if present.any() else float("nan")
        res["mBoundaryIoU"] = 100 * float(np.mean(biou[present])) if present.any() else float("nan")
        for i, name in enumerate(self._class_names):
            res[f"Dice-{name}"] = 100 * dice[i]
        for i, name in enumerate(self._class_names):
            res[f"BoundaryIoU-{name}"] = 100 * biou[i]
        for key, value in res.items():
            res[key] = float(value)  # plain numbers: NumPy 2 prints its scalars as np.float64(...)
        self._log_tables(res)
        if self._output_dir:
            with PathManager.open(os.path.join(self._output_dir, "sem_seg_evaluation.pth"), "wb") as f:
                torch.save(res, f)
        return results

    def _log_tables(self, res: dict) -> None:
        summary = {k: res[k] for k in ("mIoU", "fwIoU", "mACC", "pACC", "mDice", "mBoundaryIoU") if k in res}
        self._logger.info("Evaluation results for sem_seg: \n" + create_small_table(summary))
        rows = [[name] + [res.get(f"{m}-{name}", float("nan")) for m in ("IoU", "ACC", "Dice", "BoundaryIoU")]
                for name in self._class_names]
        table = tabulate(rows, headers=["class", "IoU", "ACC", "Dice", "BoundaryIoU"], tablefmt="pipe",
                         floatfmt=".3f", numalign="left")
        self._logger.info("Per-class results for sem_seg (NaN: a class neither in the ground truth nor predicted): \n"
                          + table)
