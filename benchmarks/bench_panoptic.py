#!/usr/bin/env python
"""Benchmark: PanopticFPN with seg_d2's U-Net stuff head (with Mask R-CNN or BMask R-CNN things) vs detectron2's
stock PanopticFPN (SemSegFPNHead + Mask R-CNN), same recipe, over seeds.

Every variant trains with the same data, R-18-FPN backbone from scratch and schedule
(configs/Shapes-PanopticSegmentation/Base-Shapes-PanopticFPN.yaml, the schedule scaled to --iters), once per seed
and dataset, each run its own single-thread process, two at a time, the variants of a seed side by side; it is
evaluated (PQ, SQ, RQ for all, things and stuff; mIoU of the semantic head; segm AP of the things) at --eval-at
fractions of training and at the end. Inference is timed afterwards, alternating between the variants image by
image in one process. Each finished run is appended to OUT/results.jsonl and skipped when started again
(--report-only prints the tables). Start it in the background:

    nohup python benchmarks/bench_panoptic.py --out bench_out/panoptic --jobs 2 --threads 1 > bench_panoptic.log 2>&1 &

Datasets: shapes (seg_d2_shapes_panoptic: things = 4 shapes, stuff = sky, ground) and real_buildings (the SpaceNet
tiles of ../shared/data/make_real_buildings.py: things = building, stuff = background, converted by seg_d2's
make_coco_panoptic), trained with flips both ways and brightness/contrast jitter (no rotation: its padding would
label pixels).
"""
import argparse
import json
import os
import sys
import time

import torch

from paired_runs import (
    REAL_BUILDINGS_SCRIPT, append_result, collect_figures, load_train_net, mean_std, prepare_real_buildings,
    print_table, ratio, read_results, register_real_buildings_panoptic, run_paired, time_alternately,
    train_and_record,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PANOPTIC = os.path.join(REPO, "configs", "Shapes-PanopticSegmentation")
VARIANTS = {  # name -> (config, options on top of it)
    "stock": (os.path.join(PANOPTIC, "panoptic_fpn_R_18_FPN_scratch_bs4_600it.yaml"), []),
    "unet": (os.path.join(PANOPTIC, "panoptic_unet_R_18_FPN_scratch_bs4_600it.yaml"), []),
    "unet_bmask": (os.path.join(PANOPTIC, "panoptic_unet_bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"), []),
    "fcn8s": (os.path.join(PANOPTIC, "panoptic_fcn8s_R_18_FPN_scratch_bs4_600it.yaml"), []),
}
DATASETS = {  # name -> options on top of the variant's config
    "shapes": [],
    "real_buildings": ["DATASETS.TRAIN", "('seg_d2_real_buildings_panoptic_train',)",
                       "DATASETS.TEST", "('seg_d2_real_buildings_panoptic_val',)",
                       "MODEL.ROI_HEADS.NUM_CLASSES", "1", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2",
                       "INPUT.MIN_SIZE_TRAIN", "(150,)", "INPUT.MIN_SIZE_TEST", "150"],
}
AUGMENTED = {"real_buildings"}  # 31 buildings on 15 tiles: without augmentation a model learns the tiles by heart
FIGURES = [(f"{k}{s}", "panoptic_seg", f"{k}{s}") for s in ("", "_th", "_st") for k in ("PQ", "SQ", "RQ")] + [
    ("mIoU (semantic head)", "sem_seg", "mIoU"), ("segm AP", "segm", "AP"), ("bbox AP", "bbox", "AP")]


def summarize(results):
    return {task: {k: v for k, v in r.items() if "-" not in k} for task, r in results.items()
            if task in ("panoptic_seg", "sem_seg", "segm", "bbox")}


def setup_cfg(variant, dataset, device, seed, opts=()):
    from seg_d2 import get_cfg

    cfg = get_cfg()
    config, variant_opts = VARIANTS[variant]
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", device, "SEED", str(seed), "DATALOADER.NUM_WORKERS", "0",
                         "TEST.VIS_NUM_IMAGES", "0", *DATASETS[dataset], *variant_opts, *opts])
    return cfg


