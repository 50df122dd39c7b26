"""COCO json checks (issue 14): non-finite numbers and what pycocotools cannot survive are rejected with the
file named; "strict" and "lenient" validation; the json parsed and the images checked once per process.

Expected values come from detectron2 (``load_coco_json``, ``COCOEvaluator``) on a json cleaned by hand,
from pycocotools' own RLE encoder, and from hand-written messages."""
import copy
import json
import logging
import re

import numpy as np
import pycocotools.mask as mask_util
import pytest

import seg_d2
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from seg_d2.data import register_datasets_from_config, user_datasets
from seg_d2.data.checks import dataset_thing_classes
from seg_d2.data.datasets import COCOFormatError, register_coco_dataset, validate_coco_json
from seg_d2.data.datasets import coco_instances
from seg_d2.data.datasets.coco_instances import _rle_string_counts
from tests.data.test_coco_instances import H, W, _rle, _set as _at, _uncompressed, fresh_name, valid_dataset, write

NAN, INF = float("nan"), float("inf")


def _bad_runs(d):
    counts = _uncompressed(_rle(0, 20, 0, 30))
    counts[-1] += 1  # one pixel more than the image: pycocotools would write past its buffer
    d["annotations"][2]["segmentation"]["counts"] = counts


# case -> (mutation, message); annotation-level unless said otherwise
BAD = {
    "NaN polygon coordinate": (_at(["annotations", 0, "segmentation"], [[5, 5, NAN, 5, 15, 15, 5, 15]]),
                               "annotation id 1: polygon 0 holds NaN or infinity"),
    "NaN bbox": (_at(["annotations", 0, "bbox"], [5, 5, NAN, 10]), "annotation id 1: bbox [5, 5, nan, 10] holds NaN"),
    "infinite bbox": (_at(["annotations", 1, "bbox"], [20, 10, INF, 10]), "annotation id 2: bbox [20, 10, inf, 10]"),
    "NaN keypoint": (_at(["annotations", 0, "keypoints"], [6, 6, 2, NAN, 7, 2]), "annotation id 1: keypoints hold NaN"),
    "NaN area": (_at(["annotations", 0, "area"], NAN), "annotation id 1: area nan is not finite"),
    "int beyond float": (_at(["annotations", 0, "segmentation"], [[5, 5, 10 ** 400, 5, 15, 15]]),
                         "annotation id 1: polygon 0 is not a flat list of numbers"),
    "polygon far outside": (_at(["annotations", 0, "segmentation"], [[5, 5, 1e9, 5, 15, 15]]),
                            f"annotation id 1: polygon 0 has points outside its image ({W}x{H})"),
    "bool coordinate": (_at(["annotations", 0, "bbox"], [5, 5, True, 10]), "annotation id 1: 'bbox' must be [x, y"),
    "RLE runs too many pixels": (_bad_runs, f"annotation id 3: RLE runs cover {H * W + 1} pixels, its size {H}x{W} "
                                            f"has {H * W}"),
    "RLE string garbage": (_at(["annotations", 1, "segmentation", "counts"], "\x7f\x7f"),
                           "annotation id 2: RLE 'counts' is not a valid compressed RLE string"),
    "RLE size not a pair": (_at(["annotations", 1, "segmentation", "size"], [H]), "RLE 'size' must be [height, width]"),
    "ignore": (_at(["annotations", 0, "ignore"], 1), "annotation id 1: 'ignore' 1 is not supported"),
    "unhashable image_id": (_at(["annotations", 0, "image_id"], [10]), "annotation id 1: image_id [10] is not among"),
    "annotation not an object": (_at(["annotations", 0], [1, 2]), "annotations[0] must be an object, got list"),
    # all points on one pixel (a real json's): pycocotools rasterises it to 0 pixels, while its bbox is valid
    "degenerate polygon": (_at(["annotations", 0, "segmentation"], [[24, 23, 24, 23, 24, 23, 24, 23]]),
                           f"annotation id 1: its polygons cover no pixel of its {W}x{H} image"),
    "collinear polygon": (_at(["annotations", 0, "segmentation"], [[5, 5, 10, 10, 15, 15]]),
                          f"annotation id 1: its polygons cover no pixel of its {W}x{H} image"),
    "empty RLE": (_at(["annotations", 2, "segmentation", "counts"], [H * W]), "annotation id 3: its RLE has no "
                                                                            "foreground pixel"),
    # found by the fuzzer: detectron2's annotations_to_instances then fails with KeyError 'segmentation'
    "mask missing on one": (lambda d: d["annotations"][0].pop("segmentation"),
                            "annotation id 1: no 'segmentation', while 2 other annotations have one"),
}
IMAGE_LEVEL = {
    "NaN image height": (_at(["images", 0, "height"], NAN), "image id 10: height and width must be positive integers"),
    "string image id": (_at(["images", 0, "id"], "10"), "images[0]: 'id' must be an integer, got '10'"),
    "huge image": (_at(["images", 0, "width"], 2 ** 40), "at most 2147483647 pixels"),
    "file_name not a string": (_at(["images", 0, "file_name"], 3),
                               "image id 10: 'file_name' must be a non-empty string"),
}


