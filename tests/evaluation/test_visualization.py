"""Evaluation leaves images to look at (prediction | ground truth | error map) and a per-class CSV."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

import seg_d2  # noqa: F401  (registers the shapes datasets)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Boxes, Instances

from seg_d2.data.sem_seg_io import read_label_map
from seg_d2.evaluation.visualization import EvaluatorsWithPerClassTable, PredictionVisualizer, error_map


def test_semantic_panels_and_error_map(tmp_path):
    name = "seg_d2_shapes_sem_seg_val"
    dicts = DatasetCatalog.get(name)[:3]
    num_classes = len(MetadataCatalog.get(name).stuff_classes)
    vis = PredictionVisualizer(name, str(tmp_path), num_images=2)
    vis.reset()
    for d in dicts:
        gt = torch.from_numpy(read_label_map(d["sem_seg_file_name"]).astype(np.int64))
        pred = gt.clone()
        pred[:10] = 1  # a band of wrong pixels (where the ground truth is not class 1)
        logits = torch.nn.functional.one_hot(pred.clamp(max=num_classes - 1), num_classes).permute(2, 0, 1).float()
        vis.process([{"file_name": d["file_name"]}], [{"sem_seg": logits}])
    assert vis.evaluate() == {}
    written = sorted(p.name for p in (tmp_path / "vis").iterdir())
    assert len(written) == 2  # num_images
    image = np.asarray(Image.open(dicts[0]["file_name"]).convert("RGB"))
    panel = np.asarray(Image.open(tmp_path / "vis" / written[0]).convert("RGB"))
    h, w = image.shape[:2]
    assert panel.shape[0] >= h and panel.shape[1] >= 3 * w  # prediction | ground truth | error map
    assert np.abs(panel[18:h + 18, :w].astype(int) - image).mean() > 5  # the overlay is drawn on the image
    gt = read_label_map(dicts[0]["sem_seg_file_name"])
    err = error_map(image, np.where(np.arange(h)[:, None] < 10, 1, gt), gt, 255)
    wrong = (np.arange(h)[:, None] < 10) & (gt != 1)
    assert (err[wrong] == [255, 0, 0]).all() and not (err[~wrong] == [255, 0, 0]).all(axis=-1).any()
    # ignored pixels: a colour that no faded pixel can take (faded: every channel >= 153; a black pixel
    # became 153 grey, which the old ignore grey, 128, resembled)
    black = np.zeros((2, 2, 3), np.uint8)
    err = error_map(black, np.zeros((2, 2)), np.array([[0, 255], [0, 0]]), 255)
    faded, ignored = err[0, 0].astype(int), err[0, 1].astype(int)
    assert (faded >= 150).all() and ignored.min() < 100 and np.abs(faded - ignored).max() > 100
    # titled panels: a title strip above each (dark text pixels in it), the image below
    assert panel.shape[0] == h + 18 and (panel[:18, :w] < 100).any() and (panel[:18, 2 * w:] < 100).any()


def _one_box(d, score):
    """One predicted instance (a box of class 0) on the image of dataset dict ``d``."""
    inst = Instances((d["height"], d["width"]))
    inst.pred_boxes = Boxes(torch.tensor([[5.0, 5.0, 60.0, 60.0]]))
    inst.scores = torch.tensor([score])
    inst.pred_classes = torch.tensor([0])
    return inst


def test_instance_panels(tmp_path):
    name = "seg_d2_shapes_val"
    d = DatasetCatalog.get(name)[0]
    inst = _one_box(d, 0.9)
    vis = PredictionVisualizer(name, str(tmp_path), num_images=8)
    vis.process([{"file_name": d["file_name"]}], [{"instances": inst}])
    (out,) = (tmp_path / "vis").iterdir()
    panel = np.asarray(Image.open(out).convert("RGB"))
    assert panel.shape[1] >= 2 * d["width"]  # prediction | ground truth


def test_instance_panel_score_threshold_is_a_config_key(tmp_path):
    """After brief training every score is low: with TEST.VIS_SCORE_THRESH 0.0 the prediction panel shows them
    (the old fixed 0.5 left it empty while evaluation ran at 0.0)."""
    from seg_d2 import get_cfg
    from seg_d2.evaluation import build_evaluator_with_visualization

    name = "seg_d2_shapes_val"
    d = DatasetCatalog.get(name)[0]
    inst = _one_box(d, 0.2)
    image = np.asarray(Image.open(d["file_name"]).convert("RGB"))
    drawn = {}
    for thresh in (0.5, 0.0):
        cfg = get_cfg()
        cfg.merge_from_list(["TEST.VIS_SCORE_THRESH", str(thresh)])
        out = tmp_path / str(thresh)
        evaluators = build_evaluator_with_visualization(cfg, name, str(out))
        (vis,) = [e for e in evaluators._evaluators if isinstance(e, PredictionVisualizer)]
        vis.process([{"file_name": d["file_name"]}], [{"instances": inst}])
        (png,) = (out / "vis").iterdir()
        panel = np.asarray(Image.open(png).convert("RGB"))[18:18 + d["height"], :d["width"]].astype(int)
        drawn[thresh] = np.abs(panel - image).mean()
    assert drawn[0.5] < 0.5 and drawn[0.0] > 2  # the box and its label drawn only at 0.0


class _Fixed(DatasetEvaluator):
    def __init__(self, results):
        self.results = results

    def reset(self):
        pass

    def process(self, inputs, outputs):
        pass

    def evaluate(self):
        return self.results


def test_per_class_csv(tmp_path):
    results = {"sem_seg": {"mIoU": 50.0, "IoU-car": 40.0, "IoU-road": 60.0, "ACC-car": 70.0, "ACC-road": np.nan}}
    out = EvaluatorsWithPerClassTable([_Fixed(results)], str(tmp_path)).evaluate()
    assert out["sem_seg"]["mIoU"] == 50.0
    with open(tmp_path / "per_class_metrics.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["class", "IoU", "ACC"]
    assert rows[1] == ["car", "40.0000", "70.0000"] and rows[2][:2] == ["road", "60.0000"]
    coco = {"bbox": {"AP": 1.0, "AP-a": 2.0}, "segm": {"AP": 3.0, "AP-a": 4.0}}
    EvaluatorsWithPerClassTable([_Fixed(coco)], str(tmp_path)).evaluate()
    with open(tmp_path / "per_class_metrics.csv") as f:
        assert list(csv.reader(f)) == [["class", "bbox AP", "segm AP"], ["a", "2.0000", "4.0000"]]
