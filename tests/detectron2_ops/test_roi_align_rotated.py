"""seg_d2_ops (detectron2._C) roi_align_rotated_forward / _backward."""

import pytest
import torch
from torchvision.ops import roi_align

import seg_d2_ops as ops

from .d2ops_reference import roi_align_rotated as reference_roi_align_rotated


class RoiAlignRotated(torch.autograd.Function):
    """The same wiring as detectron2.layers.roi_align_rotated._ROIAlignRotated."""

    @staticmethod
    def forward(ctx, feat, rois, output_size, spatial_scale, sampling_ratio):
        ctx.save_for_backward(rois)
        ctx.args = (output_size, spatial_scale, sampling_ratio, feat.shape)
        return ops.roi_align_rotated_forward(feat, rois, spatial_scale, output_size[0], output_size[1], sampling_ratio)

    @staticmethod
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        (ph, pw), spatial_scale, sampling_ratio, (n, c, h, w) = ctx.args
        grad_input = ops.roi_align_rotated_backward(grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio)
        return grad_input, None, None, None, None


def _random_rois(k, gen, height, width, max_size=12.0, angles=True):
    cxy = torch.rand(k, 2, generator=gen) * torch.tensor([width, height]) * 1.2 - 2  # some cross the border
    wh = torch.rand(k, 2, generator=gen) * max_size + 0.25
    batch = torch.randint(0, 2, (k, 1), generator=gen).float()
    ang = torch.rand(k, 1, generator=gen) * 360 - 180 if angles else torch.zeros(k, 1)
    rois = torch.cat([batch, cxy, wh, ang], 1).double()
    return (rois * 8).round() / 8  # exact in binary: no rounding differences between conventions


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25])
def test_zero_angle_equals_torchvision_aligned_roi_align(sampling_ratio, spatial_scale):
    gen = torch.Generator().manual_seed(sampling_ratio)
    feat = torch.randn(2, 3, 20, 24, generator=gen, dtype=torch.float64)
    rois = _random_rois(40, gen, 20 / spatial_scale, 24 / spatial_scale, max_size=12 / spatial_scale, angles=False)
    # (batch, cx, cy, w, h, 0) is torchvision's (batch, cx - w/2, cy - h/2, cx + w/2, cy + h/2)
    xyxy = torch.cat([rois[:, :1], rois[:, 1:3] - rois[:, 3:5] / 2, rois[:, 1:3] + rois[:, 3:5] / 2], 1)
    got = ops.roi_align_rotated_forward(feat, rois, spatial_scale, 5, 4, sampling_ratio)
    expected = roi_align(feat, xyxy, (5, 4), spatial_scale, sampling_ratio, aligned=True)
    assert got.shape == (40, 3, 5, 4)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    # float32 too
    got32 = ops.roi_align_rotated_forward(feat.float(), rois.float(), spatial_scale, 5, 4, sampling_ratio)
    assert got32.dtype == torch.float32
    assert torch.allclose(got32, expected.float(), atol=1e-4)


def test_right_angle_rotations():
    # 5x5 ramp image; a 2x2 box centred on pixel corner (2, 2) is pooled to 4x4. At 0 degrees,
    # bin (0, 0) samples (1.25, 1.25) in continuous coordinates, i.e. pixel (0.75, 0.75):
    # 0.25 * (0 * 0.25 + 1 * 0.75) + 0.75 * (5 * 0.25 + 6 * 0.75) = 4.5.
    img = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    expected = torch.tensor(
        [[4.5, 5.0, 5.5, 6.0], [7.0, 7.5, 8.0, 8.5], [9.5, 10.0, 10.5, 11.0], [12.0, 12.5, 13.0, 13.5]]
    )
    for quarter in range(4):
        rois = torch.tensor([[0, 2, 2, 2, 2, 90.0 * quarter]])
        got = ops.roi_align_rotated_forward(img, rois, 1.0, 4, 4, 0)[0, 0]
        # turning the box counter-clockwise turns its pooled view clockwise
        assert torch.allclose(got, torch.rot90(expected, -quarter), atol=1e-5), quarter


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_rotated_matches_scalar_reference(sampling_ratio):
    gen = torch.Generator().manual_seed(10 + sampling_ratio)
    feat = torch.randn(2, 3, 11, 13, generator=gen, dtype=torch.float64)
    rois = _random_rois(12, gen, 22, 26, max_size=16)
    rois[0, 3:5] = 0  # empty box: no samples (0) when adaptive, else all at its centre
    got = ops.roi_align_rotated_forward(feat, rois, 0.5, 3, 4, sampling_ratio)
    expected = reference_roi_align_rotated(feat, rois, 0.5, 3, 4, sampling_ratio)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)
    if sampling_ratio == 0:
        assert (got[0] == 0).all()
    else:
        assert (got[0] == got[0, :, :1, :1]).all()


def test_empty_rois():
    feat = torch.randn(1, 2, 5, 5)
    assert ops.roi_align_rotated_forward(feat, torch.zeros(0, 6), 1.0, 3, 3, 0).shape == (0, 2, 3, 3)
    grad = ops.roi_align_rotated_backward(torch.zeros(0, 2, 3, 3), torch.zeros(0, 6), 1.0, 3, 3, 1, 2, 5, 5, 0)
    assert torch.equal(grad, torch.zeros(1, 2, 5, 5))


@pytest.mark.parametrize("sampling_ratio", [0, 1, 2])
def test_gradcheck(sampling_ratio):
    gen = torch.Generator().manual_seed(20 + sampling_ratio)
    feat = torch.randn(2, 2, 9, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [
            [0, 4.3, 4.1, 5.2, 3.3, 30.0],
            [1, 2.0, 7.5, 8.1, 4.4, -115.0],
            [0, 8.9, 1.2, 6.0, 6.0, 90.0],
            [1, 5.0, 5.0, 1.5, 2.5, 10.0],
            [0, 4.5, 4.5, 9, 9, 0],
        ],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(lambda f: RoiAlignRotated.apply(f, rois, (3, 2), 0.9, sampling_ratio), (feat,))


def test_backward_is_the_transpose_of_forward():
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 4, 12, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(20, gen, 24, 22, max_size=20)
    out = ops.roi_align_rotated_forward(feat, rois, 0.5, 4, 3, 0)
    grad_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (autograd_grad,) = torch.autograd.grad(out, feat, grad_out)
    grad = ops.roi_align_rotated_backward(grad_out, rois, 0.5, 4, 3, 2, 4, 12, 11, 0)
    assert grad.shape == feat.shape
    assert torch.allclose(grad, autograd_grad, atol=1e-12)


def test_detectron2_layer_gradcheck():
    import detectron2.layers as layers
    op = layers.ROIAlignRotated(output_size=(5, 5), spatial_scale=0.5, sampling_ratio=1)
    x = torch.rand(1, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 4.5, 4.5, 9, 9, 0], [0, 2, 7, 4, 4, 0], [0, 7, 7, 4, 4, 60]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: op(t, rois), (x,))
