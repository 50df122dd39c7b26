"""COCO panoptic data for detectron2's PanopticFPN: made from what users have, loaded with its instances.

- :func:`make_coco_panoptic` converts a COCO instances json plus a folder of semantic label maps into
  COCO panoptic format (one PNG of segment ids per image and a json of ``segments_info``, Kirillov et al.
  2019) and into the "separated" semantic maps that PanopticFPN's semantic head trains on (0 = all
  things, 1..S = the stuff classes, 255 = void), as detectron2's ``datasets/prepare_panoptic_fpn.py``
  writes them for COCO.
- :func:`register_coco_panoptic_dataset` registers such a set for PanopticFPN: each record has the
  panoptic ground truth (``pan_seg_file_name``, ``segments_info``) for ``COCOPanopticEvaluator``, the
  instances of its thing segments (``annotations``, RLE) for the detector and, given a semantic root,
  ``sem_seg_file_name`` for the semantic head. Its metadata follows detectron2's separated COCO
  convention (``stuff_classes[0]`` is "things"; stuff contiguous ids start at 1).

detectron2's own ``load_coco_panoptic_json`` derives each image's file from its PNG's name with a
".jpg" extension (true of COCO only); this loader takes it from the json's ``images``.
"""
import collections
import json
import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..sem_seg_io import LABEL_EXTS, read_label_map
from ..image_io import DataFileError
from ._atomic import check_output_folder, staged_folder
from .coco_instances import validate_coco_json

__all__ = ["PanopticDataError", "make_coco_panoptic", "panoptic_categories", "read_panoptic_ids", "separated_map", "panoptic_separated_metadata", "load_coco_panoptic_separated",
           "register_coco_panoptic_dataset", "PANOPTIC_LAYOUT"]

logger = logging.getLogger(__name__)

VOID = 255  # separated semantic maps: unlabelled pixels (and the panoptic id 0)
THINGS = 0  # separated semantic maps: every thing pixel
# make_coco_panoptic's output folder: the panoptic json, its PNGs, and PanopticFPN's semantic maps
PANOPTIC_LAYOUT = {"json": "panoptic.json", "panoptic_root": "panoptic", "sem_seg_root": "panoptic_semseg"}


class PanopticDataError(DataFileError):
    """A panoptic dataset (or its sources) that cannot be converted or loaded; the message names the file."""


def _id2rgb(ids: np.ndarray) -> np.ndarray:
    from panopticapi.utils import id2rgb  # COCO's own encoding: id = R + 256 G + 256^2 B

    return id2rgb(ids).astype(np.uint8)


def read_panoptic_ids(path: str) -> np.ndarray:
    """A COCO panoptic PNG's segment ids (H, W): id = R + 256 G + 256^2 B (panopticapi's ``rgb2id``)."""
    from panopticapi.utils import rgb2id

    if not os.path.isfile(path):
        raise PanopticDataError(f"Panoptic PNG not found: {path}")
    try:
        with Image.open(path) as pil:
            rgb = np.asarray(pil.convert("RGB"))
    except Exception as e:
        raise PanopticDataError(f"Unreadable panoptic PNG {path}: {e}") from None
    return rgb2id(rgb)


