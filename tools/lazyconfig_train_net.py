#!/usr/bin/env python
"""Train and evaluate LazyConfig (python) configs, such as configs/Shapes-*/*.py.

Modelled on detectron2's tools/lazyconfig_train_net.py: the config's ``model``, ``optimizer``,
``lr_multiplier`` and ``dataloader.{train,test,evaluator}`` are instantiated, and ``train`` (see
configs/common/train.py) holds the rest. seg_d2 adds: ``import seg_d2`` (models and datasets),
``train.device`` falling back to CPU without a GPU, ``train.clip_gradients`` (the yaml configs'
SOLVER.CLIP_GRADIENTS), seg_d2's atomic, safely loaded checkpoints and non-finite loss guard (seg_d2.engine;
``train.allow_pickle`` and ``train.max_nonfinite_skips`` as the yaml configs' SEG_D2.CHECKPOINT.ALLOW_PICKLE
and SEG_D2.SOLVER.MAX_NONFINITE_SKIPS), and, for configs without ``dataloader.evaluator``, the evaluator
named by the test dataset's ``evaluator_type`` (as tools/train_net.py).

Examples:
    python tools/lazyconfig_train_net.py \
        --config-file configs/Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.py
    python tools/lazyconfig_train_net.py --config-file CONFIG.py --eval-only train.init_checkpoint=model_final.pth
    python tools/lazyconfig_train_net.py --config-file CONFIG.py --num-gpus 2 train.max_iter=1000
"""
import logging
import os
import sys

import torch

# seg_d2 before detectron2: its import silences the torch.jit deprecation warnings of detectron2's and fvcore's imports
import seg_d2  # noqa: F401  (registers seg_d2's models and datasets)

from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm

from seg_d2.compat import create_ddp_model
from seg_d2.engine import GuardedTrainer, SegD2Checkpointer, launch  # launch: ends its process groups

logger = logging.getLogger("detectron2")


def build_evaluator(cfg):
    """``dataloader.evaluator``, or seg_d2's evaluator for the test dataset's ``evaluator_type``."""
    if "evaluator" in cfg.dataloader:
        return instantiate(cfg.dataloader.evaluator)
    from seg_d2.evaluation import build_evaluator as build_by_type

    names = cfg.dataloader.test.dataset.names
    name = names if isinstance(names, str) else names[0]
    return build_by_type(cfg, name, os.path.join(cfg.train.output_dir, "inference", name))


def do_test(cfg, model):
    if "test" not in cfg.dataloader:
        logger.info("No dataloader.test in the config: nothing to evaluate")
        return {}
    ret = inference_on_dataset(model, instantiate(cfg.dataloader.test), build_evaluator(cfg))
    if comm.is_main_process() and ret:
        print_csv_format(ret)
    return ret


def build_optimizer(cfg, model):
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_gradients", None)
    if clip and clip.get("enabled", False):
        solver = CfgNode({"SOLVER": {"CLIP_GRADIENTS": {
            "ENABLED": True, "CLIP_TYPE": clip.get("clip_type", "value"),
            "CLIP_VALUE": float(clip.get("clip_value", 1.0)), "NORM_TYPE": float(clip.get("norm_type", 2.0)),
        }}})
        optimizer = maybe_add_gradient_clipping(solver, optimizer)
    return optimizer


def do_train(args, cfg):
    model = instantiate(cfg.model)
    logger.info("Model:\n{}".format(model))
    model.to(cfg.train.device)
    optim = build_optimizer(cfg, model)
    train_loader = instantiate(cfg.dataloader.train)

    model = create_ddp_model(model, **cfg.train.ddp)
    amp = cfg.train.amp.enabled and str(cfg.train.device).startswith("cuda")
    if cfg.train.amp.enabled and not amp:
        logger.warning("train.amp.enabled needs CUDA: training in full precision on " + str(cfg.train.device))
    # as tools/train_net.py: a loss guard naming the non-finite term, atomic and safely loaded checkpoints
    trainer = AMPTrainer(model, train_loader, optim) if amp else GuardedTrainer(
        model, train_loader, optim, max_nonfinite_skips=cfg.train.get("max_nonfinite_skips", 0))
    checkpointer = SegD2Checkpointer(model, cfg.train.output_dir, trainer=trainer,
                                     allow_pickle=cfg.train.get("allow_pickle", False))
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            # period 0: evaluate once, after training
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    # The checkpoint stores the iteration that just finished: resume at the next one.
    start_iter = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def setup(args):
    if not os.path.isfile(args.config_file):
        sys.exit(f"lazyconfig_train_net.py: error: config file not found: {args.config_file}")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    if str(cfg.train.device).startswith("cuda") and not torch.cuda.is_available():
        cfg.train.device = "cpu"
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        weights = cfg.train.init_checkpoint
        if not weights:
            raise SystemExit(f"--eval-only needs weights: train.init_checkpoint is empty in {args.config_file}; "
                             f"pass train.init_checkpoint=path/to/model_final.pth")
        if "://" not in weights and not os.path.isfile(weights):
            raise SystemExit(f"Weights file not found: {weights} (train.init_checkpoint)")
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_ddp_model(model)
        SegD2Checkpointer(model, allow_pickle=cfg.train.get("allow_pickle", False)).load(weights)
        return do_test(cfg, model)
    return do_train(args, cfg)


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
