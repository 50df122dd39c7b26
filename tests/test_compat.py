"""seg_d2.compat: the places where detectron2 v0.6 and main differ, each exercised on whichever is installed
(.ci/run runs the suite on both)."""
import copy

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from seg_d2.compat import evaluate_predictions_on_coco, restart_data_loader
from tests.conftest import run_tool


def _coco():
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 50, "height": 50}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400,
                         "iscrowd": 0}],
    }
    coco.createIndex()
    return coco


@pytest.mark.parametrize("fast", [True, False])
def test_evaluate_predictions_on_coco_either_signature(fast):
    """By hand: an 18x20 box inside its 20x20 ground truth has IoU 360/400 = 0.9, a match at 9 of the 10 IoU
    thresholds 0.5..0.95, so AP = 0.9 and AP50 = 1; the fast (COCOeval_opt) or pycocotools class as asked."""
    from detectron2.evaluation.fast_eval_api import COCOeval_opt

    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 18, 20], "score": 0.9}]
    ev = evaluate_predictions_on_coco(_coco(), copy.deepcopy(dets), "bbox", use_fast_impl=fast)
    assert isinstance(ev, COCOeval_opt) == fast and isinstance(ev, COCOeval)
    assert ev.stats[0] == pytest.approx(0.9)  # IoU 0.9 >= 0.5..0.9 (9 thresholds), < 0.95
    assert ev.stats[1] == pytest.approx(1.0)


def test_restart_data_loader_takes_a_new_iterator():
    import torch

    from detectron2.engine import SimpleTrainer

    model = torch.nn.Linear(1, 1)
    loader = [[{"i": 0}], [{"i": 1}], [{"i": 2}]]
    trainer = SimpleTrainer(model, loader, torch.optim.SGD(model.parameters(), lr=0.1))
    assert next(trainer._data_loader_iter) == [{"i": 0}]
    assert next(trainer._data_loader_iter) == [{"i": 1}]
    restart_data_loader(trainer)
    assert trainer.data_loader is loader
    assert next(trainer._data_loader_iter) == [{"i": 0}]  # from the start of a new iterator


def test_seg_d2_configs_need_no_pkg_resources():
    """setuptools >= 81 has no pkg_resources, which detectron2 main's model_zoo imports: seg_d2's LazyConfigs
    (built on detectron2's mask_rcnn_fpn.py) and detectron2's own config files load without it."""
    code = (
        "import sys\n"
        "sys.modules['pkg_resources'] = None  # as with setuptools >= 81\n"
        "from seg_d2 import model_zoo\n"
        "cfg = model_zoo.get_config('Shapes-InstanceSegmentation/bmask_rcnn_R_18_FPN_scratch_bs4_600it.py')\n"
        "print(type(cfg.model.roi_heads.mask_head).__name__, cfg.model.roi_heads._target_.__name__)\n"
        "print(model_zoo.get_detectron2_config_file('Misc/semantic_R_50_FPN_1x.yaml'))\n"
        "print(model_zoo.get_detectron2_config('common/models/mask_rcnn_fpn.py').model.roi_heads.num_classes)\n"
    )
    res = run_tool(["-c", code], fresh=True)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].endswith("BoundaryROIHeads"), lines
    assert lines[1].endswith("configs/Misc/semantic_R_50_FPN_1x.yaml") and lines[2] == "80"


def test_a_missing_detectron2_config_is_named():
    from seg_d2.model_zoo import get_detectron2_config_file

    with pytest.raises(FileNotFoundError, match="'Misc/nope.yaml' is not in detectron2's model zoo"):
        get_detectron2_config_file("Misc/nope.yaml")
