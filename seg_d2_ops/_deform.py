"""Deformable convolution for detectron2, computed by torchvision.ops.deform_conv2d.

``deform_conv`` and ``modulated_deform_conv`` are what the patched detectron2 layers
(``DeformConv``, ``ModulatedDeformConv``) call: torchvision's op with its own autograd, on any
device. The ``*_forward`` / ``*_backward*`` functions are the C++ extension's entry points,
kept for code that calls them directly.

torchvision's kernel has detectron2's semantics: offsets [N, 2 * dg * kh * kw, Ho, Wo] laid out
as (deformable group, kernel row, kernel column, (dy, dx)); masks [N, dg * kh * kw, Ho, Wo];
bilinear sampling that reads zeros outside the image; groups and deformable groups taken
from the tensor shapes. The functions keep the C++ signatures: they write into the output and
gradient tensors they are given (the ``columns`` / ``ones`` buffers and ``im2col_step`` are
the CUDA kernels' scratch space and batching, irrelevant here). Each backward entry point runs
torch.autograd through deform_conv2d (torchvision's own backward kernel) on its own.

Write semantics follow the CUDA code: the output and the offset / mask gradients are
overwritten, the input, weight and bias gradients are accumulated into.
"""

import torch
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = [
    "deform_conv",
    "modulated_deform_conv",
    "deform_conv_forward",
    "deform_conv_backward_input",
    "deform_conv_backward_filter",
    "modulated_deform_conv_forward",
    "modulated_deform_conv_backward",
]


def _check(input, weight, offset, kh, kw, group, deformable_group, mask=None):
    if weight.dim() != 4 or weight.shape[2] != kh or weight.shape[3] != kw:
        raise RuntimeError(f"weight {tuple(weight.shape)} does not match kernel size ({kh}, {kw})")
    if input.shape[1] != weight.shape[1] * group:
        raise RuntimeError(
            f"input has {input.shape[1]} channels; weight {tuple(weight.shape)} with group={group} "
            f"expects {weight.shape[1] * group}"
        )
    if offset.shape[1] != deformable_group * 2 * kh * kw:
        raise RuntimeError(
            f"offset has {offset.shape[1]} channels; deformable_group={deformable_group} with a "
            f"{kh}x{kw} kernel needs {deformable_group * 2 * kh * kw}"
        )
    if mask is not None and mask.shape[1] != deformable_group * kh * kw:
        raise RuntimeError(
            f"mask has {mask.shape[1]} channels; deformable_group={deformable_group} with a "
            f"{kh}x{kw} kernel needs {deformable_group * kh * kw}"
        )


def _batched(*tensors):
    """The C++ ops accept unbatched (3-D) input; deform_conv2d wants a batch dimension."""
    return [None if t is None else (t.unsqueeze(0) if t.dim() == 3 else t) for t in tensors]


def _write(dst, src, accumulate):
    src = src.reshape(dst.shape) if src.numel() == dst.numel() else src
    if dst.shape != src.shape:
        # The CUDA code views its outputs to the computed shape; a caller that passes an
        # empty placeholder gets it resized, anything else is an error.
        if dst.numel() != 0 or accumulate:
            raise RuntimeError(f"expected a tensor of shape {tuple(src.shape)}, got {tuple(dst.shape)}")
        dst.resize_(src.shape)
    if accumulate:
        dst.add_(src)
    else:
        dst.copy_(src)


def _deform_grads(input, offset, weight, grad_output, mask, bias, stride, padding, dilation):
    """Gradients of deform_conv2d w.r.t. (input, offset, weight, mask, bias) by autograd."""
    with torch.enable_grad():
        x = input.detach().requires_grad_(True)
        off = offset.detach().requires_grad_(True)
        w = weight.detach().requires_grad_(True)
        m = None if mask is None else mask.detach().requires_grad_(True)
        b = None if bias is None else bias.detach().requires_grad_(True)
        out = deform_conv2d(x, off, w, b, stride=stride, padding=padding, dilation=dilation, mask=m)
        leaves = [t for t in (x, off, w, m, b) if t is not None]
        grads = torch.autograd.grad(out, leaves, grad_output.reshape(out.shape).to(out.dtype))
    grads = list(grads)
    gi, go, gw = grads[:3]
    gm = grads[3] if mask is not None else None
    gb = grads[-1] if bias is not None else None
    return gi, go, gw, gm, gb


def deform_conv(input, offset, weight, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1, im2col_step=64):
    """detectron2's ``deform_conv`` (DCN v1; the arguments of ``_DeformConv.apply``) by
    torchvision's op and its autograd. ``im2col_step`` is the CUDA kernel's batching: unused."""
    if input is not None and input.dim() != 4:
        raise ValueError(f"Expected 4D tensor as input, got {input.dim()}D tensor instead.")
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    _check(input, weight, offset, weight.shape[2], weight.shape[3], groups, deformable_groups)
    return deform_conv2d(input, offset, weight, None, stride=stride, padding=padding, dilation=dilation)


