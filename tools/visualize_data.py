#!/usr/bin/env python
"""Draw a registered dataset's ground truth: as stored (--source annotation) or as the model sees it,
after the config's dataset mapper and augmentations (--source dataloader).

Semantic datasets: label maps in class colours with a legend; pixels of the dataset's ignore_label
grey; label ids that are not classes of the dataset magenta ("unknown id N"). Instance datasets:
masks, boxes and class names, coloured by class. The end of the run prints, per class id, how many
images, pixels or instances have it, and flags ids that are not classes: that is how wrong class
ids and masks show up.

Examples:
    python tools/visualize_data.py --config-file configs/Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml \\
        --source dataloader --output output/vis_data --num-images 8
    python tools/visualize_data.py --config-file CONFIG --source annotation --dataset my_dataset_val --output out/

Writes OUTPUT/<image name>.png per image and OUTPUT/class_stats.json.
"""
import argparse
import json
import os
import sys
from collections import defaultdict

import numpy as np
import tqdm
from tabulate import tabulate

# seg_d2 before detectron2: its import silences the torch.jit deprecation warnings of detectron2's and fvcore's imports
import seg_d2  # noqa: F401  (registers seg_d2's models and datasets)

from detectron2.config import CfgNode, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.utils.logger import setup_logger

from seg_d2.utils.predictor import SetupError, config_datasets, image_to_rgb, load_config, read_image
from seg_d2.utils.visualizer import (
    class_names, draw_instance_annotations, draw_panoptic, draw_sem_seg, unique_name, write_image,
)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="yaml config, or LazyConfig .py")
    p.add_argument("--source", choices=["annotation", "dataloader"], required=True,
                   help="the annotations as stored, or the training data loader's output (mapper + augmentation)")
    p.add_argument("--output", "--output-dir", dest="output", required=True, metavar="DIR")
    p.add_argument("--dataset", nargs="+", metavar="NAME",
                   help="registered dataset(s) to draw (default: the config's training datasets)")
    p.add_argument("--num-images", type=int, default=0,
                   help="images to draw (default: all; for the data loader, as many as the datasets have)")
    p.add_argument("--scale", type=float, default=1.0, help="size of the drawings relative to the images")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides: KEY VALUE pairs (yaml) or key=value (LazyConfig)")
    return p


class ClassStats:
    """Per class id: images, and pixels (semantic) or instances having it."""

    def __init__(self):
        self.images = defaultdict(int)
        self.count = defaultdict(int)
        self.kind = None

    def add(self, kind, ids, counts):
        self.kind = self.kind or kind
        for i, n in zip(ids, counts):
            self.images[int(i)] += 1
            self.count[int(i)] += int(n)

    def table(self, metadata, ignore_label):
        key = "stuff_classes" if self.kind == "pixels" else "thing_classes"
        num = len(metadata.get(key, None) or [])
        names = class_names(metadata, num, key)
        rows, unknown = [], []
        for i in sorted(self.count):
            if 0 <= i < num:
                name, note = names[i], ""
            elif self.kind == "pixels" and i == ignore_label:
                name, note = "ignore", "ignore_label"
            else:
                name, note = "?", f"NOT A CLASS: the dataset has {num} {key}"
                unknown.append(i)
            rows.append({"id": i, "name": name, "images": self.images[i], self.kind or "count": self.count[i],
                         "note": note})
        return rows, unknown


def _label_stats(labels):
    ids, counts = np.unique(labels, return_counts=True)
    return ids.tolist(), counts.tolist()


def draw_dict(dic, metadata, ignore_label, stats, scale):
    """A dataset dict as stored: the image file and its label map or annotations."""
    from seg_d2.data.sem_seg_io import read_label_map

    image = image_to_rgb(read_image(dic["file_name"], "RGB"), "RGB")
    if "pan_seg_file_name" in dic:  # panoptic: every segment, things and stuff
        from seg_d2.data.datasets.coco_panoptic import read_panoptic_ids

        info = dic["segments_info"]
        stats.add("instances", *_label_stats([s["category_id"] for s in info if s["isthing"]]))
        return draw_panoptic(image, read_panoptic_ids(dic["pan_seg_file_name"]), info, metadata, scale=scale)
    if dic.get("annotations"):
        annos = dic["annotations"]
        classes = [a["category_id"] for a in annos]
        boxes = np.array([
            BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) if len(a["bbox"]) == 4 else a["bbox"]
            for a in annos
        ], dtype=np.float64)
        masks = [a["segmentation"] for a in annos] if all("segmentation" in a for a in annos) else None
        stats.add("instances", *_label_stats(classes))
        return draw_instance_annotations(image, classes, metadata, boxes=boxes, masks=masks,
                                         is_crowd=[a.get("iscrowd", 0) for a in annos], scale=scale)
    if "sem_seg_file_name" in dic:
        labels = read_label_map(dic["sem_seg_file_name"])
        stats.add("pixels", *_label_stats(labels))
        return draw_sem_seg(image, labels, metadata, ignore_label=ignore_label, scale=scale)
    stats.add("instances", [], [])
    return draw_instance_annotations(image, [], metadata, scale=scale)


