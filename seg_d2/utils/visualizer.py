"""Drawing predictions and ground truth: semantic overlays with a legend, per-pixel confidence maps,
instance overlays. Everything is drawn through detectron2's :class:`Visualizer`; this module adds
class colours that never change between images (the dataset's ``stuff_colors``/``thing_colors``, a
fixed palette otherwise), a legend, and the marking of ignored and unknown label ids.

Images are RGB ``uint8`` arrays (H, W, 3) in and out.
"""
import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = [
    "PALETTE", "IGNORE_COLOR", "UNKNOWN_COLOR", "class_names", "class_colors", "sem_seg_probabilities",
    "draw_sem_seg", "draw_confidence", "draw_instances", "draw_instance_annotations", "add_legend",
    "to_uint8_rgb", "write_image", "unique_name",
]

RGB = Tuple[int, int, int]
# A fixed palette (detectron2's 74 colours) for classes whose dataset defines no colours.
PALETTE: List[RGB] = [tuple(int(c) for c in rgb) for rgb in colormap(rgb=True, maximum=255)]
IGNORE_COLOR: RGB = (128, 128, 128)  # pixels labelled with the dataset's ignore_label
UNKNOWN_COLOR: RGB = (255, 0, 255)  # label ids outside the dataset's classes: a wrong id, to be seen
_OFF_WHITE = (1.0, 1.0, 240.0 / 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE, _ROW = 0.4, 16  # legend text scale and row height (pixels)


def _metadata(metadata) -> Metadata:
    return metadata if metadata is not None else Metadata(name="__seg_d2_unnamed")


def class_names(metadata, num_classes: int, key: str = "stuff_classes") -> List[str]:
    """``num_classes`` names: the metadata's (``stuff_classes`` or ``thing_classes``), "class k" beyond."""
    names = list(_metadata(metadata).get(key, None) or [])
    return names[:num_classes] + [f"class {k}" for k in range(len(names), num_classes)]


def class_colors(metadata, num_classes: int, key: str = "stuff_colors") -> List[RGB]:
    """``num_classes`` RGB colours: the metadata's (``stuff_colors`` or ``thing_colors``) where it has
    one, the fixed :data:`PALETTE` (by class id) otherwise."""
    colors = [tuple(int(c) for c in rgb) for rgb in (_metadata(metadata).get(key, None) or [])]
    return [colors[k] if k < len(colors) else PALETTE[k % len(PALETTE)] for k in range(num_classes)]


def sem_seg_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities (K, H, W) of a semantic model's ``sem_seg`` logits (K, H, W); a single
    (binary, foreground) logit gives two channels, background and foreground."""
    logits = logits.float()
    if logits.shape[0] == 1:
        fg = torch.sigmoid(logits)
        return torch.cat([1.0 - fg, fg])
    return F.softmax(logits, dim=0)


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """An image for drawing: uint8, (H, W, 3); float images (16-bit ones read by seg_d2 are scaled
    to [0, 255]) are clipped, gray ones replicated."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def add_legend(image: np.ndarray, entries: Sequence[Tuple[str, RGB]], title: Optional[str] = None) -> np.ndarray:
    """``image`` with a white legend panel on its right: a colour swatch and a name per entry. The
    result is at least as tall as the legend (the image is padded below with white)."""
    rows = ([(title, None)] if title else []) + list(entries)
    if not rows:
        return image
    text_w = max(cv2.getTextSize(name, _FONT, _FONT_SCALE, 1)[0][0] for name, _ in rows)
    width = text_w + 30
    height = max(image.shape[0], len(rows) * _ROW + 8)
    canvas = np.full((height, image.shape[1] + width, 3), 255, dtype=np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    x0 = image.shape[1] + 6
    for k, (name, color) in enumerate(rows):
        y = 4 + k * _ROW
        if color is not None:
            cv2.rectangle(canvas, (x0, y + 2), (x0 + 11, y + 13), tuple(int(c) for c in color), -1)
            cv2.rectangle(canvas, (x0, y + 2), (x0 + 11, y + 13), (64, 64, 64), 1)
        cv2.putText(canvas, name, (x0 + (16 if color is not None else 0), y + 12), _FONT, _FONT_SCALE,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def draw_sem_seg(
    image: np.ndarray,
    labels: np.ndarray,
    metadata=None,
    *,
    num_classes: Optional[int] = None,
    alpha: float = 0.5,
    ignore_label: Optional[int] = None,
    legend: str = "present",
    text: bool = True,
    area_threshold: int = 0,
    scale: float = 1.0,
) -> np.ndarray:
    """Overlay a label map (H, W) on an RGB image (H, W, 3), one colour per class.

    Args:
        metadata: the dataset's metadata: ``stuff_classes``, ``stuff_colors`` (else :data:`PALETTE`)
            and ``ignore_label`` (unless ``ignore_label`` is given).
        num_classes: classes of the model or dataset (default: ``len(stuff_classes)``).
        alpha: opacity of the class colours.
        ignore_label: pixels with this label are drawn grey, as "ignore" (default: the metadata's
            ``ignore_label``, else 255).
        scale: the overlay's size relative to the image's (texts keep their size: > 1 for small images).
        legend: "present" (the classes in ``labels``), "all" (every class, a fixed size: video) or "none".
        text: write each class name on its largest region (but "background": the legend says it).
        area_threshold: regions smaller than this (pixels) are not drawn.

    Label ids outside ``[0, num_classes)`` other than ``ignore_label`` are drawn magenta as
    "unknown id N" (a wrong class id in a dataset); negative ids are not drawn (e.g. pixels under
    a confidence threshold).

    Returns:
        RGB uint8 overlay, with the legend panel on the right unless ``legend == "none"``.
    """
    if legend not in ("present", "all", "none"):
        raise ValueError(f"legend must be 'present', 'all' or 'none', got {legend!r}")
    metadata = _metadata(metadata)
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"Label map {labels.shape} and image {image.shape[:2]} differ in size")
    if ignore_label is None:
        ignore_label = metadata.get("ignore_label", 255)
    if num_classes is None:
        num_classes = len(metadata.get("stuff_classes", None) or []) or int(
            labels[labels != ignore_label].max(initial=0)) + 1
    names, colors = class_names(metadata, num_classes), class_colors(metadata, num_classes)

    def style(label: int):
        if 0 <= label < num_classes:
            return names[label], colors[label]
        if ignore_label is not None and label == ignore_label:
            return f"ignore ({label})", IGNORE_COLOR
        return f"unknown id {label}", UNKNOWN_COLOR

    vis = Visualizer(to_uint8_rgb(image), metadata, scale=scale)
    ids, areas = np.unique(labels, return_counts=True)
    for label in ids[np.argsort(-areas, kind="stable")].tolist():
        if label < 0:
            continue
        name, color = style(label)
        vis.draw_binary_mask(
            (labels == label).astype(np.uint8), color=[c / 255 for c in color], edge_color=_OFF_WHITE,
            text=name if text and name.lower() != "background" else None, alpha=alpha, area_threshold=area_threshold,
        )
    out = vis.get_output().get_image()
    if legend == "none":
        return out
    present = [k for k in ids.tolist() if k >= 0]
    keys = present if legend == "present" else list(range(num_classes)) + [k for k in present if k >= num_classes]
    return add_legend(out, [(f"{k} {style(k)[0]}" if k < num_classes else style(k)[0], style(k)[1]) for k in keys])


def draw_confidence(confidence: np.ndarray, title: str = "confidence", scale: float = 1.0) -> np.ndarray:
    """A per-pixel confidence map (H, W) in [0, 1] (e.g. the top class probability) as an RGB image
    (viridis colours, ``scale`` times the map's size), with a colour bar from 0 to 1 on its right."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    conf = np.clip(np.asarray(confidence, dtype=np.float32), 0.0, 1.0)
    heat = (cmap(conf)[:, :, :3] * 255).round().astype(np.uint8)
    if scale != 1.0:
        size = (max(1, round(heat.shape[1] * scale)), max(1, round(heat.shape[0] * scale)))
        heat = cv2.resize(heat, size, interpolation=cv2.INTER_NEAREST)
    h = heat.shape[0]
    bar_h = max(h - 2 * _ROW, 16)
    panel = np.full((max(h, bar_h + 2 * _ROW), 64, 3), 255, dtype=np.uint8)
    ramp = np.linspace(1.0, 0.0, bar_h)[:, None].repeat(12, axis=1)
    panel[_ROW : _ROW + bar_h, 6:18] = (cmap(ramp)[:, :, :3] * 255).round().astype(np.uint8)
    for value, y in ((1.0, _ROW + 4), (0.0, _ROW + bar_h)):
        cv2.putText(panel, f"{value:.1f}", (22, y), _FONT, _FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(panel, title[:10], (2, 11), _FONT, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    canvas = np.full((panel.shape[0], heat.shape[1] + panel.shape[1], 3), 255, dtype=np.uint8)
    canvas[:h, : heat.shape[1]] = heat
    canvas[:, heat.shape[1]:] = panel
    return canvas


def draw_instances(image: np.ndarray, instances, metadata=None, scale: float = 1.0) -> np.ndarray:
    """detectron2's ``draw_instance_predictions`` (masks, boxes, class names and scores) of
    ``instances`` (on CPU): coloured by class (``thing_colors``) when the metadata has colours."""
    metadata = _metadata(metadata)
    mode = ColorMode.SEGMENTATION if metadata.get("thing_colors", None) else ColorMode.IMAGE
    return Visualizer(to_uint8_rgb(image), metadata, scale=scale, instance_mode=mode).draw_instance_predictions(
        instances
    ).get_image()


def draw_panoptic(image: np.ndarray, panoptic_seg, segments_info: List[dict], metadata=None,
                  scale: float = 1.0) -> np.ndarray:
    """detectron2's ``draw_panoptic_seg``: each segment of ``panoptic_seg`` (H, W ids) in its class colour,
    named; ``segments_info`` with contiguous ``category_id`` and ``isthing`` (separated metadata: stuff
    ids index ``stuff_classes``)."""
    mode = ColorMode.SEGMENTATION if _metadata(metadata).get("thing_colors", None) else ColorMode.IMAGE
    return Visualizer(to_uint8_rgb(image), _metadata(metadata), scale=scale, instance_mode=mode).draw_panoptic_seg(
        torch.as_tensor(np.asarray(panoptic_seg)), segments_info
    ).get_image()


def draw_instance_annotations(
    image: np.ndarray,
    classes: Sequence[int],
    metadata=None,
    *,
    boxes=None,
    masks=None,
    is_crowd: Optional[Sequence[int]] = None,
    legend: bool = True,
    scale: float = 1.0,
) -> np.ndarray:
    """Ground-truth instances: boxes (XYXY, or XYWHA rotated), masks (polygons, RLE, bitmaps or
    detectron2 mask structures), each labelled with its class name and coloured by class.

    Class ids outside ``thing_classes`` are drawn magenta as "unknown id N".
    """
    metadata = _metadata(metadata)
    classes = [int(c) for c in classes]
    num = len(metadata.get("thing_classes", None) or []) or (max(classes, default=-1) + 1)
    names, colors = class_names(metadata, num, "thing_classes"), class_colors(metadata, num, "thing_colors")
    crowd = list(is_crowd) if is_crowd is not None else [0] * len(classes)

    def style(c):
        return (names[c], colors[c]) if 0 <= c < num else (f"unknown id {c}", UNKNOWN_COLOR)

    labels = [style(c)[0] + (" crowd" if k else "") for c, k in zip(classes, crowd)]
    vis = Visualizer(to_uint8_rgb(image), metadata, scale=scale)
    if classes:
        vis.overlay_instances(
            boxes=boxes, masks=masks, labels=labels, assigned_colors=[[x / 255 for x in style(c)[1]] for c in classes],
            alpha=0.5,
        )
    out = vis.get_output().get_image()
    if not legend:
        return out
    present = sorted(set(classes))
    return add_legend(out, [(f"{c} {style(c)[0]}" if 0 <= c < num else style(c)[0], style(c)[1]) for c in present])


def write_image(path: str, rgb: np.ndarray) -> str:
    """Write an RGB image (PNG, JPEG, ... by extension), creating its folder; raises if it cannot."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"Could not write image {path}")
    return path


def unique_name(stem: str, taken: set) -> str:
    """``stem``, or ``stem_1``, ``stem_2``, ... if taken; the name returned is added to ``taken``."""
    name, k = stem, 0
    while name in taken:
        k += 1
        name = f"{stem}_{k}"
    taken.add(name)
    return name
