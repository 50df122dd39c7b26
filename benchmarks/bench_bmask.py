#!/usr/bin/env python
"""Benchmark: BMask R-CNN as published and seg_d2's light boundary head vs stock detectron2 Mask R-CNN.

Every variant is trained with the same recipe (configs/Shapes-InstanceSegmentation/Base-Shapes-RCNN.yaml:
R-18-FPN from scratch, batch 4, the same schedule scaled to --iters), once per seed and dataset, each
run in its own process (so that peak memory is the run's own), then evaluated (bbox, segm and Boundary
AP). Inference is timed afterwards in one process per (dataset, seed), alternating between the variants
image by image so that machine load hits them alike. Prints, per dataset, mean ± std over the seeds
(sample std) of each figure, the ratio of the means to stock's, each AP's difference to stock paired by
seed, the APs at --eval-at fractions of training (to see whether they still move) and the acceptance
checks of issue 10.

Variants: stock (detectron2's MaskRCNNConvUpsampleHead), light (LightBoundaryMaskHead), bmask
(BoundaryROIHeads + BoundaryPreservingHead, Cheng et al. 2020). Datasets: shapes (seg_d2's generated
shapes) and real_buildings (SpaceNet aerial tiles, built by ../shared/data/make_real_buildings.py under
$DETECTRON2_DATASETS/real_buildings when missing).

    python benchmarks/bench_bmask.py --datasets shapes,real_buildings --seeds 0,1,2 --iters 600 \\
        --variants stock,light,bmask [--device cpu|cuda] [--threads N] [--out DIR] [--json FILE]
"""
import argparse
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(REPO, "configs", "Shapes-InstanceSegmentation")
VARIANTS = {
    "stock": os.path.join(SHAPES, "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"),
    "light": os.path.join(SHAPES, "mask_rcnn_light_boundary_R_18_FPN_scratch_bs4_600it.yaml"),
    "bmask": os.path.join(SHAPES, "bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"),
}
DATASETS = {  # name -> options on top of the variant's config
    "shapes": [],
    "real_buildings": ["DATASETS.TRAIN", "('seg_d2_real_buildings_train',)",
                       "DATASETS.TEST", "('seg_d2_real_buildings_val',)", "MODEL.ROI_HEADS.NUM_CLASSES", "1"],
}
REAL_BUILDINGS_SCRIPT = os.path.join(os.path.dirname(REPO), "shared", "data", "make_real_buildings.py")
TASKS = ("bbox", "segm", "boundary")


def real_buildings_root():
    return os.path.join(os.environ["DETECTRON2_DATASETS"], "real_buildings")


def prepare_real_buildings(script):
    root = real_buildings_root()
    if not all(os.path.isfile(os.path.join(root, f"{s}.json")) for s in ("train", "val")):
        print(f"== building the real buildings set: {script} {root}", flush=True)
        subprocess.run([sys.executable, script, root], check=True)


def register_real_buildings():
    from detectron2.data import DatasetCatalog

    from seg_d2.data.datasets import register_coco_dataset

    root = real_buildings_root()
    for split in ("train", "val"):
        name = f"seg_d2_real_buildings_{split}"
        if name not in DatasetCatalog:
            register_coco_dataset(name, os.path.join(root, f"{split}.json"), os.path.join(root, split))


def setup_cfg(variant, dataset, device, seed, opts=()):
    from detectron2.config import get_cfg

    from seg_d2 import add_seg_d2_config

    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(VARIANTS[variant])
    cfg.merge_from_list(["MODEL.DEVICE", device, "SEED", str(seed), "DATALOADER.NUM_WORKERS", "0",
                         "INPUT.MASK_FORMAT", "bitmask", *DATASETS[dataset], *opts])
    return cfg


