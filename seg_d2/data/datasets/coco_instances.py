"""Register COCO-format instance datasets, after checking the json and the images.

``register_coco_instances`` has detectron2's signature; ``register_coco_dataset(name, json, image_root)``
is the short form. The data is checked when it is first loaded (as detectron2 loads it, lazily), and
a problem raises :class:`COCOFormatError` naming the json file and listing what is wrong, instead of
an assertion deep inside pycocotools, a segfault, or a silently dropped annotation. Checks:

- schema: top-level ``images``, ``annotations``, ``categories`` lists and their required keys, of the
  right types; integer ids; no duplicate image, annotation or category id;
- annotations pointing at missing images or categories; ``iscrowd`` 0/1, ``ignore`` 0;
- every number finite (no NaN or infinity: pycocotools turns a NaN polygon into a 23 GB mask);
- polygons with fewer than 3 points, an odd number of coordinates, or points outside the image;
- masks (polygons or RLE) that cover no pixel, such as a polygon whose points coincide;
- RLE whose ``size`` is not the image's [height, width], or whose runs do not add up to its pixels;
- bboxes of non-positive size or outside the image (1 px tolerance for float round-off);
- keypoints (x, y, v triplets) and ``area``, where given;
- image files missing, unreadable, or of a size other than the json's ``height``/``width`` (after
  EXIF rotation, as detectron2 reads them; from the header only).

Validation modes (``validation=`` argument, ``SEG_D2.DATASETS.COCO_VALIDATION`` for ``--coco-dataset``):

- ``"strict"`` (the default; keep it for evaluation data): any problem rejects the dataset;
- ``"lenient"``: invalid annotations are dropped, as detectron2 drops what it cannot use, with one
  warning that counts each kind of problem and names the first few. Problems with the images, the
  categories or the file's structure are still errors. The evaluator then compares with the kept
  annotations (metadata ``json_file`` is set only when none was dropped).

The json is parsed and its images checked once per process (cached by path, size and modification
time), not at every evaluation. Loading gives what detectron2's ``load_coco_json`` gives: category ids
(contiguous or not) map to 0..K-1 through ``thing_dataset_id_to_contiguous_id``, and ``iscrowd``
annotations are kept with their flag (the training mapper drops them, COCO evaluation ignores them).

Errors: :class:`COCOFormatError`, a :class:`~seg_d2.data.image_io.DataFileError` (``ValueError``).
"""
import collections
import json
import logging
import math
import os
import pickle
import threading
from typing import Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..image_io import DataFileError, image_size

__all__ = ["COCOFormatError", "VALIDATION_MODES", "validate_coco_json", "load_coco_instances",
           "register_coco_instances", "register_coco_dataset", "json_categories"]

logger = logging.getLogger(__name__)

