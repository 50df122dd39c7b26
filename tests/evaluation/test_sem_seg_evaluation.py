"""SemSegBoundaryEvaluator: detectron2's metrics plus Dice and Boundary IoU, against hand-computed values."""
import json
import re

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


# --- one class set for mIoU, mDice and mBoundaryIoU; parity with detectron2; guards ---

FOUR = ["bg", "a", "b", "c"]  # in the small case below: "b" only predicted, "c" absent from both


@pytest.fixture
def register(tmp_path):
    """register(gts, classes) -> (name, files): a sem_seg dataset of PNG label maps (255 = ignore)."""
    names = []

    def _register(gts, classes, ignore_label=255):
        name = f"test_sem_seg_eval_png_{tmp_path.name}_{len(names)}"
        records = []
        for i, gt in enumerate(gts):
            gt_file = tmp_path / f"{name}_{i}.png"
            cv2.imwrite(str(gt_file), gt.astype(np.uint8))
            records.append({"file_name": str(tmp_path / f"{name}_{i}.jpg"), "sem_seg_file_name": str(gt_file),
                            "height": gt.shape[0], "width": gt.shape[1]})
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(stuff_classes=list(classes), ignore_label=ignore_label, evaluator_type="sem_seg")
        names.append(name)
        return name, [r["file_name"] for r in records]

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def one_hot(pred, num_classes):
    return F.one_hot(torch.as_tensor(pred, dtype=torch.long), num_classes).permute(2, 0, 1).float()


def evaluate(evaluator, files, outputs):
    evaluator.reset()
    for f, out in zip(files, outputs):
        evaluator.process([{"file_name": f}], [{"sem_seg": out}])
    return evaluator.evaluate()["sem_seg"]


def small_case():
    """10x10 (band width d = 1): "a" a 4x4 block predicted exactly, "b" a 2x2 block predicted on
    background, the last column ignored (and predicted "b": don't care)."""
    gt = np.zeros((10, 10), np.uint8)
    gt[2:6, 2:6] = 1
    gt[:, 9] = 255
    pred = np.where(gt == 255, 2, gt).astype(np.int64)
    pred[7:9, 7:9] = 2
    return gt, pred


def test_miou_mdice_and_mboundaryiou_average_over_the_same_classes(register):
    """By hand. Valid pixels 90: "a" 16 (all right), "bg" 74 in the ground truth, 70 predicted.
    Boundary bands (d = 1, image border = background, ignored column = don't care):
    "a": its 4x4 block minus the inner 2x2 = 12 px, same in both; "bg": rows 0 and 9 (9 px each),
    column 0 (8 more), the ring around "a" (20) = 46 px, and the prediction adds the 4 pixels
    around "b" not already counted = 50 px; "b": 4 px predicted, none in the ground truth."""
    gt, pred = small_case()
    name, files = register([gt], FOUR)
    res = evaluate(SemSegBoundaryEvaluator(name, distributed=False), files, [one_hot(pred, 4)])
    # the classes present in the ground truth or predicted: bg, a, b ("b" scores 0); "c" is NaN
    assert res["mIoU"] == pytest.approx(100 * (70 / 74 + 1 + 0) / 3)
    assert res["Dice-bg"] == pytest.approx(100 * 140 / 144) and res["Dice-a"] == pytest.approx(100)
    assert res["Dice-b"] == 0 and np.isnan(res["Dice-c"])
    assert res["mDice"] == pytest.approx(100 * (140 / 144 + 1 + 0) / 3)
    assert res["BoundaryIoU-bg"] == pytest.approx(100 * 46 / 50) and res["BoundaryIoU-a"] == pytest.approx(100)
    assert res["BoundaryIoU-b"] == 0 and np.isnan(res["BoundaryIoU-c"])
    assert res["mBoundaryIoU"] == pytest.approx(100 * (46 / 50 + 1 + 0) / 3)


def pixelwise_metrics(gts, preds, classes, ignore=255):
    """The metrics straight from their definitions, pixel set by pixel set (no confusion matrix): for each
    class, the sets of labelled pixels where it is true and where it is predicted, over all images."""
    gt = np.concatenate([g.ravel() for g in gts]).astype(np.int64)
    pred = np.concatenate([p.ravel() for p in preds]).astype(np.int64)
    pred, gt = pred[gt != ignore], gt[gt != ignore]
    res, ious, accs, freq = {}, {}, {}, {}
    for c, name in enumerate(classes):
        t, p = gt == c, pred == c
        if t.any() or p.any():
            ious[name] = (t & p).sum() / (t | p).sum()
        if t.any():
            accs[name] = (t & p).sum() / t.sum()
            freq[name] = t.sum() / gt.size
    res["mIoU"] = 100 * np.mean(list(ious.values()))
    res["fwIoU"] = 100 * sum(ious[k] * freq[k] for k in freq)
    res["mACC"] = 100 * np.mean(list(accs.values()))
    res["pACC"] = 100 * (gt == pred).mean()
    for name in classes:
        res[f"IoU-{name}"] = 100 * ious.get(name, np.nan)
        res[f"ACC-{name}"] = 100 * accs.get(name, np.nan)
    return res


