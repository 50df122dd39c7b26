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
import os

import paired_runs  # benchmarks/paired_runs.py: what bench_bmask.py shares
from paired_runs import (
    load_train_net, mean_std, print_comparison, register_real_buildings_panoptic, time_alternately, train_and_record,
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
    stats = print_comparison(runs, get, ("PQ", "PQ_st", "PQ_th"), dataset, variants, seeds, args)
    others = [v for v in variants if v != "stock"] if "stock" in variants else []
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


def main():
    parser = paired_runs.argument_parser(__doc__.split("\n\n")[0], DATASETS, VARIANTS, "shapes,real_buildings",
                                         "stock,unet,unet_bmask", os.path.join(REPO, "bench_out", "panoptic"))
    paired_runs.main(__file__, parser, DATASETS, VARIANTS, train_one, time_inference, {
        "infer_s_per_img": float("nan"), "count_per_img": float("nan"), "infer_peak_cuda_bytes": None},
        "PanopticFPN: detectron2's stock (SemSegFPNHead + Mask R-CNN) vs seg_d2's U-Net stuff head (unet: + Mask "
        "R-CNN; unet_bmask: + BMask R-CNN); R-18-FPN from scratch, Base-Shapes-PanopticFPN.yaml's recipe for all", report)


if __name__ == "__main__":
    main()
