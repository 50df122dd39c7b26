"""Cityscapes (fine annotations): semantic and instance segmentation datasets.

seg_d2 registers Cityscapes itself, under its own names, instead of using detectron2's builtin
``cityscapes_fine_*`` datasets: on detectron2 main those import an internal module path and fail
for every user (detectron2 issue #5436). Nothing here imports ``detectron2.data.datasets.cityscapes``
or ``detectron2.evaluation.cityscapes_evaluation``, so it behaves the same on v0.6 and on main.

Label definitions (19 train classes, labelId -> trainId, ignore 255, 8 thing classes) come from
``cityscapesscripts.helpers.labels``.

Layout under ``root`` (``$DETECTRON2_DATASETS/cityscapes``), as the official zips unpack::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_polygons.json

Semantic training needs trainId label maps: on first load, ``load_cityscapes_semantic`` writes
``*_gtFine_labelTrainIds.png`` next to each ``*_gtFine_labelIds.png`` (the name and encoding of
cityscapesscripts' ``createTrainIdLabelImgs``), atomically, and reuses them afterwards; where the
ground-truth folder is read-only they go to a cache folder instead (``SEG_D2_CACHE``, default
``~/.cache/seg_d2``). Training then runs detectron2's own ``DatasetMapper`` unchanged.

Instances are read from the ``instanceIds`` PNGs (default) or from the ``polygons`` json, which are
rasterised exactly as cityscapesscripts' ``json2instanceImg`` rasterises them, so both sources give
the same instance map and the same dataset dicts. Each instance's mask is stored as polygons
(default, like detectron2's own Cityscapes datasets: works with either ``INPUT.MASK_FORMAT``) or as
an exact RLE (``mask_format="bitmask"``: needs ``INPUT.MASK_FORMAT "bitmask"``, keeps holes).
"""
import functools
import hashlib
import json
import logging
import multiprocessing as mp
import os
import tempfile
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from cityscapesscripts.helpers.labels import id2label, labels, name2label
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")  # the test split has no public ground truth
IMAGE_SUFFIX = "_leftImg8bit.png"
GT_SUFFIXES = {  # ground-truth kind -> file name suffix
    "labelIds": "_gtFine_labelIds.png",
    "instanceIds": "_gtFine_instanceIds.png",
    "polygons": "_gtFine_polygons.json",
    "labelTrainIds": "_gtFine_labelTrainIds.png",
}
INSTANCE_SOURCES = ("instanceIds", "polygons")
MASK_FORMATS = ("polygon", "bitmask")
IGNORE_LABEL = 255

# The 19 evaluated classes, in trainId order, and the 8 of them with instances.
_TRAIN_LABELS = sorted((l for l in labels if 0 <= l.trainId < IGNORE_LABEL), key=lambda l: l.trainId)
STUFF_CLASSES = [l.name for l in _TRAIN_LABELS]
STUFF_COLORS = [tuple(l.color) for l in _TRAIN_LABELS]
_THING_LABELS = [l for l in labels if l.hasInstances and not l.ignoreInEval]
THING_CLASSES = [l.name for l in _THING_LABELS]
THING_COLORS = [tuple(l.color) for l in _THING_LABELS]
THING_ID_TO_CONTIGUOUS = {l.id: i for i, l in enumerate(_THING_LABELS)}  # labelId -> category_id
KNOWN_LABEL_IDS = sorted(l.id for l in labels if l.id >= 0)  # ids a label map may contain: 0..33

# labelId -> trainId lookup table, for uint8 label maps.
_TRAIN_ID_LUT = np.full(256, IGNORE_LABEL, np.uint8)
for _l in labels:
    if _l.id >= 0:
        _TRAIN_ID_LUT[_l.id] = _l.trainId if 0 <= _l.trainId < IGNORE_LABEL else IGNORE_LABEL
_KNOWN_ID = np.zeros(256, bool)
_KNOWN_ID[KNOWN_LABEL_IDS] = True


