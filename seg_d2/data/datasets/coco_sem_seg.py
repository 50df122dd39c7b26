"""COCO-format annotations (instances and/or stuff) as a semantic segmentation dataset.

The jsons are checked (``validate_coco_json``), then turned into one PNG label map per image under
``sem_seg_root``, written once (atomically: several processes may convert at once) and reused
while the jsons are unchanged::

    register_coco_sem_seg("my_sem_train", "images/train", "sem_seg/train",
                          instances_json="instances_train.json", stuff_json="stuff_train.json")

Classes are ``background`` (pixels no annotation covers; pass ``background=None`` to ignore them
instead) followed by the categories of every json in id order. Segmentations may be polygons, RLE or
uncompressed RLE. Overlaps are resolved deterministically: stuff first, then crowd regions as the
ignore label, then instances; within each group the larger masks first (ties by annotation id), so a
smaller object lying on a larger one stays visible.
"""
import hashlib
import json
import os
from typing import List, Optional, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog

from ._atomic import DONE_MARKER, discard_stale_dataset, write_dataset_once
from .coco_instances import COCOFormatError, validate_coco_json

__all__ = ["coco_json_to_sem_seg", "register_coco_sem_seg"]

_MARKER = "SEG_D2_COCO_SEM_SEG.json"


def _segm_to_mask(segm, h: int, w: int, where: str) -> np.ndarray:
    if isinstance(segm, list):
        rle = mask_util.merge(mask_util.frPyObjects(segm, h, w))
    elif isinstance(segm, dict) and isinstance(segm.get("counts"), list):
        rle = mask_util.frPyObjects(segm, h, w)  # uncompressed RLE
    elif isinstance(segm, dict):
        rle = dict(segm)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    else:
        raise COCOFormatError(f"{where}: unsupported segmentation {type(segm).__name__}")
    mask = mask_util.decode(rle)
    if mask.shape != (h, w):
        raise COCOFormatError(f"{where}: its mask is {mask.shape[0]}x{mask.shape[1]}, the image {h}x{w}")
    return mask.astype(bool)


def _categories(datasets: List[dict], background: Optional[str], files: Sequence[str]):
    """(class names, dataset category id -> contiguous id)."""
    cats = {}
    for d in datasets:
        for c in d["categories"]:
            if c["id"] in cats and cats[c["id"]] != c["name"]:
                raise COCOFormatError(f"category id {c['id']} is '{cats[c['id']]}' in one json, '{c['name']}' in "
                                      f"another ({' and '.join(files)})")
            cats[c["id"]] = c["name"]
    offset = 1 if background is not None else 0
    ids = sorted(cats)
    names = ([background] if background is not None else []) + [cats[i] for i in ids]
    return names, {cid: k + offset for k, cid in enumerate(ids)}


def _signature(json_files: Sequence[str], options: dict) -> str:
    h = hashlib.sha1(json.dumps(options, sort_keys=True).encode())
    for f in json_files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _written(sem_seg_root: str, signature: str) -> bool:
    """Whether ``sem_seg_root`` holds complete label maps of the jsons with ``signature``."""
    if not os.path.isfile(os.path.join(sem_seg_root, DONE_MARKER)):
        return False
    try:
        with open(os.path.join(sem_seg_root, _MARKER)) as f:
            return json.load(f).get("signature") == signature
    except (OSError, ValueError):
        return False


