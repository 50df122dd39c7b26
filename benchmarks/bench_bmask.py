#!/usr/bin/env python
"""Benchmark: BMask R-CNN as published and seg_d2's light boundary head vs stock detectron2 Mask R-CNN.

Every variant is trained with the same data, backbone and schedule (configs/Shapes-InstanceSegmentation/
Base-Shapes-RCNN.yaml: R-18-FPN from scratch, batch 4, the schedule scaled to --iters), once per seed and
dataset, each run in its own process, then evaluated (bbox, segm and Boundary AP) at --eval-at fractions of
training and at the end (learning curves). Inference is timed afterwards in one process per (dataset, seed),
alternating between the variants image by image so that machine load hits them alike. Prints, per dataset,
mean ± std over the seeds (sample std) of each figure, the ratio of the means to stock's, each AP's
difference to stock paired by seed, the learning curves, per-size AP and issue 21's acceptance checks.

It runs --jobs processes at a time with --threads torch threads each (2 x 1 on a 2-core machine); the
variants of one (dataset, seed) are queued next to each other, so a compared pair trains side by side under
the same load. Every finished run is appended to OUT/results.jsonl and skipped when the benchmark is
started again (resume after an interruption, or print the tables again with --report-only). Start it in
the background:

    nohup python benchmarks/bench_bmask.py --out bench_out/bmask --jobs 2 --threads 1 > bench_bmask.log 2>&1 &

Variants: stock (detectron2's MaskRCNNConvUpsampleHead), light (LightBoundaryMaskHead), bmask
(BoundaryROIHeads + BoundaryPreservingHead, Cheng et al. 2020, with the authors' TRAIN_ON_PRED_BOXES), and
levers on bmask or stock (see VARIANTS). Datasets: shapes (seg_d2's generated shapes) and real_buildings
(SpaceNet aerial tiles, built by ../shared/data/make_real_buildings.py under $DETECTRON2_DATASETS/real_buildings
when missing).
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
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(REPO, "configs", "Shapes-InstanceSegmentation")
_STOCK = os.path.join(SHAPES, "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml")
_BMASK = os.path.join(SHAPES, "bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml")
VARIANTS = {  # name -> (config, options on top of it)
    "stock": (_STOCK, []),
    "light": (os.path.join(SHAPES, "mask_rcnn_light_boundary_R_18_FPN_scratch_bs4_600it.yaml"), []),
    "bmask": (_BMASK, []),
    # levers, each one change from a variant above
    "stock_pred_boxes": (_STOCK, ["MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", "True"]),  # the authors' box recipe
    "bmask_proposals": (_BMASK, ["MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", "False"]),  # stock's box recipe
    "bmask_boundary_w0.5": (_BMASK, ["MODEL.BOUNDARY_MASK_HEAD.BOUNDARY_BCE_WEIGHT", "0.5",
                                     "MODEL.BOUNDARY_MASK_HEAD.BOUNDARY_DICE_WEIGHT", "0.5"]),
    "bmask_boundary_w2": (_BMASK, ["MODEL.BOUNDARY_MASK_HEAD.BOUNDARY_BCE_WEIGHT", "2.0",
                                   "MODEL.BOUNDARY_MASK_HEAD.BOUNDARY_DICE_WEIGHT", "2.0"]),
}
DATASETS = {  # name -> options on top of the variant's config
    "shapes": [],
    "real_buildings": ["DATASETS.TRAIN", "('seg_d2_real_buildings_train',)",
                       "DATASETS.TEST", "('seg_d2_real_buildings_val',)", "MODEL.ROI_HEADS.NUM_CLASSES", "1"],
}
# Datasets trained with augmentation for aerial views (every variant alike): both flips, quarter turns,
# brightness and contrast. The real buildings are 31 objects on 15 training tiles: without it, models
# from scratch learn the training tiles by heart.
AERIAL_AUGMENTATION = {"real_buildings_aug"}
DATASETS["real_buildings_aug"] = DATASETS["real_buildings"]
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
    config, variant_opts = VARIANTS[variant]
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", device, "SEED", str(seed), "DATALOADER.NUM_WORKERS", "0",
                         "INPUT.MASK_FORMAT", "bitmask", *DATASETS[dataset], *variant_opts, *opts])
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
    if dataset in AERIAL_AUGMENTATION:
        Trainer = _aerial_trainer(Trainer)
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
    wall = time.perf_counter()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()  # ends with the evaluation of the final model
    train_peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    curve[iters] = summarize(trainer._last_eval_results)
    timed = steps[len(steps) // 10:]  # skip warm-up
    # Loss balance: each term's mean over the last fifth of training (as weighted in the total loss).
    last = max(1, iters // 5)
    losses = {k: statistics.fmean(v for v, _ in h.values()[-last:])
              for k, h in trainer.storage.histories().items() if k.startswith("loss_")}
    return {
        "train_s_per_iter": sum(timed) / len(timed),
        "train_peak_cuda_bytes": train_peak,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "losses_last_fifth": losses,
        "wall_s": time.perf_counter() - wall,
        "results": curve[iters],
        "curve": {str(k): v for k, v in sorted(curve.items())},
        "weights": os.path.join(out_dir, "model_final.pth"),
    }


def _aerial_trainer(trainer_cls):
    """``trainer_cls`` whose training images are also flipped both ways, turned by quarter turns and jittered
    in brightness and contrast (see AERIAL_AUGMENTATION)."""
    from detectron2.data import build_detection_train_loader
    from detectron2.data import transforms as T

    from seg_d2.data.instance_mapper import InstanceDatasetMapper

    class AerialTrainer(trainer_cls):
        @classmethod
        def build_train_loader(cls, cfg):
            inp = cfg.INPUT
            args = InstanceDatasetMapper.from_config(cfg, True)
            args["augmentations"] = [
                T.ResizeShortestEdge(inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING),
                T.RandomFlip(horizontal=True), T.RandomFlip(horizontal=False, vertical=True),
                T.RandomRotation([0, 90, 180, 270], expand=True, sample_style="choice"),
                T.RandomBrightness(0.8, 1.2), T.RandomContrast(0.8, 1.2),
            ]
            return build_detection_train_loader(cfg, mapper=InstanceDatasetMapper(**args))

    return AerialTrainer


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


def child_cmd(args, *extra):
    return [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--iters", str(args.iters),
            "--device", args.device, "--out", args.out, "--threads", str(args.threads),
            "--eval-at", args.eval_at, "--rounds", str(args.rounds), *extra]


def run_pool(jobs, n_parallel, start):
    """Run the (label, cmd, log, on_done) jobs, n_parallel at a time, in their order; on_done(returncode).
    A failed job is reported with the end of its log; the others go on."""
    queue, running, failed = jobs, [], []
    while queue or running:
        while queue and len(running) < n_parallel:
            label, cmd, log, on_done = queue.pop(0)
            os.makedirs(os.path.dirname(log), exist_ok=True)
            print(f"== [{time.time() - start:6.0f} s] start {label}", flush=True)
            f = open(log, "w")
            running.append((label, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT), f, log, on_done))
        time.sleep(2)
        for job in list(running):
            label, proc, f, log, on_done = job
            if proc.poll() is None:
                continue
            running.remove(job)
            f.close()
            print(f"== [{time.time() - start:6.0f} s] done {label}: exit {proc.returncode}", flush=True)
            if proc.returncode != 0:
                with open(log) as lf:
                    print(lf.read()[-3000:], flush=True)
                failed.append(label)
            on_done(proc.returncode)
    return failed


def read_results(path):
    """The runs recorded in the jsonl: {(kind, dataset, seed, variant(s)): record}; the last record wins."""
    done = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    done[(r["kind"], r["dataset"], r["seed"], r["variant"])] = r
    return done


def append_result(path, record):
    with open(path, "a") as f:  # one line per run, written at once: an interrupted run leaves nothing
        f.write(json.dumps(record) + "\n")


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
        **{f"{name} {size}": (lambda t, k: lambda f: f["results"].get(t, {}).get(k, float("nan")))(task, size)
           for name, task in (("segm", "segm"), ("Boundary", "boundary")) for size in ("APs", "APm", "APl")},
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

    losses = sorted({k for f in figures.values() for k in f.get("losses_last_fifth", {})})
    if losses:
        print(f"\nLoss balance ({dataset}; each weighted term's mean over the last fifth of training, mean over seeds):")
        for v in variants:
            cells = [f"{k} {mean_std([f['losses_last_fifth'].get(k, float('nan')) for f in runs[v]])[0]:.3f}"
                     for k in losses if any(k in f["losses_last_fifth"] for f in runs[v])]
            print(f"  {v:6} " + ", ".join(cells))

    for v in others:  # issue 21's acceptance, for BMask and for each lever
        seg, bnd, inf = stats["segm AP"], stats["Boundary AP"], stats["inference s/img"]
        diffs = [get["Boundary AP"](a) - get["Boundary AP"](b) for a, b in zip(runs[v], runs["stock"])]
        d_mean, d_sd = mean_std(diffs)
        print(f"\nAcceptance ({dataset}, {v} vs stock): mean segm AP >= stock's: "
              f"{'yes' if seg[v][0] >= seg['stock'][0] else 'NO'} ({seg[v][0]:.2f} vs {seg['stock'][0]:.2f}); "
              f"Boundary AP above stock's by more than the sd of the paired difference: "
              f"{'yes' if d_mean > d_sd else 'NO'} ({d_mean:+.2f} vs sd {d_sd:.2f}); inference s/img <= 1.25x "
              f"stock's: {'yes' if inf[v][0] <= 1.25 * inf['stock'][0] else 'NO'} ({ratio(inf[v][0], inf['stock'][0])}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="shapes,real_buildings", help=f"comma-separated, from {list(DATASETS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds: one training run each")
    parser.add_argument("--variants", default="stock,light,bmask", help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--iters", type=int, default=600, help="training iterations of each run")
    parser.add_argument("--eval-at", default="0.5,0.75", help="extra evaluations, as fractions of --iters (the end "
                        "is always evaluated): after the first LR drop, to see whether the APs still move")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the val set when timing inference")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every process (0: torch's default)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, each its own process (one per core)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench_out", "bmask"),
                        help="folder for checkpoints, logs and results.jsonl (finished runs there are skipped)")
    parser.add_argument("--json", default=None, help="also write every run's figures to this json file")
    parser.add_argument("--report-only", action="store_true", help="train nothing: print the tables of the runs in --out")
    parser.add_argument("--real-buildings-script", default=REAL_BUILDINGS_SCRIPT)
    parser.add_argument("--_train", nargs=3, default=None, help=argparse.SUPPRESS)  # child: variant dataset seed
    parser.add_argument("--_infer", nargs=3, default=None, help=argparse.SUPPRESS)  # child: variants dataset seed
    args = parser.parse_args()
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO, "datasets"))
    if args.threads:
        torch.set_num_threads(args.threads)
    eval_at = [float(x) for x in args.eval_at.split(",") if x]

    if args._train:
        variant, dataset, seed = args._train
        run_dir = os.path.join(args.out, dataset, seed, variant)
        res = train_one(variant, dataset, int(seed), args.iters, eval_at, args.device, run_dir)
        append_result(os.path.join(args.out, "results.jsonl"), {
            "kind": "train", "dataset": dataset, "seed": int(seed), "variant": variant, "iters": args.iters,
            "threads": args.threads, **res})
        return
    if args._infer:
        variants, dataset, seed = args._infer[0].split(","), args._infer[1], args._infer[2]
        weights = {v: os.path.join(args.out, dataset, seed, v, "model_final.pth") for v in variants}
        res = time_inference(variants, dataset, int(seed), weights, args.device, args.rounds)
        append_result(os.path.join(args.out, "results.jsonl"), {
            "kind": "infer", "dataset": dataset, "seed": int(seed), "variant": ",".join(variants), "timed": res})
        return

    datasets, variants = args.datasets.split(","), args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in datasets + variants:
        if name not in DATASETS and name not in VARIANTS:
            sys.exit(f"unknown dataset or variant {name!r}: datasets {list(DATASETS)}, variants {list(VARIANTS)}")
    if any(d.startswith("real_buildings") for d in datasets):
        prepare_real_buildings(args.real_buildings_script)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.jsonl")
    start = time.time()
    done = read_results(results_path)
    train_key = lambda d, s, v: ("train", d, s, v)  # noqa: E731
    infer_key = lambda d, s: ("infer", d, s, ",".join(variants))  # noqa: E731
    if not args.report_only:
        # Skip the runs the jsonl already holds (of the same length).
        # Variants go in pairs (--variants order: stock with the next), one seed's pair after the other.
        groups = [variants[i:i + args.jobs] for i in range(0, len(variants), args.jobs)]
        todo = [(d, s, v) for d in datasets for g in groups for s in seeds for v in g
                if done.get(train_key(d, s, v), {}).get("iters") != args.iters]
        trained_left = {(d, s): sum(1 for t in todo if t[:2] == (d, s)) for d in datasets for s in seeds}
        jobs = []

        def infer_job(d, s):
            return (f"inference timing {d} seed {s}", child_cmd(args, "--_infer", ",".join(variants), d, str(s)),
                    os.path.join(args.out, d, str(s), "infer.log"), lambda rc: None)

        def on_trained(d, s):
            def done_cb(rc):
                trained_left[(d, s)] -= 1
                if rc == 0 and trained_left[(d, s)] == 0:  # every variant of this seed trained: time them
                    jobs_queue_front.append(infer_job(d, s))
            return done_cb

        jobs_queue_front = []
        for d, s, v in todo:
            jobs.append((f"train {v} on {d}, seed {s}, {args.iters} iterations",
                         child_cmd(args, "--_train", v, d, str(s)),
                         os.path.join(args.out, d, str(s), v, "train.log"), on_trained(d, s)))
        for d in datasets:  # trained earlier but never timed with this set of variants
            for s in seeds:
                if trained_left[(d, s)] == 0 and infer_key(d, s) not in done:
                    jobs.append(infer_job(d, s))
        # the inference jobs of finished seeds go before the remaining training runs
        pool = _FrontQueue(jobs, jobs_queue_front)
        failed = run_pool(pool, args.jobs, start)
        print(f"== benchmark wall time this start: {time.time() - start:.0f} s; failed: {failed or 'none'}", flush=True)
        done = read_results(results_path)

    figures, missing = {}, []
    for d in datasets:
        for s in seeds:
            timed = done.get(infer_key(d, s), {}).get("timed", {})
            for v in variants:
                rec = done.get(train_key(d, s, v))
                if rec is None or rec.get("iters") != args.iters:
                    missing.append(f"{d}/{s}/{v}")
                    continue
                figures[(d, s, v)] = {**rec, **timed.get(v, {"infer_s_per_img": float("nan"),
                                                              "dets_per_img": float("nan"),
                                                              "infer_peak_cuda_bytes": None})}
    if missing:
        print(f"runs not (yet) in {results_path}: {', '.join(missing)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"/".join(map(str, k)): v for k, v in figures.items()}, f, indent=1)
    walls = [r["wall_s"] for r in done.values() if "wall_s" in r]
    print(f"\nBMask R-CNN (bmask: BoundaryROIHeads + BoundaryPreservingHead, Cheng et al. 2020) and seg_d2's light "
          f"boundary head (light) vs stock Mask R-CNN (stock); R-18-FPN from scratch, the recipe of "
          f"Base-Shapes-RCNN.yaml for all; {args.jobs} job(s) x {args.threads or torch.get_num_threads()} "
          f"thread(s). Runs' own wall time, summed: {sum(walls):.0f} s.")
    for dataset in datasets:
        if all((dataset, s, v) in figures for s in seeds for v in variants):
            report(figures, dataset, variants, seeds, args)


class _FrontQueue(list):
    """The job list for run_pool, with jobs that callbacks add (to ``front``) taken first."""

    def __init__(self, jobs, front):
        super().__init__(jobs)
        self.front = front

    def pop(self, i=-1):
        return self.front.pop(0) if self.front else super().pop(i)

    def __bool__(self):
        return bool(self.front) or len(self) > 0


if __name__ == "__main__":
    main()
