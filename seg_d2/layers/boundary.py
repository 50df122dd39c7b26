"""The boundary band of a label map: one definition for seg_d2's losses, mask targets and metrics.

A valid pixel is on the band of width ``w`` when some valid pixel within Chebyshev distance ``w``
(a (2w+1) x (2w+1) square around it) has another label. Pixels labelled ``ignore_value`` are
"don't care": never on the band themselves and never a different label for their neighbours, so the
edge of an ignored region is no boundary. Outside the image is either "don't care"
(``border_is_boundary=False``: the semantic boundary loss, whose crops cut objects) or another label
(``border_is_boundary=True``: Boundary IoU, Cheng et al. 2021, where the image border is background, and
BMask R-CNN's RoI boundary targets, whose Laplacian is zero-padded).

For a binary mask, ``mask & band`` is the mask's inner contour band: with ``border_is_boundary`` and
``w = round(0.02 * diagonal)`` it is Boundary IoU's ``mask - erode(mask)`` (d erosions by a 3x3
square), and with ``w = 1`` it is BMask R-CNN's Laplacian boundary target (Cheng et al. 2020).
All classes of a label map come from one pass of a max and a min filter.
"""
from typing import Optional, Union

import cv2
import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["boundary_band", "mask_boundary"]

Array = Union[np.ndarray, torch.Tensor]
_BIG = float(2 ** 25)  # beyond any label (labels < 2^24 are exact in float32); finite for OpenCV


def _max_filter(x: torch.Tensor, width: int, pad_value: float) -> torch.Tensor:
    """Max over each (2w+1)-square of (N, 1, H, W) float ``x``, outside the image being ``pad_value``.

    On the CPU, OpenCV's dilation (about 40x faster than pooling at w = 46); elsewhere two 1-D max
    pools (the square's max is separable).
    """
    if x.device.type == "cpu":
        return torch.from_numpy(np.stack([_dilate(m[0].numpy(), width, pad_value) for m in x])[:, None])
    return _pool_max_filter(x, width, pad_value)


def _pool_max_filter(x: torch.Tensor, width: int, pad_value: float) -> torch.Tensor:
    k = 2 * width + 1
    x = F.pad(x, (width, width, width, width), value=pad_value)
    return F.max_pool2d(F.max_pool2d(x, (1, k), stride=1), (k, 1), stride=1)


