#!/usr/bin/env python
"""Train and evaluate seg_d2 (and any detectron2) models.

Examples:
    python tools/train_net.py --config-file configs/Shapes-InstanceSegmentation/mask_rcnn_R_50_FPN_shapes.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --resume
    python tools/train_net.py --config-file ... --num-gpus 2   # 2 GPUs, or 2 CPU processes (GLOO) without GPUs
"""
import logging

import torch

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger
from detectron2.projects.deeplab import build_lr_scheduler

import seg_d2  # noqa: F401  (registers seg_d2's models and datasets)
from seg_d2 import add_seg_d2_config
from seg_d2.data import build_test_loader, build_train_loader, check_sem_seg_model_and_data
from seg_d2.evaluation import build_evaluator
from seg_d2.modeling.roi_heads import check_mask_scoring_config


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with evaluators picked by each dataset's ``evaluator_type``."""

    @classmethod
    def build_model(cls, cfg):
        check_mask_scoring_config(cfg)  # detectron2's own ROI heads would ignore MODEL.MASK_SCORING silently
        return super().build_model(cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        # INPUT.DATASET_MAPPER_NAME picks the mapper: detectron2's DatasetMapper by default.
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # detectron2's schedulers plus WarmupPolyLR (SOLVER.LR_SCHEDULER_NAME), from projects/deeplab.
        return build_lr_scheduler(cfg, optimizer)


def setup(args):
    """get_cfg -> add_seg_d2_config -> merge file -> merge opts -> freeze -> default_setup."""
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if cfg.SEG_D2.CPU_FALLBACK and cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="seg_d2")
    if cfg.MODEL.DEVICE == "cpu" and args.num_gpus > 1:
        logging.getLogger("seg_d2").info(
            f"No GPU: running {args.num_gpus} CPU processes of DistributedDataParallel over GLOO."
        )
    return cfg


def main(args):
    cfg = setup(args)
    # NUM_CLASSES vs the datasets' classes, ignore labels: fail now, not at iteration 0 or after training
    check_sem_seg_model_and_data(cfg)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
