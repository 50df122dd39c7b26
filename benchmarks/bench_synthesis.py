#!/usr/bin/env python
"""Benchmark: do generated image/label pairs help a U-Net when labelled images are few? Real only vs real + synthetic
vs synthetic only, evaluated on the real validation images (mIoU, mDice, mBoundaryIoU), over seeds.

For each dataset (the real aerial buildings of ../shared/data/make_real_buildings.py, the shapes scenes), each
training-set size (4 or 8 labelled images drawn by the seed, or all) and each seed:
- real: seg_d2's U-Net (the quick-start classic U-Net recipe, configs/Shapes-SemanticSegmentation/
  unet_classic_c16_d3_scratch_adam_bs4_160it.yaml, for --iters) on the labelled images alone;
- real+synthetic: the same, on those images plus --synthetic-num generated pairs, drawn --mix (real:synthetic, by
  SEG_D2.DATASETS.TRAIN_WEIGHTS, so that synthetic data cannot swamp the real), the same iterations;
- synthetic: on the generated pairs alone (train on synthetic, test on real: a measure of the generator itself).
The generated pairs come from a Pix2Pix (configs/OwnData-ImageSynthesis/, --gen-iters) trained on the same
labelled images only, painting new label maps drawn from them (--masks: warp+paste, warp, or copy: the training
maps unchanged; vae: sampled from a LabelMapVAE trained on the same labelled maps, --gen-iters); it is trained once
per (dataset, seed), by the first run that needs it, under a file lock.

Each finished run is appended to OUT/results.jsonl and skipped when started again (--report-only prints the tables;
use one OUT per --masks / --mix / --synthetic-num setting: the runs are keyed by dataset, seed, variant and --iters);
runs are single-thread processes, two at a time (real and real+synthetic of a seed side by side):

    nohup python benchmarks/bench_synthesis.py --out bench_out/synthesis --jobs 2 --threads 1 > bench_synthesis.log 2>&1 &
"""
import json
import os
import re

import numpy as np

import paired_runs  # benchmarks/paired_runs.py
from paired_runs import (load_train_net, mean_std, print_comparison, read_results, real_buildings_root,
                         train_and_record)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET = os.path.join(REPO, "configs", "Shapes-SemanticSegmentation", "unet_classic_c16_d3_scratch_adam_bs4_160it.yaml")
