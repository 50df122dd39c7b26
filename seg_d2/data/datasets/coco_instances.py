"""Register COCO-format instance datasets, after checking the json and the images.

``register_coco_instances`` has detectron2's signature; ``register_coco_dataset(name, json, image_root)``
is the short form. The data is checked when it is first loaded (as detectron2 loads it, lazily), and
any problem raises :class:`COCOFormatError` naming the json file and listing what is wrong, instead of
an assertion deep inside pycocotools or a silently dropped annotation. Checks:

- schema: top-level ``images``, ``annotations``, ``categories`` lists and their required keys;
- duplicate image, annotation or category ids;
- annotations pointing at missing images or categories;
- polygons with fewer than 3 points or an odd number of coordinates;
- RLE whose ``size`` is not the image's [height, width];
- bboxes of non-positive size or outside the image (1 px tolerance for float round-off);
- image files missing, or of a size other than the json's ``height``/``width``.

Loading is detectron2's ``load_coco_json``: category ids (contiguous or not) map to 0..K-1 through
``thing_dataset_id_to_contiguous_id``, and ``iscrowd`` annotations are kept with their flag (the
training mapper drops them, COCO evaluation ignores them).
"""
import json
import os
from typing import Dict, List, Optional

from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = ["COCOFormatError", "validate_coco_json", "load_coco_instances", "register_coco_instances",
           "register_coco_dataset"]

REQUIRED_KEYS = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}
BBOX_TOLERANCE = 1.0  # pixels: COCO's float boxes may overshoot the image by round-off
MAX_REPORTED = 20  # errors listed in one message


class COCOFormatError(ValueError):
    """A COCO-format json (or its images) is invalid. The message names the file and each problem."""


def _check_segmentation(segm, img, where: str, errors: List[str]) -> None:
    if isinstance(segm, list):
        if not segm:
            errors.append(f"{where}: 'segmentation' is an empty list of polygons")
        for k, poly in enumerate(segm):
            if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
                errors.append(f"{where}: polygon {k} is not a flat list of numbers [x1, y1, x2, y2, ...]")
            elif len(poly) % 2:
                errors.append(f"{where}: polygon {k} has an odd number of coordinates ({len(poly)})")
            elif len(poly) < 6:
                errors.append(f"{where}: polygon {k} has {len(poly) // 2} points; a polygon needs at least 3")
    elif isinstance(segm, dict):
        if "size" not in segm or "counts" not in segm:
            errors.append(f"{where}: RLE 'segmentation' needs the keys 'size' and 'counts'")
        elif img is not None and list(segm["size"]) != [img["height"], img["width"]]:
            errors.append(f"{where}: RLE size {list(segm['size'])} (height, width) differs from its image's "
                          f"[{img['height']}, {img['width']}]")
    else:
        errors.append(f"{where}: 'segmentation' must be a list of polygons or an RLE dict, "
                      f"got {type(segm).__name__}")


