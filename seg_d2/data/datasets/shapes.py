"""The embedded quick-start dataset: deterministic "shapes" scenes, generated, never downloaded.

Each scene has a textured background and a few circles, squares, triangles and stars of varied size
and colour that overlap and occlude one another. The same scenes are written twice:

- COCO instance format (``annotations/instances_{split}.json``): visible masks, as polygons for
  unoccluded objects and as RLE for occluded ones (whose visible part a polygon would distort);
- semantic format (``sem_seg/{split}/*.png``): label maps, 0 = background, k = k-th shape class.

Layout under ``root`` (``$DETECTRON2_DATASETS/seg_d2_shapes``)::

    images/{split}/{id:05d}.png
    annotations/instances_{split}.json
    sem_seg/{split}/{id:05d}.png
"""
import json
import logging
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_sem_seg

from ._atomic import write_dataset_once

logger = logging.getLogger(__name__)

SHAPE_CLASSES = ["circle", "square", "triangle", "star"]
SHAPE_COLORS = [(220, 60, 60), (60, 180, 75), (0, 130, 200), (245, 180, 50)]  # RGB, for drawing
SEM_SEG_CLASSES = ["background"] + SHAPE_CLASSES
PANOPTIC_STUFF = ["sky", "ground"]
PANOPTIC_CLASSES = PANOPTIC_STUFF + SHAPE_CLASSES  # the label values of the panoptic scenes' full label maps
SPLITS = {"train": (0, 200), "val": (1, 40)}  # split -> (seed, number of images)
# seg_d2_shapes{,_sem_seg,_rotated}_val_mini: the first VAL_MINI val scenes, for runs that check plumbing, not
# accuracy (as detectron2's coco_2017_val_100).
VAL_MINI = 8
IMAGE_SIZES = [(128, 128), (128, 160), (160, 128), (160, 160)]  # (height, width)
MIN_VISIBLE_AREA = 40  # pixels; objects occluded below this are dropped from the annotations


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured background: a colour gradient, low-frequency blobs, stripes and pixel noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(60, 200, size=3)
    grad = rng.uniform(-40, 40, size=(2, 3))
    img = base + (yy[..., None] / h) * grad[0] + (xx[..., None] / w) * grad[1]
    blobs = cv2.resize(rng.normal(0, 18, size=(6, 6, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    theta, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
    stripes = 10 * np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
    img = img + blobs + stripes[..., None] + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_polygon(cls: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices (K, 2) of a shape of class ``cls`` centred at (cx, cy) with radius ``r``."""
    if cls == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.full_like(t, r)
    elif cls == "square":
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        radii = np.full_like(t, r)
    elif cls == "triangle":
        t = angle + np.arange(3) * 2 * np.pi / 3
        radii = np.full_like(t, r)
    else:  # star: 5 outer and 5 inner vertices
        t = angle + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    return np.stack([cx + radii * np.cos(t), cy + radii * np.sin(t)], axis=1)


def _mask_to_polygons(mask: np.ndarray):
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def render_scene(seed: int, stuff: bool = False):
    """Render one scene. Returns (RGB image, semantic label map, list of visible instances).

    With ``stuff``, the background is two textured regions, "sky" above a wavy horizon and "ground"
    (browner) below, labelled 0 and 1, and the shape labels start at 2 (``PANOPTIC_CLASSES``).
    The objects and the image outside the ground are those of the plain scene of the same seed.
    """
    rng = np.random.default_rng(seed)
    h, w = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
    img = _background(rng, h, w)
    objects = []
    for _ in range(rng.integers(2, 6)):
        cls_id = int(rng.integers(len(SHAPE_CLASSES)))
        r = float(rng.uniform(8, min(h, w) / 3.2))
        cx, cy = rng.uniform(r * 0.6, w - r * 0.6), rng.uniform(r * 0.6, h - r * 0.6)
        poly = _shape_polygon(SHAPE_CLASSES[cls_id], cx, cy, r, rng.uniform(0, 2 * np.pi))
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        # Colour varies around the class colour so that the class is learnable but not trivial.
        color = np.clip(np.array(SHAPE_COLORS[cls_id]) + rng.integers(-35, 36, size=3), 0, 255)
        shade = np.clip(color + rng.normal(0, 8, size=(h, w, 3)), 0, 255).astype(np.uint8)
        img[mask > 0] = shade[mask > 0]
        objects.append((cls_id, mask))
    stuff_label = np.zeros((h, w), np.uint8)
    if stuff:  # drawn after the objects, so that the rest of the scene is the plain one's
        ground = (0.5 * _background(rng, h, w) + np.array([60, 45, 30])).astype(np.uint8)
        xx = np.arange(w)
        horizon = h * rng.uniform(0.35, 0.65) + rng.uniform(4, h / 8) * np.sin(xx * 2 * np.pi / rng.uniform(
            w / 2, 2 * w) + rng.uniform(0, 2 * np.pi))
        below = np.arange(h)[:, None] >= horizon[None, :]
        under_objects = np.any([m > 0 for _, m in objects], axis=0)
        img[below & ~under_objects] = ground[below & ~under_objects]
        stuff_label = below.astype(np.uint8)
    first_thing = 2 if stuff else 1

    sem = stuff_label.copy()
    instances = []
    covered = np.zeros((h, w), bool)
    for cls_id, mask in reversed(objects):  # later objects are on top
        full = mask > 0
        visible = full & ~covered
        covered |= full
        if visible.sum() < MIN_VISIBLE_AREA:
            continue
        sem[visible] = cls_id + first_thing
        instances.append({"category": cls_id, "mask": visible, "occluded": bool((full & ~visible).any())})
    return img, sem, instances[::-1]


def _write_split(root: str, split: str, stuff: bool = False) -> None:
    seed0, n = SPLITS[split]
    categories = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(SHAPE_CLASSES)]
    if stuff:  # the panoptic set: its categories keep the shapes' colours
        categories = [{**c, "color": list(color)} for c, color in zip(categories, SHAPE_COLORS)]
    images, annotations = [], []
    os.makedirs(os.path.join(root, "images", split))
    os.makedirs(os.path.join(root, "sem_seg", split))
    for idx in range(n):
        img, sem, instances = render_scene(seed0 * 100003 + idx, stuff)
        fname = f"{idx:05d}.png"
        cv2.imwrite(os.path.join(root, "images", split, fname), img[:, :, ::-1])
        cv2.imwrite(os.path.join(root, "sem_seg", split, fname), sem)
        images.append({"id": idx + 1, "file_name": fname, "height": img.shape[0], "width": img.shape[1]})
        for inst in instances:
            rle = mask_util.encode(np.asfortranarray(inst["mask"].astype(np.uint8)))
            if inst["occluded"] or stuff:  # panoptic: exact visible masks (rasterised polygons would overlap)
                segm = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            else:
                segm = _mask_to_polygons(inst["mask"])
            x, y, bw, bh = mask_util.toBbox(rle).tolist()
            annotations.append({
                "id": len(annotations) + 1, "image_id": idx + 1, "category_id": inst["category"] + 1,
                "segmentation": segm, "area": float(mask_util.area(rle)), "bbox": [x, y, bw, bh],
                "iscrowd": 0,
            })
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def generate_shapes_dataset(root: str) -> bool:
    """Write every split under ``root`` unless it is already there. Returns True if it wrote.

    Written atomically (``write_dataset_once``): no reader ever sees a half-written dataset.
    """

    def write(tmp):
        for split in SPLITS:
            _write_split(tmp, split)

    if not write_dataset_once(root, write):
        return False
    logger.info(f"Generated the shapes quick-start dataset in {root}")
    return True


def generate_shapes_panoptic_dataset(root: str) -> bool:
    """The panoptic quick-start set under ``root``, unless there: the scenes with sky and ground
    (``render_scene(..., stuff=True)``) as COCO instances and full label maps, converted by
    :func:`make_coco_panoptic` to ``panoptic_{split}/`` (json, PNGs, separated semantic maps).
    Returns True if it wrote."""
    from .coco_panoptic import make_coco_panoptic

    def write(tmp):
        for split in SPLITS:
            _write_split(tmp, split, stuff=True)
            out = os.path.join(tmp, f"panoptic_{split}")
            panoptic = make_coco_panoptic(os.path.join(tmp, "annotations", f"instances_{split}.json"),
                                          os.path.join(tmp, "sem_seg", split), PANOPTIC_CLASSES, out)
            # the ground truth of the _mini set: COCOPanopticEvaluator wants a prediction for every image of its json
            mini_ids = {img["id"] for img in sorted(panoptic["images"], key=lambda x: x["id"])[:VAL_MINI]}
            with open(os.path.join(out, "panoptic_mini.json"), "w") as f:
                json.dump({"images": [i for i in panoptic["images"] if i["id"] in mini_ids],
                           "annotations": [a for a in panoptic["annotations"] if a["image_id"] in mini_ids],
                           "categories": panoptic["categories"]}, f)

    if not write_dataset_once(root, write):
        return False
    logger.info(f"Generated the panoptic shapes quick-start dataset in {root}")
    return True


def register_shapes_panoptic(datasets_root: str) -> None:
    """Register ``seg_d2_shapes_panoptic_{train,val,val_mini}`` for PanopticFPN: things = the shapes, stuff =
    sky and ground (see :mod:`.coco_panoptic`); generated on first use."""
    from .coco_panoptic import PANOPTIC_LAYOUT, panoptic_categories, register_coco_panoptic_dataset

    root = os.path.join(datasets_root, "seg_d2_shapes_panoptic")
    things = [{"id": i + 1, "name": c, "color": list(SHAPE_COLORS[i])} for i, c in enumerate(SHAPE_CLASSES)]
    categories = panoptic_categories(things, PANOPTIC_STUFF)
    for name, split, json_name in (("train", "train", PANOPTIC_LAYOUT["json"]), ("val", "val", PANOPTIC_LAYOUT["json"]),
                                   ("val_mini", "val", "panoptic_mini.json")):
        out = os.path.join(root, f"panoptic_{split}")
        register_coco_panoptic_dataset(
            f"seg_d2_shapes_panoptic_{name}", os.path.join(out, json_name), os.path.join(root, "images", split),
            os.path.join(out, PANOPTIC_LAYOUT["panoptic_root"]), os.path.join(out, PANOPTIC_LAYOUT["sem_seg_root"]),
            categories=categories, prepare=lambda: generate_shapes_panoptic_dataset(root))


def _shapes_root(datasets_root: str) -> str:
    return os.path.join(datasets_root, "seg_d2_shapes")


def register_shapes(datasets_root: str) -> None:
    """Register ``seg_d2_shapes_{split}`` (COCO instances) and ``seg_d2_shapes_sem_seg_{split}``.

    The data is generated on first use (a few seconds), not at registration.
    """
    root = _shapes_root(datasets_root)
    for split in SPLITS:
        image_root = os.path.join(root, "images", split)
        json_file = os.path.join(root, "annotations", f"instances_{split}.json")
        gt_root = os.path.join(root, "sem_seg", split)

        def load_instances(name=f"seg_d2_shapes_{split}", json_file=json_file, image_root=image_root):
            generate_shapes_dataset(root)
            return load_coco_json(json_file, image_root, name)

        def load_semantic(gt_root=gt_root, image_root=image_root):
            generate_shapes_dataset(root)
            return load_sem_seg(gt_root, image_root, gt_ext="png", image_ext="png")

        name = f"seg_d2_shapes_{split}"
        DatasetCatalog.register(name, load_instances)
        MetadataCatalog.get(name).set(
            json_file=json_file, image_root=image_root, evaluator_type="coco",
            thing_classes=list(SHAPE_CLASSES), thing_colors=list(SHAPE_COLORS),
        )
        sem_name = f"seg_d2_shapes_sem_seg_{split}"
        DatasetCatalog.register(sem_name, load_semantic)
        MetadataCatalog.get(sem_name).set(
            image_root=image_root, sem_seg_root=gt_root, evaluator_type="sem_seg", ignore_label=255,
            stuff_classes=list(SEM_SEG_CLASSES), stuff_colors=[(0, 0, 0)] + list(SHAPE_COLORS),
        )
    for full in ("seg_d2_shapes_val", "seg_d2_shapes_sem_seg_val"):
        mini = f"{full}_mini"
        DatasetCatalog.register(mini, lambda full=full: DatasetCatalog.get(full)[:VAL_MINI])
        # no json_file: the COCO evaluator builds its ground truth from these scenes only
        meta = {k: v for k, v in MetadataCatalog.get(full).as_dict().items() if k not in ("name", "json_file")}
        MetadataCatalog.get(mini).set(**meta)
