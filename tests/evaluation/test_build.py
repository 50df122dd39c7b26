"""Evaluators are picked from each dataset's evaluator_type, with a clear error otherwise."""
import shutil

import pytest

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

import seg_d2  # noqa: F401
from seg_d2 import add_seg_d2_config
from seg_d2.evaluation import EVALUATOR_TYPES, build_evaluator


def _cfg(tmp_path):
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    return cfg


def test_known_types_cover_the_issue():
    assert {"coco", "sem_seg", "cityscapes_instance", "cityscapes_sem_seg"} <= set(EVALUATOR_TYPES)


def test_coco_dataset_gets_a_coco_evaluator(tmp_path):
    from detectron2.evaluation import COCOEvaluator

    cfg = _cfg(tmp_path)
    cfg.TEST.BOUNDARY_AP_WORKERS = 3
    evaluator = build_evaluator(cfg, "seg_d2_shapes_val")
    assert isinstance(evaluator, COCOEvaluator) and evaluator._boundary_ap_workers == 3


@pytest.mark.parametrize("evaluator_type", [None, "pascal_voc_but_misspelled"])
def test_unknown_evaluator_type_is_a_clear_error(tmp_path, evaluator_type):
    name = f"seg_d2_test_no_evaluator_{evaluator_type}"
    if evaluator_type:
        MetadataCatalog.get(name).set(evaluator_type=evaluator_type)
    with pytest.raises(ValueError, match=rf"Cannot build an evaluator for dataset '{name}'.*seg_d2 knows"):
        build_evaluator(_cfg(tmp_path), name)


@pytest.mark.parametrize("evaluator_type", ["coco", "rotated_coco"])
def test_a_removed_coco_conversion_is_made_again(tmp_path, evaluator_type):
    """detectron2's COCOEvaluator records where it converted a dataset without a COCO json in the dataset's
    metadata; once that folder is removed, the next evaluation in the process converts it again (it failed with
    a FileNotFoundError from pycocotools)."""
    name = f"seg_d2_test_converted_{evaluator_type}"
    box = [10, 10, 20, 20] if evaluator_type == "coco" else [20, 20, 10, 10, 0]
    mode = BoxMode.XYWH_ABS if evaluator_type == "coco" else BoxMode.XYWHA_ABS
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": "a.png", "image_id": 1, "height": 40, "width": 40,
                                                "annotations": [{"bbox": box, "bbox_mode": mode, "category_id": 0}]}])
        MetadataCatalog.get(name).set(thing_classes=["a"], evaluator_type=evaluator_type)
    first, second = tmp_path / "first", tmp_path / "second"
    build_evaluator(_cfg(tmp_path), name, str(first))
    assert (first / f"{name}_coco_format.json").is_file()
    shutil.rmtree(first)
    evaluator = build_evaluator(_cfg(tmp_path), name, str(second))
    assert MetadataCatalog.get(name).json_file == str(second / f"{name}_coco_format.json")
    assert evaluator._coco_api.getAnnIds() == [1]
