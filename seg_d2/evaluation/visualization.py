"""What an evaluation leaves to look at: prediction | ground truth for the first images, and the
per-class metrics as a table and a CSV file."""
import csv
import logging
import os
import re
from collections import OrderedDict
from typing import Dict, List

import cv2
import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm

from ..data.sem_seg_io import read_image, read_label_map
from ..data.datasets.coco_panoptic import read_panoptic_ids
from ..utils.visualizer import draw_instance_annotations, draw_instances, draw_panoptic, draw_sem_seg, write_image

__all__ = ["PredictionVisualizer", "EvaluatorsWithPerClassTable", "per_class_rows"]

# Error map colours. The rest of the image is faded towards white (every channel >= 153), so a dark, saturated
# colour cannot be mistaken for it: not the ignore grey (128) of the class panels, which a faded black
# pixel (153) resembles.
_WRONG_COLOR = (255, 0, 0)  # predicted class wrong
_ERROR_IGNORED_COLOR = (0, 60, 200)  # ground truth ignored: no error counted there
_TITLE_HEIGHT = 18


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` under a white strip with ``title`` in black."""
    strip = np.full((_TITLE_HEIGHT, panel.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(strip, title, (3, _TITLE_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, panel], axis=0)


def _side_by_side(*panels: np.ndarray) -> np.ndarray:
    """Panels (H_i, W_i, 3) next to each other, top-aligned on a white canvas, 4 px apart."""
    h = max(p.shape[0] for p in panels)
    w = sum(p.shape[1] for p in panels) + 4 * (len(panels) - 1)
    canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    x = 0
    for p in panels:
        canvas[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + 4
    return canvas


def error_map(image: np.ndarray, pred: np.ndarray, gt: np.ndarray, ignore_label: int) -> np.ndarray:
    """The image faded, wrong pixels red, ignored pixels dark blue (RGB uint8)."""
    out = (image.astype(np.float32) * 0.4 + 255 * 0.6).astype(np.uint8)  # faded: errors stand out
    ignored = gt == ignore_label
    out[(pred != gt) & ~ignored] = _WRONG_COLOR
    out[ignored] = _ERROR_IGNORED_COLOR
    return out


class PredictionVisualizer(DatasetEvaluator):
    """Writes ``<output_dir>/vis/<image>.png`` for the first ``num_images`` images evaluated on the
    main process: titled panels "prediction" | "ground truth", plus "errors" (wrong pixels red, ignored
    dark blue) for semantic outputs; panoptic outputs as segments (detectron2's draw_panoptic_seg). Instances are drawn with detectron2's Visualizer, those scoring at
    least ``score_threshold`` (``TEST.VIS_SCORE_THRESH``)."""

    def __init__(self, dataset_name: str, output_dir: str, num_images: int = 8, score_threshold: float = 0.5):
        self._score_threshold = score_threshold
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        self._vis_dir = os.path.join(output_dir, "vis")
        self._num_images = num_images
        self._dicts = None
        self._count = 0

    def reset(self):
        self._count = 0

    def _dataset_dict(self, file_name: str) -> dict:
        if self._dicts is None:  # loaded once, on first use: the loader has already loaded it
            self._dicts = {d["file_name"]: d for d in DatasetCatalog.get(self._dataset_name)}
        return self._dicts.get(file_name, {})

    def process(self, inputs, outputs):
        if not comm.is_main_process():
            return
        for inp, out in zip(inputs, outputs):
            if self._count >= self._num_images:
                return
            self._count += 1
            image = read_image(inp["file_name"], "RGB")
            image = np.clip(image, 0, 255).astype(np.uint8)
            record = self._dataset_dict(inp["file_name"])
            if "panoptic_seg" in out:
                panels = self._panoptic_panels(image, out["panoptic_seg"], record)
            elif "sem_seg" in out:
                panels = self._sem_seg_panels(image, out["sem_seg"], record)
            elif "instances" in out:
                panels = self._instance_panels(image, out["instances"], record)
            else:
                continue
            titles = ["prediction", "ground truth", "errors: red wrong, blue ignored"]
            stem = os.path.splitext(os.path.basename(inp["file_name"]))[0]
            write_image(os.path.join(self._vis_dir, f"{stem}.png"),
                        _side_by_side(*[_titled(p, t) for p, t in zip(panels, titles)]))

    def _sem_seg_panels(self, image, sem_seg: torch.Tensor, record) -> List[np.ndarray]:
        pred = sem_seg.argmax(dim=0).cpu().numpy()
        panels = [draw_sem_seg(image, pred, self._metadata, num_classes=sem_seg.shape[0])]
        if "sem_seg_file_name" in record:
            gt = read_label_map(record["sem_seg_file_name"])
            ignore = self._metadata.get("ignore_label", 255)
            panels += [draw_sem_seg(image, gt, self._metadata), error_map(image, pred, gt, ignore)]
        return panels

    def _panoptic_panels(self, image, panoptic_seg, record) -> List[np.ndarray]:
        seg, info = panoptic_seg
        panels = [draw_panoptic(image, seg.cpu(), info, self._metadata)]
        if "pan_seg_file_name" in record:
            gt = read_panoptic_ids(record["pan_seg_file_name"])
            panels.append(draw_panoptic(image, gt, record["segments_info"], self._metadata))
        return panels

    def _instance_panels(self, image, instances, record) -> List[np.ndarray]:
        instances = instances.to("cpu")
        panels = [draw_instances(image, instances[instances.scores >= self._score_threshold], self._metadata)]
        annos = record.get("annotations")
        if annos is not None:
            classes = [a["category_id"] for a in annos]  # contiguous ids, as the dataset's dicts hold them
            boxes = [a["bbox"] for a in annos] if all("bbox" in a for a in annos) else None
            if boxes is not None:
                from detectron2.structures import BoxMode

                boxes = [BoxMode.convert(b, a.get("bbox_mode", BoxMode.XYWH_ABS), BoxMode.XYXY_ABS)
                         for b, a in zip(boxes, annos)]
            masks = [a["segmentation"] for a in annos] if all("segmentation" in a for a in annos) else None
            panels.append(draw_instance_annotations(image, classes, self._metadata, boxes=boxes, masks=masks,
                                                    is_crowd=[a.get("iscrowd", 0) for a in annos]))
        return panels

    def evaluate(self):
        if comm.is_main_process() and self._count:
            logging.getLogger(__name__).info(f"Wrote {self._count} prediction | ground truth images to {self._vis_dir}")
        return {}


_PER_CLASS = re.compile(r"^(?P<metric>[A-Za-z]+)-(?P<cls>.+)$")


def per_class_rows(results: Dict[str, Dict[str, float]]):
    """Per-class metrics of detectron2-style results (``{"sem_seg": {"IoU-car": ...}, "segm":
    {"AP-car": ...}}``): the column names ("IoU", "segm AP", ...) and one row per class."""
    columns, rows = [], OrderedDict()
    for task, metrics in results.items():
        if not isinstance(metrics, dict):
            continue
        for key, value in metrics.items():
            m = _PER_CLASS.match(key)
            if not m:
                continue
            column = m["metric"] if task == "sem_seg" else f"{task} {m['metric']}"
            if column not in columns:
                columns.append(column)
            rows.setdefault(m["cls"], {})[column] = float(value)
    return columns, rows


class EvaluatorsWithPerClassTable(DatasetEvaluators):
    """DatasetEvaluators that, once evaluated, writes one per-class table of all their metrics to
    ``<output_dir>/per_class_metrics.csv`` (empty cells: metrics a class does not have). Only its path is
    logged: each evaluator logs its own per-class tables already."""

    def __init__(self, evaluators, output_dir: str):
        super().__init__(evaluators)
        self._output_dir = output_dir

    def evaluate(self):
        results = super().evaluate()
        if not comm.is_main_process() or not results:
            return results
        columns, rows = per_class_rows(results)
        if rows and self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, "per_class_metrics.csv")
            tmp = path + ".tmp"
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["class"] + columns)
                for name, row in rows.items():
                    writer.writerow([name] + [f"{row[c]:.4f}" if c in row else "" for c in columns])
            os.replace(tmp, path)  # never a half-written table
            logging.getLogger(__name__).info(f"Per-class metrics ({', '.join(columns)}) written to {path}")
        return results
