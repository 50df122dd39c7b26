"""Semantic segmentation evaluation: detectron2's SemSegEvaluator plus per-class Dice and Boundary IoU."""
import os

import numpy as np
import torch

from detectron2.evaluation import SemSegEvaluator
from detectron2.utils.comm import all_gather, is_main_process
from detectron2.utils.file_io import PathManager

from ..data.sem_seg_io import read_label_map
from .boundary_iou import mask_to_boundary

__all__ = ["SemSegBoundaryEvaluator"]


class SemSegBoundaryEvaluator(SemSegEvaluator):
    """detectron2's SemSegEvaluator: mIoU, fwIoU, mACC, pACC, per-class IoU and ACC, and the
    predictions saved as COCO-format RLE json (``sem_seg_predictions.json``); plus

    - ``Dice-{class}`` and ``mDice``: ``2 TP / (2 TP + FP + FN)`` per class, from the same confusion matrix;
    - ``BoundaryIoU-{class}`` and ``mBoundaryIoU`` (Cheng et al. 2021): the IoU of the boundary
      bands (width 2% of the image diagonal) of the predicted and ground-truth masks of each class,
      accumulated over the dataset like mIoU. Ignored pixels are "don't care": they count in
      neither band, and the edge of an ignored region is no boundary.

    Label maps are read with seg_d2's reader, so ``.npy`` and 16-bit label maps work too.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None, *, dilation_ratio: float = 0.02):
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir)
        self._dilation_ratio = dilation_ratio

    def reset(self):
        super().reset()
        self._b_inter = np.zeros(self._num_classes, dtype=np.int64)
        self._b_union = np.zeros(self._num_classes, dtype=np.int64)

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            pred = output["sem_seg"].argmax(dim=0).to(self._cpu_device).numpy().astype(np.int64)
            gt_file = self.input_file_to_gt_file[input["file_name"]]
            gt = read_label_map(gt_file).astype(np.int64)
            if gt.shape != pred.shape:
                raise ValueError(
                    f"Prediction for {input['file_name']} is {pred.shape[0]}x{pred.shape[1]} but its ground "
                    f"truth {gt_file} is {gt.shape[0]}x{gt.shape[1]}"
                )
            valid = gt != self._ignore_label
            gt[~valid] = self._num_classes
            self._conf_matrix += np.bincount(
                (self._num_classes + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=self._conf_matrix.size
            ).reshape(self._conf_matrix.shape)
            self._accumulate_boundaries(pred, gt, valid)
            self._predictions.extend(self.encode_json_sem_seg(pred, input["file_name"]))

    def _accumulate_boundaries(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray):
        # Ignored pixels are "don't care": they join both masks, so that the edge of an ignored
        # region makes no boundary, and the bands are then counted on valid pixels only.
        dont_care = ~valid
        for c in np.union1d(np.unique(pred[valid]), np.unique(gt[valid])):
            if c >= self._num_classes:
                continue
            gb = mask_to_boundary((gt == c) | dont_care, self._dilation_ratio).astype(bool) & valid
            pb = mask_to_boundary((pred == c) | dont_care, self._dilation_ratio).astype(bool) & valid
            self._b_inter[c] += int(np.count_nonzero(gb & pb))
            self._b_union[c] += int(np.count_nonzero(gb | pb))

    def evaluate(self):
        if self._distributed:  # gather ours on every rank before super() gathers the rest
            inter, union = all_gather(self._b_inter), all_gather(self._b_union)
            if is_main_process():
                self._b_inter, self._b_union = sum(inter), sum(union)
        results = super().evaluate()
        if results is None:  # not the main process
            return None
        res = results["sem_seg"]
        tp = self._conf_matrix.diagonal()[:-1].astype(float)
        pos_gt = self._conf_matrix[:-1, :-1].sum(axis=0).astype(float)
        pos_pred = self._conf_matrix[:-1, :-1].sum(axis=1).astype(float)
        dice = np.full(self._num_classes, np.nan)
        present = pos_gt > 0  # as mIoU: classes absent from the ground truth are not averaged
        dice[present] = 2 * tp[present] / (pos_gt[present] + pos_pred[present])
        biou = np.full(self._num_classes, np.nan)
        b_present = present & (self._b_union > 0)
        biou[b_present] = self._b_inter[b_present] / self._b_union[b_present]
        res["mDice"] = 100 * float(np.mean(dice[present])) if present.any() else float("nan")
        res["mBoundaryIoU"] = 100 * float(np.mean(biou[b_present])) if b_present.any() else float("nan")
        for i, name in enumerate(self._class_names):
            res[f"Dice-{name}"] = 100 * dice[i]
        for i, name in enumerate(self._class_names):
            res[f"BoundaryIoU-{name}"] = 100 * biou[i]
        if self._output_dir:
            with PathManager.open(os.path.join(self._output_dir, "sem_seg_evaluation.pth"), "wb") as f:
                torch.save(res, f)
        return results
