"""Semantic segmentation losses against small hand-computed cases."""
import math

import pytest
import torch
from torch.nn import functional as F

from seg_d2.layers import boundary_band
from seg_d2.modeling import sem_seg_losses
from seg_d2.modeling.sem_seg_losses import (
    SemSegLoss, boundary_loss, cross_entropy_loss, dice_loss, focal_loss,
)

IGN = 255


def confident_logits(labels, num_classes, scale=50.0):
    """Logits whose softmax is (numerically) the one-hot of ``labels``."""
    return F.one_hot(labels.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2).float() * scale


def test_dice_identical_masks_is_zero():
    t = torch.tensor([[[0, 1, 2], [2, 1, 0]]])
    assert dice_loss(confident_logits(t, 3), t, ignore_value=IGN).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_hand_computed():
    # 2 classes, 2 pixels; p(class 1) = 0.5 at both, ground truth [0, 1]
    logits = torch.zeros(1, 2, 1, 2)
    t = torch.tensor([[[0, 1]]])
    # class 0: I = 0.5, |P| = 1, |G| = 1 -> (1 + 1) / (2 + 1); same for class 1
    expected = 1 - (2 * 0.5 + 1) / (2 + 1)
    assert dice_loss(logits, t, ignore_value=IGN, smooth=1.0).item() == pytest.approx(expected)


def test_dice_leaves_ignored_pixels_out():
    t = torch.tensor([[[0, 1, IGN, IGN]]])
    good = confident_logits(torch.tensor([[[0, 1, 0, 0]]]), 2)
    wrong_at_ignored = confident_logits(torch.tensor([[[0, 1, 1, 1]]]), 2)
    a = dice_loss(good, t, ignore_value=IGN)
    b = dice_loss(wrong_at_ignored, t, ignore_value=IGN)
    assert a.item() == pytest.approx(0.0, abs=1e-6) and b.item() == pytest.approx(0.0, abs=1e-6)


def test_dice_binary_case():
    t = torch.tensor([[[0, 1], [1, IGN]]])
    perfect = torch.tensor([[[[-50.0, 50.0], [50.0, 50.0]]]])  # (1, 1, 2, 2); the ignored pixel is wrong-ish
    assert dice_loss(perfect, t, ignore_value=IGN).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere: I = 1, |P| = 1.5, |G| = 2
    assert dice_loss(half, t, ignore_value=IGN).item() == pytest.approx(1 - (2 * 1 + 1) / (1.5 + 2 + 1))


def test_ce_leaves_ignored_pixels_out():
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])  # (1, 2, 1, 3)
    t = torch.tensor([[[0, 1, IGN]]])
    l0 = math.log(1 + math.exp(-2.0))  # -log softmax = log(1 + e^{other - own})
    l1 = math.log(1 + math.exp(-1.0))
    assert cross_entropy_loss(logits, t, ignore_value=IGN).item() == pytest.approx((l0 + l1) / 2, rel=1e-5)


def test_class_weights_change_the_loss_as_expected():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])
    t = torch.tensor([[[0, 1]]])
    l0, l1 = math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(-1.0))
    w = torch.tensor([1.0, 3.0])
    # weighted mean: (1 * l0 + 3 * l1) / (1 + 3): class 1's (larger) loss counts three times
    got = cross_entropy_loss(logits, t, ignore_value=IGN, class_weights=w).item()
    assert got == pytest.approx((l0 + 3 * l1) / 4, rel=1e-5)
    assert got > cross_entropy_loss(logits, t, ignore_value=IGN).item()
    assert got == pytest.approx(F.cross_entropy(logits, t, weight=w).item(), rel=1e-6)


def test_topk_keeps_the_hardest_pixels():
    logits = torch.tensor([[[[3.0, 0.0, 1.0, 0.0]], [[0.0, 2.0, 0.0, 0.0]]]])
    t = torch.tensor([[[0, 1, 1, IGN]]])
    per_pixel = [math.log(1 + math.exp(-3.0)), math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0))]
    got = cross_entropy_loss(logits, t, ignore_value=IGN, topk_ratio=2 / 3).item()
    assert got == pytest.approx(sum(sorted(per_pixel)[-2:]) / 2, rel=1e-5)


