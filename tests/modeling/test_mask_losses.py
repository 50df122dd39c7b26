"""Targets and losses of the boundary mask heads (seg_d2.modeling.mask_losses), against independent
computations: hand-worked masks, the BMask R-CNN authors' zero-padded Laplacian (hustvl/BMaskR-CNN,
``boundary_loss_func``) written out with torch's conv2d, and OpenCV's filter2D."""
import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from seg_d2.modeling.mask_losses import boundary_targets, dice_loss

LAPLACIAN = [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]


def authors_targets(masks: torch.Tensor) -> torch.Tensor:
    """The authors' code path: conv2d with the 3x3 Laplacian, padding 1 (zeros), clamp at 0, > 0.1."""
    kernel = torch.tensor(LAPLACIAN, dtype=torch.float32).reshape(1, 1, 3, 3)
    lap = F.conv2d(masks[:, None].float(), kernel, padding=1).clamp(min=0)[:, 0]
    return (lap > 0.1).float()


def authors_dice(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The authors' ``dice_loss_func`` on probabilities: 1 - (2|P.T| + 1) / (|P| + |T| + 1), mean over RoIs."""
    n = probs.size(0)
    p, t = probs.reshape(n, -1), target.reshape(n, -1)
    return (1 - (2 * (p * t).sum(1) + 1.0) / (p.sum(1) + t.sum(1) + 1.0)).mean()


def opencv_targets(masks: torch.Tensor) -> torch.Tensor:
    """The same Laplacian with OpenCV, outside the RoI a constant 0."""
    kernel = np.array(LAPLACIAN, np.float32)
    out = [cv2.filter2D(m.numpy().astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT) > 0.1
           for m in masks]
    return torch.from_numpy(np.stack(out).astype(np.float32)) if out else torch.zeros(masks.shape)


def test_a_mask_filling_its_roi_has_the_roi_edge_as_boundary():
    # Hand count: a 28x28 RoI whose box is the rectangle's own: its outer ring, 4 * 28 - 4 = 108 pixels.
    full = torch.ones(1, 28, 28)
    targets = boundary_targets(full)
    assert targets.sum().item() == 108
    assert targets[0, 1:-1, 1:-1].sum() == 0 and targets[0, 0].all() and targets[0, :, -1].all()


def test_hand_made_masks():
    square = torch.zeros(1, 5, 5)
    square[0, 1:4, 1:4] = 1
    expected = torch.tensor([[0, 0, 0, 0, 0],
                             [0, 1, 1, 1, 0],
                             [0, 1, 0, 1, 0],
                             [0, 1, 1, 1, 0],
                             [0, 0, 0, 0, 0]], dtype=torch.float32)
    assert torch.equal(boundary_targets(square)[0], expected)

    # A mask cut by the RoI's left edge: that edge is boundary too (the authors' zero padding).
    left = torch.zeros(1, 4, 4)
    left[0, :, :2] = 1
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)
    assert torch.equal(boundary_targets(left)[0], expected)

    # A diagonal neighbour outside the mask makes a boundary pixel (8-connectivity): the centre's
    # only outside neighbour is the corner; every other mask pixel touches the RoI edge.
    corner = torch.ones(1, 3, 3)
    corner[0, 0, 0] = 0
    expected = torch.tensor([[0, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=torch.float32)
    assert torch.equal(boundary_targets(corner)[0], expected)

    assert boundary_targets(torch.zeros(1, 6, 6)).sum() == 0
    assert boundary_targets(torch.zeros(0, 6, 6)).shape == (0, 6, 6)


@pytest.mark.parametrize("side", [28, 56])
def test_random_masks_match_the_authors_laplacian_and_opencv(side):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(8, side, side, generator=g) > 0.4
    # and jittered boxes: rectangles that touch or cross the RoI edge, as proposals at IoU >= 0.5 give
    boxes = torch.zeros(8, side, side, dtype=torch.bool)
    for i in range(8):
        x0, y0 = torch.randint(-4, side // 3, (2,), generator=g).tolist()
        x1, y1 = torch.randint(side // 2, side + 4, (2,), generator=g).tolist()
        boxes[i, max(y0, 0):y1, max(x0, 0):x1] = True
    for m in (masks, boxes, masks.float() * 0.9):  # bool or float in [0, 1]
        got = boundary_targets(m)
        assert torch.equal(got, authors_targets(m > 0.5))
        assert torch.equal(got, opencv_targets(m > 0.5))


def test_dice_loss_values():
    target = torch.zeros(1, 4, 4)
    target[0, :2, :2] = 1  # 4 pixels
    # Probabilities 0.5 everywhere: |P∩T| = 2, |P| = 8, |T| = 4 -> 1 - (2*2 + 1) / (8 + 4 + 1) = 8/13.
    assert dice_loss(torch.zeros(1, 4, 4), target).item() == pytest.approx(8 / 13, abs=1e-6)
    # A (nearly) perfect prediction costs (nearly) 0; the exact opposite (the 12 other pixels):
    # 1 - (0 + 1) / (12 + 4 + 1) = 16/17.
    perfect = (target * 2 - 1) * 50
    assert dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-perfect, target).item() == pytest.approx(16 / 17, abs=1e-6)
    # Empty target, empty prediction: the smoothing term makes it 0, not 0/0.
    assert dice_loss(torch.full((1, 4, 4), -50.0), torch.zeros(1, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)
    # Mean over instances.
    both = dice_loss(torch.stack([torch.zeros(4, 4), perfect[0]]), torch.cat([target, target]))
    assert both.item() == pytest.approx((8 / 13 + 0) / 2, abs=1e-6)




def test_dice_loss_is_the_authors_on_random_logits():
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(6, 28, 28, generator=g) * 3, (torch.rand(6, 28, 28, generator=g) > 0.7).float()
    assert dice_loss(logits, target).item() == pytest.approx(authors_dice(logits.sigmoid(), target).item(), rel=1e-6)