def _dilate(x: np.ndarray, width: int, pad_value: float) -> np.ndarray:
    k = 2 * width + 1
    return cv2.dilate(x, np.ones((k, k), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=pad_value)


def _uint8_codes(x: np.ndarray, valid: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Valid integer labels as uint8 codes 1..254 in the same order, don't-care pixels as 0; None when
    the labels are not integers or the valid ones span more than 254 values."""
    if x.dtype == bool:
        x = x.view(np.uint8)
    if x.dtype.kind not in "iu":
        return None
    lo, hi = int(x.min()), int(x.max())
    if hi - lo > 253 and valid is not None:  # the don't-care value may lie far off: the valid labels only
        values = x[valid]
        if values.size == 0:
            return np.zeros(x.shape, np.uint8)
        lo, hi = int(values.min()), int(values.max())
    if hi - lo > 253:
        return None
    # x + 1 - lo in unsigned wrap-around arithmetic, then its low byte: only don't-care pixels can
    # leave 1..254, and they are zeroed.
    unsigned = x.view(np.dtype(f"u{x.itemsize}"))
    codes = unsigned + unsigned.dtype.type((1 - lo) % 2 ** (8 * x.itemsize))
    codes = codes if codes.dtype == np.uint8 else codes.astype(np.uint8)
    if valid is not None:
        np.multiply(codes, valid, out=codes)
    return codes


def _uint8_band(x: np.ndarray, width: int, ignore_value, border_is_boundary: bool) -> Optional[np.ndarray]:
    """boundary_band of (N, H, W) integer labels spanning at most 254 values, by dilating bytes (4x faster
    than float32); None for other labels."""
    valid = None if ignore_value is None else x != ignore_value
    codes = _uint8_codes(x, valid)
    if codes is None:
        return None
    band = np.empty(x.shape, bool)
    for i in range(len(x)):
        c = codes[i]
        # Largest valid code around each pixel (don't care: 0, neutral); outside the image 0, or 255
        # (another label) when the border is a boundary. Then the smallest, as the largest of 255 - code.
        band[i] = _dilate(c, width, 255 if border_is_boundary else 0) > c
        flipped = np.subtract(np.uint8(255), c)
        if valid is not None:
            np.multiply(flipped, valid[i], out=flipped)
        band[i] |= _dilate(flipped, width, 0) > flipped
    if valid is not None:
        band &= valid
    return band


def boundary_band(
    labels: Array, width: int, *, ignore_value: Optional[int] = None, border_is_boundary: bool = False
) -> Array:
    """Boolean band of ``width`` pixels around every label change of ``labels``.

    Args:
        labels: (..., H, W) integer, bool or float label map(s), as a numpy array or a torch tensor.
        width: band half-width w >= 1 in pixels.
        ignore_value: label of "don't care" pixels, or None.
        border_is_boundary: whether outside the image counts as another label.

    Returns:
        (..., H, W) bool, of the input's type (and device).
    """
    if width < 1:
        raise ValueError(f"Boundary band width must be >= 1 pixel, got {width}")
    as_numpy = isinstance(labels, np.ndarray)
    shape = labels.shape
    if (labels.size if as_numpy else labels.numel()) == 0:
        return np.zeros(shape, bool) if as_numpy else torch.zeros(shape, dtype=torch.bool, device=labels.device)
    if as_numpy or (labels.device.type == "cpu" and not labels.dtype.is_floating_point):
        x = labels if as_numpy else labels.detach().numpy()
        band = _uint8_band(np.ascontiguousarray(x).reshape(-1, shape[-2], shape[-1]), width, ignore_value,
                           border_is_boundary)
        if band is not None:
            band = band.reshape(shape)
            return band if as_numpy else torch.from_numpy(band)
    t = torch.from_numpy(np.ascontiguousarray(labels)) if as_numpy else labels
    x = t.reshape(-1, 1, shape[-2], shape[-1]).to(torch.float32)  # labels < 2^24 are exact in float32
    valid = torch.ones_like(x, dtype=torch.bool) if ignore_value is None else x != float(ignore_value)
    inf = _BIG
    # Largest and smallest valid label around each pixel (don't-care pixels are neutral: -inf / +inf);
    # outside the image is neutral, or +inf (another label) when the border is a boundary.
    hi = _max_filter(torch.where(valid, x, -inf), width, inf if border_is_boundary else -inf)
    lo = -_max_filter(torch.where(valid, -x, -inf), width, -inf)
    band = (valid & ((hi > x) | (lo < x))).reshape(shape)
    return band.numpy() if as_numpy else band


def mask_boundary(mask: Array, width: int, *, border_is_boundary: bool = True) -> Array:
    """Inner boundary band of one binary (H, W) mask: its pixels within ``width`` of a non-mask pixel.

    Same as ``mask & boundary_band(mask, width, border_is_boundary=...)``, computed on the mask's
    bounding box grown by one pixel only (outside it the mask is 0, so the result is the same), as
    the mask minus its erosion by the (2w+1)-square (one pass, where the band of a label map takes two).
    """
    as_numpy = isinstance(mask, np.ndarray)
    m = mask if as_numpy else mask.detach().cpu().numpy()
    m = (m > 0).view(np.uint8)
    out = np.zeros(m.shape, bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if len(rows) > 0:
        h, w = m.shape
        y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, h)
        x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, w)
        crop = m[y0:y1, x0:x1]
        # Inside the image the crop is ringed by 0s, so a window crossing the crop's edge already
        # meets another label: treating outside the crop as the image border changes nothing there.
        # Outside the image: 0 (a boundary), or 1 (neutral: the erosion keeps the pixel).
        k = 2 * width + 1
        eroded = cv2.erode(crop, np.ones((k, k), np.uint8), borderType=cv2.BORDER_CONSTANT,
                           borderValue=0 if border_is_boundary else 1)
        out[y0:y1, x0:x1] = crop > eroded
    return out if as_numpy else torch.from_numpy(out).to(mask.device)