def _split_dirs(root: str, split: str) -> Tuple[str, str]:
    return os.path.join(root, "leftImg8bit", split), os.path.join(root, "gtFine", split)


def _describe(path: str, limit: int = 12) -> str:
    if not os.path.exists(path):
        return f"'{path}' does not exist"
    if not os.path.isdir(path):
        return f"'{path}' is a file, not a folder"
    entries = sorted(os.listdir(path))
    shown = ", ".join(entries[:limit]) + (f", ... ({len(entries)} entries)" if len(entries) > limit else "")
    return f"'{path}' contains [{shown}]"


def layout_error(root: str, split: str, problem: str) -> FileNotFoundError:
    """A FileNotFoundError that states the expected layout and what is actually there."""
    image_dir, gt_dir = _split_dirs(root, split)
    found = [_describe(root)]
    for d in (os.path.join(root, "leftImg8bit"), image_dir, os.path.join(root, "gtFine"), gt_dir):
        if os.path.isdir(os.path.dirname(d)) and d not in found:
            found.append(_describe(d))
    return FileNotFoundError(
        f"Cityscapes split '{split}' not usable under '{root}': {problem}.\n"
        f"Expected the official layout (set DETECTRON2_DATASETS to the folder that contains 'cityscapes/'):\n"
        f"  {root}/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png\n"
        f"  {root}/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png, "
        f"..._gtFine_instanceIds.png, ..._gtFine_polygons.json\n"
        f"Found: " + "; ".join(found) + "."
    )


def cityscapes_files(root: str, split: str, gt_kinds=("labelIds",)) -> List[Tuple[str, str, Dict[str, str]]]:
    """List ``(image_file, stem, {kind: gt_file})`` of a split, sorted by city then name.

    Raises:
        FileNotFoundError: ``root`` is not in the official layout, or an image lacks one of the
            ground-truth files of ``gt_kinds``.
        ValueError: an unexpected ``.png`` file in an image folder.
    """
    image_dir, gt_dir = _split_dirs(root, split)
    for d, what in ((image_dir, "images"), (gt_dir, "ground truth")):
        if not os.path.isdir(d):
            raise layout_error(root, split, f"the {what} folder '{d}' is missing")
    cities = sorted(c for c in os.listdir(image_dir) if not c.startswith("."))
    files = []
    for city in cities:
        city_dir = os.path.join(image_dir, city)
        if not os.path.isdir(city_dir):
            raise layout_error(root, split, f"'{city_dir}' is a file; expected one folder per city")
        gt_city_dir = os.path.join(gt_dir, city)
        gt_names = set(os.listdir(gt_city_dir)) if os.path.isdir(gt_city_dir) else set()
        for name in sorted(os.listdir(city_dir)):
            if name.startswith(".") or not name.endswith(".png"):
                continue
            if not name.endswith(IMAGE_SUFFIX):
                raise ValueError(
                    f"Unexpected file '{os.path.join(city_dir, name)}' among Cityscapes images: images are "
                    f"named <city>_<seq>_<frame>{IMAGE_SUFFIX}."
                )
            stem = name[: -len(IMAGE_SUFFIX)]
            gts = {}
            for kind in gt_kinds:
                gt_name = stem + GT_SUFFIXES[kind]
                if gt_name not in gt_names:
                    raise FileNotFoundError(
                        f"Missing Cityscapes ground truth for image '{os.path.join(city_dir, name)}': "
                        f"expected '{os.path.join(gt_city_dir, gt_name)}'."
                    )
                gts[kind] = os.path.join(gt_city_dir, gt_name)
            files.append((os.path.join(city_dir, name), stem, gts))
    if not files:
        raise layout_error(root, split, f"no *{IMAGE_SUFFIX} images in '{image_dir}/<city>/'")
    return files


