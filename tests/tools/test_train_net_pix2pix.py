"""Instant train_net runs of the pix2pix config family: trained through tools/train_net.py in alternating steps,
sample grids written, evaluated (L1, PSNR against OpenCV's PSNR), resumed; and weights of another model refused."""
import json

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.tools.test_train_net_instance import train_net  # noqa: F401  (fixture)

CONFIG = REPO / "configs" / "Shapes-ImageSynthesis" / "pix2pix_unet_c32_d4_bs4_600it.yaml"
INSTANT = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2",
           "MODEL.PIX2PIX.SAMPLE_PERIOD", "2", "MODEL.PIX2PIX.SAMPLE_IMAGES", "2", "MODEL.PIX2PIX.GENERATOR_CHANNELS", "8",
           "MODEL.PIX2PIX.DISCRIMINATOR_CHANNELS", "8", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64"]


def _args(out, *flags, opts=()):
    from detectron2.engine import default_argument_parser

    return default_argument_parser().parse_args(["--config-file", str(CONFIG), *flags, *INSTANT, *opts,
                                                 "OUTPUT_DIR", str(out)])


def test_pix2pix_trains_samples_evaluates_and_resumes(train_net, tmp_path):  # noqa: F811
    train_net.main(_args(tmp_path))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    trained = [m for m in metrics if "total_loss" in m]
    assert trained[-1]["iteration"] == 3
    for key in ("loss_d_real", "loss_d_fake", "loss_g_gan", "loss_g_l1"):
        assert all(np.isfinite(m[key]) for m in trained), key
    # the label | generated | real grids: a row for each of the first 2 val scenes, each at 64 px short side (as
    # INPUT.MIN_SIZE_TEST), 3 images wide, with 2-px gaps
    from detectron2.data import DatasetCatalog

    sizes = [cv2.imread(d["file_name"]).shape[:2] for d in DatasetCatalog.get("seg_d2_shapes_sem_seg_val_mini")[:2]]
    scaled = [(round(h * 64 / min(h, w)), round(w * 64 / min(h, w))) for h, w in sizes]
    for it in (2, 4):
        grid = cv2.imread(str(tmp_path / "samples" / f"iter_{it:07d}.png"))
        assert grid.shape[:2] == (sum(h + 2 for h, _ in scaled), max(3 * w + 4 for _, w in scaled))
    # L1 and PSNR of the 8 val_mini images, recomputed with OpenCV from the model's images
    synthesis = {k.split("/")[1]: v for k, v in metrics[-1].items() if k.startswith("image_synthesis/")}
    assert synthesis["images"] == 8
    assert (tmp_path / "model_0000001.pth").is_file() and (tmp_path / "model_final.pth").is_file()

    # --eval-only on the final weights gives the same figures; OpenCV's PSNR of the same images agrees
    model = train_net.Trainer.build_model(train_net.setup(_args(tmp_path, "--eval-only")))
    res_eval = train_net.main(_args(tmp_path, "--eval-only", opts=["MODEL.WEIGHTS", str(tmp_path / "model_final.pth")]))
    assert res_eval["image_synthesis"] == pytest.approx(synthesis)  # one test set: detectron2 returns its dict
    from detectron2.checkpoint import DetectionCheckpointer
    from seg_d2.data import build_test_loader

    cfg = train_net.setup(_args(tmp_path, "--eval-only"))
    DetectionCheckpointer(model).load(str(tmp_path / "model_final.pth"))
    model.eval()
    psnrs, l1s = [], []
    for batch in build_test_loader(cfg, "seg_d2_shapes_sem_seg_val_mini"):
        out = model(batch)[0]["image"].numpy().transpose(1, 2, 0)
        real = cv2.imread(batch[0]["file_name"]).astype(np.float64)
        psnrs.append(cv2.PSNR(real, out.astype(np.float64), 255.0))
        l1s.append(np.abs(real - out).mean())
    assert synthesis["PSNR"] == pytest.approx(np.mean(psnrs), rel=1e-6)
    assert synthesis["L1"] == pytest.approx(np.mean(l1s), rel=1e-6)

    # --resume continues from the last checkpoint: iterations 4 and 5 only
    train_net.main(_args(tmp_path, "--resume", opts=["SOLVER.MAX_ITER", "6"]))
    assert "Starting training from iteration 4" in (tmp_path / "log.txt").read_text()
    metrics = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    assert [m["iteration"] for m in metrics if "total_loss" in m][-1] == 5
    assert (tmp_path / "samples" / "iter_0000006.png").is_file()


def test_weights_of_another_model_are_refused_before_evaluation(train_net, tmp_path):  # noqa: F811
    """A Mask R-CNN run's checkpoint (its config.yaml beside it) given to a Pix2Pix config: a clear error naming the
    file, the other model and what it lacks, not an evaluation of random weights."""
    other = tmp_path / "maskrcnn_run"
    other.mkdir()
    torch.save({"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(8, 3, 7, 7)}}, other / "model_final.pth")
    (other / "config.yaml").write_text("MODEL:\n  META_ARCHITECTURE: GeneralizedRCNN\n")
    from seg_d2.engine import IncompatibleWeightsError

    with pytest.raises(IncompatibleWeightsError, match=r"maskrcnn_run/model_final.pth, a GeneralizedRCNN model's per "
                       r".*config.yaml do not fit this config's model: they lack \d+ of its tensors.*another model"):
        train_net.main(_args(tmp_path / "out", "--eval-only", opts=["MODEL.WEIGHTS", str(other / "model_final.pth")]))
    assert not (tmp_path / "out" / "inference").exists()
