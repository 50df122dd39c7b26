"""Instant train_net runs of the instance models on the shapes data: BMask R-CNN (with mask scoring),
stock Mask R-CNN and Faster R-CNN. Each trains, evaluates, and reports bbox / segm / Boundary AP."""
import json
import math

import pytest

from tests.conftest import REPO, run_tool

TRAIN_NET = REPO / "tools" / "train_net.py"
SHAPES = REPO / "configs" / "Shapes-InstanceSegmentation"
INSTANT = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128",
           "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "10", "TEST.EVAL_PERIOD", "0",
           "SOLVER.MAX_ITER", "12", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
           # keep low-confidence detections, so that a barely trained model still yields every metric
           "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
METRICS = ("AP", "AP50", "AP75")

RUNS = {
    # config, extra options, tasks expected in the evaluation, losses expected in training
    "bmask_mask_scoring": ("mask_rcnn_bmask_ms_R_18_FPN_scratch_bs4_600it.yaml", [], ("bbox", "segm", "boundary"),
                           ("loss_mask", "loss_mask_dice", "loss_boundary", "loss_boundary_dice", "loss_mask_iou")),
    "stock_mask_rcnn": ("mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml", [], ("bbox", "segm", "boundary"),
                        ("loss_mask",)),
    "faster_rcnn": ("faster_rcnn_R_18_FPN_scratch_bs4_600it.yaml", [], ("bbox",), ("loss_cls", "loss_box_reg")),
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_instant_train_and_evaluate(run, tmp_path):
    config, opts, tasks, losses = RUNS[run]
    res = run_tool([TRAIN_NET, "--config-file", SHAPES / config, *INSTANT, *opts, "OUTPUT_DIR", tmp_path])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    trained = [m for m in metrics if "total_loss" in m]
    assert trained and all(math.isfinite(m["total_loss"]) for m in trained)
    for loss in losses:
        assert all(math.isfinite(m[loss]) for m in trained), loss
    final = metrics[-1]
    for task in tasks:
        for metric in METRICS:
            assert math.isfinite(final[f"{task}/{metric}"]), f"{task}/{metric}"
    evaluated = {k.split("/")[0] for k in final if k.split("/")[0] in ("bbox", "segm", "boundary")}
    assert evaluated == set(tasks)
    if "boundary" in tasks:
        assert "copypaste: Task: boundary" in res.stdout + res.stderr
