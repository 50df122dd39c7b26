"""Sliding-window inference and test-time augmentation for semantic segmentation models.

``predict`` below is any function mapping a normalized image ``(C, h, w)`` to logits ``(K, h, w)``;
:func:`sliding_window_inference` with ``batch_size > 1`` instead calls it on a batch of windows
``(N, C, h, w)`` and expects ``(N, K, h, w)``.
A binary model's single foreground logit z (K = 1) stands for the two-class logits ``[0, z]``, which
seg_d2's heads already output in inference (:func:`~seg_d2.modeling.head_inputs.two_class_logits`).
"""
import math
from typing import Callable, List, Sequence, Tuple

import torch
from torch.nn import functional as F

from .head_inputs import two_class_logits

Predictor = Callable[[torch.Tensor], torch.Tensor]

__all__ = ["window_starts", "blending_weights", "sliding_window_inference", "tta_inference"]


def window_starts(size: int, window: int, overlap: float) -> List[int]:
    """Start offsets of windows of length ``window`` covering ``[0, size)``, spread evenly, with
    neighbours overlapping by at least ``overlap * window``. A single 0 when the window covers all."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"Sliding-window overlap must be in [0, 1), got {overlap}")
    if size <= window:
        return [0]
    step = max(1, int(window * (1.0 - overlap)))
    n = math.ceil((size - window) / step) + 1
    return [round(i * (size - window) / (n - 1)) for i in range(n)]


def blending_weights(height: int, width: int, mode: str, device=None) -> torch.Tensor:
    """(height, width) weights of one window: ``uniform`` ones, or a ``gaussian`` of sigma = 1/8 of
    the window centred on it (as nnU-Net), so that predictions near window borders, which see less
    context, count less. Never 0, so that every pixel is covered."""
    if mode == "uniform":
        return torch.ones(height, width, device=device)
    if mode != "gaussian":
        raise ValueError(f"Sliding-window blending must be 'gaussian' or 'uniform', got {mode!r}")

    def g(n):
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2
        return torch.exp(-0.5 * (x / max(n / 8.0, 1e-6)) ** 2)

    w = g(height)[:, None] * g(width)[None, :]
    w = w / w.max()
    return w.clamp(min=w[w > 0].min().item())


def sliding_window_inference(
    predict: Predictor,
    image: torch.Tensor,
    window: Tuple[int, int],
    overlap: float,
    blending: str,
    batch_size: int = 1,
) -> torch.Tensor:
    """Logits (K, H, W) of ``image`` (C, H, W) blended from overlapping windows.

    With ``batch_size`` 1 ``predict`` gets one window (C, h, w) at a time and returns (K, h, w), so
    any per-image predictor works; with ``batch_size`` N > 1 it gets up to N windows stacked,
    (n, C, h, w), and returns (n, K, h, w). All windows have the same size (edge windows are shifted
    inwards, never cut), so they stack; the result is the same for every ``batch_size``.

    When one window covers the image this is exactly ``predict(image)``. Blending is linear in the
    logits, so it commutes with :func:`two_class_logits`: the binary result is the same either way.
    """
    if batch_size < 1:
        raise ValueError(f"Sliding-window batch size must be >= 1, got {batch_size}")
    _, H, W = image.shape
    wh, ww = min(window[0], H), min(window[1], W)
    ys, xs = window_starts(H, wh, overlap), window_starts(W, ww, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return predict(image) if batch_size == 1 else predict(image[None])[0]
    starts = [(y, x) for y in ys for x in xs]
    weight = blending_weights(wh, ww, blending, device=image.device)
    acc, norm = None, torch.zeros(H, W, device=image.device)
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        if batch_size == 1:
            y, x = chunk[0]
            logits = predict(image[:, y : y + wh, x : x + ww])[None]
        else:
            logits = predict(torch.stack([image[:, y : y + wh, x : x + ww] for y, x in chunk]))
        logits = logits.float()
        if acc is None:
            acc = torch.zeros(logits.shape[1], H, W, device=image.device)
        for (y, x), win in zip(chunk, logits):
            acc[:, y : y + wh, x : x + ww] += win * weight
            norm[y : y + wh, x : x + ww] += weight
    return acc / norm


def tta_inference(predict: Predictor, image: torch.Tensor, scales: Sequence[float], flip: bool) -> torch.Tensor:
    """Logits (K, H, W): the log of the class probabilities averaged over every scale and, with
    ``flip``, over horizontal flips. Each scaled image is resized bilinearly, as is each prediction
    back to (H, W). A binary prediction (K = 1) is averaged as its two classes, so K = 2 then."""
    _, H, W = image.shape
    acc, count = None, 0  # log of the summed probabilities, accumulated stably in log space
    for s in scales or [1.0]:
        size = (max(1, round(H * s)), max(1, round(W * s)))
        scaled = image if size == (H, W) else F.interpolate(
            image[None], size=size, mode="bilinear", align_corners=False
        )[0]
        for flipped in ([False, True] if flip else [False]):
            logits = predict(scaled.flip(-1) if flipped else scaled).float()
            if flipped:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (H, W):
                logits = F.interpolate(logits[None], size=(H, W), mode="bilinear", align_corners=False)[0]
            lp = F.log_softmax(two_class_logits(logits), dim=0)
            acc = lp if acc is None else torch.logaddexp(acc, lp)
            count += 1
    return acc - math.log(count)
