"""Dataset mapper for semantic segmentation: read, augment image and label map together, to tensors."""
import copy
import logging
from typing import List, Optional

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T

from .sem_seg_io import SemSegDataError, read_image, read_label_map

__all__ = ["SemSegDatasetMapper", "build_sem_seg_augmentations"]


def build_sem_seg_augmentations(cfg, is_train: bool) -> List[T.Augmentation]:
    """Train: resize by shortest edge, random crop with a category-area constraint, flip, colour
    jitter (each as enabled in ``cfg.INPUT``). Test: resize by shortest edge (if MIN_SIZE_TEST > 0).

    Label maps always use nearest-neighbour interpolation (detectron2's ``apply_segmentation``).
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


class SemSegDatasetMapper:
    """Maps a dataset dict with ``file_name`` and ``sem_seg_file_name`` to the model's input:
    ``image`` (C x H x W tensor, C = 1 for ``INPUT.FORMAT`` "L", else 3) and, in training,
    ``sem_seg`` (H x W int64 tensor).

    Images and label maps go through :mod:`seg_d2.data.sem_seg_io` (8/16-bit, gray/RGB, PNG/JPEG/TIFF
    images; PNG or ``.npy`` label maps). Training drops nothing: a bad file raises a clear error.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str = "BGR",
        ignore_label: int = 255,
    ):
        """
        Args:
            is_train: whether the label map is loaded (and augmentations are the train ones).
            augmentations: applied to image and label map together.
            image_format: "BGR", "RGB" or "L".
            ignore_label: label of pixels the loss ignores (crops never pad, so it only passes through).
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        logging.getLogger(__name__).info(
            f"[SemSegDatasetMapper] {'train' if is_train else 'test'} augmentations: {augmentations}"
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_sem_seg_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], self.image_format)
        dataset_dict.setdefault("height", image.shape[0])
        dataset_dict.setdefault("width", image.shape[1])
        label: Optional[np.ndarray] = None
        if self.is_train:
            if "sem_seg_file_name" not in dataset_dict:
                raise SemSegDataError(f"Dataset dict of {dataset_dict['file_name']} has no 'sem_seg_file_name'")
            label = read_label_map(dataset_dict["sem_seg_file_name"])
            if label.shape != image.shape[:2]:
                raise SemSegDataError(
                    f"Size mismatch: image {dataset_dict['file_name']} is {image.shape[0]}x{image.shape[1]} "
                    f"(HxW) but its label map {dataset_dict['sem_seg_file_name']} is {label.shape[0]}x{label.shape[1]}"
                )
            # detectron2's nearest resize goes through PIL for uint8 and torch for float: both exact
            label = label.astype(np.uint8) if label.max(initial=0) < 256 and label.min(initial=0) >= 0 \
                else label.astype(np.float32)
        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.require(image.transpose(2, 0, 1), requirements=["C", "W"]))
        if label is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        dataset_dict.pop("annotations", None)
        return dataset_dict