def draw_model_input(per_image, metadata, input_format, ignore_label, stats, scale):
    """A data loader's output: the augmented image tensor and its ``instances`` or ``sem_seg``."""
    image = image_to_rgb(per_image["image"].permute(1, 2, 0).numpy(), input_format)
    if "instances" in per_image:
        inst = per_image["instances"]
        classes = inst.gt_classes.tolist()
        boxes = inst.gt_boxes.tensor.numpy() if inst.has("gt_boxes") else None
        masks = inst.gt_masks if inst.has("gt_masks") else None
        stats.add("instances", *_label_stats(classes))
        return draw_instance_annotations(image, classes, metadata, boxes=boxes, masks=masks, scale=scale)
    if "sem_seg" in per_image:
        labels = per_image["sem_seg"].numpy()
        stats.add("pixels", *_label_stats(labels))
        return draw_sem_seg(image, labels, metadata, ignore_label=ignore_label, scale=scale)
    stats.add("instances", [], [])
    return draw_instance_annotations(image, [], metadata, scale=scale)


def train_loader(cfg, names):
    """The config's training data loader (its mapper and augmentations) over ``names``."""
    if isinstance(cfg, CfgNode):
        from seg_d2.data import build_train_loader

        cfg = cfg.clone()
        cfg.defrost()
        cfg.DATASETS.TRAIN = tuple(names)
        return build_train_loader(cfg)
    cfg.dataloader.train.dataset.names = names
    return instantiate(cfg.dataloader.train)


def main(args):
    cfg = load_config(args.config_file, args.opts)
    names = list(args.dataset or config_datasets(cfg, "train"))
    if not names:
        raise SetupError(f"{args.config_file} names no training dataset: pass --dataset NAME")
    missing = [n for n in names if n not in DatasetCatalog.list()]
    if missing:
        known = ", ".join(sorted(DatasetCatalog.list())[:30])
        raise SetupError(f"Dataset(s) {missing} not registered (registered: {known}, ...)")
    metadata = MetadataCatalog.get(names[0])
    lazy = not isinstance(cfg, CfgNode)
    input_format = cfg.dataloader.train.mapper.get("image_format", "BGR") if lazy else cfg.INPUT.FORMAT
    ignore_label = metadata.get("ignore_label", 255 if lazy else cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
    os.makedirs(args.output, exist_ok=True)
    stats, taken, written = ClassStats(), set(), []

    def save(vis, file_name):
        path = os.path.join(args.output, unique_name(os.path.splitext(os.path.basename(file_name))[0], taken) + ".png")
        written.append(write_image(path, vis))

    if args.source == "annotation":
        dicts = [d for n in names for d in DatasetCatalog.get(n)]
        dicts = dicts[: args.num_images] if args.num_images > 0 else dicts
        for dic in tqdm.tqdm(dicts, unit="img", file=sys.stderr):
            save(draw_dict(dic, metadata, ignore_label, stats, args.scale), dic["file_name"])
    else:
        total = args.num_images if args.num_images > 0 else sum(len(DatasetCatalog.get(n)) for n in names)
        bar = tqdm.tqdm(total=total, unit="img", file=sys.stderr)
        for batch in train_loader(cfg, names):
            for per_image in batch:
                if len(written) < total:
                    save(draw_model_input(per_image, metadata, input_format, ignore_label, stats, args.scale),
                         per_image["file_name"])
                    bar.update(1)
            if len(written) >= total:
                break
        bar.close()

    rows, unknown = stats.table(metadata, ignore_label)
    print(f"Ground truth of {', '.join(names)} ({args.source}), per class id:")
    print(tabulate(rows, headers="keys", tablefmt="pipe"))
    with open(os.path.join(args.output, "class_stats.json"), "w") as f:
        json.dump({"datasets": names, "source": args.source, "images": written, "classes": rows}, f, indent=1)
    if unknown:
        print(f"WARNING: label ids {unknown} are not classes of {names[0]}: check its class ids and masks "
              f"(drawn magenta as 'unknown id N')")
    print(f"Wrote {len(written)} images to {args.output}")
    return written


if __name__ == "__main__":
    args = get_parser().parse_args()
    setup_logger(name="seg_d2")
    try:
        main(args)
    except SetupError as e:
        print(f"visualize_data.py: error: {e}", file=sys.stderr)
        sys.exit(2)
