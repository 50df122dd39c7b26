#!/usr/bin/env python
"""Export a trained seg_d2 (or detectron2) model to TorchScript or ONNX, as detectron2's
tools/deploy/export_model.py does.

Semantic models (U-Net with either encoder, FCN): the file maps one image tensor (C, H, W), float
pixel values in INPUT.FORMAT, of any size, to per-class logits (K, H, W) and the label map (H, W).
Instance models (Mask R-CNN, BMask R-CNN, the light boundary head): one image tensor to boxes,
classes, scores and 28x28 mask probabilities (and mask scores with mask scoring), through
detectron2's TracingAdapter. The test-time resize, sliding windows, TTA and mask pasting stay
outside the file; tools/deploy/run_exported.py does them.

Examples:
    python tools/deploy/export_model.py --config-file configs/Shapes-SemanticSegmentation/unet_R_50_scratch_bs4_200it.yaml \\
        --format onnx --output output/export_unet MODEL.WEIGHTS output/shapes_unet_R_50_quickstart/model_final.pth
    python tools/deploy/export_model.py --config-file configs/Shapes-InstanceSegmentation/bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml \\
        --format torchscript --sample-image datasets/seg_d2_shapes/images/val/000000.png --output output/export_bmask \\
        MODEL.WEIGHTS output/shapes_bmask_rcnn_R_18_FPN/model_final.pth

Writes OUTPUT/model.onnx and/or OUTPUT/model.ts, and OUTPUT/export.json (what run_exported.py needs).
"""
import argparse
import os
import sys

import numpy as np
import torch

# seg_d2 before detectron2: its import silences the torch.jit deprecation warnings of detectron2's and fvcore's imports
import seg_d2  # noqa: F401  (registers seg_d2's models and datasets)

from detectron2.data import transforms as T
from detectron2.utils.logger import setup_logger

from seg_d2.export import FORMATS, METHODS, class_metadata, export_model
from seg_d2.utils.predictor import SegPredictor, SetupError, load_config


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="yaml config, or LazyConfig .py")
    p.add_argument("--format", choices=FORMATS, nargs="+", default=["onnx"],
                   help="torchscript and/or onnx (both: from one trace, into one folder)")
    p.add_argument("--export-method", choices=METHODS, default="tracing",
                   help="tracing (any model, any input size); scripting (TorchScript only, where TorchScript "
                        "compiles the model: detectron2's stock R-CNN heads)")
    p.add_argument("--sample-image", metavar="FILE",
                   help="an image to trace with (default: a generated one of the model's test size)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the exported model")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="export even when the config gives no weights (to check a pipeline)")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides: KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth")
    return p


def sample_image(predictor: SegPredictor, path=None) -> np.ndarray:
    """The --sample-image, or a generated one: random pixels, 3:4, of the test size (256 without one)."""
    if path:
        return predictor.read_image(path)
    size = next((a.short_edge_length[0] for a in predictor.augmentations if isinstance(a, T.ResizeShortestEdge)), 256)
    channels = len(predictor.model.pixel_mean)
    return np.random.RandomState(0).randint(0, 256, (size, size * 4 // 3, channels)).astype(np.uint8)


def export_info(predictor: SegPredictor, config_file: str) -> dict:
    """What run_exported.py needs besides the file: input format, test resize, dataset and its class
    names and colours (recorded: the datasets of your own config are not registered where
    run_exported.py runs), and the semantic model's sliding-window and TTA settings."""
    model = predictor.model
    resize = [a for a in predictor.augmentations if isinstance(a, T.ResizeShortestEdge)]
    if len(resize) != len(predictor.augmentations):
        raise SetupError(
            f"{config_file}: export supports a test-time ResizeShortestEdge only, got {predictor.augmentations}")
    info = {
        "config_file": config_file, "input_format": predictor.input_format, "dataset": predictor.dataset_name,
        "class_metadata": class_metadata(predictor.cfg),
        "min_size_test": resize[0].short_edge_length[0] if resize else 0,
        "max_size_test": resize[0].max_size if resize else 0,
    }
    if getattr(model, "sliding_window", False):
        info["sliding_window"] = {"enabled": True, "size": list(model.window_size), "overlap": model.window_overlap,
                                  "blending": model.window_blending}
    if getattr(model, "tta", False):
        info["tta"] = {"enabled": True, "scales": list(model.tta_scales), "flip": model.tta_flip}
    return info


def main(args):
    cfg = load_config(args.config_file, args.opts)
    predictor = SegPredictor(cfg, config_file=args.config_file, allow_random_weights=args.allow_random_weights)
    image = sample_image(predictor, args.sample_image)
    aug = T.AugInput(image)
    T.AugmentationList(predictor.augmentations)(aug)
    tensor = torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)).astype("float32"))
    path = export_model(predictor.model.cpu(), tensor, args.output, fmt=args.format, method=args.export_method,
                        info=export_info(predictor, args.config_file))
    print(f"Exported {args.config_file} ({args.export_method}, traced at {tuple(tensor.shape[-2:])}) to {path}")
    return path


if __name__ == "__main__":
    args = get_parser().parse_args()
    setup_logger(name="fvcore")
    setup_logger()
    try:
        main(args)
    except (SetupError, NotImplementedError, ValueError) as e:
        print(f"export_model.py: error: {e}", file=sys.stderr)
        sys.exit(2)
