"""tools/demo.py on the shapes data, with checkpoints trained a few iterations by tools/train_net.py."""
import importlib.util
import json
import shutil

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from tests.conftest import REPO, run_tool

DEMO = REPO / "tools" / "demo.py"
TRAIN_NET = REPO / "tools" / "train_net.py"
SEM_CONFIG = REPO / "configs" / "Shapes-SemanticSegmentation" / "unet_classic_c16_scratch_bs8_600it.yaml"
INS_CONFIG = REPO / "configs" / "Shapes-InstanceSegmentation" / "bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"
# A few iterations, no evaluation: just a checkpoint of the recipe.
INSTANT = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(128,)", "DATALOADER.NUM_WORKERS", "0",
           "SOLVER.WARMUP_ITERS", "1", "SOLVER.MAX_ITER", "3", "SOLVER.STEPS", "(2,)",
           "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", "MODEL.WEIGHTS", ""]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(config, out_dir):
    res = run_tool([TRAIN_NET, "--config-file", config, *INSTANT, "OUTPUT_DIR", out_dir])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert (out_dir / "model_final.pth").is_file() and (out_dir / "config.yaml").is_file()
    return out_dir


@pytest.fixture(scope="module")
def sem_run(tmp_path_factory):
    return _train(SEM_CONFIG, tmp_path_factory.mktemp("sem_run"))


@pytest.fixture(scope="module")
def ins_run(tmp_path_factory):
    return _train(INS_CONFIG, tmp_path_factory.mktemp("ins_run"))


@pytest.fixture(scope="module")
def demo():
    """tools/demo.py as a module, to run its main() in this process (cheaper than a subprocess)."""
    spec = importlib.util.spec_from_file_location("seg_d2_tools_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def val_images():
    import seg_d2  # noqa: F401  (generates the shapes data on first use)
    from detectron2.data import DatasetCatalog

    return [d["file_name"] for d in DatasetCatalog.get("seg_d2_shapes_val")[:3]]


def _rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[:, :, ::-1].astype(np.int16)


def _changed(a, b):
    return np.abs(a - b).max(axis=2) > 8


def test_semantic_overlays_cli(sem_run, val_images, tmp_path):
    """Files, a glob and a directory; overlays with a legend and confidence maps; s/img printed."""
    from detectron2.config import get_cfg
    from detectron2.data import MetadataCatalog

    from seg_d2 import add_seg_d2_config
    from seg_d2.utils.visualizer import class_colors

    in_dir = tmp_path / "in"
    in_dir.mkdir()
    shutil.copy(val_images[1], in_dir / "b.png")
    out = tmp_path / "out"
    res = run_tool([DEMO, "--config-file", sem_run / "config.yaml", "--input", val_images[0],
                    str(in_dir / "*.png"), str(in_dir), "--output", out, "--confidence-map", "--save-masks",
                    "--no-text", "--opts", "MODEL.WEIGHTS", sem_run / "model_final.pth"])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "s/img" in res.stdout
    records = json.loads((out / "predictions.json").read_text())["predictions"]
    assert [r["input"] for r in records] == [val_images[0], str(in_dir / "b.png")]  # duplicates dropped
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(sem_run / "config.yaml"))
    # the demo draws with the metadata of the first test dataset, else the first training one (here)
    colors = np.array(class_colors(MetadataCatalog.get((cfg.DATASETS.TEST or cfg.DATASETS.TRAIN)[0]), 5), np.float64)
    for rec in records:
        src, vis = _rgb(rec["input"]), _rgb(rec["output"])
        h, w = src.shape[:2]
        assert vis.shape[0] == h and vis.shape[1] > w + 40  # the legend on the right
        # Every pixel is predicted, so each region shows its class colour (the dataset's stuff_colors)
        # blended at --alpha 0.5 over the image: vis = (1 - a) * image + a * colour, so 2 * vis - image is
        # the colour, computed by hand from the saved label map. Checked by the median over each class's
        # pixels 2 px or more from a label change (a 5x5 max and min filter agree), which region edges and
        # regions too small to draw do not move. (A black class over a dark image changes little, so "most
        # pixels changed" is no test of it.)
        labels = cv2.imread(rec["label_map"], cv2.IMREAD_UNCHANGED)
        square = np.ones((5, 5), np.uint8)
        inside = cv2.dilate(labels, square) == cv2.erode(labels, square)
        colour_seen = 2 * vis[:, :w] - src
        checked = 0
        for k in np.unique(labels):
            region = inside & (labels == k)
            if region.sum() >= 50:
                assert np.abs(np.median(colour_seen[region], axis=0) - colors[k]).max() <= 4, (k, colors[k])
                checked += 1
        assert checked >= 1
        assert sum(rec["pixels"].values()) == h * w
        with open(rec["confidence_map"], "rb") as f:
            assert f.read(8) == PNG_MAGIC
        conf = _rgb(rec["confidence_map"])
        assert conf.shape[0] == h and conf.shape[1] == w + 64


