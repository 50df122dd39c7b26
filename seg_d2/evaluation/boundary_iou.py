"""Boundary IoU (Cheng 2021) and a COCOeval that computes Boundary AP with it.

Boundary IoU compares only the bands within distance d of each mask's contour,
d = ``dilation_ratio`` (2%) of the image diagonal. As in the official boundary-iou-api
(bowenc0221/boundary-iou-api, ``coco_instance_api/cocoeval.py``), Boundary AP matches detections
with ``min(mask IoU, boundary IoU)`` (crowd ground truth keeps the mask IoU), so that a mask must be
right both in area and along its contour; everything else is COCOeval's, unchanged.
"""
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


def _rle_boundary(rle: dict, dilation_ratio: float) -> dict:
    return mask_util.encode(np.asfortranarray(mask_to_boundary(mask_util.decode(rle), dilation_ratio)))


class BoundaryIoUMixin:
    """Turns a COCOeval for iouType "segm" into one for Boundary AP.

    Only ``computeIoU`` changes, so it mixes into pycocotools' COCOeval as into detectron2's
    fast COCOeval_opt (which calls ``computeIoU`` too): both give the same numbers.
    Boundaries are computed once per annotation and kept in the annotation dict.
    """

    dilation_ratio = 0.02

    def _boundaries(self, anns):
        key = f"boundary@{self.dilation_ratio}"
        for ann in anns:
            if key not in ann:
                ann[key] = _rle_boundary(ann["segmentation"], self.dilation_ratio)
        return [ann[key] for ann in anns]

    def computeIoU(self, imgId, catId):
        p = self.params
        assert p.iouType == "segm", "Boundary AP is computed on masks (iouType 'segm')"
        if p.useCats:
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        else:
            gt = [g for c in p.catIds for g in self._gts[imgId, c]]
            dt = [d for c in p.catIds for d in self._dts[imgId, c]]
        if len(gt) == 0 and len(dt) == 0:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        iscrowd = [int(g["iscrowd"]) for g in gt]
        mask_ious = mask_util.iou([d["segmentation"] for d in dt], [g["segmentation"] for g in gt], iscrowd)
        if len(gt) == 0 or len(dt) == 0:
            return mask_ious
        boundary_ious = mask_util.iou(self._boundaries(dt), self._boundaries(gt), iscrowd)
        ious = np.array(mask_ious)
        crowd = np.array(iscrowd, bool)
        ious[:, ~crowd] = np.minimum(ious[:, ~crowd], np.asarray(boundary_ious)[:, ~crowd])
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