REQUIRED_KEYS = {
    "images": ("id", "file_name", "height", "width"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}
VALIDATION_MODES = ("strict", "lenient")
BBOX_TOLERANCE = 1.0  # pixels: COCO's float boxes and polygons may overshoot the image by round-off
MAX_REPORTED = 20  # errors listed in one message
LENIENT_NAMED = 5  # dropped annotations named in the lenient summary
MAX_PIXELS = 2 ** 31 - 1  # pycocotools counts runs in 32 bits
_CACHE_SIZE = 8  # parsed/validated jsons (and category lists) kept per process


class COCOFormatError(DataFileError):
    """A COCO-format json (or its images) is invalid. The message names the file and each problem."""


def _number(v) -> bool:
    """A finite int or float (not a bool)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond float's range
        return False


def _is_id(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _nonfinite(values) -> bool:
    return any(isinstance(v, float) and not math.isfinite(v) for v in values)


def _rle_string_counts(counts: str) -> Optional[np.ndarray]:
    """The runs of a compressed RLE string (pycocotools' ``rleFrString``), or None if it is malformed:
    characters outside '0'..'o', a last number left open, or a run negative or over 32 bits."""
    try:
        c = np.frombuffer(counts.encode("ascii"), np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        return None
    if c.size == 0:
        return c
    if c.min() < 0 or c.max() > 63 or c[-1] & 0x20:
        return None
    ends = np.flatnonzero((c & 0x20) == 0)
    starts = np.r_[0, ends[:-1] + 1]
    lengths = ends - starts + 1
    if lengths.max() > 11:  # 55 bits: beyond any image
        return None
    k = np.arange(c.size) - np.repeat(starts, lengths)
    vals = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    vals = np.where(c[ends] & 0x10, vals - np.left_shift(1, 5 * lengths), vals)  # sign bit
    runs = vals.copy()  # run i >= 3 is stored as a difference from run i - 2
    runs[1::2] = np.cumsum(vals[1::2])
    runs[2::2] = np.cumsum(vals[2::2])
    if runs.min() < 0 or runs.max() >= 2 ** 32:
        return None
    return runs


def _check_rle(segm: dict, img, where: str) -> List[Tuple[str, str]]:
    if "size" not in segm or "counts" not in segm:
        return [("bad RLE", f"{where}: RLE 'segmentation' needs the keys 'size' and 'counts'")]
    size, counts = segm["size"], segm["counts"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_id(v) and v >= 0 for v in size)):
        return [("bad RLE", f"{where}: RLE 'size' must be [height, width], got {size!r}")]
    if img is not None and size != [img["height"], img["width"]]:
        return [("RLE size", f"{where}: RLE size {size} (height, width) differs from its image's "
                             f"[{img['height']}, {img['width']}]")]
    if isinstance(counts, list):
        if not all(_is_id(v) and 0 <= v < 2 ** 32 for v in counts):
            return [("bad RLE", f"{where}: RLE 'counts' must be non-negative integers (uncompressed RLE) or a "
                                f"string (compressed RLE)")]
        runs = counts
    elif isinstance(counts, str):
        runs = _rle_string_counts(counts)
        if runs is None:
            return [("bad RLE", f"{where}: RLE 'counts' is not a valid compressed RLE string")]
    else:
        return [("bad RLE", f"{where}: RLE 'counts' must be a string or a list, got {type(counts).__name__}")]
    total = int(sum(int(v) for v in runs)) if isinstance(runs, list) else int(runs.sum())
    if total != size[0] * size[1]:
        return [("RLE size", f"{where}: RLE runs cover {total} pixels, its size {size[0]}x{size[1]} has "
                             f"{size[0] * size[1]}")]
    foreground = sum(int(v) for v in runs[1::2])  # runs alternate background, foreground, ...
    if foreground == 0:
        return [("empty mask", f"{where}: its RLE has no foreground pixel")]
    return []


def _check_segmentation(segm, img, where: str) -> List[Tuple[str, str]]:
    if isinstance(segm, dict):
        return _check_rle(segm, img, where)
    if not isinstance(segm, list):
        return [("bad polygon", f"{where}: 'segmentation' must be a list of polygons or an RLE dict, "
                                f"got {type(segm).__name__}")]
    if not segm:
        return [("bad polygon", f"{where}: 'segmentation' is an empty list of polygons")]
    problems = []
    for k, poly in enumerate(segm):
        if isinstance(poly, list) and _nonfinite(poly):
            problems.append(("non-finite number", f"{where}: polygon {k} holds NaN or infinity"))
        elif not isinstance(poly, list) or not all(_number(v) for v in poly):
            problems.append(("bad polygon", f"{where}: polygon {k} is not a flat list of numbers "
                                            f"[x1, y1, x2, y2, ...]"))
        elif len(poly) % 2:
            problems.append(("bad polygon", f"{where}: polygon {k} has an odd number of coordinates ({len(poly)})"))
        elif len(poly) < 6:
            problems.append(("bad polygon", f"{where}: polygon {k} has {len(poly) // 2} points; a polygon needs at "
                                            f"least 3"))
        elif img is not None:
            t, w, h = BBOX_TOLERANCE, img["width"], img["height"]
            if not (all(-t <= x <= w + t for x in poly[0::2]) and all(-t <= y <= h + t for y in poly[1::2])):
                problems.append(("polygon outside image", f"{where}: polygon {k} has points outside its image "
                                                          f"({w}x{h})"))
    if not problems and img is not None and _polygons_area(segm, img) == 0:
        # e.g. all points equal or collinear: the instance would train an empty mask, and in evaluation
        # a perfect prediction could never match it (segm AP below 100 for perfect predictions)
        problems.append(("empty mask", f"{where}: its polygons cover no pixel of its {img['width']}x{img['height']} "
                                       f"image (rasterised as pycocotools and detectron2 do)"))
    return problems


def _polygons_area(polygons, img) -> int:
    """Pixels of valid polygons, rasterised by pycocotools at the image's size."""
    rles = mask_util.frPyObjects([[float(v) for v in p] for p in polygons], img["height"], img["width"])
    return int(mask_util.area(mask_util.merge(rles)))


def _check_bbox(bbox, img, where: str) -> List[Tuple[str, str]]:
    if isinstance(bbox, list) and _nonfinite(bbox):
        return [("non-finite number", f"{where}: bbox {bbox} holds NaN or infinity")]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        return [("bad bbox", f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")]
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return [("bad bbox", f"{where}: bbox {bbox} has a non-positive width or height")]
    if img is not None and (x < -BBOX_TOLERANCE or y < -BBOX_TOLERANCE or x + w > img["width"] + BBOX_TOLERANCE
                            or y + h > img["height"] + BBOX_TOLERANCE):
        return [("bbox outside image", f"{where}: bbox {bbox} (x, y, w, h) lies outside its image "
                                       f"({img['width']}x{img['height']})")]
    return []


def _check_annotation(ann, i: int, images: Dict, categories: Dict, seen: set) -> List[Tuple[str, str]]:
    """(kind, message) of each problem of one annotation; empty if it is valid."""
    if not isinstance(ann, dict):
        return [("missing key", f"annotations[{i}] must be an object, got {type(ann).__name__}")]
    missing = [k for k in REQUIRED_KEYS["annotations"] if k not in ann]
    if missing:
        return [("missing key", f"annotations[{i}] lacks the required key(s) {missing}")]
    if not _is_id(ann["id"]):
        return [("bad id", f"annotations[{i}]: 'id' must be an integer, got {ann['id']!r}")]
    where = f"annotation id {ann['id']}"
    if ann["id"] in seen:
        return [("duplicate id", f"duplicate annotation id {ann['id']}")]
    seen.add(ann["id"])
    problems = []
    img = images.get(ann["image_id"]) if _is_id(ann["image_id"]) else None
    if img is None:
        problems.append(("unknown image", f"{where}: image_id {ann['image_id']!r} is not among the images"))
    if not (_is_id(ann["category_id"]) and ann["category_id"] in categories):
        problems.append(("unknown category", f"{where}: category_id {ann['category_id']!r} is not among the "
                                             f"categories {sorted(categories)}"))
    if ann.get("iscrowd", 0) not in (0, 1):
        problems.append(("bad iscrowd", f"{where}: iscrowd must be 0 or 1, got {ann['iscrowd']!r}"))
    if ann.get("ignore", 0) != 0:
        problems.append(("ignore", f"{where}: 'ignore' {ann['ignore']!r} is not supported (detectron2 "
                                   f"neither): remove the annotation or use iscrowd 1"))
    problems += _check_bbox(ann["bbox"], img, where)
    if "segmentation" in ann:
        problems += _check_segmentation(ann["segmentation"], img, where)
    if ann.get("keypoints") is not None:
        kp = ann["keypoints"]
        if isinstance(kp, list) and _nonfinite(kp):
            problems.append(("non-finite number", f"{where}: keypoints hold NaN or infinity"))
        elif not (isinstance(kp, list) and len(kp) % 3 == 0 and all(_number(v) for v in kp)):
            problems.append(("bad keypoints", f"{where}: 'keypoints' must be a flat list of (x, y, visibility) "
                                              f"numbers"))
    if "area" in ann:
        area = ann["area"]
        if isinstance(area, float) and not math.isfinite(area):
            problems.append(("non-finite number", f"{where}: area {area} is not finite"))
        elif not (_number(area) and area >= 0):
            problems.append(("bad area", f"{where}: 'area' must be a non-negative number, got {area!r}"))
    return problems


def _check_image_entries(dataset: dict, errors: List[str]) -> Dict:
    images = {}
    for i, img in enumerate(dataset["images"]):
        if not _is_id(img["id"]):
            errors.append(f"images[{i}]: 'id' must be an integer, got {img['id']!r}")
            continue
        if img["id"] in images:
            errors.append(f"duplicate image id {img['id']}")
        h, w, name = img["height"], img["width"], img["file_name"]
        if not (_is_id(h) and _is_id(w) and h > 0 and w > 0 and h * w <= MAX_PIXELS):
            errors.append(f"image id {img['id']}: height and width must be positive integers (at most "
                          f"{MAX_PIXELS} pixels), got {h!r}, {w!r}")
        elif not (isinstance(name, str) and name and "\0" not in name):
            errors.append(f"image id {img['id']}: 'file_name' must be a non-empty string, got {name!r}")
        else:
            images[img["id"]] = img
    return images


def _check_categories(dataset: dict, errors: List[str]) -> Dict:
    categories = {}
    for i, cat in enumerate(dataset["categories"]):
        if not _is_id(cat["id"]):
            errors.append(f"categories[{i}]: 'id' must be an integer, got {cat['id']!r}")
        elif cat["id"] in categories:
            errors.append(f"duplicate category id {cat['id']}")
        elif not isinstance(cat["name"], str):
            errors.append(f"category id {cat['id']}: 'name' must be a string, got {cat['name']!r}")
        else:
            categories[cat["id"]] = cat
    return categories


def _check_images(images: List[dict], image_root: str, exif_transpose: bool, errors: List[str]) -> None:
    for img in images:
        path = os.path.join(image_root, img["file_name"])
        if not os.path.isfile(path):
            errors.append(f"image id {img['id']}: file {path} is missing")
            continue
        try:
            h, w = image_size(path, exif_transpose=exif_transpose)
        except DataFileError as e:
            errors.append(f"image id {img['id']}: file {path} cannot be read as an image ({e})")
            continue
        if (h, w) != (img["height"], img["width"]):
            errors.append(f"image id {img['id']}: file {path} is {w}x{h} (width x height), but the json says "
                          f"{img['width']}x{img['height']}")


def _parse(json_file: str) -> dict:
    if not os.path.isfile(json_file):
        raise COCOFormatError(f"COCO json {json_file} does not exist")
    try:
        with open(json_file, "rb") as f:
            return json.load(f)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        raise COCOFormatError(f"Invalid COCO json {json_file}: not valid JSON ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise COCOFormatError(f"COCO json {json_file} cannot be read: {e}") from None


def _summary(json_file: str, dropped: Dict[int, List[Tuple[str, str]]], total: int) -> str:
    kinds = collections.Counter(kind for problems in dropped.values() for kind in dict(problems))
    named = [problems[0][1] for problems in list(dropped.values())[:LENIENT_NAMED]]
    return (f"{json_file}: dropped {len(dropped)} of {total} annotations (validation 'lenient'): "
            + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common())
            + ". First: " + "; ".join(named) + ("; ..." if len(dropped) > LENIENT_NAMED else ""))


def _validate(json_file: str, dataset, image_root: Optional[str], mode: str, exif_transpose: bool):
    """(dataset, number of annotations dropped); see :func:`validate_coco_json`."""
    def fail(errors):
        more = f"\n  ... and {len(errors) - MAX_REPORTED} more" if len(errors) > MAX_REPORTED else ""
        raise COCOFormatError(f"Invalid COCO json {json_file}:\n  " + "\n  ".join(errors[:MAX_REPORTED]) + more)

    if not isinstance(dataset, dict):
        fail([f"the top level must be an object with 'images', 'annotations', 'categories', "
              f"got {type(dataset).__name__}"])
    errors = []
    for section, keys in REQUIRED_KEYS.items():
        if section not in dataset:
            errors.append(f"missing the top-level key '{section}'")
        elif not isinstance(dataset[section], list):
            errors.append(f"'{section}' must be a list, got {type(dataset[section]).__name__}")
        elif section != "annotations":  # an annotation's own problems are checked below
            for i, entry in enumerate(dataset[section]):
                missing = [k for k in keys if not isinstance(entry, dict) or k not in entry]
                if missing:
                    errors.append(f"{section}[{i}] lacks the required key(s) {missing}")
    if errors:
        fail(errors)
    images, categories = _check_image_entries(dataset, errors), _check_categories(dataset, errors)
    if errors:
        fail(errors)
    seen, dropped = set(), {}
    for i, ann in enumerate(dataset["annotations"]):
        problems = _check_annotation(ann, i, images, categories, seen)
        if problems:
            dropped[i] = problems
    # detectron2's annotations_to_instances looks at the first annotation only (KeyError on the others), and
    # COCO's segm evaluation needs every one: masks on some annotations means masks on all
    kept = [i for i in range(len(dataset["annotations"])) if i not in dropped]
    with_mask = sum("segmentation" in dataset["annotations"][i] for i in kept)
    if 0 < with_mask < len(kept):
        for i in kept:
            ann = dataset["annotations"][i]
            if "segmentation" not in ann:
                dropped[i] = [("missing segmentation",
                               f"annotation id {ann['id']}: no 'segmentation', while {with_mask} other annotations "
                               f"have one (mask training and evaluation need it on all)")]
    if dropped and mode == "strict":
        fail([message for problems in dropped.values() for _, message in problems])
    if image_root is not None:
        _check_images(dataset["images"], image_root, exif_transpose, errors)
        if errors:
            fail(errors)
    if dropped:
        logger.warning(_summary(json_file, dropped, len(dataset["annotations"])))
        dataset = dict(dataset, annotations=[a for i, a in enumerate(dataset["annotations"]) if i not in dropped])
    return dataset, len(dropped)


# Parsed and validated jsons, pickled: one bytes object per entry, which the garbage collector does not walk
# (so forked data-loader workers do not copy it page by page) and callers cannot modify.
_cache: "collections.OrderedDict[tuple, bytes]" = collections.OrderedDict()
_cache_lock = threading.Lock()


def _cache_get(key: tuple):
    with _cache_lock:
        blob = _cache.get(key)
        if blob is not None:
            _cache.move_to_end(key)
    return None if blob is None else pickle.loads(blob)


def _cache_put(key: tuple, value, evict: Optional[tuple] = None) -> None:
    blob = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    with _cache_lock:
        _cache.pop(evict, None)
        _cache[key] = blob
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def _file_key(json_file: str) -> tuple:
    try:
        st = os.stat(json_file)
    except OSError:
        raise COCOFormatError(f"COCO json {json_file} does not exist") from None
    return os.path.abspath(json_file), st.st_size, st.st_mtime_ns


def _parsed(json_file: str):
    """The json as parsed, reading the file at most once per process (until validated)."""
    key = ("parsed", *_file_key(json_file))
    dataset = _cache_get(key)
    if dataset is None:
        dataset = _parse(json_file)
        _cache_put(key, dataset)
    return dataset


def _validated(json_file: str, image_root: Optional[str], mode: str, exif_transpose: bool):
    """(dataset, number of annotations dropped) of :func:`_validate`, computed once per process."""
    file_key = _file_key(json_file)
    key = ("validated", *file_key, image_root, mode, exif_transpose)
    result = _cache_get(key)
    if result is None:
        result = _validate(json_file, _parsed(json_file), image_root, mode, exif_transpose)
        _cache_put(key, result, evict=("parsed", *file_key))  # the raw json is no longer needed
    return result


def json_categories(json_file: str) -> List[str]:
    """The category names of a COCO json sorted by id, as detectron2's ``thing_classes`` (the file parsed
    once per process, shared with :func:`validate_coco_json`).

    Raises:
        COCOFormatError: the file is missing, not JSON, or its categories malformed.
    """
    key = ("categories", *_file_key(json_file))
    names = _cache_get(key)
    if names is not None:
        return names
    dataset = _parsed(json_file)
    errors = []
    if not (isinstance(dataset, dict) and isinstance(dataset.get("categories"), list)
            and all(isinstance(c, dict) and "id" in c and "name" in c for c in dataset["categories"])):
        raise COCOFormatError(f"Invalid COCO json {json_file}: no valid 'categories' list")
    categories = _check_categories(dataset, errors)
    if errors:
        raise COCOFormatError(f"Invalid COCO json {json_file}:\n  " + "\n  ".join(errors[:MAX_REPORTED]))
    names = [categories[i]["name"] for i in sorted(categories)]
    _cache_put(key, names)
    return names


def _check_mode(validation: str) -> None:
    if validation not in VALIDATION_MODES:
        raise ValueError(f"COCO validation {validation!r}: choose one of {VALIDATION_MODES}")


def validate_coco_json(json_file: str, image_root: Optional[str] = None, dataset: Optional[dict] = None, *,
                       validation: str = "strict", exif_transpose: bool = True) -> dict:
    """Check a COCO instances json (and, given ``image_root``, its image files).

    Args:
        json_file: path of the json; read unless ``dataset`` is given (then only named in errors).
        image_root: folder of the images; None skips the image-file checks.
        dataset: the already-parsed json (not cached).
        validation: "strict" (any problem is an error) or "lenient" (invalid annotations dropped, with
            one summary warning).
        exif_transpose: compare the json's sizes with the images as rotated by their EXIF orientation
            (detectron2's reader, instance datasets) or as stored (semantic datasets).

    Returns:
        The parsed json ("lenient": without the invalid annotations).

    Raises:
        COCOFormatError: listing every problem found (the first ``MAX_REPORTED``), the file named.
    """
    _check_mode(validation)
    if dataset is not None:
        return _validate(json_file, dataset, image_root, validation, exif_transpose)[0]
    return _validated(json_file, image_root, validation, exif_transpose)[0]


def _to_detectron2_dicts(dataset: dict, image_root: str, dataset_name: Optional[str]) -> List[dict]:
    """detectron2's ``load_coco_json`` on an already validated json: the same dicts and metadata."""
    cat_ids = sorted(c["id"] for c in dataset["categories"])
    id_map = None
    if dataset_name is not None:
        names = {c["id"]: c["name"] for c in dataset["categories"]}
        id_map = {v: i for i, v in enumerate(cat_ids)}
        MetadataCatalog.get(dataset_name).set(thing_classes=[names[i] for i in cat_ids],
                                              thing_dataset_id_to_contiguous_id=id_map)
    by_image = collections.defaultdict(list)
    for ann in dataset["annotations"]:
        by_image[ann["image_id"]].append(ann)
    records = []
    for img in sorted(dataset["images"], key=lambda x: x["id"]):
        objs = []
        for ann in by_image[img["id"]]:
            obj = {key: ann[key] for key in ("iscrowd", "bbox", "keypoints", "category_id") if key in ann}
            segm = ann.get("segmentation")
            if segm:
                if isinstance(segm, dict) and isinstance(segm["counts"], list):
                    segm = mask_util.frPyObjects(segm, *segm["size"])  # to compressed RLE
                obj["segmentation"] = segm
            if ann.get("keypoints"):  # pixel indices -> coordinates, as detectron2
                obj["keypoints"] = [v + 0.5 if k % 3 != 2 else v for k, v in enumerate(ann["keypoints"])]
            obj["bbox_mode"] = BoxMode.XYWH_ABS
            if id_map:
                obj["category_id"] = id_map[obj["category_id"]]
            objs.append(obj)
        records.append({"file_name": os.path.join(image_root, img["file_name"]), "height": img["height"],
                        "width": img["width"], "image_id": img["id"], "annotations": objs})
    return records


def load_coco_instances(json_file: str, image_root: str, dataset_name: Optional[str] = None, *,
                        filter_empty: bool = False, check_images: bool = True,
                        validation: str = "strict") -> List[dict]:
    """Validate, then load as detectron2's ``load_coco_json`` does (json parsed once per process).

    Args:
        filter_empty: drop images without any non-crowd annotation. Keep them (the default) for
            evaluation; training drops them anyway with DATALOADER.FILTER_EMPTY_ANNOTATIONS.
        check_images: also check that every image file exists and has the json's size.
        validation: "strict" or "lenient" (see the module docstring).
    """
    _check_mode(validation)
    dataset, dropped = _validated(json_file, image_root if check_images else None, validation, True)
    dicts = _to_detectron2_dicts(dataset, image_root, dataset_name)
    if dataset_name is not None and not dropped:
        MetadataCatalog.get(dataset_name).set(json_file=json_file)  # the evaluator's ground truth
    if filter_empty:
        dicts = [d for d in dicts if any(a.get("iscrowd", 0) == 0 for a in d["annotations"])]
    return dicts


def register_coco_instances(name: str, metadata: dict, json_file: str, image_root: str, *,
                            filter_empty: bool = False, check_images: bool = True, validation: str = "strict") -> None:
    """detectron2's ``register_coco_instances``, with the data checked when first loaded.

    Sets the metadata ``image_root``, ``evaluator_type="coco"``, ``metadata`` and ``json_file`` (the
    evaluator's ground truth; with ``validation="lenient"`` only once loaded without dropping anything,
    ``source_json_file`` before); ``thing_classes`` and ``thing_dataset_id_to_contiguous_id`` are set on
    loading.
    """
    _check_mode(validation)
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_coco_instances(
        json_file, image_root, name, filter_empty=filter_empty, check_images=check_images, validation=validation))
    where = {"json_file" if validation == "strict" else "source_json_file": json_file}
    MetadataCatalog.get(name).set(image_root=image_root, evaluator_type="coco", **where, **metadata)


def register_coco_dataset(name: str, json_file: str, image_root: str, **kwargs) -> None:
    """Register a COCO-format instance dataset from a name, a json and an image root.

    ``kwargs`` are those of :func:`register_coco_instances` (``filter_empty``, ``check_images``,
    ``validation``).
    """
    register_coco_instances(name, {}, json_file, image_root, **kwargs)
