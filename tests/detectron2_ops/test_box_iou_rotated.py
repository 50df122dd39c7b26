"""seg_d2_ops.box_iou_rotated (detectron2._C): hand-computed cases, precision, slow references (a float64
convex-hull one, shapely), and bit-equality with detectron2's C++ kernel (its float arithmetic
decides ties at the matchers' thresholds; see test_d2_rroi_heads.py)."""

import math
import random

import pytest
import torch
from torchvision.ops import box_iou

import seg_d2_ops as ops
from seg_d2_ops import _rotated

from . import d2ops_reference as ref
from .d2ops_reference import kernel_iou_matrix, rotated_iou, shapely_iou


def iou(b1, b2, dtype=torch.float32):
    return ops.box_iou_rotated(torch.tensor(b1, dtype=dtype), torch.tensor(b2, dtype=dtype))


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


def test_degenerate_and_negative_sizes_follow_the_kernel():
    # The C++ kernel returns 0 only when w * h < 1e-14 (a zero side, one negative side, a tiny
    # box). A box with both sides negative has a positive area, and its vertices are those of
    # the |w| x |h| box: the kernel computes the IoU of that box.
    boxes = torch.tensor(
        [
            [5, 5, 4, 4, 0],
            [5, 5, 0, 4, 0],
            [5, 5, 4, 0, 30],
            [5, 5, -4, -4, 0],  # the same square as box 0
            [5, 5, 0, 0, 0],
            [5, 5, 1e-8, 1e-8, 0],  # area 1e-16
            [5, 5, -4, 4, 0],  # area -16
            [5, 5, 4, -4, 0],
        ]
    )
    m = ops.box_iou_rotated(boxes, boxes)
    assert not torch.isnan(m).any()
    expected = torch.zeros(8, 8)
    expected[0, 0] = expected[0, 3] = expected[3, 0] = expected[3, 3] = 1
    assert torch.equal(m, expected)
    assert torch.equal(ops.box_iou_rotated(torch.zeros(5, 5), torch.zeros(7, 5)), torch.zeros(5, 7))
    # rotated: the same rectangle, then against another box (reference: shapely on |w| x |h|)
    assert iou([[5, 5, -4, -2, 30]], [[5, 5, 4, 2, 30]]).item() == pytest.approx(1.0, abs=1e-6)
    b1, b2 = [5, 5, -4, -2, 30], [6, 5, 4, 2, 10]
    expected = shapely_iou([5, 5, 4, 2, 30], b2)
    assert 0.3 < expected < 0.7
    assert iou([b1], [b2]).item() == pytest.approx(expected, abs=1e-6)
    assert iou([b2], [b1]).item() == pytest.approx(expected, abs=1e-6)


