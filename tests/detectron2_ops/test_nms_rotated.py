"""detectron2._C.nms_rotated and torch.ops.detectron2.nms_rotated."""

import importlib

import pytest
import torch
from torchvision.ops import nms

from detectron2 import _C

from .d2ops_reference import greedy_nms


def _axis_aligned(n, gen, span=300.0, tie_levels=None):
    xy = torch.rand(n, 2, generator=gen) * span
    wh = torch.rand(n, 2, generator=gen) * 60 + 2
    xyxy = torch.cat([xy, xy + wh], 1)
    rotated = torch.cat([xy + wh / 2, wh, torch.zeros(n, 1)], 1)
    scores = torch.rand(n, generator=gen)
    if tie_levels:  # many exactly equal scores
        scores = (scores * tie_levels).floor() / tie_levels
    return xyxy, rotated, scores


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_zero_angle_equals_torchvision_nms(seed, threshold):
    gen = torch.Generator().manual_seed(seed)
    xyxy, rotated, scores = _axis_aligned(1200, gen, tie_levels=20 if seed % 2 else None)
    expected = nms(xyxy, scores, threshold)
    got = _C.nms_rotated(rotated, scores, threshold)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)


def test_hand_computed():
    boxes = torch.tensor(
        [
            [10, 10, 8, 4, 0],
            [10, 10, 8, 4, 90],  # IoU 1/3 with box 0
            [10, 10, 8, 4, 180],  # the same region as box 0
            [30, 30, 4, 4, 0],
            [31, 30, 4, 4, 0],  # IoU 3/5 with box 3
        ],
        dtype=torch.float32,
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95])
    assert _C.nms_rotated(boxes, scores, 0.5).tolist() == [4, 0, 1]
    assert _C.nms_rotated(boxes, scores, 0.3).tolist() == [4, 0]
    assert _C.nms_rotated(boxes, scores, 0.99).tolist() == [4, 0, 1, 3]
    # equal scores keep the input order
    assert _C.nms_rotated(boxes, torch.ones(5), 0.5).tolist() == [0, 1, 3]


def test_degenerate_and_empty():
    boxes = torch.tensor([[10, 10, 0, 4, 0], [10, 10, 8, 4, 0], [10, 10, 8, 4, 0]], dtype=torch.float32)
    # a zero-width box overlaps nothing: it is kept, and suppresses nothing
    assert _C.nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 1]
    empty = _C.nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0


@pytest.mark.parametrize("n", [40, 1500])
def test_rotated_boxes_match_greedy_reference(n):
    # 1500 boxes span several of the op's internal blocks.
    gen = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=gen) * (20 * n**0.5)
    wh = torch.rand(n, 2, generator=gen) * 40 + 4
    boxes = torch.cat([xy, wh, torch.rand(n, 1, generator=gen) * 360 - 180], 1)
    scores = (torch.rand(n, generator=gen) * 50).floor()  # with ties
    ious = _C.box_iou_rotated(boxes, boxes)
    for threshold in (0.1, 0.5):
        expected = greedy_nms(ious, scores, threshold)
        assert _C.nms_rotated(boxes, scores, threshold).tolist() == expected


def test_registered_torch_op():
    gen = torch.Generator().manual_seed(5)
    _, rotated, scores = _axis_aligned(200, gen)
    rotated[:, 4] = torch.rand(200, generator=gen) * 90
    assert torch.equal(torch.ops.detectron2.nms_rotated(rotated, scores, 0.4), _C.nms_rotated(rotated, scores, 0.4))
    # a second registration (module reloaded, or a second copy of it) is skipped, not an error
    rotated_mod = importlib.import_module(_C.nms_rotated.__module__)
    assert rotated_mod._register_nms_rotated_op() is None
    importlib.reload(rotated_mod)
    assert torch.equal(torch.ops.detectron2.nms_rotated(rotated, scores, 0.4), _C.nms_rotated(rotated, scores, 0.4))


def test_detectron2_batched_nms_rotated():
    import detectron2.layers as layers
    boxes = torch.tensor([[10, 10, 8, 4, 0], [10, 10, 8, 4, 5], [10, 10, 8, 4, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert layers.nms_rotated(boxes, scores, 0.5).tolist() == [0]
    # different categories never suppress each other
    assert layers.batched_nms_rotated(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
