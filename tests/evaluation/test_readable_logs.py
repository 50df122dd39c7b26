"""Logs that read well: no deprecation noise from ``import seg_d2``, metrics as plain numbers (not
``np.float64(...)``), and every COCO row, NaN, with the reason, when a model detects nothing."""
import json
import logging
import math
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import print_csv_format
from detectron2.structures import Boxes, Instances
from seg_d2 import add_seg_d2_config
from seg_d2.data.datasets import register_coco_dataset, register_sem_seg_folder
from seg_d2.evaluation import SemSegBoundaryEvaluator, build_evaluator
from tests.conftest import REPO


@pytest.mark.parametrize("code", ["import seg_d2", "import seg_d2, seg_d2.evaluation; from seg_d2 import model_zoo"])
def test_importing_seg_d2_warns_nothing(code):
    """torch.jit.script FutureWarnings from detectron2's and fvcore's imports appeared at every import."""
    res = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-W", "error::DeprecationWarning", "-c", code],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "Warning" not in res.stderr, res.stderr[-3000:]


def test_train_net_starts_without_warnings():
    res = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-W", "error::DeprecationWarning",
                          str(REPO / "tools" / "train_net.py"), "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "Warning" not in res.stderr, res.stderr[-3000:]


TOOLS = sorted(p for p in (REPO / "tools").rglob("*.py") if p.parent.name != "_C" and p.name not in (
    "install_detectron2.py", "detectron2_patches.py"))  # those two run before detectron2 exists


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_tool_imports_seg_d2_before_detectron2(tool):
    """The FutureWarning "torch.jit.script is deprecated" appeared at the start of the demo, the exporter,
    visualize_data and lazyconfig_train_net: they imported detectron2 before seg_d2, whose import silences it."""
    import ast

    order = []
    for node in ast.parse(tool.read_text()).body:  # module-level imports, in order
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        order += [n.split(".")[0] for n in names if n.split(".")[0] in ("seg_d2", "detectron2", "fvcore")]
    if order:
        assert order[0] == "seg_d2", f"{tool.name} imports {order[0]} before seg_d2"


def test_an_instant_run_logs_no_noise(tmp_path):
    """A short instance run as the README's $QUICK makes it (MAX_ITER below the recipe's SOLVER.STEPS,
    resized bitmasks, anchors): no warning of ours or of the libraries on our path, one per-class table."""
    quick = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
             "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MASK_FORMAT", "bitmask",
             "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "DATASETS.TEST", "('seg_d2_shapes_val_mini',)",
             "OUTPUT_DIR", str(tmp_path)]
    config = REPO / "configs" / "Shapes-InstanceSegmentation" / "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"
    res = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(config), *quick],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    for noise in ("Warning", "SOLVER.STEPS contains values larger", "not writable", "meshgrid"):
        assert noise not in log, log[log.index(noise) - 500: log.index(noise) + 300]
    assert log.count("Per-category segm AP") == 1 and log.count("per_class_metrics.csv") == 1


@pytest.fixture
def coco_dataset(tmp_path):
    H, W = 48, 64
    m = np.zeros((H, W), np.uint8)
    m[10:30, 10:40] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "1.png")
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.png", "height": H, "width": W}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": rle,
                         "area": float(m.sum()), "bbox": mask_util.toBbox(rle).tolist()}],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]}))
    name = f"test_readable_logs_coco_{tmp_path.name}"
    register_coco_dataset(name, str(tmp_path / "gt.json"), str(tmp_path))
    DatasetCatalog.get(name)
    yield name, m
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _evaluate(name, instances, caplog, **opts):
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / "Shapes-InstanceSegmentation" / "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"))
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    evaluator = build_evaluator(cfg, name, output_folder=None)
    evaluator.reset()
    evaluator.process([{"image_id": 1, "height": 48, "width": 64}], [{"instances": instances}])
    with caplog.at_level(logging.INFO):
        results = evaluator.evaluate()
        print_csv_format(results)
    return results, caplog.text


def test_no_detections_reports_every_row_with_the_reason(coco_dataset, caplog):
    """Before: one "bbox" row of NaN (the tasks came from the empty predictions), no table, and
    "No predictions from the model!" without saying why."""
    name, _ = coco_dataset
    empty = Instances((48, 64), pred_boxes=Boxes(torch.zeros(0, 4)), scores=torch.zeros(0),
                      pred_classes=torch.zeros(0, dtype=torch.long), pred_masks=torch.zeros(0, 48, 64, dtype=torch.bool))
    results, log = _evaluate(name, empty, caplog, **{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": "0.05"})
    assert set(results) == {"bbox", "segm", "boundary"}
    for task in ("bbox", "segm", "boundary"):
        assert all(math.isnan(v) for v in results[task].values())
        assert f"Evaluation results for {task}: \n|  AP  |  AP50  |" in log
        assert f"copypaste: Task: {task}" in log
    assert log.count("No detections: none scored above the test score threshold 0.05 "
                     "(MODEL.ROI_HEADS.SCORE_THRESH_TEST)") == 1
    assert "lower it (e.g. MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.0)" in log


def test_coco_results_are_plain_floats(coco_dataset, caplog):
    name, m = coco_dataset
    inst = Instances((48, 64), pred_boxes=Boxes(torch.tensor([[10.0, 10.0, 40.0, 30.0]])), scores=torch.tensor([0.9]),
                     pred_classes=torch.tensor([0]), pred_masks=torch.from_numpy(m[None].astype(bool)))
    results, log = _evaluate(name, inst, caplog)
    for task, metrics in results.items():
        for key, value in metrics.items():
            assert type(value) is float, (task, key, type(value))  # per-category APs were np.float64
    assert results["segm"]["AP-thing"] == pytest.approx(100.0)
    assert "np.float" not in log and "No detections" not in log


def test_sem_seg_results_are_plain_floats_and_log_as_tables(tmp_path, caplog):
    """detectron2's SemSegEvaluator logged its results dict: np.float64(16.11...) for every value."""
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    gt = np.zeros((32, 32), np.uint8)
    gt[8:24, 8:24] = 1
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    Image.fromarray(gt).save(tmp_path / "gt" / "a.png")
    name = f"test_readable_logs_sem_{tmp_path.name}"
    register_sem_seg_folder(name, str(tmp_path / "img"), str(tmp_path / "gt"), ["background", "square"])
    try:
        evaluator = SemSegBoundaryEvaluator(name, distributed=False)
        evaluator.reset()
        logits = torch.from_numpy(np.stack([1 - gt, gt]).astype(np.float32))
        evaluator.process([{"file_name": str(tmp_path / "img" / "a.png")}], [{"sem_seg": logits}])
        with caplog.at_level(logging.INFO):
            results = evaluator.evaluate()
            print_csv_format(results)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert all(type(v) is float for v in results["sem_seg"].values())
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    log = caplog.text
    assert "np.float64" not in log and "OrderedDict" not in log
    assert "|  mIoU   |  fwIoU  |" in log and "| square     | 100.000 | 100.000 | 100.000 | 100.000       |" in log