def test_empty_inputs():
    assert ops.box_iou_rotated(torch.zeros(0, 5), torch.rand(10, 5)).shape == (0, 10)
    assert ops.box_iou_rotated(torch.rand(3, 5), torch.zeros(0, 5)).shape == (3, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_output_is_float32(dtype):
    # box_iou_rotated_cpu allocates its output as float (at::kFloat), whatever the boxes' dtype.
    b1, b2 = [[5, 5, 4, 4, 0]], [[6, 5, 4, 4, 0]]
    got = iou(b1, b2, dtype)
    assert got.dtype == torch.float32
    # 12 / 20, computed exactly, then rounded once to float32
    assert got.item() == torch.tensor(12 / 20, dtype=torch.float32).item()
    assert iou(b1, b1, dtype).item() == 1.0


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
    got = iou([b1], [b2], torch.float64).item()  # computed in double, returned as float32
    # the kernel's EPS slack (points up to 1e-5 of an edge beyond it) costs ~1e-7 here
    assert got == pytest.approx((30 - d) / (30 + d), abs=2e-7)
    assert got == torch.tensor(ref.kernel_iou(b1, b2, double=True), dtype=torch.float32).item()
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
    m = ops.box_iou_rotated(b1, b2)
    assert m.shape == (2000, 2000) and m.dtype == torch.float32
    assert ((m >= 0) & (m <= 1)).all()
    nonzero = m.nonzero()
    assert len(nonzero) > 1000  # the sample below covers real overlaps
    pairs = nonzero[torch.randperm(len(nonzero), generator=gen)[:150]].tolist()
    pairs += torch.randint(0, 2000, (150, 2), generator=gen).tolist()
    for i, j in pairs:
        assert m[i, j].item() == pytest.approx(rotated_iou(b1[i], b2[j]), abs=1e-5), (i, j)
    # symmetric
    assert torch.allclose(ops.box_iou_rotated(b2[:300], b1[:300]), m[:300, :300].T, atol=1e-6)


def test_dense_cluster_all_pairs_match_reference():
    # Every pair of a crowded cluster (many barely touching or barely separated pairs), checked
    # against the reference: the cheap overlap pre-tests must never drop an overlapping pair.
    gen = torch.Generator().manual_seed(7)
    xy = torch.rand(120, 2, generator=gen) * 60
    wh = torch.rand(120, 2, generator=gen) * 25 + 1
    b = torch.cat([xy, wh, torch.rand(120, 1, generator=gen) * 360 - 180], 1).double()
    m = ops.box_iou_rotated(b, b)  # float64 boxes: computed in double, returned as float32
    expected = torch.tensor([[rotated_iou(p, q) for q in b.tolist()] for p in b.tolist()], dtype=torch.float64)
    assert torch.allclose(m.double(), expected, atol=1e-7, rtol=0)
    assert ((expected > 0) & (expected < 0.05)).sum() > 100  # plenty of marginal overlaps


def _edge_sharing_cases():
    cases = []
    for a in (0, 90, 180, -90, 45, 30, 12.5):
        for da in (0, 90, 180, 1e-5):
            for dx, dy in ((0, 0), (1, 0), (2, 0), (4, 0), (0.5, 1), (3, 1e-7)):
                for w, h in ((4, 2), (4, 4)):
                    cases.append(([10, 10, w, h, a], [10 + dx, 10 + dy, w, h, a + da]))
                    cases.append(([10, 10, w, h, a], [10 + dx, 10 + dy, h, w, a + da]))
                    cases.append(([10, 10, w, h, a], [10 + dx, 10 + dy, 2 * w, h, a + da]))
    return cases


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_sharing_configurations_match_the_kernel(dtype):
    # Boxes with collinear edges, shared vertices, 90-degree turns: the cases that trip up
    # polygon clipping, detectron2's kernel included. With edges a hair from parallel (1e-5
    # degrees, or the kernel's inexact 90 degrees) its crossings and its Graham scan, whose
    # comparator takes points within 1e-6 (absolute) of collinear as equal angles, can build a
    # non-convex hull: IoU 3.0 for two 4x4 boxes 1e-5 degrees apart, in double (as the C++
    # source compiled with g++ -O2 returns). v0.6's EPS slack (PR #2178) fixed the float cases
    # that the earlier kernel got wrong (3.0 and 0.0 below) but not all. The op reproduces the
    # kernel, quirks included.
    cases = _edge_sharing_cases()
    b1 = torch.tensor([c[0] for c in cases], dtype=dtype)
    b2 = torch.tensor([c[1] for c in cases], dtype=dtype)
    got = torch.stack([ops.box_iou_rotated(b1[i : i + 1], b2[i : i + 1])[0, 0] for i in range(len(cases))])
    double = dtype == torch.float64
    expected = torch.tensor([ref.kernel_iou(p, q, double) for p, q in zip(b1.tolist(), b2.tolist())], dtype=dtype)
    assert torch.equal(got, expected.float())
    # the kernel is right (float64 reference, within its precision) but for a few such cases
    geometric = torch.tensor([rotated_iou(p, q) for p, q in cases], dtype=torch.float64)
    # (the EPS slack adds up to ~1e-6 to nearly coincident boxes, in double too)
    wrong = (got.double() - geometric).abs() > 2e-6
    assert 0 < int(wrong.sum()) <= 15
    if not double:
        # the kernel before PR #2178 gave 3.0 and 0.0
        assert iou([[10, 10, 4, 2, 0]], [[10, 10, 4, 2, 1e-5]]).item() == pytest.approx(1.0, abs=1e-6)
        assert iou([[10, 10, 4, 2, 12.5]], [[10, 10, 8, 2, 12.5]]).item() == pytest.approx(0.5, abs=1e-6)
        # geometrically 0.5: a 4x4 and an 8x4 box sharing an edge, 1e-5 degrees apart
        assert iou([[10, 10, 4, 4, 180]], [[12, 10, 8, 4, 180.00001]]).item() == pytest.approx(0.2142858, abs=1e-6)
    else:
        assert iou([[10, 10, 4, 4, -90]], [[10, 10, 4, 4, -89.99999]], dtype).item() == pytest.approx(3.0, abs=1e-5)


def test_axis_aligned_equals_torchvision_box_iou():
    gen = torch.Generator().manual_seed(1)
    b = _random_boxes(300, gen)
    b[:, 4] = 0
    xyxy = torch.cat([b[:, :2] - b[:, 2:4] / 2, b[:, :2] + b[:, 2:4] / 2], 1)
    assert torch.allclose(ops.box_iou_rotated(b, b[:200]), box_iou(xyxy, xyxy[:200]), atol=1e-5)


# ----------------------------------------------------------------------------- the C++ kernel, bit for bit


def _quantised(n, gen, angles):
    """Boxes on a coarse grid: shared edges, collinear edges, vertices on edges, equal boxes."""
    xy = torch.randint(0, 9, (n, 2), generator=gen).float() * 0.5
    wh = torch.randint(1, 7, (n, 2), generator=gen).float()
    a = torch.tensor(angles, dtype=torch.float32)[torch.randint(0, len(angles), (n,), generator=gen)]
    return torch.cat([xy, wh, a[:, None]], 1)


def _bitwise_cases():
    gen = torch.Generator().manual_seed(11)
    xy = torch.rand(30, 2, generator=gen) * 30
    wh = torch.rand(30, 2, generator=gen) * 20 + 0.5
    clustered = torch.cat([xy, wh, torch.rand(30, 1, generator=gen) * 360 - 180], 1)
    right_angles = _quantised(30, gen, [-180, -90, 0, 90, 180, 270])
    other_angles = _quantised(30, gen, [-60, -45, -30, 0, 30, 45, 60])
    far = clustered.clone()
    far[:, :2] += torch.tensor([3e5, 7e4])  # large coordinates, few digits left in float32
    signs = torch.tensor([[1, 1], [-1, -1], [-1, 1], [1, -1]], dtype=torch.float32)
    negative = clustered.clone()
    negative[:, 2:4] *= signs[torch.randint(0, 4, (30,), generator=gen)]
    return {
        "clustered": (clustered, clustered.roll(7, 0)),
        "right_angles": (right_angles, right_angles.roll(3, 0)),
        "other_angles": (other_angles, right_angles),
        "large_coordinates": (far, far.roll(5, 0)),
        "negative_sizes": (negative, clustered),
    }


@pytest.mark.parametrize("case", ["clustered", "right_angles", "other_angles", "large_coordinates", "negative_sizes"])
def test_bitwise_equal_to_the_cpp_kernel(case):
    # Reference: a scalar line-by-line transcription of detectron2 v0.6's CPU kernel in float32
    # (d2ops_reference.kernel_iou). Equal bits, not just close values: the matchers compare
    # IoUs for equality (low-quality matches) and against thresholds.
    b1, b2 = _bitwise_cases()[case]
    got = ops.box_iou_rotated(b1, b2)
    expected = kernel_iou_matrix(b1, b2)
    assert (expected > 0).sum() > 50
    assert torch.equal(got, expected), (got != expected).nonzero()[:5].tolist()


def test_float64_boxes_use_the_double_kernel():
    # nms_rotated's CPU kernel runs single_box_iou_rotated<double> on float64 boxes; IoUs of
    # float64 boxes are that, rounded to float32.
    b1, b2 = _bitwise_cases()["right_angles"]
    b1, b2 = b1.double(), b2.double()
    b1[:, 4] += 1e-3  # angles that are not exact in float32
    got = ops.box_iou_rotated(b1, b2)
    assert torch.equal(got, kernel_iou_matrix(b1, b2, double=True).float())


def test_ties_at_the_best_anchor_resolve_like_the_kernel():
    # The divergence behind test_d2_rroi_heads: RRPN's anchors (test_rroi_heads' configuration)
    # against its ground truth. Each anchor containing a small box has IoU = box area / anchor
    # area, up to rounding, and the matcher makes *every* anchor tied for a box's best IoU
    # positive. For the 2x2 box at 30 degrees the kernel's float rounding leaves 6 anchors tied
    # (those around the second location: 4 / 1024 rounded up by 2 ulps), where a float64
    # computation rounded to float32 gives 15 (exactly 4 / 1024, the first location's 9 too).
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.anchor_generator import build_anchor_generator

    cfg = get_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.NAME = "RotatedAnchorGenerator"
    anchors = build_anchor_generator(cfg, [ShapeSpec(channels=1, stride=16)])([torch.zeros(1, 1, 1, 2)])[0].tensor
    gt = torch.tensor([[2, 2, 2, 2, 30], [4, 4, 4, 4, 0], [1.5, 5.5, 1, 3, 0], [8.5, 4, 3, 2, -50]])
    got = ops.box_iou_rotated(gt, anchors)
    expected = kernel_iou_matrix(gt, anchors)
    assert torch.equal(got, expected)
    best = (got[0] == got[0].max()).nonzero().flatten().tolist()
    assert best == [46, 48, 49, 50, 51, 53]
    assert got[0].max().item() == pytest.approx(4 / 1024, abs=1e-9) and got[0].max().item() != 4 / 1024


def test_long_point_lists_sort_like_libstdcxx():
    # More than 17 candidate points take std::sort's introsort path (a scalar loop in the op);
    # rectangles hardly ever produce them, so drive the hull step directly: 20 points (a convex
    # 12-gon, duplicates of 4 of its vertices, 4 interior points) in random order.
    from shapely.geometry import MultiPoint

    rnd = random.Random(3)
    for trial in range(5):
        turns = [2 * math.pi * i / 12 + trial for i in range(12)]
        poly = [(10 * math.cos(t), 7 * math.sin(t)) for t in turns]
        pts = poly + poly[:4] + [(0.5, 0.25), (-1.0, 2.0), (3.0, -1.5), (0.0, 0.0)]
        rnd.shuffle(pts)
        pts = [(float(torch.tensor(x).float()), float(torch.tensor(y).float())) for x, y in pts]
        xs = torch.tensor([[p[0]] for p in pts], dtype=torch.float32)
        ys = torch.tensor([[p[1]] for p in pts], dtype=torch.float32)
        got = _rotated._kernel_hull_area(xs, ys, torch.tensor([len(pts)])).item()
        assert got == pytest.approx(MultiPoint(pts).convex_hull.area, rel=1e-6)
        as_f32 = [tuple(torch.tensor(p, dtype=torch.float32).numpy()) for p in pts]
        assert got == ref._k_hull_area(as_f32)


def test_tiny_boxes_reach_as_far_as_the_kernel():
    # The kernel takes vertices within EPS = 1e-5 on the dot products (of lengths squared) as
    # inside: for boxes 1e-3 wide that is 1e-2 beyond their sides, so it finds overlaps (and IoUs
    # outside [0, 1]) between boxes far apart for their size. The pre-tests that skip the kernel
    # for pairs clearly apart must reach as far, or the op returns 0 where the kernel does not.
    gen = torch.Generator().manual_seed(3)
    t = torch.rand(40, 5, generator=gen)
    tiny = torch.cat([t[:, :2] * 0.02, t[:, 2:4] * 2e-3 + 1e-4, t[:, 4:] * 360], 1)
    expected = kernel_iou_matrix(tiny, tiny)
    assert (expected > 1).sum() > 50
    assert torch.equal(ops.box_iou_rotated(tiny, tiny), expected)
    scores = torch.rand(40, generator=gen)
    for thr in (0.3, 0.7):
        assert ops.nms_rotated(tiny, scores, thr).tolist() == ref.greedy_nms(expected, scores, thr)
