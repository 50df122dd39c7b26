"""Evaluators are picked from each dataset's evaluator_type, with a clear error otherwise."""
import pytest

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog

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
