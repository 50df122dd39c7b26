"""Semantic segmentation datasets from two folders: images and label maps, paired by file stem.

::

    register_sem_seg_folder("my_train", "data/images/train", "data/masks/train",
                            stuff_classes=["background", "tumour"], ignore_label=255)

Images are PNG/JPEG/TIFF, 8- or 16-bit, grayscale or RGB; label maps are single-channel PNG/TIFF or
``.npy`` arrays of class indices in ``[0, len(stuff_classes))``, or ``ignore_label``. The dataset is
validated when first loaded: every image must have a label map of the same size and vice versa, and
every label value must be a class or the ignore label; each problem raises
:class:`~seg_d2.data.sem_seg_io.SemSegDataError` naming the file(s).
"""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

from ..sem_seg_io import IMAGE_EXTS, LABEL_EXTS, SemSegDataError, image_size, read_label_map

__all__ = ["load_sem_seg_folder", "register_sem_seg_folder", "check_label_values"]

_MAX_LISTED = 5


def _index(root: str, exts: Sequence[str], suffix: str, what: str) -> Dict[str, str]:
    """Relative path without extension (and without ``suffix``) -> file, for files with ``exts``."""
    if not PathManager.isdir(root):
        raise SemSegDataError(f"The {what} folder {root} does not exist or is not a folder")
    exts = tuple(e.lower() for e in exts)
    out: Dict[str, str] = {}
    for dirpath, _, files in os.walk(PathManager.get_local_path(root)):
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() not in exts:
                continue
            if suffix:
                if not stem.endswith(suffix):
                    continue
                stem = stem[: -len(suffix)]
            key = os.path.normpath(os.path.join(os.path.relpath(dirpath, root), stem))
            path = os.path.join(dirpath, f)
            if key in out:
                raise SemSegDataError(f"Two {what} files have the stem '{key}': {out[key]} and {path}")
            out[key] = path
    if not out:
        raise SemSegDataError(f"No {what} files with extensions {list(exts)} found in {root}")
    return out


def _listed(keys: List[str]) -> str:
    more = f" and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def check_label_values(label: np.ndarray, num_classes: int, ignore_label: int, path: str) -> None:
    """Raise SemSegDataError if ``label`` has values outside [0, num_classes) other than ignore."""
    values = np.unique(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if len(bad):
        raise SemSegDataError(
            f"Label map {path} has values {bad.tolist()[:10]} outside [0, {num_classes}) that are not the "
            f"ignore label {ignore_label} (the dataset has {num_classes} stuff_classes)"
        )


def load_sem_seg_folder(
    image_root: str,
    gt_root: str,
    num_classes: int,
    ignore_label: int = 255,
    *,
    image_exts: Sequence[str] = IMAGE_EXTS,
    gt_exts: Sequence[str] = LABEL_EXTS,
    gt_suffix: str = "",
    validate: bool = True,
) -> List[dict]:
    """Dataset dicts (``file_name``, ``sem_seg_file_name``, ``height``, ``width``, ``image_id``).

    Args:
        image_root, gt_root: folders of images and label maps, searched recursively; an image
            ``a/b.jpg`` pairs with the label map ``a/b{gt_suffix}.png`` (or ``.npy``, ...).
        num_classes, ignore_label: the valid label values.
        validate: read every label map to check its size against its image and its values.

    Raises:
        SemSegDataError: a missing or unreadable folder/file, an image without label map or the
            reverse, a size mismatch, label values out of range, no labelled pixel in any label map (an
            unreadable image: its base class DataFileError).
    """
    images = _index(image_root, image_exts, "", "image")
    labels = _index(gt_root, gt_exts, gt_suffix, "label map")
    no_label = sorted(set(images) - set(labels))
    if no_label:
        raise SemSegDataError(
            f"{len(no_label)} image(s) in {image_root} have no label map in {gt_root} "
            f"(pairs are matched by file stem{f' + suffix {gt_suffix!r}' if gt_suffix else ''}): "
            f"{_listed([images[k] for k in no_label])}"
        )
    no_image = sorted(set(labels) - set(images))
    if no_image:
        raise SemSegDataError(
            f"{len(no_image)} label map(s) in {gt_root} have no image in {image_root}: "
            f"{_listed([labels[k] for k in no_image])}"
        )
    dicts = []
    labelled = False
    for key in sorted(images):
        img_file, gt_file = images[key], labels[key]
        h, w = image_size(img_file)
        if validate:
            label = read_label_map(gt_file)
            if label.shape != (h, w):
                raise SemSegDataError(
                    f"Size mismatch: image {img_file} is {h}x{w} (HxW) but its label map {gt_file} is "
                    f"{label.shape[0]}x{label.shape[1]}"
                )
            check_label_values(label, num_classes, ignore_label, gt_file)
            labelled = labelled or bool((label != ignore_label).any())
        dicts.append(
            {"file_name": img_file, "sem_seg_file_name": gt_file, "height": h, "width": w, "image_id": key}
        )
    if validate and dicts and not labelled:
        # training would learn nothing and evaluation print NaN (and a misleading fwIoU 0)
        raise SemSegDataError(
            f"Every pixel of the {len(dicts)} label map(s) in {gt_root} is the ignore label {ignore_label}: there is "
            f"no labelled pixel to train on or evaluate. Check the label maps and the ignore label."
        )
    return dicts


def register_sem_seg_folder(
    name: str,
    image_root: str,
    gt_root: str,
    stuff_classes: Sequence[str],
    ignore_label: int = 255,
    *,
    stuff_colors: Optional[Sequence[Sequence[int]]] = None,
    image_exts: Sequence[str] = IMAGE_EXTS,
    gt_exts: Sequence[str] = LABEL_EXTS,
    gt_suffix: str = "",
    validate: bool = True,
) -> None:
    """Register ``name`` in DatasetCatalog (listed on each use, its label maps validated on the first) and its
    metadata (``stuff_classes``, ``ignore_label``, ``evaluator_type="sem_seg"``) in MetadataCatalog.

    See :func:`load_sem_seg_folder` for the arguments.
    """
    stuff_classes = list(stuff_classes)
    if not stuff_classes:
        raise ValueError(f"register_sem_seg_folder('{name}'): stuff_classes is empty")
    if 0 <= ignore_label < len(stuff_classes):
        raise ValueError(
            f"register_sem_seg_folder('{name}'): ignore_label {ignore_label} is also a class index "
            f"(there are {len(stuff_classes)} stuff_classes)"
        )
    if stuff_colors is not None and len(stuff_colors) != len(stuff_classes):
        raise ValueError(f"register_sem_seg_folder('{name}'): {len(stuff_colors)} stuff_colors for "
                         f"{len(stuff_classes)} stuff_classes")

    validated = []  # train_net's checks, the loaders and the evaluator each load it: read the label maps once

    def load():
        dicts = load_sem_seg_folder(
            image_root, gt_root, len(stuff_classes), ignore_label, image_exts=image_exts,
            gt_exts=gt_exts, gt_suffix=gt_suffix, validate=validate and not validated,
        )
        validated.append(True)
        return dicts

    DatasetCatalog.register(name, load)
    meta = dict(
        image_root=image_root, sem_seg_root=gt_root, evaluator_type="sem_seg",
        ignore_label=ignore_label, stuff_classes=stuff_classes,
    )
    if stuff_colors is not None:
        meta["stuff_colors"] = [tuple(c) for c in stuff_colors]
    MetadataCatalog.get(name).set(**meta)
