"""Slow, independent reference implementations for the detectron2._C op tests.

Each one is written differently from the op it checks (scalar loops or a different algorithm),
so that agreement means something.
"""

import math

import numpy as np
import torch


# ----------------------------------------------------------------------------- rotated IoU


def rotated_corners(box):
    """The 4 vertices of (cx, cy, w, h, angle_deg), CCW in the (x right, y up) sense."""
    cx, cy, w, h, a = (float(v) for v in box)
    c, s = math.cos(math.radians(a)), math.sin(math.radians(a))
    return [
        (cx + c * u + s * v, cy - s * u + c * v)
        for u, v in ((w / 2, h / 2), (-w / 2, h / 2), (-w / 2, -h / 2), (w / 2, -h / 2))
    ]


def _inside(p, poly, eps=1e-9):
    for i in range(4):
        (ax, ay), (bx, by) = poly[i], poly[(i + 1) % 4]
        if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) < -eps:
            return False
    return True


def _convex_hull(points):
    """Andrew's monotone chain; returns the hull vertices in order."""
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def rotated_iou(b1, b2):
    """IoU of two rotated boxes: candidate points (edge crossings and contained vertices),
    their convex hull, shoelace area; in float64, around the pair's mid-point."""
    b1, b2 = [float(v) for v in b1], [float(v) for v in b2]
    if b1[2] <= 0 or b1[3] <= 0 or b2[2] <= 0 or b2[3] <= 0:
        return 0.0
    mx, my = (b1[0] + b2[0]) / 2, (b1[1] + b2[1]) / 2
    p = rotated_corners([b1[0] - mx, b1[1] - my] + b1[2:])
    q = rotated_corners([b2[0] - mx, b2[1] - my] + b2[2:])
    pts = [v for v in p if _inside(v, q)] + [v for v in q if _inside(v, p)]
    for i in range(4):
        a, b = p[i], p[(i + 1) % 4]
        r = (b[0] - a[0], b[1] - a[1])
        for j in range(4):
            c, d = q[j], q[(j + 1) % 4]
            s = (d[0] - c[0], d[1] - c[1])
            den = r[0] * s[1] - r[1] * s[0]
            if abs(den) < 1e-14:
                continue
            t = ((c[0] - a[0]) * s[1] - (c[1] - a[1]) * s[0]) / den
            u = ((c[0] - a[0]) * r[1] - (c[1] - a[1]) * r[0]) / den
            if 0 <= t <= 1 and 0 <= u <= 1:
                pts.append((a[0] + t * r[0], a[1] + t * r[1]))
    hull = _convex_hull(pts)
    inter = 0.0
    for i in range(len(hull)):
        (x1, y1), (x2, y2) = hull[i], hull[(i + 1) % len(hull)]
        inter += x1 * y2 - x2 * y1
    inter = abs(inter) / 2
    return inter / (b1[2] * b1[3] + b2[2] * b2[3] - inter)


def shapely_iou(b1, b2):
    """IoU of two rotated boxes with shapely (exact polygon overlay, float64); sides taken as
    |w|, |h| (a box with both sides negative is the same rectangle)."""
    from shapely.geometry import Polygon

    p, q = Polygon(rotated_corners(b1)), Polygon(rotated_corners(b2))
    inter = p.intersection(q).area
    return inter / (p.area + q.area - inter)


# ----------------------------------------------------------------------------- the C++ kernel
#
# A scalar, line-by-line transcription of detectron2 v0.6's CPU kernel
# (detectron2/layers/csrc/box_iou_rotated/box_iou_rotated_utils.h, single_box_iou_rotated<T>,
# compiled without FMA as x86-64 wheels are), in numpy float32 scalars (Python floats for
# T = double), with std::sort as libstdc++ implements it. It states what "bit-identical to a
# compiled build" means, one pair at a time.

_F32 = np.float32
_K_EPS = 1e-5  # get_intersection_points' "double EPS = 1e-5" (detectron2 PR #2178, in v0.6)