def test_same_metrics_as_their_definitions_and_detectron2(register):
    """Random label maps: every metric equals its definition computed pixel by pixel; those whose definition
    is the same in detectron2 v0.6 and main (fwIoU, mACC, pACC, per-class ACC, IoU of the ground truth's
    classes) also equal detectron2's SemSegEvaluator on whichever detectron2 runs this."""
    from detectron2.evaluation import SemSegEvaluator

    rng = np.random.default_rng(0)
    gt0, pred0 = small_case()
    gts, preds = [gt0], [pred0]
    for _ in range(2):  # random blocks of bg/a, some ignored; predictions of bg/a/b, some random
        gt = cv2.resize(rng.choice([0, 0, 1, 255], (4, 5)).astype(np.uint8), (25, 20),
                        interpolation=cv2.INTER_NEAREST)
        pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, 3, gt.shape), np.where(gt == 255, 0, gt))
        gts.append(gt)
        preds.append(pred)
    name, files = register(gts, FOUR)
    outputs = [one_hot(p, 4) for p in preds]
    ours = evaluate(SemSegBoundaryEvaluator(name, distributed=False), files, outputs)
    expected = pixelwise_metrics(gts, preds, FOUR)
    for k, v in expected.items():
        assert ours[k] == pytest.approx(v, nan_ok=True), k
    assert ours["IoU-b"] == 0 and ours["Dice-b"] == 0  # "b": only predicted, counted in the means as 0
    assert np.isnan(ours["IoU-c"]) and np.isnan(ours["ACC-c"]) and np.isnan(ours["Dice-c"])  # "c": in neither
    theirs = evaluate(SemSegEvaluator(name, distributed=False), files, outputs)
    for k in ["fwIoU", "mACC", "pACC", "IoU-bg", "IoU-a"] + [f"ACC-{c}" for c in FOUR]:
        assert ours[k] == pytest.approx(theirs[k], nan_ok=True), k


def official_semantic_boundary_counts(gt, pred, num_classes, d, ignore=255):
    """Per-class band intersection and union, one class at a time with the boundary-iou-api's erosion;
    ignored pixels join both masks ("don't care") and are then left out."""
    v = gt != ignore
    inter, union = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for c in range(num_classes):
        gb = official_boundary((gt == c) | ~v, d) & v & (gt == c)
        pb = official_boundary((pred == c) | ~v, d) & v & (pred == c)
        inter[c], union[c] = (gb & pb).sum(), (gb | pb).sum()
    return inter, union


@pytest.mark.parametrize("ratio", [0.02, 0.06])
def test_boundary_iou_of_random_label_maps_as_the_official_band(register, ratio):
    """All classes' bands from one pass of seg_d2.layers.boundary_band: the per-class numbers of the
    official per-class erosion (which the evaluator used before), with ignored regions, some on the border."""
    rng = np.random.default_rng(1)
    classes = ["k0", "k1", "k2", "k3", "k4"]
    gts, preds = [], []
    for h, w in [(37, 53), (60, 41), (50, 50)]:
        gt = np.zeros((h, w), np.uint8)
        for _ in range(8):
            cv2.circle(gt, tuple(int(v) for v in rng.integers(0, [w, h])), int(rng.integers(3, 15)),
                       int(rng.choice([1, 2, 3, 4, 255])), -1)
        pred = gt.astype(np.int64)
        pred[gt == 255] = rng.integers(0, 5, (gt == 255).sum())
        shift = np.roll(pred, int(rng.integers(-3, 4)), axis=int(rng.integers(0, 2)))
        pred = np.where(rng.random(gt.shape) < 0.9, shift, rng.integers(0, 5, gt.shape))
        gts.append(gt)
        preds.append(pred)
    name, files = register(gts, classes)
    ev = SemSegBoundaryEvaluator(name, distributed=False, dilation_ratio=ratio)
    res = evaluate(ev, files, [one_hot(p, 5) for p in preds])
    inter, union = np.zeros(5, np.int64), np.zeros(5, np.int64)
    for gt, pred in zip(gts, preds):
        d = max(1, int(round(ratio * np.hypot(*gt.shape))))
        i, u = official_semantic_boundary_counts(gt, pred, 5, d)
        inter, union = inter + i, union + u
    assert (union > 0).all()
    for c, cname in enumerate(classes):
        assert res[f"BoundaryIoU-{cname}"] == pytest.approx(100 * inter[c] / union[c]), cname


