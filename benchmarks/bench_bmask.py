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
import os

import paired_runs  # benchmarks/paired_runs.py: what bench_panoptic.py shares
from paired_runs import (
    load_train_net, mean_std, print_comparison, ratio, register_real_buildings, time_alternately, train_and_record,
)

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
AERIAL_AUGMENTATION = {"real_buildings_aug", "real_buildings_ft"}
DATASETS["real_buildings_aug"] = DATASETS["real_buildings"]
# real_buildings_ft: real_buildings_aug, each run starting from the weights its variant reached on shapes with the
# same seed in this OUT (a backbone and detector pretrained on generated data, since no ImageNet weights can be
# downloaded here; the class-specific predictors, 4 classes there, are left random).
DATASETS["real_buildings_ft"] = DATASETS["real_buildings"]
PRETRAINED_ON = {"real_buildings_ft": "shapes"}
TASKS = ("bbox", "segm", "boundary")


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


def summarize(results):
    return {t: {k: v for k, v in r.items() if not k.startswith("AP-")} for t, r in results.items() if t in TASKS}


def train_one(variant, dataset, seed, iters, eval_at, device, out_dir):
    """Train and evaluate one model (run in a child process). Returns a dict of figures."""
    import seg_d2  # noqa: F401

    register_real_buildings()
    Trainer = load_train_net().Trainer  # tools/train_net.py's trainer: seg_d2's loaders and evaluators
    if dataset in AERIAL_AUGMENTATION:
        Trainer = _aerial_trainer(Trainer)
    weights = []
    if dataset in PRETRAINED_ON:
        weights = ["MODEL.WEIGHTS", _pretrained_weights(variant, PRETRAINED_ON[dataset], seed, iters, out_dir)]
    cfg = setup_cfg(variant, dataset, device, seed, [*weights,
        "SOLVER.MAX_ITER", str(iters),  # LR steps and warm-up at the same fractions as the 600-iteration recipe
        "SOLVER.STEPS", f"({int(iters * 0.75)}, {int(iters * 0.92)})", "SOLVER.WARMUP_ITERS", str(max(1, iters // 6)),
        "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9), "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out_dir,
    ])
    cfg.freeze()
    return train_and_record(Trainer, cfg, iters, eval_at, device, summarize)


def _pretrained_weights(variant, dataset, seed, iters, out_dir):
    """The final weights of ``variant`` trained on ``dataset`` with ``seed`` for ``iters`` iterations, as recorded
    in the results of the benchmark that ``out_dir`` (OUT/dataset/seed/variant) belongs to."""
    rec = paired_runs.required_run(out_dir, dataset, seed, variant, iters, f"{variant} pretrained on {dataset}")
    path = rec["weights"]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the weights of {variant} on {dataset}, seed {seed}, recorded in "
                                f"{paired_runs.bench_out_of(out_dir)}/results.jsonl, are missing: {path}")
    return path


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
    timed = time_alternately(models, inputs, device, rounds, lambda out: len(out["instances"]))
    for figures in timed.values():
        figures["dets_per_img"] = figures.pop("count_per_img")
    return timed


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
    stats = print_comparison(runs, get, ("segm AP", "Boundary AP", "bbox AP"), dataset, variants, seeds, args)
    others = [v for v in variants if v != "stock"] if "stock" in variants else []

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
    parser = paired_runs.argument_parser(__doc__.split("\n\n")[0], DATASETS, VARIANTS, "shapes,real_buildings",
                                         "stock,light,bmask", os.path.join(REPO, "bench_out", "bmask"))
    paired_runs.main(__file__, parser, DATASETS, VARIANTS, train_one, time_inference, {
        "infer_s_per_img": float("nan"), "dets_per_img": float("nan"), "infer_peak_cuda_bytes": None},
        "BMask R-CNN (bmask: BoundaryROIHeads + BoundaryPreservingHead, Cheng et al. 2020) and seg_d2's light "
        "boundary head (light) vs stock Mask R-CNN (stock); R-18-FPN from scratch, the recipe of "
        "Base-Shapes-RCNN.yaml for all", report)


if __name__ == "__main__":
    main()