GENERATOR = os.path.join(REPO, "configs", "OwnData-ImageSynthesis", "pix2pix_unet_c32_d4_bs4_600it.yaml")
MASK_VAE = os.path.join(REPO, "configs", "Shapes-ImageSynthesis", "label_map_vae_c32_d4_z64_bs8_600it.yaml")
BASES = {  # base -> (classes, train set, val set, U-Net size options, label maps flipped upside down too)
    "real_buildings": (["background", "building"], "bench_real_buildings_train", "bench_real_buildings_val",
                       ["INPUT.MIN_SIZE_TRAIN", "(150,)", "INPUT.MIN_SIZE_TEST", "150"], True),
    "shapes": (["background", "circle", "square", "triangle", "star"], "seg_d2_shapes_sem_seg_train",
               "seg_d2_shapes_sem_seg_val", ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MIN_SIZE_TEST", "128"], False),
}
# The generator keeps its config's random jitter (upscale, crop back; the buildings' 150 px are GENERATOR's own
# sizes); the shapes' 128 px take those of configs/Shapes-ImageSynthesis/pix2pix_unet_c32_d4_bs4_600it.yaml.
GENERATOR_SIZES = {"real_buildings": [],
                   "shapes": ["INPUT.MIN_SIZE_TRAIN", "(128, 144, 160)", "INPUT.CROP.SIZE", "(128, 128)",
                              "INPUT.MIN_SIZE_TEST", "128"]}
DATASETS = {f"{b}{f'_{k}' if k else ''}": (b, k) for b in BASES for k in (4, 8, None)}  # name -> (base, labelled)
VARIANTS = ("real", "real+synthetic", "synthetic")
FIGURES = [("mIoU", "mIoU"), ("mDice", "mDice"), ("mBoundaryIoU", "mBoundaryIoU")]


def _register(dataset, seed):
    """The labelled subset of ``dataset`` for ``seed`` (its own name), and the val set."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from seg_d2.data.datasets import register_sem_seg_folder

    base, k = DATASETS[dataset]
    classes, train, val, _, _ = BASES[base]
    if base == "real_buildings":
        root = real_buildings_root()
        for split, name in (("train", train), ("val", val)):
            if name not in DatasetCatalog:
                register_sem_seg_folder(name, os.path.join(root, split), os.path.join(root, f"{split}_semseg"), classes)
    subset = f"bench_{dataset}_seed{seed}_train"
    if subset not in DatasetCatalog:
        dicts = sorted(DatasetCatalog.get(train), key=lambda d: d["file_name"])
        if k:
            dicts = [dicts[i] for i in sorted(np.random.default_rng(seed).choice(len(dicts), k, replace=False))]
        DatasetCatalog.register(subset, lambda d=dicts: d)
        meta = MetadataCatalog.get(train)
        MetadataCatalog.get(subset).set(stuff_classes=list(meta.stuff_classes), ignore_label=meta.get("ignore_label", 255),
                                        evaluator_type="sem_seg")
    return subset, val


def _train(cfg, seed):
    """Train ``cfg`` (frozen) through tools/train_net.py's Trainer; return the trainer and its wall time."""
    import time

    from detectron2.utils.env import seed_all_rng

    seed_all_rng(seed)
    trainer = load_train_net().Trainer(cfg)
    trainer.resume_or_load(resume=False)
    start = time.perf_counter()
    trainer.train()
    return trainer, time.perf_counter() - start


def _mask_vae(subset, val, classes, sizes, device, seed, opts, vae_dir):
    """The LabelMapVAE of --masks vae, trained on ``subset``'s maps once, for its config's iterations (its weights in
    ``vae_dir``)."""
    from detectron2.modeling import build_model

    from seg_d2 import get_cfg
    from seg_d2.engine import SegD2Checkpointer

    cfg = get_cfg()
    cfg.merge_from_file(MASK_VAE)
    cfg.merge_from_list(["MODEL.DEVICE", device, "SEED", str(seed), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(len(classes)),
                         "DATASETS.TRAIN", f"('{subset}',)", "DATASETS.TEST", f"('{val}',)", *sizes,
                         "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9), "TEST.VIS_NUM_IMAGES", "0", "OUTPUT_DIR", vae_dir])
    cfg.freeze()
    weights = os.path.join(vae_dir, "model_final.pth")
    if not os.path.isfile(weights):
        _train(cfg, seed)
    vae = build_model(cfg)
    SegD2Checkpointer(vae, strict_shapes=True).load(weights)
    return vae


def _generator_cfg(dataset, seed, subset, val, device, opts, gen_dir):
    from seg_d2 import get_cfg

    classes = BASES[DATASETS[dataset][0]][0]
    cfg = get_cfg()
    cfg.merge_from_file(GENERATOR)
    cfg.merge_from_list(["MODEL.DEVICE", device, "SEED", str(seed), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(len(classes)),
                         "DATASETS.TRAIN", f"('{subset}',)", "DATASETS.TEST", f"('{val}',)",
                         *GENERATOR_SIZES[DATASETS[dataset][0]],
                         "SOLVER.MAX_ITER", str(opts["gen_iters"]), "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9),
                         "MODEL.PIX2PIX.SAMPLE_PERIOD", str(opts["gen_iters"]), "OUTPUT_DIR", gen_dir,
                         *opts.get("gen_opts", "").split()])
    cfg.freeze()
    return cfg


def generator_dir(dataset, seed, opts, seed_root):
    """Where the generator of (dataset, seed) lives: under --generators when given (shared by the --out folders of
    other --masks / --mix / --synthetic-num settings, which do not change it), else under this --out."""
    root = os.path.join(opts["generators"], dataset, str(seed)) if opts.get("generators") else seed_root
    extra = re.sub(r"[^A-Za-z0-9.]+", "-", opts.get("gen_opts", "").strip())
    return os.path.join(root, f"generator_{opts['gen_iters']}it" + (f"_{extra}" if extra else ""))


def train_generator(dataset, seed, subset, val, device, opts, gen_dir):
    """Train the Pix2Pix on ``subset`` (and, for --masks vae, the LabelMapVAE on its maps) unless done; returns the
    generator's record (its val L1/PSNR, wall time, parameters)."""
    from seg_d2.data.datasets._atomic import exclusive_lock

    base, _ = DATASETS[dataset]
    classes, _, _, sizes, _ = BASES[base]
    record_path = os.path.join(gen_dir, "record.json")
    os.makedirs(os.path.dirname(gen_dir), exist_ok=True)
    with exclusive_lock(gen_dir + ".lock"):
        if not os.path.isfile(record_path):
            trainer, wall = _train(_generator_cfg(dataset, seed, subset, val, device, opts, gen_dir), seed)
            record = {"wall_s": wall, "iters": opts["gen_iters"], "train_s_per_iter": wall / opts["gen_iters"],
                      "params": sum(p.numel() for p in trainer.model.parameters()),
                      "val": trainer._last_eval_results.get("image_synthesis", {})}
            with open(record_path, "w") as f:
                json.dump(record, f)
        if opts["masks"] == "vae":
            _mask_vae(subset, val, classes, sizes, device, seed, opts, os.path.join(gen_dir, "mask_vae"))
    with open(record_path) as f:
        return json.load(f)


def ensure_synthetic(dataset, seed, subset, val, device, opts, gen_dir, synth_dir):
    """The generator's --synthetic-num pairs for (dataset, seed), written once (the generator trained first if need
    be) and registered; returns the synthetic set's name and the generator's record."""
    import torch

    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from seg_d2.data.datasets import register_sem_seg_folder
    from seg_d2.data.datasets._atomic import exclusive_lock
    from seg_d2.data.sem_seg_io import read_label_map
    from seg_d2.data.synthesis import SYNTHETIC_LAYOUT, synthesize_dataset
    from seg_d2.engine import SegD2Checkpointer

    base, _ = DATASETS[dataset]
    classes, _, _, sizes, vertical = BASES[base]
    record = train_generator(dataset, seed, subset, val, device, opts, gen_dir)
    os.makedirs(os.path.dirname(synth_dir), exist_ok=True)
    with exclusive_lock(synth_dir + ".lock"):
        if not os.path.isfile(os.path.join(synth_dir, SYNTHETIC_LAYOUT["manifest"])):
            cfg = _generator_cfg(dataset, seed, subset, val, device, opts, gen_dir)
            model = build_model(cfg)
            SegD2Checkpointer(model, strict_shapes=True).load(os.path.join(gen_dir, "model_final.pth"))
            source = [(d["sem_seg_file_name"], read_label_map(d["sem_seg_file_name"]).astype(np.int64))
                      for d in DatasetCatalog.get(subset)]
            vae = (_mask_vae(subset, val, classes, sizes, device, seed, opts, os.path.join(gen_dir, "mask_vae"))
                   if opts["masks"] == "vae" else None)
            with torch.no_grad():
                synthesize_dataset(model, source, classes, synth_dir, num=opts["synthetic_num"], seed=seed,
                                   mask_mode=opts["masks"], object_classes=list(range(1, len(classes))),
                                   vertical_flip=vertical, image_format=cfg.INPUT.FORMAT, overwrite=True, mask_vae=vae,
                                   provenance={"config": GENERATOR, "weights": os.path.join(gen_dir, "model_final.pth")})
    name = f"bench_{dataset}_seed{seed}_synthetic"
    if name not in DatasetCatalog:
        register_sem_seg_folder(name, os.path.join(synth_dir, "images"), os.path.join(synth_dir, "labels"), classes)
    return name, record


def summarize(results):
    return {"sem_seg": {k: v for k, v in results.get("sem_seg", {}).items() if "-" not in k or k.startswith("IoU-")}}


def unet_cfg(dataset, seed, train, weights, test, iters, device, out_dir):
    """The benchmark's U-Net recipe (frozen) on the registered sets ``train`` (sampled by ``weights``), tested on
    ``test``."""
    from seg_d2 import get_cfg

    classes, _, _, sizes, _ = BASES[DATASETS[dataset][0]]
    cfg = get_cfg()
    cfg.merge_from_file(UNET)
    cfg.merge_from_list([
        "MODEL.DEVICE", device, "SEED", str(seed), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(len(classes)),
        "DATASETS.TRAIN", str(tuple(train)), "DATASETS.TEST", f"('{test}',)", "SEG_D2.DATASETS.TRAIN_WEIGHTS", str(weights),
        *sizes, "SOLVER.MAX_ITER", str(iters), "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9), "TEST.EVAL_PERIOD", "0",
        "TEST.VIS_NUM_IMAGES", "0", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", out_dir])
    cfg.freeze()
    return cfg


def train_one(variant, dataset, seed, iters, eval_at, device, out_dir):
    import seg_d2  # noqa: F401

    opts = json.loads(os.environ["SEG_D2_BENCH_ARGS"])
    subset, val = _register(dataset, seed)
    seed_root = os.path.dirname(out_dir.rstrip("/"))
    gen_dir = generator_dir(dataset, seed, opts, seed_root)
    if variant == "generator":  # the first stage: every generator before any U-Net
        record = train_generator(dataset, seed, subset, val, device, opts, gen_dir)
        return {**{k: v for k, v in record.items() if k != "iters"}, "generator_iters": record["iters"]}
    if variant == "real" and opts.get("real_from"):  # real only does not depend on the synthetic settings
        prior = read_results(os.path.join(opts["real_from"], "results.jsonl")).get(("train", dataset, seed, "real"))
        if prior and prior.get("iters") == iters:
            return {**{k: v for k, v in prior.items() if k not in ("kind", "dataset", "seed", "variant", "iters")},
                    "copied_from": opts["real_from"]}
    train, weights, generator = [subset], [], None
    if variant != "real":
        synthetic, generator = ensure_synthetic(dataset, seed, subset, val, device, opts, gen_dir,
                                                os.path.join(seed_root, f"synthetic_{opts['masks']}_{os.path.basename(gen_dir)}"))
        train, weights = ([subset, synthetic], [float(x) for x in opts["mix"].split(":")]) \
            if variant == "real+synthetic" else ([synthetic], [])
    cfg = unet_cfg(dataset, seed, train, weights, val, iters, device, out_dir)
    record = train_and_record(load_train_net().Trainer, cfg, iters, eval_at, device, summarize)
    return {**record, "train_sets": train, "train_weights": weights, "generator": generator,
            "bench_options": opts}


def report(figures, dataset, variants, seeds, args):
    runs = {v: [figures[(dataset, s, v)] for s in seeds] for v in variants}
    get = {label: (lambda k: lambda f: f["results"].get("sem_seg", {}).get(k, float("nan")))(key) for label, key in FIGURES}
    get["train s/iter"] = lambda f: f["train_s_per_iter"]
    stats = print_comparison(runs, get, ("mIoU", "mBoundaryIoU"), dataset, variants, seeds, args, baseline="real")
    gens = [f["generator"] for f in runs.get("real+synthetic", []) if f.get("generator")]
    if gens:
        l1, psnr = mean_std([g["val"].get("L1", float("nan")) for g in gens]), mean_std([g["val"].get("PSNR", float("nan")) for g in gens])
        print(f"  generator ({dataset}): val L1 {l1[0]:.1f} ± {l1[1]:.1f}, PSNR {psnr[0]:.2f} ± {psnr[1]:.2f} dB, "
              f"{gens[0]['params'] / 1e6:.2f} M parameters, {np.mean([g['wall_s'] for g in gens]) / 60:.1f} min to train "
              f"({gens[0]['iters']} iterations{', ' + args.gen_opts if args.gen_opts else ''}); mix real:synthetic {args.mix}, "
              f"{args.synthetic_num} pairs, masks {args.masks}")
    if "real+synthetic" in variants and "real" in variants:  # issue 24's goal, where labelled images are few
        for key in ("mIoU", "mBoundaryIoU"):
            diffs = [get[key](a) - get[key](b) for a, b in zip(runs["real+synthetic"], runs["real"])]
            m, s = mean_std(diffs)
            print(f"  real+synthetic - real, {key}: {m:+.2f} ± {s:.2f} paired; beats real by more than one std: "
                  f"{'yes' if m > s else 'no'}")
    return stats


def main():
    parser = paired_runs.argument_parser(__doc__.split("\n\n")[0], DATASETS, VARIANTS,
                                         "real_buildings_4,real_buildings_8,real_buildings,shapes_4,shapes_8,shapes",
                                         ",".join(VARIANTS), os.path.join(REPO, "bench_out", "synthesis"))
    parser.add_argument("--gen-iters", type=int, default=600, help="iterations of each generator")
    parser.add_argument("--synthetic-num", type=int, default=200, help="generated pairs per (dataset, seed)")
    parser.add_argument("--mix", default="1:1", help="real:synthetic share of the sampled images (TRAIN_WEIGHTS)")
    parser.add_argument("--masks", default="warp+paste", help="new label maps: warp+paste, warp, copy or vae")
    parser.add_argument("--gen-opts", default="", help="generator config options, 'KEY VALUE ...' (e.g. "
                        "'MODEL.PIX2PIX.DROPOUT 0.5'); its folder is named after them")
    parser.add_argument("--generators", default="", help="folder of the generators, shared by several --out "
                        "(default: inside --out)")
    parser.add_argument("--real-from", default="", help="an earlier --out whose real-only runs (same --iters) this "
                        "one reuses instead of training them again")
    parser.set_defaults(iters=600, eval_at="")
    paired_runs.main(__file__, parser, DATASETS, VARIANTS, train_one, None, {},
                     "U-Net on real only, real + synthetic (Pix2Pix pairs), synthetic only; evaluated on the real val "
                     "images", report,
                     forward=("gen_iters", "gen_opts", "synthetic_num", "mix", "masks", "generators", "real_from"),
                     first=("generator",))


if __name__ == "__main__":
    main()