def test_focal_hand_computed_and_gamma_zero_is_ce():
    logits = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]]]])
    t = torch.tensor([[[0, IGN]]])
    p = math.exp(1) / (math.exp(1) + 1)
    assert focal_loss(logits, t, ignore_value=IGN, gamma=2.0).item() == pytest.approx(-(1 - p) ** 2 * math.log(p), rel=1e-5)
    assert focal_loss(logits, t, ignore_value=IGN, gamma=0.0).item() == pytest.approx(
        cross_entropy_loss(logits, t, ignore_value=IGN).item(), rel=1e-6)


def test_boundary_loss_is_ce_on_the_shared_band():
    t = torch.zeros(1, 6, 6, dtype=torch.long)
    t[:, :, 3:] = 1
    band = boundary_band(t, 1, ignore_value=IGN)
    assert band[0, 0].tolist() == [False, False, True, True, False, False]
    logits = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    banded = torch.where(band, t, torch.full_like(t, IGN))
    assert boundary_loss(logits, t, ignore_value=IGN, width=1).item() == pytest.approx(
        F.cross_entropy(logits, banded, ignore_index=IGN).item(), rel=1e-6)
    # no boundary at all: 0, still differentiable
    flat = torch.zeros(1, 6, 6, dtype=torch.long)
    out = boundary_loss(logits.requires_grad_(), flat, ignore_value=IGN, width=1)
    out.backward()
    assert out.item() == 0.0


def test_boundary_loss_band_is_seg_d2_layers_boundary_band():
    """One band for losses, mask targets and metrics: the loss has no copy of its own."""
    assert sem_seg_losses.boundary_band is boundary_band
    g = torch.Generator().manual_seed(3)
    t = torch.randint(0, 4, (2, 5, 7), generator=g).repeat_interleave(3, 1).repeat_interleave(3, 2)
    t[0, :4, :6] = IGN  # the edge of an ignored region, and the image border, are no boundaries
    logits = torch.randn(2, 4, 15, 21, generator=g)
    band = boundary_band(t, 2, ignore_value=IGN, border_is_boundary=False)
    assert band.any() and not band.all()
    banded = torch.where(band, t, torch.full_like(t, IGN))
    assert boundary_loss(logits, t, ignore_value=IGN, width=2).item() == pytest.approx(
        F.cross_entropy(logits, banded, ignore_index=IGN).item(), rel=1e-6)


def test_ignored_region_is_not_a_boundary():
    t = torch.zeros(1, 4, 6, dtype=torch.long)
    t[:, :, 3:] = IGN
    logits = torch.randn(1, 2, 4, 6)
    assert boundary_loss(logits, t, ignore_value=IGN, width=1).item() == 0.0


def test_semseg_loss_combines_with_weights():
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(2))
    t[0, :2] = IGN
    loss = SemSegLoss(losses=["ce", "dice", "focal", "boundary"], weights=[1.0, 0.5, 2.0, 0.3], ignore_value=IGN)
    out = loss(logits, t)
    assert set(out) == {"loss_sem_seg", "loss_sem_seg_dice", "loss_sem_seg_focal", "loss_sem_seg_boundary"}
    assert out["loss_sem_seg"].item() == pytest.approx(F.cross_entropy(logits, t, ignore_index=IGN).item(), rel=1e-6)
    assert out["loss_sem_seg_dice"].item() == pytest.approx(0.5 * dice_loss(logits, t, ignore_value=IGN).item())
    assert out["loss_sem_seg_focal"].item() == pytest.approx(2.0 * focal_loss(logits, t, ignore_value=IGN).item())


def test_semseg_loss_config_errors():
    with pytest.raises(ValueError, match="Unknown"):
        SemSegLoss(losses=["lovasz"], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        SemSegLoss(losses=["ce", "dice"], weights=[1.0])
    with pytest.raises(ValueError, match="CLASS_WEIGHTS has 2 weights: it needs 3"):
        SemSegLoss(losses=["ce"], weights=[1.0], class_weights=[1.0, 2.0])(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
