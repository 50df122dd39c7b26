"""Boundary IoU (Cheng 2021) and a COCOeval that computes Boundary AP with it.

Boundary IoU compares only the bands within distance d of each mask's contour,
d = ``dilation_ratio`` (2%) of the image diagonal. As in the official boundary-iou-api
(bowenc0221/boundary-iou-api, ``coco_instance_api/cocoeval.py``), Boundary AP matches detections
with ``min(mask IoU, boundary IoU)`` (crowd ground truth keeps the mask IoU), so that a mask must be
right both in area and along its contour; everything else is COCOeval's, unchanged.
"""
import cv2
import numpy as np
import pycocotools.mask as mask_util
from pycocotools.cocoeval import COCOeval

from detectron2.evaluation.coco_evaluation import COCOevalMaxDets
from detectron2.evaluation.fast_eval_api import COCOeval_opt

from ..layers import mask_boundary

__all__ = ["dilation_pixels", "mask_to_boundary", "boundary_iou", "BoundaryCOCOeval", "boundary_cocoeval_class"]


def dilation_pixels(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Band width d in pixels: ``round(dilation_ratio * image diagonal)``, at least 1."""
    return max(1, int(round(dilation_ratio * np.sqrt(height ** 2 + width ** 2))))


def mask_to_boundary(mask: np.ndarray, dilation_ratio: float = 0.02) -> np.ndarray:
    """The boundary band of a binary mask: its pixels within distance d of the background.

    The image border counts as background (a mask cut by the border has a boundary there), as in
    the official implementation (``mask - erode(mask)``, d erosions by a 3x3 square): seg_d2's one
    band, ``seg_d2.layers.mask_boundary``.

    Args:
        mask: (H, W) binary mask.
        dilation_ratio: d as a fraction of the image diagonal.

    Returns:
        (H, W) uint8 mask of the boundary band.
    """
    mask = np.asarray(mask)
    d = dilation_pixels(*mask.shape, dilation_ratio)
    return mask_boundary(mask, d, border_is_boundary=True).astype(np.uint8)


def boundary_iou(gt: np.ndarray, dt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU of two binary masks of the same image: IoU of their boundary bands."""
    g, d = mask_to_boundary(gt, dilation_ratio) > 0, mask_to_boundary(dt, dilation_ratio) > 0
    union = np.logical_or(g, d).sum()
    return float(np.logical_and(g, d).sum() / union) if union else 0.0


def _segmented_cumsum(x: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``x`` restarting wherever the (sorted) ``group`` changes."""
    if x.size == 0:
        return x
    cs = np.cumsum(x)
    first = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
    before = np.concatenate([[0], cs[first[1:] - 1]])
    return cs - np.repeat(before, np.diff(np.concatenate([first, [x.size]])))


def _rle_runs(rles: list) -> tuple:
    """The runs of 1s of compressed COCO RLEs: (rle index, start, stop), as column-major pixel indices.

    All strings are decoded at once as pycocotools' ``rleFrString`` decodes one: 5 bits a character,
    0x20 "more to come", 0x10 the sign of the last, each count from the third on relative to the one
    two before it. Counts alternate runs of 0s and 1s, from 0s.
    """
    strings = [r["counts"].encode() if isinstance(r["counts"], str) else bytes(r["counts"]) for r in rles]
    c = np.frombuffer(b"".join(strings), np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return (np.zeros(0, np.int64),) * 3
    char_rle = np.repeat(np.arange(len(rles)), [len(b) for b in strings])
    last = np.flatnonzero((c & 0x20) == 0)  # the last character of each count
    first = np.concatenate([[0], last[:-1] + 1])
    shift = 5 * (np.arange(c.size) - np.repeat(first, last - first + 1))
    x = np.add.reduceat((c & 0x1F) << shift, first)
    negative = (c[last] & 0x10) != 0
    x[negative] -= np.left_shift(1, shift[last][negative] + 5)
    rle = char_rle[last]
    m = np.arange(x.size) - np.searchsorted(rle, rle)  # index of the count within its RLE
    for parity in (0, 1):  # undo the deltas: two running sums per RLE, over odd and over even m >= 2
        idx = np.flatnonzero((m >= 1) & (m % 2 == parity))
        x[idx] = _segmented_cumsum(x[idx], rle[idx])
    ends = _segmented_cumsum(x, rle)
    idx = np.flatnonzero((m[:-1] % 2 == 0) & (rle[1:] == rle[:-1]))  # a run of 0s followed by one of 1s
    keep = ends[idx + 1] > ends[idx]
    return rle[idx][keep], ends[idx][keep], ends[idx + 1][keep]


def _rle_boundaries(rles: list, dilation_ratio: float) -> list:
    """``encode(mask_to_boundary(decode(rle)))`` for COCO RLEs of one image size, on bounding boxes only.

    Each mask is decoded on its bounding box grown by one pixel (clipped to the image), where its band
    is the full image's (as in ``seg_d2.layers.mask_boundary``). The crops, transposed (a row per image
    column) and each with a 0 above and below every column, are stacked into a few canvases separated
    by rows of 0s, so that one erosion per canvas makes every band: a window that leaves a crop meets
    0s, as it meets the 0 ring or the image border (a boundary) in the image. The RLEs are rebuilt from
    the bands' own edges. Costs grow with the boxes' areas, not with the image's.
    """
    if not rles:
        return []
    h, w = rles[0]["size"]
    rles = [mask_util.frPyObjects(r, h, w) if isinstance(r["counts"], list) else r for r in rles]
    k = 2 * dilation_pixels(h, w, dilation_ratio) + 1
    box = mask_util.toBbox(rles).astype(np.int64)  # x, y, width, height
    y0, y1 = np.maximum(box[:, 1] - 1, 0), np.minimum(box[:, 1] + box[:, 3] + 1, h)
    x0, x1 = np.maximum(box[:, 0] - 1, 0), np.minimum(box[:, 0] + box[:, 2] + 1, w)
    run_rle, run_start, run_stop = _rle_runs(rles)
    # Cut runs at column ends: pieces within one column each.
    col_first, col_last = run_start // h, (run_stop - 1) // h
    n_pieces = col_last - col_first + 1
    piece_run = np.repeat(np.arange(run_rle.size), n_pieces)
    col = col_first[piece_run] + np.arange(piece_run.size) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    row_start = np.maximum(run_start[piece_run], col * h) - col * h
    row_stop = np.minimum(run_stop[piece_run], (col + 1) * h) - col * h
    piece_rle = run_rle[piece_run]

    edges_of = [np.zeros(0, np.int64)] * len(rles)
    nonempty = np.flatnonzero(box[:, 2] > 0)
    height = y1 - y0 + 2  # canvas columns of a crop: its rows plus a 0 above and below
    bucket = np.floor(np.log2(np.maximum(height[nonempty], 1))).astype(np.int64)  # similar heights share a canvas
    kernel = np.ones((k, k), np.uint8)
    for b in np.unique(bucket):
        members = nonempty[bucket == b]
        width = int(height[members].max())
        rows = x1[members] - x0[members] + 1  # the crop's columns, then a row of 0s
        offset = np.zeros(len(rles), np.int64)
        offset[members] = np.cumsum(rows) - rows
        total = int(rows.sum())
        sel = np.flatnonzero(np.isin(piece_rle, members))
        r = piece_rle[sel]
        cell = (offset[r] + col[sel] - x0[r]) * width + 1 - y0[r]
        # +1 where a piece starts, -1 past its end (pieces are disjoint: each index once per statement).
        change = np.zeros((total, width), np.int8)
        change.reshape(-1)[cell + row_start[sel]] += 1
        change.reshape(-1)[cell + row_stop[sel]] -= 1
        canvas = np.cumsum(change, dtype=np.int8).view(np.uint8).reshape(total, width)  # each row sums to 0
        eroded = cv2.erode(canvas, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        band = (canvas > eroded).view(np.uint8).reshape(-1)
        pos = np.flatnonzero(band[1:] != band[:-1]) + 1  # alternately starts and stops of runs of 1s
        canvas_row, canvas_col = np.divmod(pos, width)
        owner = members[np.searchsorted(np.cumsum(rows), canvas_row, side="right")]
        edges = (x0[owner] + canvas_row - offset[owner]) * h + y0[owner] + canvas_col - 1
        split = np.searchsorted(owner, members)  # owners come in the order of the members
        for i, e in zip(members, np.split(edges, split[1:])):
            edges_of[i] = e
    out = []
    for e in edges_of:
        # A run down to the bottom of a column and one from the top of the next are one run.
        joined = np.flatnonzero(e[1:] == e[:-1])
        if joined.size:
            e = np.delete(e, np.concatenate([joined, joined + 1]))
        runs = np.diff(np.concatenate([[0], e, [h * w]]))
        if runs.size > 1 and runs[-1] == 0:  # pycocotools ends with the last run, never an empty one
            runs = runs[:-1]
        out.append({"size": [h, w], "counts": runs.tolist()})
    return mask_util.frPyObjects(out, h, w)


def _boundaries_of_images(groups: list, dilation_ratio: float) -> list:
    """:func:`_rle_boundaries` of each group of RLEs (one image's masks), batched by image size."""
    out = []
    for rles in groups:
        by_size = {}
        for i, r in enumerate(rles):
            by_size.setdefault(tuple(r["size"]), []).append(i)
        boundaries = [None] * len(rles)
        for idx in by_size.values():
            for i, b in zip(idx, _rle_boundaries([rles[i] for i in idx], dilation_ratio)):
                boundaries[i] = b
        out.append(boundaries)
    return out


# Below this many masks a process pool costs more than it saves.
POOL_MIN_MASKS = 2000


class BoundaryIoUMixin:
    """Turns a COCOeval for iouType "segm" into one for Boundary AP.

    Only ``computeIoU`` changes (and ``_prepare``, which computes the boundaries it needs), so it mixes
    into pycocotools' COCOeval as into detectron2's fast COCOeval_opt (which calls both too): both give
    the same numbers.
    Boundaries are computed once per annotation (kept in the annotation dict), image by image, on
    the masks' bounding boxes, in ``workers`` processes (0 or 1: in this one), as the official
    boundary-iou-api computes them in a process pool.
    """

    dilation_ratio = 0.02
    workers = 0

    @property
    def _boundary_key(self):
        return f"boundary@{self.dilation_ratio}"

    def _pairs(self, imgId, catId):
        """The ground truths and (best-scored, at most maxDets) detections that computeIoU compares."""
        p = self.params
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        return gt, [dt[i] for i in order][: p.maxDets[-1]]

    def _touching(self, imgId, catId):
        """computeIoU's pairs, their mask IoUs, and which detections / non-crowd ground truths overlap
        some counterpart: only those need a boundary (min(0, boundary IoU) is 0)."""
        gt, dt = self._pairs(imgId, catId)
        iscrowd = [int(g["iscrowd"]) for g in gt]
        mask_ious = mask_util.iou([d["segmentation"] for d in dt], [g["segmentation"] for g in gt], iscrowd)
        if len(gt) == 0 or len(dt) == 0:
            return gt, dt, mask_ious, None, None
        touching = np.asarray(mask_ious) > 0
        touching[:, np.array(iscrowd, bool)] = False  # crowd ground truth keeps the mask IoU
        return gt, dt, mask_ious, touching.any(axis=1), touching.any(axis=0)

    def _prepare(self):
        super()._prepare()
        p = self.params
        assert p.iouType == "segm", "Boundary AP is computed on masks (iouType 'segm')"
        key = self._boundary_key
        self._touching_cache = {}
        todo = {}  # image -> annotations whose boundary computeIoU will need
        for img in p.imgIds:
            for cat in p.catIds if p.useCats else [-1]:
                pairs = self._touching_cache[img, cat] = self._touching(img, cat)
                gt, dt, _, dt_touch, gt_touch = pairs
                if dt_touch is not None:
                    need = [a for a, t in zip(dt, dt_touch) if t] + [a for a, t in zip(gt, gt_touch) if t]
                    todo.setdefault(img, {}).update((id(a), a) for a in need if key not in a)
        groups = [list(anns.values()) for anns in todo.values() if anns]
        rles = [[a["segmentation"] for a in anns] for anns in groups]
        n_masks = sum(len(r) for r in rles)
        if self.workers > 1 and n_masks >= POOL_MIN_MASKS:
            import multiprocessing as mp

            # fork: the workers need no imports (the official api uses a Pool the same way). OpenCV's
            # threads do not survive a fork: the workers are forked with them off (and then run serially).
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else None)
            chunk = max(1, len(rles) // (4 * self.workers))
            threads = cv2.getNumThreads()
            cv2.setNumThreads(0)
            try:
                pool = ctx.Pool(self.workers)
            finally:
                cv2.setNumThreads(threads)
            with pool:
                parts = pool.starmap(_boundaries_of_images,
                                     [(rles[i:i + chunk], self.dilation_ratio) for i in range(0, len(rles), chunk)])
            boundaries = [b for part in parts for b in part]
        else:
            boundaries = _boundaries_of_images(rles, self.dilation_ratio)
        for anns, bs in zip(groups, boundaries):
            for a, b in zip(anns, bs):
                a[key] = b

    def computeIoU(self, imgId, catId):
        pairs = getattr(self, "_touching_cache", {}).pop((imgId, catId), None)
        gt, dt, mask_ious, dt_touch, gt_touch = pairs or self._touching(imgId, catId)
        if len(gt) == 0 and len(dt) == 0:
            return []
        if len(gt) == 0 or len(dt) == 0:
            return mask_ious
        ious = np.array(mask_ious)
        rows, cols = np.flatnonzero(dt_touch), np.flatnonzero(gt_touch)
        if rows.size:
            key = self._boundary_key
            boundary_ious = mask_util.iou([dt[i][key] for i in rows], [gt[j][key] for j in cols], [0] * cols.size)
            block = np.ix_(rows, cols)
            ious[block] = np.minimum(ious[block], np.asarray(boundary_ious).reshape(rows.size, cols.size))
        return ious


class BoundaryCOCOeval(BoundaryIoUMixin, COCOeval):
    """pycocotools' COCOeval computing Boundary AP. Use with iouType "segm"."""


class _BoundaryCOCOevalOpt(BoundaryIoUMixin, COCOeval_opt):
    pass


class _BoundaryCOCOevalMaxDets(BoundaryIoUMixin, COCOevalMaxDets):
    pass


def boundary_cocoeval_class(use_fast_impl: bool, custom_max_dets: bool):
    """The Boundary-AP COCOeval class matching detectron2's choice for mask AP."""
    if custom_max_dets:
        return _BoundaryCOCOevalMaxDets
    return _BoundaryCOCOevalOpt if use_fast_impl else BoundaryCOCOeval
