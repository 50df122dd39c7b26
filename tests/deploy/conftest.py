"""Models trained a few iterations on the shapes data, exported once per family (module-scoped)."""
import os
from pathlib import Path

import numpy as np
import torch

from detectron2.engine import SimpleTrainer
from detectron2.modeling import build_model
from detectron2.solver import build_optimizer

import seg_d2  # noqa: F401
from seg_d2.data import build_train_loader
from seg_d2.utils.predictor import load_config, read_image
from tests.conftest import REPO  # noqa: F401  (sets DETECTRON2_DATASETS)

SMALL_R18 = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
SMALL_TRAIN = ["SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "0", "DATALOADER.NUM_WORKERS", "0",
               "SOLVER.BASE_LR", "0.01", "SEED", "0"]


def train_briefly(config: str, opts, out_dir, iters: int = 2) -> str:
    """Train ``iters`` iterations on the shapes training data; returns the checkpoint's path."""
    torch.manual_seed(0)
    cfg = load_config(config, list(opts) + SMALL_TRAIN)
    model = build_model(cfg)
    trainer = SimpleTrainer(model, build_train_loader(cfg), build_optimizer(cfg, model))
    trainer.train(0, iters)
    path = os.path.join(out_dir, "model_final.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


def shapes_val_files():
    """The shapes validation images, where tests/conftest.py puts the datasets (DETECTRON2_DATASETS)."""
    files = sorted((Path(os.environ["DETECTRON2_DATASETS"]) / "seg_d2_shapes" / "images" / "val").glob("*.png"))
    assert len(files) >= 3, f"the shapes validation images are missing under {os.environ['DETECTRON2_DATASETS']}"
    return files


def val_images(format: str = "BGR"):
    """Three shapes validation images at three different sizes (crops): (H, W, C) uint8."""
    files = shapes_val_files()[:3]
    # 128 x 160, 150 x 117 and 97 x 128: three sizes, odd ones included
    crops = [(slice(None), slice(None)), (slice(0, 150), slice(0, 117)), (slice(3, 100), slice(0, 128))]
    return [np.ascontiguousarray(read_image(str(f), format)[c]) for f, c in zip(files, crops)]


def instance_images(format: str = "BGR"):
    """Images for the instance exports, on which a model finds different numbers of detections: the three
    of :func:`val_images`, a crop of a fourth validation image (100 x 130), and a blank (white) image of
    the first's size, on which a model trained 2 iterations mostly scores lowest."""
    files = shapes_val_files()
    assert len(files) >= 4, "the shapes validation images are missing"
    images = val_images(format)
    fourth = np.ascontiguousarray(read_image(str(files[3]), format)[10:110, 20:150])
    return images + [fourth, np.full_like(images[0], 255)]
