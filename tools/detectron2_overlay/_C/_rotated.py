"""Rotated-box ops of detectron2._C in pure PyTorch: IoU, NMS and ROIAlignRotated.

Boxes are ``(x_ctr, y_ctr, width, height, angle_degrees)``, the angle counter-clockwise on the
image (y pointing down), exactly as in detectron2's C++ ``box_iou_rotated_utils.h``. Every op is
vectorised torch code that runs on whatever device its inputs are on; geometry is computed in
float64 (float32 on MPS, which has no float64).
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["box_iou_rotated", "nms_rotated", "roi_align_rotated_forward", "roi_align_rotated_backward"]

# Pairs per batch of exact intersections: cache-sized on CPU, large enough to fill a GPU.
_PAIR_CHUNK_CPU = 1 << 12
_PAIR_CHUNK_GPU = 1 << 18
# Elements of the (cheap) bounding-box overlap mask evaluated at once.
_MASK_CHUNK = 1 << 22
# Candidate box pairs (each with ~10 int64 / float64 temporaries) handled at once by NMS.
_NMS_PAIR_CHUNK = 1 << 21
# Boxes resolved per step of the blocked greedy NMS.
_NMS_BLOCK = 256
# Bilinear taps (index + weight) per ROIAlignRotated chunk.
_ROI_CHUNK = 1 << 23


def _geom_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


# ----------------------------------------------------------------------------- geometry helpers


def _corners(cx, cy, w, h, angle):
    """Vertices (xs, ys), each [4, K], of rotated rectangles, counter-clockwise (x right, y up).

    The same vertices as the C++ ``get_rotated_vertices``: local (u, v) -> (c*u + s*v, -s*u + c*v).
    The pair index is the innermost dimension so that every op runs long contiguous loops.
    """
    theta = angle * (math.pi / 180.0)
    c, s = torch.cos(theta), torch.sin(theta)
    u = torch.stack([w, -w, -w, w]) * 0.5
    v = torch.stack([h, h, -h, -h]) * 0.5
    return cx + c * u + s * v, cy - s * u + c * v


def _axis_aligned_extent(boxes: torch.Tensor):
    """Half extents (ex, ey) of the axis-aligned boxes enclosing the rotated ``boxes`` [K, 5]."""
    theta = boxes[:, 4] * (math.pi / 180.0)
    c, s = torch.cos(theta).abs(), torch.sin(theta).abs()
    w, h = boxes[:, 2], boxes[:, 3]
    # A relative margin so that rounding never drops a pair that really overlaps.
    ex = (c * w + s * h) * (0.5 * (1 + 1e-9)) + 1e-12
    ey = (s * w + c * h) * (0.5 * (1 + 1e-9)) + 1e-12
    return ex, ey


def _valid(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes with positive area; the C++ code gives IoU 0 for an area below 1e-14."""
    w, h = boxes[:, 2], boxes[:, 3]
    return (w > 0) & (h > 0) & (w * h >= 1e-14)


def _intersection_area(px, py, qx, qy, tol):
    """Area [K] of the intersection of convex quadrilaterals p and q (vertices [4, K], CCW).

    Green's theorem: the area of a polygon is the sum over its boundary edges of
    cross(a, b) / 2, and the boundary of the intersection is made of the parts of p's edges
    inside q and of q's edges inside p. Each edge is clipped to the other (convex) polygon in
    closed form, as a parameter interval [max of entries, min of exits] over the 4 lines, so
    the work is a fixed number of [4, 4, K] tensor ops with no sorting or compaction.

    Edges lying on a line of the other polygon (within ``tol`` [K], e.g. identical boxes, or
    boxes rotated by multiples of 90 degrees) would be counted twice; such an edge of p counts
    once if both polygons are on the same side of it, and q's copy never counts.
    """
    k = px.shape[1]
    ex, ey = torch.cat([px, qx], 1), torch.cat([py, qy], 1)  # edges of p then of q: [4, 2K]
    lx, ly = torch.cat([qx, px], 1), torch.cat([qy, py], 1)  # ... clipped by the other polygon
    dx, dy = ex.roll(-1, 0) - ex, ey.roll(-1, 0) - ey
    gx, gy = lx.roll(-1, 0) - lx, ly.roll(-1, 0) - ly
    gn = torch.sqrt(gx * gx + gy * gy).clamp_min(1e-300)
    ux, uy = gx / gn, gy / gn  # unit directions of the clipping lines
    # Signed distance (positive = inside, on the left) of each edge's start and end to each
    # line: d[e, f, pair] for edge e and line f.
    d0 = ux[None] * ey[:, None] - uy[None] * ex[:, None] - (ux * ly - uy * lx)[None]
    d1 = d0 + (ux[None] * dy[:, None] - uy[None] * dx[:, None])
    # Where the edge crosses the line; clamped so that an edge outside at both ends gets the
    # empty interval [t, t], and a parallel one (0 denominator) a finite value.
    t = (d0 / (d0 - d1)).clamp(0, 1)
    lo = torch.where(d0 < 0, t, 0.0)
    hi = torch.where(d1 < 0, t, 1.0)
    tol2 = torch.cat([tol, tol])
    on_line = (d0.abs() <= tol2) & (d1.abs() <= tol2)
    # Without a GPU sync where it matters; on CPU the check is free and usually skips the fix.
    if on_line.device.type != "cpu" or bool(on_line.any()):
        same_side = (ux[None] * dx[:, None] + uy[None] * dy[:, None]) > 0
        own = torch.arange(2 * k, device=px.device) < k
        lo = torch.where(on_line, 0.0, lo)
        hi = torch.where(on_line, (same_side & own).to(hi.dtype), hi)
    frac = (hi.amin(1) - lo.amax(1)).clamp_min(0)  # [4, 2K]: inside part of each edge
    area = 0.5 * ((ex * dy - ey * dx) * frac).sum(0)
    return (area[:k] + area[k:]).clamp_min(0)


