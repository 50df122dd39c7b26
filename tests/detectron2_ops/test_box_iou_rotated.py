"""detectron2._C.box_iou_rotated: hand-computed cases, precision, and a slow reference."""

import math

import pytest
import torch
from torchvision.ops import box_iou

from detectron2 import _C

from .d2ops_reference import rotated_iou


def iou(b1, b2, dtype=torch.float32):
    return _C.box_iou_rotated(torch.tensor(b1, dtype=dtype), torch.tensor(b2, dtype=dtype))


@pytest.mark.parametrize(
    "b1, b2, expected",
    [
        ([5, 5, 4, 4, 0], [5, 5, 4, 4, 0], 1.0),  # identical
        ([5, 5, 4, 4, 30], [5, 5, 4, 4, 30], 1.0),  # identical, rotated
        ([5, 5, 4, 4, 0], [5, 5, 4, 4, 90], 1.0),  # square turned by 90 degrees
        ([5, 5, 4, 4, 0], [5, 5, 4, 4, -270], 1.0),
        ([5, 5, 4, 2, 0], [5, 5, 4, 2, 180], 1.0),
        ([5, 5, 4, 2, 0], [5, 5, 2, 4, 90], 1.0),  # same region, described two ways
        # 4x2 vs the same turned by 90: overlap 2x2 = 4, union 8 + 8 - 4 = 12
        ([5, 5, 4, 2, 0], [5, 5, 4, 2, 90], 1 / 3),
        ([5, 5, 4, 4, 0], [6, 5, 4, 4, 0], 12 / 20),  # shifted by a quarter
        ([0.5, 0.5, 1, 1, 0], [0.25, 0.5, 0.5, 1, 0], 0.5),  # half of it
        ([0.5, 0.5, 1, 1, 0], [1, 1, 1, 1, 0], 0.25 / 1.75),  # corner overlap
        ([5, 5, 4, 4, 0], [9, 5, 4, 4, 0], 0.0),  # touching edges
        ([5, 5, 4, 4, 0], [50, 5, 4, 4, 0], 0.0),  # disjoint
        # a diamond inscribed in a square covers half of it
        ([1, 1, math.sqrt(2), math.sqrt(2), 45], [1, 1, 2, 2, 0], 0.5),
        ([1, 1, 2 * math.sqrt(2), 2 * math.sqrt(2), -45], [1, 1, 2, 2, 0], 0.5),
        # 10x6 boxes crossing at right angles: 6x6 common, each adds 4x6
        ([5, 5, 10, 6, 55], [5, 5, 10, 6, -35], 36 / (36 + 24 + 24)),
        # detectron2 issue 1207: long thin boxes that only look close
        ([3, 3, 8, 2, -45], [6, 0, 8, 2, -45], 0.0),
        ([160, 153, 230, 23, -37], [190, 127, 80, 21, -46], 0.0),
    ],
)
def test_hand_computed(b1, b2, expected):
    got = iou([b1], [b2])
    assert got.shape == (1, 1) and got.dtype == torch.float32
    assert got.item() == pytest.approx(expected, abs=2e-6)
    # IoU is symmetric
    assert iou([b2], [b1]).item() == pytest.approx(expected, abs=2e-6)


def test_degenerate_boxes_give_zero_not_nan():
    boxes = torch.tensor(
        [[5, 5, 4, 4, 0], [5, 5, 0, 4, 0], [5, 5, 4, 0, 30], [5, 5, -4, -4, 0], [5, 5, 0, 0, 0], [5, 5, 1e-8, 1e-8, 0]]
    )
    m = _C.box_iou_rotated(boxes, boxes)
    assert not torch.isnan(m).any()
    expected = torch.zeros(6, 6)
    expected[0, 0] = 1
    assert torch.equal(m, expected)
    assert torch.equal(_C.box_iou_rotated(torch.zeros(5, 5), torch.zeros(7, 5)), torch.zeros(5, 7))


def test_empty_inputs():
    assert _C.box_iou_rotated(torch.zeros(0, 5), torch.rand(10, 5)).shape == (0, 10)
    assert _C.box_iou_rotated(torch.rand(3, 5), torch.zeros(0, 5)).shape == (3, 0)


def test_dtype_follows_input():
    b = [[1, 1, 2, 2, 0]]
    assert iou(b, b, torch.float64).dtype == torch.float64
    assert iou(b, b, torch.float64).item() == 1.0