@pytest.mark.parametrize("case", sorted(BAD) + sorted(IMAGE_LEVEL))
def test_strict_rejects_with_the_file_named(tmp_path, case):
    mutate, message = {**BAD, **IMAGE_LEVEL}[case]
    data = valid_dataset()
    write(tmp_path, data)
    mutate(data)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))  # NaN/Infinity as Python's json writes (and reads) them
    with pytest.raises(COCOFormatError, match=re.escape(message)) as e:
        validate_coco_json(str(path), str(tmp_path))
    assert f"Invalid COCO json {path}" in str(e.value)


def _d2_dicts(tmp_path, data, name):
    """detectron2's own loader on ``data`` (the reference)."""
    ref = tmp_path / f"{name}.json"
    ref.write_text(json.dumps(data))
    return load_coco_json(str(ref), str(tmp_path), fresh_name(name))


def test_loading_gives_detectron2s_dicts(tmp_path):
    data = valid_dataset()
    data["annotations"][0]["keypoints"] = [6, 6, 2, 8, 7, 1]
    path = write(tmp_path, data)
    name = fresh_name("test_seg_d2_coco_v_same")
    register_coco_dataset(name, str(path), str(tmp_path))
    assert DatasetCatalog.get(name) == _d2_dicts(tmp_path, data, "test_seg_d2_coco_v_same_ref")
    assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 42: 2}


def test_lenient_drops_invalid_annotations_with_one_summary_warning(tmp_path, caplog):
    data = valid_dataset()
    good = copy.deepcopy(data)
    extra = [  # ids 4..8: each invalid in its own way
        {"id": 4, "image_id": 10, "category_id": 7, "bbox": [5, 5, NAN, 10]},
        {"id": 5, "image_id": 10, "category_id": 7, "bbox": [5, 5, 10, 10], "segmentation": [[5, 5, NAN, 5, 9, 9]]},
        {"id": 6, "image_id": 10, "category_id": 7, "bbox": [45, 5, 10, 10]},
        {"id": 7, "image_id": 10, "category_id": 99, "bbox": [5, 5, 10, 10]},
        {"id": 1, "image_id": 30, "category_id": 3, "bbox": [5, 5, 10, 10]},
        {"id": 8, "image_id": 30, "category_id": 3, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 6, 1, 6, 6]]},  # kept
    ]
    data["annotations"] += extra
    good["annotations"].append(extra[-1])
    path = write(tmp_path, data)
    name = fresh_name("test_seg_d2_coco_v_lenient")
    with pytest.raises(COCOFormatError, match="annotation id 4: bbox"):  # strict by default
        validate_coco_json(str(path), str(tmp_path))
    register_coco_dataset(name, str(path), str(tmp_path), validation="lenient")
    with caplog.at_level(logging.WARNING, logger="seg_d2"):
        dicts = DatasetCatalog.get(name)
        assert DatasetCatalog.get(name) == dicts  # again: no second warning
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{path}: dropped 5 of 9 annotations (validation 'lenient'): 2 non-finite number, "
                                  "1 bbox outside image, 1 unknown category, 1 duplicate id. First: annotation id 4: "
                                  "bbox [5, 5, nan, 10] holds NaN or infinity; annotation id 5: polygon 0 holds NaN")
    assert dicts == _d2_dicts(tmp_path, good, "test_seg_d2_coco_v_lenient_ref")
    meta = MetadataCatalog.get(name)
    assert meta.source_json_file == str(path) and not hasattr(meta, "json_file")  # the raw json is not the truth

    # The evaluator then takes its ground truth from the loaded dicts: the NaN never reaches pycocotools.
    from detectron2.evaluation import COCOEvaluator

    with caplog.at_level(logging.ERROR):
        evaluator = COCOEvaluator(name, output_dir=str(tmp_path / "eval"))
    anns = evaluator._coco_api.loadAnns(evaluator._coco_api.getAnnIds())
    assert sorted(a["bbox"] for a in anns) == sorted(a["bbox"] for a in good["annotations"])


