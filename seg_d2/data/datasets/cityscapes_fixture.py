"""A tiny dataset in the Cityscapes layout, for tests and quick runs (``tools/make_cityscapes_fixture.py``).

Every scene is first written as ``*_gtFine_polygons.json`` (the annotators' format); the
``labelIds``, ``instanceIds`` and ``color`` PNGs are rasterised from it with cityscapesscripts' own
``json2labelImg`` / ``json2instanceImg`` functions, exactly as the official PNGs were made, so the
three are consistent; the panoptic ground truth (``gtFine/cityscapes_panoptic_{split}.json`` and PNGs) is
made from the ``instanceIds`` PNGs by cityscapesscripts' ``createPanopticImgs``. The RGB image paints each region in its label colour, with per-instance
shading, gradients and noise, so that models have something to learn.

Scenes contain what the loaders and evaluators must handle: overlapping objects (later polygons
overwrite earlier ones), all 8 evaluated thing classes across the split, a crowd region
(``cargroup``), void regions (``ego vehicle``, ``static``), a thing class ignored in evaluation
(``caravan``), a ``license plate`` (labelId -1: in the json only, never drawn) and a person below
cityscapesscripts' 100-pixel minimum instance size.
"""
import contextlib
import io
import json
import logging
import os

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

from ._atomic import write_dataset_once

logger = logging.getLogger(__name__)

# split -> cities (disjoint, as in Cityscapes); each city gets IMAGES_PER_CITY frames.
FIXTURE_CITIES = {"train": ("aachen", "bremen"), "val": ("frankfurt", "lindau")}
IMAGES_PER_CITY = 2
SPLIT_SEEDS = {"train": 1, "val": 2}
HEIGHT, WIDTH = 128, 256


