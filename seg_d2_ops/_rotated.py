"""Rotated-box ops of detectron2._C in pure PyTorch: IoU, NMS and ROIAlignRotated.

Boxes are ``(x_ctr, y_ctr, width, height, angle_degrees)``, the angle counter-clockwise on the
image (y pointing down), exactly as in detectron2's C++ ``box_iou_rotated_utils.h``. Every op is
vectorised torch code that runs on whatever device its inputs are on.

``box_iou_rotated`` and ``nms_rotated`` reproduce detectron2 v0.6's CPU kernel
(``single_box_iou_rotated<T>`` in ``csrc/box_iou_rotated/box_iou_rotated_utils.h``) operation by
operation, in its arithmetic: ``T`` = float (double for float64 boxes), the angle and the centre
shift in double (both boxes are intersected around their mid-point), the same edge-crossing and
vertex-inside tests with the same literals and the same slack (``EPS`` = 1e-5, compared in double;
without it nearly identical boxes get IoUs of 0.6, detectron2 issues #2154 and #2167), the Graham
scan with libstdc++'s ``std::sort`` and the same pops, and the same summation order of the area.
The IoUs are then bit-identical to a compiled build's, which matters well beyond the last
digit: detectron2's ``Matcher`` (``allow_low_quality_matches``) makes every anchor whose IoU
*equals* a ground-truth box's best one positive, so anchors that cover a small box equally well
(IoU = box area / anchor area, for all of them) tie or not depending on float rounding. A float64
computation rounded to float32 resolves those ties differently from the C++, which changed the
RPN losses of detectron2's own ``test_rroi_heads`` (0.24298 / 0.40453 instead of 0.24277 /
0.36466). Parity includes the kernel's flaws: where edges of the two boxes are almost parallel
and overlap, its Graham scan (which takes points within 1e-6, absolute, of collinear as equal
angles) can fold the hull, e.g. IoU 3.0 for two 4x4 boxes 1e-5 degrees apart in double; and its
EPS, absolute on dot products of lengths squared, reaches 1e-2 beyond the sides of 1e-3-wide
boxes, whose IoUs then fall outside [0, 1]. The op returns what the compiled kernel returns
(checked bit for bit against its source built with g++ -O2, as the compiled detectron2 here
computes; GCC 12 at -O3 vectorises it into a few different float results, e.g. 12 ulps on issue
#2154's IoU, and agrees again with -fno-tree-vectorize).

On CUDA tensors the ops still follow the CPU kernel's arithmetic: detectron2's CUDA kernel
differs from it by FMA contractions (nvcc's default) and a different sort, which no sequence of
torch ops reproduces. Only NMS's threshold test follows the kernel of the device (see
``nms_rotated``).
"""

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["box_iou_rotated", "nms_rotated", "roi_align_rotated_forward", "roi_align_rotated_backward"]

# Pairs per batch of exact intersections: cache-sized on CPU, large enough to fill a GPU.
_PAIR_CHUNK_CPU = 1 << 13
_PAIR_CHUNK_GPU = 1 << 18
# Elements of the (cheap) bounding-box overlap mask evaluated at once.
_MASK_CHUNK = 1 << 22
# Candidate box pairs (each with ~10 int64 / float64 temporaries) handled at once by NMS.
_NMS_PAIR_CHUNK = 1 << 21
# Boxes resolved per step of the blocked greedy NMS.
_NMS_BLOCK = 256
# Devices whose detectron2 kernel suppresses only IoU > threshold (nms_rotated_cuda.cu); the CPU
# kernel (nms_rotated_cpu.cpp), and so every other device here, suppresses IoU >= threshold.
_STRICT_NMS_DEVICES = ("cuda",)
# Bilinear taps (index + weight) per ROIAlignRotated chunk.
_ROI_CHUNK = 1 << 23

# The C++ kernel's degrees -> radians factor ("M_PI / 180. == 0.01745329251"), not math.pi / 180.
_DEG2RAD = 0.01745329251
# get_intersection_points' "double EPS = 1e-5" (detectron2 PR #2178, for its issues #2154 and #2167;
# in v0.6): edge crossings are taken for t in (-EPS, 1 + EPS) along both edges, and vertices inside
# the other box with a slack of EPS on the dot products. Without it, nearly identical boxes miss
# crossings or vertices and their IoU collapses (0.60 and 0.58 instead of 1 for those issues' boxes).
_EPS = 1e-5
# Relative margin of the overlap pre-tests, far above the kernel's float32 rounding (~1e-7): a
# pair is only skipped (IoU 0 without the kernel) when it is separated by more than this.
_MARGIN = 1e-4
# Candidate points of one pair in the kernel: 16 edge crossings + 4 + 4 contained vertices.
_MAX_PTS = 24
# libstdc++'s std::sort insertion-sorts ranges of at most this many elements (_S_threshold).
_SORT_THRESHOLD = 16


def _geom_dtype(device: torch.device) -> torch.dtype:
    """Precision of the conservative overlap pre-tests (not of the IoU itself)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _kernel_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The ``T`` of ``single_box_iou_rotated<T>`` for boxes of ``dtype``: double for float64
    boxes (nms_rotated's CPU kernel dispatches on the dtype), float for everything else."""
    return torch.float64 if dtype == torch.float64 and device.type != "mps" else torch.float32


def _double(t: torch.Tensor) -> torch.Tensor:
    """``t`` promoted as C++ promotes a float operand of a double expression (not on MPS)."""
    return t if t.device.type == "mps" else t.to(torch.float64)


# ----------------------------------------------------------------------------- comparisons


@functools.lru_cache(maxsize=None)
def _f32_floor(c: float, strict: bool) -> float:
    """The largest float32 ``< c`` (strict) or ``<= c``: a float32 compared with it gives exactly
    the C++ comparison of a float with the double literal ``c``."""
    t = torch.tensor(c, dtype=torch.float32)
    if t.item() > c or (strict and t.item() == c):
        t = torch.nextafter(t, torch.tensor(-math.inf, dtype=torch.float32))
    return t.item()