def _paired_iou(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """IoU of aligned pairs of non-degenerate boxes ``b1[i]``, ``b2[i]`` ([K, 5], geometry dtype)."""
    # Work around the pair's mid-point: large image coordinates would otherwise eat the
    # precision of the vertex arithmetic (detectron2 issues #1207, #2154, #2167).
    mx = (b1[:, 0] + b2[:, 0]) * 0.5
    my = (b1[:, 1] + b2[:, 1]) * 0.5
    px, py = _corners(b1[:, 0] - mx, b1[:, 1] - my, b1[:, 2], b1[:, 3], b1[:, 4])
    qx, qy = _corners(b2[:, 0] - mx, b2[:, 1] - my, b2[:, 2], b2[:, 3], b2[:, 4])
    # Coordinates are bounded by this; 1e-9 of it is far below float32 resolution of the IoU
    # and far above float64 rounding noise.
    extent = (b1[:, 0] - mx).abs() + (b1[:, 1] - my).abs() + b1[:, 2] + b1[:, 3] + b2[:, 2] + b2[:, 3]
    inter = _intersection_area(px, py, qx, qy, extent * 1e-9)
    area1 = b1[:, 2] * b1[:, 3]
    area2 = b2[:, 2] * b2[:, 3]
    union = (area1 + area2 - inter).clamp_min(1e-300)
    return (inter / union).clamp(0, 1)


def _overlap_candidates(b1, ext1, b2, ext2):
    """Boolean [len(b1), len(b2)]: pairs whose axis-aligned enclosing boxes overlap."""
    ex1, ey1 = ext1
    ex2, ey2 = ext2
    dx = (b1[:, None, 0] - b2[None, :, 0]).abs()
    dy = (b1[:, None, 1] - b2[None, :, 1]).abs()
    return (dx <= ex1[:, None] + ex2[None]) & (dy <= ey1[:, None] + ey2[None])


def _separated(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Pairs of rotated rectangles ``b1[i]``, ``b2[i]`` that provably do not overlap.

    Separating-axis test on the 4 edge normals: a few dozen flops per pair, and exact for
    rectangles (far tighter than enclosing boxes for thin or rotated ones), so only really
    overlapping pairs go through the exact intersection.
    """
    t1 = b1[:, 4] * (math.pi / 180.0)
    t2 = b2[:, 4] * (math.pi / 180.0)
    # unit axes of each box, in the vertex convention of _corners: u = (c, -s), v = (s, c)
    c1, s1, c2, s2 = torch.cos(t1), torch.sin(t1), torch.cos(t2), torch.sin(t2)
    dx, dy = b2[:, 0] - b1[:, 0], b2[:, 1] - b1[:, 1]
    a1, h1, a2, h2 = b1[:, 2] * 0.5, b1[:, 3] * 0.5, b2[:, 2] * 0.5, b2[:, 3] * 0.5
    cd = (c1 * c2 + s1 * s2).abs()  # |cos(t1 - t2)|
    sd = (s1 * c2 - c1 * s2).abs()  # |sin(t1 - t2)|
    # Radii get a relative margin: a pair this close only touches (zero area) anyway.
    m = 1 + 1e-9
    return (
        ((dx * c1 - dy * s1).abs() > (a1 + a2 * cd + h2 * sd) * m)
        | ((dx * s1 + dy * c1).abs() > (h1 + a2 * sd + h2 * cd) * m)
        | ((dx * c2 - dy * s2).abs() > (a2 + a1 * cd + h1 * sd) * m)
        | ((dx * s2 + dy * c2).abs() > (h2 + a1 * sd + h1 * cd) * m)
    )


def _iou_of_pairs(b1, b2, ii, jj, floor=None):
    """IoU of ``b1[ii]`` with ``b2[jj]``.

    Pairs that do not overlap are 0 without the exact computation; with ``floor`` set, so are
    pairs whose IoU cannot exceed it (IoU <= smaller area / larger area), for NMS, which only
    asks whether IoU > threshold.
    """
    out = b1.new_zeros(ii.shape[0])
    chunk = _PAIR_CHUNK_CPU if b1.device.type == "cpu" else _PAIR_CHUNK_GPU
    for s in range(0, ii.shape[0], _MASK_CHUNK):
        p, q = b1[ii[s : s + _MASK_CHUNK]], b2[jj[s : s + _MASK_CHUNK]]
        live = ~_separated(p, q)
        if floor is not None:
            area1, area2 = p[:, 2] * p[:, 3], q[:, 2] * q[:, 3]
            live &= torch.minimum(area1, area2) >= torch.maximum(area1, area2) * floor
        (sel,) = live.nonzero(as_tuple=True)
        for c in range(0, sel.shape[0], chunk):
            idx = sel[c : c + chunk]
            out[s + idx] = _paired_iou(p[idx], q[idx])
    return out


# ----------------------------------------------------------------------------- box_iou_rotated


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU [N, M] of rotated boxes ``boxes1`` [N, 5] and ``boxes2`` [M, 5].

    Exact convex-polygon intersection (no sampling). Pairs whose enclosing axis-aligned boxes do
    not overlap, and degenerate boxes (width or height <= 0, area < 1e-14), get 0 without being
    clipped. Returned in the dtype of ``boxes1``.
    """
    n, m = boxes1.shape[0], boxes2.shape[0]
    gdt = _geom_dtype(boxes1.device)
    b1 = boxes1.detach().to(gdt).reshape(n, 5)
    b2 = boxes2.detach().to(device=boxes1.device, dtype=gdt).reshape(m, 5)
    ious = b1.new_zeros(n, m)
    if n == 0 or m == 0:
        return ious.to(boxes1.dtype)
    ok1, ok2 = _valid(b1), _valid(b2)
    ext1, ext2 = _axis_aligned_extent(b1), _axis_aligned_extent(b2)
    rows = max(1, _MASK_CHUNK // m)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        sub = slice(r0, r1)
        cand = _overlap_candidates(b1[sub], (ext1[0][sub], ext1[1][sub]), b2, ext2)
        cand &= ok1[sub, None] & ok2[None]
        ii, jj = cand.nonzero(as_tuple=True)
        if ii.numel():
            ious[ii + r0, jj] = _iou_of_pairs(b1[sub], b2, ii, jj)
    return ious.to(boxes1.dtype)


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

    A box is dropped when its IoU with a kept, higher-scored box is > ``iou_threshold``. Equal
    scores keep their input order (a stable sort), as torchvision.ops.nms does.

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
    gdt = _geom_dtype(device)
    boxes = dets.detach().to(gdt).reshape(-1, 5)[order]
    n = boxes.shape[0]
    ok = _valid(boxes)
    ex, ey = _axis_aligned_extent(boxes)
    thr_dtype = dets.dtype if dets.dtype.is_floating_point else torch.float32
    # Boxes by left edge; a box overlapping box i in x starts in [left_i - widest, right_i].
    left = torch.where(ok, boxes[:, 0] - ex, torch.inf)  # degenerate boxes: never a candidate
    left_sorted, by_left = torch.sort(left)
    widest = float((2 * ex[ok]).max()) if bool(ok.any()) else 0.0

    def above(ii, jj):
        """IoU(box ii, box jj) > threshold, compared in the boxes' dtype as the C++ kernel does."""
        # the floor only skips pairs that provably cannot pass the threshold test
        floor = max(float(iou_threshold) * (1 - 1e-6) - 1e-7, 0.0)
        return _iou_of_pairs(boxes, boxes, ii, jj, floor).to(thr_dtype) > iou_threshold

    removed = ~ok  # a degenerate box has IoU 0 with everything: it neither suppresses nor is suppressed
    keep_sorted = [(~ok).nonzero(as_tuple=True)[0]]
    for s in range(0, n, _NMS_BLOCK):
        e = min(s + _NMS_BLOCK, n)
        blk = torch.arange(s, e, device=device)
        # Within the block: all pairs (a dense [B, B] overlap test is cheap).
        adj = _overlap_candidates(boxes[s:e], (ex[s:e], ey[s:e]), boxes[s:e], (ex[s:e], ey[s:e])).triu_(1)
        adj &= ok[s:e, None] & ok[None, s:e]
        ii, jj = adj.nonzero(as_tuple=True)
        if ii.numel():
            adj[ii, jj] = above(ii + s, jj + s)
        kept = blk[torch.as_tensor(_greedy_block(adj, ~removed[s:e]), dtype=torch.long, device=device)]
        keep_sorted.append(kept)
        if kept.numel() == 0 or e >= n:
            continue
        # Kept boxes of this block against every later box near them in x.
        lo = torch.searchsorted(left_sorted, boxes[kept, 0] - ex[kept] - widest)
        hi = torch.searchsorted(left_sorted, boxes[kept, 0] + ex[kept], right=True)
        for rows, pos in _range_pairs(lo, hi, _NMS_PAIR_CHUNK):
            j = by_left[pos]
            live = (j >= e) & ~removed[j]  # cheapest and most selective test first
            i, j = kept[rows[live]], j[live]
            cand = (boxes[i, 0] - boxes[j, 0]).abs() <= ex[i] + ex[j]
            cand &= (boxes[i, 1] - boxes[j, 1]).abs() <= ey[i] + ey[j]
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