def modulated_deform_conv(
    input, offset, mask, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, deformable_groups=1
):
    """detectron2's ``modulated_deform_conv`` (DCN v2; the arguments of
    ``_ModulatedDeformConv.apply``) by torchvision's op and its autograd."""
    _check(input, weight, offset, weight.shape[2], weight.shape[3], groups, deformable_groups, mask)
    return deform_conv2d(
        input, offset, weight, bias, stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation), mask=mask
    )


def deform_conv_forward(
    input,
    weight,
    offset,
    output,
    columns,
    ones,
    kW,
    kH,
    dW,
    dH,
    padW,
    padH,
    dilationW,
    dilationH,
    group,
    deformable_group,
    im2col_step,
):
    """Deformable convolution (v1) of ``input`` into ``output``; returns 1 like the C++ op."""
    x, off = _batched(input, offset)
    _check(x, weight, off, kH, kW, group, deformable_group)
    with torch.no_grad():
        out = deform_conv2d(
            x, off, weight, None, stride=(dH, dW), padding=(padH, padW), dilation=(dilationH, dilationW)
        )
    _write(output, out if input.dim() == 4 else out[0], accumulate=False)
    return 1


def deform_conv_backward_input(
    input,
    offset,
    gradOutput,
    gradInput,
    gradOffset,
    weight,
    columns,
    kW,
    kH,
    dW,
    dH,
    padW,
    padH,
    dilationW,
    dilationH,
    group,
    deformable_group,
    im2col_step,
):
    """Gradients of deformable convolution w.r.t. input (added to ``gradInput``) and offset
    (written to ``gradOffset``); returns 1."""
    x, off, g = _batched(input, offset, gradOutput)
    _check(x, weight, off, kH, kW, group, deformable_group)
    gi, go, _, _, _ = _deform_grads(x, off, weight, g, None, None, (dH, dW), (padH, padW), (dilationH, dilationW))
    _write(gradInput, gi if input.dim() == 4 else gi[0], accumulate=True)
    _write(gradOffset, go if offset.dim() == 4 else go[0], accumulate=False)
    return 1


def deform_conv_backward_filter(
    input,
    offset,
    gradOutput,
    gradWeight,
    columns,
    ones,
    kW,
    kH,
    dW,
    dH,
    padW,
    padH,
    dilationW,
    dilationH,
    group,
    deformable_group,
    scale,
    im2col_step,
):
    """Gradient of deformable convolution w.r.t. the weight, times ``scale``, added to
    ``gradWeight``; returns 1."""
    x, off, g = _batched(input, offset, gradOutput)
    _check(x, gradWeight, off, kH, kW, group, deformable_group)
    # The weight gradient does not depend on the weight's value (the op is linear in it), so any
    # tensor of its shape stands in for the weight this entry point is not given.
    gw = _deform_grads(
        x, off, torch.zeros_like(gradWeight), g, None, None, (dH, dW), (padH, padW), (dilationH, dilationW)
    )[2]
    gradWeight.add_(gw.to(gradWeight.dtype), alpha=scale)
    return 1


def modulated_deform_conv_forward(
    input,
    weight,
    bias,
    ones,
    offset,
    mask,
    output,
    columns,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dilation_h,
    dilation_w,
    group,
    deformable_group,
    with_bias,
):
    """Modulated deformable convolution (v2) of ``input`` into ``output``."""
    _check(input, weight, offset, kernel_h, kernel_w, group, deformable_group, mask)
    with torch.no_grad():
        out = deform_conv2d(
            input,
            offset,
            weight,
            bias if with_bias else None,
            stride=(stride_h, stride_w),
            padding=(pad_h, pad_w),
            dilation=(dilation_h, dilation_w),
            mask=mask,
        )
    _write(output, out, accumulate=False)


def modulated_deform_conv_backward(
    input,
    weight,
    bias,
    ones,
    offset,
    mask,
    columns,
    grad_input,
    grad_weight,
    grad_bias,
    grad_offset,
    grad_mask,
    grad_output,
    kernel_h,
    kernel_w,
    stride_h,
    stride_w,
    pad_h,
    pad_w,
    dilation_h,
    dilation_w,
    group,
    deformable_group,
    with_bias,
):
    """Gradients of modulated deformable convolution: added to ``grad_input``, ``grad_weight``
    and (if ``with_bias``) ``grad_bias``; written to ``grad_offset`` and ``grad_mask``."""
    _check(input, weight, offset, kernel_h, kernel_w, group, deformable_group, mask)
    gi, go, gw, gm, gb = _deform_grads(
        input,
        offset,
        weight,
        grad_output,
        mask,
        bias if with_bias else None,
        (stride_h, stride_w),
        (pad_h, pad_w),
        (dilation_h, dilation_w),
    )
    _write(grad_input, gi, accumulate=True)
    _write(grad_weight, gw, accumulate=True)
    if with_bias:
        _write(grad_bias, gb, accumulate=True)
    _write(grad_offset, go, accumulate=False)
    _write(grad_mask, gm, accumulate=False)
