"""SemSegBoundaryEvaluator: detectron2's metrics plus Dice and Boundary IoU, against hand-computed values."""
import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from torch.nn import functional as F

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_d2 import add_seg_d2_config
from seg_d2.data.datasets import register_sem_seg_folder
from seg_d2.evaluation import SemSegBoundaryEvaluator, build_evaluator

CLASSES = ["bg", "fg"]


def official_boundary(mask, d):
    """The boundary-iou-api definition: mask minus its d-fold 3x3 erosion, image border as background."""
    padded = cv2.copyMakeBorder(mask.astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1:-1, 1:-1]
    return (mask.astype(np.uint8) - eroded) > 0


@pytest.fixture
def dataset(tmp_path):
    """Two 40x40 images; label maps as .npy, the second with an ignored band."""
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    gts = []
    for i in range(2):
        gt = np.zeros((40, 40), np.uint8)
        gt[8:30, 10 + i : 32] = 1
        if i == 1:
            gt[:, 36:] = 255
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), np.zeros((40, 40, 3), np.uint8))
        np.save(tmp_path / "gt" / f"{i}.npy", gt)
        gts.append(gt)
    name = f"test_sem_seg_eval_{tmp_path.name}"
    register_sem_seg_folder(name, str(tmp_path / "img"), str(tmp_path / "gt"), CLASSES)
    yield name, gts, [str(tmp_path / "img" / f"{i}.png") for i in range(2)]
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def run(name, preds, files, output_dir=None):
    ev = SemSegBoundaryEvaluator(name, distributed=False, output_dir=output_dir)
    ev.reset()
    for pred, f in zip(preds, files):
        logits = F.one_hot(torch.as_tensor(pred, dtype=torch.long), 2).permute(2, 0, 1).float()
        ev.process([{"file_name": f}], [{"sem_seg": logits}])
    return ev.evaluate()["sem_seg"]


def test_perfect_prediction(dataset, tmp_path):
    name, gts, files = dataset
    preds = [np.where(g == 255, 0, g) for g in gts]
    res = run(name, preds, files, output_dir=str(tmp_path / "out"))
    for k in ("mIoU", "fwIoU", "mACC", "pACC", "mDice", "mBoundaryIoU", "IoU-fg", "Dice-fg", "BoundaryIoU-bg"):
        assert res[k] == pytest.approx(100.0), k
    # predictions saved as COCO-format RLE json (detectron2's format), decodable back
    saved = json.loads((tmp_path / "out" / "sem_seg_predictions.json").read_text())
    fg = [s for s in saved if s["file_name"] == files[0] and s["category_id"] == 1][0]
    assert np.array_equal(mask_util.decode(fg["segmentation"]), (preds[0] == 1).astype(np.uint8))


def test_hand_computed_dice_and_boundary_iou(dataset):
    name, gts, files = dataset
    preds = []
    for g in gts:
        p = np.zeros((40, 40), np.int64)
        p[10:30, 12:34] = 1  # shifted and resized
        p[g == 255] = 1  # wrong where ignored: must not count
        preds.append(p)
    res = run(name, preds, files)

    valid = [g != 255 for g in gts]
    d = max(1, int(round(0.02 * np.sqrt(40 ** 2 + 40 ** 2))))
    for c, cname in enumerate(CLASSES):
        tp = sum(((p == c) & (g == c) & v).sum() for p, g, v in zip(preds, gts, valid))
        fp = sum(((p == c) & (g != c) & v).sum() for p, g, v in zip(preds, gts, valid))
        fn = sum(((p != c) & (g == c) & v).sum() for p, g, v in zip(preds, gts, valid))
        assert res[f"IoU-{cname}"] == pytest.approx(100 * tp / (tp + fp + fn))
        assert res[f"Dice-{cname}"] == pytest.approx(100 * 2 * tp / (2 * tp + fp + fn))
        inter = union = 0
        for p, g, v in zip(preds, gts, valid):
            gb, pb = official_boundary((g == c) | ~v, d) & v, official_boundary((p == c) | ~v, d) & v
            inter += (gb & pb).sum()
            union += (gb | pb).sum()
        assert res[f"BoundaryIoU-{cname}"] == pytest.approx(100 * inter / union)
    assert res["mDice"] == pytest.approx((res["Dice-bg"] + res["Dice-fg"]) / 2)
    assert res["mBoundaryIoU"] == pytest.approx((res["BoundaryIoU-bg"] + res["BoundaryIoU-fg"]) / 2)
    assert res["mBoundaryIoU"] < res["mIoU"]  # boundaries are where a shifted mask is wrong


def test_build_evaluator_uses_it(dataset):
    name, _, _ = dataset
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    assert isinstance(build_evaluator(cfg, name, "/tmp/unused"), SemSegBoundaryEvaluator)
