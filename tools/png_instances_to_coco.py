#!/usr/bin/env python
"""Convert instance masks stored as PNG instance-id maps to a COCO instances json (RLE masks).

Two encodings of the PNGs (8- or 16-bit, one per image, matched to the image by file stem):

- encoded (default): pixel = category_id * LABEL_DIVISOR + instance index (Cityscapes'
  ``*_instanceIds.png``). 0 is background. A value v in (0, LABEL_DIVISOR) marks a region of category
  v without instance ids: a crowd region (iscrowd=1) when v is a listed category, else background
  (e.g. Cityscapes' stuff classes).
- with --semantic DIR: pixel = instance id (0 = background), and a semantic PNG of the same stem
  in DIR gives each pixel's category id; each instance takes the category of its pixels.

Examples:
    python tools/png_instances_to_coco.py --images imgs/ --instances inst/ \\
        --categories "1:circle,2:square" --output instances.json
    python tools/png_instances_to_coco.py --images imgs/ --instances ids/ --semantic sem/ \\
        --categories categories.json --output instances.json

The json is checked (seg_d2's COCO validation) before it is written, and written atomically.
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from seg_d2.data.datasets.coco_instances import validate_coco_json

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ConversionError(ValueError):
    pass


def parse_categories(spec: str):
    """Categories from a json file (a list of {"id", "name"}, or a COCO json) or "id:name,id:name"."""
    if os.path.isfile(spec):
        with open(spec) as f:
            cats = json.load(f)
        cats = cats["categories"] if isinstance(cats, dict) else cats
        if not (isinstance(cats, list) and all(isinstance(c, dict) and {"id", "name"} <= set(c) for c in cats)):
            raise ConversionError(f"{spec}: categories must be a list of {{'id': int, 'name': str}}")
        return [{"id": int(c["id"]), "name": str(c["name"]), **{k: v for k, v in c.items() if k not in ("id", "name")}}
                for c in cats]
    cats = []
    for item in spec.split(","):
        cid, sep, name = item.partition(":")
        if not sep or not cid.strip().isdigit() or not name.strip():
            raise ConversionError(f"--categories {spec!r}: expected 'id:name,id:name,...' or a json file")
        cats.append({"id": int(cid), "name": name.strip()})
    return cats


def read_label_png(path: str) -> np.ndarray:
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise ConversionError(f"{path}: expected a single-channel 8- or 16-bit PNG, got mode {im.mode}")
        return np.array(im).astype(np.int64)


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def instance_map_to_annotations(ids: np.ndarray, categories: set, path: str, *, semantic=None,
                                label_divisor: int = 1000):
    """(category_id, iscrowd, binary mask) of every instance in one instance-id map."""
    out = []
    for v in np.unique(ids):
        v = int(v)
        if v == 0:
            continue
        mask = ids == v
        if semantic is not None:
            cats = np.unique(semantic[mask])
            if len(cats) != 1:
                raise ConversionError(f"{path}: instance {v} covers several semantic categories {cats.tolist()}")
            cat, crowd = int(cats[0]), 0
            if cat not in categories:
                raise ConversionError(f"{path}: instance {v} has semantic category {cat}, not among the "
                                      f"categories {sorted(categories)}")
        elif v < label_divisor:
            if v not in categories:
                continue  # a non-instance class (e.g. stuff): background for instance segmentation
            cat, crowd = v, 1
        else:
            cat, crowd = v // label_divisor, 0
            if cat not in categories:
                raise ConversionError(f"{path}: value {v} encodes category {cat} (divisor {label_divisor}), "
                                      f"not among the categories {sorted(categories)}")
        out.append((cat, crowd, mask))
    return out


def convert(images_dir: str, instances_dir: str, categories, *, semantic_dir=None, label_divisor=1000,
            suffix=".png"):
    """Build the COCO dict from the folders (see the module docstring)."""
    cat_ids = {c["id"] for c in categories}
    stems = {}
    for fname in sorted(os.listdir(images_dir)):
        stem, ext = os.path.splitext(fname)
        if ext.lower() in IMAGE_EXTS:
            if stem in stems:
                raise ConversionError(f"{images_dir}: two images with the stem '{stem}': {stems[stem]}, {fname}")
            stems[stem] = fname
    maps = sorted(f for f in os.listdir(instances_dir) if f.endswith(suffix))
    if not maps:
        raise ConversionError(f"{instances_dir}: no instance maps ending in '{suffix}'")
    images, annotations = [], []
    for img_id, fname in enumerate(maps, start=1):
        path = os.path.join(instances_dir, fname)
        stem = fname[: -len(suffix)]
        if stem not in stems:
            raise ConversionError(f"{path}: no image named '{stem}.*' in {images_dir}")
        ids = read_label_png(path)
        with Image.open(os.path.join(images_dir, stems[stem])) as im:
            w, h = im.size
        if ids.shape != (h, w):
            raise ConversionError(f"{path}: instance map is {ids.shape[1]}x{ids.shape[0]}, its image "
                                  f"{stems[stem]} is {w}x{h}")
        semantic = None
        if semantic_dir is not None:
            sem_path = os.path.join(semantic_dir, fname)
            if not os.path.isfile(sem_path):
                raise ConversionError(f"{path}: its semantic map {sem_path} is missing")
            semantic = read_label_png(sem_path)
            if semantic.shape != ids.shape:
                raise ConversionError(f"{sem_path}: size {semantic.shape} differs from the instance map's {ids.shape}")
        images.append({"id": img_id, "file_name": stems[stem], "height": h, "width": w})
        for cat, crowd, mask in instance_map_to_annotations(ids, cat_ids, path, semantic=semantic,
                                                             label_divisor=label_divisor):
            rle = _rle(mask)
            annotations.append({
                "id": len(annotations) + 1, "image_id": img_id, "category_id": cat, "segmentation": rle,
                "area": float(mask_util.area(rle)), "bbox": mask_util.toBbox(rle).tolist(), "iscrowd": crowd,
            })
    return {"images": images, "annotations": annotations, "categories": categories}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, help="folder of the images")
    parser.add_argument("--instances", required=True, help="folder of the PNG instance-id maps")
    parser.add_argument("--categories", required=True, help="'id:name,...' or a json list of {id, name}")
    parser.add_argument("--output", required=True, help="the COCO json to write")
    parser.add_argument("--semantic", help="folder of semantic PNGs (category per pixel), same file names")
    parser.add_argument("--label-divisor", type=int, default=1000, help="category * divisor + instance")
    parser.add_argument("--suffix", default=".png", help="instance-map file name = image stem + suffix")
    args = parser.parse_args(argv)
    try:
        coco = convert(args.images, args.instances, parse_categories(args.categories), semantic_dir=args.semantic,
                       label_divisor=args.label_divisor, suffix=args.suffix)
        validate_coco_json(args.output, args.images, dataset=coco)
    except (ConversionError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(coco, f)
    os.replace(tmp, args.output)
    print(f"Wrote {args.output}: {len(coco['images'])} images, {len(coco['annotations'])} instances "
          f"({sum(a['iscrowd'] for a in coco['annotations'])} crowd)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
