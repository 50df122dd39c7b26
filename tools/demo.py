#!/usr/bin/env python
"""Run a trained seg_d2 (or detectron2) model on images or a video and write the overlays.

Semantic models: class colours (the dataset's stuff_colors, a fixed palette otherwise), class names
and a legend; ``--confidence-map`` also writes the top-class probability of each pixel. Instance
models: masks, boxes, class names and scores (detectron2's Visualizer). Panoptic models: segments.

Examples:
    python tools/demo.py --config-file configs/Shapes-SemanticSegmentation/unet_R_50_scratch_bs4_200it.yaml \\
        --input datasets/seg_d2_shapes/images/val --output output/demo \\
        --opts MODEL.WEIGHTS output/shapes_unet_R_50_quickstart/model_final.pth
    python tools/demo.py --config-file CONFIG.yaml --input "photos/*.jpg" img.png --output out/ \\
        --confidence-threshold 0.3 --opts MODEL.WEIGHTS model_final.pth
    python tools/demo.py --config-file CONFIG.py --video-input clip.mp4 --output out/ \\
        --opts train.init_checkpoint=model_final.pth      # LazyConfig: key=value overrides

Writes OUTPUT/<input name>.png per image (<name>_confidence.png with --confidence-map), OUTPUT/<video
name>.mp4 for a video, and OUTPUT/predictions.json (per input: what was found, time; instances with their
class, score, box and mask as COCO RLE). ``--save-masks`` also writes each semantic prediction as a label
map, <name>_labels.png (class indices; 16-bit past 255 classes; the "none" value for pixels below
--confidence-threshold is 255, or 65535 in 16 bits).
"""
import argparse
import glob
import json
import os
import sys
import time

import cv2
import numpy as np
import torch
import tqdm

# seg_d2 before detectron2: its import silences the torch.jit deprecation warnings of detectron2's and fvcore's imports
import seg_d2  # noqa: F401  (registers seg_d2's models and datasets)

from detectron2.config import CfgNode
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.logger import setup_logger
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode

from seg_d2.utils.predictor import SegPredictor, SetupError, load_config
from seg_d2.utils.visualizer import (
    class_names, draw_confidence, draw_instances, draw_panoptic, draw_sem_seg, sem_seg_probabilities, unique_name,
    write_image,
)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PROGRESS_MIN = 10  # inputs from which a progress bar replaces the per-image lines


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="yaml config, or LazyConfig .py")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH",
                     help="images: files, glob patterns (quote them) or directories (their images)")
    src.add_argument("--video-input", metavar="FILE", help="a video file (read with OpenCV)")
    p.add_argument("--output", required=True, metavar="DIR", help="folder for the overlays")
    p.add_argument("--confidence-threshold", type=float, default=None,
                   help="instance models: minimum score (default 0.5); semantic models: pixels whose top "
                        "class probability is below it are left uncoloured (default: none)")
    p.add_argument("--confidence-map", action="store_true",
                   help="semantic models: also write <name>_confidence.png, the top class probability per pixel")
    p.add_argument("--save-masks", action="store_true",
                   help="semantic models: also write <name>_labels.png, the predicted class of each pixel")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of semantic class colours")
    p.add_argument("--legend", choices=["present", "all", "none"], default="present",
                   help="semantic legend: classes present in the image, all classes, or none (videos: all)")
    p.add_argument("--no-text", action="store_true", help="semantic models: no class names on the regions")
    p.add_argument("--scale", type=float, default=1.0, help="size of the overlays relative to the inputs")
    p.add_argument("--allow-random-weights", action="store_true",
                   help="run even when the config gives no weights (to check a pipeline: meaningless output)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides: KEY VALUE pairs (yaml) or key=value (LazyConfig)")
    return p


