#!/usr/bin/env python
"""Benchmark: boundary-preserving Mask R-CNN vs stock detectron2 Mask R-CNN, on the shapes data.

In one run, both models (same R-18-FPN backbone, recipe, seed and number of iterations) are trained,
each in its own process (so that peak memory is each model's own), then evaluated (bbox, mask and
Boundary AP), and finally timed at inference in one process, alternating between the two models
image by image so that machine load hits both alike. Prints train s/iter, inference s/img, peak
memory, their ratios (variant / stock), and the APs.

    python benchmarks/bench_bmask.py [--iters 600] [--device cpu|cuda] [--out DIR]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(REPO, "configs", "Shapes-InstanceSegmentation")
MODELS = {
    "stock": os.path.join(SHAPES, "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"),
    "bmask": os.path.join(SHAPES, "mask_rcnn_bmask_R_18_FPN_scratch_bs4_600it.yaml"),
}


def setup_cfg(config, device, opts=()):
    from detectron2.config import get_cfg

    from seg_d2 import add_seg_d2_config

    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", device, "SEED", "7", "DATALOADER.NUM_WORKERS", "0", *opts])
    return cfg


def train_one(name, iters, device, out_dir):
    """Train and evaluate one model (run in a child process). Returns a dict of figures."""
    import seg_d2  # noqa: F401
    from detectron2.engine import DefaultTrainer, HookBase
    from detectron2.utils.env import seed_all_rng

    from seg_d2.evaluation import build_evaluator

    steps = []

    class StepTimer(HookBase):
        def before_step(self):
            if device == "cuda":
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def after_step(self):
            if device == "cuda":
                torch.cuda.synchronize()
            steps.append(time.perf_counter() - self._t)

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return build_evaluator(cfg, dataset_name, output_folder)

    cfg = setup_cfg(MODELS[name], device, [
        "SOLVER.MAX_ITER", str(iters),  # LR steps at the same fractions as the 600-iteration recipe
        "SOLVER.STEPS", f"({int(iters * 0.75)}, {int(iters * 0.92)})" if iters >= 20 else "()",
        "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9), "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out_dir,
    ])
    cfg.freeze()
    seed_all_rng(cfg.SEED)  # what default_setup would do: the same seed for both models
    trainer = Trainer(cfg)
    trainer.register_hooks([StepTimer()])
    trainer.resume_or_load(resume=False)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    train_peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    results = Trainer.test(cfg, trainer.model)
    timed = steps[len(steps) // 10:]  # skip warm-up
    return {
        "train_s_per_iter": sum(timed) / len(timed),
        "train_peak_cuda_bytes": train_peak,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "results": {t: {k: v for k, v in r.items() if not k.startswith("AP-")} for t, r in results.items()},
        "weights": os.path.join(out_dir, "model_final.pth"),
    }


@torch.no_grad()
def time_inference(weights, device, rounds=3):
    """Seconds per image of each model, interleaved image by image; plus CUDA peak memory."""
    import seg_d2  # noqa: F401
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_test_loader
    from detectron2.modeling import build_model

    models = {}
    for name, path in weights.items():
        cfg = setup_cfg(MODELS[name], device)
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(path)
        models[name] = model
    inputs = list(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0]))
    total = {n: 0.0 for n in models}
    peak = {n: 0 for n in models}
    for name, model in models.items():  # warm-up
        for x in inputs[:5]:
            model(x)
    for _ in range(rounds):
        for x in inputs:
            for name, model in models.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                model(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated())
                total[name] += time.perf_counter() - t
    n = rounds * len(inputs)
    return {name: {"infer_s_per_img": total[name] / n,
                   "infer_peak_cuda_bytes": peak[name] if device == "cuda" else None} for name in models}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=600, help="training iterations of each model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="folder for checkpoints and logs (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the figures to this json file")
    parser.add_argument("--_train", default=None, help=argparse.SUPPRESS)  # child: train this model
    args = parser.parse_args()
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO, "datasets"))
    out = args.out or tempfile.mkdtemp(prefix="bench_bmask_")

    if args._train:
        res = train_one(args._train, args.iters, args.device, os.path.join(out, args._train))
        with open(os.path.join(out, f"{args._train}.json"), "w") as f:
            json.dump(res, f)
        return

    figures = {}
    for name in MODELS:
        print(f"== training {name} for {args.iters} iterations on {args.device} ...", flush=True)
        cmd = [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--_train", name,
               "--iters", str(args.iters), "--device", args.device, "--out", out]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"training {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        with open(os.path.join(out, f"{name}.json")) as f:
            figures[name] = json.load(f)
    print("== timing inference (interleaved) ...", flush=True)
    for name, r in time_inference({n: f["weights"] for n, f in figures.items()}, args.device).items():
        figures[name].update(r)

    def mib(x):
        return f"{x / 2 ** 20:.0f} MiB" if x else "n/a"

    s, b = figures["stock"], figures["bmask"]
    rows = [
        ("train s/iter", f"{s['train_s_per_iter']:.4f}", f"{b['train_s_per_iter']:.4f}",
         b["train_s_per_iter"] / s["train_s_per_iter"]),
        ("inference s/img", f"{s['infer_s_per_img']:.4f}", f"{b['infer_s_per_img']:.4f}",
         b["infer_s_per_img"] / s["infer_s_per_img"]),
        ("peak RSS (process)", mib(s["peak_rss_bytes"]), mib(b["peak_rss_bytes"]),
         b["peak_rss_bytes"] / s["peak_rss_bytes"]),
        ("params", f"{s['params'] / 1e6:.2f} M", f"{b['params'] / 1e6:.2f} M", b["params"] / s["params"]),
    ]
    if args.device == "cuda":
        for key, label in (("train_peak_cuda_bytes", "peak CUDA mem (train)"),
                           ("infer_peak_cuda_bytes", "peak CUDA mem (inference)")):
            rows.append((label, mib(s[key]), mib(b[key]), b[key] / s[key]))
    for task in ("bbox", "segm", "boundary"):
        for metric in ("AP", "AP50", "AP75"):
            sv, bv = (f["results"].get(task, {}).get(metric, float("nan")) for f in (s, b))
            rows.append((f"{task} {metric}", f"{sv:.2f}", f"{bv:.2f}", bv / sv if sv > 0 else float("nan")))
    print(f"\nBoundary-preserving Mask R-CNN vs stock Mask R-CNN, R-18-FPN from scratch, shapes data, "
          f"{args.iters} iterations each, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"| {'':24} | {'stock':>12} | {'bmask':>12} | {'bmask/stock':>11} |")
    print(f"|{'-' * 26}|{'-' * 14}|{'-' * 14}|{'-' * 13}|")
    for label, sv, bv, ratio in rows:
        print(f"| {label:24} | {sv:>12} | {bv:>12} | {ratio:>11.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)


if __name__ == "__main__":
    main()
