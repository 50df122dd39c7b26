"""tools/plot_metrics.py on the metrics.json of a short shapes training run (and of a second run)."""
import importlib.util
import json

import cv2
import pytest

from tests.conftest import REPO, run_tool

TOOL = REPO / "tools" / "plot_metrics.py"
TRAIN_NET = REPO / "tools" / "train_net.py"
CONFIG = REPO / "configs" / "Shapes-SemanticSegmentation" / "unet_classic_c16_scratch_bs8_600it.yaml"
# 2 iterations, evaluated (at a small test size) after each: two points per metric.
INSTANT = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "64",
           "DATALOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_ITERS", "1", "SOLVER.MAX_ITER", "2",
           "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "1", "MODEL.WEIGHTS", ""]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real run, and a second one: the same metrics, losses halved and metrics raised."""
    first = tmp_path_factory.mktemp("run_a")
    res = run_tool([TRAIN_NET, "--config-file", CONFIG, *INSTANT, "OUTPUT_DIR", first])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    second = tmp_path_factory.mktemp("run_b")
    with open(first / "metrics.json") as f, open(second / "metrics.json", "w") as g:
        for line in f:
            row = json.loads(line)
            row = {k: (v / 2 if "loss" in k else v + 1 if "/" in k else v) for k, v in row.items()}
            g.write(json.dumps(row) + "\n")
    return first, second


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("seg_d2_tools_plot_metrics", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_png(path, min_size=(200, 300)):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] >= min_size[0] and img.shape[1] >= min_size[1], path
    return img


def test_plots_of_two_runs(runs, tmp_path):
    out = tmp_path / "plots"
    res = run_tool([TOOL, *runs, "--output", out], env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert res.returncode == 0, res.stdout + res.stderr
    written = res.stdout.split()
    assert written == [str(out / n) for n in ("losses.png", "lr.png", "metrics_sem_seg.png")]
    for path in written:
        _check_png(path)
    # one panel per sem_seg metric (mIoU, fwIoU, ... and per class): a grid of 4 columns
    assert _check_png(out / "metrics_sem_seg.png").shape[0] > 3 * _check_png(out / "lr.png").shape[0]


def test_default_output_and_key_filter(runs):
    res = run_tool([TOOL, runs[0], "--keys", "total_loss", "sem_seg/mIoU", "--no-show"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == [str(runs[0] / "plots" / "losses.png"), str(runs[0] / "plots" / "metrics_sem_seg.png")]
    _check_png(runs[0] / "plots" / "losses.png", min_size=(150, 250))


def test_key_groups(tool, runs):
    rows = tool.load_metrics(tool.find_metrics_file(str(runs[0])))
    assert [r["iteration"] for r in rows] == sorted({r["iteration"] for r in rows})
    groups = tool.classify_keys(rows)
    assert groups["losses"] == ["total_loss", "loss_sem_seg", "loss_sem_seg_dice"]
    assert groups["lr"] == ["lr"]
    assert {"sem_seg/mIoU", "sem_seg/mDice", "sem_seg/IoU-circle"} <= set(groups["sem_seg"])
    assert len(tool.series(rows, "sem_seg/mIoU")[0]) == 2  # evaluated after iterations 1 and 2
    assert not any(k in ("time", "data_time", "eta_seconds") for ks in groups.values() for k in ks)


def test_errors_name_the_path(tmp_path):
    res = run_tool([TOOL, tmp_path / "missing_run"])
    assert res.returncode == 2 and str(tmp_path / "missing_run") in res.stderr
    (tmp_path / "empty").mkdir()
    res = run_tool([TOOL, tmp_path / "empty"])
    assert res.returncode == 2 and f"No metrics.json in {tmp_path / 'empty'}" in res.stderr