def _k_vertices(x, y, w, h, a, t):
    theta = float(a) * 0.01745329251  # double theta = box.a * 0.01745329251;
    c = t(t(math.cos(theta)) * t(0.5))  # T cosTheta2 = (T)cos(theta) * 0.5f;
    s = t(t(math.sin(theta)) * t(0.5))
    p0 = (x + s * h + c * w, y + c * h - s * w)
    p1 = (x - s * h + c * w, y - c * h - s * w)
    return [p0, p1, (2 * x - p0[0], 2 * y - p0[1]), (2 * x - p1[0], 2 * y - p1[1])]


def _k_sub(a, b):
    return (a[0] - b[0], a[1] - b[1])


def _k_cross(a, b):
    return a[0] * b[1] - b[0] * a[1]


def _k_dot(a, b):
    return a[0] * b[0] + a[1] * b[1]


def _k_points(pts1, pts2):
    vec1 = [_k_sub(pts1[(i + 1) % 4], pts1[i]) for i in range(4)]
    vec2 = [_k_sub(pts2[(i + 1) % 4], pts2[i]) for i in range(4)]
    out = []
    for i in range(4):
        for j in range(4):
            det = _k_cross(vec2[j], vec1[i])
            if abs(float(det)) <= 1e-14:
                continue
            vec12 = _k_sub(pts2[j], pts1[i])
            t1 = _k_cross(vec2[j], vec12) / det
            t2 = _k_cross(vec1[i], vec12) / det
            # "t1 > -EPS && t1 < 1.0f + EPS && ...": T promoted to double
            if -_K_EPS < float(t1) < 1.0 + _K_EPS and -_K_EPS < float(t2) < 1.0 + _K_EPS:
                out.append((pts1[i][0] + vec1[i][0] * t1, pts1[i][1] + vec1[i][1] * t1))
    for pa, pb, vb in ((pts1, pts2, vec2), (pts2, pts1, vec1)):
        ab, da = vb[0], vb[3]
        ab_ab, ad_ad = _k_dot(ab, ab), _k_dot(da, da)
        for p in pa:
            ap = _k_sub(p, pb[0])
            ap_ab, ap_ad = _k_dot(ap, ab), -_k_dot(ap, da)
            # "APdotAB > -EPS && ... && APdotAB < ABdotAB + EPS && ...", in double
            if -_K_EPS < float(ap_ab) < float(ab_ab) + _K_EPS and -_K_EPS < float(ap_ad) < float(ad_ad) + _K_EPS:
                out.append(p)
    return out


def _k_less(a, b):
    temp = _k_cross(a, b)
    if abs(float(temp)) < 1e-6:
        return _k_dot(a, a) < _k_dot(b, b)
    return temp > 0


def _k_insert(v, i):  # std::__unguarded_linear_insert
    val, j = v[i], i - 1
    while _k_less(val, v[j]):
        v[j + 1] = v[j]
        j -= 1
    v[j + 1] = val


def _k_std_sort(v, first, last):
    """libstdc++ std::sort: introsort down to 16 elements, then insertion sort."""

    def introsort(first, last, depth):
        while last - first > 16:
            assert depth > 0  # heapsort never happens for <= 23 elements
            depth -= 1
            a, b, c = first + 1, first + (last - first) // 2, last - 1  # __move_median_to_first
            if _k_less(v[a], v[b]):
                m = b if _k_less(v[b], v[c]) else (c if _k_less(v[a], v[c]) else a)
            else:
                m = a if _k_less(v[a], v[c]) else (c if _k_less(v[b], v[c]) else b)
            v[first], v[m] = v[m], v[first]
            lo, hi = first + 1, last  # __unguarded_partition
            while True:
                while _k_less(v[lo], v[first]):
                    lo += 1
                hi -= 1
                while _k_less(v[first], v[hi]):
                    hi -= 1
                if not lo < hi:
                    break
                v[lo], v[hi] = v[hi], v[lo]
                lo += 1
            introsort(lo, last, depth)
            last = lo

    if last - first < 2:
        return
    introsort(first, last, 2 * ((last - first).bit_length() - 1))
    for i in range(first + 1, min(last, first + 16)):  # __insertion_sort
        if _k_less(v[i], v[first]):
            v[first + 1 : i + 1], v[first] = v[first:i], v[i]
        else:
            _k_insert(v, i)
    for i in range(first + 16, last):  # __unguarded_insertion_sort
        _k_insert(v, i)


