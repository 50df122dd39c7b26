"""Axis-aligned ROIAlign for CPU tensors: torchvision's forward, a fast backward.

torchvision's CPU ``roi_align`` kernel is scalar and single-threaded, its backward most of all
(scatter-adds tap by tap): it was about 40 % of a CPU Mask R-CNN training step. Axis-aligned
ROIAlign is separable: every bilinear tap weight is (row weight) x (column weight), and the
inside-the-map test is (row inside) and (column inside). So, with the feature-map crop under an ROI,

    out[k, :, ph, pw] = sum_{y, x} Ay[k, ph, y] * Ax[k, pw, x] * crop[k, y, x, :]

where ``Ay[k, ph, y]`` sums the row weights of bin row ``ph``'s samples (divided by their number)
and ``Ax`` likewise for columns. The backward is the transpose: two batched matrix products per
chunk of ROIs and one ``index_add_`` into the map. The sample points, clamping and sampling-ratio
rules are torchvision's ``roi_align_kernel.cpp`` (``aligned`` shifts by -0.5 pixel;
``aligned=False`` makes ROIs at least 1 pixel in size; ``sampling_ratio <= 0`` takes
ceil(roi size / pooled size) samples per bin, per ROI).

The forward is torchvision's op itself, not these products (which sum in another order, so differ
in the last bits): a scripted, traced or exported model can only run torchvision's op, and must
give exactly what the eager model gives (detectron2 v0.6's test_roi_pooler.py::test_scriptability
asserts torch.equal). The backward's gradient is the same linear map's transpose, equal to
torchvision's up to float rounding.
"""

from typing import Tuple

import torch
from torch.autograd.function import once_differentiable
from torchvision.ops import roi_align as _tv_roi_align

__all__ = ["roi_align"]

# Crop elements (pixels x channels) gathered per chunk of ROIs (32 MB in float32): fewer, larger
# products measured faster than cache-sized chunks on a busy 2-core machine.
_CROP_CHUNK = 1 << 23


def _axis_weights(start, size, pooled: int, grid, extent: int, cdt):
    """Bilinear weights of the samples along one axis, summed per bin.

    Returns ``(first, span, A)``: ``first`` [K] the first pixel any sample of ROI k touches,
    ``span`` [K] how many pixels from there they touch, ``A`` [K, pooled, L] the weight of pixel
    ``first[k] + l`` in bin ``p`` (zero beyond the ROI's own span), with L the longest span.
    """
    k = start.shape[0]
    gmax = max(int(grid.max()), 1)
    p = torch.arange(pooled, dtype=cdt).view(1, pooled, 1)
    i = torch.arange(gmax, dtype=cdt).view(1, 1, gmax)
    g = grid.clamp_min(1).to(cdt).view(k, 1, 1)
    bin_size = (size / pooled).view(k, 1, 1)
    pos = start.view(k, 1, 1) + p * bin_size + (i + 0.5) * bin_size / g  # [K, pooled, gmax]
    valid = (i < grid.view(k, 1, 1)) & (pos >= -1.0) & (pos <= extent)
    pos = pos.clamp_min(0)
    low = pos.floor()
    top = low >= extent - 1
    low = torch.where(top, torch.full_like(low, extent - 1), low)
    pos = torch.where(top, low, pos)  # at the last pixel: its value, no interpolation
    frac = pos - low
    w_low = torch.where(valid, (1 - frac) / g, 0)
    w_high = torch.where(valid, frac / g, 0)  # 0 at the last pixel, whose "high" neighbour is itself
    low_i = low.long()
    first = torch.where(valid, low_i, extent - 1).amin(dim=(1, 2))
    last = torch.where(valid, low_i + (~top).long(), 0).amax(dim=(1, 2))
    span = (last - first).clamp_min(0) + 1
    length = int(span.max())
    rel = (low_i - first.view(k, 1, 1)).clamp(0, length - 1)
    a = torch.zeros(k, pooled, length + 1, dtype=cdt)
    a.scatter_add_(2, rel, w_low)
    a.scatter_add_(2, rel + 1, w_high)
    return first, span, a[:, :, :length]


