"""Dataset mapper for semantic segmentation: read, augment image and label map together, to tensors."""
import copy
import logging
from typing import List, Optional

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T

from .checks import dataset_ignore_label, reads_label_maps
from .sem_seg_io import SemSegDataError, read_image, read_label_map

__all__ = ["SemSegDatasetMapper", "build_sem_seg_augmentations", "apply_segmentation"]

# Transforms whose nearest-neighbour resampling of a label map depends on its dtype: PIL (or OpenCV)
# for uint8, torch's "nearest" (another pixel grid) or an error otherwise.
_RESAMPLING = (T.ResizeTransform, T.ExtentTransform, T.RotationTransform)


def build_sem_seg_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """Train: resize by shortest edge, random crop with a category-area constraint, flip, colour
    jitter (each as enabled in ``cfg.INPUT``). Test: resize by shortest edge (if MIN_SIZE_TEST > 0).

    Label maps always use nearest-neighbour interpolation (detectron2's ``apply_segmentation``, on
    uint8's pixel grid for any label values: :func:`apply_segmentation`).
    """
    inp = cfg.INPUT
    if not is_train:
        return [T.ResizeShortestEdge(inp.MIN_SIZE_TEST, inp.MAX_SIZE_TEST, "choice")] if inp.MIN_SIZE_TEST > 0 else []
    augs: List[T.Augmentation] = [
        T.ResizeShortestEdge(inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING)
    ]
    if inp.CROP.ENABLED:
        augs.append(T.RandomCrop_CategoryAreaConstraint(
            inp.CROP.TYPE, inp.CROP.SIZE, inp.CROP.SINGLE_CATEGORY_MAX_AREA, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        ))
    if inp.RANDOM_FLIP != "none":
        augs.append(T.RandomFlip(horizontal=inp.RANDOM_FLIP == "horizontal", vertical=inp.RANDOM_FLIP == "vertical"))
    if inp.COLOR_JITTER.ENABLED:
        jit = inp.COLOR_JITTER
        augs += [T.RandomBrightness(*jit.BRIGHTNESS), T.RandomContrast(*jit.CONTRAST)]
        if inp.FORMAT != "L":  # saturation needs colour
            augs.append(T.RandomSaturation(*jit.SATURATION))
    return augs