def expand_inputs(entries):
    """Image paths from files, directories and glob patterns, in order, without duplicates."""
    paths = []
    for entry in entries:
        if os.path.isdir(entry):
            found = sorted(os.path.join(entry, f) for f in os.listdir(entry) if f.lower().endswith(IMAGE_EXTS))
            if not found:
                raise SetupError(f"No images ({', '.join(IMAGE_EXTS)}) in input directory {entry}")
        elif glob.has_magic(entry):
            found = sorted(f for f in glob.glob(entry, recursive=True) if os.path.isfile(f))
            if not found:
                raise SetupError(f"No input file matches {entry}")
        elif os.path.isfile(entry):
            found = [entry]
        else:
            raise SetupError(f"Input image not found: {entry}")
        paths += found
    return list(dict.fromkeys(paths))


def output_paths(inputs, out_dir, ext=".png"):
    """<out_dir>/<stem><ext> per input, numbered on name clashes; never an input file itself."""
    sources = {os.path.abspath(p) for p in inputs}
    taken = {os.path.splitext(os.path.basename(p))[0] for p in sources if os.path.dirname(p) == os.path.abspath(out_dir)
             and p.endswith(ext)}  # never overwrite an input image
    return [os.path.join(out_dir, unique_name(os.path.splitext(os.path.basename(p))[0], taken) + ext) for p in inputs]


