"""seg_d2's Cityscapes evaluators on the generated fixture: known values, agreement with
cityscapesscripts' own evaluation scripts on the same files, and multi-process (GLOO) evaluation.

Run as a script (``python test_cityscapes_evaluation.py ROOT OUT``) it evaluates the same
predictions with 2 CPU processes, for ``test_two_processes_give_the_same_numbers``.
"""
import json
import math
import os
import sys
import textwrap

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from cityscapesscripts.helpers.labels import labels, name2label
from PIL import Image

from detectron2.config import get_cfg
from detectron2.structures import Instances

import seg_d2  # noqa: F401
from seg_d2 import add_seg_d2_config
from seg_d2.data.datasets.cityscapes import (
    STUFF_CLASSES,
    THING_CLASSES,
    load_cityscapes_instances,
    load_cityscapes_semantic,
    register_cityscapes,
)
from seg_d2.data.datasets.cityscapes_fixture import generate_cityscapes_fixture
from seg_d2.evaluation import build_evaluator
from seg_d2.evaluation.cityscapes_evaluation import (
    INSTANCE_RESULTS,
    SEM_SEG_RESULTS,
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
)

PREFIX = "test_cs_eval_"
SEM, INS = f"{PREFIX}cityscapes_fine_sem_seg_val", f"{PREFIX}cityscapes_fine_instance_seg_val"
CAR, TRUCK, ROAD = STUFF_CLASSES.index("car"), STUFF_CLASSES.index("truck"), STUFF_CLASSES.index("road")


# ---- predictions made from the ground truth ----

def _seed(d):
    return int.from_bytes(d["image_id"].encode(), "little") % 2**32


def _train_ids(d):
    return np.asarray(Image.open(d["sem_seg_file_name"])).astype(np.int64)


def _scores(train_ids):
    """One-hot "logits" (19, H, W) whose argmax is ``train_ids``."""
    return torch.nn.functional.one_hot(torch.from_numpy(train_ids), len(STUFF_CLASSES)).permute(2, 0, 1).float()


def perfect_semantic(d):
    t = _train_ids(d)
    t[t == 255] = ROAD  # what is predicted on void pixels does not count
    return {"sem_seg": _scores(t)}


def car_as_truck_semantic(d):
    out = perfect_semantic(d)["sem_seg"].argmax(0).numpy()
    out[out == CAR] = TRUCK
    return {"sem_seg": _scores(out)}


def noisy_semantic(d):
    rng = np.random.default_rng(_seed(d))
    t = perfect_semantic(d)["sem_seg"].argmax(0).numpy()
    noise = rng.random(t.shape) < 0.15
    t[noise] = rng.integers(0, 19, size=int(noise.sum()))
    t[30:60, 100:160] = TRUCK
    return {"sem_seg": _scores(t)}


def _instances(d, masks, classes, scores):
    inst = Instances((d["height"], d["width"]))
    inst.pred_masks = torch.from_numpy(np.stack(masks).astype(bool))
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    return {"instances": inst}


def gt_instances(d):
    annos = [a for a in d["annotations"] if not a["iscrowd"]]
    return _instances(d, [mask_util.decode(a["segmentation"]) for a in annos], [a["category_id"] for a in annos],
                      [1.0] * len(annos))


def corrupted_instances(d):
    """Dropped, eroded, shifted and mislabelled objects, false positives, varied scores."""
    rng = np.random.default_rng(_seed(d))
    masks, classes, scores = [], [], []
    for k, a in enumerate(a for a in d["annotations"] if not a["iscrowd"]):
        if k % 4 == 3:
            continue  # missed
        m = mask_util.decode(a["segmentation"])
        if k % 3 == 1:
            m = cv2.erode(m, np.ones((3, 3), np.uint8), iterations=2)
        if k % 5 == 2:
            m = np.roll(m, 4, axis=1)
        c = a["category_id"]
        if k % 7 == 5:
            c = (c + 1) % len(THING_CLASSES)
        masks.append(m)
        classes.append(c)
        scores.append(float(rng.uniform(0.3, 1.0)))
    fp = np.zeros((d["height"], d["width"]), np.uint8)
    fp[5:25, 10:50] = 1  # in the sky
    masks.append(fp)
    classes.append(THING_CLASSES.index("car"))
    scores.append(0.5)
    return _instances(d, masks, classes, scores)


