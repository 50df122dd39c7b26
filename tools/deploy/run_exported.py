#!/usr/bin/env python
"""Run a model exported by tools/deploy/export_model.py (TorchScript with torch alone, ONNX with
onnxruntime on CPU) on images, and write the same overlays and predictions.json as tools/demo.py.

Example:
    python tools/deploy/run_exported.py --model output/export_unet --input datasets/seg_d2_shapes/images/val \\
        --output output/export_unet/overlays
"""
import argparse
import importlib.util
import json
import os
import sys

# seg_d2 before detectron2: its import silences the torch.jit deprecation warnings of detectron2's and fvcore's imports
import seg_d2  # noqa: F401  (registers the datasets: class names and colours)

from detectron2.utils.logger import setup_logger

from seg_d2.export import ExportedPredictor
from seg_d2.utils.predictor import SetupError

_DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demo.py")
_spec = importlib.util.spec_from_file_location("seg_d2_tools_demo", _DEMO)
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)  # the demo's drawing code, so that the overlays are the same


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, metavar="PATH",
                   help="the folder export_model.py wrote (or its model.ts / model.onnx)")
    p.add_argument("--format", choices=["torchscript", "onnx"], default=None,
                   help="which model of a folder that holds both (default: the first exported)")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="images: files, glob patterns (quote them) or directories (their images)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the overlays")
    p.add_argument("--confidence-threshold", type=float, default=None,
                   help="instance models: minimum score (default 0.5); semantic models: pixels whose top "
                        "class probability is below it are left uncoloured (default: none)")
    p.add_argument("--confidence-map", action="store_true")
    p.add_argument("--save-masks", action="store_true", help="semantic models: also write <name>_labels.png")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--legend", choices=["present", "all", "none"], default="present")
    p.add_argument("--no-text", action="store_true")
    p.add_argument("--scale", type=float, default=1.0)
    return p


def main(args):
    inputs = demo.expand_inputs(args.input)
    predictor = ExportedPredictor(args.model, args.format)
    os.makedirs(args.output, exist_ok=True)
    records = demo.run_images(predictor, demo.Renderer(predictor, args), inputs, args)
    with open(os.path.join(args.output, "predictions.json"), "w") as f:
        json.dump({"model": predictor.model_path, "predictions": records}, f, indent=1)
    return records


if __name__ == "__main__":
    args = get_parser().parse_args()
    setup_logger()
    setup_logger(name="seg_d2")  # e.g. the warning of an export.json without class names
    try:
        main(args)
    except SetupError as e:
        print(f"run_exported.py: error: {e}", file=sys.stderr)
        sys.exit(2)
