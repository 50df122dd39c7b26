"""The boundary band of a label map: one definition for seg_d2's losses, mask targets and metrics.

A valid pixel is on the band of width ``w`` when some valid pixel within Chebyshev distance ``w``
(a (2w+1) x (2w+1) square around it) has another label. Pixels labelled ``ignore_value`` are
"don't care": never on the band themselves and never a different label for their neighbours, so the
edge of an ignored region is no boundary. Outside the image is either "don't care"
(``border_is_boundary=False``: the semantic boundary loss, whose crops cut objects, and BMask R-CNN's
RoI boundary targets, whose RoI edge is not an object edge) or another label
(``border_is_boundary=True``: Boundary IoU, Cheng et al. 2021, where the image border is background).

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
    k = 2 * width + 1
    if x.device.type == "cpu":
        kernel = np.ones((k, k), np.uint8)
        out = [cv2.dilate(m[0].numpy(), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=pad_value) for m in x]
        return torch.from_numpy(np.stack(out)[:, None])
    x = F.pad(x, (width, width, width, width), value=pad_value)
    return F.max_pool2d(F.max_pool2d(x, (1, k), stride=1), (k, 1), stride=1)


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
    t = torch.from_numpy(np.ascontiguousarray(labels)) if as_numpy else labels
    shape = t.shape
    if t.numel() == 0:
        band = torch.zeros(shape, dtype=torch.bool, device=t.device)
        return band.numpy() if as_numpy else band
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
    bounding box grown by one pixel only (outside it the mask is 0, so the result is the same).
    """
    as_numpy = isinstance(mask, np.ndarray)
    m = torch.from_numpy(np.ascontiguousarray(mask)) if as_numpy else mask
    m = m > 0
    out = torch.zeros_like(m)
    ys, xs = torch.nonzero(m, as_tuple=True)
    if len(ys) > 0:
        h, w = m.shape
        y0, y1 = max(int(ys.min()) - 1, 0), min(int(ys.max()) + 2, h)
        x0, x1 = max(int(xs.min()) - 1, 0), min(int(xs.max()) + 2, w)
        crop = m[y0:y1, x0:x1]
        # Inside the image the crop is ringed by 0s, so a window crossing the crop's edge already
        # meets another label: treating outside the crop as the image border changes nothing there.
        out[y0:y1, x0:x1] = crop & boundary_band(crop, width, border_is_boundary=border_is_boundary)
    return out.numpy() if as_numpy else out
