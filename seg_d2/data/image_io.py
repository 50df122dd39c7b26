"""Reading the image files of every dataset (semantic and instance), with errors that name the file.

One reader for all of seg_d2's mappers: PNG, JPEG, TIFF, BMP, WebP (anything PIL or OpenCV decodes),
8- or 16-bit, grayscale, RGB, RGBA, palette or CMYK:

- 16-bit images become float32 scaled to [0, 255] (not saturated at 255, as PIL's ``convert`` would),
  so that ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` are in the same units for 8- and 16-bit images;
- grayscale is replicated to 3 channels for "BGR"/"RGB"; colour becomes gray for "L";
- alpha is dropped and palette images are expanded to their colours (as detectron2's ``read_image``);
- CMYK JPEGs are converted to RGB by PIL, as detectron2 does;
- EXIF orientation is applied with ``exif_transpose=True`` (detectron2's habit, used for instance
  datasets, whose annotations are drawn on the displayed image) and ignored otherwise (semantic
  datasets: the label map is aligned with the pixels as stored).

JPEGs are decoded by PIL, which refuses a truncated file (OpenCV returns it grey-filled, with only a
warning on stderr); other formats by OpenCV (16-bit colour PNGs keep their 16 bits), then PIL.

Errors: :class:`DataFileError` (a ``ValueError``) for every missing, unreadable or unsupported file,
its message naming the file. :class:`~seg_d2.data.sem_seg_io.SemSegDataError` (label maps) and
:class:`~seg_d2.data.datasets.coco_instances.COCOFormatError` (COCO jsons) are subclasses of it.
"""
import os
from typing import Optional, Tuple

import cv2
import numpy as np
from PIL import Image

from detectron2.utils.file_io import PathManager

__all__ = ["DataFileError", "read_image", "image_size", "IMAGE_EXTS", "FORMATS"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
FORMATS = ("BGR", "RGB", "L", "YUV-BT.601")
_EXIF_ORIENTATION = 0x0112
_M_RGB2YUV = np.array([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]])  # detectron2's


class DataFileError(ValueError):
    """A dataset file (image, label map, annotation json) that is missing, unreadable or invalid.
    The message names the file."""


def _local(path: str, what: str = "Image") -> str:
    local = PathManager.get_local_path(path)
    if not os.path.isfile(local):
        raise DataFileError(f"{what} file not found: {path}")
    return local


def _orient(img: np.ndarray, orientation: Optional[int]) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to (H, W[, C]) pixels, as PIL's ``ImageOps.exif_transpose``."""
    if orientation in (2, 4):
        img = img[:, ::-1] if orientation == 2 else img[::-1]
    elif orientation == 3:
        img = img[::-1, ::-1]
    elif orientation in (5, 6, 7, 8):
        img = img.swapaxes(0, 1)  # 5: transpose; the others compose it with a flip
        if orientation == 6:
            img = img[:, ::-1]  # 90 degrees clockwise
        elif orientation == 7:
            img = img[::-1, ::-1]
        elif orientation == 8:
            img = img[::-1]  # 90 degrees counter-clockwise
    return np.ascontiguousarray(img)


def _header(local: str, path: str):
    """(PIL format, mode, (width, height), EXIF orientation) from the file's header; Nones if PIL cannot
    open it (OpenCV may still decode it)."""
    try:
        with Image.open(local) as pil:
            try:
                orientation = pil.getexif().get(_EXIF_ORIENTATION)
            except Exception:  # a corrupt EXIF block: like PIL's exif_transpose, ignore it
                orientation = None
            return pil.format, pil.mode, pil.size, orientation
    except Image.DecompressionBombError as e:
        raise DataFileError(f"Image {path} is too large for PIL ({e})") from None
    except Exception:
        return None, None, None, None


def _decode(path: str, exif_transpose: bool = False) -> np.ndarray:
    """The image as stored: (H, W) or (H, W, C) in BGR(A) channel order, its own dtype."""
    local = _local(path)
    fmt, mode, _, orientation = _header(local, path)
    img = None
    try:
        if fmt == "JPEG" or mode == "CMYK":
            with Image.open(local) as pil:
                pil.load()  # raises on a truncated file
                img = np.array(pil.convert("RGB") if pil.mode not in ("L", "RGB") else pil)
            if img.ndim == 3:
                img = np.ascontiguousarray(img[..., ::-1])
        else:
            img = cv2.imread(local, cv2.IMREAD_UNCHANGED)
            if img is None:  # a truncated PNG, a TIFF flavour OpenCV does not read, ...: PIL says why
                with Image.open(local) as pil:
                    img = np.array(pil)
                if img.ndim == 3:
                    img = np.ascontiguousarray(img[..., ::-1])  # PIL is RGB(A): make it BGR(A) like OpenCV
    except Exception as e:
        raise DataFileError(f"Unreadable image {path}: neither OpenCV nor PIL can decode it ({e})") from None
    if img.ndim < 2 or img.size == 0:
        raise DataFileError(f"Unreadable image {path}: it decodes to an array of shape {img.shape}")
    return _orient(img, orientation) if exif_transpose else img


def read_image(path: str, format: str = "BGR", *, exif_transpose: bool = False) -> np.ndarray:
    """Read an image as (H, W, C) in detectron2's ``format``: "BGR"/"RGB"/"YUV-BT.601" (C=3) or "L" (C=1).

    8-bit images stay uint8 ("YUV-BT.601": float, as detectron2). 16-bit images become float32 scaled to
    [0, 255]. Float images are kept as is. See the module docstring for channels and EXIF.

    Raises:
        DataFileError: the file is missing, cannot be decoded, or has an unsupported pixel type or shape.
    """
    if format not in FORMATS:
        raise ValueError(f"Image format {format!r} is not supported: use one of {FORMATS}")
    img = _decode(path, exif_transpose)
    if img.dtype == np.uint16:
        img = img.astype(np.float32) * (255.0 / 65535.0)
    elif img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype not in (np.uint8, np.float32, np.float64):
        raise DataFileError(f"Image {path} has pixel type {img.dtype}: expected 8- or 16-bit (or float)")
    if img.dtype == np.float64:
        img = img.astype(np.float32)
    if img.dtype == np.float32 and not np.isfinite(img).all():
        raise DataFileError(f"Image {path} holds NaN or infinite pixel values")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] in (2, 4):  # gray + alpha, BGR + alpha: drop the alpha
        img = img[:, :, 0] if img.shape[2] == 2 else img[:, :, :3]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise DataFileError(f"Image {path} has shape {img.shape}: expected grayscale, RGB or RGBA")
    if format == "L":
        if img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        return img[:, :, None]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if format == "YUV-BT.601":
        return np.dot(img[:, :, ::-1] / 255.0, _M_RGB2YUV.T)
    return np.ascontiguousarray(img[:, :, ::-1]) if format == "RGB" else img


def image_size(path: str, *, exif_transpose: bool = False) -> Tuple[int, int]:
    """(height, width) of an image as :func:`read_image` returns it, from its header where PIL can read it,
    else by decoding it.

    Raises:
        DataFileError: the file is missing or unreadable.
    """
    local = _local(path)
    _, _, size, orientation = _header(local, path)
    if size is None:
        img = _decode(path)  # raises DataFileError when unreadable
        h, w = img.shape[:2]
    else:
        w, h = size
    if exif_transpose and orientation in (5, 6, 7, 8):
        h, w = w, h
    return h, w