def test_a_class_whose_every_edge_is_ignored_scores_its_mask_iou(register):
    """No boundary pixel at all (an island of "fg" inside an ignored region): as the band widens,
    Boundary IoU becomes the mask IoU, so that is its value, and the class keeps its place in the mean."""
    gt = np.full((30, 30), 255, np.uint8)
    gt[13:17, 13:17] = 1
    name, files = register([gt], CLASSES)
    right = evaluate(SemSegBoundaryEvaluator(name, distributed=False), files, [one_hot(np.ones((30, 30)), 2)])
    assert right["BoundaryIoU-fg"] == pytest.approx(100) and np.isnan(right["BoundaryIoU-bg"])
    assert right["mBoundaryIoU"] == pytest.approx(100)
    wrong = evaluate(SemSegBoundaryEvaluator(name, distributed=False), files, [one_hot(np.zeros((30, 30)), 2)])
    assert wrong["BoundaryIoU-fg"] == 0 and wrong["BoundaryIoU-bg"] == 0 and wrong["mBoundaryIoU"] == 0
    assert wrong["mIoU"] == 0


def test_binary_model_with_one_foreground_logit(register):
    gt, _ = small_case()
    gt = np.where(gt == 255, 255, gt > 0).astype(np.uint8)
    name, files = register([gt], CLASSES)
    pred = np.zeros((10, 10), np.int64)
    pred[2:6, 3:7] = 1
    logit = torch.where(torch.as_tensor(pred) > 0, 2.0, -3.0)[None]  # (1, H, W), foreground iff > 0
    res = evaluate(SemSegBoundaryEvaluator(name, distributed=False), files, [logit])
    assert res == evaluate(SemSegBoundaryEvaluator(name, distributed=False), files, [one_hot(pred, 2)])
    assert res["IoU-fg"] == pytest.approx(100 * 12 / 20)


@pytest.mark.parametrize("channels", [1, 2, 4, 5])
def test_output_channels_must_match_the_dataset_classes(register, channels):
    gt, pred = small_case()
    name, files = register([np.where(gt == 1, 2, gt)], ["bg", "a", "b"])
    out = one_hot(np.minimum(pred, channels - 1), channels)
    out[-1, 0, 0] = 10  # a pixel predicted as the last channel
    with pytest.raises(ValueError, match=rf"(?s){name}.*3 classes.*'bg', 'a', 'b'.*\({channels}, 10, 10\)"
                                         r".*MODEL\.SEM_SEG_HEAD\.NUM_CLASSES to 3"):
        evaluate(SemSegBoundaryEvaluator(name, distributed=False), files, [out])


@pytest.mark.parametrize("value", [2, 3, 200])
def test_ground_truth_values_past_the_classes_are_an_error(register, value):
    gt, pred = small_case()
    gt[0, :3] = value
    name, files = register([gt], CLASSES)
    gt_file = DatasetCatalog.get(name)[0]["sem_seg_file_name"]
    with pytest.raises(ValueError, match=rf"{re.escape(gt_file)}.*\[{value}\].*0\.\.1.*255"):
        evaluate(SemSegBoundaryEvaluator(name, distributed=False), files, [one_hot(pred.clip(0, 1), 2)])


# --- the fast paths: detectron2's prediction json, the GPU (torch) path, many classes ---

@pytest.mark.parametrize("dataset_ids", [False, True])
def test_prediction_json_is_detectron2s(register, dataset_ids):
    from detectron2.evaluation import SemSegEvaluator

    rng = np.random.default_rng(2)
    gt = rng.integers(0, 4, (9, 13)).astype(np.uint8)
    name, files = register([gt], FOUR)
    if dataset_ids:
        MetadataCatalog.get(name).set(stuff_dataset_id_to_contiguous_id={10: 0, 20: 1, 30: 2, 40: 3})
    pred = rng.integers(0, 4, (9, 13))
    pred[pred == 2] = 1  # a class not predicted
    ours, theirs = SemSegBoundaryEvaluator(name, distributed=False), SemSegEvaluator(name, distributed=False)
    for ev in (ours, theirs):
        ev.reset()
        ev.process([{"file_name": files[0]}], [{"sem_seg": one_hot(pred, 4)}])
    assert ours._predictions == theirs._predictions and len(ours._predictions) == 3
    assert ours.encode_json_sem_seg(pred, "x.png") == theirs.encode_json_sem_seg(pred, "x.png")


