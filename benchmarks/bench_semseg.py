#!/usr/bin/env python
"""Benchmark: seg_d2's U-Nets against smp's Unet(resnet50), nnU-Net 2D and detectron2's SemanticFPN, over seeds.

Every detectron2-side variant trains with the recipe of configs/Shapes-SemanticSegmentation/
unet_R_50_scratch_bs8_600it.yaml (from scratch, batch 8, poly LR, CE + Dice; the schedule scaled to --iters)
through tools/train_net.py's Trainer, and is scored by seg_d2's SemSegBoundaryEvaluator (mIoU, mDice,
mBoundaryIoU) at --eval-at fractions of training and at the end. Variants:

- unet_R_50: seg_d2's U-Net, ResNet-50 encoder (build_resnet_unet_backbone + UNetHead);
- unet_R_50_fast: the same with issue 25's speed levers: nearest upsampling between decoder stages, a 16-channel
  full-resolution path and last decoder stage (smp's widths), batch norms folded into the convs at inference
  (TEST.FUSE_CONV_BN; smp's model is timed as it comes);
- unet_R_50_smp_layout: nearest upsampling and smp's decoder layout: no full-resolution path ``s1``, the last
  decoder stage (16 channels, stride 1) without a skip (MODEL.SEM_SEG_HEAD.SKIPLESS_STAGES 1); fused at inference;
- unet_R_50_smp_layout_ds: the same with deep supervision (MODEL.SEM_SEG_HEAD.DEEP_SUPERVISION, as nnU-Net trains):
  a 1x1 classifier and a 0.4-weighted loss at each lower-resolution decoder stage, training only;
- unet_R_50_smp_layout_ds_fan_in: the same with the decoder convs He-initialised in fan_in mode as smp's
  (MODEL.SEM_SEG_HEAD.CONV_INIT): after a batch norm, a conv's init scale sets its effective step size;
- unet_R_50_smp_layout_ds_smp_head: the deep-supervised layout with smp's classifier: 3x3, Glorot-initialised
  (MODEL.SEM_SEG_HEAD.PREDICTOR_KERNEL_SIZE / PREDICTOR_INIT) instead of detectron2's 1x1 at std 0.01, which passes
  ~1/40 of the gradient back to every layer at the start (smp fit the buildings' training set faster);
- unet_R_50_smp_layout_ds_smp_init: the same with the decoder convs in fan_in mode as well: smp's initialisation
  throughout, so that each stage's gradient at init is smp's (benchmarks/profile_unet.py --init-grads);
- *_nnunet_batch (of unet_auto, unet_classic_gray_auto, unet_R_50_smp_cost_auto, smp_auto): the same plans with
  nnU-Net's batch cap (SEG_D2.AUTO_CONFIG.BATCH_DATASET_SHARE 0.05): a batch of 2 on the 18 training tiles, so
  many more steps;
- unet_R_50_smp_cost_auto / smp_auto: that recipe, and smp, configured from the data (as unet_auto), trained for
  the time unet_R_50_smp_layout_ds_smp_init took: seg_d2 at smp's cost with its planner against smp as typed, and
  smp with the same plan (how much of a difference is the plan's);
- unet_R_50_fast_auto: unet_R_50_fast configured from the data, trained for the time smp's training took on the same
  dataset and seed (smp's run in the same start, so both see the same load): a training time of 1.0x smp's by
  construction, at the fast levers' inference cost (issue 25, item 1);
- unet_classic: the classic U-Net (Ronneberger et al. 2015), 16 base channels;
- smp: segmentation_models_pytorch's Unet(resnet50) (benchmarks/smp_peer.py), same data, loss and trainer;
- semantic_fpn_R_50: detectron2's SemanticFPN (SemSegFPNHead);
- unet_auto: unet_R_50 configured from the data (SEG_D2.AUTO_CONFIG, seg_d2.engine.auto_config): normalisation,
  sizes, batch, and the iterations that fill the time unet_R_50's training took on the same dataset and seed;
- unet_classic_gray / unet_classic_gray_auto: the README's recipe for one-channel scans
  (configs/OwnData-SemanticSegmentation/unet_classic_gray_scratch_bs8_6k.yaml with the README's typed
  MODEL.PIXEL_MEAN [128] / PIXEL_STD [64]) against its auto-configured config (unet_classic_gray_auto_bs8_6k.yaml,
  nothing typed), trained for the time the hand-written one took: for the scans16 set;
- nnunet: nnU-Net 2D (benchmarks/nnunet_peer.py, its own venv): converted, planned and preprocessed by its own
  tools, trained for the time unet_R_50's training took (nnUNetTrainer_peer sets its epochs from a measured
  first steps), predicting the val images; scored by the same evaluator.

Train s/iter is the mean step after a 10 % warm-up (the batch differs for the AUTO variants and nnunet: see
their rows);
inference s/img is timed alternately image by image in one process for the detectron2-side models (nnU-Net's:
its predictor's wall time per image, with its own process start); peak RSS of each run's process; parameters
and fvcore FLOPs per val image. Ratios are to smp's. Each run is its own single-thread process, two at a time;
finished runs are appended to OUT/results.jsonl and skipped when started again (--report-only prints the tables).

    nohup python benchmarks/bench_semseg.py --out bench_out/semseg --jobs 2 --threads 1 > bench_semseg.log 2>&1 &

Datasets: shapes (seg_d2_shapes_sem_seg_*), real_buildings (the SpaceNet tiles of
../shared/data/make_real_buildings.py, 150 px, background / building) and scans16: those tiles as 12-bit scans in
16-bit PNGs (600 + 12 x gray level, Gaussian noise, 0.1 % hot pixels at 4095; the README's 16-bit scan example on
real images), written under $DETECTRON2_DATASETS/real_buildings_scan16 when missing. Needs requirements/bench.txt
(smp) and, for nnunet, benchmarks/setup_nnunet_env.sh.
"""
import json
import os

