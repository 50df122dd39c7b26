"""seg_d2_ops.nms_rotated (detectron2._C) and torch.ops.detectron2.nms_rotated.

As detectron2's kernels: IoU >= threshold suppresses on CPU (nms_rotated_cpu.cpp), IoU >
threshold on CUDA (nms_rotated_cuda.cu), the threshold being a C++ float.
"""

import importlib
import sys

import pytest
import torch
from torchvision.ops import nms

import seg_d2_ops as ops

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
    # torchvision suppresses at IoU > threshold, detectron2's CPU kernel at >=: random boxes
    # have no IoU exactly at the threshold.
    gen = torch.Generator().manual_seed(seed)
    xyxy, rotated, scores = _axis_aligned(1200, gen, tie_levels=20 if seed % 2 else None)
    expected = nms(xyxy, scores, threshold)
    got = ops.nms_rotated(rotated, scores, threshold)
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
    assert ops.nms_rotated(boxes, scores, 0.5).tolist() == [4, 0, 1]
    assert ops.nms_rotated(boxes, scores, 0.3).tolist() == [4, 0]
    assert ops.nms_rotated(boxes, scores, 0.99).tolist() == [4, 0, 1, 3]
    # equal scores keep the input order
    assert ops.nms_rotated(boxes, torch.ones(5), 0.5).tolist() == [0, 1, 3]


def test_degenerate_and_empty():
    boxes = torch.tensor([[10, 10, 0, 4, 0], [10, 10, 8, 4, 0], [10, 10, 8, 4, 0]], dtype=torch.float32)
    # a zero-width box overlaps nothing: it is kept, and suppresses nothing
    assert ops.nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 1]
    empty = ops.nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0


def test_negative_sizes_as_the_kernel():
    # w * h > 0 with both sides negative: for the kernel that is the |w| x |h| box (IoU 1 here)
    boxes = torch.tensor([[10, 10, -8, -4, 0], [10, 10, 8, 4, 0], [10, 10, -8, 4, 0]], dtype=torch.float32)
    assert ops.nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    assert ops.nms_rotated(boxes, torch.tensor([0.7, 0.8, 0.9]), 0.5).tolist() == [2, 1]