def test_torch_path_of_the_gpu_counts_as_the_official_band(register):
    """The histogram computed with torch (the path of a prediction on the GPU), run on CPU tensors."""
    rng = np.random.default_rng(4)
    gt = rng.choice(np.array([0, 1, 2, 255], np.uint8), (6, 8)).repeat(5, 0).repeat(5, 1)
    pred = np.where(rng.random(gt.shape) < 0.1, rng.integers(0, 3, gt.shape), np.where(gt == 255, 0, gt))
    name, files = register([gt], ["a", "b", "c"])
    ev = SemSegBoundaryEvaluator(name, distributed=False)
    gt_n = np.where(gt == 255, 3, gt).astype(np.uint8)
    hist = ev._joint_histogram_torch(torch.as_tensor(pred, dtype=torch.uint8), torch.from_numpy(gt_n))
    assert np.array_equal(hist, ev._joint_histogram(pred.astype(np.uint8), gt_n))
    d = max(1, int(round(0.02 * np.hypot(*gt.shape))))
    inter, union = official_semantic_boundary_counts(gt, pred, 3, d)
    ev.reset()
    ev._accumulate_boundaries(hist)
    assert np.array_equal(ev._b_inter, inter) and np.array_equal(ev._b_union, union)
    expected_conf = np.bincount(4 * pred.reshape(-1) + gt_n.reshape(-1), minlength=16).reshape(4, 4)
    assert np.array_equal(hist.sum(axis=0), expected_conf)


def test_many_classes_and_16_bit_label_maps(tmp_path):
    """300 classes (past uint8: wider labels and keys), 16-bit PNG ground truth, ignore 65535."""
    rng = np.random.default_rng(5)
    n = 300
    gt = rng.integers(0, n, (5, 7)).astype(np.uint16).repeat(6, 0).repeat(6, 1)
    gt[:4, :4] = 65535
    pred = np.where(rng.random(gt.shape) < 0.2, rng.integers(0, n, gt.shape), np.where(gt == 65535, 0, gt))
    cv2.imwrite(str(tmp_path / "gt.png"), gt)
    name = f"test_sem_seg_eval_300_{tmp_path.name}"
    records = [{"file_name": str(tmp_path / "x.jpg"), "sem_seg_file_name": str(tmp_path / "gt.png"),
                "height": gt.shape[0], "width": gt.shape[1]}]
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=[f"k{i}" for i in range(n)], ignore_label=65535)
    try:
        logits = one_hot(pred, n)
        ours = evaluate(SemSegBoundaryEvaluator(name, distributed=False), [records[0]["file_name"]], [logits])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    classes = [f"k{i}" for i in range(n)]
    for k, v in pixelwise_metrics([gt], [pred], classes, ignore=65535).items():
        assert ours[k] == pytest.approx(v, nan_ok=True), k
    d = max(1, int(round(0.02 * np.hypot(*gt.shape))))
    inter, union = official_semantic_boundary_counts(gt.astype(np.int64), pred, n, d, ignore=65535)
    for c in np.flatnonzero(union)[:40]:
        assert ours[f"BoundaryIoU-k{c}"] == pytest.approx(100 * inter[c] / union[c]), c


def test_a_ground_truth_without_labelled_pixels_is_said_and_every_metric_is_nan(register, caplog):
    """Every pixel ignored: detectron2 printed fwIoU 0.000 beside NaN, with only NumPy's "invalid value"
    warning as a hint. Now each metric is NaN and the evaluator names the dataset."""
    import logging
    import warnings

    gts = [np.full((10, 12), 255, np.uint8), np.full((8, 9), 255, np.uint8)]
    name, files = register(gts, CLASSES)
    outputs = [one_hot(np.zeros(g.shape, np.int64), 2) for g in gts]
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy "invalid value encountered" on the way
        res = evaluate(SemSegBoundaryEvaluator(name, distributed=False), files, outputs)
    assert all(np.isnan(v) for v in res.values()), {k: v for k, v in res.items() if not np.isnan(v)}
    assert f"No labelled pixel in the ground truth of '{name}'" in caplog.text