def label_ids_to_train_ids(label_ids: np.ndarray, file_name: str = "<array>") -> np.ndarray:
    """Map a labelIds map to trainIds (19 classes, 255 = ignore), cityscapesscripts' encoding.

    Raises:
        ValueError: the map contains ids that cityscapesscripts' labels do not define.
    """
    ids = np.unique(label_ids)
    unknown = [int(i) for i in ids if not (0 <= i < 256 and _KNOWN_ID[int(i)])]
    if unknown:
        raise ValueError(
            f"'{file_name}' contains labelIds {unknown} that cityscapesscripts' labels do not define "
            f"(known ids: {KNOWN_LABEL_IDS[0]}..{KNOWN_LABEL_IDS[-1]})."
        )
    return _TRAIN_ID_LUT[label_ids.astype(np.uint8)]


def _cache_dir() -> str:
    return os.path.expanduser(os.getenv("SEG_D2_CACHE", os.path.join("~", ".cache", "seg_d2")))


def _train_ids_file(label_file: str) -> str:
    """Where the trainIds map of ``label_file`` lives: beside it, or in the cache if read-only."""
    out = label_file[: -len(GT_SUFFIXES["labelIds"])] + GT_SUFFIXES["labelTrainIds"]
    folder = os.path.dirname(out)
    if os.access(folder, os.W_OK) or os.path.isfile(out):
        return out
    key = hashlib.sha1(os.path.abspath(folder).encode()).hexdigest()[:16]
    return os.path.join(_cache_dir(), "cityscapes_labelTrainIds", key, os.path.basename(out))


def _write_png_atomic(path: str, array: np.ndarray) -> None:
    """Write a PNG through a temporary file and a rename: readers never see half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".png", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(array).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _ensure_train_ids(label_file: str) -> Tuple[str, int, int]:
    """Return (trainIds file, height, width), writing the trainIds file if missing or stale."""
    out = _train_ids_file(label_file)
    if os.path.isfile(out) and os.path.getmtime(out) >= os.path.getmtime(label_file):
        with Image.open(out) as im:  # reads the header only
            w, h = im.size
        return out, h, w
    label_ids = np.asarray(Image.open(label_file))
    if label_ids.ndim != 2:
        raise ValueError(f"'{label_file}' is not a single-channel labelIds map (shape {label_ids.shape}).")
    _write_png_atomic(out, label_ids_to_train_ids(label_ids, label_file))
    return out, label_ids.shape[0], label_ids.shape[1]


def load_cityscapes_semantic(root: str, split: str) -> List[dict]:
    """Dataset dicts of the semantic task: ``file_name``, ``sem_seg_file_name`` (a trainIds map,
    255 = ignore), ``height``, ``width``, ``image_id``. Writes missing trainIds maps (see module doc).
    """
    files = cityscapes_files(root, split, ("labelIds",))
    missing = sum(not os.path.isfile(_train_ids_file(g["labelIds"])) for _, _, g in files)
    if missing:
        logger.info(f"Writing {missing} Cityscapes *{GT_SUFFIXES['labelTrainIds']} maps for '{split}' (once) ...")
    ret = []
    for image_file, stem, gts in files:
        train_ids_file, h, w = _ensure_train_ids(gts["labelIds"])
        ret.append({"file_name": image_file, "sem_seg_file_name": train_ids_file, "height": h, "width": w,
                    "image_id": stem})
    logger.info(f"Loaded {len(ret)} Cityscapes images of '{split}' from {root}")
    return ret


def _check_polygon_labels(json_file: str, objects: list) -> None:
    for obj in objects:
        name = obj.get("label")
        base = name[: -len("group")] if isinstance(name, str) and name.endswith("group") else name
        if name not in name2label and base not in name2label:
            raise ValueError(f"'{json_file}' has an object with label {name!r} that cityscapesscripts' labels "
                             f"do not define.")


def instance_map_from_polygons(json_file: str) -> np.ndarray:
    """Rasterise a ``*_gtFine_polygons.json`` into an instanceIds map, with cityscapesscripts'
    ``json2instanceImg.createInstanceImage`` (the tool that made the official instanceIds PNGs)."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage

    with open(json_file) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"'{json_file}' is not valid json: {e}") from None
    for key in ("imgHeight", "imgWidth", "objects"):
        if key not in data:
            raise ValueError(f"'{json_file}' lacks the key '{key}' of Cityscapes polygon annotations.")
    _check_polygon_labels(json_file, data["objects"])
    annotation = Annotation()
    annotation.fromJsonText(json.dumps(data))
    return np.asarray(createInstanceImage(annotation, "ids"), dtype=np.int32)


