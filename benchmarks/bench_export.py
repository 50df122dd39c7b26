#!/usr/bin/env python
"""Benchmark: eager PyTorch vs the TorchScript and ONNX (onnxruntime) exports of the same model, on CPU.

Models: U-Net R-50 (configs/Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml) and BMask
R-CNN R-50 (configs/COCO-InstanceSegmentation/bmask_rcnn_R_50_FPN_1x.yaml, 80 classes), random weights
(speed does not depend on them; the R-CNN keeps its TEST.DETECTIONS_PER_IMAGE 100 detections with
SCORE_THRESH_TEST 0, so that its mask head runs as on a busy image). Each is exported once (traced at
512x512, tools/deploy/export_model.py's path) and run at 512x512 and 1024x2048; the U-Net at 1024x2048
runs over sliding windows (TEST.SLIDING_WINDOW: 512x1024, overlap 0.25: 9 windows), the window loop
being seg_d2's sliding_window_inference around the exported per-window network. Timed: the network on
the model's input tensor (the R-CNN without pasting masks, which all three do alike outside it). The
three runtimes alternate run by run, so that machine load hits them alike; the ratios are of the
medians measured in this run. The outputs are compared too (max relative difference of the logits /
boxes), as a check that the three compute the same thing.

    python benchmarks/bench_export.py [--models unet,bmask] [--sizes 512x512,1024x2048] [--repeat 3]
        [--warmup 1] [--threads N] [--json FILE]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MODELS = {  # name -> (config, options)
    "unet": ("Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml",
             ["TEST.SLIDING_WINDOW.SIZE", "[512, 1024]", "TEST.SLIDING_WINDOW.OVERLAP", "0.25"]),
    "bmask": ("COCO-InstanceSegmentation/bmask_rcnn_R_50_FPN_1x.yaml",
              ["MODEL.WEIGHTS", "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "DATASETS.TEST", "()",
               "DATASETS.TRAIN", "()"]),
}
LABELS = {"unet": "U-Net R-50", "bmask": "BMask R-CNN R-50"}


def build(name, threads):
    import seg_d2  # noqa: F401
    from detectron2.modeling import build_model
    from seg_d2.utils.predictor import load_config

    config, opts = MODELS[name]
    cfg = load_config(config, opts + ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


def runners(name, cfg, model, out_dir, size, threads):
    """{runtime: function image tensor -> main output tensor} for eager, TorchScript and onnxruntime."""
    import onnxruntime as ort

    from seg_d2.export.instance import rcnn_inference
    from seg_d2.modeling.sem_seg_inference import sliding_window_inference

    windowed = size[0] * size[1] > 512 * 1024 and name == "unet"
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    session = ort.InferenceSession(os.path.join(out_dir, "model.onnx"), so, providers=["CPUExecutionProvider"])
    ts = torch.jit.load(os.path.join(out_dir, "model.ts"))
    onnx_fn = lambda x: torch.from_numpy(session.run(None, {"image": x.numpy()})[0])  # noqa: E731
    ts_fn = lambda x: ts(x)[0]  # noqa: E731
    if name == "unet":
        model.sliding_window = windowed

        def eager(x):
            return model([{"image": x}])[0]["sem_seg"]

        if windowed:
            sw = (tuple(model.window_size), model.window_overlap, model.window_blending)
            return {"eager": eager,
                    "torchscript": lambda x: sliding_window_inference(ts_fn, x, *sw),
                    "onnxruntime": lambda x: sliding_window_inference(onnx_fn, x, *sw)}
        return {"eager": eager, "torchscript": ts_fn, "onnxruntime": onnx_fn}
    return {"eager": lambda x: rcnn_inference(model, [{"image": x}])[0]["instances"].pred_boxes.tensor,
            "torchscript": ts_fn, "onnxruntime": onnx_fn}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="unet,bmask")
    p.add_argument("--sizes", default="512x512,1024x2048", help="HxW, comma-separated")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per runtime")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per runtime first, per size")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from seg_d2.export import export_model

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    results = []
    print(f"torch {torch.__version__}, {args.threads} threads, CPU; s/img = median of {args.repeat} runs after "
          f"{args.warmup} warm-up", flush=True)
    for name in args.models.split(","):
        cfg, model = build(name, args.threads)
        out_dir = tempfile.mkdtemp(prefix=f"bench_export_{name}_")
        t0 = time.perf_counter()
        sample = torch.rand(3, 512, 512, generator=torch.Generator().manual_seed(0)) * 255
        export_model(model, sample, out_dir, fmt=["torchscript", "onnx"])
        print(f"== {LABELS[name]}: exported (trace + ONNX) in {time.perf_counter() - t0:.1f} s", flush=True)
        for size in sizes:
            x = torch.rand(3, *size, generator=torch.Generator().manual_seed(1)) * 255
            fns = runners(name, cfg, model, out_dir, size, args.threads)
            times = {k: [] for k in fns}
            outs = {}
            with torch.no_grad():
                for _ in range(args.warmup):
                    for k, fn in fns.items():
                        fn(x)
                for _ in range(args.repeat):
                    for k, fn in fns.items():
                        t = time.perf_counter()
                        outs[k] = fn(x)
                        times[k].append(time.perf_counter() - t)
            med = {k: statistics.median(v) for k, v in times.items()}
            ref = outs["eager"]
            diff = {k: (float((outs[k] - ref).abs().max() / ref.abs().max().clamp(min=1e-12))
                        if outs[k].shape == ref.shape else float("nan")) for k in ("torchscript", "onnxruntime")}
            windowed = name == "unet" and size[0] * size[1] > 512 * 1024
            if windowed:
                from seg_d2.modeling.sem_seg_inference import window_starts

                wh, ww = model.window_size
                overlap = model.window_overlap
                n = len(window_starts(size[0], wh, overlap)) * len(window_starts(size[1], ww, overlap))
                note = f" (sliding window, {n} windows of {wh}x{ww})"
            else:
                note = ""
            row = {"model": LABELS[name], "size": f"{size[0]}x{size[1]}", "windowed": bool(note),
                   **{f"{k}_s_per_img": round(v, 4) for k, v in med.items()},
                   "torchscript_vs_eager": round(med["torchscript"] / med["eager"], 3),
                   "onnxruntime_vs_eager": round(med["onnxruntime"] / med["eager"], 3),
                   "max_rel_diff": diff}
            results.append(row)
            print(f"{LABELS[name]:18s} {row['size']:>9s}{note}: eager {med['eager']:.3f}  torchscript "
                  f"{med['torchscript']:.3f}  onnxruntime {med['onnxruntime']:.3f} s/img | ratio to eager: "
                  f"torchscript {row['torchscript_vs_eager']:.2f}x, onnxruntime {row['onnxruntime_vs_eager']:.2f}x | "
                  f"max rel diff ts {diff['torchscript']:.1e}, ort {diff['onnxruntime']:.1e}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
