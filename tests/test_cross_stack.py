"""The same trained models give the same metrics on both detectron2s that seg_d2 supports.

Models are trained here, then evaluated by ``train_net --eval-only`` on this detectron2 and, through
``SEG_D2_OTHER_PYTHON`` (an interpreter of an environment with the other detectron2: .ci/run points it at the
provisioned v0.6 while it tests main), on the other one. Every metric line (bbox, segm and Boundary AP; mIoU,
fwIoU, mACC, pACC, mDice, mBoundaryIoU) must be identical as printed. Without ``SEG_D2_OTHER_PYTHON`` these
tests are deselected (tests/conftest.py), since one environment holds one detectron2.
"""
import os
import re
import subprocess

import pytest

from tests.conftest import REPO, run_tool
from tests.tools.test_train_net import INSTANT, TRAIN_NET

pytestmark = pytest.mark.cross_stack

BMASK_MS = REPO / "configs" / "Shapes-InstanceSegmentation" / "bmask_rcnn_mask_scoring_R_18_FPN_scratch_bs4_600it.yaml"
SEMANTIC = REPO / "configs" / "Shapes-SemanticSegmentation" / "unet_classic_c16_d3_scratch_adam_bs4_160it.yaml"
NARROW_MASK_HEADS = ["MODEL.ROI_MASK_HEAD.CONV_DIM", "64", "MODEL.MASK_SCORING.CONV_DIM", "64"]
SEMANTIC_OPTS = ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0",
                 "DATASETS.TEST", '("seg_d2_shapes_sem_seg_val_mini",)']


def copypaste(output: str):
    """detectron2's print_csv_format lines: "copypaste: Task: <task>", "copypaste: <names>", "copypaste: <values>"."""
    return re.findall(r"copypaste: (.*)", output)


def eval_only(python, config, weights, out_dir, opts):
    args = [TRAIN_NET, "--config-file", config, "--eval-only", *opts, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out_dir]
    if python is None:  # this detectron2
        res = run_tool(args)
    else:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        res = subprocess.run([python, "-W", "ignore::FutureWarning", *map(str, args)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return copypaste(res.stdout + res.stderr)


@pytest.mark.long
@pytest.mark.parametrize("config, train_opts, eval_opts, tasks", [
    # bbox, segm (by mask scores), boundary; 64-channel mask and MaskIoU heads (their 128 x 14 x 14 convs on every
    # RoI were most of a training step): the same code, 60 steps in about two thirds of the time
    (BMASK_MS, [*INSTANT, "SOLVER.MAX_ITER", "60", "SEED", "1", *NARROW_MASK_HEADS], INSTANT, 3),
    (SEMANTIC, [*SEMANTIC_OPTS, "SOLVER.MAX_ITER", "40", "SEED", "1"], SEMANTIC_OPTS, 1),
], ids=["instance", "semantic"])
def test_same_metrics_on_both_detectron2s(config, train_opts, eval_opts, tasks, tmp_path):
    other = os.environ["SEG_D2_OTHER_PYTHON"]
    res = run_tool([TRAIN_NET, "--config-file", config, *train_opts, "OUTPUT_DIR", tmp_path / "train"])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    weights = tmp_path / "train" / "model_final.pth"
    here = eval_only(None, config, weights, tmp_path / "here", [*train_opts, *eval_opts])
    there = eval_only(other, config, weights, tmp_path / "there", [*train_opts, *eval_opts])
    assert len(here) == 3 * tasks, here
    values = [float(v) for line in here[2::3] for v in line.split(",")]
    assert sum(v > 0 for v in values) >= 3, here  # a trained model: metrics that are not all zero
    assert here == there
