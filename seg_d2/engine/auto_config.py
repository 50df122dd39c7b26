"""Configured from the data (SEG_D2.AUTO_CONFIG, train_net --auto-config): the training set's fingerprint
(seg_d2.data.fingerprint) becomes a plan of config values, as nnU-Net plans (Isensee et al. 2021): normalisation,
input and crop size, batch, class weights, anchors and detections per image, and, for a time budget, the
iterations. A value set explicitly (in the config file itself or on the command line) always wins; the log and
OUTPUT_DIR/plan.json say what was planned, what was set and what was kept."""
import json
import logging
import math
import os
from typing import Dict, Iterable, Set

import numpy as np

from seg_d2.data.checks import get_cfg_key, instance_num_classes_key, set_cfg_key

__all__ = ["apply_auto_config", "configure_from_data", "explicit_keys", "measure_s_per_iter", "plan_from_fingerprint",
           "plan_iterations"]

logger = logging.getLogger("seg_d2")

CROP_ABOVE = 512  # images whose short side is larger train on crops of this side
BATCH_PIXELS = 2 ** 19  # pixels per batch the batch size aims at (8 images of 256 x 256), on a CPU-sized model
EVAL_SHARE = 0.1  # of a time budget, kept for the evaluation after training
_PLANNED_HERE: Set[str] = set()  # the plan.json files this process wrote a fingerprint to (its own, not a past run's)


def explicit_keys(config_file: str, opts: Iterable[str]) -> Set[str]:
    """The dotted keys that ``config_file`` itself sets (not its _BASE_, which holds the recipe's defaults) and the
    command line's KEY VALUE ``opts`` set: what the plan must not change."""
    import yaml

    keys = set(list(opts)[0::2])
    with open(config_file) as f:
        data = yaml.safe_load(f) or {}

    def walk(node, prefix):
        for k, v in node.items():
            if k == "_BASE_":
                continue
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                keys.add(prefix + k)

    if isinstance(data, dict):
        walk(data, "")
    return keys