def run_evaluator(evaluator, dicts, predict, indices=None):
    evaluator.reset()
    for i, d in enumerate(dicts):
        if indices is None or i in indices:
            evaluator.process([d], [predict(d)])
    return evaluator.evaluate()


# ---- fixtures ----

@pytest.fixture(scope="module")
def cs_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cs_eval") / "cityscapes")
    generate_cityscapes_fixture(root)
    register_cityscapes(os.path.dirname(root), mask_format="bitmask", name_prefix=PREFIX)
    return root


@pytest.fixture(scope="module")
def sem_dicts(cs_root):
    return load_cityscapes_semantic(cs_root, "val")


@pytest.fixture(scope="module")
def ins_dicts(cs_root):
    return load_cityscapes_instances(cs_root, "val", mask_format="bitmask")


# ---- known values ----

def test_semantic_perfect_prediction_is_100(sem_dicts):
    res = run_evaluator(CityscapesSemSegEvaluator(SEM, distributed=False), sem_dicts, perfect_semantic)["sem_seg"]
    assert res["IoU"] == pytest.approx(100) and res["iIoU"] == pytest.approx(100)
    assert res["IoU_sup"] == pytest.approx(100) and res["iIoU_sup"] == pytest.approx(100)
    per_class = {k: v for k, v in res.items() if k.startswith("IoU-")}
    assert len(per_class) == 19 and all(v == pytest.approx(100) for v in per_class.values())
    assert {k for k in res if k.startswith("IoU_sup-")} == {
        f"IoU_sup-{c}" for c in ("flat", "construction", "object", "nature", "sky", "human", "vehicle")}


def test_semantic_known_corruption_gives_the_hand_computed_iou(cs_root, sem_dicts):
    """Every car pixel predicted as truck: IoU(car) = 0, IoU(truck) = n_truck / (n_truck + n_car),
    every other class 1; car and truck are both "vehicle", so every category stays 1. Predictions on
    void pixels (here "road") are ignored, so IoU(road) stays 1."""
    counts = np.zeros(256, np.int64)
    for d in sem_dicts:
        label_ids = np.asarray(Image.open(d["sem_seg_file_name"].replace("labelTrainIds", "labelIds")))
        counts += np.bincount(label_ids.ravel(), minlength=256)
    n_car, n_truck = counts[name2label["car"].id], counts[name2label["truck"].id]
    present = [l for l in labels if 0 <= l.trainId < 255 and counts[l.id] > 0]
    assert n_car > 0 and n_truck > 0 and len(present) == 19
    expected_truck = n_truck / (n_truck + n_car)
    expected_miou = 100 * (len(present) - 2 + expected_truck) / len(present)

    res = run_evaluator(CityscapesSemSegEvaluator(SEM, distributed=False), sem_dicts, car_as_truck_semantic)["sem_seg"]
    assert res["IoU-car"] == 0
    assert res["IoU-truck"] == pytest.approx(100 * expected_truck, abs=1e-9)
    assert res["IoU-road"] == pytest.approx(100) and res["IoU-bus"] == pytest.approx(100)
    assert res["IoU"] == pytest.approx(expected_miou, abs=1e-9)
    assert res["IoU_sup"] == pytest.approx(100) and res["IoU_sup-vehicle"] == pytest.approx(100)
    # By hand, for this fixture: 7289 car and 2236 truck pixels, 19 classes present:
    # (17 * 1 + 0 + 2236 / (2236 + 7289)) / 19 = 0.907092.
    assert (n_car, n_truck) == (7289, 2236)
    assert res["IoU"] == pytest.approx(100 * (17 + 2236 / 9525) / 19, abs=1e-9)
    assert res["IoU"] == pytest.approx(90.7092, abs=1e-4)


def test_instance_ground_truth_as_prediction_is_ap_100(ins_dicts):
    res = run_evaluator(CityscapesInstanceEvaluator(INS, distributed=False), ins_dicts, gt_instances)["segm"]
    assert res["AP"] == pytest.approx(100) and res["AP50"] == pytest.approx(100)
    for name in THING_CLASSES:  # all 8 classes are in the fixture's val split
        assert res[f"AP-{name}"] == pytest.approx(100) and res[f"AP50-{name}"] == pytest.approx(100)


def test_instance_corrupted_prediction_scores_lower(ins_dicts):
    res = run_evaluator(CityscapesInstanceEvaluator(INS, distributed=False), ins_dicts, corrupted_instances)["segm"]
    assert 10 < res["AP"] < res["AP50"] < 100


