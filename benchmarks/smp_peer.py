#!/usr/bin/env python
"""segmentation_models_pytorch's Unet as a peer of seg_d2's U-Net, trained and scored by seg_d2 itself.

``SmpUnetPeer`` (a detectron2 meta-architecture, built from ``MODEL.META_ARCHITECTURE "SmpUnetPeer"``) wraps
``smp.Unet(encoder_name=MODEL.SMP_PEER.ENCODER, encoder_weights=None, in_channels=len(MODEL.PIXEL_MEAN),
classes=MODEL.SEM_SEG_HEAD.NUM_CLASSES)``, in the shape of detectron2's ``SemanticSegmentor``: inputs normalised
with PIXEL_MEAN/PIXEL_STD, batched and padded (bottom/right) to a multiple of 32 (2 ** encoder depth, what smp's
Unet needs) with the targets padded with IGNORE_VALUE, a dict of losses in training and ``[{"sem_seg": logits}]``
cropped and resized by ``sem_seg_postprocess`` in inference (a binary model's one logit z as ``[0, z]``, like
seg_d2's heads). Its loss is seg_d2's own: ``seg_d2.modeling.sem_seg_losses.SemSegLoss`` built from the same
``MODEL.SEM_SEG_HEAD`` keys (LOSSES, LOSS_WEIGHTS, IGNORE_VALUE, CLASS_WEIGHTS, ...) times LOSS_WEIGHT, exactly as
seg_d2's ``UNetHead`` applies it (CE + Dice, 1:1, ignore 255 in the shapes configs).

``smp_peer_cfg(unet_config)`` loads a seg_d2 U-Net config and changes MODEL.META_ARCHITECTURE only, so that data,
mapper, sizes, solver, schedule, seed, evaluation stay those of the U-Net it is compared with; then
``tools/train_net.py``'s Trainer trains and evaluates it (mIoU, mDice, mBoundaryIoU from seg_d2's evaluator).

Needs ``pip install -c requirements/base.txt -r requirements/bench.txt`` (not part of seg_d2's test set-up).
Smoke test (a few iterations of both models on the shapes, one thread, timed alternately):

    PYTHONPATH=. DETECTRON2_DATASETS=datasets python benchmarks/smp_peer.py --iters 20
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Optional, Sequence

import torch
from torch import nn

# seg_d2 before detectron2: it registers seg_d2's models and datasets (and silences detectron2's import warnings)
import seg_d2  # noqa: F401

from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from seg_d2.modeling.head_inputs import two_class_logits
from seg_d2.modeling.sem_seg_losses import SemSegLoss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET_R50 = os.path.join(REPO, "configs", "Shapes-SemanticSegmentation", "unet_R_50_scratch_bs8_600it.yaml")
SMP_DEFAULT_DECODER_CHANNELS = [256, 128, 64, 32, 16]  # smp.Unet's default (segmentation-models-pytorch 0.6.0)

__all__ = ["SmpUnetPeer", "add_smp_peer_config", "smp_peer_cfg", "unet_cfg"]


def add_smp_peer_config(cfg: CfgNode) -> CfgNode:
    """Add ``MODEL.SMP_PEER`` (ENCODER, DECODER_CHANNELS) to ``cfg`` unless there; returns ``cfg``."""
    if "SMP_PEER" not in cfg.MODEL:
        cfg.MODEL.SMP_PEER = CfgNode()
        # smp encoder name (smp.Unet's encoder_name); always built from scratch (encoder_weights=None)
        cfg.MODEL.SMP_PEER.ENCODER = "resnet50"
        # decoder channels, deepest first; their number is the encoder depth (5: stride 32)
        cfg.MODEL.SMP_PEER.DECODER_CHANNELS = list(SMP_DEFAULT_DECODER_CHANNELS)
    return cfg


class SmpUnetPeer(nn.Module):
    """``smp.Unet`` from scratch as a detectron2 semantic segmentation model, trained with seg_d2's loss."""

    @configurable
    def __init__(
        self,
        *,
        encoder_name: str,
        decoder_channels: Sequence[int],
        in_channels: int,
        num_classes: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        loss: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = 255,
    ):
        """
        Args:
            encoder_name, decoder_channels: smp.Unet's; the encoder depth is ``len(decoder_channels)``.
            in_channels: input channels (``len(MODEL.PIXEL_MEAN)``).
            num_classes: classes (1 = binary: one sigmoid logit, output as ``[0, z]`` in inference).
            pixel_mean, pixel_std: input normalisation.
            loss: maps (logits, targets) to a dict of losses (seg_d2's SemSegLoss).
            loss_weight: multiplies every loss.
            ignore_value: label left out of the loss (and padding of the targets).
        """
        super().__init__()
        import segmentation_models_pytorch as smp  # only here: seg_d2's own set-up does not install it

        depth = len(decoder_channels)
        self.net = smp.Unet(encoder_name=encoder_name, encoder_depth=depth, encoder_weights=None,
                            decoder_channels=tuple(decoder_channels), in_channels=in_channels, classes=num_classes)
        self.size_divisibility = 2 ** depth
        self.loss = loss
        self.loss_weight = loss_weight
        self.ignore_value = ignore_value
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        h, p = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.SMP_PEER
        if h.DEEP_SUPERVISION:
            raise ValueError("SmpUnetPeer has no deep supervision (smp.Unet has no auxiliary decoder outputs): "
                             "set MODEL.SEM_SEG_HEAD.DEEP_SUPERVISION False to compare like with like")
        return {
            "encoder_name": p.ENCODER,
            "decoder_channels": list(p.DECODER_CHANNELS),
            "in_channels": len(cfg.MODEL.PIXEL_MEAN),
            "num_classes": h.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "loss": SemSegLoss(cfg),  # what UNetHead gets (seg_d2.modeling.head_inputs.common_head_args)
            "loss_weight": h.LOSS_WEIGHT,
            "ignore_value": h.IGNORE_VALUE,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs):
        """detectron2's SemanticSegmentor contract: a dict of losses in training, else one
        ``{"sem_seg": K x height x width logits}`` per input."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        images = ImageList.from_tensors(images, self.size_divisibility)
        logits = self.net(images.tensor)
        if self.training:
            targets = [x["sem_seg"].to(self.device) for x in batched_inputs]
            targets = ImageList.from_tensors(targets, self.size_divisibility, self.ignore_value).tensor
            return {k: v * self.loss_weight for k, v in self.loss(logits, targets).items()}
        logits = two_class_logits(logits)
        return [
            {"sem_seg": sem_seg_postprocess(r, size, x.get("height", size[0]), x.get("width", size[1]))}
            for r, x, size in zip(logits, batched_inputs, images.image_sizes)
        ]


if "SmpUnetPeer" not in META_ARCH_REGISTRY:  # this file may be imported twice (as __main__ and as smp_peer)
    META_ARCH_REGISTRY.register(SmpUnetPeer)


def unet_cfg(unet_config: str = UNET_R50, opts: Sequence[str] = ()) -> CfgNode:
    """A seg_d2 U-Net config, as tools/train_net.py's setup makes it (seg_d2's get_cfg, file, ``opts``, datasets
    registered, NUM_CLASSES 0 taken from the data, model/data checks), plus the MODEL.SMP_PEER keys; not frozen."""
    from seg_d2 import get_cfg
    from seg_d2.data import (check_datasets_registered, check_model_and_data, register_datasets_from_config,
                             set_num_classes_from_data)

    cfg = add_smp_peer_config(get_cfg())
    cfg.merge_from_file(unet_config)
    cfg.merge_from_list(list(opts))
    register_datasets_from_config(cfg)
    check_datasets_registered(cfg)
    set_num_classes_from_data(cfg)
    check_model_and_data(cfg)  # with the U-Net's meta-architecture: seg_d2 checks semantic models only
    return cfg


def smp_peer_cfg(unet_config: str = UNET_R50, opts: Sequence[str] = ()) -> CfgNode:
    """:func:`unet_cfg` with MODEL.META_ARCHITECTURE "SmpUnetPeer", every other key unchanged; not frozen."""
    cfg = unet_cfg(unet_config, opts)
    cfg.MODEL.META_ARCHITECTURE = "SmpUnetPeer"
    return cfg


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def summarize(results) -> dict:
    r = results.get("sem_seg", {}) if results else {}
    return {k: r.get(k) for k in ("mIoU", "mDice", "mBoundaryIoU", "pACC")}


def train_alternately(trainer_cls, cfgs, warmup_frac: float = 0.1):
    """Train the frozen ``cfgs`` (name -> cfg, same MAX_ITER) with ``trainer_cls`` one iteration each in turn, so
    that the machine's load hits them alike. Each run keeps its own RNG states (Python, NumPy, torch: seeded with
    its SEED before its trainer is built, swapped in around its steps) and its own EventStorage, so it draws the
    same initialisation, batches and augmentations as alone. Returns name -> train s/iter (hooks included, after
    ``warmup_frac`` of the iterations), parameters, each loss term's mean over the last fifth, final results."""
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage

    from seg_d2.engine import get_rng_state, set_rng_state

    trainers, rng, steps = {}, {}, {}
    for name, cfg in cfgs.items():
        seed_all_rng(None if cfg.SEED < 0 else cfg.SEED)  # what default_setup does (SEED < 0: random, differs)
        trainers[name] = t = trainer_cls(cfg)
        t.resume_or_load(resume=False)
        t.iter = t.start_iter = 0
        t.storage = EventStorage(0)
        rng[name], steps[name] = get_rng_state(), []
    iters = {t.max_iter for t in trainers.values()}
    if len(iters) != 1:
        raise ValueError(f"train_alternately needs one SOLVER.MAX_ITER, got {sorted(iters)}")
    max_iter = iters.pop()

    def in_own_context(name, fn):
        set_rng_state(rng[name])
        try:
            with trainers[name].storage:
                return fn()
        finally:
            rng[name] = get_rng_state()

    for name, t in trainers.items():
        in_own_context(name, t.before_train)
    for it in range(max_iter):
        for name, t in trainers.items():
            def step():
                t.iter = it
                start = time.perf_counter()
                t.before_step()
                t.run_step()
                t.after_step()
                steps[name].append(time.perf_counter() - start)
            in_own_context(name, step)
    out = {}
    for name, t in trainers.items():
        t.iter = max_iter
        start = time.perf_counter()
        in_own_context(name, t.after_train)  # the final evaluation (EvalHook) and checkpoint
        timed = steps[name][int(warmup_frac * max_iter):]
        last = max(1, max_iter // 5)
        out[name] = {
            "train_s_per_iter": statistics.fmean(timed),
            "train_s_per_iter_median": statistics.median(timed),
            "after_train_s": time.perf_counter() - start,
            "params": count_params(t.model),
            "losses_last_fifth": {k: statistics.fmean(v for v, _ in h.values()[-last:])
                                  for k, h in t.storage.histories().items() if k.startswith("loss_")},
            "results": summarize(getattr(t, "_last_eval_results", None)),
        }
    return out


def smoke(iters: int = 20, batch: int = 2, out_dir: str = "/tmp/smp_peer_smoke", order: str = "alternate",
          unet_config: str = UNET_R50, seed: int = 0, extra_opts: Optional[Sequence[str]] = None) -> dict:
    """Train seg_d2's U-Net (``unet_config`` unchanged) and SmpUnetPeer (the same config, MODEL.META_ARCHITECTURE
    swapped) for ``iters`` iterations of ``batch`` images on CPU, evaluate both, and return their figures."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import paired_runs  # benchmarks/paired_runs.py

    opts = ["SOLVER.MAX_ITER", str(iters), "SOLVER.IMS_PER_BATCH", str(batch), "DATALOADER.NUM_WORKERS", "0",
            "MODEL.DEVICE", "cpu", "SEED", str(seed), "SOLVER.CHECKPOINT_PERIOD", str(10 ** 9),
            "TEST.VIS_NUM_IMAGES", "0",
            *(extra_opts or [])]
    cfgs = {"seg_d2_unet": unet_cfg(unet_config, opts), "smp_unet": smp_peer_cfg(unet_config, opts)}
    for name, cfg in cfgs.items():
        cfg.OUTPUT_DIR = os.path.join(out_dir, name)
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        cfg.freeze()
    trainer_cls = paired_runs.load_train_net().Trainer
    if order == "alternate":
        return train_alternately(trainer_cls, cfgs)
    results = {}
    for name, cfg in cfgs.items():  # back to back
        r = paired_runs.train_and_record(trainer_cls, cfg, iters, (), "cpu", summarize)
        results[name] = {k: r[k] for k in ("train_s_per_iter", "params", "losses_last_fifth", "results", "wall_s")}
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2, help="SOLVER.IMS_PER_BATCH")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    parser.add_argument("--order", choices=("alternate", "sequential"), default="alternate",
                        help="alternate: one iteration of each in turn; sequential: one run after the other")
    parser.add_argument("--config", default=UNET_R50, help="the seg_d2 U-Net config both models take")
    parser.add_argument("--seed", type=int, default=0, help="SEED of both runs")
    parser.add_argument("--out", default="/tmp/smp_peer_smoke")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config options for both models")
    args = parser.parse_args(argv)
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO, "datasets"))
    torch.set_num_threads(args.threads)
    from detectron2.utils.logger import setup_logger

    setup_logger(name="seg_d2")
    res = smoke(args.iters, args.batch, args.out, args.order, args.config, args.seed, args.opts)
    print(json.dumps(res, indent=2))
    names = list(res)
    print(f"\n{args.order}, {args.iters} iterations x {args.batch} images, {args.threads} thread(s):")
    print(f"{'model':<14}{'params':>12}{'s/iter':>9}{'mIoU':>8}{'mDice':>8}{'mBIoU':>8}")
    for n in names:
        r, q = res[n], res[n]["results"]
        print(f"{n:<14}{r['params']:>12,}{r['train_s_per_iter']:>9.3f}"
              + "".join(f"{q[k]:>8.2f}" if q.get(k) is not None else f"{'-':>8}"
                        for k in ("mIoU", "mDice", "mBoundaryIoU")))
    return res


if __name__ == "__main__":
    main()
