"""seg_d2_ops.roi_align (detectron2's ROIAlign on CPU) against torchvision's roi_align kernel: the
same forward bit for bit (scripted and traced models run torchvision's op), the same gradient up
to rounding."""

import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

import seg_d2_ops as ops


def _boxes(k, gen, height, width, scale, max_size=14.0):
    """[K, 5] (batch, x1, y1, x2, y2) in image coordinates; some cross the border or lie outside."""
    size = torch.rand(k, 2, generator=gen) * max_size
    ctr = torch.rand(k, 2, generator=gen) * torch.tensor([width + 6.0, height + 6.0]) - 3
    batch = torch.randint(0, 2, (k, 1), generator=gen).float()
    boxes = torch.cat([batch, (ctr - size / 2) / scale, (ctr + size / 2) / scale], 1)
    boxes[0, 1:] = torch.tensor([4.0, 4.0, 4.0, 4.0]) / scale  # empty box
    boxes[1, 1:] = torch.tensor([-9.0, -9.0, -4.0, -5.0]) / scale  # entirely outside
    boxes[2, 1:] = torch.tensor([-2.0, 1.0, width + 2.0, height - 0.5]) / scale  # wider than the map
    return boxes.double()


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio,output_size,scale", [(0, (7, 7), 0.25), (2, (5, 3), 0.5), (-1, (4, 4), 1.0), (1, 2, 0.125)])
def test_equals_torchvision_forward_and_backward(aligned, sampling_ratio, output_size, scale):
    gen = torch.Generator().manual_seed(sampling_ratio + 7 * aligned)
    feat = torch.randn(2, 5, 13, 17, generator=gen, dtype=torch.float64)
    boxes = _boxes(60, gen, 13, 17, scale)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x_ref = feat.to(dtype).requires_grad_()
        x_ours = feat.to(dtype).requires_grad_()
        expected = tv_roi_align(x_ref, boxes.to(dtype), output_size, scale, sampling_ratio, aligned)
        got = ops.roi_align(x_ours, boxes.to(dtype), output_size, scale, sampling_ratio, aligned)
        assert got.dtype == dtype and got.shape == expected.shape
        assert torch.equal(got, expected)
        grad_out = torch.randn(expected.shape, generator=gen, dtype=torch.float64).to(dtype)
        (expected_grad,) = torch.autograd.grad(expected, x_ref, grad_out)
        (grad,) = torch.autograd.grad(got, x_ours, grad_out)
        torch.testing.assert_close(grad, expected_grad, atol=tol, rtol=0)


def test_gradcheck():
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 1, 7, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor([[0, 1.3, 0.6, 5.2, 6.1], [1, -1.0, 2.2, 4.4, 9.5], [1, 3.1, 3.3, 3.9, 4.6]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: ops.roi_align(f, boxes, (2, 2), 1.0, 0, True), (feat,))


def test_no_rois():
    feat = torch.randn(1, 3, 6, 6, requires_grad=True)
    out = ops.roi_align(feat, torch.zeros(0, 5), (2, 2), 1.0, 0, True)
    assert out.shape == (0, 3, 2, 2)
    (grad,) = torch.autograd.grad(out.sum(), feat, allow_unused=True, materialize_grads=True)
    assert torch.equal(grad, torch.zeros_like(feat))


def test_tracing_keeps_torchvision_op():
    # An exported graph needs torchvision's single op, not the CPU path's gathers and products.
    feat, boxes = torch.randn(1, 2, 8, 8), torch.tensor([[0, 1.0, 1.0, 6.0, 5.0]])
    traced = torch.jit.trace(lambda f, b: ops.roi_align(f, b, (2, 2), 1.0, 0, True), (feat, boxes))
    assert "torchvision::roi_align" in str(traced.graph)
    torch.testing.assert_close(traced(feat, boxes), tv_roi_align(feat, boxes, (2, 2), 1.0, 0, True))


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_forward_is_torchvisions_bit_for_bit(requires_grad, dtype):
    # Inference and training alike: a scripted model (torchvision's op) must reproduce the eager one.
    gen = torch.Generator().manual_seed(5)
    feat = torch.randn(2, 8, 25, 19, generator=gen).to(dtype).requires_grad_(requires_grad)
    boxes = _boxes(80, gen, 25, 19, 0.25, max_size=30.0).to(dtype)
    for sampling_ratio, aligned in ((0, True), (2, False)):
        expected = tv_roi_align(feat.detach(), boxes, (7, 7), 0.25, sampling_ratio, aligned)
        got = ops.roi_align(feat, boxes, (7, 7), 0.25, sampling_ratio, aligned)
        assert got.requires_grad == requires_grad
        assert torch.equal(got, expected)


def test_bfloat16_computes_in_float32():
    # torchvision's CPU kernel has no bfloat16: the forward runs it in float32.
    gen = torch.Generator().manual_seed(6)
    feat = torch.randn(1, 3, 9, 9, generator=gen).bfloat16().requires_grad_()
    boxes = torch.tensor([[0, 1.0, 1.5, 7.0, 6.0]])
    got = ops.roi_align(feat, boxes.bfloat16(), (3, 3), 1.0, 0, True)
    expected = tv_roi_align(feat.detach().float(), boxes.bfloat16().float(), (3, 3), 1.0, 0, True).bfloat16()
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)
    (grad,) = torch.autograd.grad(got.float().sum(), feat)
    assert grad.dtype == torch.bfloat16 and grad.shape == feat.shape