def _box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _car(x, y, w, h):
    """A car-like octagon with its top-left corner at (x, y)."""
    c = max(2, h // 4)
    return [[x + c, y], [x + w - c, y], [x + w, y + c], [x + w, y + h - c], [x + w - c, y + h],
            [x + c, y + h], [x, y + h - c], [x, y + c]]


def _person(x, y, w, h):
    """A standing figure (head, shoulders, legs) with its top-left corner at (x, y)."""
    m = w // 2
    return [[x + m - 2, y], [x + m + 2, y], [x + m + 2, y + h // 5], [x + w, y + h // 4], [x + w, y + h * 3 // 5],
            [x + m + 3, y + h * 3 // 5], [x + m + 3, y + h], [x + m - 3, y + h], [x + m - 3, y + h * 3 // 5],
            [x, y + h * 3 // 5], [x, y + h // 4], [x + m - 2, y + h // 5]]


def make_scene(rng: np.random.Generator, index: int, height: int = HEIGHT, width: int = WIDTH) -> dict:
    """The polygon annotation (Cityscapes json content) of one scene."""
    H, W = height, width
    r = lambda lo, hi: int(rng.integers(lo, hi + 1))  # noqa: E731
    horizon = r(int(0.45 * H), int(0.55 * H))
    objects = []

    def add(label, polygon):
        objects.append({"label": label, "polygon": [[int(round(x)), int(round(y))] for x, y in polygon]})

    # Stuff, back to front: sky, buildings with a jagged roofline, vegetation, road, sidewalk, terrain.
    add("sky", _box(0, 0, W - 1, horizon))
    roof = [[0, horizon]]
    for x in range(0, W, max(8, W // 8)):
        top = r(int(0.12 * H), int(0.35 * H))
        roof += [[x, top], [min(W - 1, x + W // 10), top]]
    roof += [[W - 1, horizon]]
    add("building", roof)
    add("vegetation", [[r(0, W // 8), horizon - r(8, 20)], [W // 3, horizon - r(10, 25)], [W // 3 + 10, horizon + 4],
                       [0, horizon + 4]])
    add("road", [[0, H - 1], [W - 1, H - 1], [W - 1, horizon + 2], [0, horizon + 2]])
    add("sidewalk", [[W * 2 // 3, horizon + 2], [W - 1, horizon + 2], [W - 1, horizon + H // 6],
                     [W * 3 // 4, horizon + 6]])
    add("terrain", [[0, horizon + 2], [W // 5, horizon + 2], [W // 8, horizon + H // 8], [0, horizon + H // 6]])
    if index % 2 == 0:
        add("wall", _box(W // 2, horizon - 14, W // 2 + r(14, 24), horizon + 1))
    else:
        add("fence", _box(W // 2 - 30, horizon - 10, W // 2 - 5, horizon + 1))
    x_pole = r(W // 2 + 30, W - 30)
    add("pole", _box(x_pole, horizon - 40, x_pole + 2, horizon + 6))
    add("traffic sign", _box(x_pole - 4, horizon - 46, x_pole + 6, horizon - 38))
    if index % 3 == 0:
        add("traffic light", _box(x_pole + 3, horizon - 36, x_pole + 7, horizon - 26))
    add("static", _box(4, horizon - 6, 12, horizon + 3))  # void
    if index % 2 == 1:
        add("parking", _box(W // 4, horizon + 3, W // 4 + 20, horizon + 8))  # flat, ignored in eval

    # Things, far to near, so that nearer objects occlude farther ones.
    y_car = horizon + r(0, 6)
    x = r(8, 30)
    for _ in range(r(2, 3)):  # a row of partly overlapping cars
        w, h = r(34, 46), r(18, 24)
        add("car", _car(x, y_car, w, h))
        x += w - r(6, 12)
    if index % 2 == 0:
        add("license plate", _box(x - 20, y_car + 14, x - 12, y_car + 17))  # id -1: never drawn
        add("cargroup", _box(W - 70, horizon - 4, W - 40, horizon + 8))  # crowd
    big = ["truck", "bus", "train", "caravan"][index % 4]
    xb = r(W // 2 - 10, W // 2 + 20)
    add(big, _box(xb, horizon - 26, xb + r(40, 56), horizon + r(12, 18)))
    for _ in range(r(1, 2)):
        xp = r(W // 2 + 10, W - 30)
        add("person", _person(xp, horizon + r(2, 10), r(10, 14), r(28, 36)))
    if index % 2 == 1:  # a rider on a bicycle, or on a motorcycle
        xr = r(30, W // 2 - 40)
        add("bicycle" if index % 4 == 1 else "motorcycle", _box(xr, horizon + 22, xr + 24, horizon + 38))
        add("rider", _person(xr + 6, horizon + 2, 12, 28))
    if index % 4 == 0:
        add("bicycle", _box(W - 40, horizon + 26, W - 16, horizon + 40))
        add("motorcycle", _box(W // 3, horizon + 30, W // 3 + 26, horizon + 44))
        add("rider", _person(W // 3 + 7, horizon + 8, 12, 28))
    add("person", _box(W - 14, horizon + 4, W - 8, horizon + 16))  # 7 x 13 px: below the 100 px minimum
    add("ego vehicle", [[0, H - 1], [W - 1, H - 1], [W - 1, H - 8], [W // 2, H - 12], [0, H - 8]])  # void
    return {"imgHeight": H, "imgWidth": W, "objects": objects}


def render_scene(scene: dict, rng: np.random.Generator):
    """Rasterise a scene with cityscapesscripts. Returns (RGB image, labelIds, instanceIds, colour map)."""
    annotation = Annotation()
    annotation.fromJsonText(json.dumps(scene))
    label_ids = np.asarray(createLabelImage(annotation, "ids"), np.uint8)
    instance_ids = np.asarray(createInstanceImage(annotation, "ids"), np.int32)
    color = np.asarray(createLabelImage(annotation, "color").convert("RGB"), np.uint8)

    H, W = label_ids.shape
    img = color.astype(np.float32)
    for inst_id in np.unique(instance_ids[instance_ids >= 1000]):  # each object its own shade
        img[instance_ids == inst_id] *= rng.uniform(0.7, 1.3)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img += (yy / H * rng.uniform(-20, 20) + xx / W * rng.uniform(-20, 20))[..., None]
    img += rng.normal(0, 8, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label_ids, instance_ids, color


def _write_split(root: str, split: str, seed: int, images_per_city: int, height: int, width: int) -> None:
    for c, city in enumerate(FIXTURE_CITIES[split]):
        img_dir = os.path.join(root, "leftImg8bit", split, city)
        gt_dir = os.path.join(root, "gtFine", split, city)
        os.makedirs(img_dir)
        os.makedirs(gt_dir)
        for k in range(images_per_city):
            index = c * images_per_city + k
            rng = np.random.default_rng([seed, SPLIT_SEEDS[split], index])
            scene = make_scene(rng, index, height, width)
            img, label_ids, instance_ids, color = render_scene(scene, rng)
            stem = f"{city}_{index:06d}_{19 + 10 * k:06d}"
            Image.fromarray(img).save(os.path.join(img_dir, f"{stem}_leftImg8bit.png"))
            with open(os.path.join(gt_dir, f"{stem}_gtFine_polygons.json"), "w") as f:
                json.dump(scene, f, indent=1)
            Image.fromarray(label_ids).save(os.path.join(gt_dir, f"{stem}_gtFine_labelIds.png"))
            # 16-bit, as the official instanceIds PNGs (Pillow cannot write mode "I" as PNG).
            Image.fromarray(instance_ids.astype(np.uint16)).save(os.path.join(gt_dir, f"{stem}_gtFine_instanceIds.png"))
            Image.fromarray(color).save(os.path.join(gt_dir, f"{stem}_gtFine_color.png"))



def generate_cityscapes_fixture(root: str, *, images_per_city: int = IMAGES_PER_CITY, height: int = HEIGHT,
                                width: int = WIDTH, seed: int = 0) -> bool:
    """Write the fixture under ``root`` (a ``cityscapes`` folder) unless it is there. Returns True if it wrote.

    Deterministic for given arguments. Written in a temporary folder and renamed into place, so
    that an interrupted run or concurrent runs never leave a partial dataset.
    """

    def write(tmp):
        for split in FIXTURE_CITIES:
            _write_split(tmp, split, seed, images_per_city, height, width)
        # the panoptic ground truth, from the instanceIds PNGs, by cityscapesscripts as for the real data
        with contextlib.redirect_stdout(io.StringIO()):
            convert2panoptic(os.path.join(tmp, "gtFine"), os.path.join(tmp, "gtFine"), setNames=list(FIXTURE_CITIES))

    if not write_dataset_once(root, write):
        return False
    logger.info(f"Wrote the Cityscapes-layout fixture to {root}")
    return True

