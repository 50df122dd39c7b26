"""Rotated-box views of instance datasets: each box becomes the minimum-area rotated rectangle of the
instance's mask, in detectron2's ``BoxMode.XYWHA_ABS`` (cx, cy, w, h, angle in degrees,
counter-clockwise), for rotated detectors (RRPN + RROIHeads) and ``RotatedCOCOEvaluator``.

``seg_d2_shapes_rotated_{train,val}`` are such views of ``seg_d2_shapes_{train,val}``.
"""
import math
from typing import Dict, List

import cv2
import numpy as np
import pycocotools.mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .shapes import SPLITS

__all__ = ["mask_to_rotated_box", "rotated_box_dicts", "register_rotated_instances", "register_shapes_rotated"]

_PIXEL_CORNERS = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)


def mask_to_rotated_box(mask: np.ndarray) -> List[float]:
    """The minimum-area rotated rectangle enclosing the pixels of a binary mask.

    Pixel (i, j) covers [j, j+1] x [i, i+1], as in detectron2's box coordinates, so an axis-aligned
    mask gives the same box as ``pycocotools.mask.toBbox``.

    Args:
        mask: (H, W) array, non-zero inside the instance (several components allowed).

    Returns:
        [cx, cy, w, h, angle]: ``BoxMode.XYWHA_ABS``; the angle (degrees, counter-clockwise as seen on
        the image, i.e. with y pointing down) is canonical in (-45, 45], ``w`` lying along it.

    Raises:
        ValueError: the mask is empty.
    """
    contours, _ = cv2.findContours(np.ascontiguousarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        raise ValueError("empty mask: it has no rotated box")
    # The hull of the boundary pixels' corners is the hull of the pixels (cv2 works on their centres).
    centres = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float32)
    corners = (centres[:, None, :] + _PIXEL_CORNERS).reshape(-1, 2)
    rect = cv2.minAreaRect(corners)
    # Read the edges off the corners rather than cv2's angle, whose convention changed in OpenCV 4.5.1.
    p = cv2.boxPoints(rect).astype(np.float64)
    e1, e2 = p[1] - p[0], p[2] - p[1]
    w, h = float(np.hypot(*e1)), float(np.hypot(*e2))
    # detectron2 maps the w-axis to (cos a, -sin a) in image coordinates (see RotatedBoxes).
    angle = math.degrees(math.atan2(-e1[1], e1[0]))
    while angle > 45:  # (w, h, a) and (h, w, a - 90) are the same rectangle
        angle, w, h = angle - 90, h, w
    while angle <= -45:
        angle, w, h = angle + 90, h, w
    (cx, cy), _, _ = rect
    return [float(cx), float(cy), w, h, angle]


def _decode(segm, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, RLE or uncompressed RLE) as an (H, W) uint8 mask."""
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_util.frPyObjects(segm, height, width)
    elif isinstance(segm, dict):
        rle = segm
    else:
        raise TypeError(f"unknown segmentation type {type(segm).__name__}")
    return mask_util.decode(rle)


def rotated_box_dicts(dataset_dicts: List[Dict], dataset_name: str) -> List[Dict]:
    """Copies of ``dataset_dicts`` whose boxes are the rotated boxes of their masks (``mask_to_rotated_box``).

    The segmentation is kept, so that COCO conversion measures areas on the masks.

    Raises:
        ValueError: an annotation has no (or an empty, or an unreadable) segmentation; the message
            names the dataset, the image file and the annotation.
    """
    out = []
    for record in dataset_dicts:
        record = dict(record)
        annos = []
        for k, anno in enumerate(record.get("annotations", [])):
            where = f"dataset '{dataset_name}', image {record.get('file_name')!r}, annotation #{k}"
            if "segmentation" not in anno:
                raise ValueError(f"{where}: no segmentation, so no rotated box can be derived")
            try:
                mask = _decode(anno["segmentation"], record["height"], record["width"])
                box = mask_to_rotated_box(mask)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: {e}") from None
            anno = dict(anno, bbox=box, bbox_mode=BoxMode.XYWHA_ABS)
            annos.append(anno)
        record["annotations"] = annos
        out.append(record)
    return out


def register_rotated_instances(name: str, source_name: str) -> None:
    """Register ``name``: the rotated-box view of the registered instance dataset ``source_name``.

    Its metadata has ``evaluator_type`` "rotated_coco" (detectron2's ``RotatedCOCOEvaluator``) and no
    ``json_file``: the evaluator converts the rotated ground truth itself.

    Raises:
        ValueError: ``source_name`` has no ``thing_classes`` metadata.
    """
    src = MetadataCatalog.get(source_name)
    if not src.get("thing_classes"):
        raise ValueError(f"Cannot register '{name}': dataset '{source_name}' has no thing_classes metadata")
    DatasetCatalog.register(name, lambda: rotated_box_dicts(DatasetCatalog.get(source_name), name))
    MetadataCatalog.get(name).set(
        thing_classes=list(src.thing_classes), evaluator_type="rotated_coco",
        **({"thing_colors": list(src.thing_colors)} if src.get("thing_colors") else {}),
    )


def register_shapes_rotated() -> None:
    """Register ``seg_d2_shapes_rotated_{split}`` (needs ``seg_d2_shapes_{split}`` registered)."""
    for split in [*SPLITS, "val_mini"]:
        register_rotated_instances(f"seg_d2_shapes_rotated_{split}", f"seg_d2_shapes_{split}")
