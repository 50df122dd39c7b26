"""COCO-format instance datasets: registration, validation errors, category ids, crowd, empty images."""
import copy
import json
import os
import re

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog, get_detection_dataset_dicts
from seg_d2.data.datasets import COCOFormatError, register_coco_dataset, register_coco_instances, validate_coco_json

H, W = 40, 50


def _rle(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    return rle


def valid_dataset():
    """3 images: one with a polygon and an RLE object, one with only a crowd region, one empty."""
    return {
        "images": [{"id": i, "file_name": f"img{i}.png", "height": H, "width": W} for i in (10, 20, 30)],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 42, "name": "eel"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "iscrowd": 0, "bbox": [5, 5, 10, 10], "area": 100,
             "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]},
            {"id": 2, "image_id": 10, "category_id": 42, "iscrowd": 0, "bbox": [20, 10, 20, 10], "area": 200,
             "segmentation": _rle(10, 20, 20, 40)},
            {"id": 3, "image_id": 20, "category_id": 3, "iscrowd": 1, "bbox": [0, 0, 30, 20], "area": 600,
             "segmentation": {"size": [H, W], "counts": _uncompressed(_rle(0, 20, 0, 30))}},
        ],
    }


def _uncompressed(rle):
    """Uncompressed RLE (list counts), as COCO's crowd annotations are stored."""
    m = mask_util.decode(rle).ravel(order="F")
    counts, current, run = [], 0, 0
    for v in m:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def write(tmp_path, data, sizes=None):
    for img in data["images"]:
        h, w = (sizes or {}).get(img["id"], (H, W))
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / img["file_name"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def fresh_name(name):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    return name


def test_valid_dataset_loads_with_non_contiguous_ids_mapped(tmp_path):
    path = write(tmp_path, valid_dataset())
    name = fresh_name("test_seg_d2_coco_valid")
    register_coco_dataset(name, str(path), str(tmp_path))
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco" and meta.json_file == str(path) and meta.image_root == str(tmp_path)
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [10, 20, 30]  # the empty image is kept by default
    assert meta.thing_classes == ["cat", "dog", "eel"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 42: 2}
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1, 2]
    crowd = dicts[1]["annotations"][0]
    assert crowd["iscrowd"] == 1 and crowd["category_id"] == 0
    assert isinstance(crowd["segmentation"]["counts"], bytes)  # uncompressed RLE converted for detectron2
    assert dicts[0]["file_name"] == str(tmp_path / "img10.png")


def test_register_coco_instances_has_detectron2s_signature(tmp_path):
    path = write(tmp_path, valid_dataset())
    name = fresh_name("test_seg_d2_coco_d2_signature")
    register_coco_instances(name, {"thing_colors": [(1, 2, 3)] * 3}, str(path), str(tmp_path))
    assert MetadataCatalog.get(name).thing_colors == [(1, 2, 3)] * 3
    assert len(DatasetCatalog.get(name)) == 3


def test_empty_images_filtered_when_configured(tmp_path):
    path = write(tmp_path, valid_dataset())
    name = fresh_name("test_seg_d2_coco_filtered")
    register_coco_dataset(name, str(path), str(tmp_path), filter_empty=True)
    # Image 30 has no annotation, image 20 only a crowd region: both count as empty.
    assert [d["image_id"] for d in DatasetCatalog.get(name)] == [10]
    # Kept at registration, they are still dropped for training by DATALOADER.FILTER_EMPTY_ANNOTATIONS.
    kept = fresh_name("test_seg_d2_coco_kept")
    register_coco_dataset(kept, str(path), str(tmp_path))
    assert [d["image_id"] for d in get_detection_dataset_dicts([kept], filter_empty=True)] == [10]
    assert len(get_detection_dataset_dicts([kept], filter_empty=False)) == 3


def test_crowd_regions_are_not_training_instances(tmp_path):
    path = write(tmp_path, valid_dataset())
    name = fresh_name("test_seg_d2_coco_crowd")
    register_coco_dataset(name, str(path), str(tmp_path))
    cfg = get_cfg()
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.RANDOM_FLIP = (H,), 1000, "none"
    mapper = DatasetMapper(cfg, is_train=True)
    first, crowd_only = DatasetCatalog.get(name)[:2]
    assert len(mapper(copy.deepcopy(first))["instances"]) == 2
    assert len(mapper(copy.deepcopy(crowd_only))["instances"]) == 0