def plan_from_fingerprint(cfg, fp: dict) -> Dict[str, object]:
    """{config key: value} from the fingerprint ``fp``:

    - MODEL.PIXEL_MEAN / PIXEL_STD: the training pixels' mean and std per channel; for single-channel images
      (scans) after clipping to the 0.5 / 99.5 percentiles (nnU-Net's rule for intensities with outliers);
    - INPUT.MIN/MAX_SIZE_TRAIN/TEST: the median short and long sides (the data's own scale); a random crop of
      CROP_ABOVE pixels when the short side is larger;
    - SOLVER.IMS_PER_BATCH: a power of two near BATCH_PIXELS / (the trained image's pixels), 2..16; with
      SEG_D2.AUTO_CONFIG.BATCH_DATASET_SHARE > 0, at most that share of the training set's pixels (images x median
      size), at least 2: nnU-Net's cap (0.05 there), which gives a small set many small steps;
    - MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS (with SEG_D2.AUTO_CONFIG.CLASS_WEIGHTS): 1/sqrt(class frequency), mean 1;
    - for ROI-head models with annotations: MODEL.ANCHOR_GENERATOR.SIZES, one octave per FPN level from the
      power of two at or below the 5th percentile of the objects' sqrt(area); TEST.DETECTIONS_PER_IMAGE twice
      the most objects an image has (at least 10).
    """
    plan: Dict[str, object] = {}
    one_channel = fp["channels"] == [1] or len(cfg.MODEL.PIXEL_MEAN) == 1
    stats = fp["intensity"]
    mean, std = (stats["clipped_mean"], stats["clipped_std"]) if one_channel else (stats["mean"], stats["std"])
    if len(cfg.MODEL.PIXEL_MEAN) == 1 and len(mean) == 3:  # gray model on 3-channel reads: their average
        mean, std = [float(np.mean(mean))], [float(np.mean(std))]
    plan["MODEL.PIXEL_MEAN"] = [round(float(m), 3) for m in mean]
    plan["MODEL.PIXEL_STD"] = [round(max(float(s), 1.0), 3) for s in std]
    short, long = int(round(fp["short_side"]["median"])), int(round(fp["long_side"]["median"]))
    plan["INPUT.MIN_SIZE_TRAIN"] = (short,)
    plan["INPUT.MAX_SIZE_TRAIN"] = long
    plan["INPUT.MIN_SIZE_TEST"] = short
    plan["INPUT.MAX_SIZE_TEST"] = long
    side = (min(short, CROP_ABOVE), min(long, CROP_ABOVE))
    if short > CROP_ABOVE:
        plan["INPUT.CROP.ENABLED"] = True
        plan["INPUT.CROP.TYPE"] = "absolute"
        plan["INPUT.CROP.SIZE"] = [CROP_ABOVE, CROP_ABOVE]
    batch = min(16, max(2, 2 ** round(math.log2(BATCH_PIXELS / (side[0] * side[1])))))
    share = cfg.SEG_D2.AUTO_CONFIG.BATCH_DATASET_SHARE
    if share > 0:  # nnunetv2's ExperimentPlanner: round(share x dataset pixels / patch pixels), at least 2
        batch = max(2, min(batch, round(share * fp["images"] * short * long / (side[0] * side[1]))))
    plan["SOLVER.IMS_PER_BATCH"] = int(batch)
    if cfg.SEG_D2.AUTO_CONFIG.CLASS_WEIGHTS and "class_frequency" in fp:
        freq = np.asarray(fp["class_frequency"][: max(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, 1)])
        present = freq > 0
        weights = np.ones_like(freq)
        weights[present] = 1 / np.sqrt(freq[present])
        weights[present] /= weights[present].mean()
        plan["MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS"] = [round(float(w), 4) for w in weights]
    if instance_num_classes_key(cfg) == "MODEL.ROI_HEADS.NUM_CLASSES" and "object_size" in fp:  # R-CNNs, PanopticFPN
        levels = len(cfg.MODEL.RPN.IN_FEATURES) if len(cfg.MODEL.RPN.IN_FEATURES) > 1 else 5
        smallest = 2 ** max(3, int(math.floor(math.log2(max(fp["object_size"]["p5"], 1.0)))))
        plan["MODEL.ANCHOR_GENERATOR.SIZES"] = [[smallest * 2 ** k] for k in range(levels)]
        plan["TEST.DETECTIONS_PER_IMAGE"] = int(max(10, 2 * fp["objects_per_image"]["max"]))
    return plan


