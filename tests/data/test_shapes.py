"""The generated shapes quick-start dataset: deterministic, consistent across its two formats."""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

import seg_d2  # noqa: F401
from seg_d2.data.datasets.shapes import SEM_SEG_CLASSES, SHAPE_CLASSES, generate_shapes_dataset, render_scene


def test_render_is_deterministic_and_varied():
    a, b = render_scene(7), render_scene(7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    sizes = {render_scene(s)[0].shape for s in range(20)}
    assert len(sizes) > 1  # several image sizes exercise padding and resizing
    assert render_scene(7)[0].std() > 20  # textured, not flat


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("d") / "seg_d2_shapes")
    assert generate_shapes_dataset(root) is True
    return root


def test_generation_is_skipped_when_present(shapes_root):
    assert generate_shapes_dataset(shapes_root) is False


def test_coco_and_semantic_formats_agree(shapes_root):
    with open(os.path.join(shapes_root, "annotations", "instances_val.json")) as f:
        coco = json.load(f)
    kinds = {"polygon" if isinstance(a["segmentation"], list) else "rle" for a in coco["annotations"]}
    assert kinds == {"polygon", "rle"}
    assert [c["name"] for c in coco["categories"]] == SHAPE_CLASSES
    for img in coco["images"][:10]:
        sem = cv2.imread(os.path.join(shapes_root, "sem_seg", "val", img["file_name"]), cv2.IMREAD_UNCHANGED)
        assert sem.shape == (img["height"], img["width"])
        rebuilt = np.zeros_like(sem)
        for a in (a for a in coco["annotations"] if a["image_id"] == img["id"]):
            segm = a["segmentation"]
            if isinstance(segm, list):
                rle = mask_util.merge(mask_util.frPyObjects(segm, img["height"], img["width"]))
            else:
                rle = segm
            rebuilt[mask_util.decode(rle) > 0] = a["category_id"]
        # Polygons trace pixel centres, so they may differ from the label map along edges only.
        agree = (rebuilt == sem).mean()
        assert agree > 0.97, (img["file_name"], agree)
        assert set(np.unique(sem)) <= set(range(len(SEM_SEG_CLASSES)))


def test_registered_names_and_metadata():
    for split in ("train", "val"):
        assert f"seg_d2_shapes_{split}" in DatasetCatalog.list()
        assert MetadataCatalog.get(f"seg_d2_shapes_{split}").evaluator_type == "coco"
        meta = MetadataCatalog.get(f"seg_d2_shapes_sem_seg_{split}")
        assert meta.evaluator_type == "sem_seg" and meta.stuff_classes == SEM_SEG_CLASSES
    dicts = DatasetCatalog.get("seg_d2_shapes_val")
    assert len(dicts) == 40 and all(len(d["annotations"]) > 0 for d in dicts)
    sem = DatasetCatalog.get("seg_d2_shapes_sem_seg_val")
    assert len(sem) == 40 and os.path.isfile(sem[0]["sem_seg_file_name"])