def test_image_without_instances_counts_as_all_missed(ins_dicts):
    def none_for_first(d):
        return {} if d is ins_dicts[0] else gt_instances(d)

    res = run_evaluator(CityscapesInstanceEvaluator(INS, distributed=False), ins_dicts, none_for_first)["segm"]
    assert 0 < res["AP"] < 100


def test_instances_are_ranked_by_mask_scores_when_the_model_predicts_them(ins_dicts):
    """Mask scoring (Huang 2019): each ground-truth object twice, its true mask and a mask in the sky.
    The box scores rank the sky masks first, the mask scores the true masks. Ranked by mask scores every
    object is found before any false positive: AP 100 (cityscapesscripts' interpolated precision); ranked
    by box scores, half the detections above each true one are false: AP well below 100."""
    def doubled(d):
        gt = gt_instances(d)["instances"]
        sky = torch.zeros_like(gt.pred_masks)
        sky[:, 5:25, 10:50] = True
        inst = Instances(gt.image_size)
        inst.pred_masks = torch.cat([gt.pred_masks, sky])
        inst.pred_classes = torch.cat([gt.pred_classes, gt.pred_classes])
        n = len(gt)
        inst.scores = torch.cat([torch.full((n,), 0.4), torch.full((n,), 0.9)])
        with_mask_scores = {"instances": inst}
        if d.get("_mask_scores", True):
            inst.mask_scores = torch.cat([torch.full((n,), 0.8), torch.full((n,), 0.1)])
        return with_mask_scores

    res = run_evaluator(CityscapesInstanceEvaluator(INS, distributed=False), ins_dicts, doubled)["segm"]
    assert res["AP"] == pytest.approx(100)
    by_box = run_evaluator(CityscapesInstanceEvaluator(INS, distributed=False),
                           [{**d, "_mask_scores": False} for d in ins_dicts], doubled)["segm"]
    assert by_box["AP"] < 90


# ---- the same numbers as cityscapesscripts' own scripts ----

OFFICIAL = textwrap.dedent("""
    import json, sys, numpy as np
    # Two shims for today's NumPy, which cityscapesscripts 2.3.0 predates; neither changes a number:
    if not hasattr(np, "in1d"):  # removed in NumPy 2.4
        np.in1d = lambda a, b, assume_unique=False, invert=False: np.isin(np.asarray(a).ravel(), b, invert=invert)
    script, work = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[:1]
    if script == "pixel":
        import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs
    else:
        import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cs
        cs.args.gtInstancesFile = work + "/gtInstances.json"  # not in site-packages
        cs.args.exportFile = work + "/resultInstanceLevelSemanticLabeling.json"

        def write_json(d, path):  # its matches.json holds NumPy integers (np.count_nonzero), which json rejects
            with open(path, "w") as f:
                json.dump(d, f, default=lambda o: o.item() if isinstance(o, np.generic) else o.__dict__, indent=4)

        cs.writeDict2JSON = write_json
    cs.main()
""")


def run_official(script, cs_root, results_dir, work):
    """cityscapesscripts' main() as documented: CITYSCAPES_DATASET, CITYSCAPES_RESULTS, no arguments."""
    from tests.conftest import run_tool

    runner = os.path.join(work, "official.py")
    with open(runner, "w") as f:
        f.write(OFFICIAL)
    env = {"CITYSCAPES_DATASET": cs_root, "CITYSCAPES_RESULTS": results_dir, "CITYSCAPES_EXPORT_DIR": work}
    res = run_tool([runner, script, work], cwd=work, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    name = "resultPixelLevelSemanticLabeling.json" if script == "pixel" else "resultInstanceLevelSemanticLabeling.json"
    with open(os.path.join(work, name)) as f:
        return json.load(f), res.stdout


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)