def _augmented_trainer(trainer_cls):
    from detectron2.data import build_detection_train_loader
    from detectron2.data import transforms as T

    from seg_d2.data.instance_mapper import InstanceDatasetMapper

    class AugmentedTrainer(trainer_cls):
        @classmethod
        def build_train_loader(cls, cfg):
            inp = cfg.INPUT
            args = InstanceDatasetMapper.from_config(cfg, True)
            args["augmentations"] = [
                T.ResizeShortestEdge(inp.MIN_SIZE_TRAIN, inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING),
                T.RandomFlip(horizontal=True), T.RandomFlip(horizontal=False, vertical=True),
                T.RandomBrightness(0.8, 1.2), T.RandomContrast(0.8, 1.2),
            ]
            return build_detection_train_loader(cfg, mapper=InstanceDatasetMapper(**args))

    return AugmentedTrainer


def train_one(variant, dataset, seed, iters, eval_at, device, out_dir):
    import seg_d2  # noqa: F401

    register_real_buildings_panoptic()
    Trainer = load_train_net().Trainer
    if dataset in AUGMENTED:
        Trainer = _augmented_trainer(Trainer)
    cfg = setup_cfg(variant, dataset, device, seed, [
        "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.75)}, {int(iters * 0.92)})",
        "SOLVER.WARMUP_ITERS", str(max(1, iters // 6)), "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9),
        "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out_dir])
    cfg.freeze()
    return train_and_record(Trainer, cfg, iters, eval_at, device, summarize)


def time_inference(variants, dataset, seed, weights, device, rounds):
    import seg_d2  # noqa: F401
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_test_loader
    from detectron2.modeling import build_model

    register_real_buildings_panoptic()
    models = {}
    for name in variants:
        cfg = setup_cfg(name, dataset, device, seed)
        models[name] = build_model(cfg).eval()
        DetectionCheckpointer(models[name]).load(weights[name])
    inputs = list(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0]))
    return time_alternately(models, inputs, device, rounds, lambda out: len(out["panoptic_seg"][1]))


def report(figures, dataset, variants, seeds, args):
    runs = {v: [figures[(dataset, s, v)] for s in seeds] for v in variants}
    get = {label: (lambda t, k: lambda f: f["results"].get(t, {}).get(k, float("nan")))(task, key)
           for label, task, key in FIGURES}
    get.update({"train s/iter": lambda f: f["train_s_per_iter"], "inference s/img": lambda f: f["infer_s_per_img"],
                "segments/img": lambda f: f["count_per_img"], "params (M)": lambda f: f["params"] / 1e6})
    stats = {label: {v: mean_std([fn(f) for f in runs[v]]) for v in variants} for label, fn in get.items()}
    others = [v for v in variants if v != "stock"] if "stock" in variants else []
    print(f"\n### {dataset}: {len(seeds)} seed(s) {','.join(map(str, seeds))}, {args.iters} iterations each, device "
          f"{args.device}, torch threads {args.threads or torch.get_num_threads()}; mean ± std over seeds")
    head = ["figure"] + variants + [f"{v}/stock" for v in others]
    rows = []
    for label, by_variant in stats.items():
        digits = 4 if "s/" in label else 2
        rows.append([label] + [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in (by_variant[v] for v in variants)]
                    + [ratio(by_variant[v][0], by_variant["stock"][0]) for v in others])
    for key in ("PQ", "PQ_st", "PQ_th"):
        for v in others:  # paired by seed: same data order
            m, s = mean_std([get[key](a) - get[key](b) for a, b in zip(runs[v], runs["stock"])])
            rows.append([f"{key} {v} - stock, paired"] + [""] * (len(variants) + len(others)))
            rows[-1][1 + variants.index(v)] = f"{m:+.2f} ± {s:.2f}"
    print_table(head, rows)
    points = sorted({int(k) for f in figures.values() for k in f["curve"]})
    if len(points) > 1:
        print(f"\nPQ_st / PQ_th during training ({dataset}; mean over seeds), to see whether they still move:")
        for v in variants:
            cells = [f"it {p}: " + ", ".join(
                f"{k} {mean_std([f['curve'].get(str(p), {}).get('panoptic_seg', {}).get(k, float('nan')) for f in runs[v]])[0]:.1f}"
                for k in ("PQ_st", "PQ_th")) for p in points]
            print(f"  {v:10} " + " | ".join(cells))
    for v in [o for o in others if o.startswith("unet")]:  # issue 26: the U-Net stuff head's PQ_st >= stock's
        pq = stats["PQ_st"]
        print(f"\nAcceptance ({dataset}, {v} vs stock): mean PQ_st >= stock's: "
              f"{'yes' if pq[v][0] >= pq['stock'][0] else 'NO'} ({pq[v][0]:.2f} vs {pq['stock'][0]:.2f})")


def child_cmd(args, *extra):
    return [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--iters", str(args.iters),
            "--device", args.device, "--out", args.out, "--threads", str(args.threads),
            "--eval-at", args.eval_at, "--rounds", str(args.rounds), *extra]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="shapes,real_buildings", help=f"comma-separated, from {list(DATASETS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds: one training run each")
    parser.add_argument("--variants", default="stock,unet,unet_bmask", help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--iters", type=int, default=600, help="training iterations of each run")
    parser.add_argument("--eval-at", default="0.5,0.75", help="extra evaluations, as fractions of --iters")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the val set when timing inference")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every process (0: torch's default)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, each its own process (one per core)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench_out", "panoptic"),
                        help="folder for checkpoints, logs and results.jsonl (finished runs there are skipped)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: print the tables of the runs in --out")
    parser.add_argument("--real-buildings-script", default=REAL_BUILDINGS_SCRIPT)
    parser.add_argument("--_train", nargs=3, default=None, help=argparse.SUPPRESS)  # child: variant dataset seed
    parser.add_argument("--_infer", nargs=3, default=None, help=argparse.SUPPRESS)  # child: variants dataset seed
    args = parser.parse_args()
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO, "datasets"))
    if args.threads:
        torch.set_num_threads(args.threads)
    eval_at = [float(x) for x in args.eval_at.split(",") if x]
    results_path = os.path.join(args.out, "results.jsonl")
    if args._train:
        variant, dataset, seed = args._train
        res = train_one(variant, dataset, int(seed), args.iters, eval_at, args.device,
                        os.path.join(args.out, dataset, seed, variant))
        append_result(results_path, {"kind": "train", "dataset": dataset, "seed": int(seed), "variant": variant,
                                     "iters": args.iters, "threads": args.threads, **res})
        return
    if args._infer:
        variants, dataset, seed = args._infer[0].split(","), args._infer[1], args._infer[2]
        weights = {v: os.path.join(args.out, dataset, seed, v, "model_final.pth") for v in variants}
        append_result(results_path, {"kind": "infer", "dataset": dataset, "seed": int(seed), "variant": args._infer[0],
                                     "timed": time_inference(variants, dataset, int(seed), weights, args.device,
                                                             args.rounds)})
        return

    datasets, variants = args.datasets.split(","), args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in datasets + variants:
        if name not in DATASETS and name not in VARIANTS:
            sys.exit(f"unknown dataset or variant {name!r}: datasets {list(DATASETS)}, variants {list(VARIANTS)}")
    if "real_buildings" in datasets:
        prepare_real_buildings(args.real_buildings_script)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    if not args.report_only:
        run_paired(args, datasets, variants, seeds, lambda *extra: child_cmd(args, *extra), results_path, start)
    done = read_results(results_path)
    figures, missing = collect_figures(done, datasets, seeds, variants, args.iters, {
        "infer_s_per_img": float("nan"), "count_per_img": float("nan"), "infer_peak_cuda_bytes": None})
    if missing:
        print(f"runs not (yet) in {results_path}: {', '.join(missing)}")
    walls = [r["wall_s"] for r in done.values() if "wall_s" in r]
    print(f"\nPanopticFPN: detectron2's stock (SemSegFPNHead + Mask R-CNN) vs seg_d2's U-Net stuff head (unet: + Mask "
          f"R-CNN; unet_bmask: + BMask R-CNN); R-18-FPN from scratch, Base-Shapes-PanopticFPN.yaml's recipe for all; "
          f"{args.jobs} job(s) x {args.threads or torch.get_num_threads()} thread(s). Runs' own wall time, summed: "
          f"{sum(walls):.0f} s.")
    for dataset in datasets:
        if all((dataset, s, v) in figures for s in seeds for v in variants):
            report(figures, dataset, variants, seeds, args)
    with open(os.path.join(args.out, "figures.json"), "w") as f:
        json.dump({"/".join(map(str, k)): v for k, v in figures.items()}, f, indent=1)


if __name__ == "__main__":
    main()