def _lt(x: torch.Tensor, c: float) -> torch.Tensor:
    """``x < c`` for a double literal ``c``, exact for float32 ``x`` (torch would round ``c``)."""
    return x < c if x.dtype == torch.float64 else x <= _f32_floor(c, True)


def _le(x: torch.Tensor, c: float) -> torch.Tensor:
    """``x <= c`` for a double literal ``c``, exact for float32 ``x``."""
    return x <= c if x.dtype == torch.float64 else x <= _f32_floor(c, False)


def _gt(x: torch.Tensor, c: float) -> torch.Tensor:
    """``x > c`` for a double literal ``c``, exact for float32 ``x``."""
    return x > c if x.dtype == torch.float64 else x > _f32_floor(c, False)


def _lt_plus(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """``x < y + c`` for T ``x, y`` and a double ``c``: C++ adds in double, so this does too."""
    return _double(x) < _double(y) + c


# ----------------------------------------------------------------------------- the C++ kernel
#
# Every function below mirrors one of box_iou_rotated_utils.h, on K pairs at once; the
# parenthesisation of each expression is the C++ evaluation order, and every torch op rounds
# like the corresponding C++ operation (one elementwise op per C++ operator: no fused ops).


def _kernel_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes [N, 5] of dtype T -> [N, 7]: with the kernel's cosTheta2, sinTheta2 appended, so that
    they are computed once per box rather than once per pair."""
    theta = _double(boxes[:, 4]) * _DEG2RAD  # double theta = box.a * 0.01745329251;
    c = torch.cos(theta).to(boxes.dtype) * 0.5  # T cosTheta2 = (T)cos(theta) * 0.5f;
    s = torch.sin(theta).to(boxes.dtype) * 0.5
    return torch.cat([boxes, c[:, None], s[:, None]], 1)


def _kernel_vertices(x, y, w, h, c, s):
    """``get_rotated_vertices``: vertices (xs, ys), each [4, K], of boxes given as rows [K]."""
    sh, cw, ch, sw = s * h, c * w, c * h, s * w
    p0x, p0y = (x + sh) + cw, (y + ch) - sw
    p1x, p1y = (x - sh) + cw, (y - ch) - sw
    x2, y2 = x * 2, y * 2
    return torch.stack([p0x, p1x, x2 - p0x, x2 - p1x]), torch.stack([p0y, p1y, y2 - p0y, y2 - p1y])


def _kernel_inside(px, py, qx, qy, ex, ey):
    """Vertices p [4, K] inside the box q with edges e, by the projections on its sides AB, AD."""
    abx, aby, dax, day = ex[:1], ey[:1], ex[3:], ey[3:]
    ab_ab = abx * abx + aby * aby
    ad_ad = dax * dax + day * day
    apx, apy = px - qx[:1], py - qy[:1]
    ap_ab = apx * abx + apy * aby
    ap_ad = -(apx * dax + apy * day)
    # "(APdotAB > -EPS) && (APdotAD > -EPS) && (APdotAB < ABdotAB + EPS) && (APdotAD < ADdotAD + EPS)"
    return _gt(ap_ab, -_EPS) & _gt(ap_ad, -_EPS) & _lt_plus(ap_ab, ab_ab, _EPS) & _lt_plus(ap_ad, ad_ad, _EPS)


def _kernel_points(p1x, p1y, p2x, p2y):
    """``get_intersection_points``: the candidate points [24, K] and which of them are real.

    Slot i * 4 + j: crossing of edge i of box 1 with edge j of box 2; slots 16-19: vertices of
    box 1 inside box 2; 20-23: vertices of box 2 inside box 1 (the C++ appends them in that order).
    """
    k = p1x.shape[1]
    e1x, e1y = p1x.roll(-1, 0) - p1x, p1y.roll(-1, 0) - p1y  # vec1[i] = pts1[(i + 1) % 4] - pts1[i]
    e2x, e2y = p2x.roll(-1, 0) - p2x, p2y.roll(-1, 0) - p2y
    ax, ay = e1x[:, None], e1y[:, None]  # edge i of box 1: dim 0
    bx, by = e2x[None], e2y[None]  # edge j of box 2: dim 1
    det = bx * ay - ax * by  # cross_2d(vec2[j], vec1[i])
    dx = p2x[None] - p1x[:, None]  # vec12 = pts2[j] - pts1[i]
    dy = p2y[None] - p1y[:, None]
    t1 = (bx * dy - dx * by) / det
    t2 = (ax * dy - dx * ay) / det
    # "t1 > -EPS && t1 < 1.0f + EPS && t2 > -EPS && t2 < 1.0f + EPS", compared in double
    hit = ~_le(det.abs(), 1e-14) & _gt(t1, -_EPS) & _lt(t1, 1.0 + _EPS) & _gt(t2, -_EPS) & _lt(t2, 1.0 + _EPS)
    cx = p1x[:, None] + ax * t1  # pts1[i] + vec1[i] * t1
    cy = p1y[:, None] + ay * t1
    xs = torch.cat([cx.reshape(16, k), p1x, p2x])
    ys = torch.cat([cy.reshape(16, k), p1y, p2y])
    inside1 = _kernel_inside(p1x, p1y, p2x, p2y, e2x, e2y)
    inside2 = _kernel_inside(p2x, p2y, p1x, p1y, e1x, e1y)
    return xs, ys, torch.cat([hit.reshape(16, k), inside1, inside2])


def _kernel_less(ax, ay, bx, by):
    """The CPU ``std::sort`` comparator: by angle around the start point, ties by distance."""
    cross = ax * by - bx * ay
    return torch.where(_lt(cross.abs(), 1e-6), (ax * ax + ay * ay) < (bx * bx + by * by), cross > 0)


def _std_sort_columns(qx, qy, num, which):
    """libstdc++'s ``std::sort(q + 1, q + num)`` (introsort) of the columns ``which``, in place.

    Only reached for more than ``_SORT_THRESHOLD`` elements (the vectorised insertion sort covers
    the rest), which takes degenerate configurations (vertices on edges, collinear edges), so a
    scalar loop will do. Arithmetic in the kernel's T: numpy float32 scalars, or Python floats.
    """
    import numpy as np

    cast = np.float32 if qx.dtype == torch.float32 else float

    def less(a, b):
        cross = a[0] * b[1] - b[0] * a[1]
        if float(abs(cross)) < 1e-6:
            return a[0] * a[0] + a[1] * a[1] < b[0] * b[0] + b[1] * b[1]
        return cross > 0

    def linear_insert(v, i):  # std::__unguarded_linear_insert
        val, j = v[i], i - 1
        while less(val, v[j]):
            v[j + 1] = v[j]
            j -= 1
        v[j + 1] = val

    def insertion_sort(v, lo, hi):  # std::__insertion_sort
        for i in range(lo + 1, hi):
            if less(v[i], v[lo]):
                v[lo + 1 : i + 1], v[lo] = v[lo:i], v[i]
            else:
                linear_insert(v, i)

    def median_to_first(v, r, a, b, c):  # std::__move_median_to_first
        if less(v[a], v[b]):
            m = b if less(v[b], v[c]) else (c if less(v[a], v[c]) else a)
        else:
            m = a if less(v[a], v[c]) else (c if less(v[b], v[c]) else b)
        v[r], v[m] = v[m], v[r]

    def partition(v, first, last, pivot):  # std::__unguarded_partition
        while True:
            while less(v[first], v[pivot]):
                first += 1
            last -= 1
            while less(v[pivot], v[last]):
                last -= 1
            if not first < last:
                return first
            v[first], v[last] = v[last], v[first]
            first += 1

    def introsort_loop(v, first, last, depth):  # std::__introsort_loop
        while last - first > _SORT_THRESHOLD:
            if depth == 0:  # heapsort: unreachable, each partition shrinks 23 elements by one
                key = functools.cmp_to_key(lambda a, b: -1 if less(a, b) else int(less(b, a)))
                v[first:last] = sorted(v[first:last], key=key)
                return
            depth -= 1
            median_to_first(v, first, first + 1, first + (last - first) // 2, last - 1)
            cut = partition(v, first + 1, last, first)
            introsort_loop(v, cut, last, depth)
            last = cut

    (idx,) = which.nonzero(as_tuple=True)
    xs, ys = qx[:, idx].t().cpu().numpy(), qy[:, idx].t().cpu().numpy()
    for r, n in enumerate(num[idx].tolist()):
        v = [(cast(x), cast(y)) for x, y in zip(xs[r, :n], ys[r, :n])]
        introsort_loop(v, 1, n, 2 * ((n - 1).bit_length() - 1))  # depth limit 2 * lg(n - 1)
        insertion_sort(v, 1, 1 + _SORT_THRESHOLD)  # std::__final_insertion_sort
        for i in range(1 + _SORT_THRESHOLD, n):
            linear_insert(v, i)
        xs[r, :n] = [p[0] for p in v]
        ys[r, :n] = [p[1] for p in v]
    qx[:, idx] = torch.from_numpy(xs).t().to(qx.device)
    qy[:, idx] = torch.from_numpy(ys).t().to(qy.device)


def _kernel_hull_area(px, py, num):
    """``convex_hull_graham(..., shift_to_zero=true)``, then ``polygon_area``: [K] in T.

    ``px, py`` [S, K]: the candidate points, compacted (the first ``num`` [K] are real).
    """
    s, k = px.shape
    dev = px.device
    slot = torch.arange(s, device=dev)[:, None]
    live = slot < num
    # Step 1: the lowest point (then leftmost; the first of equal ones) is the start.
    inf = torch.tensor(math.inf, dtype=px.dtype, device=dev)
    low = live & (py == torch.where(live, py, inf).amin(0))
    low &= px == torch.where(low, px, inf).amin(0)
    t = torch.where(low, slot, s).amin(0, keepdim=True)  # [1, K]
    # Step 2: relative to the start, which then swaps places with slot 0.
    qx, qy = px - px.gather(0, t), py - py.gather(0, t)
    for q in (qx, qy):
        at_t = q.gather(0, t)  # (0, 0), the start
        q.scatter_(0, t, q[:1].clone())
        q[:1] = at_t
    # Step 3: std::sort(q + 1, q + num). libstdc++ insertion-sorts up to 16 elements: emulated
    # here step by step, comparator included, so that even its non-transitive cases come out
    # alike; longer ranges (degenerate configurations only) go through the scalar introsort.
    big = num > _SORT_THRESHOLD + 1
    if bool(big.any()):
        _std_sort_columns(qx, qy, num, big)
    n_small = torch.where(big, 0, num)
    for g in range(2, int(n_small.max())):
        vx, vy = qx[g : g + 1], qy[g : g + 1]
        before = _kernel_less(vx, vy, qx[1:g], qy[1:g])  # [g - 1, K]
        # to the front if less(q[g], q[1]); else right after the last q[j] it is not less than
        last_not = torch.where(before, 0, slot[1:g]).amax(0)
        pos = torch.where(before[0], 1, last_not + 1)
        pos = torch.where(g < n_small, pos, g)  # g: the column stays as it is
        # q[g] moves to slot pos, q[pos:g] one slot up
        seg = slot[1 : g + 1]
        qx[1 : g + 1] = torch.where(seg == pos, vx, torch.where(seg > pos, qx[0:g], qx[1 : g + 1]))
        qy[1 : g + 1] = torch.where(seg == pos, vy, torch.where(seg > pos, qy[0:g], qy[1 : g + 1]))
    # Step 4: the first point away from the start (dist > 1e-8) is the second one; if there
    # is none, the hull is a single point.
    far = live & (slot >= 1) & _gt(qx * qx + qy * qy, 1e-8)
    first = torch.where(far, slot, s).amin(0)
    has = first < s
    # Step 5: the scan, on a stack per column: q[0] = (0, 0), q[1] = q[first], then pops while
    # the turn is not strictly convex ("q1.x * q2.y >= q2.x * q1.y").
    stx = torch.zeros(s + 1, k, dtype=px.dtype, device=dev)
    sty = torch.zeros_like(stx)
    stx[1:2] = qx.gather(0, first.clamp_max(s - 1)[None])
    sty[1:2] = qy.gather(0, first.clamp_max(s - 1)[None])
    m = torch.full((1, k), 2, dtype=torch.long, device=dev)
    for i in range(2, int(num.max())):
        act = (first < i) & (i < num)
        if not bool(act.any()):
            continue
        qix, qiy = qx[i : i + 1], qy[i : i + 1]
        while True:
            a, b = (m - 2).clamp_min(0), m - 1
            sax, say = stx.gather(0, a), sty.gather(0, a)
            q1x, q1y = qix - sax, qiy - say
            q2x, q2y = stx.gather(0, b) - sax, sty.gather(0, b) - say
            pop = act & (m > 1) & (q1x * q2y >= q2x * q1y)
            if not bool(pop.any()):
                break
            m = m - pop.long()
        stx.scatter_(0, m, torch.where(act, qix, stx.gather(0, m)))
        sty.scatter_(0, m, torch.where(act, qiy, sty.gather(0, m)))
        m = m + act.long()
    m = torch.where(has, m[0], 1)
    # polygon_area: a fan from q[0] = (0, 0), summed in order; 0 for fewer than 3 points.
    area = torch.zeros(k, dtype=px.dtype, device=dev)
    for i in range(1, int(m.max()) - 1):
        term = (stx[i] * sty[i + 1] - stx[i + 1] * sty[i]).abs()
        area = torch.where(i < m - 1, area + term, area)
    return area * 0.5  # area / 2.0


def _kernel_iou(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """``single_box_iou_rotated<T>(b1[i], b2[i])`` for aligned pairs [K, 7] (``_kernel_boxes``)."""
    x1, y1, w1, h1, _, c1, s1 = b1.t().contiguous()
    x2, y2, w2, h2, _, c2, s2 = b2.t().contiguous()
    # center_shift = (x1 + x2) / 2.0: the sum in T, the (exact) halving in double; x1 - shift,
    # computed in double and stored as T, is then the single rounding done here.
    sx, sy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    area1, area2 = w1 * h1, w2 * h2
    iou = torch.zeros_like(x1)
    # "if (area1 < 1e-14 || area2 < 1e-14) return 0": a box with both sides negative is a box.
    (sel,) = (~(_lt(area1, 1e-14) | _lt(area2, 1e-14))).nonzero(as_tuple=True)
    if sel.numel() == 0:
        return iou
    p1x, p1y = _kernel_vertices(x1[sel] - sx[sel], y1[sel] - sy[sel], w1[sel], h1[sel], c1[sel], s1[sel])
    p2x, p2y = _kernel_vertices(x2[sel] - sx[sel], y2[sel] - sy[sel], w2[sel], h2[sel], c2[sel], s2[sel])
    xs, ys, valid = _kernel_points(p1x, p1y, p2x, p2y)
    num = valid.sum(0)
    inter = torch.zeros_like(p1x[0])
    (cols,) = (num > 2).nonzero(as_tuple=True)  # else "if (num <= 2) return 0.0;"
    if cols.numel():
        valid, num = valid[:, cols], num[cols]
        # compact the real points to the front, in slot order (the rest go to a dump row)
        dest = torch.where(valid, valid.cumsum(0) - 1, _MAX_PTS)
        px = xs.new_zeros(_MAX_PTS + 1, cols.numel()).scatter_(0, dest, xs[:, cols])
        py = ys.new_zeros(_MAX_PTS + 1, cols.numel()).scatter_(0, dest, ys[:, cols])
        width = int(num.max())
        inter[cols] = _kernel_hull_area(px[:width], py[:width], num)
    a1, a2 = area1[sel], area2[sel]
    iou[sel] = inter / ((a1 + a2) - inter)
    return iou


# ----------------------------------------------------------------------------- pre-tests


def _valid(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes the kernel does not short-cut to IoU 0: ``w * h`` (in the boxes' dtype) >= 1e-14.

    A box with both sides negative has a positive area and is the box of sides |w|, |h|."""
    return ~_lt(boxes[:, 2] * boxes[:, 3], 1e-14)


def _reach(side: torch.Tensor) -> torch.Tensor:
    """Half of a box side (|side| / 2) grown by how far beyond it the kernel's EPS lets points
    count: 2 EPS of the side (edge crossings at t in (-EPS, 1 + EPS)) plus EPS / |side| (vertices
    within EPS, on the dot products, of the other box), both doubled for safety. This absolute
    term is large for tiny boxes: the kernel sees 1e-3-wide boxes up to 1e-2 apart as overlapping."""
    side = side.abs()
    return side * (0.5 + 4 * _EPS) + (2 * _EPS) / side.clamp_min(1e-30)


def _axis_aligned_extent(boxes: torch.Tensor):
    """Half extents (ex, ey) of the axis-aligned boxes enclosing the rotated ``boxes`` [K, 5],
    as far as the kernel reaches (``_reach``), grown by the pre-test margin (relative to the
    extents and to the coordinates, which bound the distance of any two boxes, hence the
    kernel's rounding)."""
    theta = boxes[:, 4] * _DEG2RAD
    c, s = torch.cos(theta).abs(), torch.sin(theta).abs()
    w, h = 2 * _reach(boxes[:, 2]), 2 * _reach(boxes[:, 3])
    slack = _MARGIN * (boxes[:, 0].abs() + boxes[:, 1].abs() + w + h) + 1e-30
    ex = (c * w + s * h) * (0.5 * (1 + _MARGIN)) + slack
    ey = (s * w + c * h) * (0.5 * (1 + _MARGIN)) + slack
    return ex, ey


def _overlap_candidates(b1, ext1, b2, ext2):
    """Boolean [len(b1), len(b2)]: pairs whose (grown) axis-aligned enclosing boxes overlap."""
    ex1, ey1 = ext1
    ex2, ey2 = ext2
    dx = (b1[:, None, 0] - b2[None, :, 0]).abs()
    dy = (b1[:, None, 1] - b2[None, :, 1]).abs()
    return (dx <= ex1[:, None] + ex2[None]) & (dy <= ey1[:, None] + ey2[None])


def _live_pairs(b1: torch.Tensor, b2: torch.Tensor, floor=None) -> torch.Tensor:
    """Pairs ``b1[i]``, ``b2[i]`` ([K, 5], geometry dtype) that need the kernel.

    Skipped: pairs clearly apart, by a separating-axis test on the 4 edge normals (a few dozen
    flops per pair, exact for rectangles, far tighter than enclosing boxes for thin or rotated
    ones), on the boxes as far as the kernel's EPS reaches (``_reach``). "Clearly": by more than
    ``_MARGIN`` of the pair's size and distance, far beyond the kernel's rounding, so that the
    kernel finds no intersection point either (IoU 0).

    With ``floor`` set (NMS, which only asks whether IoU passes a threshold above ``floor``),
    also pairs whose IoU cannot reach it: their intersection is at most the overlap of each box
    with the other's bounding rectangle in its own frame. The kernel's float IoU strays from the
    exact one by ~1e-6 relative (far below the margin in ``floor``), except when edges of the two
    boxes are almost parallel, or the boxes tiny: its sort takes points within 1e-6 (absolute) of
    collinear as equal angles, which can fold the hull (IoU 3.0 for two nearly equal boxes).
    Those pairs always go through the kernel. The bound is taken on the boxes as far as the
    kernel's EPS reaches (``_reach``), the union on their true areas.
    """
    t1 = b1[:, 4] * _DEG2RAD
    t2 = b2[:, 4] * _DEG2RAD
    # unit axes of each box, in the vertex convention of the kernel: u = (c, -s), v = (s, c)
    c1, s1, c2, s2 = torch.cos(t1), torch.sin(t1), torch.cos(t2), torch.sin(t2)
    dx, dy = b2[:, 0] - b1[:, 0], b2[:, 1] - b1[:, 1]
    a1, h1, a2, h2 = _reach(b1[:, 2]), _reach(b1[:, 3]), _reach(b2[:, 2]), _reach(b2[:, 3])
    cd = (c1 * c2 + s1 * s2).abs()  # |cos(t1 - t2)|
    sd = (s1 * c2 - c1 * s2).abs()  # |sin(t1 - t2)|
    u1, v1 = dx * c1 - dy * s1, dx * s1 + dy * c1  # the centres' offset along box 1's axes
    u2, v2 = dx * c2 - dy * s2, dx * s2 + dy * c2  # ... and along box 2's
    eu1, ev1 = a2 * cd + h2 * sd, a2 * sd + h2 * cd  # half extents of box 2 along box 1's axes
    eu2, ev2 = a1 * cd + h1 * sd, a1 * sd + h1 * cd
    slack = _MARGIN * (dx.abs() + dy.abs() + a1 + h1 + a2 + h2)
    live = ~(
        (u1.abs() > a1 + eu1 + slack)
        | (v1.abs() > h1 + ev1 + slack)
        | (u2.abs() > a2 + eu2 + slack)
        | (v2.abs() > h2 + ev2 + slack)
    )
    if floor is None:
        return live

    def overlap(centre, half, radius):
        return (torch.minimum(radius, centre + half) - torch.maximum(-radius, centre - half)).clamp_min(0)

    # an upper bound of the kernel's intersection (grown boxes), over the true union
    inter = torch.minimum(overlap(u1, eu1, a1) * overlap(v1, ev1, h1), overlap(u2, eu2, a2) * overlap(v2, ev2, h2))
    area1, area2 = (b1[:, 2] * b1[:, 3]).abs(), (b2[:, 2] * b2[:, 3]).abs()
    union = (area1 + area2 - inter).clamp_min(1e-300)
    # |sin(2 (t1 - t2))| < 1e-3: edges within ~0.03 degrees of parallel; a side below 1
    sides = torch.stack([b1[:, 2], b1[:, 3], b2[:, 2], b2[:, 3]]).abs().amin(0)
    exact_only = (2 * cd * sd < 1e-3) | (sides < 1)
    return live & (exact_only | (inter / union >= floor))


def _iou_of_pairs(b1, b2, ii, jj, floor=None):
    """IoU (the kernel's, in their dtype T) of ``b1[ii]`` with ``b2[jj]`` (``_kernel_boxes``).

    Pairs that ``_live_pairs`` skips are 0 without the kernel: their IoU is 0, or with
    ``floor`` set, below ``floor`` (for NMS).
    """
    out = b1.new_zeros(ii.shape[0])
    gdt = _geom_dtype(b1.device)
    chunk = _PAIR_CHUNK_CPU if b1.device.type == "cpu" else _PAIR_CHUNK_GPU
    for s in range(0, ii.shape[0], _MASK_CHUNK):
        p, q = b1[ii[s : s + _MASK_CHUNK]], b2[jj[s : s + _MASK_CHUNK]]
        (sel,) = _live_pairs(p[:, :5].to(gdt), q[:, :5].to(gdt), floor).nonzero(as_tuple=True)
        for c in range(0, sel.shape[0], chunk):
            idx = sel[c : c + chunk]
            out[s + idx] = _kernel_iou(p[idx], q[idx])
    return out


# ----------------------------------------------------------------------------- box_iou_rotated


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU [N, M] (float32) of rotated boxes ``boxes1`` [N, 5] and ``boxes2`` [M, 5].

    detectron2's CPU kernel, bit for bit (see the module docstring): computed in float for
    float32 boxes, returned as float32 like ``box_iou_rotated_cpu``. Boxes whose ``w * h`` is
    below 1e-14 (a zero or one negative side) give 0; a box with both sides negative counts as
    the box of sides |w|, |h|, as in the C++. Float64 boxes, which the compiled op rejects, are
    computed by the same kernel in double (as its nms_rotated does), then rounded to float32.
    Pairs that are clearly apart get 0 without the kernel.
    """
    n, m = boxes1.shape[0], boxes2.shape[0]
    device = boxes1.device
    kdt = _kernel_dtype(boxes1.dtype, device)
    b1 = boxes1.detach().reshape(n, 5).to(kdt)
    b2 = boxes2.detach().to(device=device).reshape(m, 5).to(kdt)
    ious = torch.zeros(n, m, dtype=torch.float32, device=device)
    if n == 0 or m == 0:
        return ious
    gdt = _geom_dtype(device)
    g1, g2 = b1.to(gdt), b2.to(gdt)
    b1, b2 = _kernel_boxes(b1), _kernel_boxes(b2)
    ok1, ok2 = _valid(b1), _valid(b2)
    ext1, ext2 = _axis_aligned_extent(g1), _axis_aligned_extent(g2)
    rows = max(1, _MASK_CHUNK // m)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        sub = slice(r0, r1)
        cand = _overlap_candidates(g1[sub], (ext1[0][sub], ext1[1][sub]), g2, ext2)
        cand &= ok1[sub, None] & ok2[None]
        ii, jj = cand.nonzero(as_tuple=True)
        if ii.numel():
            ious[ii + r0, jj] = _iou_of_pairs(b1[sub], b2, ii, jj).to(torch.float32)
    return ious


# ----------------------------------------------------------------------------- nms_rotated


def _greedy_block(adj, alive):
    """Greedy NMS inside one block: ``adj[i, j]`` (i < j) says i suppresses j if i is kept."""
    adj = adj.cpu().numpy()
    suppressed = ~alive.cpu().numpy()
    kept = []
    for i in range(adj.shape[0]):
        if not suppressed[i]:
            kept.append(i)
            suppressed |= adj[i]
    return kept


def _range_pairs(lo: torch.Tensor, hi: torch.Tensor, budget: int):
    """Yield (row, position) pairs for ``position in [lo[row], hi[row])``, about ``budget`` at a time."""
    cnt = (hi - lo).clamp_min(0)
    csum = cnt.cumsum(0).cpu()
    r0, done = 0, 0
    while r0 < cnt.shape[0]:
        r1 = max(r0 + 1, int(torch.searchsorted(csum, torch.tensor(done + budget), right=True)))
        total = int(csum[r1 - 1]) - done
        if total:
            rows = torch.repeat_interleave(torch.arange(r0, r1, device=lo.device), cnt[r0:r1], output_size=total)
            first = (csum[r0:r1] - done).to(lo.device) - cnt[r0:r1]  # offset of each row's first pair
            pos = lo[rows] + torch.arange(total, device=lo.device) - first[rows - r0]
            yield rows, pos
        done += total
        r0 = r1


def nms_rotated(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS of rotated boxes; int64 indices of the kept boxes, by decreasing score.

    As detectron2's kernels: the IoU of a kept box with a later one is the kernel's (see the
    module docstring; in double for float64 boxes, as its CPU kernel dispatches), of the kept box
    first, and ``iou_threshold`` is a C++ ``float``. A box is dropped when that IoU is
    ``>= iou_threshold`` on every device but CUDA, as ``nms_rotated_cpu.cpp`` does, and when it
    is ``> iou_threshold`` on CUDA, as ``nms_rotated_cuda.cu`` does; so a box whose IoU equals
    the threshold is dropped on CPU and kept on a GPU, with a compiled detectron2 as with this
    one. Equal scores keep their input order (a stable sort).

    Runs in blocks of ``_NMS_BLOCK`` boxes in score order: the greedy pass inside a block needs
    only that block's IoUs, and the boxes a block keeps then suppress all later boxes at once,
    so suppressed boxes are never compared again (as in the C++ loop). Those later boxes are
    found by x-range lookups in the boxes sorted by left edge, so the work grows with the
    number of nearby pairs rather than N^2.
    """
    assert dets.device == scores.device, "dets and scores must be on the same device"
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=dets.device)
    device = dets.device
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    thr = torch.tensor(float(iou_threshold), dtype=torch.float32).item()  # const float iou_threshold
    # CPU kernel: "if (ovr >= iou_threshold) suppressed[j] = 1;"; CUDA kernel: "> iou_threshold".
    strict = device.type in _STRICT_NMS_DEVICES

    def passes(iou):
        return iou > thr if strict else iou >= thr

    if passes(0.0):
        # Every pair passes, even disjoint or degenerate ones (IoU 0): the top box suppresses all.
        return order[:1]
    boxes = dets.detach().reshape(-1, 5).to(_kernel_dtype(dets.dtype, device))[order]
    geo = boxes.to(_geom_dtype(device))
    boxes = _kernel_boxes(boxes)
    n = boxes.shape[0]
    ok = _valid(boxes)
    ex, ey = _axis_aligned_extent(geo)
    # Boxes by left edge; a box overlapping box i in x starts in [left_i - widest, right_i].
    left = torch.where(ok, geo[:, 0] - ex, torch.inf)  # degenerate boxes: never a candidate
    left_sorted, by_left = torch.sort(left)
    widest = float((2 * ex[ok]).max()) if bool(ok.any()) else 0.0
    # Pairs whose exact IoU is below this cannot pass the threshold (kernel rounding: ~1e-6).
    floor = thr * (1 - _MARGIN)

    def above(ii, jj):
        """Whether box ii (kept) suppresses box jj, with the kernel's IoU(box ii, box jj)."""
        return passes(_iou_of_pairs(boxes, boxes, ii, jj, floor))

    removed = ~ok  # a degenerate box has IoU 0 with everything: it neither suppresses nor is suppressed
    keep_sorted = [(~ok).nonzero(as_tuple=True)[0]]
    for s in range(0, n, _NMS_BLOCK):
        e = min(s + _NMS_BLOCK, n)
        blk = torch.arange(s, e, device=device)
        # Within the block: all pairs (a dense [B, B] overlap test is cheap).
        adj = _overlap_candidates(geo[s:e], (ex[s:e], ey[s:e]), geo[s:e], (ex[s:e], ey[s:e])).triu_(1)
        adj &= ok[s:e, None] & ok[None, s:e]
        ii, jj = adj.nonzero(as_tuple=True)
        if ii.numel():
            adj[ii, jj] = above(ii + s, jj + s)
        kept = blk[torch.as_tensor(_greedy_block(adj, ~removed[s:e]), dtype=torch.long, device=device)]
        keep_sorted.append(kept)
        if kept.numel() == 0 or e >= n:
            continue
        # Kept boxes of this block against every later box near them in x.
        lo = torch.searchsorted(left_sorted, geo[kept, 0] - ex[kept] - widest)
        hi = torch.searchsorted(left_sorted, geo[kept, 0] + ex[kept], right=True)
        for rows, pos in _range_pairs(lo, hi, _NMS_PAIR_CHUNK):
            j = by_left[pos]
            live = (j >= e) & ~removed[j]  # cheapest and most selective test first
            i, j = kept[rows[live]], j[live]
            cand = (geo[i, 0] - geo[j, 0]).abs() <= ex[i] + ex[j]
            cand &= (geo[i, 1] - geo[j, 1]).abs() <= ey[i] + ey[j]
            i, j = i[cand], j[cand]
            if i.numel():
                removed[j[above(i, j)]] = True
    keep_sorted = torch.cat(keep_sorted)
    # Degenerate boxes were set aside above; put everything back in score order.
    return order[keep_sorted.sort().values]