def coco_json_to_sem_seg(
    sem_seg_root: str,
    *,
    instances_json: Optional[str] = None,
    stuff_json: Optional[str] = None,
    image_root: Optional[str] = None,
    ignore_label: int = 255,
    background: Optional[str] = "background",
) -> List[dict]:
    """Write the label maps (if not already there for these jsons) and return the dataset dicts.

    The label maps are written to a temporary folder and moved into place when all are done
    (``write_dataset_once``), so an error or interruption leaves nothing half-written, and of several
    processes converting at once (one per rank) one moves its folder into place and the others use
    it: complete label maps are never rewritten or moved while others read them.

    Raises:
        COCOFormatError: an invalid json, or ``sem_seg_root`` holding files seg_d2 did not write.
    """
    sources = [(f, k) for f, k in ((stuff_json, "stuff"), (instances_json, "instances")) if f]
    if not sources:
        raise ValueError("coco_json_to_sem_seg needs instances_json and/or stuff_json")
    # label maps follow the pixels as stored (no EXIF rotation)
    datasets = [validate_coco_json(f, image_root, exif_transpose=False) for f, _ in sources]
    names, cat_map = _categories(datasets, background, [f for f, _ in sources])
    if len(names) > ignore_label >= 0:
        raise ValueError(f"ignore_label {ignore_label} collides with the {len(names)} classes")
    if max(len(names) - 1, ignore_label) > 65535:
        raise ValueError(f"{len(names)} classes do not fit a 16-bit label map")
    images = {}
    for d in datasets:
        for img in d["images"]:
            prev = images.setdefault(img["id"], img)
            if (prev["height"], prev["width"], prev["file_name"]) != (img["height"], img["width"], img["file_name"]):
                raise COCOFormatError(f"image id {img['id']} differs between the jsons "
                                      f"{' and '.join(f for f, _ in sources)}: {prev} vs {img}")
    options = dict(ignore_label=ignore_label, background=background, kinds=[k for _, k in sources])
    signature = _signature([f for f, _ in sources], options)

    def label_file(img):
        return os.path.join(sem_seg_root, os.path.splitext(img["file_name"])[0] + ".png")

    def dataset_dicts():
        return [
            {
                "file_name": os.path.join(image_root, img["file_name"]) if image_root else img["file_name"],
                "sem_seg_file_name": label_file(img), "height": img["height"], "width": img["width"],
                "image_id": img["id"],
            }
            for img in sorted(images.values(), key=lambda x: x["id"])
        ]

    if _written(sem_seg_root, signature):
        return dataset_dicts()
    if os.path.isdir(sem_seg_root):
        if os.listdir(sem_seg_root) and not os.path.isfile(os.path.join(sem_seg_root, _MARKER)):
            raise COCOFormatError(
                f"{sem_seg_root} exists and was not written by seg_d2 (no {_MARKER}): choose an empty or new "
                f"folder for the generated label maps"
            )
        # label maps of other jsons (or an empty folder): replaced, unless another process just did
        discard_stale_dataset(sem_seg_root, lambda root: not _written(root, signature))

    # paint order: stuff (rank 0), crowd (1), instances (2); larger first within a rank, then by id
    anns = []
    for d, (src, kind) in zip(datasets, sources):
        for a in d["annotations"]:
            if "segmentation" not in a:
                raise COCOFormatError(f"Invalid COCO json {src}: annotation id {a['id']} has no 'segmentation': cannot "
                                      f"draw a label map")
            rank = 0 if kind == "stuff" else (1 if a.get("iscrowd", 0) else 2)
            anns.append((rank, a, src))
    by_image = {i: [] for i in images}
    for rank, a, src in anns:
        by_image[a["image_id"]].append((rank, a, src))

    def write(tmp):
        for img_id, img in images.items():
            h, w = img["height"], img["width"]
            label = np.full((h, w), 0 if background is not None else ignore_label, np.uint16)
            masks = [(rank, a, _segm_to_mask(a["segmentation"], h, w, f"{src}: annotation id {a['id']}"))
                     for rank, a, src in by_image[img_id]]
            masks.sort(key=lambda t: (t[0], -int(t[2].sum()), t[1]["id"]))
            for rank, a, m in masks:
                label[m] = ignore_label if rank == 1 else cat_map[a["category_id"]]
            out = os.path.join(tmp, os.path.splitext(img["file_name"])[0] + ".png")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            if not cv2.imwrite(out, label.astype(np.uint8) if label.max() < 256 else label):
                raise OSError(f"Cannot write the label map {out}")
        with open(os.path.join(tmp, _MARKER), "w") as f:
            json.dump({"signature": signature, "classes": names}, f)

    write_dataset_once(sem_seg_root, write)
    if not _written(sem_seg_root, signature):  # another process wrote other jsons' label maps there
        raise RuntimeError(f"{sem_seg_root} was written at the same time from other jsons: convert again")
    return dataset_dicts()


def register_coco_sem_seg(
    name: str,
    image_root: str,
    sem_seg_root: str,
    *,
    instances_json: Optional[str] = None,
    stuff_json: Optional[str] = None,
    ignore_label: int = 255,
    background: Optional[str] = "background",
) -> None:
    """Register ``name``: COCO-format jsons turned into label maps (see :func:`coco_json_to_sem_seg`).

    The jsons are read now for the class names (``stuff_classes``); the label maps are written on
    first load. Metadata: ``stuff_classes``, ``ignore_label``, ``evaluator_type="sem_seg"``, and
    ``stuff_dataset_id_to_contiguous_id`` so that saved predictions carry the jsons' category ids
    (background as id 0 when 0 is free).
    """
    jsons = [f for f in (stuff_json, instances_json) if f]
    if not jsons:
        raise ValueError(f"register_coco_sem_seg('{name}') needs instances_json and/or stuff_json")
    datasets = [validate_coco_json(f) for f in jsons]
    names, cat_map = _categories(datasets, background, jsons)
    id_map = dict(cat_map)
    if background is not None and 0 not in id_map:
        id_map[0] = 0
    DatasetCatalog.register(name, lambda: coco_json_to_sem_seg(
        sem_seg_root, instances_json=instances_json, stuff_json=stuff_json, image_root=image_root,
        ignore_label=ignore_label, background=background,
    ))
    meta = dict(image_root=image_root, sem_seg_root=sem_seg_root, evaluator_type="sem_seg",
                ignore_label=ignore_label, stuff_classes=names)
    if background is None or 0 not in cat_map:
        meta["stuff_dataset_id_to_contiguous_id"] = id_map
    MetadataCatalog.get(name).set(**meta)