def _plan(rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned, h, w, c, cdt):
    """The ROIs sorted by crop size (``order``), in chunks: [(slice of ``order``, flat crop pixel
    indices, Ay, Ax)]."""
    r = rois.detach().to(cdt)
    k = r.shape[0]
    offset = 0.5 if aligned else 0.0
    x0 = r[:, 1] * spatial_scale - offset
    y0 = r[:, 2] * spatial_scale - offset
    rw = r[:, 3] * spatial_scale - offset - x0
    rh = r[:, 4] * spatial_scale - offset - y0
    if not aligned:  # legacy ROIAlign: force malformed ROIs to be 1x1
        rw, rh = rw.clamp_min(1.0), rh.clamp_min(1.0)
    if sampling_ratio > 0:
        gh = gw = torch.full((k,), int(sampling_ratio), dtype=torch.long)
    else:
        gh, gw = torch.ceil(rh / pooled_h).long(), torch.ceil(rw / pooled_w).long()
    y_first, y_span, ay = _axis_weights(y0, rh, pooled_h, gh, h, cdt)
    x_first, x_span, ax = _axis_weights(x0, rw, pooled_w, gw, w, cdt)
    # Sorted by crop size, so that padding each chunk's crops to its largest one wastes little;
    # chunks are then slices of the sorted tensors.
    order = torch.argsort(y_span * (w + 1) + x_span)
    batch, y_first, x_first, ay, ax = r[order, 0].long(), y_first[order], x_first[order], ay[order], ax[order]
    ys, xs = y_span[order].tolist(), x_span[order].tolist()
    chunks, s = [], 0
    while s < k:
        e, lh, lw = s + 1, ys[s], xs[s]
        while e < k and (e + 1 - s) * max(lh, ys[e]) * max(lw, xs[e]) * c <= _CROP_CHUNK:
            lh, lw, e = max(lh, ys[e]), max(lw, xs[e]), e + 1
        rows = (y_first[s:e, None] + torch.arange(lh)).clamp_max(h - 1)
        cols = (x_first[s:e, None] + torch.arange(lw)).clamp_max(w - 1)
        pix = (batch[s:e, None, None] * h + rows[:, :, None]) * w + cols[:, None, :]
        chunks.append((slice(s, e), pix.reshape(-1), ay[s:e, :, :lh], ax[s:e, :, :lw]))
        s = e
    return order, chunks


class _ROIAlignCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.input_shape = input.shape
        ctx.args = (rois.detach(), output_size, spatial_scale, sampling_ratio, aligned)
        return _tv_forward(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        n, c, h, w = ctx.input_shape
        rois, (ph, pw), spatial_scale, sampling_ratio, aligned = ctx.args
        cdt = torch.promote_types(grad_output.dtype, torch.float32)
        grad_table = grad_output.new_zeros(n * h * w, c, dtype=cdt)
        if rois.shape[0] and c and h and w:
            order, chunks = _plan(rois, spatial_scale, ph, pw, sampling_ratio, aligned, h, w, c, cdt)
            g = grad_output.to(cdt).permute(0, 2, 3, 1)[order]  # [K, PH, PW, C] in crop-size order
            for sl, pix, ay, ax in chunks:
                cols = torch.matmul(ax.transpose(1, 2).unsqueeze(1), g[sl])  # [k, PH, Lw, C]
                crop = torch.bmm(ay.transpose(1, 2), cols.reshape(ay.shape[0], ph, -1))  # [k, Lh, Lw * C]
                grad_table.index_add_(0, pix, crop.view(-1, c))
        grad = grad_table.view(n, h, w, c).permute(0, 3, 1, 2).to(grad_output.dtype)
        return grad, None, None, None, None, None


def _tv_forward(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """torchvision's forward; bfloat16, which its CPU kernel lacks, computed in float32."""
    if input.dtype == torch.bfloat16:
        out = _tv_roi_align(input.float(), rois.float(), output_size, spatial_scale, sampling_ratio, aligned)
        return out.to(input.dtype)
    return _tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)


def roi_align(
    input: torch.Tensor,
    rois: torch.Tensor,
    output_size: Tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """``torchvision.ops.roi_align`` (ROIs as a [K, 5] tensor), with a faster CPU backward.

    The output is always torchvision's op's, bit for bit, so eager, scripted and traced models
    agree. CPU tensors that need a gradient (outside tracing and scripting) get the separable
    backward above; anything else (CUDA tensors, inference, TorchScript, tracing and ONNX export,
    which need torchvision's single op in the graph) is torchvision's op alone.
    """
    if (
        input.device.type != "cpu"
        or not isinstance(rois, torch.Tensor)
        or torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or not input.is_floating_point()
    ):
        return _tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    if input.dim() != 4 or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"expected input [N, C, H, W] and rois [K, 5], got {tuple(input.shape)} and {tuple(rois.shape)}")
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    output_size = tuple(int(s) for s in output_size)
    if not (torch.is_grad_enabled() and input.requires_grad):
        return _tv_forward(input, rois, output_size, float(spatial_scale), int(sampling_ratio), bool(aligned))
    return _ROIAlignCPU.apply(input, rois, output_size, float(spatial_scale), int(sampling_ratio), bool(aligned))
