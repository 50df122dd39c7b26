"""Instant runs of tools/train_net.py: train, evaluate, kill -9 and resume, eval-only, two CPU processes."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_tool

TRAIN_NET = REPO / "tools" / "train_net.py"
MASK_RCNN = REPO / "configs" / "Shapes-InstanceSegmentation" / "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"
# Tiny and fast: a handful of iterations on small images.
INSTANT = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128",
           "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "10", "TEST.EVAL_PERIOD", "0",
           # keep low-confidence detections, so that a barely trained model still yields every metric
           "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
           # these runs check plumbing, not accuracy: evaluate on 8 val scenes
           "DATASETS.TEST", '("seg_d2_shapes_val_mini",)']


def read_metrics(out_dir):
    with open(out_dir / "metrics.json") as f:
        return [json.loads(line) for line in f]


def train(out_dir, *opts, flags=(), config=MASK_RCNN, env=None):
    res = run_tool([TRAIN_NET, "--config-file", config, *flags, *INSTANT, "OUTPUT_DIR", out_dir, *opts], env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res


@pytest.fixture(scope="module")
def instant_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("instant")
    res = train(out, "SOLVER.MAX_ITER", "10")
    return out, res


def test_instant_training_and_evaluation(instant_run):
    out, res = instant_run
    metrics = read_metrics(out)
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert losses and all(math.isfinite(x) for x in losses)
    final = metrics[-1]
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75"):
        assert key in final and math.isfinite(final[key]), key
    assert (out / "model_final.pth").is_file()
    assert list(out.glob("events.out.tfevents.*")), "TensorBoard events are written"
    log = (out / "log.txt").read_text()
    assert "eta:" in log and "iter: 9" in log and "lr:" in log and "total_loss:" in log


def test_eval_only_reproduces_the_final_evaluation(instant_run, tmp_path):
    out, _ = instant_run
    res = run_tool([TRAIN_NET, "--config-file", MASK_RCNN, "--eval-only", *INSTANT,
                    "MODEL.WEIGHTS", out / "model_final.pth", "OUTPUT_DIR", tmp_path])
    assert res.returncode == 0, res.stderr[-3000:]
    final = read_metrics(out)[-1]
    assert f"copypaste: {final['segm/AP']:.4f}" in res.stdout + res.stderr


# kill -9 / --resume: a tiny U-Net (8-channel, 3 levels) on ~48 px shapes, Adam with a poly LR; checkpoints
# after iterations 2 and 5. tests/engine/train_probe.py records each iteration's images, LR and loss terms.
RESUME_CONFIG = REPO / "configs" / "Shapes-SemanticSegmentation" / "unet_classic_c16_d3_scratch_adam_bs4_160it.yaml"
RESUME_OPTS = ["SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "3", "DATASETS.TEST", "()",
               "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(40,48)", "INPUT.MAX_SIZE_TRAIN", "64",
               "MODEL.UNET.BASE_CHANNELS", "8", "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[8,8]"]
PROBE = REPO / "tests" / "engine" / "train_probe.py"


def _probe_cmd(out_dir, *flags):
    return [sys.executable, "-W", "ignore::FutureWarning", TRAIN_NET, "--config-file", RESUME_CONFIG,
            "--dataset-module", PROBE, *flags, *RESUME_OPTS, "OUTPUT_DIR", out_dir]


def _records(path):
    return {r["iter"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_kill_9_while_saving_then_resume_continues_exactly(tmp_path):
    out, log = tmp_path / "run", tmp_path / "probe.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PROBE_LOG": str(log), "PROBE_STALL_AT_SAVE": "2",
           "OMP_NUM_THREADS": "1"}
    # the second checkpoint (after iteration 5) stops half-written; SIGKILL while it is being written
    proc = subprocess.Popen(list(map(str, _probe_cmd(out))), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while not Path(f"{log}.stalled").exists():
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.stderr else ""
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert list(out.glob(".model_0000005.pth.tmp*")), "killed while writing the checkpoint of iteration 5"
    assert not (out / "model_0000005.pth").exists()
    assert (out / "last_checkpoint").read_text() == "model_0000002.pth"
    uninterrupted = _records(log)  # the killed run up to the kill: iterations 0..5
    assert sorted(uninterrupted) == list(range(6))

    log.unlink()
    env["PROBE_STALL_AT_SAVE"] = "0"
    res = subprocess.run(list(map(str, _probe_cmd(out, "--resume"))), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-5000:]
    assert "Starting training from iteration 3" in res.stdout + res.stderr
    resumed = _records(log)
    assert sorted(resumed) == [3, 4, 5]
    for i in (3, 4, 5):  # same images in the same order, same LR (optimizer and scheduler state), same losses
        assert resumed[i]["files"] == uninterrupted[i]["files"], i
        assert resumed[i]["lr"] == pytest.approx(uninterrupted[i]["lr"], rel=1e-12), i
        assert resumed[i]["losses"] == pytest.approx(uninterrupted[i]["losses"], rel=1e-5, abs=1e-6), i
    assert (out / "model_final.pth").is_file() and (out / "last_checkpoint").read_text() == "model_final.pth"
    assert not list(out.glob(".*.tmp*")), "the half-written file of the killed save is removed on --resume"


@pytest.mark.long
def test_two_cpu_processes(tmp_path):
    train(tmp_path, "SOLVER.MAX_ITER", "6", flags=["--num-gpus", "2"], env={"CUDA_VISIBLE_DEVICES": ""})
    log = (tmp_path / "log.txt").read_text()
    assert "running 2 CPU processes of DistributedDataParallel over GLOO" in log
    assert "on 2 devices" in log  # distributed inference, gathered over GLOO
    metrics = read_metrics(tmp_path)
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 5  # trained to the end
    assert "segm/AP" in metrics[-1]
