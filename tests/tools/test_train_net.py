"""Instant runs of tools/train_net.py: train, evaluate, resume, eval-only, two CPU processes."""
import json
import math

import pytest

from tests.conftest import REPO, run_tool

TRAIN_NET = REPO / "tools" / "train_net.py"
MASK_RCNN = REPO / "configs" / "Shapes-InstanceSegmentation" / "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"
# Tiny and fast: a handful of iterations on small images.
INSTANT = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128",
           "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "10", "TEST.EVAL_PERIOD", "0",
           # keep low-confidence detections, so that a barely trained model still yields every metric
           "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


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
    res = train(out, "SOLVER.MAX_ITER", "20")
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
    assert "eta:" in log and "iter: 19" in log and "lr:" in log and "total_loss:" in log


def test_eval_only_reproduces_the_final_evaluation(instant_run, tmp_path):
    out, _ = instant_run
    res = run_tool([TRAIN_NET, "--config-file", MASK_RCNN, "--eval-only", *INSTANT,
                    "MODEL.WEIGHTS", out / "model_final.pth", "OUTPUT_DIR", tmp_path])
    assert res.returncode == 0, res.stderr[-3000:]
    final = read_metrics(out)[-1]
    assert f"copypaste: {final['segm/AP']:.4f}" in res.stdout + res.stderr


def test_resume_continues_at_next_iteration_with_same_lr(tmp_path):
    common = ["SOLVER.MAX_ITER", "12", "SOLVER.CHECKPOINT_PERIOD", "6", "SOLVER.STEPS", "(8,)",
              "DATASETS.TEST", "()"]
    full = tmp_path / "full"
    train(full, *common)
    lr_full = read_metrics(full)[-1]["lr"]

    # Interrupt after iteration 5: keep only the checkpoint written there, then resume.
    part = tmp_path / "part"
    train(part, *common)
    (part / "model_final.pth").unlink()
    (part / "last_checkpoint").write_text("model_0000005.pth")
    res = train(part, *common, flags=["--resume"])
    log = res.stdout + res.stderr
    assert "Starting training from iteration 6" in log
    final = read_metrics(part)[-1]
    assert final["iteration"] == 11
    assert final["lr"] == pytest.approx(lr_full, rel=1e-9)


def test_two_cpu_processes(tmp_path):
    train(tmp_path, "SOLVER.MAX_ITER", "6", flags=["--num-gpus", "2"], env={"CUDA_VISIBLE_DEVICES": ""})
    log = (tmp_path / "log.txt").read_text()
    assert "running 2 CPU processes of DistributedDataParallel over GLOO" in log
    assert "on 2 devices" in log  # distributed inference, gathered over GLOO
    metrics = read_metrics(tmp_path)
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 5  # trained to the end
    assert "segm/AP" in metrics[-1]