def test_semantic_label_maps_with_save_masks(demo, sem_run, val_images, tmp_path):
    """--save-masks: one label map of class indices per image, the overlay's classes; and a threshold no
    pixel reaches is said, with the highest probability seen."""
    import io
    from contextlib import redirect_stdout

    args = ["--config-file", str(sem_run / "config.yaml"), "--input", val_images[0], "--output", str(tmp_path / "o"),
            "--save-masks", "--opts", "MODEL.WEIGHTS", str(sem_run / "model_final.pth")]
    (rec,) = demo.main(demo.get_parser().parse_args(args))
    labels = cv2.imread(rec["label_map"], cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8 and labels.shape == _rgb(val_images[0]).shape[:2]
    names = ["background", "circle", "square", "triangle", "star"]
    ids, counts = np.unique(labels, return_counts=True)
    assert {names[i]: int(n) for i, n in zip(ids, counts)} == rec["pixels"]
    out = io.StringIO()
    with redirect_stdout(out):
        (rec,) = demo.main(demo.get_parser().parse_args([*args[:6], "--confidence-threshold", "1.01", *args[6:]]))
    assert rec["pixels"] == {} and (cv2.imread(rec["label_map"], cv2.IMREAD_UNCHANGED) == 255).all()
    assert f"nothing found: no pixel's top class probability reached --confidence-threshold 1.01; the highest was " \
           f"{rec['top_score']}" in out.getvalue()


def test_label_maps_of_many_classes_are_16_bit(demo, tmp_path):
    labels = np.array([[0, 300], [-1, 7]])
    path = demo.write_label_map(str(tmp_path / "x_labels.png"), labels, 301)
    read = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert read.dtype == np.uint16 and read.tolist() == [[0, 300], [65535, 7]]


def test_instance_overlays(demo, ins_run, val_images, tmp_path):
    """Masks, boxes, names and scores drawn where the model found instances; nothing without any."""

    def run(threshold, out, *opts):
        args = demo.get_parser().parse_args([
            "--config-file", str(INS_CONFIG), "--input", val_images[0], "--output", str(tmp_path / out),
            "--confidence-threshold", threshold, "--opts", "MODEL.WEIGHTS", str(ins_run / "model_final.pth"), *opts,
        ])
        (rec,) = demo.main(args)
        return rec, _rgb(rec["output"])

    src = _rgb(val_images[0])
    rec, vis = run("0", "all", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")  # barely trained: 0 keeps every detection
    top = max(i["score"] for i in rec["instances"])
    assert vis.shape == src.shape
    assert rec["instances"]
    assert {i["name"] for i in rec["instances"]} <= {"circle", "square", "triangle", "star"}
    inside = np.zeros(src.shape[:2], bool)
    for inst in rec["instances"]:
        x0, y0, x1, y1 = (int(round(v)) for v in inst["box"])
        inside[max(y0, 0): y1 + 1, max(x0, 0): x1 + 1] = True
    assert _changed(vis, src)[inside].mean() > 0.05
    for inst in rec["instances"]:  # each mask as COCO RLE, at the image's size, inside its box
        mask = mask_util.decode(inst["segmentation"])
        assert mask.shape == src.shape[:2]
        if mask.any():
            x, y, w, h = mask_util.toBbox(inst["segmentation"])
            x0, y0, x1, y1 = inst["box"]
            assert x >= x0 - 1 and y >= y0 - 1 and x + w <= x1 + 1 and y + h <= y1 + 1
    # no score reaches 1: no prediction, the image unchanged (the model run at its config's threshold, 0 here)
    rec, vis = run("1.0", "none", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    assert rec["instances"] == []
    assert _changed(vis, src).mean() < 0.001
    assert rec["top_score"] == top  # and the record (and the console) say what the best was


def test_video(demo, sem_run, val_images, tmp_path):
    src = cv2.imread(val_images[0])
    h, w = src.shape[:2]
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (w, h))
    for k in range(4):
        writer.write(np.roll(src, 4 * k, axis=1))
    writer.release()
    out = tmp_path / "out"
    args = demo.get_parser().parse_args([
        "--config-file", str(sem_run / "config.yaml"), "--video-input", str(video), "--output", str(out),
        "--opts", "MODEL.WEIGHTS", str(sem_run / "model_final.pth"),
    ])
    (rec,) = demo.main(args)
    assert rec["frames"] == 4
    cap = cv2.VideoCapture(rec["output"])
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 4
    assert frames[0].shape[0] == h and frames[0].shape[1] > w  # legend of all classes


def test_bad_inputs_name_the_file(demo, sem_run, ins_run, val_images, tmp_path):
    from seg_d2.utils.predictor import SetupError

    weights = ["--opts", "MODEL.WEIGHTS", str(sem_run / "model_final.pth")]
    config = ["--config-file", str(sem_run / "config.yaml")]
    out = ["--output", str(tmp_path / "out")]

    def error(*argv):
        with pytest.raises(SetupError) as e:
            demo.main(demo.get_parser().parse_args([*config, *out, *argv]))
        return str(e.value)

    missing = str(tmp_path / "nope.png")
    assert missing in error("--input", missing, *weights)
    assert "nothing*.png" in error("--input", str(tmp_path / "nothing*.png"), *weights)
    bad_video = tmp_path / "broken.mp4"
    bad_video.write_bytes(b"not a video")
    msg = error("--video-input", str(bad_video), *weights)
    assert str(bad_video) in msg and "Cannot read video" in msg
    assert "Video file not found" in error("--video-input", str(tmp_path / "none.mp4"), *weights)
    # the saved config trained from scratch: MODEL.WEIGHTS is empty
    msg = error("--input", val_images[0])
    assert "MODEL.WEIGHTS is empty" in msg and str(sem_run / "config.yaml") in msg
    missing_weights = str(tmp_path / "model_missing.pth")
    assert f"Weights file not found: {missing_weights}" in error(
        "--input", val_images[0], "--opts", "MODEL.WEIGHTS", missing_weights)
    msg = error("--input", val_images[0], "--opts", "MODEL.WEIGHTS", str(ins_run / "model_final.pth"))
    assert "does not fit the model" in msg and str(ins_run / "model_final.pth") in msg
    # from the command line: exit status 2 and the message, no traceback
    res = run_tool([DEMO, *config, *out, "--input", missing, *weights])
    assert res.returncode == 2 and f"Input image not found: {missing}" in res.stderr
    assert "Traceback" not in res.stderr


def test_weights_that_do_not_fit_the_config_are_an_error_in_every_inference_tool(demo, sem_run, val_images,
                                                                                   tmp_path):
    """A 5-class model with a 3-class config: only the class predictor's tensors differ, which the demo once
    ran anyway (labels from the wrong classes, exit 0). The demo, the exporter and train_net --eval-only
    now stop, naming the tensor, both shapes and the run's config.yaml; training (fine-tuning) still
    skips those tensors as detectron2 does."""
    weights = str(sem_run / "model_final.pth")
    wrong = ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"]
    expected = (rf"Weights {weights} do not fit this config's model: \S+ is \(\d+, [^)]*\) in the weights but "
                rf"\(3, [^)]*\) in the model.*OUTPUT_DIR/config\.yaml \(here: {sem_run / 'config.yaml'}\)")
    import re

    res = run_tool([DEMO, "--config-file", SEM_CONFIG, "--input", val_images[0], "--output", tmp_path / "demo",
                    "--opts", "MODEL.WEIGHTS", weights, *wrong])
    assert res.returncode == 2 and re.search(expected, res.stderr), res.stderr[-2000:]
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())
    res = run_tool([REPO / "tools" / "deploy" / "export_model.py", "--config-file", SEM_CONFIG, "--output",
                    tmp_path / "export", "MODEL.WEIGHTS", weights, *wrong])
    assert res.returncode != 0 and re.search(expected, res.stdout + res.stderr), (res.stdout + res.stderr)[-2000:]
    # --eval-only: a config whose classes fit the data (checked first) but whose widths differ (16 -> 8 channels)
    res = run_tool([TRAIN_NET, "--config-file", SEM_CONFIG, "--eval-only", "MODEL.WEIGHTS", weights,
                    "MODEL.UNET.BASE_CHANNELS", "8", "DATASETS.TEST", "('seg_d2_shapes_sem_seg_val_mini',)",
                    "OUTPUT_DIR", tmp_path / "eval"])
    log = res.stdout + res.stderr
    assert res.returncode != 0 and re.search(rf"Weights {weights} do not fit this config's model: \S+ is \(16, [^)]*\) "
                                             rf"in the weights but \(8, [^)]*\) in the model \(and \d+ more tensors\)", log), log[-2000:]
    assert "copypaste" not in log  # nothing evaluated
    # fine-tuning from them: detectron2's skip-and-log, and training goes on
    res = run_tool([TRAIN_NET, "--config-file", SEM_CONFIG, *INSTANT, "MODEL.WEIGHTS", weights,
                    "MODEL.UNET.BASE_CHANNELS", "8", "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", tmp_path / "finetune"])
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "Skip loading parameter" in res.stdout + res.stderr