def load_train_net():
    spec = importlib.util.spec_from_file_location("seg_d2_bench_train_net", os.path.join(REPO, "tools", "train_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summarize(results):
    return {t: {k: v for k, v in r.items() if not k.startswith("AP-")} for t, r in results.items() if t in TASKS}


def train_one(variant, dataset, seed, iters, eval_at, device, out_dir):
    """Train and evaluate one model (run in a child process). Returns a dict of figures."""
    import seg_d2  # noqa: F401
    from detectron2.engine import HookBase
    from detectron2.utils.env import seed_all_rng

    register_real_buildings()
    Trainer = load_train_net().Trainer  # tools/train_net.py's trainer: seg_d2's loaders and evaluators
    steps, curve = [], {}
    eval_iters = sorted({max(1, round(f * iters)) for f in eval_at if 0 < f < 1})

    class StepTimer(HookBase):
        def before_step(self):
            if device == "cuda":
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def after_step(self):
            if device == "cuda":
                torch.cuda.synchronize()
            steps.append(time.perf_counter() - self._t)
            if self.trainer.iter + 1 in eval_iters:  # intermediate evaluation, outside the timed step
                curve[self.trainer.iter + 1] = summarize(Trainer.test(self.trainer.cfg, self.trainer.model))

    cfg = setup_cfg(variant, dataset, device, seed, [
        "SOLVER.MAX_ITER", str(iters),  # LR steps and warm-up at the same fractions as the 600-iteration recipe
        "SOLVER.STEPS", f"({int(iters * 0.75)}, {int(iters * 0.92)})", "SOLVER.WARMUP_ITERS", str(max(1, iters // 6)),
        "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9), "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out_dir,
    ])
    cfg.freeze()
    seed_all_rng(seed)  # what default_setup does: model init and data order follow the seed
    trainer = Trainer(cfg)
    trainer.register_hooks([StepTimer()])
    trainer.resume_or_load(resume=False)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()  # ends with the evaluation of the final model
    train_peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    curve[iters] = summarize(trainer._last_eval_results)
    timed = steps[len(steps) // 10:]  # skip warm-up
    return {
        "train_s_per_iter": sum(timed) / len(timed),
        "train_peak_cuda_bytes": train_peak,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "results": curve[iters],
        "curve": {str(k): v for k, v in sorted(curve.items())},
        "weights": os.path.join(out_dir, "model_final.pth"),
    }


@torch.no_grad()
def time_inference(variants, dataset, seed, weights, device, rounds):
    """Seconds per image and detections per image of each variant, interleaved image by image; CUDA peak memory."""
    import seg_d2  # noqa: F401
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_test_loader
    from detectron2.modeling import build_model

    register_real_buildings()
    models = {}
    for name in variants:
        cfg = setup_cfg(name, dataset, device, seed)
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(weights[name])
        models[name] = model
    inputs = list(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0]))
    total = {n: 0.0 for n in models}
    dets = {n: 0 for n in models}
    peak = {n: 0 for n in models}
    for model in models.values():  # warm-up
        for x in inputs[:5]:
            model(x)
    for _ in range(rounds):
        for x in inputs:
            for name, model in models.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                out = model(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated())
                total[name] += time.perf_counter() - t
                dets[name] += len(out[0]["instances"])
    n = rounds * len(inputs)
    return {name: {"infer_s_per_img": total[name] / n, "dets_per_img": dets[name] / n,
                   "infer_peak_cuda_bytes": peak[name] if device == "cuda" else None} for name in models}


def child(args, *extra):
    cmd = [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--iters", str(args.iters),
           "--device", args.device, "--out", args.out, "--threads", str(args.threads),
           "--eval-at", args.eval_at, "--rounds", str(args.rounds), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(extra)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def load_json(path):
    with open(path) as f:
        return json.load(f)


def mean_std(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def ratio(a, b):
    return f"{a / b:.3f}" if b and not math.isnan(a) and not math.isnan(b) else "n/a"


def report(figures, dataset, variants, seeds, args):
    """Print one dataset's table: mean ± std over the seeds, ratios of the means to stock's."""
    runs = {v: [figures[(dataset, s, v)] for s in seeds] for v in variants}
    get = {
        "bbox AP": lambda f: f["results"].get("bbox", {}).get("AP", float("nan")),
        "segm AP": lambda f: f["results"].get("segm", {}).get("AP", float("nan")),
        "Boundary AP": lambda f: f["results"].get("boundary", {}).get("AP", float("nan")),
        "segm AP75": lambda f: f["results"].get("segm", {}).get("AP75", float("nan")),
        "Boundary AP75": lambda f: f["results"].get("boundary", {}).get("AP75", float("nan")),
        "train s/iter": lambda f: f["train_s_per_iter"],
        "inference s/img": lambda f: f["infer_s_per_img"],
        "detections/img": lambda f: f["dets_per_img"],
        "params (M)": lambda f: f["params"] / 1e6,
        "peak RSS, train+eval (MiB)": lambda f: f["peak_rss_bytes"] / 2 ** 20,
    }
    if args.device == "cuda":
        get["peak CUDA mem, train (MiB)"] = lambda f: f["train_peak_cuda_bytes"] / 2 ** 20
        get["peak CUDA mem, inference (MiB)"] = lambda f: f["infer_peak_cuda_bytes"] / 2 ** 20
    stats = {label: {v: mean_std([fn(f) for f in runs[v]]) for v in variants} for label, fn in get.items()}
    others = [v for v in variants if v != "stock"] if "stock" in variants else []

    print(f"\n### {dataset}: {len(seeds)} seed(s) {','.join(map(str, seeds))}, {args.iters} iterations each, "
          f"device {args.device}, torch threads {args.threads or torch.get_num_threads()}; mean ± std over seeds")
    head = ["figure"] + variants + [f"{v}/stock" for v in others]
    rows = []
    for label, by_variant in stats.items():
        digits = 4 if "s/" in label else 2
        row = [label] + [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in (by_variant[v] for v in variants)]
        row += [ratio(by_variant[v][0], by_variant["stock"][0]) for v in others]
        rows.append(row)
    for task, key in (("segm", "segm AP"), ("boundary", "Boundary AP"), ("bbox", "bbox AP")):
        for v in others:  # paired by seed: same data order for both
            diffs = [get[key](a) - get[key](b) for a, b in zip(runs[v], runs["stock"])]
            m, s = mean_std(diffs)
            rows.append([f"{key} {v} - stock, paired"] + [""] * len(variants) + [""] * len(others))
            rows[-1][1 + variants.index(v)] = f"{m:+.2f} ± {s:.2f}"
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(fmt(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(fmt(r))

    points = sorted({int(k) for f in figures.values() for k in f["curve"]})
    if len(points) > 1:
        print(f"\nAPs during training ({dataset}; mean ± std over seeds), to see whether they still move:")
        for v in variants:
            cells = []
            for p in points:
                seg = mean_std([f["curve"].get(str(p), {}).get("segm", {}).get("AP", float("nan")) for f in runs[v]])
                bnd = mean_std([f["curve"].get(str(p), {}).get("boundary", {}).get("AP", float("nan")) for f in runs[v]])
                cells.append(f"it {p}: segm {seg[0]:.1f} ± {seg[1]:.1f}, boundary {bnd[0]:.1f} ± {bnd[1]:.1f}")
            print(f"  {v:6} " + " | ".join(cells))

    if "stock" in variants and "bmask" in variants:
        seg, bnd, inf = stats["segm AP"], stats["Boundary AP"], stats["inference s/img"]
        margin = max(bnd["bmask"][1], bnd["stock"][1])
        print(f"\nIssue 10 checks ({dataset}): bmask mean segm AP >= stock's: "
              f"{'yes' if seg['bmask'][0] >= seg['stock'][0] else 'NO'} ({seg['bmask'][0]:.2f} vs {seg['stock'][0]:.2f}); "
              f"mean Boundary AP above stock's by more than one std (the larger of the two): "
              f"{'yes' if bnd['bmask'][0] - bnd['stock'][0] > margin else 'NO'} "
              f"({bnd['bmask'][0] - bnd['stock'][0]:+.2f} vs std {margin:.2f}); inference s/img <= 1.25x stock's: "
              f"{'yes' if inf['bmask'][0] <= 1.25 * inf['stock'][0] else 'NO'} ({ratio(inf['bmask'][0], inf['stock'][0])}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="shapes,real_buildings", help=f"comma-separated, from {list(DATASETS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds: one training run each")
    parser.add_argument("--variants", default="stock,light,bmask", help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--iters", type=int, default=600, help="training iterations of each run")
    parser.add_argument("--eval-at", default="0.85", help="extra evaluations, as fractions of --iters (the end "
                        "is always evaluated): after the first LR drop, to see whether the APs still move")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the val set when timing inference")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every process (0: torch's default)")
    parser.add_argument("--out", default=None, help="folder for checkpoints and logs (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write every run's figures to this json file")
    parser.add_argument("--reuse", action="store_true", help="keep the runs already done in --out (resume an "
                        "interrupted benchmark, or print its table again)")
    parser.add_argument("--real-buildings-script", default=REAL_BUILDINGS_SCRIPT)
    parser.add_argument("--_train", nargs=3, default=None, help=argparse.SUPPRESS)  # child: variant dataset seed
    parser.add_argument("--_infer", nargs=3, default=None, help=argparse.SUPPRESS)  # child: variants dataset seed
    args = parser.parse_args()
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO, "datasets"))
    args.out = args.out or tempfile.mkdtemp(prefix="bench_bmask_")
    if args.threads:
        torch.set_num_threads(args.threads)
    eval_at = [float(x) for x in args.eval_at.split(",") if x]

    if args._train:
        variant, dataset, seed = args._train
        run_dir = os.path.join(args.out, dataset, seed, variant)
        res = train_one(variant, dataset, int(seed), args.iters, eval_at, args.device, run_dir)
        with open(os.path.join(run_dir, "figures.json"), "w") as f:
            json.dump(res, f)
        return
    if args._infer:
        variants, dataset, seed = args._infer[0].split(","), args._infer[1], args._infer[2]
        weights = {v: os.path.join(args.out, dataset, seed, v, "model_final.pth") for v in variants}
        res = time_inference(variants, dataset, int(seed), weights, args.device, args.rounds)
        with open(os.path.join(args.out, dataset, seed, "inference.json"), "w") as f:
            json.dump(res, f)
        return

    datasets, variants = args.datasets.split(","), args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in datasets + variants:
        if name not in DATASETS and name not in VARIANTS:
            sys.exit(f"unknown dataset or variant {name!r}: datasets {list(DATASETS)}, variants {list(VARIANTS)}")
    if "real_buildings" in datasets:
        prepare_real_buildings(args.real_buildings_script)
    figures = {}
    start = time.time()
    for dataset in datasets:
        for seed in seeds:
            trained = False
            for variant in variants:
                path = os.path.join(args.out, dataset, str(seed), variant, "figures.json")
                if not (args.reuse and os.path.isfile(path)):
                    print(f"== [{time.time() - start:6.0f} s] training {variant} on {dataset}, seed {seed}, "
                          f"{args.iters} iterations, {args.device} ...", flush=True)
                    child(args, "--_train", variant, dataset, str(seed))
                    trained = True
                figures[(dataset, seed, variant)] = load_json(path)
            path = os.path.join(args.out, dataset, str(seed), "inference.json")
            timed = load_json(path) if args.reuse and not trained and os.path.isfile(path) else {}
            if set(timed) != set(variants):
                print(f"== [{time.time() - start:6.0f} s] timing inference on {dataset}, seed {seed} (interleaved) ...",
                      flush=True)
                child(args, "--_infer", ",".join(variants), dataset, str(seed))
                timed = load_json(path)
            for variant, r in timed.items():
                figures[(dataset, seed, variant)].update(r)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"/".join(map(str, k)): v for k, v in figures.items()}, f, indent=1)
    print(f"\nBMask R-CNN (bmask: BoundaryROIHeads + BoundaryPreservingHead, Cheng et al. 2020) and seg_d2's light "
          f"boundary head (light) vs stock Mask R-CNN (stock); R-18-FPN from scratch, the recipe of "
          f"Base-Shapes-RCNN.yaml for all. Total time {time.time() - start:.0f} s.")
    for dataset in datasets:
        report(figures, dataset, variants, seeds, args)


if __name__ == "__main__":
    main()
