"""Semantic segmentation evaluation: detectron2's SemSegEvaluator plus per-class Dice and Boundary IoU."""
import os
from collections.abc import Mapping

import cv2
import numpy as np
import pycocotools.mask as mask_util
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

    The bands of all classes come from one max and one min filter over each label map (OpenCV on bytes
    on the CPU, max pools on the GPU when the prediction is there), and one histogram of (band, predicted
    class, true class) holds both the confusion matrix and the band counts.

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

    def _predicted_labels(self, sem_seg: torch.Tensor) -> torch.Tensor:
        """Class indices (H, W), on the output's device, as uint8 where the classes fit."""
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
        return pred.to(torch.uint8 if n < 255 else torch.int32)

    def _read_gt(self, file_name: str, shape) -> np.ndarray:
        """The ground truth of ``file_name`` with its ignored pixels as label n (uint8 where the classes fit)."""
        n = self._num_classes
        gt_file = self.input_file_to_gt_file[file_name]
        gt = read_label_map(gt_file)
        if gt.shape != tuple(shape):
            raise ValueError(
                f"Prediction for {file_name} is {shape[0]}x{shape[1]} but its ground "
                f"truth {gt_file} is {gt.shape[0]}x{gt.shape[1]}"
            )
        ignored = gt == self._ignore_label
        bad = ~ignored & ((gt >= n) | (gt < 0)) if gt.dtype.kind == "i" else ~ignored & (gt >= n)
        if bad.any():
            raise SemSegDataError(
                f"Ground truth {gt_file} has label values {np.unique(gt[bad])[:20].tolist()} that are neither one "
                f"of the {n} classes of dataset '{self._dataset_name}' (0..{n - 1}) nor its ignore_label "
                f"{self._ignore_label}"
            )
        gt = gt.astype(np.uint8 if n < 255 else np.int32)  # label maps are 8 or 16 bit; the classes fit here
        gt[ignored] = n
        return gt

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            pred = self._predicted_labels(output["sem_seg"])
            gt = self._read_gt(input["file_name"], pred.shape)
            # One histogram of (band code, prediction, ground truth) holds the confusion matrix and the
            # Boundary IoU counts; on the GPU when the prediction is there.
            if pred.device.type == "cpu":
                pred = pred.numpy()
                hist = self._joint_histogram(pred, gt)
            else:
                hist = self._joint_histogram_torch(pred, torch.from_numpy(gt).to(pred.device))
                pred = pred.cpu().numpy()
            self._conf_matrix += hist.sum(axis=0)
            self._accumulate_boundaries(hist)
            self._predictions.extend(self._encode_json(pred, input["file_name"], np.flatnonzero(hist.sum(axis=(0, 2)))))

    def _joint_histogram(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """(4, n + 1, n + 1) pixel counts by band code (1: in the ground truth band, 2: in the predicted
        band, 3: both), predicted class and ground truth class (n: ignored)."""
        n = self._num_classes
        d = dilation_pixels(*gt.shape, self._dilation_ratio)
        ignored = (gt == n).view(np.uint8)
        # The ignored pixels of the ground truth (label n) are "don't care" in the prediction too.
        pred_valid = np.maximum(pred, ignored * pred.dtype.type(n))
        code = boundary_band(gt, d, ignore_value=n, border_is_boundary=True).view(np.uint8)
        code += 2 * boundary_band(pred_valid, d, ignore_value=n, border_is_boundary=True).view(np.uint8)
        bins = 4 * (n + 1) ** 2
        key = code.astype(np.uint16 if bins <= 2 ** 16 else np.int64)
        key *= (n + 1) ** 2
        key += (n + 1) * pred.astype(key.dtype)
        key += gt
        if key.dtype == np.uint16 and key.size < 2 ** 24:
            # OpenCV's histogram is several times faster than np.bincount (which casts to int64 first);
            # with unit bins over integers it counts exactly, in float32 (exact below 2^24).
            hist = cv2.calcHist([key], [0], None, [bins], [0, bins]).astype(np.int64)
        else:
            hist = np.bincount(key.reshape(-1), minlength=bins)
        return hist.reshape(4, n + 1, n + 1)

    def _joint_histogram_torch(self, pred: torch.Tensor, gt: torch.Tensor) -> np.ndarray:
        """:meth:`_joint_histogram` with torch tensors (on the GPU)."""
        n = self._num_classes
        d = dilation_pixels(*gt.shape, self._dilation_ratio)
        pred_valid = torch.where(gt == n, torch.full_like(pred, n), pred)
        bands = boundary_band(torch.stack([gt.to(pred.dtype), pred_valid]), d, ignore_value=n, border_is_boundary=True)
        key = (n + 1) ** 2 * (bands[0].long() + 2 * bands[1].long()) + (n + 1) * pred.long() + gt.long()
        hist = torch.bincount(key.reshape(-1), minlength=4 * (n + 1) ** 2)
        return hist.cpu().numpy().reshape(4, n + 1, n + 1)

    def _accumulate_boundaries(self, hist: np.ndarray):
        # All classes at once: the band of class c is band & (labels == c).
        n = self._num_classes
        gt_band = hist[1] + hist[3]  # (pred, gt) counts of the ground truth band's pixels
        pred_band = hist[2] + hist[3]
        inter = hist[3].diagonal()[:n]
        self._b_inter += inter
        self._b_union += gt_band[:, :n].sum(axis=0) + pred_band[:n, :].sum(axis=1) - inter

    def encode_json_sem_seg(self, sem_seg, input_file_name):
        """detectron2's COCO-stuff json of a prediction (one RLE per predicted class): the same list,
        several times faster."""
        sem_seg = np.asarray(sem_seg)
        return self._encode_json(sem_seg, input_file_name, np.unique(sem_seg))

    def _encode_json(self, sem_seg: np.ndarray, input_file_name: str, labels) -> list:
        # Without detectron2's full-frame np.unique and int64 copies, which cost more than all of the
        # Boundary IoU: the labels come from the histogram, each mask is compared in column-major order.
        columns = cv2.transpose(sem_seg) if sem_seg.dtype == np.uint8 else np.ascontiguousarray(sem_seg.T)
        json_list = []
        for label in labels:
            if self._contiguous_id_to_dataset_id is not None:
                if label not in self._contiguous_id_to_dataset_id:
                    raise ValueError(f"Predicted class {label} has no dataset id in the metadata of "
                                     f"'{self._dataset_name}' (stuff_dataset_id_to_contiguous_id)")
                dataset_id = self._contiguous_id_to_dataset_id[label]
            else:
                dataset_id = int(label)
            mask = (columns == label).view(np.uint8).T[:, :, None]  # (H, W, 1) in Fortran order, no copy
            mask_rle = mask_util.encode(mask)[0]
            mask_rle["counts"] = mask_rle["counts"].decode("utf-8")
            json_list.append({"file_name": input_file_name, "category_id": dataset_id, "segmentation": mask_rle})
        return json_list

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
