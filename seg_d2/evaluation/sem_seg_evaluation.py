"""Semantic segmentation evaluation: detectron2's SemSegEvaluator plus per-class Dice and Boundary IoU."""
import itertools
import json
import os
from collections import OrderedDict

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from tabulate import tabulate

from detectron2.evaluation import SemSegEvaluator
from detectron2.utils.comm import all_gather, is_main_process, synchronize
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from ..data.sem_seg_io import SemSegDataError, read_label_map
from ..layers import boundary_band
from .boundary_iou import dilation_pixels

__all__ = ["SemSegBoundaryEvaluator", "semantic_metrics"]


def semantic_metrics(conf_matrix: np.ndarray, b_inter: np.ndarray, b_union: np.ndarray, class_names) -> dict:
    """seg_d2's semantic metrics, in percent, from the (n + 1) x (n + 1) confusion matrix (rows: predicted,
    columns: ground truth, last: ignored) and the per-class Boundary IoU band counts.

    The class set: every mean (mIoU, mDice, mBoundaryIoU) averages over the classes present in the ground
    truth or in the predictions, as detectron2 v0.6's mIoU does; a class only predicted scores 0 (IoU, Dice
    and Boundary IoU), a class in neither is NaN. Accuracy is defined for the ground truth's classes: mACC
    averages over them, fwIoU weights IoU by their pixel frequency, pACC counts all labelled pixels. With
    no labelled pixel at all, every value is NaN.
    """
    n = len(class_names)
    tp = conf_matrix.diagonal()[:n].astype(float)
    pos_gt = conf_matrix[:n, :n].sum(axis=0).astype(float)
    pos_pred = conf_matrix[:n, :n].sum(axis=1).astype(float)
    in_gt = pos_gt > 0
    present = in_gt | (pos_pred > 0)
    iou, acc, dice, biou = (np.full(n, np.nan) for _ in range(4))
    iou[present] = tp[present] / (pos_gt + pos_pred - tp)[present]
    acc[in_gt] = tp[in_gt] / pos_gt[in_gt]
    dice[present] = 2 * tp[present] / (pos_gt + pos_pred)[present]
    # A class with no band pixel at all (its every edge ignored) falls back to its mask IoU, the
    # limit of Boundary IoU as the band widens.
    biou[present] = iou[present]
    has_band = present & (b_union > 0)
    biou[has_band] = b_inter[has_band] / b_union[has_band]

    def mean(values, where):
        return 100 * float(np.mean(values[where])) if where.any() else float("nan")

    total = pos_gt.sum()
    res = {
        "mIoU": mean(iou, present),
        "fwIoU": 100 * float(np.sum(iou[in_gt] * pos_gt[in_gt]) / total) if total else float("nan"),
        "mACC": mean(acc, in_gt),
        "pACC": 100 * float(tp.sum() / total) if total else float("nan"),
        "mDice": mean(dice, present),
        "mBoundaryIoU": mean(biou, present),
    }
    for metric, values in (("IoU", iou), ("ACC", acc), ("Dice", dice), ("BoundaryIoU", biou)):
        res.update({f"{metric}-{name}": 100 * float(v) for name, v in zip(class_names, values)})
    return res


class SemSegBoundaryEvaluator(SemSegEvaluator):
    """detectron2's SemSegEvaluator (its data reading, process loop and prediction json,
    ``sem_seg_predictions.json``), with metrics that mean the same on detectron2 v0.6 and main:
    mIoU, fwIoU, mACC, pACC, per-class IoU and ACC, plus

    - ``Dice-{class}`` and ``mDice``: ``2 TP / (2 TP + FP + FN)`` per class, from the same confusion matrix;
    - ``BoundaryIoU-{class}`` and ``mBoundaryIoU`` (Cheng et al. 2021): the IoU of the boundary
      bands (``seg_d2.layers.boundary_band``, width d = 2% of the image diagonal, the image border
      counting as background) of the predicted and ground-truth masks of each class, accumulated
      over the dataset like mIoU. Ignored pixels are "don't care": they count in neither band, and
      the edge of an ignored region is no boundary.

    The class set of the means and the NaN rules are :func:`semantic_metrics`'s. detectron2's own
    ``evaluate()`` is not used: main averages mIoU over the ground truth's classes only, and its
    ``BoundaryIoU-{class}`` erodes the whole label map at once, which is not Cheng et al.'s per-class band.

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
        """mIoU, fwIoU, mACC, pACC, mDice, mBoundaryIoU and the per-class values, computed here from the
        confusion matrix and the band counts (not by detectron2's ``evaluate()``, whose class set and
        Boundary IoU differ between v0.6 and main), so that they mean the same on either."""
        if self._distributed:
            synchronize()
            gathered = all_gather((self._conf_matrix, self._b_inter, self._b_union, self._predictions))
            if not is_main_process():
                return None
            self._conf_matrix, self._b_inter, self._b_union = (sum(g[i] for g in gathered) for i in range(3))
            self._predictions = list(itertools.chain(*(g[3] for g in gathered)))
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with PathManager.open(os.path.join(self._output_dir, "sem_seg_predictions.json"), "w") as f:
                f.write(json.dumps(self._predictions))
        if not self._conf_matrix[:, :-1].any():
            self._logger.warning(
                f"No labelled pixel in the ground truth of '{self._dataset_name}' (every pixel is its ignore_label "
                f"{self._ignore_label}): every metric is NaN")
        res = semantic_metrics(self._conf_matrix, self._b_inter, self._b_union, self._class_names)
        self._log_tables(res)
        if self._output_dir:
            with PathManager.open(os.path.join(self._output_dir, "sem_seg_evaluation.pth"), "wb") as f:
                torch.save(res, f)
        return OrderedDict({"sem_seg": res})

    def _log_tables(self, res: dict) -> None:
        summary = {k: res[k] for k in ("mIoU", "fwIoU", "mACC", "pACC", "mDice", "mBoundaryIoU") if k in res}
        self._logger.info("Evaluation results for sem_seg: \n" + create_small_table(summary))
        rows = [[name] + [res.get(f"{m}-{name}", float("nan")) for m in ("IoU", "ACC", "Dice", "BoundaryIoU")]
                for name in self._class_names]
        table = tabulate(rows, headers=["class", "IoU", "ACC", "Dice", "BoundaryIoU"], tablefmt="pipe",
                         floatfmt=".3f", numalign="left")
        self._logger.info("Per-class results for sem_seg (NaN: a class neither in the ground truth nor predicted): \n"
                          + table)
