"""COCOBoundaryEvaluator: bbox, segm and Boundary AP on a small dataset with non-contiguous category ids."""
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances
from seg_d2 import add_seg_d2_config
from seg_d2.data.datasets import register_coco_dataset
from seg_d2.evaluation import COCOBoundaryEvaluator, build_evaluator
from tests.conftest import COCOEVAL_FAST_ATOL

H, W = 64, 80
CATEGORIES = [{"id": 5, "name": "box"}, {"id": 9, "name": "bar"}]  # not 1..K: mapped to 0, 1


def _square(y, x, h, w):
    m = np.zeros((H, W), np.uint8)
    m[y:y + h, x:x + w] = 1
    return m


# image id -> [(dataset category id, mask, iscrowd)]
OBJECTS = {
    1: [(5, _square(5, 5, 20, 20), 0), (9, _square(30, 40, 10, 30), 0)],
    2: [(9, _square(10, 10, 30, 12), 0), (5, _square(40, 50, 20, 25), 1)],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco_eval")
    images, annotations = [], []
    for img_id, objs in OBJECTS.items():
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / f"{img_id}.png")
        images.append({"id": img_id, "file_name": f"{img_id}.png", "height": H, "width": W})
        for cat, m, crowd in objs:
            rle = mask_util.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode()
            annotations.append({"id": len(annotations) + 1, "image_id": img_id, "category_id": cat, "iscrowd": crowd,
                                "segmentation": rle, "area": float(m.sum()), "bbox": mask_util.toBbox(rle).tolist()})
    (root / "instances.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": CATEGORIES}))
    name = "test_seg_d2_coco_eval_tiny"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_dataset(name, str(root / "instances.json"), str(root))
    DatasetCatalog.get(name)  # loading sets thing_classes and the id mapping
    return name, root


def _predictions(shift=0, scores=(0.9, 0.8)):
    """One output per image: every non-crowd object, masks shifted right by ``shift`` px."""
    id_map = {5: 0, 9: 1}
    inputs, outputs = [], []
    for img_id, objs in OBJECTS.items():
        objs = [(c, np.roll(m, shift, axis=1)) for c, m, crowd in objs if not crowd]
        inst = Instances((H, W))
        masks = torch.tensor(np.stack([m for _, m in objs]), dtype=torch.bool)
        inst.pred_boxes = Boxes(torch.tensor([[x.min(), y.min(), x.max() + 1, y.max() + 1]
                                              for y, x in (np.nonzero(m) for _, m in objs)], dtype=torch.float32))
        inst.scores = torch.tensor(scores[: len(objs)])
        inst.pred_classes = torch.tensor([id_map[c] for c, _ in objs])
        inst.pred_masks = masks
        inputs.append({"image_id": img_id, "height": H, "width": W})
        outputs.append({"instances": inst})
    return inputs, outputs


def _evaluate(name, shift=0, **kwargs):
    evaluator = COCOBoundaryEvaluator(name, distributed=False, **kwargs)
    evaluator.reset()
    evaluator.process(*_predictions(shift))
    return evaluator.evaluate()


def test_perfect_predictions_score_100_everywhere(dataset, tmp_path):
    name, _ = dataset
    res = _evaluate(name, output_dir=str(tmp_path))
    assert set(res) == {"bbox", "segm", "boundary"}
    for task in ("bbox", "segm", "boundary"):
        assert res[task]["AP"] == pytest.approx(100.0), task
        assert res[task]["AP50"] == pytest.approx(100.0) and res[task]["AP75"] == pytest.approx(100.0)
        # per-category table, under the dataset's names (ids 5 and 9 mapped back)
        assert res[task]["AP-box"] == pytest.approx(100.0) and res[task]["AP-bar"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "coco_instances_results.json").read_text())
    assert {r["category_id"] for r in saved} == {5, 9}


def test_boundary_ap_is_stricter_than_mask_ap_on_shifted_masks(dataset):
    name, _ = dataset
    res = _evaluate(name, shift=2)
    assert res["boundary"]["AP"] < res["segm"]["AP"] < 100.0
    assert all(k in res["boundary"] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))


def test_fast_and_pycocotools_paths_give_identical_numbers(dataset):
    name, _ = dataset
    fast, slow = _evaluate(name, shift=2, use_fast_impl=True), _evaluate(name, shift=2, use_fast_impl=False)
    assert set(fast) == set(slow) == {"bbox", "segm", "boundary"}
    for task in fast:
        assert set(fast[task]) == set(slow[task])
        for k, v in fast[task].items():  # identical, NaN (no object of that size) included
            assert v == pytest.approx(slow[task][k], rel=0, abs=100 * COCOEVAL_FAST_ATOL, nan_ok=True), (task, k)


def test_seg_d2_picks_the_boundary_evaluator_for_coco_datasets(dataset, tmp_path):
    name, _ = dataset
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    assert isinstance(build_evaluator(cfg, name, str(tmp_path)), COCOBoundaryEvaluator)


def test_box_only_predictions_report_bbox_only(dataset):
    name, _ = dataset
    inputs, outputs = _predictions()
    for o in outputs:
        o["instances"].remove("pred_masks")
    evaluator = COCOBoundaryEvaluator(name, distributed=False)
    evaluator.reset()
    evaluator.process(inputs, outputs)
    res = evaluator.evaluate()
    assert set(res) == {"bbox"} and res["bbox"]["AP"] == pytest.approx(100.0)