def test_lenient_drops_and_counts_masks_that_cover_no_pixel(tmp_path, caplog):
    """Kept, such an instance trains an empty mask and can never be matched: perfect predictions then score
    segm AP below 100 (85.59 with 5 of 71 annotations so). Lenient drops it and counts it."""
    data = valid_dataset()
    good = copy.deepcopy(data)
    data["annotations"].append({"id": 9, "image_id": 10, "category_id": 3, "bbox": [20, 20, 6, 8],
                                "segmentation": [[24, 23, 24, 23, 24, 23, 24, 23]]})
    path = write(tmp_path, data)
    name = fresh_name("test_seg_d2_coco_v_empty_mask")
    register_coco_dataset(name, str(path), str(tmp_path), validation="lenient")
    with caplog.at_level(logging.WARNING, logger="seg_d2"):
        dicts = DatasetCatalog.get(name)
    assert any(f"{path}: dropped 1 of 4 annotations (validation 'lenient'): 1 empty mask. First: annotation id 9: "
               f"its polygons cover no pixel" in r.getMessage() for r in caplog.records), caplog.text
    assert dicts == _d2_dicts(tmp_path, good, "test_seg_d2_coco_v_empty_mask_ref")


def test_lenient_without_problems_keeps_the_json_for_the_evaluator(tmp_path):
    path = write(tmp_path, valid_dataset())
    name = fresh_name("test_seg_d2_coco_v_lenient_clean")
    register_coco_dataset(name, str(path), str(tmp_path), validation="lenient")
    assert dataset_thing_classes(name) == ["cat", "dog", "eel"]  # known before loading
    DatasetCatalog.get(name)
    assert MetadataCatalog.get(name).json_file == str(path)


def test_lenient_still_rejects_broken_images_and_structure(tmp_path):
    data = valid_dataset()
    data["images"][1]["height"] = NAN
    path = write(tmp_path, valid_dataset())
    path.write_text(json.dumps(data))
    with pytest.raises(COCOFormatError, match="image id 20: height and width"):
        validate_coco_json(str(path), str(tmp_path), validation="lenient")
    with pytest.raises(ValueError, match="COCO validation 'loose': choose one of"):
        register_coco_dataset("x", str(path), str(tmp_path), validation="loose")


def test_config_key_and_parsed_once(tmp_path, monkeypatch, caplog):
    data = valid_dataset()
    data["annotations"][0]["bbox"] = [5, 5, NAN, 10]
    path = write(tmp_path, valid_dataset())
    path.write_text(json.dumps(data))
    name = "test_seg_d2_coco_v_config"
    cfg = seg_d2.get_cfg()
    cfg.SEG_D2.DATASETS.COCO = [[name, str(path), str(tmp_path)]]
    cfg.SEG_D2.DATASETS.COCO_VALIDATION = "bogus"
    with pytest.raises(ValueError, match="SEG_D2.DATASETS.COCO_VALIDATION 'bogus'"):
        register_datasets_from_config(cfg)
    cfg.SEG_D2.DATASETS.COCO_VALIDATION = "lenient"

    loads, headers = [], []
    real_load, real_size = json.load, coco_instances.image_size
    monkeypatch.setattr(json, "load", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    monkeypatch.setattr(coco_instances, "image_size", lambda *a, **k: headers.append(a[0]) or real_size(*a, **k))
    try:
        register_datasets_from_config(cfg)
        for _ in range(3):  # one per evaluation
            dicts = DatasetCatalog.get(name)
        assert len(loads) == 1 and len(headers) == 3  # the json parsed once, each image header read once
        assert [len(d["annotations"]) for d in dicts] == [1, 1, 0]
        path.write_text(json.dumps(valid_dataset()) + " ")  # the file changed: read again
        assert [len(d["annotations"]) for d in DatasetCatalog.get(name)] == [2, 1, 0]
        assert len(loads) == 2
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        user_datasets._REGISTERED.pop(name, None)


def test_compressed_rle_runs_match_pycocotools():
    rng = np.random.default_rng(0)
    for t in range(100):
        h, w = rng.integers(1, 40, 2)
        mask = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if t % 5 == 0:
            mask[:] = t % 2
        runs = _uncompressed({"size": [int(h), int(w)],
                              "counts": mask_util.encode(np.asfortranarray(mask))["counts"]})
        encoded = mask_util.frPyObjects({"size": [int(h), int(w)], "counts": runs}, h, w)["counts"].decode()
        assert _rle_string_counts(encoded).tolist() == runs
    assert _rle_string_counts("0") is not None and _rle_string_counts("g") is None  # "g": a number left open
    assert len(_rle_string_counts("")) == 0