def test_semantic_equals_cityscapesscripts_own_script(cs_root, sem_dicts, tmp_path):
    out = tmp_path / "out"
    ours = run_evaluator(CityscapesSemSegEvaluator(SEM, distributed=False, output_dir=str(out)), sem_dicts,
                         noisy_semantic)["sem_seg"]
    results = out / SEM_SEG_RESULTS
    preds = sorted(p.relative_to(results).as_posix() for p in results.rglob("*.png"))
    assert preds == sorted(f"{d['file_name'].split('/')[-2]}/{d['image_id']}_pred.png" for d in sem_dicts)
    work = tmp_path / "official"
    work.mkdir()
    official, stdout = run_official("pixel", cs_root, str(results), str(work))
    assert "Score Average" in stdout
    assert 40 < ours["IoU"] < 95  # a non-trivial comparison
    assert _same(ours["IoU"], 100 * official["averageScoreClasses"])
    assert _same(ours["iIoU"], 100 * official["averageScoreInstClasses"])
    assert _same(ours["IoU_sup"], 100 * official["averageScoreCategories"])
    assert _same(ours["iIoU_sup"], 100 * official["averageScoreInstCategories"])
    for name in STUFF_CLASSES:
        assert _same(ours[f"IoU-{name}"], 100 * official["classScores"][name]), name
    for cat in ("flat", "construction", "object", "nature", "sky", "human", "vehicle"):
        assert _same(ours[f"IoU_sup-{cat}"], 100 * official["categoryScores"][cat]), cat
    # Our own export of cityscapesscripts' result json holds the same numbers.
    with open(out / "resultPixelLevelSemanticLabeling.json") as f:
        assert json.load(f)["classScores"] == official["classScores"]


def test_instance_equals_cityscapesscripts_own_script(cs_root, ins_dicts, tmp_path):
    out = tmp_path / "out"
    ours = run_evaluator(CityscapesInstanceEvaluator(INS, distributed=False, output_dir=str(out)), ins_dicts,
                         corrupted_instances)["segm"]
    results = out / INSTANCE_RESULTS
    txts = sorted(results.rglob("*_pred.txt"))
    assert len(txts) == len(ins_dicts)
    line = txts[0].read_text().splitlines()[0].split(" ")
    assert line[0].startswith("masks/") and int(line[1]) in {l.id for l in labels if l.hasInstances} and float(line[2])
    work = tmp_path / "official"
    work.mkdir()
    official, stdout = run_official("instance", cs_root, str(results), str(work))
    assert "average" in stdout
    averages = official["averages"]
    assert _same(ours["AP"], 100 * averages["allAp"]) and _same(ours["AP50"], 100 * averages["allAp50%"])
    for name in THING_CLASSES:
        assert _same(ours[f"AP-{name}"], 100 * averages["classes"][name]["ap"]), name
        assert _same(ours[f"AP50-{name}"], 100 * averages["classes"][name]["ap50%"]), name


def test_class_whose_only_predictions_lie_on_void_gets_ap_0(cs_root, ins_dicts, tmp_path):
    """cityscapesscripts' own script crashes here (IndexError in evaluateMatches); its formula gives 0."""
    car = THING_CLASSES.index("car")

    def cars_on_the_ego_vehicle(d):
        inst = gt_instances(d)["instances"]
        keep = inst.pred_classes != car
        void = np.zeros((d["height"], d["width"]), bool)
        void[-4:, 20:80] = True  # the "ego vehicle" (void) strip at the bottom of every fixture image
        masks = [m.numpy() for m in inst.pred_masks[keep]] + [void]
        return _instances(d, masks, inst.pred_classes[keep].tolist() + [car], [1.0] * len(masks))

    out = tmp_path / "out"
    res = run_evaluator(CityscapesInstanceEvaluator(INS, distributed=False, output_dir=str(out)), ins_dicts,
                        cars_on_the_ego_vehicle)["segm"]
    assert res["AP-car"] == 0 and res["AP50-car"] == 0
    assert all(res[f"AP-{c}"] == pytest.approx(100) for c in THING_CLASSES if c != "car")
    assert res["AP"] == pytest.approx(100 * 7 / 8)
    from tests.conftest import run_tool

    work = tmp_path / "official"
    work.mkdir()
    with open(work / "official.py", "w") as f:
        f.write(OFFICIAL)
    crashed = run_tool([work / "official.py", "instance", work], cwd=work,
                       env={"CITYSCAPES_DATASET": cs_root, "CITYSCAPES_RESULTS": str(out / INSTANCE_RESULTS)})
    assert crashed.returncode != 0 and "IndexError" in crashed.stderr


# ---- multi-process (CPU, GLOO) ----