def test_iou_equal_to_the_threshold_is_suppressed_on_cpu():
    # 4x4 and 4x2 boxes with the same centre: intersection 8, union 16, IoU exactly 0.5 (every
    # vertex and product is exact in float). "if (ovr >= iou_threshold) suppressed[j] = 1;"
    boxes = torch.tensor([[5, 5, 4, 4, 0], [5, 5, 4, 2, 0], [50, 50, 4, 4, 0]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ops.box_iou_rotated(boxes[:1], boxes[1:2]).item() == 0.5
    for dtype in (torch.float32, torch.float64):
        b, s = boxes.to(dtype), scores.to(dtype)
        assert ops.nms_rotated(b, s, 0.5).tolist() == [0, 2]
        assert torch.ops.detectron2.nms_rotated(b, s, 0.5).tolist() == [0, 2]
        assert ops.nms_rotated(b, s, 0.5000001).tolist() == [0, 1, 2]
    import detectron2.layers as layers

    assert layers.nms_rotated(boxes, scores, 0.5).tolist() == [0, 2]
    assert layers.batched_nms_rotated(boxes, scores, torch.tensor([0, 0, 1]), 0.5).tolist() == [0, 2]


def test_threshold_is_a_cpp_float():
    # 4x2 and 2.5x2 boxes overlapping by 1.5x2: IoU 3 / (8 + 5 - 3) = 0.3, exact but for the
    # final division. float32 boxes: IoU = float(0.3) >= float(0.3): suppressed. float64 boxes
    # (the double kernel): IoU = double(0.3) < float(0.3) = 0.30000001192...: kept.
    boxes = torch.tensor([[0, 0, 4, 2, 0], [1.75, 0, 2.5, 2, 0]])
    scores = torch.tensor([0.9, 0.8])
    assert ops.nms_rotated(boxes, scores, 0.3).tolist() == [0]
    assert ops.nms_rotated(boxes.double(), scores.double(), 0.3).tolist() == [0, 1]
    assert ops.nms_rotated(boxes.double(), scores.double(), 0.29999998).tolist() == [0]


@pytest.mark.parametrize("threshold", [0.0, -0.5])
def test_non_positive_threshold_keeps_only_the_top_box(threshold):
    # On CPU every IoU, even 0 (disjoint or degenerate boxes), is >= such a threshold.
    boxes = torch.tensor([[10, 10, 4, 4, 0], [100, 10, 4, 4, 0], [10, 100, 0, 4, 0]], dtype=torch.float32)
    assert ops.nms_rotated(boxes, torch.tensor([0.5, 0.9, 0.7]), threshold).tolist() == [1]


def test_cuda_rule_suppresses_above_the_threshold_only(monkeypatch):
    # nms_rotated_cuda.cu: "if (single_box_iou_rotated<T>(...) > iou_threshold)". No GPU here: run
    # the CUDA rule on CPU tensors by declaring the CPU a strict device.
    monkeypatch.setattr(sys.modules[ops.nms_rotated.__module__], "_STRICT_NMS_DEVICES", ("cpu",))
    boxes = torch.tensor([[5, 5, 4, 4, 0], [5, 5, 4, 2, 0], [50, 50, 4, 4, 0]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert ops.box_iou_rotated(boxes[:1], boxes[1:2]).item() == 0.5  # hand-computed: 8 / 16
    assert ops.nms_rotated(boxes, scores, 0.5).tolist() == [0, 1, 2]
    assert ops.nms_rotated(boxes, scores, 0.4999999).tolist() == [0, 2]
    assert ops.nms_rotated(boxes, scores, 0.0).tolist() == [0, 2]  # the disjoint box: 0 > 0 is false


@pytest.mark.parametrize("n", [40, 1500])
def test_rotated_boxes_match_greedy_reference(n):
    # 1500 boxes span several of the op's internal blocks.
    gen = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=gen) * (20 * n**0.5)
    wh = torch.rand(n, 2, generator=gen) * 40 + 4
    boxes = torch.cat([xy, wh, torch.rand(n, 1, generator=gen) * 360 - 180], 1)
    scores = (torch.rand(n, generator=gen) * 50).floor()  # with ties
    ious = ops.box_iou_rotated(boxes, boxes)
    for threshold in (0.1, 0.5):
        expected = greedy_nms(ious, scores, threshold)
        assert ops.nms_rotated(boxes, scores, threshold).tolist() == expected


def test_grid_boxes_with_ious_at_the_threshold_match_greedy_reference():
    # Boxes on a grid, at right angles: many IoUs are exactly 1/2 or 1/3, the thresholds.
    gen = torch.Generator().manual_seed(4)
    n = 400
    xy = torch.randint(0, 30, (n, 2), generator=gen).float()
    wh = torch.tensor([[4.0, 2.0], [4.0, 4.0], [2.0, 4.0], [8.0, 4.0]])[torch.randint(0, 4, (n,), generator=gen)]
    angle = torch.tensor([0.0, 180.0, -180.0])[torch.randint(0, 3, (n,), generator=gen)]
    boxes = torch.cat([xy, wh, angle[:, None]], 1)
    scores = torch.rand(n, generator=gen)
    ious = ops.box_iou_rotated(boxes, boxes)
    for threshold in (0.5, 1 / 3):
        assert (ious == torch.tensor(threshold, dtype=torch.float32)).sum() > 20
        expected = greedy_nms(ious, scores, threshold)
        assert expected != greedy_nms(ious, scores, threshold, strict=True)
        assert ops.nms_rotated(boxes, scores, threshold).tolist() == expected


def test_registered_torch_op():
    gen = torch.Generator().manual_seed(5)
    _, rotated, scores = _axis_aligned(200, gen)
    rotated[:, 4] = torch.rand(200, generator=gen) * 90
    assert torch.equal(torch.ops.detectron2.nms_rotated(rotated, scores, 0.4), ops.nms_rotated(rotated, scores, 0.4))
    # a second registration (module reloaded, or a second copy of it) is skipped, not an error
    rotated_mod = importlib.import_module(ops.nms_rotated.__module__)
    assert rotated_mod._register_nms_rotated_op() is None
    importlib.reload(rotated_mod)
    assert torch.equal(torch.ops.detectron2.nms_rotated(rotated, scores, 0.4), ops.nms_rotated(rotated, scores, 0.4))


def test_detectron2_batched_nms_rotated():
    import detectron2.layers as layers
    boxes = torch.tensor([[10, 10, 8, 4, 0], [10, 10, 8, 4, 5], [10, 10, 8, 4, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert layers.nms_rotated(boxes, scores, 0.5).tolist() == [0]
    # different categories never suppress each other
    assert layers.batched_nms_rotated(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