def _k_hull_area(p):
    num = len(p)
    t = 0
    for i in range(1, num):
        if p[i][1] < p[t][1] or (p[i][1] == p[t][1] and p[i][0] < p[t][0]):
            t = i
    q = [_k_sub(pt, p[t]) for pt in p]
    q[0], q[t] = q[t], q[0]
    _k_std_sort(q, 1, num)
    dist = [_k_dot(v, v) for v in q]
    k = 1
    while k < num and not float(dist[k]) > 1e-8:
        k += 1
    if k == num:
        return 0.0
    q[1] = q[k]
    m = 2
    for i in range(k + 1, num):
        while m > 1:
            q1, q2 = _k_sub(q[i], q[m - 2]), _k_sub(q[m - 1], q[m - 2])
            if q1[0] * q2[1] >= q2[0] * q1[1]:
                m -= 1
            else:
                break
        q[m] = q[i]
        m += 1
    if m <= 2:
        return 0.0
    area = q[0][0] * 0  # T zero
    for i in range(1, m - 1):
        area = area + abs(_k_cross(_k_sub(q[i], q[0]), _k_sub(q[i + 1], q[0])))
    return float(area) / 2.0


def kernel_iou(b1, b2, double=False):
    """single_box_iou_rotated<float> (``double``: <double>) of two boxes, as a Python float."""
    t = float if double else _F32
    b1, b2 = [t(float(v)) for v in b1], [t(float(v)) for v in b2]
    shift_x = float(b1[0] + b2[0]) / 2.0  # auto center_shift_x = (box1_raw[0] + box2_raw[0]) / 2.0;
    shift_y = float(b1[1] + b2[1]) / 2.0
    x1, y1 = t(float(b1[0]) - shift_x), t(float(b1[1]) - shift_y)
    x2, y2 = t(float(b2[0]) - shift_x), t(float(b2[1]) - shift_y)
    area1, area2 = b1[2] * b1[3], b2[2] * b2[3]
    if float(area1) < 1e-14 or float(area2) < 1e-14:
        return 0.0
    pts = _k_points(_k_vertices(x1, y1, b1[2], b1[3], b1[4], t), _k_vertices(x2, y2, b2[2], b2[3], b2[4], t))
    inter = t(_k_hull_area(pts)) if len(pts) > 2 else t(0.0)
    return float(inter / (area1 + area2 - inter))


def kernel_iou_matrix(boxes1, boxes2, double=False):
    return torch.tensor(
        [[kernel_iou(p, q, double) for q in boxes2.tolist()] for p in boxes1.tolist()],
        dtype=torch.float64 if double else torch.float32,
    )


def greedy_nms(iou_matrix, scores, threshold, strict=False):
    """Textbook greedy NMS over a precomputed IoU matrix (stable order for equal scores).

    As detectron2's kernels: ``threshold`` is a C++ float, and box j is dropped when its IoU with
    a kept box is ``>= threshold`` (CPU kernel) or ``> threshold`` (``strict``: CUDA kernel).
    """
    ious = iou_matrix.tolist()
    scores = [float(s) for s in scores]
    threshold = float(np.float32(threshold))
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    suppressed, keep = set(), []
    for pos, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        row = ious[i]
        for j in order[pos + 1 :]:
            if row[j] > threshold or (not strict and row[j] == threshold):
                suppressed.add(j)
    return keep


# ----------------------------------------------------------------------------- ROIAlignRotated