class Renderer:
    """Draws a model's outputs on its input image; remembers what it found for predictions.json."""

    def __init__(self, predictor, args):
        self.metadata = predictor.metadata
        self.args = args
        self.score_threshold = 0.5 if args.confidence_threshold is None else args.confidence_threshold
        self.video = None

    def _sem_seg(self, logits):
        probs = sem_seg_probabilities(logits.to("cpu"))
        conf, labels = probs.max(dim=0)
        labels = labels.numpy().astype(np.int32)
        conf = conf.numpy()
        if self.args.confidence_threshold is not None:
            labels[conf < self.args.confidence_threshold] = -1
        return labels, conf, probs.shape[0]

    def instances(self, outputs):
        inst = outputs["instances"].to("cpu")
        if inst.has("scores"):
            inst = inst[inst.scores >= self.score_threshold]
        return inst

    def render(self, image_rgb, outputs, legend=None):
        """Returns (overlay RGB, confidence map RGB or None, summary dict)."""
        a = self.args
        if "panoptic_seg" in outputs:
            seg, info = outputs["panoptic_seg"]
            things = class_names(self.metadata, len(self.metadata.get("thing_classes", None) or []), "thing_classes")
            stuff = class_names(self.metadata, len(self.metadata.get("stuff_classes", None) or []))
            summary = {"segments": [{"class": (things if s["isthing"] else stuff)[s["category_id"]],
                                     "thing": bool(s["isthing"]), "pixels": int((seg == s["id"]).sum())} for s in info]}
            return draw_panoptic(image_rgb, seg.to("cpu"), info, self.metadata, scale=a.scale), None, summary
        if "instances" in outputs:
            raw = outputs["instances"].to("cpu")
            inst = self.instances(outputs)
            names = class_names(self.metadata, int(inst.pred_classes.max()) + 1 if len(inst) else 0, "thing_classes")
            # detectron2's COCO results of the instances: box (XYWH), score, and the mask as compressed RLE
            coco = instances_to_coco_json(inst, 0) if len(inst) else []
            found = [
                {"class": int(c), "name": names[int(c)], "score": round(float(s), 4),
                 "box": [round(float(x), 1) for x in b],
                 **({"segmentation": r["segmentation"]} if "segmentation" in r else {})}
                for c, s, b, r in zip(inst.pred_classes, inst.scores, inst.pred_boxes.tensor, coco)
            ]
            summary = {"instances": found}
            if not found:
                summary["top_score"] = round(float(raw.scores.max()), 4) if len(raw) and raw.has("scores") else None
            return draw_instances(image_rgb, inst, self.metadata, scale=a.scale), None, summary
        if "sem_seg" in outputs:
            labels, conf, k = self._sem_seg(outputs["sem_seg"])
            overlay = draw_sem_seg(image_rgb, labels, self.metadata, num_classes=k, alpha=a.alpha,
                                   legend=legend or a.legend, text=not a.no_text, scale=a.scale)
            names = class_names(self.metadata, k)
            ids, counts = np.unique(labels[labels >= 0], return_counts=True)
            summary = {"pixels": {names[i]: int(n) for i, n in zip(ids, counts)},
                       "mean_confidence": round(float(conf.mean()), 4), "labels": (labels, k)}
            if not len(ids):
                summary["top_score"] = round(float(conf.max()), 4)
            confidence = draw_confidence(conf, scale=a.scale) if a.confidence_map else None
            return overlay, confidence, summary
        raise SetupError(f"The model's outputs have nothing to draw: {sorted(outputs)}")

    def render_frame(self, frame_rgb, outputs):
        """A video frame: instances with VideoVisualizer (colours kept across frames), semantic
        overlays with a legend of all classes (so that every frame has the same size)."""
        if self.video is None:
            self.video = VideoVisualizer(self.metadata, ColorMode.IMAGE)
        if "panoptic_seg" in outputs:  # before "sem_seg": a panoptic model outputs both
            seg, info = outputs["panoptic_seg"]
            return self.video.draw_panoptic_seg_predictions(frame_rgb, seg.to("cpu"), info).get_image()
        if "sem_seg" in outputs:
            return self.render(frame_rgb, outputs, legend="all" if self.args.legend != "none" else "none")[0]
        if "instances" in outputs:
            return self.video.draw_instance_predictions(frame_rgb, self.instances(outputs)).get_image()
        raise SetupError(f"The model's outputs have nothing to draw: {sorted(outputs)}")


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run_images(predictor, renderer, inputs, args):
    outs = output_paths(inputs, args.output)
    records, model_time, start = [], 0.0, time.perf_counter()
    bar = tqdm.tqdm(total=len(inputs), unit="img", disable=len(inputs) < PROGRESS_MIN, file=sys.stderr)
    for path, out in zip(inputs, outs):
        image = predictor.read_image(path)
        t0 = time.perf_counter()
        outputs = predictor(image)
        _sync(predictor.device)
        seconds = time.perf_counter() - t0
        model_time += seconds
        overlay, confidence, summary = renderer.render(predictor.to_rgb(image), outputs)
        labels = summary.pop("labels", None)
        record = {"input": path, "output": write_image(out, overlay), "seconds": round(seconds, 4), **summary}
        if confidence is not None:
            record["confidence_map"] = write_image(os.path.splitext(out)[0] + "_confidence.png", confidence)
        if args.save_masks and labels is not None:
            record["label_map"] = write_label_map(os.path.splitext(out)[0] + "_labels.png", *labels)
        records.append(record)
        if "top_score" in summary:  # said even under a progress bar: the user will wonder why nothing is drawn
            print(f"{path}: {nothing_found(summary, renderer.score_threshold, args.confidence_threshold)}")
        if bar.disable:
            what = (f"{len(summary['instances'])} instances" if "instances" in summary
                    else f"classes {sorted(summary['pixels'])}" if "pixels" in summary
                    else f"{summary.get('segments', 0)} segments")
            print(f"{path}: {what} in {seconds:.3f}s -> {out}")
        bar.update(1)
    bar.close()
    total = time.perf_counter() - start
    n = len(inputs)
    print(f"Wrote {n} overlays to {args.output}: {model_time / n:.3f} s/img inference, "
          f"{total / n:.3f} s/img with reading and drawing")
    return records


def model_score_threshold(cfg, wanted):
    """The R-CNN test score threshold to run the model at: ``wanted`` when it is below the config's, else the
    config's own (what scores between the two is dropped when drawing), so that when nothing reaches
    ``wanted`` the demo still knows the top score to report. Panoptic and LazyConfig models: ``wanted``."""
    if wanted is None or not isinstance(cfg, CfgNode) or cfg.MODEL.META_ARCHITECTURE == "PanopticFPN":
        return wanted
    return min(wanted, cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST, cfg.MODEL.RETINANET.SCORE_THRESH_TEST)


