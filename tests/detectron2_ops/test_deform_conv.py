"""seg_d2_ops (detectron2._C) deformable convolution: forward, the in-place backward ops, detectron2 layers."""

import pytest
import torch
import torch.nn.functional as F

import seg_d2_ops as ops

from . import d2ops_reference as ref

# (in, out, groups, deformable groups, kernel, stride, padding, dilation)
CONFIGS = [
    (4, 6, 1, 1, (3, 3), (1, 1), (1, 1), (1, 1)),
    (4, 6, 2, 2, (3, 3), (2, 2), (1, 1), (1, 1)),
    (6, 4, 2, 3, (3, 1), (1, 2), (1, 0), (2, 1)),
    (3, 2, 1, 3, (1, 1), (1, 1), (0, 0), (1, 1)),
]


def _empty(t):
    return t.new_empty(0)


def v1_forward(x, offset, weight, stride, padding, dilation, groups, dg):
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    kh, kw = weight.shape[2:]
    ho = (x.shape[2] + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (x.shape[3] + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = x.new_empty(x.shape[0], weight.shape[0], ho, wo)
    ret = ops.deform_conv_forward(
        x, weight, offset, out, _empty(x), _empty(x), kw, kh, sw, sh, pw, ph, dw, dh, groups, dg, 64
    )
    assert ret == 1
    return out


def v2_forward(x, offset, mask, weight, bias, stride, padding, dilation, groups, dg):
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    kh, kw = weight.shape[2:]
    ho = (x.shape[2] + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    wo = (x.shape[3] + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = x.new_empty(x.shape[0], weight.shape[0], ho, wo)
    with_bias = bias is not None
    b = bias if with_bias else x.new_empty(1)
    ops.modulated_deform_conv_forward(
        x, weight, b, _empty(x), offset, mask, out, _empty(x), kh, kw, sh, sw, ph, pw, dh, dw, groups, dg, with_bias
    )
    return out


def _inputs(cfg, gen, dtype=torch.float64, zero_offsets=False):
    cin, cout, groups, dg, (kh, kw), stride, padding, dilation = cfg
    x = torch.randn(2, cin, 9, 8, generator=gen, dtype=dtype)
    w = torch.randn(cout, cin // groups, kh, kw, generator=gen, dtype=dtype)
    b = torch.randn(cout, generator=gen, dtype=dtype)
    ho = (9 + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    wo = (8 + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    if zero_offsets:
        off = torch.zeros(2, 2 * dg * kh * kw, ho, wo, dtype=dtype)
        mask = torch.ones(2, dg * kh * kw, ho, wo, dtype=dtype)
    else:
        off = torch.randn(2, 2 * dg * kh * kw, ho, wo, generator=gen, dtype=dtype) * 2
        mask = torch.rand(2, dg * kh * kw, ho, wo, generator=gen, dtype=dtype)
    return x, off, mask, w, b


@pytest.mark.parametrize("cfg", CONFIGS)
def test_zero_offsets_equal_conv2d(cfg):
    _, _, groups, dg, _, stride, padding, dilation = cfg
    x, off, mask, w, b = _inputs(cfg, torch.Generator().manual_seed(0), zero_offsets=True)
    expected = F.conv2d(x, w, b, stride, padding, dilation, groups)
    v1 = v1_forward(x, off, w, stride, padding, dilation, groups, dg)
    assert torch.allclose(v1, expected - b[None, :, None, None], atol=1e-12)
    assert torch.allclose(v2_forward(x, off, mask, w, b, stride, padding, dilation, groups, dg), expected, atol=1e-12)
    expected_nobias = F.conv2d(x, w, None, stride, padding, dilation, groups)
    assert torch.allclose(
        v2_forward(x, off, mask, w, None, stride, padding, dilation, groups, dg), expected_nobias, atol=1e-12
    )


def test_known_output_half_pixel_offsets():
    # 5x5 ramp, all-ones 3x3 kernel, every offset 0.5: values worked out by hand (each tap is the
    # mean of a 2x2 pixel block, zeros beyond the border); DCN v2 with mask 0.5 halves them.
    x = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    off = torch.full((1, 18, 5, 5), 0.5)
    w = torch.ones(1, 1, 3, 3)
    expected = torch.tensor(
        [
            [30, 41.25, 48.75, 45, 28.75],
            [62.25, 81, 90, 80.25, 50.25],
            [99.75, 126, 135, 117.75, 72.75],
            [105, 131.25, 138.75, 120, 73.75],
            [71.75, 89.25, 93.75, 80.75, 49.5],
        ]
    )
    assert torch.allclose(v1_forward(x, off, w, (1, 1), (1, 1), (1, 1), 1, 1)[0, 0], expected)
    mask = torch.full((1, 9, 5, 5), 0.5)
    assert torch.allclose(v2_forward(x, off, mask, w, None, (1, 1), (1, 1), (1, 1), 1, 1)[0, 0], expected * 0.5)


def test_integer_offsets_shift_the_input():
    # Every tap moved by (dy, dx) = (+1, -2) pixels: output (y, x) reads input rows y - 1 + i + 1
    # and columns x - 1 + j - 2 (zero outside), a plain valid convolution of the input padded
    # by 0 rows on top, 2 below, 3 columns left and 3 right (cropped to 10 x 10).
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 10, 10, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    off = torch.zeros(1, 18, 10, 10, dtype=torch.float64)
    off[:, 0::2] = 1.0  # dy
    off[:, 1::2] = -2.0  # dx
    expected = F.conv2d(F.pad(x, (3, 3, 0, 2)), w)[:, :, :10, :10]
    assert torch.allclose(v1_forward(x, off, w, (1, 1), (1, 1), (1, 1), 1, 1), expected, atol=1e-12)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_random_offsets_match_reference(cfg):
    _, _, groups, dg, _, stride, padding, dilation = cfg
    x, off, mask, w, b = _inputs(cfg, torch.Generator().manual_seed(2))
    expected = ref.deform_conv2d(x, off, w, b, stride, padding, dilation, mask=mask)
    assert torch.allclose(v2_forward(x, off, mask, w, b, stride, padding, dilation, groups, dg), expected, atol=1e-10)
    expected_v1 = ref.deform_conv2d(x, off, w, None, stride, padding, dilation)
    assert torch.allclose(v1_forward(x, off, w, stride, padding, dilation, groups, dg), expected_v1, atol=1e-10)


@pytest.mark.parametrize("cfg", CONFIGS[:3])
def test_backward_ops_match_autograd_of_reference(cfg):
    cin, cout, groups, dg, (kh, kw), (sh, sw), (ph, pw), (dh, dw) = cfg
    x, off, mask, w, b = _inputs(cfg, torch.Generator().manual_seed(3))
    leaves = [t.clone().requires_grad_() for t in (x, off, mask, w, b)]
    out = ref.deform_conv2d(*leaves[:2], leaves[3], leaves[4], (sh, sw), (ph, pw), (dh, dw), mask=leaves[2])
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(4), dtype=out.dtype)
    gx, goff, gmask, gw, gb = torch.autograd.grad(out, leaves, grad_out)

    # DCN v2: input / weight / bias gradients are accumulated into, offset / mask overwritten
    bufs = [torch.full_like(t, 7.0) for t in (x, w, b, off, mask)]
    ops.modulated_deform_conv_backward(
        x, w, b, _empty(x), off, mask, _empty(x), *bufs, grad_out, kh, kw, sh, sw, ph, pw, dh, dw, groups, dg, True
    )
    for got, exp, acc in zip(bufs, (gx, gw, gb, goff, gmask), (True, True, True, False, False)):
        assert torch.allclose(got - 7.0 if acc else got, exp, atol=1e-9)

    # DCN v1: the same without mask and bias
    out = ref.deform_conv2d(leaves[0], leaves[1], leaves[3], None, (sh, sw), (ph, pw), (dh, dw))
    gx, goff, gw = torch.autograd.grad(out, [leaves[0], leaves[1], leaves[3]], grad_out)
    grad_input, grad_offset, grad_weight = torch.zeros_like(x), torch.zeros_like(off), torch.zeros_like(w)
    ops.deform_conv_backward_input(
        x, off, grad_out, grad_input, grad_offset, w, _empty(x), kw, kh, sw, sh, pw, ph, dw, dh, groups, dg, 64
    )
    ops.deform_conv_backward_filter(
        x, off, grad_out, grad_weight, _empty(x), _empty(x), kw, kh, sw, sh, pw, ph, dw, dh, groups, dg, 1.0, 64
    )
    assert torch.allclose(grad_input, gx, atol=1e-9)
    assert torch.allclose(grad_offset, goff, atol=1e-9)
    assert torch.allclose(grad_weight, gw, atol=1e-9)
    # the filter gradient on its own (no backward_input just before it), scaled
    grad_weight = torch.ones_like(w)
    ops.deform_conv_backward_filter(
        x, off, grad_out, grad_weight, _empty(x), _empty(x), kw, kh, sw, sh, pw, ph, dw, dh, groups, dg, 0.5, 64
    )
    assert torch.allclose(grad_weight, 1 + 0.5 * gw, atol=1e-9)


class DeformConvV1(torch.autograd.Function):
    """detectron2's _DeformConv wiring around the _C ops (stride 1, padding 1, groups 2)."""

    @staticmethod
    def forward(ctx, x, off, w):
        ctx.save_for_backward(x, off, w)
        return v1_forward(x, off, w, (1, 1), (1, 1), (1, 1), 2, 2)

    @staticmethod
    def backward(ctx, grad):
        x, off, w = ctx.saved_tensors
        gx, goff, gw = torch.zeros_like(x), torch.zeros_like(off), torch.zeros_like(w)
        ops.deform_conv_backward_input(x, off, grad, gx, goff, w, _empty(x), 3, 3, 1, 1, 1, 1, 1, 1, 2, 2, 1)
        ops.deform_conv_backward_filter(x, off, grad, gw, _empty(x), _empty(x), 3, 3, 1, 1, 1, 1, 1, 1, 2, 2, 1.0, 1)
        return gx, goff, gw


class DeformConvV2(torch.autograd.Function):
    """detectron2's _ModulatedDeformConv wiring (stride 2, padding 1, deformable groups 2)."""

    @staticmethod
    def forward(ctx, x, off, mask, w, b):
        ctx.save_for_backward(x, off, mask, w, b)
        return v2_forward(x, off, mask, w, b, (2, 2), (1, 1), (1, 1), 1, 2)

    @staticmethod
    def backward(ctx, grad):
        x, off, mask, w, b = ctx.saved_tensors
        grads = [torch.zeros_like(t) for t in (x, w, b, off, mask)]
        ops.modulated_deform_conv_backward(
            x, w, b, _empty(x), off, mask, _empty(x), *grads, grad.contiguous(), 3, 3, 2, 2, 1, 1, 1, 1, 1, 2, True
        )
        gx, gw, gb, goff, gmask = grads
        return gx, goff, gmask, gw, gb


def test_gradcheck_v1_and_v2():
    gen = torch.Generator().manual_seed(5)
    # offsets kept away from integers: bilinear sampling has kinks there
    x = torch.randn(1, 4, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    off = (torch.rand(1, 36, 5, 5, generator=gen, dtype=torch.float64) * 0.6 + 0.2).requires_grad_()
    w = torch.randn(2, 2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(DeformConvV1.apply, (x, off, w))
    off2 = (torch.rand(1, 36, 3, 3, generator=gen, dtype=torch.float64) * 0.6 - 0.8).requires_grad_()
    mask = torch.rand(1, 18, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(3, 4, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b2 = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(DeformConvV2.apply, (x, off2, mask, w2, b2))


def test_bad_shapes_raise():
    x = torch.randn(1, 4, 6, 6)
    w = torch.randn(2, 4, 3, 3)
    out = torch.empty(1, 2, 6, 6)
    with pytest.raises(RuntimeError):  # offset with 9 instead of 18 channels
        ops.deform_conv_forward(
            x, w, torch.zeros(1, 9, 6, 6), out, _empty(x), _empty(x), 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 64
        )
    with pytest.raises(RuntimeError):  # mask with 18 instead of 9 channels
        ops.modulated_deform_conv_forward(
            x,
            w,
            x.new_empty(1),
            _empty(x),
            torch.zeros(1, 18, 6, 6),
            torch.ones(1, 18, 6, 6),
            out,
            _empty(x),
            3,
            3,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            1,
            False,
        )


def _detectron2_layers():
    # Fails without the provisioning fix `deform_conv_on_cpu` (v0.6's layers/deform_conv.py refused CPU) and, on a
    # compiled detectron2 main (no CPU groups, no CPU backward), without seg_d2.compat.route_cpu_deform_conv.
    import detectron2.layers as layers

    return layers


def test_detectron2_layers_train_on_cpu():
    layers = _detectron2_layers()
    gen = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    x = torch.randn(2, 4, 8, 8, generator=gen, requires_grad=True)
    dcn = layers.DeformConv(4, 6, 3, padding=1, groups=2, deformable_groups=2)
    off = (torch.randn(2, 36, 8, 8, generator=gen) * 0.7).requires_grad_()
    y = dcn(x, off)
    expected = ref.deform_conv2d(x, off, dcn.weight, None, 1, 1, 1)
    assert torch.allclose(y, expected, atol=1e-4)
    y.square().sum().backward()
    grads = torch.autograd.grad(expected.square().sum(), (x, off, dcn.weight))
    for got, exp in zip((x.grad, off.grad, dcn.weight.grad), grads):
        assert torch.allclose(got, exp, atol=1e-3, rtol=1e-4)

    mdcn = layers.ModulatedDeformConv(4, 6, 3, stride=2, padding=1, deformable_groups=2)
    torch.nn.init.normal_(mdcn.bias)
    off = torch.randn(2, 36, 4, 4, generator=gen, requires_grad=True)
    mask = torch.rand(2, 18, 4, 4, generator=gen, requires_grad=True)
    y = mdcn(x, off, mask)
    expected = ref.deform_conv2d(x, off, mdcn.weight, mdcn.bias, 2, 1, 1, mask=mask)
    assert torch.allclose(y, expected, atol=1e-4)
    y.square().sum().backward()
    grads = torch.autograd.grad(expected.square().sum(), (off, mask, mdcn.weight, mdcn.bias))
    for got, exp in zip((off.grad, mask.grad, mdcn.weight.grad, mdcn.bias.grad), grads):
        assert torch.allclose(got, exp, atol=1e-3, rtol=1e-4)