def _palette(n: int, seed: int) -> List[List[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(40, 256, size=(n, 3)).tolist()


def _find_label_map(sem_seg_dir: str, file_name: str) -> str:
    stem = os.path.splitext(file_name)[0]
    for ext in LABEL_EXTS:
        path = os.path.join(sem_seg_dir, stem + ext)
        if os.path.isfile(path):
            return path
    raise PanopticDataError(f"No label map for image {file_name} in {sem_seg_dir}: expected {stem}"
                            f"{{{','.join(LABEL_EXTS)}}} (label maps are paired with images by file name)")


def _decode(segm, h: int, w: int) -> np.ndarray:
    if isinstance(segm, list):  # polygons
        rle = mask_util.merge(mask_util.frPyObjects(segm, h, w))
    elif isinstance(segm["counts"], list):  # uncompressed RLE
        rle = mask_util.frPyObjects(segm, h, w)
    else:
        rle = segm
    return mask_util.decode(rle).astype(bool)


def separated_map(ids: np.ndarray, segments: List[dict], thing_ids, stuff_to_contiguous: Dict[int, int]) -> np.ndarray:
    """PanopticFPN's semantic target of a panoptic map (``ids``, ``segments`` with dataset category ids): every
    thing pixel 0, a stuff pixel its class's contiguous id (from 1), anything else void (255)."""
    out = np.full(ids.shape, VOID, np.uint8)
    for seg in segments:
        cat = seg["category_id"]
        if cat in thing_ids:
            out[ids == seg["id"]] = THINGS
        elif cat in stuff_to_contiguous:
            out[ids == seg["id"]] = stuff_to_contiguous[cat]
    return out


# how make_coco_panoptic settles instances that overlap (panoptic segments cannot): refuse, or let one be on top
OVERLAPS = ("error", "later-on-top", "smaller-on-top")


def _paint_order(anns: List[dict], masks: Dict[int, np.ndarray], overlaps: str) -> List[dict]:
    """Annotations in the order they claim pixels: each keeps only the pixels no earlier one took."""
    if overlaps == "later-on-top":  # the drawing order of the json: a later annotation covers an earlier one
        return sorted(anns, key=lambda a: -a["id"])
    if overlaps == "smaller-on-top":  # a small object inside a large one stays visible (as in most label tools)
        return sorted(anns, key=lambda a: (int(masks[a["id"]].sum()), a["id"]))
    return sorted(anns, key=lambda a: a["id"])


def _convert_image(img: dict, anns: List[dict], label: np.ndarray, label_path: str, stuff_values: Dict[int, int],
                   json_file: str, ignore_label: int, overlaps: str = "error"):
    """One image -> (panoptic ids (H, W) int32, segments_info, instances hidden)."""
    h, w = img["height"], img["width"]
    where = f"image {img['file_name']} (id {img['id']}) of {json_file}"
    if label.shape != (h, w):
        raise PanopticDataError(f"Label map {label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but {where} "
                                f"is {w}x{h}: a label map must match its image")
    ids = np.zeros((h, w), np.int32)
    owner = {}  # segment id -> annotation id, for the overlap message
    segments, hidden = [], 0
    masks = {a["id"]: _decode(a["segmentation"], h, w) for a in anns}
    for ann in _paint_order(anns, masks, overlaps):
        mask = masks[ann["id"]]
        if not mask.any():
            continue  # validate_coco_json lets an empty (fully cropped) mask through; it has no pixel to claim
        clash = ids[mask]
        if clash.any() and overlaps == "error":
            other = owner[int(clash[clash > 0][0])]
            raise PanopticDataError(
                f"Annotations {other} and {ann['id']} of {where} overlap on {int((clash > 0).sum())} pixels: panoptic "
                f"segments cannot overlap. Choose which is on top (--overlaps {' or '.join(OVERLAPS[1:])}), or "
                f"fix the json.")
        mask = mask & (ids == 0)
        if not mask.any():
            hidden += 1  # wholly under the instances on top of it
            continue
        on_ignore = int((label[mask] == ignore_label).sum())
        if on_ignore:
            raise PanopticDataError(
                f"Annotation {ann['id']} (category {ann['category_id']}) of {where} lies over {on_ignore} pixels "
                f"that the label map {label_path} marks ignore ({ignore_label}): an instance cannot be unlabelled. "
                f"Fix the label map or the annotation.")
        seg_id = len(segments) + 1
        ids[mask], owner[seg_id] = seg_id, ann["id"]
        segments.append({"id": seg_id, "category_id": ann["category_id"], "iscrowd": int(ann.get("iscrowd", 0)),
                         "area": int(mask.sum()), "bbox": [float(v) for v in mask_util.toBbox(
                             mask_util.encode(np.asfortranarray(mask.astype(np.uint8))))]})
    free = ids == 0
    for value, category_id in stuff_values.items():
        mask = free & (label == value)
        if not mask.any():
            continue
        seg_id = len(segments) + 1
        ids[mask] = seg_id
        ys, xs = np.nonzero(mask)
        segments.append({"id": seg_id, "category_id": category_id, "iscrowd": 0, "area": int(mask.sum()),
                         "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                  float(ys.max() - ys.min() + 1)]})
    return ids, segments, hidden


def panoptic_categories(things: List[dict], stuff_names: Sequence[str]) -> List[dict]:
    """COCO panoptic categories: the instance ``things`` (ids kept) then ``stuff_names``, numbered after the
    largest thing id; colours kept, or from a fixed palette."""
    things = sorted(things, key=lambda c: c["id"])
    first_stuff_id = max([c["id"] for c in things], default=0) + 1
    thing_colors, stuff_colors = _palette(len(things), 0), _palette(len(stuff_names), 1)
    return (
        [{"id": c["id"], "name": c["name"], "supercategory": c.get("supercategory", "thing"), "isthing": 1,
          "color": list(c.get("color", thing_colors[k]))} for k, c in enumerate(things)]
        + [{"id": first_stuff_id + k, "name": n, "supercategory": "stuff", "isthing": 0, "color": stuff_colors[k]}
           for k, n in enumerate(stuff_names)]
    )


def make_coco_panoptic(instances_json: str, sem_seg_dir: str, classes: Sequence[str], out_dir: str, *,
                       ignore_label: int = 255, overlaps: str = "error", overwrite: bool = False) -> dict:
    """Convert a COCO instances json and semantic label maps to COCO panoptic and separated semantic maps.

    Each pixel becomes: the instance that covers it; else, if its label is a stuff class, that stuff
    class's segment; else void (0): labels of thing classes with no instance, and ``ignore_label``.
    The json's categories are the things. The stuff classes are the ``classes`` (label value ``k`` is
    ``classes[k]``) whose names are not thing categories, with category ids after the largest thing id.

    Instances that overlap are an error unless ``overlaps`` says which is on top: "later-on-top" (higher
    annotation id, the json's drawing order) or "smaller-on-top"; the one below keeps its other pixels, or
    is dropped if none are left (counted in the log).

    Writes, under ``out_dir`` (see ``PANOPTIC_LAYOUT``): ``panoptic.json``, ``panoptic/<stem>.png`` and
    ``panoptic_semseg/<stem>.png``. Everything is checked and written in a temporary folder first, so a
    failure leaves nothing at ``out_dir``.

    Raises:
        PanopticDataError: naming the file: a missing or mis-sized label map, a label that is no class,
            overlapping instances, an instance over ignored pixels, or ``out_dir`` already there.
        COCOFormatError: an invalid instances json.

    Returns:
        The panoptic json (a dict).
    """
    if overlaps not in OVERLAPS:
        raise ValueError(f"overlaps must be one of {OVERLAPS}, got {overlaps!r}")
    check_output_folder(out_dir, overwrite, PanopticDataError)
    dataset = validate_coco_json(instances_json)  # schema, ids, masks and categories, the file named
    classes = list(classes)
    things = dataset["categories"]
    thing_names = {c["name"] for c in things}
    stuff_names = [n for n in classes if n not in thing_names]
    if len(stuff_names) > 254:
        raise PanopticDataError(f"{len(stuff_names)} stuff classes: the separated maps are 8-bit (255 = void)")
    categories = panoptic_categories(things, stuff_names)
    stuff_ids = [c["id"] for c in categories if not c["isthing"]]
    stuff_values = {classes.index(n): stuff_ids[k] for k, n in enumerate(stuff_names)}  # label value -> category id
    meta = panoptic_separated_metadata(categories)
    by_image = collections.defaultdict(list)
    for ann in dataset["annotations"]:
        by_image[ann["image_id"]].append(ann)

    with staged_folder(out_dir) as tmp:
        pan_dir, sem_dir = (os.path.join(tmp, PANOPTIC_LAYOUT[k]) for k in ("panoptic_root", "sem_seg_root"))
        annotations, hidden = [], 0
        for img in sorted(dataset["images"], key=lambda x: x["id"]):
            label_path = _find_label_map(sem_seg_dir, img["file_name"])
            label = read_label_map(label_path)
            bad = np.setdiff1d(np.unique(label), list(range(len(classes))) + [ignore_label])
            if bad.size:
                raise PanopticDataError(
                    f"Label map {label_path} has values {bad[:8].tolist()} that are no class: the {len(classes)} "
                    f"classes {classes} take 0..{len(classes) - 1}, and {ignore_label} is ignored")
            ids, segments, n_hidden = _convert_image(img, by_image[img["id"]], label, label_path, stuff_values,
                                                     instances_json, ignore_label, overlaps)
            hidden += n_hidden
            separated = separated_map(ids, segments, meta["thing_dataset_id_to_contiguous_id"],
                                      meta["stuff_dataset_id_to_contiguous_id"])
            stem = os.path.splitext(img["file_name"])[0]
            for folder, array in ((pan_dir, _id2rgb(ids)), (sem_dir, separated)):
                path = os.path.join(folder, stem + ".png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Image.fromarray(array).save(path)
            annotations.append({"image_id": img["id"], "file_name": stem + ".png", "segments_info": segments})
        panoptic = {"images": dataset["images"], "annotations": annotations, "categories": categories}
        with open(os.path.join(tmp, PANOPTIC_LAYOUT["json"]), "w") as f:
            json.dump(panoptic, f)
    n_seg = sum(len(a["segments_info"]) for a in annotations)
    logger.info(f"Wrote COCO panoptic {out_dir}: {len(annotations)} images, {n_seg} segments, {len(things)} thing "
                f"and {len(stuff_names)} stuff categories {stuff_names}"
                + (f"; {hidden} instances wholly under others ({overlaps}) left out" if hidden else ""))
    return panoptic


def panoptic_separated_metadata(categories: List[dict]) -> dict:
    """detectron2's metadata for a separated panoptic dataset (as its builtin COCO ``_separated``): thing
    classes with contiguous ids from 0, ``stuff_classes`` = ["things", stuff...] with stuff ids from 1."""
    things = [c for c in categories if c.get("isthing", 1)]
    stuff = [c for c in categories if not c.get("isthing", 1)]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [tuple(c["color"]) for c in things if "color" in c] or None,
        "thing_dataset_id_to_contiguous_id": {c["id"]: k for k, c in enumerate(things)},
        "stuff_classes": ["things"] + [c["name"] for c in stuff],
        "stuff_colors": [(82, 18, 128)] + [tuple(c.get("color", (128, 128, 128))) for c in stuff],
        # dataset id 0 -> "things" (0), as detectron2's builtin separated COCO metadata
        "stuff_dataset_id_to_contiguous_id": {0: 0, **{c["id"]: k + 1 for k, c in enumerate(stuff)}},
    }


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise PanopticDataError(f"Panoptic json not found: {path}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise PanopticDataError(f"Unreadable panoptic json {path}: {e}") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise PanopticDataError(f"Panoptic json {path} has no list {missing}: expected COCO panoptic format "
                                f"(images, annotations with segments_info, categories with isthing)")
    return data


def load_coco_panoptic_separated(panoptic_json: str, image_root: str, panoptic_root: str,
                                 sem_seg_root: Optional[str] = None, *, image_file: Optional[Callable[[dict], str]] = None) -> List[dict]:
    """Records for PanopticFPN: image, panoptic ground truth, its thing instances and (with
    ``sem_seg_root``) the separated semantic map. Category ids are contiguous (separated metadata).
    ``image_file(image entry)`` gives an image's path (default: ``image_root``/its file_name).

    Raises:
        PanopticDataError: naming the file: a missing PNG or semantic map, a PNG of the wrong size, a
            segment that is not in its PNG, an unknown category.
    """
    data = _read_json(panoptic_json)
    meta = panoptic_separated_metadata(data["categories"])
    thing_ids, stuff_ids = meta["thing_dataset_id_to_contiguous_id"], meta["stuff_dataset_id_to_contiguous_id"]
    images = {img["id"]: img for img in data["images"]}
    records = []
    for ann in data["annotations"]:
        img = images.get(ann["image_id"])
        if img is None:
            raise PanopticDataError(f"{panoptic_json}: annotation {ann['file_name']} has image_id {ann['image_id']}, "
                                    f"which is not in its images")
        png = os.path.join(panoptic_root, ann["file_name"])
        if not os.path.isfile(png):
            raise PanopticDataError(f"Panoptic PNG not found: {png} (image {img['file_name']} of {panoptic_json})")
        ids = read_panoptic_ids(png)
        if ids.shape != (img["height"], img["width"]):
            raise PanopticDataError(f"Panoptic PNG {png} is {ids.shape[1]}x{ids.shape[0]} (WxH) but its image "
                                    f"{img['file_name']} is {img['width']}x{img['height']} in {panoptic_json}")
        segments, instances = [], []
        for seg in ann["segments_info"]:
            cat = seg["category_id"]
            if cat not in thing_ids and cat not in stuff_ids:
                raise PanopticDataError(f"{panoptic_json}: segment {seg['id']} of {ann['file_name']} has category "
                                        f"{cat}, which is not in its categories")
            mask = ids == seg["id"]
            if not mask.any():
                raise PanopticDataError(f"{panoptic_json}: segment {seg['id']} of {ann['file_name']} has no pixel "
                                        f"in {png}")
            isthing = cat in thing_ids
            segments.append({**seg, "category_id": thing_ids[cat] if isthing else stuff_ids[cat], "isthing": isthing})
            if isthing:
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                instances.append({"bbox": list(seg["bbox"]), "bbox_mode": BoxMode.XYWH_ABS, "segmentation": rle,
                                  "category_id": thing_ids[cat], "iscrowd": int(seg.get("iscrowd", 0))})
        path = image_file(img) if image_file is not None else os.path.join(image_root, img["file_name"])
        record = {"file_name": path, "image_id": img["id"],
                  "height": img["height"], "width": img["width"], "pan_seg_file_name": png,
                  "segments_info": segments, "annotations": instances}
        if sem_seg_root is not None:
            sem = os.path.join(sem_seg_root, ann["file_name"])
            if not os.path.isfile(sem):
                raise PanopticDataError(f"Separated semantic map not found: {sem} (image {img['file_name']} of "
                                        f"{panoptic_json}); make_panoptic.py writes them in {PANOPTIC_LAYOUT['sem_seg_root']}/")
            record["sem_seg_file_name"] = sem
        records.append(record)
    return records


def register_coco_panoptic_dataset(name: str, panoptic_json: str, image_root: str, panoptic_root: str,
                                   sem_seg_root: Optional[str] = None, *, categories: Optional[List[dict]] = None,
                                   prepare: Optional[Callable[[], None]] = None) -> None:
    """Register a COCO panoptic set under ``name`` for PanopticFPN (see the module docstring).

    Without ``sem_seg_root`` it can be evaluated (PQ, and AP of the things) but not train a semantic head.
    The metadata are set now, from ``categories`` or else the json's (separated convention), with
    ``evaluator_type="coco_panoptic_seg"``; the data is read and checked when first loaded, after
    ``prepare()`` (e.g. generating it).
    """
    if categories is None:
        categories = _read_json(panoptic_json)["categories"]

    def load():
        if prepare is not None:
            prepare()
        return load_coco_panoptic_separated(panoptic_json, image_root, panoptic_root, sem_seg_root)

    DatasetCatalog.register(name, load)
    meta = {k: v for k, v in panoptic_separated_metadata(categories).items() if v is not None}
    MetadataCatalog.get(name).set(
        panoptic_root=panoptic_root, image_root=image_root, panoptic_json=panoptic_json, sem_seg_root=sem_seg_root,
        evaluator_type="coco_panoptic_seg", ignore_label=VOID, label_divisor=1000, **meta,
    )