import paired_runs  # benchmarks/paired_runs.py: what bench_bmask.py and bench_panoptic.py share
from paired_runs import (
    load_train_net, print_comparison, real_buildings_root, time_alternately, train_and_record,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(REPO, "configs", "Shapes-SemanticSegmentation")
OWN = os.path.join(REPO, "configs", "OwnData-SemanticSegmentation")
UNET_R50 = os.path.join(SHAPES, "unet_R_50_scratch_bs8_600it.yaml")
FAST = ["MODEL.SEM_SEG_HEAD.UPSAMPLE_MODE", "nearest", "MODEL.RESNET_UNET.FULL_RES_CHANNELS", "16",
        "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[256, 128, 64, 32, 16]", "TEST.FUSE_CONV_BN", "True"]
# smp's decoder layout: no full-resolution encoder path; the last stage upsamples the s2 stage alone
SMP_LAYOUT = ["MODEL.SEM_SEG_HEAD.UPSAMPLE_MODE", "nearest", "MODEL.RESNET_UNET.FULL_RES_CHANNELS", "0",
              "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['s2', 'res2', 'res3', 'res4', 'res5']",
              "MODEL.SEM_SEG_HEAD.SKIPLESS_STAGES", "1", "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[256, 128, 64, 32, 16]",
              "TEST.FUSE_CONV_BN", "True"]
SMP_DS = SMP_LAYOUT + ["MODEL.SEM_SEG_HEAD.DEEP_SUPERVISION", "True"]  # and nnU-Net's deep supervision
SMP_HEAD = ["MODEL.SEM_SEG_HEAD.PREDICTOR_KERNEL_SIZE", "3", "MODEL.SEM_SEG_HEAD.PREDICTOR_INIT", "xavier"]  # its classifier
FAN_IN = ["MODEL.SEM_SEG_HEAD.CONV_INIT", "fan_in"]  # smp's decoder init
# FAST with an 8-channel full-resolution path: the s1 skip that smp lacks (seg_d2's edge on nuclei and brain MRI), narrow
S1_8 = FAST[:2] + ["MODEL.RESNET_UNET.FULL_RES_CHANNELS", "8"] + FAST[4:]
SMP_COST = SMP_DS + SMP_HEAD + FAN_IN  # smp's equal at smp's cost on the buildings (README, issue 25)
# the planner's default batch (from the pixels alone; the scans recipe now sets nnU-Net's cap: *_nnunet_batch)
PIXEL_BATCH = ["SEG_D2.AUTO_CONFIG.BATCH_DATASET_SHARE", "0.0"]
AUTO_ON = ["SEG_D2.AUTO_CONFIG.ENABLED", "True"] + PIXEL_BATCH
SMP = ["MODEL.META_ARCHITECTURE", "SmpUnetPeer"]  # benchmarks/smp_peer.py
NNUNET_BATCH = ["SEG_D2.AUTO_CONFIG.BATCH_DATASET_SHARE", "0.05"]  # nnU-Net's batch cap: 2 on the 18 tiles
VARIANTS = {  # name -> (config, options on top of it)
    "unet_R_50": (UNET_R50, []),
    "smp": (UNET_R50, SMP),
    "unet_R_50_fast": (UNET_R50, FAST),
    "unet_R_50_smp_layout": (UNET_R50, SMP_LAYOUT),
    "unet_R_50_smp_layout_ds": (UNET_R50, SMP_DS),
    "unet_R_50_smp_layout_ds_fan_in": (UNET_R50, SMP_DS + FAN_IN),
    "unet_R_50_smp_layout_ds_smp_head": (UNET_R50, SMP_DS + SMP_HEAD),
    "unet_R_50_smp_layout_ds_smp_init": (UNET_R50, SMP_COST),
    # that recipe configured from the data, and smp configured by the same planner (what the plan alone brings)
    "unet_R_50_smp_cost_auto": (UNET_R50, SMP_COST + AUTO_ON),
    "smp_auto": (UNET_R50, SMP + AUTO_ON),
    "unet_R_50_fast_auto": (UNET_R50, FAST + AUTO_ON),  # for smp's training time
    "unet_R_50_s1_8_ds_smp_init": (UNET_R50, S1_8 + SMP_DS[-2:] + SMP_HEAD + FAN_IN),
    "unet_classic": (os.path.join(SHAPES, "unet_classic_c16_scratch_bs8_600it.yaml"), []),
    "semantic_fpn_R_50": (os.path.join(SHAPES, "semantic_fpn_R_50_scratch_bs8_600it.yaml"), []),
    "unet_auto": (UNET_R50, AUTO_ON),
    "unet_classic_gray": (os.path.join(OWN, "unet_classic_gray_scratch_bs8_6k.yaml"),
                          ["MODEL.PIXEL_MEAN", "[128.0]", "MODEL.PIXEL_STD", "[64.0]"]),  # as the README types them
    "unet_classic_gray_auto": (os.path.join(OWN, "unet_classic_gray_auto_bs8_6k.yaml"), PIXEL_BATCH),
    "nnunet": (None, []),
}
VARIANTS.update({f"{v}_nnunet_batch": (config, opts + NNUNET_BATCH) for v, (config, opts) in list(VARIANTS.items())
                 if v in ("unet_auto", "unet_classic_gray_auto", "unet_R_50_smp_cost_auto", "smp_auto")})
AUTO = tuple(v for v in VARIANTS if "_auto" in v)  # configured from the data (SEG_D2.AUTO_CONFIG)
BUDGET_FROM = {"unet_auto": "unet_R_50", "nnunet": "unet_R_50",  # trained for the time that variant's training took
               "unet_classic_gray_auto": "unet_classic_gray",
               # 0.92-1.02x smp's training time (smp's own runs of seeds 1-2 were slowed by other load)
               "unet_R_50_smp_cost_auto": "unet_R_50_smp_layout_ds_smp_init",
               "smp_auto": "unet_R_50_smp_layout_ds_smp_init",
               "unet_R_50_fast_auto": "smp"}
BUDGET_FROM.update({v: BUDGET_FROM[v[:-len("_nnunet_batch")]] for v in VARIANTS if v.endswith("_nnunet_batch")})
BASELINE = "smp"
DATASETS = {  # name -> (the data: every variant; the recipe's sizes: every variant but AUTO's, which plan them)
    "shapes": ([], []),
    "real_buildings": (["DATASETS.TRAIN", "('bench_semseg_real_buildings_train',)",
                        "DATASETS.TEST", "('bench_semseg_real_buildings_val',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"],
                       ["INPUT.MIN_SIZE_TRAIN", "(150,)", "INPUT.MAX_SIZE_TRAIN", "150"]),
    # the recipe at the tiles' size as on real_buildings: its 256-512 px scale augmentation cost 11.1 s/iter, and at
    # 100 iterations neither recipe predicted a building pixel (2026-12-07); at 150 px 600 iterations fit a session
    "scans16": (["DATASETS.TRAIN", "('bench_semseg_scans16_train',)", "DATASETS.TEST", "('bench_semseg_scans16_val',)",
                 "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2"],
                ["INPUT.MIN_SIZE_TRAIN", "(150,)", "INPUT.MAX_SIZE_TRAIN", "150"]),
}
# benchmarks/nnunet_peer.py's names of the datasets (None: no conversion there)
NNUNET_DATASETS = {"shapes": "shapes", "real_buildings": "buildings", "scans16": None}
FIGURES = [("mIoU", "mIoU"), ("mDice", "mDice"), ("mBoundaryIoU", "mBoundaryIoU")]


def register(dataset):
    from detectron2.data import DatasetCatalog

    from seg_d2.data.datasets import register_sem_seg_folder

    if dataset in ("real_buildings", "scans16"):
        root = real_buildings_root() if dataset == "real_buildings" else make_scans16()
        for split in ("train", "val"):
            name = f"bench_semseg_{dataset}_{split}"
            if name not in DatasetCatalog:
                register_sem_seg_folder(name, os.path.join(root, split), os.path.join(root, f"{split}_semseg"),
                                        ["background", "building"])


def make_scans16(seed=0):
    """$DETECTRON2_DATASETS/real_buildings_scan16 (made once, in a temporary folder renamed at the end): the real
    buildings' gray tiles as 12-bit scans in 16-bit PNGs, 600 + 12 x level + N(0, 8), 0.1 % hot pixels at 4095,
    and their label maps."""
    import shutil

    import cv2
    import numpy as np

    from seg_d2.data.datasets._atomic import exclusive_lock

    src, root = real_buildings_root(), os.path.join(os.environ["DETECTRON2_DATASETS"], "real_buildings_scan16")
    with exclusive_lock(root + ".lock"):
        if os.path.isdir(root):
            return root
        tmp = root + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        rng = np.random.default_rng(seed)
        for split in ("train", "val"):
            os.makedirs(os.path.join(tmp, split))
            shutil.copytree(os.path.join(src, f"{split}_semseg"), os.path.join(tmp, f"{split}_semseg"))
            for name in sorted(os.listdir(os.path.join(src, split))):
                gray = cv2.imread(os.path.join(src, split, name), cv2.IMREAD_GRAYSCALE)
                if gray is None:
                    raise ValueError(f"cannot read {os.path.join(src, split, name)}")
                scan = 600 + 12 * gray.astype(np.float64) + rng.normal(0, 8, gray.shape)
                scan[rng.random(gray.shape) < 0.001] = 4095
                cv2.imwrite(os.path.join(tmp, split, name), np.clip(scan, 0, 4095).astype(np.uint16))
        os.rename(tmp, root)
    return root


def setup_cfg(variant, dataset, device, seed, opts=()):
    """The variant's config on ``dataset`` (not frozen), with ``opts`` last."""
    from smp_peer import add_smp_peer_config  # registers SmpUnetPeer too

    from seg_d2 import get_cfg

    config, variant_opts = VARIANTS[variant]
    data, sizes = DATASETS[dataset]
    cfg = add_smp_peer_config(get_cfg())
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", device, "SEED", str(seed), "DATALOADER.NUM_WORKERS", "0",
                         "TEST.VIS_NUM_IMAGES", "0", *data, *([] if variant in AUTO else sizes),
                         *variant_opts, *opts])
    return cfg