def _check_bbox(bbox, img, where: str, errors: List[str]) -> None:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        errors.append(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
        return
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        errors.append(f"{where}: bbox {bbox} has a non-positive width or height")
    elif img is not None and (x < -BBOX_TOLERANCE or y < -BBOX_TOLERANCE or x + w > img["width"] + BBOX_TOLERANCE
                              or y + h > img["height"] + BBOX_TOLERANCE):
        errors.append(f"{where}: bbox {bbox} (x, y, w, h) lies outside its image "
                      f"({img['width']}x{img['height']})")


def _check_images(images: List[dict], image_root: str, errors: List[str]) -> None:
    for img in images:
        path = os.path.join(image_root, img["file_name"])
        if not os.path.isfile(path):
            errors.append(f"image id {img['id']}: file {path} is missing")
            continue
        try:
            with Image.open(path) as im:
                w, h = im.size
        except OSError as e:
            errors.append(f"image id {img['id']}: file {path} cannot be read as an image ({e})")
            continue
        if (h, w) != (img["height"], img["width"]):
            errors.append(f"image id {img['id']}: file {path} is {w}x{h} (width x height), but the json says "
                          f"{img['width']}x{img['height']}")


def validate_coco_json(json_file: str, image_root: Optional[str] = None, dataset: Optional[dict] = None) -> dict:
    """Check a COCO instances json (and, given ``image_root``, its image files).

    Args:
        json_file: path of the json; read unless ``dataset`` is given (then only named in errors).
        image_root: folder of the images; None skips the image-file checks.
        dataset: the already-parsed json.

    Returns:
        The parsed json.

    Raises:
        COCOFormatError: listing every problem found (the first ``MAX_REPORTED``), the file named.
    """
    def fail(errors):
        more = f"\n  ... and {len(errors) - MAX_REPORTED} more" if len(errors) > MAX_REPORTED else ""
        raise COCOFormatError(f"Invalid COCO json {json_file}:\n  " + "\n  ".join(errors[:MAX_REPORTED]) + more)

    if dataset is None:
        if not os.path.isfile(json_file):
            raise COCOFormatError(f"COCO json {json_file} does not exist")
        try:
            with open(json_file) as f:
                dataset = json.load(f)
        except json.JSONDecodeError as e:
            raise COCOFormatError(f"Invalid COCO json {json_file}: not valid JSON ({e})") from None
    if not isinstance(dataset, dict):
        fail([f"the top level must be an object with 'images', 'annotations', 'categories', "
              f"got {type(dataset).__name__}"])

    errors = []
    for section, keys in REQUIRED_KEYS.items():
        if section not in dataset:
            errors.append(f"missing the top-level key '{section}'")
        elif not isinstance(dataset[section], list):
            errors.append(f"'{section}' must be a list, got {type(dataset[section]).__name__}")
        else:
            for i, entry in enumerate(dataset[section]):
                missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
                if missing:
                    errors.append(f"{section}[{i}] lacks the required key(s) {missing}")
    if errors:
        fail(errors)

    def index(section) -> Dict:
        by_id = {}
        singular = {"images": "image", "annotations": "annotation", "categories": "category"}[section]
        for entry in dataset[section]:
            if entry["id"] in by_id:
                errors.append(f"duplicate {singular} id {entry['id']}")
            by_id[entry["id"]] = entry
        return by_id

    images, categories = index("images"), index("categories")
    index("annotations")
    for img in dataset["images"]:
        h, w = img["height"], img["width"]
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
            errors.append(f"image id {img['id']}: height and width must be positive integers, got {h}, {w}")
    for ann in dataset["annotations"]:
        where = f"annotation id {ann['id']}"
        img = images.get(ann["image_id"])
        if img is None:
            errors.append(f"{where}: image_id {ann['image_id']} is not among the images")
        if ann["category_id"] not in categories:
            errors.append(f"{where}: category_id {ann['category_id']} is not among the categories "
                          f"{sorted(categories)}")
        if ann.get("iscrowd", 0) not in (0, 1):
            errors.append(f"{where}: iscrowd must be 0 or 1, got {ann['iscrowd']!r}")
        _check_bbox(ann["bbox"], img, where, errors)
        if "segmentation" in ann:
            _check_segmentation(ann["segmentation"], img, where, errors)
    if errors:
        fail(errors)
    if image_root is not None:
        _check_images(dataset["images"], image_root, errors)
        if errors:
            fail(errors)
    return dataset


def load_coco_instances(json_file: str, image_root: str, dataset_name: Optional[str] = None, *,
                        filter_empty: bool = False, check_images: bool = True) -> List[dict]:
    """Validate, then load with detectron2's ``load_coco_json``.

    Args:
        filter_empty: drop images without any non-crowd annotation. Keep them (the default) for
            evaluation; training drops them anyway with DATALOADER.FILTER_EMPTY_ANNOTATIONS.
        check_images: also check that every image file exists and has the json's size.
    """
    validate_coco_json(json_file, image_root if check_images else None)
    dicts = load_coco_json(json_file, image_root, dataset_name)
    if filter_empty:
        dicts = [d for d in dicts if any(a.get("iscrowd", 0) == 0 for a in d["annotations"])]
    return dicts


def register_coco_instances(name: str, metadata: dict, json_file: str, image_root: str, *,
                            filter_empty: bool = False, check_images: bool = True) -> None:
    """detectron2's ``register_coco_instances``, with the data checked when first loaded.

    Sets the metadata ``json_file``, ``image_root``, ``evaluator_type="coco"`` and ``metadata``;
    ``thing_classes`` and ``thing_dataset_id_to_contiguous_id`` are set on loading.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_coco_instances(
        json_file, image_root, name, filter_empty=filter_empty, check_images=check_images))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)


def register_coco_dataset(name: str, json_file: str, image_root: str, **kwargs) -> None:
    """Register a COCO-format instance dataset from a name, a json and an image root.

    ``kwargs`` are those of :func:`register_coco_instances` (``filter_empty``, ``check_images``).
    """
    register_coco_instances(name, {}, json_file, image_root, **kwargs)
