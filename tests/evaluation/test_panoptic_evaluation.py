"""PanopticEvaluator (detectron2's COCOPanopticEvaluator + per-class figures) on hand-worked cases, and
against torchmetrics' PanopticQuality on random panoptic maps."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators
from panopticapi.utils import id2rgb
from seg_d2 import add_seg_d2_config
from seg_d2.data.datasets import register_coco_panoptic_dataset
from seg_d2.evaluation import PanopticEvaluator, build_evaluator

H = W = 10
THING, STUFF = 1, 2  # dataset category ids: thing "a", stuff "s" (contiguous: thing 0, stuff 1)
CATEGORIES = [{"id": THING, "name": "a", "isthing": 1, "color": [200, 0, 0]},
              {"id": STUFF, "name": "s", "isthing": 0, "color": [0, 200, 0]}]


def _box(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


# Each image: ground truth [(category id, mask, iscrowd)] and prediction [(category id, mask)]. Pixels of
# no segment are void (0). Hand-worked matches (IoU must be > 0.5; void pixels leave the union):
GT = {
    1: [(THING, _box(0, 4, 0, 5), 0), (STUFF, _box(5, 10, 0, 10), 0)],
    2: [(THING, _box(0, 5, 0, 5), 0), (THING, _box(0, 5, 6, 10), 0), (STUFF, _box(5, 10, 0, 10), 0)],
    3: [(THING, _box(0, 5, 0, 10), 1), (STUFF, _box(5, 10, 0, 10), 0)],
}
PRED = {
    # thing 16 px inside its 20-px ground truth: IoU 0.8, TP. Stuff 75 px, 25 of them over void: IoU
    # 50 / (75 + 50 - 50 - 25) = 1.0, TP.
    1: [(THING, _box(0, 4, 0, 4)), (STUFF, _box(5, 10, 0, 10) | _box(0, 5, 5, 10))],
    # thing 15 px in a 25-px one: IoU 0.6, TP. Thing 10 px in the other 20-px one: IoU exactly 0.5, no
    # match: an FP, and that ground truth an FN. A thing all over void (column 5): not an FP. Stuff
    # rows 6-9: IoU 40 / 50 = 0.8, TP.
    2: [(THING, _box(0, 5, 0, 3)), (THING, _box(0, 2, 6, 10) | _box(2, 3, 6, 8)), (THING, _box(0, 5, 5, 6)),
        (STUFF, _box(6, 10, 0, 10))],
    # a thing inside a crowd region of its class: not an FP. Stuff exact: IoU 1.0, TP.
    3: [(THING, _box(0, 3, 0, 6)), (STUFF, _box(5, 10, 0, 10))],
}
# Per class over the dataset: thing TP 2 (IoU 0.8 + 0.6), FP 1, FN 1; stuff TP 3 (1.0 + 0.8 + 1.0).
PQ_TH = (0.8 + 0.6) / (2 + 0.5 * 1 + 0.5 * 1)
SQ_TH, RQ_TH = (0.8 + 0.6) / 2, 2 / (2 + 0.5 + 0.5)
PQ_ST = SQ_ST = (1.0 + 0.8 + 1.0) / 3
RQ_ST = 1.0


def _write_gt(root, gt, categories, name):
    (root / "pan").mkdir()
    images, annotations = [], []
    for img_id, segments in gt.items():
        ids = np.zeros(next(iter(segments))[1].shape, np.int32)
        infos = []
        for k, (cat, mask, crowd) in enumerate(segments, 1):
            assert not ids[mask].any()
            ids[mask] = k
            ys, xs = np.nonzero(mask)
            infos.append({"id": k, "category_id": cat, "iscrowd": crowd, "area": int(mask.sum()),
                          "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)]})
        Image.fromarray(id2rgb(ids).astype(np.uint8)).save(root / "pan" / f"{img_id:03d}.png")
        images.append({"id": img_id, "file_name": f"{img_id:03d}.jpg", "height": ids.shape[0], "width": ids.shape[1]})
        annotations.append({"image_id": img_id, "file_name": f"{img_id:03d}.png", "segments_info": infos})
    with open(root / "gt.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    register_coco_panoptic_dataset(name, str(root / "gt.json"), str(root / "img"), str(root / "pan"))


def _evaluate(name, pred, out_dir):
    meta = MetadataCatalog.get(name)
    evaluator = PanopticEvaluator(name, output_dir=str(out_dir))
    evaluator.reset()
    for img_id, segments in pred.items():
        ids = torch.zeros(segments[0][1].shape, dtype=torch.int32)
        infos = []
        for k, (cat, mask) in enumerate(segments, 1):
            ids[torch.from_numpy(mask)] = k
            isthing = cat in meta.thing_dataset_id_to_contiguous_id
            contiguous = (meta.thing_dataset_id_to_contiguous_id if isthing else meta.stuff_dataset_id_to_contiguous_id)[cat]
            infos.append({"id": k, "category_id": contiguous, "isthing": isthing})  # as PanopticFPN outputs
        kept = [dict(i) for i in infos]
        evaluator.process([{"file_name": f"x/{img_id:03d}.jpg", "image_id": img_id}], [{"panoptic_seg": (ids, infos)}])
        assert infos == kept  # the outputs are left as they are, for the evaluators after it
    return evaluator.evaluate()["panoptic_seg"]


@pytest.fixture(scope="module")
def hand_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("panoptic_hand")
    _write_gt(root, GT, CATEGORIES, "test_panoptic_hand")
    return _evaluate("test_panoptic_hand", PRED, root)


def test_pq_equals_the_hand_worked_values(hand_results):
    r = hand_results
    assert r["PQ_th"] == pytest.approx(100 * PQ_TH)
    assert r["SQ_th"] == pytest.approx(100 * SQ_TH)
    assert r["RQ_th"] == pytest.approx(100 * RQ_TH)
    assert r["PQ_st"] == pytest.approx(100 * PQ_ST)
    assert r["SQ_st"] == pytest.approx(100 * SQ_ST)
    assert r["RQ_st"] == pytest.approx(100 * RQ_ST)
    assert r["PQ"] == pytest.approx(100 * (PQ_TH + PQ_ST) / 2)
    # per class, named (one class each here: equal to the thing and stuff means)
    assert r["PQ-a"] == pytest.approx(100 * PQ_TH) and r["PQ-s"] == pytest.approx(100 * PQ_ST)
    assert r["SQ-a"] == pytest.approx(100 * SQ_TH) and r["RQ-s"] == pytest.approx(100 * RQ_ST)


def test_pq_accumulates_over_the_dataset_not_per_image(hand_results):
    per_image_mean = (0.8 + 0.6 / 2) / 2  # image 1: 0.8/1; image 2: 0.6/(1 + 0.5 + 0.5); image 3: no thing
    assert abs(hand_results["PQ_th"] - 100 * per_image_mean) > 5


def test_the_dataset_evaluator_type_builds_pq_ap_and_miou(tmp_path):
    _write_gt(tmp_path, {1: GT[1]}, CATEGORIES, "test_panoptic_build")
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.MODEL.MASK_ON = True
    ev = build_evaluator(cfg, "test_panoptic_build", str(tmp_path / "out"))
    assert isinstance(ev, DatasetEvaluators)
    kinds = [type(e).__name__ for e in ev._evaluators]
    assert kinds == ["PanopticEvaluator", "COCOBoundaryEvaluator"]  # no semantic maps registered: no mIoU


def _random_maps(rng, n_images, size, thing_ids, stuff_ids, void=True):
    """(category map, instance map) pairs: stuff in random blocks, then random thing rectangles on top."""
    out = []
    for _ in range(n_images):
        cat = rng.choice(stuff_ids + ([0] if void else []), size=(size // 4, size // 4)).repeat(4, 0).repeat(4, 1)
        inst = np.zeros((size, size), np.int64)
        for k in range(1, rng.integers(1, 6)):
            y, x = rng.integers(0, size - 3, size=2)
            h, w = rng.integers(3, size // 2, size=2)
            cat[y:y + h, x:x + w] = rng.choice(thing_ids)
            inst[y:y + h, x:x + w] = k
        out.append((cat, inst))
    return out


def _perturb(rng, maps, thing_ids, stuff_ids):
    out = []
    for cat, inst in maps:
        cat, inst = np.roll(cat, rng.integers(-2, 3), axis=1).copy(), np.roll(inst, rng.integers(-2, 3), axis=1).copy()
        flip = rng.random(cat.shape) < 0.05  # noise: a few pixels relabelled as some stuff
        cat[flip] = rng.choice(stuff_ids, size=int(flip.sum()))
        inst[flip] = 0
        cat[cat == 0] = stuff_ids[0]  # predictions have no void
        out.append((cat, inst))
    return out


def _segments(cat, inst, thing_ids):
    """COCO segments of a (category, instance) map: each thing instance, and each stuff category."""
    segments = []
    for c in np.unique(cat):
        if c == 0:
            continue
        if c in thing_ids:
            for k in np.unique(inst[cat == c]):
                segments.append((int(c), (cat == c) & (inst == k), 0))
        else:
            segments.append((int(c), cat == c, 0))
    return segments


def test_pq_agrees_with_torchmetrics_on_random_maps(tmp_path):
    from torchmetrics.detection import PanopticQuality

    rng = np.random.default_rng(0)
    thing_ids, stuff_ids = [1, 2], [3, 4, 5]
    categories = [{"id": i, "name": f"c{i}", "isthing": int(i in thing_ids)} for i in thing_ids + stuff_ids]
    gt_maps = _random_maps(rng, 6, 32, thing_ids, stuff_ids)
    pred_maps = _perturb(rng, gt_maps, thing_ids, stuff_ids)
    _write_gt(tmp_path, {i + 1: _segments(c, k, thing_ids) for i, (c, k) in enumerate(gt_maps)}, categories,
              "test_panoptic_random")
    ours = _evaluate("test_panoptic_random", {i + 1: [(c, m) for c, m, _ in _segments(c, k, thing_ids)]
                                              for i, (c, k) in enumerate(pred_maps)}, tmp_path)

    def stack(maps):  # torchmetrics: (N, H, W, 2) = (category, instance); category 0 is neither: void
        return torch.from_numpy(np.stack([np.stack([c, np.where(np.isin(c, thing_ids), k, 0)], -1) for c, k in maps]))

    def torchmetrics_pq(things, stuffs):
        metric = PanopticQuality(things=set(things), stuffs=set(stuffs),
                                 allow_unknown_preds_category=True, return_sq_and_rq=True)
        metric.update(stack(pred_maps), stack(gt_maps))
        return [100 * float(v) for v in metric.compute()]

    pq, sq, rq = torchmetrics_pq(thing_ids, stuff_ids)
    assert ours["PQ"] == pytest.approx(pq, abs=1e-4)
    assert ours["SQ"] == pytest.approx(sq, abs=1e-4)
    assert ours["RQ"] == pytest.approx(rq, abs=1e-4)
    assert 20 < ours["PQ"] < 95  # neither trivial nor perfect