def plan_iterations(cfg, s_per_iter: float) -> Dict[str, object]:
    """SOLVER.MAX_ITER that fills SEG_D2.AUTO_CONFIG.BUDGET_MINUTES (less EVAL_SHARE for the evaluation) at the
    measured ``s_per_iter``, with SOLVER.STEPS, WARMUP_ITERS and CHECKPOINT_PERIOD scaled alike."""
    budget = cfg.SEG_D2.AUTO_CONFIG.BUDGET_MINUTES * 60 * (1 - EVAL_SHARE)
    iters = max(1, int(budget / s_per_iter))
    scale = iters / max(1, cfg.SOLVER.MAX_ITER)
    return {"SOLVER.MAX_ITER": iters, "SOLVER.STEPS": tuple(max(1, int(s * scale)) for s in cfg.SOLVER.STEPS),
            "SOLVER.WARMUP_ITERS": min(int(cfg.SOLVER.WARMUP_ITERS * scale), iters // 4),
            "SOLVER.CHECKPOINT_PERIOD": max(1, min(cfg.SOLVER.CHECKPOINT_PERIOD, iters))}


def apply_auto_config(cfg, plan: Dict[str, object], explicit: Set[str], fingerprint: dict, path: str = None,
                      **extra) -> dict:
    """Set each planned key that is not ``explicit`` (cfg not frozen), log both kinds, and write ``path``
    (OUTPUT_DIR/plan.json), with ``extra`` fields; without a ``fingerprint``, update the plan this process wrote
    there (a plan.json of an earlier run into the same OUTPUT_DIR is replaced, not merged). Returns the record."""
    applied, kept = {}, {}
    for key, value in plan.items():
        if key in explicit:
            kept[key] = {"config": _jsonable(get_cfg_key(cfg, key)), "plan": _jsonable(value)}
            logger.info(f"[auto-config] {key} = {get_cfg_key(cfg, key)!r} kept: set explicitly (the plan had {value!r})")
        else:
            applied[key] = _jsonable(value)
            set_cfg_key(cfg, key, value)
            logger.info(f"[auto-config] {key} = {value!r}")
    record = {"fingerprint": fingerprint, "applied": applied, "kept": kept, **extra}
    if path:
        if fingerprint is not None:
            _PLANNED_HERE.add(os.path.abspath(path))
        elif os.path.abspath(path) in _PLANNED_HERE and os.path.isfile(path):
            with open(path) as f:
                old = json.load(f)
            record = {**old, "fingerprint": old.get("fingerprint"),
                      "applied": {**old.get("applied", {}), **applied},
                      "kept": {**old.get("kept", {}), **kept}, **extra}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(record, f, indent=2)
    return record


def _plan_path(cfg):
    from detectron2.utils import comm

    return os.path.join(cfg.OUTPUT_DIR, "plan.json") if comm.is_main_process() else None


def _or_255(label):
    return 255 if label is None else label


def configure_from_data(cfg, explicit: Set[str]) -> dict:
    """Fingerprint DATASETS.TRAIN (registered) and apply the plan to ``cfg`` (not frozen); see the module."""
    from detectron2.data import DatasetCatalog

    from seg_d2.data.checks import dataset_ignore_label
    from seg_d2.data.fingerprint import fingerprint_dataset

    dicts = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]
    fp = fingerprint_dataset(dicts, image_format=cfg.INPUT.FORMAT, max_images=cfg.SEG_D2.AUTO_CONFIG.MAX_IMAGES,
                             num_classes=cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
                             ignore_label=_or_255(dataset_ignore_label(cfg.DATASETS.TRAIN)), seed=max(cfg.SEED, 0))
    logger.info(f"[auto-config] fingerprint of {list(cfg.DATASETS.TRAIN)} ({fp['sampled']} of {fp['images']} images): "
                f"{fp['short_side']['median']:.0f} x {fp['long_side']['median']:.0f} px (median short x long side), "
                f"{fp['channels']} channel(s), {fp['bit_depth']}-bit, mean {np.round(fp['intensity']['mean'], 2).tolist()}"
                f", std {np.round(fp['intensity']['std'], 2).tolist()}")
    return apply_auto_config(cfg, plan_from_fingerprint(cfg, fp), explicit, fp, _plan_path(cfg))


def measure_s_per_iter(trainer_cls, cfg, warmup: int = 2, timed: int = 5) -> float:
    """Seconds per training iteration of ``trainer_cls(cfg)`` (frozen cfg), over ``timed`` steps after ``warmup``;
    the probe's model is thrown away."""
    import time

    from detectron2.utils.events import EventStorage

    trainer = trainer_cls(cfg)
    with EventStorage(0):
        for _ in range(warmup):
            trainer._trainer.run_step()
        start = time.perf_counter()
        for _ in range(timed):
            trainer._trainer.run_step()
    return (time.perf_counter() - start) / timed


def configure_iterations(trainer_cls, cfg, explicit: Set[str]):
    """SEG_D2.AUTO_CONFIG.BUDGET_MINUTES > 0: SOLVER.MAX_ITER (and the schedule) from a measured s/iter; returns
    ``cfg`` (frozen), changed where the keys are not explicit."""
    s_per_iter = measure_s_per_iter(trainer_cls, cfg)
    plan = plan_iterations(cfg, s_per_iter)
    logger.info(f"[auto-config] {s_per_iter:.3f} s/iter measured: {cfg.SEG_D2.AUTO_CONFIG.BUDGET_MINUTES} min of "
                f"budget ({EVAL_SHARE:.0%} of it kept for the evaluation)")
    cfg = cfg.clone()
    cfg.defrost()
    apply_auto_config(cfg, plan, explicit, None, _plan_path(cfg), s_per_iter=s_per_iter)
    cfg.freeze()
    return cfg


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (list, tuple)) else value
