"""Instant runs of tools/train_net.py for each shipped semantic config family on the shapes data."""
import json
import math

import pytest

from tests.conftest import REPO, run_tool

TRAIN_NET = REPO / "tools" / "train_net.py"
SHAPES = REPO / "configs" / "Shapes-SemanticSegmentation"
CONFIGS = {
    "unet_R_50": SHAPES / "unet_R_50_scratch_bs8_600it.yaml",
    "unet_classic": SHAPES / "unet_classic_c16_scratch_bs8_600it.yaml",
    "fcn8s_R_50": SHAPES / "fcn8s_R_50_scratch_bs8_600it.yaml",
}
INSTANT = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(128,)", "DATALOADER.NUM_WORKERS", "0",
           "SOLVER.WARMUP_ITERS", "2", "SOLVER.MAX_ITER", "5", "SOLVER.CHECKPOINT_PERIOD", "1000",
           "TEST.EVAL_PERIOD", "0", "MODEL.WEIGHTS", "",
           "DATASETS.TEST", '("seg_d2_shapes_sem_seg_val_mini",)']  # plumbing, not accuracy: 8 val scenes
METRICS = ("sem_seg/mIoU", "sem_seg/fwIoU", "sem_seg/mACC", "sem_seg/pACC", "sem_seg/mDice",
           "sem_seg/mBoundaryIoU", "sem_seg/IoU-circle", "sem_seg/Dice-circle", "sem_seg/BoundaryIoU-circle")


def read_metrics(out_dir):
    with open(out_dir / "metrics.json") as f:
        return [json.loads(line) for line in f]


def run(config, out_dir, *opts, flags=()):
    res = run_tool([TRAIN_NET, "--config-file", config, *flags, *INSTANT, "OUTPUT_DIR", out_dir, *opts])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_instant_train_and_evaluate(family, tmp_path):
    run(CONFIGS[family], tmp_path)
    metrics = read_metrics(tmp_path)
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    assert all("loss_sem_seg" in m and "loss_sem_seg_dice" in m for m in metrics if "total_loss" in m)
    final = metrics[-1]
    for key in METRICS:
        assert key in final and math.isfinite(final[key]), key
        assert 0.0 <= final[key] <= 100.0, key
    assert (tmp_path / "inference" / "seg_d2_shapes_sem_seg_val_mini" / "sem_seg_predictions.json").is_file()
    # TEST.VIS_NUM_IMAGES (default 8) prediction | ground truth | error map images, and the per-class table
    inference = tmp_path / "inference" / "seg_d2_shapes_sem_seg_val_mini"
    assert len(list((inference / "vis").glob("*.png"))) == 8
    with open(inference / "per_class_metrics.csv") as f:
        header, *rows = [line.strip().split(",") for line in f]
    assert header == ["class", "IoU", "ACC", "Dice", "BoundaryIoU"] and len(rows) == 5
    assert (tmp_path / "model_final.pth").is_file()


def test_eval_only_with_sliding_window_and_tta(tmp_path):
    """The config switches reach inference through train_net: windows smaller than the images, flip
    and two scales; the evaluation still returns every metric (of an untrained model: MODEL.WEIGHTS "")."""
    res = run(CONFIGS["unet_classic"], tmp_path, "TEST.SLIDING_WINDOW.ENABLED", "True", "TEST.SLIDING_WINDOW.SIZE", "[96, 96]",
              "TEST.SEM_SEG_TTA.ENABLED", "True", "TEST.SEM_SEG_TTA.SCALES", "[0.75, 1.0]",
              flags=["--eval-only"])
    log = res.stdout + res.stderr
    assert "SegD2SemanticSegmentor" in log
    assert "copypaste: mIoU,fwIoU,mACC,pACC,mDice,mBoundaryIoU" in log