def _register_nms_rotated_op():
    """Define ``torch.ops.detectron2.nms_rotated`` (called by detectron2/layers/nms.py).

    Skipped when the op exists already: a second copy of this module, or a compiled detectron2
    loaded in the same process.
    """
    try:
        torch.ops.detectron2.nms_rotated
        return None
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("detectron2", "FRAGMENT")
    lib.define("nms_rotated(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms_rotated", nms_rotated, "CompositeExplicitAutograd")
    if hasattr(torch.library, "register_fake"):

        def _fake(dets, scores, iou_threshold):
            # Data-dependent length: lets torch.compile / export trace through the op.
            n = torch.library.get_ctx().new_dynamic_size()
            return dets.new_empty(n, dtype=torch.long)

        torch.library.register_fake("detectron2::nms_rotated", _fake, lib=lib)
    return lib


# Keeps the registration alive: a Library object unregisters its ops when collected. On
# importlib.reload the module dict still holds the first one, which must stay referenced.
_NMS_LIB = globals().get("_NMS_LIB") or _register_nms_rotated_op()


# ----------------------------------------------------------------------------- ROIAlignRotated


def _roi_samples(rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, height, width, cdt):
    """Yield, per chunk of ROIs, the bilinear taps of all their sampling points, bin by bin.

    Yields ``(k0, k1, rows, weights, bag_sizes)`` for ROIs ``k0:k1``: ``rows`` [E] are flat
    pixel indices (batch * H * W + y * W + x) into the channels-last feature map, ``weights``
    [E] their bilinear weights divided by the bin's sample count, and ``bag_sizes`` [bins] the
    number of consecutive entries that belong to each output bin (4 taps per sampling point).
    Points follow the C++ ``pre_calc_for_bilinear_interpolate``: sample grid, rotation about
    the ROI centre, the -0.5 pixel offset (aligned ROIAlign), zero weight beyond one pixel
    outside the map and clamping to the border within it.
    """
    device = rois.device
    r = rois.detach().to(cdt)
    k = r.shape[0]
    ph_n, pw_n = int(pooled_height), int(pooled_width)
    cw = r[:, 1] * spatial_scale - 0.5
    ch = r[:, 2] * spatial_scale - 0.5
    rw = r[:, 3] * spatial_scale
    rh = r[:, 4] * spatial_scale
    if bool(((rw < 0) | (rh < 0)).any()):
        raise RuntimeError("ROIs in ROIAlignRotated do not have non-negative size!")
    theta = r[:, 5] * (math.pi / 180.0)
    cos_t, sin_t = torch.cos(theta), torch.sin(theta)
    bin_h, bin_w = rh / ph_n, rw / pw_n
    if sampling_ratio > 0:
        grid_h = torch.full((k,), int(sampling_ratio), dtype=torch.long, device=device)
        grid_w = grid_h
    else:  # adaptive: ceil(roi_size / pooled_size) samples per bin, per ROI
        grid_h = torch.ceil(rh / ph_n).long()
        grid_w = torch.ceil(rw / pw_n).long()
    count = (grid_h * grid_w).clamp_min(1).to(cdt)
    per_roi = grid_h * grid_w * (ph_n * pw_n)  # sampling points per ROI
    csum = per_roi.cumsum(0).cpu()
    start = per_roi.cumsum(0) - per_roi
    k0 = 0
    while k0 < k:
        base = int(csum[k0 - 1]) if k0 else 0
        k1 = int(torch.searchsorted(csum, torch.tensor(base + _ROI_CHUNK // 4), right=True))
        k1 = max(k1, k0 + 1)
        total = int(csum[k1 - 1]) - base
        bag_sizes = (4 * grid_h[k0:k1] * grid_w[k0:k1]).repeat_interleave(ph_n * pw_n)
        if total == 0:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            yield k0, k1, empty, empty.to(cdt), bag_sizes
            k0 = k1
            continue
        roi = torch.repeat_interleave(torch.arange(k0, k1, device=device), per_roi[k0:k1], output_size=total)
        local = torch.arange(total, device=device) - (start[roi] - base)
        gh, gw = grid_h[roi], grid_w[roi]
        n_sub = gh * gw
        bin_ = local // n_sub
        sub = local - bin_ * n_sub
        iy, ix = sub // gw, sub % gw
        ph, pw = bin_ // pw_n, bin_ % pw_n
        yy = -rh[roi] / 2 + ph.to(cdt) * bin_h[roi] + (iy.to(cdt) + 0.5) * bin_h[roi] / gh.to(cdt)
        xx = -rw[roi] / 2 + pw.to(cdt) * bin_w[roi] + (ix.to(cdt) + 0.5) * bin_w[roi] / gw.to(cdt)
        c, s = cos_t[roi], sin_t[roi]
        y = yy * c - xx * s + ch[roi]
        x = yy * s + xx * c + cw[roi]
        inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
        y, x = y.clamp_min(0), x.clamp_min(0)
        y_lo, x_lo = y.floor(), x.floor()
        top_y, top_x = y_lo >= height - 1, x_lo >= width - 1
        y_lo = torch.where(top_y, height - 1.0, y_lo)
        x_lo = torch.where(top_x, width - 1.0, x_lo)
        y = torch.where(top_y, y_lo, y)
        x = torch.where(top_x, x_lo, x)
        y_lo_i, x_lo_i = y_lo.long(), x_lo.long()
        y_hi_i = torch.where(top_y, y_lo_i, y_lo_i + 1)
        x_hi_i = torch.where(top_x, x_lo_i, x_lo_i + 1)
        ly, lx = y - y_lo, x - x_lo
        hy, hx = 1 - ly, 1 - lx
        scale = inside.to(cdt) / count[roi]
        weights = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], dim=1) * scale[:, None]
        base_row = r[roi, 0].long() * (height * width)
        rows = torch.stack(
            [y_lo_i * width + x_lo_i, y_lo_i * width + x_hi_i, y_hi_i * width + x_lo_i, y_hi_i * width + x_hi_i], dim=1
        )
        rows = torch.where(inside[:, None], rows + base_row[:, None], 0)
        yield k0, k1, rows.reshape(-1), weights.reshape(-1), bag_sizes
        k0 = k1


def _roi_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _bag_offsets(sizes: torch.Tensor) -> torch.Tensor:
    return sizes.cumsum(0) - sizes


def roi_align_rotated_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    """ROIAlignRotated forward: [K, C, PH, PW] features of ``rois`` [K, 6] (batch, cx, cy, w, h, angle).

    Each output bin is a weighted sum of feature-map pixels: one ``embedding_bag`` call (bags =
    bins, table = the channels-last map) computes them without materialising per-tap values.
    Differentiable with respect to ``input`` by autograd as well.
    """
    n, c, height, width = input.shape
    k = rois.shape[0]
    cdt = _roi_dtype(input.dtype)
    bins_per_roi = pooled_height * pooled_width
    if k * bins_per_roi * c == 0:
        return input.new_zeros(k, c, pooled_height, pooled_width)
    table = input.permute(0, 2, 3, 1).reshape(n * height * width, c).to(cdt)
    parts = []
    for k0, k1, rows, weights, bag_sizes in _roi_samples(
        rois, float(spatial_scale), pooled_height, pooled_width, sampling_ratio, height, width, cdt
    ):
        if rows.numel() == 0:
            parts.append(table.new_zeros((k1 - k0) * bins_per_roi, c))
            continue
        parts.append(F.embedding_bag(rows, table, _bag_offsets(bag_sizes), mode="sum", per_sample_weights=weights))
    out = torch.cat(parts).reshape(k, pooled_height, pooled_width, c).permute(0, 3, 1, 2)
    return out.to(input.dtype).contiguous()


def roi_align_rotated_backward(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio
):
    """ROIAlignRotated backward: gradient [batch_size, channels, height, width] of the input.

    The transpose of the forward's linear map, computed the same way: the taps sorted by pixel
    make one bag per pixel, over the table of output-bin gradients.
    """
    cdt = _roi_dtype(grad.dtype)
    n_pixels = batch_size * height * width
    grad_flat = None
    if grad.numel() and n_pixels:
        bins_per_roi = pooled_height * pooled_width
        g = grad.permute(0, 2, 3, 1).reshape(-1, channels).to(cdt)
        for k0, k1, rows, weights, bag_sizes in _roi_samples(
            rois, float(spatial_scale), pooled_height, pooled_width, sampling_ratio, height, width, cdt
        ):
            if rows.numel() == 0:
                continue
            bins = torch.repeat_interleave(
                torch.arange(k0 * bins_per_roi, k1 * bins_per_roi, device=rows.device),
                bag_sizes,
                output_size=rows.numel(),
            )
            rows, order = torch.sort(rows, stable=True)
            per_pixel = torch.bincount(rows, minlength=n_pixels)
            part = F.embedding_bag(
                bins[order], g, _bag_offsets(per_pixel), mode="sum", per_sample_weights=weights[order]
            )
            grad_flat = part if grad_flat is None else grad_flat.add_(part)
    if grad_flat is None:
        return grad.new_zeros(batch_size, channels, height, width)
    out = grad_flat.reshape(batch_size, height, width, channels).permute(0, 3, 1, 2)
    return out.to(grad.dtype).contiguous()