def summarize(results):
    return {"sem_seg": {k: v for k, v in results.get("sem_seg", {}).items() if "-" not in k or k.startswith("IoU-")}}


def budget_seconds(variant, out_dir, dataset, seed, iters):
    """The training time of BUDGET_FROM[variant] on ``dataset`` with ``seed`` (its s/iter x iterations), from the
    results of the benchmark that ``out_dir`` (OUT/dataset/seed/variant) belongs to."""
    rec = paired_runs.required_run(out_dir, dataset, seed, BUDGET_FROM[variant], iters,
                                   f"{variant} (trained for the time {BUDGET_FROM[variant]} took)")
    return rec["train_s_per_iter"] * iters


def train_one(variant, dataset, seed, iters, eval_at, device, out_dir):
    import seg_d2  # noqa: F401

    register(dataset)
    budget = budget_seconds(variant, out_dir, dataset, seed, iters) if variant in BUDGET_FROM else None
    if variant == "nnunet":
        return train_nnunet(dataset, budget, paired_runs.bench_out_of(out_dir), out_dir)
    Trainer = load_train_net().Trainer
    schedule = ["SOLVER.MAX_ITER", str(iters), "SOLVER.WARMUP_ITERS", str(max(1, iters // 12)),
                "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9), "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", out_dir]
    cfg = setup_cfg(variant, dataset, device, seed, schedule)
    record = {}
    if variant in AUTO:
        from seg_d2.engine.auto_config import EVAL_SHARE, configure_from_data, configure_iterations

        # what the benchmark fixes (data, seed, device, output) is explicit; the recipe's values are the plan's to set
        explicit = set(DATASETS[dataset][0][0::2]) | {"MODEL.DEVICE", "SEED", "DATALOADER.NUM_WORKERS", "OUTPUT_DIR",
                                                      "TEST.VIS_NUM_IMAGES", "TEST.EVAL_PERIOD"}
        plan = configure_from_data(cfg, explicit)
        cfg.SEG_D2.AUTO_CONFIG.BUDGET_MINUTES = budget / 60 / (1 - EVAL_SHARE)  # the plan keeps EVAL_SHARE for eval
        cfg.freeze()
        cfg = configure_iterations(Trainer, cfg, explicit)  # frozen
        record = {"plan": plan["applied"], "budget_s": budget, "planned_iters": cfg.SOLVER.MAX_ITER}
    cfg.freeze()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.yaml"), "w") as f:  # the run's whole config, for reading
        f.write(cfg.dump())
    res = train_and_record(Trainer, cfg, cfg.SOLVER.MAX_ITER, eval_at, device, summarize)
    if variant in AUTO:  # its curve's points are at its own iterations: keep the final one under --iters too
        res["curve"][str(iters)] = res["results"]
    return {**res, "batch": cfg.SOLVER.IMS_PER_BATCH, **record}


def train_nnunet(dataset, budget, out, out_dir):
    """nnU-Net 2D on ``dataset`` for ``budget`` seconds of training: convert and plan once per OUT (shared by the
    seeds, under a lock), train into ``out_dir`` (its own nnUNet_results; nnU-Net has no seed option), predict the
    val images, score them with seg_d2's evaluator."""
    import time
    from pathlib import Path

    import nnunet_peer

    from seg_d2.data.datasets._atomic import exclusive_lock

    if NNUNET_DATASETS[dataset] is None:
        raise NotImplementedError(f"nnunet on {dataset}: benchmarks/nnunet_peer.py has no conversion for it")
    if not os.path.isfile(nnunet_peer.NNUNET_PY):
        raise FileNotFoundError(f"nnU-Net's python {nnunet_peer.NNUNET_PY} is missing: run bash "
                                f"benchmarks/setup_nnunet_env.sh (or set NNUNET_PYTHON)")
    d = nnunet_peer.spec_of(NNUNET_DATASETS[dataset])
    work = Path(out).resolve() / "nnunet_work"
    with exclusive_lock(str(work) + ".lock"):
        nnunet_peer.install_trainer()
        plan_json = work / f"plan_{d['name']}.json"
        if not plan_json.is_file():
            nnunet_peer.convert(d, work)
            nnunet_peer.plan(d, work)
        plan = json.loads(plan_json.read_text())
    results = Path(out_dir).resolve() / "nnUNet_results"
    wall = time.perf_counter()
    rec = nnunet_peer.train(d, nnunet_peer.peer_args("train", work=work, results=results, budget_s=budget))
    train_wall = time.perf_counter() - wall
    pred = nnunet_peer.predict(d, nnunet_peer.peer_args("predict", work=work, results=results,
                                                        pred=Path(out_dir).resolve() / "predictions"))
    n_val = len(list((d["root"] / d["val"][0]).glob("*.png")))
    infer = {"infer_s_per_img": json.loads((pred / "peer_predict_time.json").read_text())["wall_s"] / max(1, n_val)}
    with open(os.path.join(out_dir, "infer.json"), "w") as f:  # kept beside the run; time_inference reads the record
        json.dump(infer, f)
    res = nnunet_peer.score(d, pred, Path(out_dir) / "scores.json")
    timing = rec.get("peer_timing", {})
    return {
        "train_s_per_iter": timing.get("s_per_iter", float("nan")), "batch": timing.get("batch_size"),
        "train_peak_cuda_bytes": None, "peak_rss_bytes": None, "params": timing.get("params"),
        "losses_last_fifth": {}, "wall_s": train_wall, "budget_s": budget, "plan": plan,
        "planned_iters": timing.get("iterations"),
        "results": {"sem_seg": {k: v for k, v in res.items() if "-" not in k}},
        "curve": {}, "weights": os.path.join(out_dir, "infer.json"), "nnunet": rec, **infer,
    }


def time_inference(variants, dataset, seed, weights, device, rounds):
    """s/img of each detectron2-side variant, alternated image by image (nnunet's comes from its predictor), and
    fvcore FLOPs per val image (the mean over the val images' sizes)."""
    import seg_d2  # noqa: F401
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import build_detection_test_loader
    from detectron2.modeling import build_model
    from detectron2.utils.analysis import FlopCountAnalysis

    register(dataset)
    models, inputs, timed_elsewhere, initialised = {}, None, {}, set()
    for name in variants:
        if name == "nnunet":  # its predictor's time, recorded by train_nnunet
            infer = {"infer_s_per_img": training_record(name, dataset, seed, weights[name])["infer_s_per_img"]}
            timed_elsewhere[name] = {**infer, "gflops_per_img": float("nan"), "infer_peak_cuda_bytes": None}
            continue
        cfg = run_config(name, dataset, device, seed, weights[name])
        models[name] = build_model(cfg).eval()
        if os.path.isfile(weights[name]):
            DetectionCheckpointer(models[name]).load(weights[name])
        else:  # trained on another machine (weights are not kept): a dense model's time does not depend on its weights
            print(f"== {name}: {weights[name]} is not on this machine: timed as initialised", flush=True)
            initialised.add(name)
        if inputs is None:
            inputs = list(build_detection_test_loader(cfg, cfg.DATASETS.TEST[0]))
    timed = time_alternately(models, inputs, device, rounds, lambda out: 0) if models else {}
    for name, model in models.items():
        flops = {}
        for x in inputs:
            size = tuple(x[0]["image"].shape[-2:])
            if size not in flops:
                fca = FlopCountAnalysis(model, x)
                fca.unsupported_ops_warnings(False)
                fca.uncalled_modules_warnings(False)
                flops[size] = fca.total()
        timed[name]["gflops_per_img"] = sum(flops[tuple(x[0]["image"].shape[-2:])] for x in inputs) / len(inputs) / 1e9
        timed[name].pop("count_per_img")
        timed[name]["timed_weights"] = "initialised" if name in initialised else "trained"
    return {**timed, **timed_elsewhere}


def run_config(variant, dataset, device, seed, weights):
    """The config the run whose weights are ``weights`` trained with: the variant's, and for AUTO the plan (the
    normalisation and sizes) that its training record keeps."""
    cfg = setup_cfg(variant, dataset, device, seed)
    if variant in AUTO:
        plan = training_record(variant, dataset, seed, weights)["plan"]
        cfg.merge_from_list([x for key, value in plan.items() for x in (key, value)])
    return cfg


def training_record(variant, dataset, seed, weights):
    """The training record of the run whose weights are ``weights`` (OUT/dataset/seed/variant/...), from OUT's
    results.jsonl: what time_inference needs of a run trained on another machine, whose files are gone."""
    results = os.path.join(paired_runs.bench_out_of(os.path.dirname(weights)), "results.jsonl")
    rec = paired_runs.read_results(results).get(("train", dataset, seed, variant))
    if rec is None:
        raise FileNotFoundError(f"no training record of {variant} on {dataset}, seed {seed} in {results}")
    return rec


def report(figures, dataset, variants, seeds, args):
    runs = {v: [figures[(dataset, s, v)] for s in seeds] for v in variants}
    nan = float("nan")
    get = {label: (lambda k: lambda f: f["results"].get("sem_seg", {}).get(k, nan))(key) for label, key in FIGURES}
    get.update({
        "train s/iter": lambda f: f["train_s_per_iter"], "batch": lambda f: f.get("batch") or nan,
        # the planned variants' batch is not the recipe's: their cost per training image is what compares
        "train s/img": lambda f: f["train_s_per_iter"] / (f.get("batch") or nan),
        "inference s/img": lambda f: f.get("infer_s_per_img", nan),
        "GFLOPs/img": lambda f: f.get("gflops_per_img", nan),
        "params (M)": lambda f: (f.get("params") or nan) / 1e6,
        "peak RSS, train+eval (MiB)": lambda f: (f.get("peak_rss_bytes") or nan) / 2 ** 20,
        "training time (s)": lambda f: f["train_s_per_iter"] * (f.get("planned_iters") or args.iters),
    })
    baseline = BASELINE if BASELINE in variants else variants[0]
    print_comparison(runs, get, [label for label, _ in FIGURES], dataset, variants, seeds, args, baseline=baseline)
    for v in variants:
        plans = [f.get("plan") for f in runs[v] if f.get("plan")]
        if plans:
            print(f"\n{v}'s plan (seed {seeds[0]}): {json.dumps(plans[0])}")


def main():
    parser = paired_runs.argument_parser(__doc__.split("\n\n")[0], DATASETS, VARIANTS, "shapes,real_buildings",
                                         ",".join(v for v in VARIANTS if "gray" not in v),
                                         os.path.join(REPO, "bench_out", "semseg"))
    paired_runs.main(__file__, parser, DATASETS, VARIANTS, train_one, time_inference, {
        "infer_s_per_img": float("nan"), "gflops_per_img": float("nan"), "infer_peak_cuda_bytes": None},
        "Semantic segmentation: seg_d2's U-Nets vs smp's Unet(resnet50), nnU-Net 2D and detectron2's SemanticFPN; "
        "the shapes U-Net R-50 recipe for the detectron2-side models, nnU-Net's own plan", report,
        needs=BUDGET_FROM)


if __name__ == "__main__":
    main()