def _dist_main(cs_root, out_file):
    from detectron2.utils import comm

    register_cityscapes(os.path.dirname(cs_root), mask_format="bitmask", name_prefix=PREFIX)
    rank, world = comm.get_rank(), comm.get_world_size()
    sem_dicts = load_cityscapes_semantic(cs_root, "val")
    ins_dicts = load_cityscapes_instances(cs_root, "val", mask_format="bitmask")
    mine = set(range(rank, len(sem_dicts), world))  # each process a share, as inference_on_dataset does
    sem = run_evaluator(CityscapesSemSegEvaluator(SEM), sem_dicts, noisy_semantic, mine)
    ins = run_evaluator(CityscapesInstanceEvaluator(INS), ins_dicts, corrupted_instances, mine)
    if comm.is_main_process():
        with open(out_file, "w") as f:
            json.dump({"world": world, "sem_seg": sem["sem_seg"], "segm": ins["segm"]}, f)
    else:
        assert sem is None and ins is None


def test_two_processes_give_the_same_numbers(cs_root, sem_dicts, ins_dicts, tmp_path):
    from tests.conftest import run_tool

    res = run_tool([__file__, cs_root, tmp_path / "dist.json"], env={"CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    with open(tmp_path / "dist.json") as f:
        dist = json.load(f)
    assert dist["world"] == 2
    sem = run_evaluator(CityscapesSemSegEvaluator(SEM, distributed=False), sem_dicts, noisy_semantic)["sem_seg"]
    ins = run_evaluator(CityscapesInstanceEvaluator(INS, distributed=False), ins_dicts, corrupted_instances)["segm"]
    assert set(dist["sem_seg"]) == set(sem) and set(dist["segm"]) == set(ins)
    assert all(_same(dist["sem_seg"][k], v) for k, v in sem.items())
    assert all(_same(dist["segm"][k], v) for k, v in ins.items())


# ---- wiring and errors ----

def test_build_evaluator_picks_seg_d2s_evaluators_on_cpu(cs_root, tmp_path):
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.MODEL.DEVICE = "cpu"
    cfg.OUTPUT_DIR = str(tmp_path)
    assert type(build_evaluator(cfg, SEM)) is CityscapesSemSegEvaluator
    ev = build_evaluator(cfg, INS)
    assert type(ev) is CityscapesInstanceEvaluator
    assert ev._output_dir == os.path.join(str(tmp_path), "inference", INS)
    assert type(build_evaluator(cfg, "seg_d2_cityscapes_fine_sem_seg_val")) is CityscapesSemSegEvaluator


def test_missing_prediction_is_a_clear_error(sem_dicts, ins_dicts):
    with pytest.raises(RuntimeError, match="1 of 4 have no prediction"):
        run_evaluator(CityscapesSemSegEvaluator(SEM, distributed=False), sem_dicts, perfect_semantic, {0, 1, 2})
    with pytest.raises(RuntimeError, match="1 of 4 have no prediction"):
        run_evaluator(CityscapesInstanceEvaluator(INS, distributed=False), ins_dicts, gt_instances, {1, 2, 3})


def test_bad_outputs_are_clear_errors(sem_dicts, ins_dicts):
    ev = CityscapesSemSegEvaluator(SEM, distributed=False)
    ev.reset()
    with pytest.raises(ValueError, match=r"shape \(19, H, W\); got \(5, 128, 256\)"):
        ev.process([sem_dicts[0]], [{"sem_seg": torch.zeros(5, 128, 256)}])
    ev = CityscapesInstanceEvaluator(INS, distributed=False)
    ev.reset()
    d = ins_dicts[0]
    small = _instances({"height": 64, "width": 128}, [np.ones((64, 128))], [0], [1.0])
    with pytest.raises(ValueError, match="not the image size"):
        ev.process([d], [small])
    with pytest.raises(ValueError, match="_leftImg8bit.png"):
        ev.process([{"file_name": "x.png"}], [gt_instances(d)])


def test_dataset_without_gt_dir_is_a_clear_error():
    from detectron2.data import MetadataCatalog

    MetadataCatalog.get("test_cs_eval_no_gt").set(thing_classes=THING_CLASSES)
    with pytest.raises(ValueError, match="no 'gt_dir' metadata"):
        CityscapesInstanceEvaluator("test_cs_eval_no_gt")


if __name__ == "__main__":
    from seg_d2.engine import launch  # its workers end their GLOO group: exiting with one live can abort

    # A file rendezvous, not a TCP port picked in advance that a concurrent job could take first.
    launch(_dist_main, 2, dist_url=f"file://{os.path.abspath(sys.argv[2])}.rendezvous", args=(sys.argv[1], sys.argv[2]))