def _mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """Outer contours through the boundary pixels' centres (holes are not representable)."""
    contours = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[-2]
    return [(c.reshape(-1) + 0.5).tolist() for c in contours if len(c) >= 3]


def instance_map_to_annotations(
    inst: np.ndarray, file_name: str = "<array>", mask_format: str = "polygon"
) -> List[dict]:
    """detectron2 annotations of the 8 evaluated thing classes in an instanceIds map: ids >= 1000
    are single objects (labelId * 1000 + k), thing-class ids < 1000 are crowd regions (``iscrowd``
    1), as cityscapesscripts' ``instance.Instance`` reads them. Boxes (XYWH) enclose the mask.

    Args:
        mask_format: "polygon" (outer contours; an instance too thin for a 3-point contour is left
            out, as in detectron2's loader) or "bitmask" (exact RLE).

    Raises:
        ValueError: the map contains ids whose labelId cityscapesscripts does not define.
    """
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"Unknown mask_format {mask_format!r}; expected one of {MASK_FORMATS}.")
    ids = np.unique(inst)
    label_of = np.where(ids >= 1000, ids // 1000, ids)
    unknown = sorted({int(i) for i, l in zip(ids, label_of) if int(l) not in id2label or l < 0})
    if unknown:
        raise ValueError(
            f"'{file_name}' contains instance ids {unknown[:10]} whose labelIds (id // 1000 for ids >= 1000) "
            f"cityscapesscripts' labels do not define (known labelIds: {KNOWN_LABEL_IDS[0]}..{KNOWN_LABEL_IDS[-1]})."
        )
    annos = []
    for inst_id, label_id in zip(ids.tolist(), label_of.tolist()):
        if label_id not in THING_ID_TO_CONTIGUOUS:
            continue
        mask = np.asfortranarray(inst == inst_id, dtype=np.uint8)
        rle = mask_util.encode(mask)
        if mask_format == "polygon":
            segmentation = _mask_to_polygons(mask)
            if not segmentation:
                continue
        else:
            segmentation = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
        annos.append({
            "iscrowd": int(inst_id < 1000),
            "category_id": THING_ID_TO_CONTIGUOUS[label_id],
            "bbox": mask_util.toBbox(rle).tolist(),
            "bbox_mode": BoxMode.XYWH_ABS,
            "segmentation": segmentation,
        })
    return annos


def _instance_dict(item, source: str, mask_format: str) -> dict:
    image_file, stem, gts = item
    if source == "instanceIds":
        inst = np.asarray(Image.open(gts["instanceIds"])).astype(np.int32)
        gt_file = gts["instanceIds"]
    else:
        inst = instance_map_from_polygons(gts["polygons"])
        gt_file = gts["polygons"]
    if inst.ndim != 2:
        raise ValueError(f"'{gt_file}' is not a single-channel instanceIds map (shape {inst.shape}).")
    return {"file_name": image_file, "image_id": stem, "height": inst.shape[0], "width": inst.shape[1],
            "annotations": instance_map_to_annotations(inst, gt_file, mask_format)}


def load_cityscapes_instances(root: str, split: str, source: str = "instanceIds", mask_format: str = "polygon",
                              num_workers: int = -1) -> List[dict]:
    """Dataset dicts of the instance task: the masks of the 8 thing classes (crowd regions included,
    with ``iscrowd`` 1), ``category_id`` in ``THING_CLASSES`` order.

    Args:
        root: the ``cityscapes`` folder.
        split: "train" or "val".
        source: "instanceIds" (the PNGs) or "polygons" (the json, rasterised like cityscapesscripts).
        mask_format: "polygon" or "bitmask" (RLE), see ``instance_map_to_annotations``.
        num_workers: processes that parse the annotations; -1 = automatic (one for small splits).
    """
    if source not in INSTANCE_SOURCES:
        raise ValueError(f"Unknown Cityscapes instance source {source!r}; expected one of {INSTANCE_SOURCES}.")
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"Unknown mask_format {mask_format!r}; expected one of {MASK_FORMATS}.")
    files = cityscapes_files(root, split, (source,))
    if num_workers < 0:
        num_workers = 1 if len(files) < 64 else max(1, min(8, (os.cpu_count() or 1) // 2))
    parse = functools.partial(_instance_dict, source=source, mask_format=mask_format)
    if num_workers <= 1:
        ret = [parse(f) for f in files]
    else:
        with mp.Pool(num_workers) as pool:
            ret = pool.map(parse, files, chunksize=16)
    logger.info(f"Loaded {len(ret)} Cityscapes images of '{split}' ({source}, {mask_format}) from {root}")
    return ret


def cityscapes_metadata() -> dict:
    """Class names and colours shared by the semantic and instance datasets."""
    return {"stuff_classes": list(STUFF_CLASSES), "stuff_colors": list(STUFF_COLORS), "ignore_label": IGNORE_LABEL,
            "thing_classes": list(THING_CLASSES), "thing_colors": list(THING_COLORS),
            "thing_dataset_id_to_contiguous_id": dict(THING_ID_TO_CONTIGUOUS)}


# Panoptic ground truth, as cityscapesscripts' createPanopticImgs writes it (category ids = labelIds), under gtFine/
PANOPTIC_JSON, PANOPTIC_DIR = "cityscapes_panoptic_{split}.json", "cityscapes_panoptic_{split}"


def cityscapes_panoptic_categories() -> List[dict]:
    """The panoptic categories createPanopticImgs writes: every label evaluated (not ``ignoreInEval``), id =
    labelId, things = labels with instances."""
    return [{"id": l.id, "name": l.name, "color": list(l.color), "supercategory": l.category,
             "isthing": int(l.hasInstances)} for l in labels if not l.ignoreInEval]


def _panoptic_files(root: str, split: str) -> Tuple[str, str]:
    gt = os.path.join(root, "gtFine")
    json_file, png_dir = os.path.join(gt, PANOPTIC_JSON.format(split=split)), os.path.join(gt, PANOPTIC_DIR.format(split=split))
    if not (os.path.isfile(json_file) and os.path.isdir(png_dir)):
        raise layout_error(root, split, f"no panoptic ground truth {json_file} and {png_dir}/: write it once with "
                                        f"cityscapesscripts' createPanopticImgs (python -m "
                                        f"cityscapesscripts.preparation.createPanopticImgs --dataset-folder {gt})")
    return json_file, png_dir


def _separated_dir(png_dir: str) -> str:
    """Where PanopticFPN's separated semantic maps of ``png_dir`` go: beside it, or in the cache if read-only."""
    out = png_dir + "_separated"
    if os.access(os.path.dirname(png_dir), os.W_OK) or os.path.isdir(out):
        return out
    key = hashlib.sha1(os.path.abspath(png_dir).encode()).hexdigest()[:16]
    return os.path.join(_cache_dir(), "cityscapes_panoptic_separated", key)


def load_cityscapes_panoptic(root: str, split: str) -> List[dict]:
    """PanopticFPN records of a split (see :func:`~seg_d2.data.datasets.coco_panoptic.load_coco_panoptic_separated`):
    the panoptic PNGs of createPanopticImgs, their thing instances, and separated semantic maps (things 0, the 11
    stuff classes 1..11, void 255), written on first load beside the PNGs (or in the cache) and reused."""
    from .coco_panoptic import panoptic_separated_metadata, read_panoptic_ids, separated_map, load_coco_panoptic_separated

    json_file, png_dir = _panoptic_files(root, split)
    with open(json_file) as f:
        data = json.load(f)
    meta = panoptic_separated_metadata(data["categories"])
    sem_dir = _separated_dir(png_dir)
    for ann in data["annotations"]:
        out = os.path.join(sem_dir, ann["file_name"])
        if not os.path.isfile(out):
            ids = read_panoptic_ids(os.path.join(png_dir, ann["file_name"]))
            _write_png_atomic(out, separated_map(ids, ann["segments_info"], meta["thing_dataset_id_to_contiguous_id"],
                                                 meta["stuff_dataset_id_to_contiguous_id"]))
    image_dir = _split_dirs(root, split)[0]
    # the image of id "<city>_<seq>_<frame>" is leftImg8bit/<split>/<city>/<id>_leftImg8bit.png (the json's file_name,
    # "<id>_gtFine_leftImg8bit.png", is createPanopticImgs' own misnomer; detectron2 goes by the id too)
    return load_coco_panoptic_separated(
        json_file, image_dir, png_dir, sem_dir,
        image_file=lambda img: os.path.join(image_dir, str(img["id"]).split("_")[0], f"{img['id']}{IMAGE_SUFFIX}"))


def register_cityscapes(datasets_root: str, *, instance_source: str = "instanceIds", mask_format: str = "polygon",
                        name_prefix: str = "seg_d2_") -> None:
    """Register ``{name_prefix}cityscapes_fine_{sem_seg,instance_seg,panoptic}_{train,val}``.

    Cheap: nothing is read from disk until a dataset is loaded.

    Args:
        datasets_root: the folder that contains ``cityscapes/``.
        instance_source: "instanceIds" or "polygons", what the instance datasets read.
        mask_format: "polygon" or "bitmask", how the instance datasets store masks.
        name_prefix: prefix of the registered names.
    """
    if instance_source not in INSTANCE_SOURCES:
        raise ValueError(f"Unknown Cityscapes instance source {instance_source!r}; expected one of {INSTANCE_SOURCES}.")
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"Unknown mask_format {mask_format!r}; expected one of {MASK_FORMATS}.")
    root = os.path.join(datasets_root, "cityscapes")
    for split in SPLITS:
        image_dir, gt_dir = _split_dirs(root, split)
        common = dict(image_dir=image_dir, gt_dir=gt_dir, **cityscapes_metadata())

        name = f"{name_prefix}cityscapes_fine_sem_seg_{split}"
        DatasetCatalog.register(name, functools.partial(load_cityscapes_semantic, root, split))
        MetadataCatalog.get(name).set(evaluator_type="cityscapes_sem_seg", **common)

        name = f"{name_prefix}cityscapes_fine_instance_seg_{split}"
        load = functools.partial(load_cityscapes_instances, root, split, instance_source, mask_format)
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(evaluator_type="cityscapes_instance", **common)

        # PanopticFPN: things = the 8 instance classes (ids as above), stuff = "things" + the 11 stuff classes
        from .coco_panoptic import panoptic_separated_metadata

        name = f"{name_prefix}cityscapes_fine_panoptic_{split}"
        DatasetCatalog.register(name, functools.partial(load_cityscapes_panoptic, root, split))
        gt = os.path.join(root, "gtFine")
        MetadataCatalog.get(name).set(
            evaluator_type="cityscapes_panoptic_seg", ignore_label=IGNORE_LABEL, label_divisor=1000,
            panoptic_json=os.path.join(gt, PANOPTIC_JSON.format(split=split)),
            panoptic_root=os.path.join(gt, PANOPTIC_DIR.format(split=split)), image_dir=image_dir, gt_dir=gt_dir,
            **panoptic_separated_metadata(cityscapes_panoptic_categories()))