def apply_segmentation(tfm: T.Transform, label: np.ndarray) -> np.ndarray:
    """``tfm.apply_segmentation(label)`` for integer labels of any range, on uint8 labels' pixel grid.

    Resampling transforms take labels that do not fit uint8 byte plane by byte plane, each as uint8
    (two's complement, so negative labels too), and recombine them: every output pixel comes from
    the same input pixel as it would for a uint8 label map. Other transforms (crop, flip, pad, ...)
    are exact for any dtype.
    """
    if label.dtype == np.uint8:
        return tfm.apply_segmentation(label)
    for t in (tfm.transforms if isinstance(tfm, T.TransformList) else [tfm]):
        if not isinstance(t, _RESAMPLING):
            label = t.apply_segmentation(label)
            continue
        label = label.astype(np.int64, copy=False)
        lo, hi = int(label.min(initial=0)), int(label.max(initial=0))
        nbytes = 8 if lo < 0 else max(1, (hi.bit_length() + 7) // 8)
        planes = np.ascontiguousarray(label).view(np.uint64)
        out = None
        for k in range(nbytes):
            shift = np.uint64(8 * k)
            plane = t.apply_segmentation(((planes >> shift) & np.uint64(255)).astype(np.uint8))
            plane = plane.astype(np.uint64) << shift
            out = plane if out is None else out | plane
        label = out.view(np.int64)
    return label


class _SemSegAugInput(T.AugInput):
    """AugInput whose label map may hold any integers (see :func:`apply_segmentation`)."""

    def transform(self, tfm: T.Transform) -> None:
        self.image = tfm.apply_image(self.image)
        if self.sem_seg is not None:
            self.sem_seg = apply_segmentation(tfm, self.sem_seg)


class SemSegDatasetMapper:
    """Maps a dataset dict with ``file_name`` and ``sem_seg_file_name`` to the model's input:
    ``image`` (C x H x W tensor, C = 1 for ``INPUT.FORMAT`` "L", else 3) and, in training (or with
    ``read_labels``: for a model that takes label maps as input), ``sem_seg`` (H x W int64 tensor).

    Images and label maps go through :mod:`seg_d2.data.sem_seg_io` (8/16-bit, gray/RGB, PNG/JPEG/TIFF
    images; PNG or ``.npy`` label maps). Training drops nothing: a bad file raises a clear error,
    and so does a label value that is neither a class of the model nor the dataset's ignore label,
    which is mapped to the model's (``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str = "BGR",
        ignore_label: int = 255,
        dataset_ignore_label: Optional[int] = None,
        num_classes: Optional[int] = None,
        read_labels: Optional[bool] = None,
    ):
        """
        Args:
            is_train: whether the label map is loaded (and augmentations are the train ones).
            augmentations: applied to image and label map together.
            image_format: "BGR", "RGB" or "L".
            ignore_label: label of pixels the loss ignores (``MODEL.SEM_SEG_HEAD.IGNORE_VALUE``).
            dataset_ignore_label: the datasets' own ignore label (metadata ``ignore_label``), mapped
                to ``ignore_label``; None: the same as ``ignore_label``.
            num_classes: the model's ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` (1: binary, labels 0 and 1).
                Label values outside ``[0, max(num_classes, 2))`` other than the dataset ignore label
                raise :class:`SemSegDataError`. None: not checked.
            read_labels: read the label maps; None: in training only.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.dataset_ignore_label = ignore_label if dataset_ignore_label is None else dataset_ignore_label
        self.num_classes = num_classes
        self.read_labels = is_train if read_labels is None else read_labels
        logging.getLogger(__name__).info(
            f"[SemSegDatasetMapper] {'train' if is_train else 'test'} augmentations: {augmentations}"
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        read_labels = is_train or reads_label_maps(cfg)  # in inference only a generator's input (Pix2Pix)
        return {
            "is_train": is_train,
            "augmentations": build_sem_seg_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "dataset_ignore_label": dataset_ignore_label(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST)
            if read_labels else None,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "read_labels": read_labels,
        }

    def _check_and_remap(self, label: np.ndarray, path: str) -> np.ndarray:
        """Reject values that are neither a class nor the dataset ignore label; map the latter to
        ``ignore_label``. Returns uint8 where the values fit (detectron2's exact PIL path), else int64."""
        ignore = self.dataset_ignore_label
        if self.num_classes is not None:
            upper = max(self.num_classes, 2)  # binary: one logit, labels 0 and 1
            if label.min(initial=0) < 0 or label.max(initial=0) >= upper:  # cheap test first
                bad = ((label < 0) | (label >= upper)) & (label != ignore)
                if bad.any():
                    values = np.unique(label[bad])
                    raise SemSegDataError(
                        f"Label map {path} has values {values[:10].tolist()}{' ...' if len(values) > 10 else ''} "
                        f"that are neither a class of the model (MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                        f"{self.num_classes}: labels 0..{upper - 1}) nor the dataset's ignore label {ignore}"
                    )
        if ignore != self.ignore_label:
            label = np.where(label == ignore, self.ignore_label, label.astype(np.int64))
        if label.dtype != np.uint8:
            fits = 0 <= label.min(initial=0) and label.max(initial=0) < 256
            label = label.astype(np.uint8 if fits else np.int64)
        return label

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], self.image_format)
        dataset_dict.setdefault("height", image.shape[0])
        dataset_dict.setdefault("width", image.shape[1])
        label: Optional[np.ndarray] = None
        if self.read_labels:
            if "sem_seg_file_name" not in dataset_dict:
                raise SemSegDataError(f"Dataset dict of {dataset_dict['file_name']} has no 'sem_seg_file_name'")
            label = read_label_map(dataset_dict["sem_seg_file_name"])
            if label.shape != image.shape[:2]:
                raise SemSegDataError(
                    f"Size mismatch: image {dataset_dict['file_name']} is {image.shape[0]}x{image.shape[1]} "
                    f"(HxW) but its label map {dataset_dict['sem_seg_file_name']} is {label.shape[0]}x{label.shape[1]}"
                )
            label = self._check_and_remap(label, dataset_dict["sem_seg_file_name"])
        aug_input = _SemSegAugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.require(image.transpose(2, 0, 1), requirements=["C", "W"]))
        if label is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        dataset_dict.pop("annotations", None)
        return dataset_dict
