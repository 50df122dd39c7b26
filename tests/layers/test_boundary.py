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