def roi_align_rotated(feat, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio):
    """Scalar-loop ROIAlignRotated, following the C++ CPU kernel step by step."""
    n, c, height, width = feat.shape
    out = torch.zeros(len(rois), c, pooled_h, pooled_w, dtype=torch.float64)
    f = feat.double()
    for r, roi in enumerate(rois.tolist()):
        b = int(roi[0])
        cw, ch = roi[1] * spatial_scale - 0.5, roi[2] * spatial_scale - 0.5
        rw, rh = roi[3] * spatial_scale, roi[4] * spatial_scale
        theta = roi[5] * math.pi / 180.0
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        bin_h, bin_w = rh / pooled_h, rw / pooled_w
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / pooled_h)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pooled_w)
        count = max(gh * gw, 1)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                acc = torch.zeros(c, dtype=torch.float64)
                for iy in range(gh):
                    yy = -rh / 2 + ph * bin_h + (iy + 0.5) * bin_h / gh
                    for ix in range(gw):
                        xx = -rw / 2 + pw * bin_w + (ix + 0.5) * bin_w / gw
                        y = yy * cos_t - xx * sin_t + ch
                        x = yy * sin_t + xx * cos_t + cw
                        if y < -1.0 or y > height or x < -1.0 or x > width:
                            continue
                        y, x = max(y, 0.0), max(x, 0.0)
                        y0, x0 = int(y), int(x)
                        if y0 >= height - 1:
                            y0 = y1 = height - 1
                            y = float(y0)
                        else:
                            y1 = y0 + 1
                        if x0 >= width - 1:
                            x0 = x1 = width - 1
                            x = float(x0)
                        else:
                            x1 = x0 + 1
                        ly, lx = y - y0, x - x0
                        hy, hx = 1 - ly, 1 - lx
                        acc += hy * hx * f[b, :, y0, x0] + hy * lx * f[b, :, y0, x1]
                        acc += ly * hx * f[b, :, y1, x0] + ly * lx * f[b, :, y1, x1]
                out[r, :, ph, pw] = acc / count
    return out.to(feat.dtype)


# ----------------------------------------------------------------------------- deformable conv


def _bilinear_zero_outside(img, y, x):
    """Sample img [N, C, H, W] at (y, x) [N, Ho, Wo]: 0 when y <= -1, y >= H (same for x),
    otherwise bilinear with zeros for corners outside the image. Differentiable in all inputs."""
    n, c, h, w = img.shape
    padded = torch.nn.functional.pad(img, (1, 1, 1, 1))  # corner indices -1 and H read zeros
    valid = (y > -1) & (y < h) & (x > -1) & (x < w)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    out = 0
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yi = (y0 + dy + 1).clamp(0, h + 1).long()
            xi = (x0 + dx + 1).clamp(0, w + 1).long()
            idx = (yi * (w + 2) + xi).flatten(1)[:, None, :].expand(n, c, -1)
            vals = padded.flatten(2).gather(2, idx).reshape(n, c, *y.shape[1:])
            out = out + (wy * wx)[:, None] * vals
    return out * valid[:, None]


def deform_conv2d(x, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    """Deformable convolution built from explicit sampling + einsum (no torchvision).

    offset channels: (deformable group, kernel row, kernel col, (dy, dx)); mask channels:
    (deformable group, kernel row, kernel col).
    """
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    n, c, _, _ = x.shape
    o, cg, kh, kw = weight.shape
    groups = c // cg
    dg = offset.shape[1] // (2 * kh * kw)
    ho, wo = offset.shape[2:]
    cpg = c // dg  # input channels per deformable group
    base_y = (torch.arange(ho, dtype=x.dtype) * sh - ph)[:, None]
    base_x = (torch.arange(wo, dtype=x.dtype) * sw - pw)[None, :]
    cols = []  # per kernel position: [N, C, Ho, Wo]
    for i in range(kh):
        for j in range(kw):
            k = i * kw + j
            per_group = []
            for g in range(dg):
                yy = base_y + i * dh + offset[:, g * 2 * kh * kw + 2 * k]
                xx = base_x + j * dw + offset[:, g * 2 * kh * kw + 2 * k + 1]
                v = _bilinear_zero_outside(x[:, g * cpg : (g + 1) * cpg], yy, xx)
                if mask is not None:
                    v = v * mask[:, g * kh * kw + k][:, None]
                per_group.append(v)
            cols.append(torch.cat(per_group, 1))
    cols = torch.stack(cols, 2)  # [N, C, K, Ho, Wo]
    cols = cols.reshape(n, groups, cg, kh * kw, ho, wo)
    w = weight.reshape(groups, o // groups, cg, kh * kw)
    out = torch.einsum("ngckhw,gock->ngohw", cols, w).reshape(n, o, ho, wo)
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out
