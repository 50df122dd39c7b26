"""Reading label maps of semantic segmentation datasets, with clear errors.

Images are read by :mod:`seg_d2.data.image_io` (re-exported here: ``read_image``, ``image_size``):
8- or 16-bit, grayscale, RGB or RGBA, with their pixels as stored (no EXIF rotation, so that they stay
aligned with their label maps).
Label maps: single-channel PNG/TIFF (8- or 16-bit, palette PNGs as indices) or ``.npy`` arrays.

Errors: :class:`SemSegDataError`, a :class:`~seg_d2.data.image_io.DataFileError` naming the file(s).
"""
import os

import numpy as np
from PIL import Image

from detectron2.utils.file_io import PathManager

from .image_io import IMAGE_EXTS, DataFileError, image_size, read_image

__all__ = ["SemSegDataError", "DataFileError", "read_image", "read_label_map", "image_size", "IMAGE_EXTS",
           "LABEL_EXTS"]

LABEL_EXTS = (".png", ".npy", ".tif", ".tiff")


class SemSegDataError(DataFileError):
    """A semantic segmentation dataset file that is missing, unreadable or inconsistent."""


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