def nothing_found(summary, score_threshold, confidence_threshold):
    """Why an image shows nothing: what the threshold was, and the best score the model gave."""
    top = summary["top_score"]
    if "instances" in summary:
        if top is None:
            return "nothing found: the model returned no instance at all (its test score threshold filtered them)"
        return (f"nothing found: no instance scored >= {score_threshold} (--confidence-threshold); the top score "
                f"was {top}")
    return (f"nothing found: no pixel's top class probability reached --confidence-threshold "
            f"{confidence_threshold}; the highest was {top}")


def write_label_map(path, labels, num_classes):
    """Class indices as a PNG: 8-bit up to 255 classes, else 16-bit; pixels without a class (below
    --confidence-threshold) get the largest value (255 or 65535)."""
    dtype = np.uint8 if num_classes <= 255 else np.uint16
    out = np.where(labels < 0, np.iinfo(dtype).max, labels).astype(dtype)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, out):
        raise OSError(f"Could not write label map {path}")
    return path


def open_video(path):
    if not os.path.isfile(path):
        raise SetupError(f"Video file not found: {path}")
    video = cv2.VideoCapture(path)
    ok, frame = video.read() if video.isOpened() else (False, None)
    if not ok:
        video.release()
        raise SetupError(f"Cannot read video {path}: OpenCV could not decode a frame from it")
    video.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return video


def run_video(predictor, renderer, args):
    video = open_video(args.video_input)
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    count = int(video.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out = os.path.join(args.output, os.path.splitext(os.path.basename(args.video_input))[0] + ".mp4")
    if os.path.abspath(out) == os.path.abspath(args.video_input):
        out = os.path.splitext(out)[0] + "_overlay.mp4"
    writer, frames, model_time, start = None, 0, 0.0, time.perf_counter()
    bar = tqdm.tqdm(total=count, unit="frame", file=sys.stderr)
    try:
        while True:
            ok, frame = video.read()
            if not ok:
                break
            image = predictor.from_bgr(frame)
            t0 = time.perf_counter()
            outputs = predictor(image)
            _sync(predictor.device)
            model_time += time.perf_counter() - t0
            vis = renderer.render_frame(np.ascontiguousarray(frame[:, :, ::-1]), outputs)
            if writer is None:
                writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), fps, (vis.shape[1], vis.shape[0]))
                if not writer.isOpened():
                    raise SetupError(f"Cannot write video {out} with OpenCV (codec mp4v)")
            writer.write(np.ascontiguousarray(vis[:, :, ::-1]))
            frames += 1
            bar.update(1)
    finally:
        bar.close()
        video.release()
        if writer is not None:
            writer.release()
    if not frames:
        raise SetupError(f"Cannot read video {args.video_input}: no frame decoded")
    total = time.perf_counter() - start
    print(f"Wrote {out}: {frames} frames, {model_time / frames:.3f} s/frame inference, "
          f"{total / frames:.3f} s/frame with drawing")
    return [{"input": args.video_input, "output": out, "frames": frames, "seconds": round(model_time, 4)}]


def main(args):
    # Everything that can be wrong with the inputs is checked before the model is built.
    inputs = expand_inputs(args.input) if args.input else None
    if args.video_input:
        open_video(args.video_input).release()
    cfg = load_config(args.config_file, args.opts)
    predictor = SegPredictor(cfg, config_file=args.config_file, allow_random_weights=args.allow_random_weights,
                             score_threshold=model_score_threshold(cfg, args.confidence_threshold))
    os.makedirs(args.output, exist_ok=True)
    renderer = Renderer(predictor, args)
    records = run_images(predictor, renderer, inputs, args) if inputs else run_video(predictor, renderer, args)
    with open(os.path.join(args.output, "predictions.json"), "w") as f:
        json.dump({"config_file": args.config_file, "predictions": records}, f, indent=1)
    return records


if __name__ == "__main__":
    args = get_parser().parse_args()
    setup_logger(name="fvcore")
    setup_logger()
    try:
        main(args)
    except SetupError as e:
        print(f"demo.py: error: {e}", file=sys.stderr)
        sys.exit(2)
