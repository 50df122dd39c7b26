"""The one boundary band (seg_d2.layers.boundary), against hand-computed bands and OpenCV's erosion."""
import cv2
import numpy as np
import pytest
import torch

from seg_d2.layers import boundary_band, mask_boundary


def test_hand_computed_band_of_two_regions():
    labels = np.zeros((5, 6), np.int64)
    labels[:, 3:] = 1
    band = boundary_band(labels, 1)
    expected = np.zeros((5, 6), bool)
    expected[:, 2:4] = True  # the columns on either side of the label change
    assert band.dtype == bool and (band == expected).all()
    # Width 2 reaches one more column on each side.
    expected[:, 1:5] = True
    assert (boundary_band(labels, 2) == expected).all()


def test_border_rule():
    mask = np.ones((4, 4), np.uint8)
    assert not boundary_band(mask, 1).any()  # one label, border neutral: no boundary
    band = boundary_band(mask, 1, border_is_boundary=True)
    expected = np.ones((4, 4), bool)
    expected[1:3, 1:3] = False  # the outer ring touches the border
    assert (band == expected).all()


def test_ignored_pixels_are_dont_care():
    labels = np.zeros((5, 5), np.int64)
    labels[:, 3:] = 255
    assert not boundary_band(labels, 1, ignore_value=255).any()  # the edge of an ignored region
    labels[0, 0] = 2
    band = boundary_band(labels, 1, ignore_value=255)
    assert band[0, 0] and band[1, 1] and not band[2, 2] and not band[:, 3:].any()


@pytest.mark.parametrize("width", [1, 2, 5])
def test_mask_band_equals_erosion_with_border_as_background(width):
    # Independent reference: mask - erode(mask) by a (2w+1) square, outside the image being 0
    # (Boundary IoU's definition, Cheng 2021; the official code erodes w times by a 3x3 square).
    rng = np.random.default_rng(width)
    for _ in range(20):
        h, w = rng.integers(8, 40, 2)
        mask = (rng.random((h, w)) < 0.6).astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=width)[1:-1, 1:-1]
        expected = (mask - eroded).astype(bool)
        assert (mask_boundary(mask, width) == expected).all()
        assert (boundary_band(mask, width, border_is_boundary=True) & (mask > 0) == expected).all()


def test_torch_in_torch_out_batched():
    labels = torch.zeros(2, 3, 4, 4, dtype=torch.long)
    labels[1, 2, :, 2:] = 7
    band = boundary_band(labels, 1)
    assert isinstance(band, torch.Tensor) and band.shape == labels.shape and band.dtype == torch.bool
    assert band[1, 2].sum() == 8 and not band[0].any()
    assert mask_boundary(torch.zeros(3, 3), 1).sum() == 0


def test_rejects_zero_width():
    with pytest.raises(ValueError, match="width"):
        boundary_band(np.zeros((3, 3)), 0)


def per_label_band(labels, width, ignore=None, border_is_boundary=False):
    """Independent reference: for each label c, its pixels whose (2w+1)-square erosion of
    "c or don't care" (outside the image: 0 when the border is a boundary, else 1) is 0."""
    labels = np.asarray(labels)
    valid = np.ones(labels.shape, bool) if ignore is None else labels != ignore
    band = np.zeros(labels.shape, bool)
    k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    for c in np.unique(labels[valid]):
        region = ((labels == c) | ~valid).astype(np.uint8)
        eroded = cv2.erode(region, k, borderType=cv2.BORDER_CONSTANT, borderValue=0 if border_is_boundary else 1)
        band |= (labels == c) & valid & (eroded == 0)
    return band


def random_labels(rng, values, shape=(23, 31)):
    labels = np.full(shape, values[0])
    for _ in range(6):
        y, x = rng.integers(-3, shape[0]), rng.integers(-3, shape[1])
        labels[max(y, 0):y + rng.integers(3, 12), max(x, 0):x + rng.integers(3, 12)] = rng.choice(values)
    return labels


# (dtype, label values, ignore value): bytes; 16 bits; negative labels; a span too wide for bytes
# (the float path); bool; float labels.
LABEL_CASES = [
    (np.uint8, [0, 1, 2, 7, 255], 255),
    (np.uint16, [3, 4, 9, 65535], 65535),
    (np.int64, [-5, -1, 0, 2], -1),
    (np.int32, [0, 1000, 70000, 5], None),
    (bool, [False, True], None),
    (np.float32, [0.0, 1.5, 2.0, 4.0], 4.0),
]


@pytest.mark.parametrize("dtype,values,ignore", LABEL_CASES)
@pytest.mark.parametrize("border", [False, True])
def test_band_of_any_label_type_equals_per_label_erosion(dtype, values, ignore, border):
    rng = np.random.default_rng(len(values) + 10 * border)
    for width in (1, 3):
        maps = np.stack([random_labels(rng, values) for _ in range(3)]).astype(dtype)
        expected = np.stack([per_label_band(m, width, ignore, border) for m in maps])
        band = boundary_band(maps, width, ignore_value=ignore, border_is_boundary=border)
        assert band.dtype == bool and (band == expected).all()
        t = boundary_band(torch.from_numpy(maps), width, ignore_value=ignore, border_is_boundary=border)
        assert isinstance(t, torch.Tensor) and (t.numpy() == expected).all()


def test_pooling_max_filter_off_the_cpu_equals_dilation():
    """The GPU path (two 1-D max pools), run on CPU tensors, against OpenCV's dilation."""
    from seg_d2.layers.boundary import _pool_max_filter

    rng = np.random.default_rng(0)
    x = rng.integers(0, 9, (2, 1, 17, 26)).astype(np.float32)
    for width, pad in [(1, -1.0), (4, 100.0)]:
        k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
        expected = np.stack([cv2.dilate(m[0], k, borderType=cv2.BORDER_CONSTANT, borderValue=pad) for m in x])
        assert np.array_equal(_pool_max_filter(torch.from_numpy(x), width, pad).numpy()[:, 0], expected)


@pytest.mark.parametrize("border", [False, True])
def test_mask_boundary_is_the_mask_part_of_the_band(border):
    rng = np.random.default_rng(3)
    for _ in range(10):
        mask = random_labels(rng, [0, 1], shape=tuple(rng.integers(5, 30, 2))).astype(np.uint8)
        expected = per_label_band(mask, 2, border_is_boundary=border) & (mask > 0)
        assert (mask_boundary(mask, 2, border_is_boundary=border) == expected).all()
        assert (mask_boundary(torch.from_numpy(mask), 2, border_is_boundary=border).numpy() == expected).all()
