"""Reading images and label maps of semantic segmentation datasets, with clear errors.

Images: PNG, JPEG, TIFF (or anything OpenCV reads), 8- or 16-bit, grayscale, RGB or RGBA, read with
their pixels as stored (no EXIF rotation, so that they stay aligned with their label maps).
Label maps: single-channel PNG/TIFF (8- or 16-bit, palette PNGs as indices) or ``.npy`` arrays.
"""
import os
from typing import Tuple

import cv2
import numpy as np
from PIL import Image

from detectron2.utils.file_io import PathManager

__all__ = ["SemSegDataError", "read_image", "read_label_map", "image_size", "IMAGE_EXTS", "LABEL_EXTS"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABEL_EXTS = (".png", ".npy", ".tif", ".tiff")
FORMATS = ("BGR", "RGB", "L")


class SemSegDataError(ValueError):
    """A semantic segmentation dataset file that is missing, unreadable or inconsistent."""


def _decode(path: str) -> np.ndarray:
    """The image as stored: (H, W) or (H, W, C) in BGR(A) channel order, its own dtype."""
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise SemSegDataError(f"Image file not found: {path}")
    img = cv2.imread(local, cv2.IMREAD_UNCHANGED)
    if img is None:  # e.g. a TIFF flavour OpenCV does not read: let PIL try
        try:
            with Image.open(local) as pil:
                img = np.array(pil)
        except Exception as e:
            raise SemSegDataError(f"Unreadable image {path}: neither OpenCV nor PIL can decode it ({e})") from None
        if img.ndim == 3:
            img = np.ascontiguousarray(img[..., ::-1])  # PIL is RGB(A): make it BGR(A) like OpenCV
    return img


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """Read an image as (H, W, C) in detectron2's ``format``: "BGR"/"RGB" (C=3) or "L" (C=1).

    8-bit images stay uint8. 16-bit images become float32 scaled to [0, 255], so that
    ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` are in the same units for both. Float images are kept as is.
    Grayscale images are replicated to 3 channels for "BGR"/"RGB"; colour images are converted to
    gray for "L"; an alpha channel is dropped.
    """
    if format not in FORMATS:
        raise ValueError(f"Image format {format!r} is not supported for semantic segmentation: use one of {FORMATS}")
    img = _decode(path)
    if img.dtype == np.uint16:
        img = img.astype(np.float32) * (255.0 / 65535.0)
    elif img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype not in (np.uint8, np.float32, np.float64):
        raise SemSegDataError(f"Image {path} has pixel type {img.dtype}: expected 8- or 16-bit (or float)")
    if img.dtype == np.float64:
        img = img.astype(np.float32)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise SemSegDataError(f"Image {path} has shape {img.shape}: expected grayscale, RGB or RGBA")
    if format == "L":
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return img[:, :, None]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, ::-1]) if format == "RGB" else img


def read_label_map(path: str) -> np.ndarray:
    """Read a label map of class indices: (H, W), integer dtype."""
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise SemSegDataError(f"Label map not found: {path}")
    if local.lower().endswith(".npy"):
        try:
            label = np.load(local, allow_pickle=False)
        except Exception as e:
            raise SemSegDataError(f"Unreadable label map {path}: {e}") from None
    else:
        try:
            with Image.open(local) as pil:
                if pil.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
                    raise SemSegDataError(
                        f"Label map {path} has PIL mode {pil.mode!r}: a label map must be a single "
                        f"channel of class indices (8/16-bit grayscale or palette PNG, or .npy)"
                    )
                label = np.array(pil)
        except SemSegDataError:
            raise
        except Exception as e:
            raise SemSegDataError(f"Unreadable label map {path}: {e}") from None
    if label.ndim == 3 and label.shape[2] == 1:
        label = label[:, :, 0]
    if label.ndim != 2:
        raise SemSegDataError(f"Label map {path} has shape {label.shape}: expected (H, W) class indices")
    if label.dtype.kind == "f":
        if not np.all(np.isfinite(label)) or not np.all(label == np.round(label)):
            raise SemSegDataError(f"Label map {path} holds non-integer values: expected class indices")
        label = label.astype(np.int64)
    elif label.dtype == bool:
        label = label.astype(np.uint8)
    elif label.dtype.kind not in "ui":
        raise SemSegDataError(f"Label map {path} has dtype {label.dtype}: expected integer class indices")
    return label


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image, from its header where PIL can read it, else by decoding it."""
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise SemSegDataError(f"Image file not found: {path}")
    try:
        with Image.open(local) as pil:
            w, h = pil.size
            return h, w
    except Exception:
        img = _decode(path)  # raises SemSegDataError when unreadable
        return img.shape[0], img.shape[1]