def test_precision_at_large_coordinates():
    # float32 boxes at 1e5..1e6: only their mid-point shifted frame keeps the digits.
    assert iou([[565, 565, 10, 10, 0]], [[565, 565, 10, 8.3, 0]]).item() == pytest.approx(0.83, abs=1e-6)
    for cx in (1e5, 5e5, 1e6):
        # shifted by 0.125 along the width (exact in float32 at 1e6): (w - d) / (w + d)
        got = iou([[cx, cx, 30, 20, 0]], [[cx + 0.125, cx, 30, 20, 0]]).item()
        assert got == pytest.approx((30 - 0.125) / (30 + 0.125), abs=1e-6)
        got = iou([[cx, cx + 7, 30, 20, 90]], [[cx, cx + 7.125, 30, 20, 90]]).item()
        assert got == pytest.approx((30 - 0.125) / (30 + 0.125), abs=1e-6)
        assert iou([[cx, cx, 30, 20, 33]], [[cx, cx, 30, 20, 33]]).item() == 1.0
    # float64 input, rotated, shifted by 1e-6 along its own width axis
    a = math.radians(33)
    d = 1e-6
    b1 = [1e6, 5e5, 30.0, 20.0, 33.0]
    b2 = [1e6 + d * math.cos(a), 5e5 - d * math.sin(a), 30.0, 20.0, 33.0]
    got = iou([b1], [b2], torch.float64).item()
    assert got == pytest.approx((30 - d) / (30 + d), abs=1e-9)
    # slightly different heights of long boxes (detectron2's large_close_boxes case)
    got = iou([[299.5, 417.370422, 600.0, 364.259186, 27.1828]], [[299.5, 417.370422, 600.0, 364.259155, 27.1828]])
    h1, h2 = torch.tensor([364.259186, 364.259155]).double().tolist()
    assert got.item() == pytest.approx(h2 / h1, abs=1e-7)


def test_extreme_coordinates():
    got = iou(
        [[160.0, 153.0, 230.0, 23.0, -37.0]], [[-1.117407639806935e17, 1.3858420478349148e18, 1000.0, 1000.0, 1612.0]]
    )
    assert got.item() == 0.0


def _random_boxes(n, gen, span=400.0):
    xy = torch.rand(n, 2, generator=gen) * span
    wh = torch.rand(n, 2, generator=gen) * 60 + 1
    ang = torch.rand(n, 1, generator=gen) * 360 - 180
    return torch.cat([xy, wh, ang], 1)


def test_many_boxes_match_slow_reference():
    gen = torch.Generator().manual_seed(0)
    b1, b2 = _random_boxes(2000, gen), _random_boxes(2000, gen)
    m = _C.box_iou_rotated(b1, b2)
    assert m.shape == (2000, 2000) and m.dtype == torch.float32
    assert ((m >= 0) & (m <= 1)).all()
    nonzero = m.nonzero()
    assert len(nonzero) > 1000  # the sample below covers real overlaps
    pairs = nonzero[torch.randperm(len(nonzero), generator=gen)[:150]].tolist()
    pairs += torch.randint(0, 2000, (150, 2), generator=gen).tolist()
    for i, j in pairs:
        assert m[i, j].item() == pytest.approx(rotated_iou(b1[i], b2[j]), abs=1e-5), (i, j)
    # symmetric
    assert torch.allclose(_C.box_iou_rotated(b2[:300], b1[:300]), m[:300, :300].T, atol=1e-6)


def test_dense_cluster_all_pairs_match_reference():
    # Every pair of a crowded cluster (many barely touching or barely separated pairs), checked
    # against the reference: the cheap overlap pre-tests must never drop an overlapping pair.
    gen = torch.Generator().manual_seed(7)
    xy = torch.rand(120, 2, generator=gen) * 60
    wh = torch.rand(120, 2, generator=gen) * 25 + 1
    b = torch.cat([xy, wh, torch.rand(120, 1, generator=gen) * 360 - 180], 1).double()
    m = _C.box_iou_rotated(b, b)
    expected = torch.tensor([[rotated_iou(p, q) for q in b.tolist()] for p in b.tolist()], dtype=torch.float64)
    assert torch.allclose(m, expected, atol=1e-9, rtol=0)
    assert ((expected > 0) & (expected < 0.05)).sum() > 100  # plenty of marginal overlaps


def test_edge_sharing_configurations_match_reference():
    # Boxes with collinear edges, shared vertices, 90-degree turns: the cases that trip up
    # polygon clipping.
    cases = []
    for a in (0, 90, 180, -90, 45, 30, 12.5):
        for da in (0, 90, 180, 1e-5):
            for dx, dy in ((0, 0), (1, 0), (2, 0), (4, 0), (0.5, 1), (3, 1e-7)):
                for w, h in ((4, 2), (4, 4)):
                    cases.append(([10, 10, w, h, a], [10 + dx, 10 + dy, w, h, a + da]))
                    cases.append(([10, 10, w, h, a], [10 + dx, 10 + dy, h, w, a + da]))
                    cases.append(([10, 10, w, h, a], [10 + dx, 10 + dy, 2 * w, h, a + da]))
    b1 = torch.tensor([c[0] for c in cases], dtype=torch.float64)
    b2 = torch.tensor([c[1] for c in cases], dtype=torch.float64)
    got = torch.stack([_C.box_iou_rotated(b1[i : i + 1], b2[i : i + 1])[0, 0] for i in range(len(cases))])
    expected = torch.tensor([rotated_iou(p, q) for p, q in cases], dtype=torch.float64)
    assert torch.allclose(got, expected, atol=1e-7, rtol=0)


def test_axis_aligned_equals_torchvision_box_iou():
    gen = torch.Generator().manual_seed(1)
    b = _random_boxes(300, gen)
    b[:, 4] = 0
    xyxy = torch.cat([b[:, :2] - b[:, 2:4] / 2, b[:, :2] + b[:, 2:4] / 2], 1)
    assert torch.allclose(_C.box_iou_rotated(b, b[:200]), box_iou(xyxy, xyxy[:200]), atol=1e-5)