def _set(path, value):
    def mutate(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(d):
        node = d
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def _append(section, entry):
    return lambda d: d[section].append(entry)


ERRORS = {
    "no images": (_delete(["images"]), "missing the top-level key 'images'"),
    "no annotations": (_delete(["annotations"]), "missing the top-level key 'annotations'"),
    "no categories": (_delete(["categories"]), "missing the top-level key 'categories'"),
    "images not a list": (_set(["images"], {}), "'images' must be a list, got dict"),
    "image key": (_delete(["images", 1, "height"]), "images[1] lacks the required key(s) ['height']"),
    "annotation key": (_delete(["annotations", 0, "category_id"]),
                       "annotations[0] lacks the required key(s) ['category_id']"),
    "category key": (_delete(["categories", 2, "name"]), "categories[2] lacks the required key(s) ['name']"),
    "duplicate image": (_set(["images", 1, "id"], 10), "duplicate image id 10"),
    "duplicate annotation": (_set(["annotations", 1, "id"], 1), "duplicate annotation id 1"),
    "duplicate category": (_set(["categories", 1, "id"], 3), "duplicate category id 3"),
    "missing image": (_set(["annotations", 0, "image_id"], 99), "annotation id 1: image_id 99 is not among the images"),
    "missing category": (_set(["annotations", 1, "category_id"], 5),
                         "annotation id 2: category_id 5 is not among the categories [3, 7, 42]"),
    "polygon < 3 points": (_set(["annotations", 0, "segmentation"], [[5, 5, 15, 5]]),
                           "annotation id 1: polygon 0 has 2 points; a polygon needs at least 3"),
    "polygon odd": (_set(["annotations", 0, "segmentation"], [[5, 5, 15, 5, 15, 15, 5]]),
                    "annotation id 1: polygon 0 has an odd number of coordinates (7)"),
    "rle size": (_set(["annotations", 1, "segmentation"], _rle(10, 20, 20, 40, h=W, w=H)),
                 f"annotation id 2: RLE size [{W}, {H}] (height, width) differs from its image's [{H}, {W}]"),
    "bbox outside": (_set(["annotations", 1, "bbox"], [40, 10, 20, 10]),
                     f"annotation id 2: bbox [40, 10, 20, 10] (x, y, w, h) lies outside its image ({W}x{H})"),
    "bbox negative": (_set(["annotations", 1, "bbox"], [-5, 10, 20, 10]),
                      "annotation id 2: bbox [-5, 10, 20, 10] (x, y, w, h) lies outside"),
    "bbox zero width": (_set(["annotations", 0, "bbox"], [5, 5, 0, 10]),
                        "annotation id 1: bbox [5, 5, 0, 10] has a non-positive width or height"),
    "bbox malformed": (_set(["annotations", 0, "bbox"], [5, 5, 10]),
                       "annotation id 1: 'bbox' must be [x, y, width, height]"),
    "iscrowd": (_set(["annotations", 0, "iscrowd"], 2), "annotation id 1: iscrowd must be 0 or 1, got 2"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_validation_errors_name_the_file_and_the_problem(tmp_path, case):
    mutate, message = ERRORS[case]
    data = valid_dataset()
    path = write(tmp_path, data)
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(COCOFormatError, match=re.escape(message)) as e:
        validate_coco_json(str(path), str(tmp_path))
    assert str(path) in str(e.value)


def test_image_file_missing(tmp_path):
    path = write(tmp_path, valid_dataset())
    (tmp_path / "img20.png").unlink()
    with pytest.raises(COCOFormatError, match=re.escape(f"image id 20: file {tmp_path / 'img20.png'} is missing")):
        validate_coco_json(str(path), str(tmp_path))


def test_image_file_of_another_size(tmp_path):
    path = write(tmp_path, valid_dataset(), sizes={30: (H + 1, W)})
    with pytest.raises(COCOFormatError, match=re.escape(f"is {W}x{H + 1} (width x height), but the json says {W}x{H}")):
        validate_coco_json(str(path), str(tmp_path))


def test_errors_are_raised_when_the_dataset_is_loaded(tmp_path):
    data = valid_dataset()
    data["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    path = write(tmp_path, data)
    name = fresh_name("test_seg_d2_coco_invalid")
    register_coco_dataset(name, str(path), str(tmp_path))
    with pytest.raises(COCOFormatError, match="polygon 0 has 2 points"):
        DatasetCatalog.get(name)


def test_all_problems_are_listed_together(tmp_path):
    data = valid_dataset()
    data["annotations"][0]["image_id"] = 99
    data["annotations"][1]["bbox"] = [0, 0, -1, 3]
    path = write(tmp_path, data)
    with pytest.raises(COCOFormatError) as e:
        validate_coco_json(str(path))
    assert "image_id 99" in str(e.value) and "non-positive width" in str(e.value)


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(COCOFormatError, match=re.escape(f"Invalid COCO json {bad}: not valid JSON")):
        validate_coco_json(str(bad))
    with pytest.raises(COCOFormatError, match="does not exist"):
        validate_coco_json(str(tmp_path / "nope.json"))


def test_the_shapes_dataset_is_valid():
    from seg_d2.data.datasets.shapes import generate_shapes_dataset

    root = os.path.join(os.environ["DETECTRON2_DATASETS"], "seg_d2_shapes")
    generate_shapes_dataset(root)
    validate_coco_json(os.path.join(root, "annotations", "instances_val.json"), os.path.join(root, "images", "val"))
