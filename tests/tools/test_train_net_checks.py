"""tools/train_net.py stops on a model that does not fit its data before it trains or evaluates:
MODEL.SEM_SEG_HEAD.NUM_CLASSES against the datasets' stuff_classes (seg_d2.data.checks)."""
import importlib.util
import re

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

from seg_d2.data.datasets import register_sem_seg_folder
from tests.conftest import REPO, run_tool
from tests.tools.test_train_net_semseg import INSTANT

TRAIN_NET = REPO / "tools" / "train_net.py"
CONFIG = REPO / "configs" / "Shapes-SemanticSegmentation" / "unet_classic_c16_scratch_bs8_600it.yaml"

# registers a tiny dataset, then runs train_net as `python tools/train_net.py ARGS` would
LAUNCHER = """
import runpy, sys
from seg_d2.data.datasets import register_sem_seg_folder
name, root, n = sys.argv[1:4]
register_sem_seg_folder(name, root + "/images", root + "/labels", [f"class{{i}}" for i in range(int(n))])
sys.argv = [{train_net!r}] + sys.argv[4:]
runpy.run_path({train_net!r}, run_name="__main__")
"""


def tiny_dataset(root, num_classes):
    """Two 24x32 images and label maps using every class."""
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(root / "images" / f"{i}.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        label = np.arange(24 * 32).reshape(24, 32) // (24 * 32 // num_classes + 1)
        cv2.imwrite(str(root / "labels" / f"{i}.png"), label.astype(np.uint8))
    return root


def opts(name, num_classes, out_dir):
    return [*INSTANT, "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)", "INPUT.MIN_SIZE_TEST", "0",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num_classes), "OUTPUT_DIR", str(out_dir)]


def test_training_stops_before_iteration_0(tmp_path):
    """NUM_CLASSES 2 on data labelled 0..4 failed at iteration 0 with torch's "Target 4 is out of
    bounds", naming neither the key nor the dataset."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(train_net=str(TRAIN_NET)))
    name = "test_train_net_checks_five"
    res = run_tool([launcher, name, tiny_dataset(tmp_path / "data", 5), "5", "--config-file", CONFIG,
                    *opts(name, 2, tmp_path / "out")])
    log = res.stdout + res.stderr
    assert res.returncode != 0
    assert (f"ValueError: Dataset '{name}' has 5 classes (metadata stuff_classes ['class0', 'class1', 'class2', "
            f"'class3', 'class4']) but the model predicts MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2") in log, log[-3000:]
    assert "Starting training" not in log and "out of bounds" not in log


@pytest.fixture
def three_classes(tmp_path):
    name = "test_train_net_checks_three"
    data = tiny_dataset(tmp_path / "data", 3)
    register_sem_seg_folder(name, str(data / "images"), str(data / "labels"), ["a", "b", "c"])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_eval_only_stops_before_evaluating(three_classes, tmp_path):
    """NUM_CLASSES 5 on 3-class data crashed in evaluation ("cannot reshape array of size 17 into
    shape (4,4)"), after the whole training; --eval-only now stops before building the model."""
    spec = importlib.util.spec_from_file_location("seg_d2_train_net_checks", TRAIN_NET)
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    args = default_argument_parser().parse_args(
        ["--config-file", str(CONFIG), "--eval-only", *opts(three_classes, 5, tmp_path / "out")])
    with pytest.raises(ValueError, match=rf"Dataset '{three_classes}' has 3 classes .*\['a', 'b', 'c'\].*"
                                         r"MODEL\.SEM_SEG_HEAD\.NUM_CLASSES = 5"):
        train_net.main(args)


def test_mask_scoring_with_detectron2_roi_heads_is_an_error():
    """MODEL.MASK_SCORING.ENABLED with StandardROIHeads and detectron2's mask head was silently ignored."""
    spec = importlib.util.spec_from_file_location("seg_d2_train_net_checks", TRAIN_NET)
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    args = default_argument_parser().parse_args([
        "--config-file", str(REPO / "configs/Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"),
        "MODEL.MASK_SCORING.ENABLED", "True", "OUTPUT_DIR", "/tmp/seg_d2_unused"])
    cfg = train_net.setup(args)
    with pytest.raises(ValueError, match=r"MODEL.MASK_SCORING.ENABLED is True, but neither MODEL.ROI_HEADS.NAME "
                                         r"\('StandardROIHeads'\).*MaskScoringROIHeads"):
        train_net.Trainer.build_model(cfg)
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.NAME = "MaskScoringROIHeads"
    cfg.MODEL.FPN.OUT_CHANNELS, cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 16, 32  # small: only the build is checked
    model = train_net.Trainer.build_model(cfg)
    assert model.roi_heads.mask_iou_head is not None


@pytest.mark.parametrize("key, value", [("TEST.CHANNELS_LAST", "True"), ("TEST.COMPILE.ENABLED", "True")])
def test_semantic_only_inference_options_on_an_instance_model_are_an_error(key, value):
    """train_net's build_model refuses them, instead of training a model that never applies them."""
    spec = importlib.util.spec_from_file_location("seg_d2_train_net_checks", TRAIN_NET)
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    args = default_argument_parser().parse_args([
        "--config-file", str(REPO / "configs/Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"),
        key, value, "OUTPUT_DIR", "/tmp/seg_d2_unused"])
    cfg = train_net.setup(args)
    with pytest.raises(NotImplementedError, match=rf"{re.escape(key.rsplit('.ENABLED')[0])}.*GeneralizedRCNN"):
        train_net.Trainer.build_model(cfg)


def test_an_empty_test_set_stops_a_training_run_before_it_trains(tmp_path):
    """A COCO test json with "images": [] failed only after training, with detectron2's "Dataset 'ptest' is
    empty!" naming no file. Now the run stops at once, naming the json."""
    import json

    from tests.own_data import make_coco
    from tests.tools.test_train_net import INSTANT as INSTANCE_INSTANT, MASK_RCNN

    make_coco(tmp_path, n_train=2, n_val=1)
    empty = tmp_path / "empty.json"
    val = json.loads((tmp_path / "val.json").read_text())
    empty.write_text(json.dumps({**val, "images": [], "annotations": []}))
    res = run_tool([TRAIN_NET, "--config-file", MASK_RCNN,
                    "--coco-dataset", "ptrain", tmp_path / "train.json", tmp_path / "images",
                    "--coco-dataset", "ptest", empty, tmp_path / "images", *INSTANCE_INSTANT,
                    "DATASETS.TRAIN", "('ptrain',)", "DATASETS.TEST", "('ptest',)", "MODEL.ROI_HEADS.NUM_CLASSES", "0",
                    "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", tmp_path / "out"])
    log = res.stdout + res.stderr
    assert res.returncode != 0
    assert f"ValueError: Dataset 'ptest' of DATASETS.TEST is empty: {empty} holds no image" in log, log[-3000:]
    assert "Starting training" not in log and not (tmp_path / "out" / "model_final.pth").exists()