def _outputs(detections):
    """Model outputs from {image id: [(contiguous class, mask, score, mask score or None)]}."""
    inputs, outputs = [], []
    for img_id, dets in detections.items():
        inst = Instances((H, W))
        masks = np.stack([m for _, m, _, _ in dets])
        inst.pred_boxes = Boxes(torch.tensor([[x.min(), y.min(), x.max() + 1, y.max() + 1]
                                              for y, x in (np.nonzero(m) for m in masks)], dtype=torch.float32))
        inst.pred_classes = torch.tensor([c for c, _, _, _ in dets])
        inst.scores = torch.tensor([s for _, _, s, _ in dets])
        inst.pred_masks = torch.tensor(masks, dtype=torch.bool)
        if dets[0][3] is not None:
            inst.mask_scores = torch.tensor([ms for _, _, _, ms in dets])
        inputs.append({"image_id": img_id, "height": H, "width": W})
        outputs.append({"instances": inst})
    return inputs, outputs


# Hits, near misses, false positives, a wrong class, a missed object and a detection of a crowd region.
MIXED = {
    1: [(0, _square(5, 5, 20, 20), 0.95, None),  # the "box": exact
        (0, _square(40, 5, 15, 15), 0.9, None),  # false positive
        (1, np.roll(_square(30, 40, 10, 30), 3, axis=1), 0.7, None),  # the "bar", shifted 3 px
        (1, _square(5, 5, 20, 20), 0.8, None)],  # wrong class on the "box"
    2: [(1, _square(10, 16, 30, 12), 0.6, None),  # IoU 1/3 with the "bar": a miss, and the bar is missed
        (0, _square(42, 52, 15, 20), 0.85, None),  # on the crowd region: ignored
        (0, _square(0, 60, 8, 8), 0.3, None)],  # false positive
}


def _same_numbers(a, b):
    assert set(a) == set(b)
    for k, v in a.items():
        assert v == b[k] or (math.isnan(v) and math.isnan(b[k])), (k, v, b[k])


def test_bbox_and_segm_identical_to_detectron2_coco_evaluator(dataset):
    from detectron2.evaluation import COCOEvaluator

    name, _ = dataset
    results = []
    for cls in (COCOEvaluator, COCOBoundaryEvaluator):
        evaluator = cls(name, distributed=False)
        evaluator.reset()
        evaluator.process(*_outputs(MIXED))
        results.append(evaluator.evaluate())
    theirs, ours = results
    assert 0 < theirs["bbox"]["AP"] < 100 and 0 < theirs["segm"]["AP"] < 100
    for task in ("bbox", "segm"):
        _same_numbers(ours[task], theirs[task])


# Per image, a poor detection with the higher box score and a good one with the higher mask score:
# ranking by mask score changes mask AP, and must leave box AP as it is.
SCORED = {
    1: [(0, _square(5, 5, 20, 20), 0.6, 0.9), (0, _square(12, 12, 20, 20), 0.9, 0.2),
        (1, _square(30, 40, 10, 30), 0.8, 0.7)],
    2: [(1, _square(10, 10, 30, 12), 0.5, 0.8), (1, _square(10, 18, 30, 12), 0.7, 0.1)],
}


def test_mask_scores_rank_masks_and_leave_box_ap_alone(dataset, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from seg_d2.evaluation.coco_evaluation import evaluate_boundary_on_coco

    name, root = dataset
    without = {i: [(c, m, s, None) for c, m, s, _ in dets] for i, dets in SCORED.items()}
    res = {}
    for key, dets in (("with", SCORED), ("without", without)):
        evaluator = COCOBoundaryEvaluator(name, distributed=False, output_dir=str(tmp_path / key))
        evaluator.reset()
        evaluator.process(*_outputs(dets))
        res[key] = evaluator.evaluate()
    _same_numbers(res["with"]["bbox"], res["without"]["bbox"])
    assert res["with"]["segm"]["AP"] > res["without"]["segm"]["AP"]
    assert res["with"]["boundary"]["AP"] > res["without"]["boundary"]["AP"]

    # segm and Boundary AP: pycocotools run by hand on the masks, scored by their mask scores.
    saved = json.loads((tmp_path / "with" / "coco_instances_results.json").read_text())
    assert [r["mask_score"] for r in saved] == pytest.approx([d[3] for dets in SCORED.values() for d in dets])
    masks = [{k: r[k] for k in ("image_id", "category_id", "segmentation")} | {"score": r["mask_score"]}
             for r in saved]
    coco_gt = COCO(str(root / "instances.json"))
    coco_eval = COCOeval(coco_gt, coco_gt.loadRes(masks), "segm")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    assert res["with"]["segm"]["AP"] == float(coco_eval.stats[0] * 100)
    assert res["with"]["segm"]["AP75"] == float(coco_eval.stats[2] * 100)
    boundary = evaluate_boundary_on_coco(coco_gt, masks, use_fast_impl=False)
    assert res["with"]["boundary"]["AP"] == float(boundary.stats[0] * 100)
