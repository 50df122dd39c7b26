#!/usr/bin/env python
"""Train and evaluate seg_d2 (and any detectron2) models.

Examples:
    python tools/train_net.py --config-file configs/Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file ... --resume
    python tools/train_net.py --config-file ... --num-gpus 2   # 2 GPUs, or 2 CPU processes (GLOO) without GPUs

Your own data, no Python needed (see README, "Use your own data"):
    python tools/train_net.py --config-file configs/Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml \\
        --coco-dataset my_train train.json images/ --coco-dataset my_val val.json images/ \\
        DATASETS.TRAIN "('my_train',)" DATASETS.TEST "('my_val',)" MODEL.ROI_HEADS.NUM_CLASSES 0

--config-file takes a file, or one of seg_d2's configs by its path under configs/ from any folder.
"""
import logging
import os
import weakref

# seg_d2 before detectron2: its import silences the torch.jit deprecation warnings of detectron2's and fvcore's imports
import seg_d2  # noqa: F401  (registers seg_d2's models and datasets)

import detectron2.utils.comm as comm
from detectron2.engine import AMPTrainer, DefaultTrainer, default_argument_parser, default_setup
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation import verify_results
from detectron2.utils.logger import setup_logger
from detectron2.projects.deeplab import build_lr_scheduler

from seg_d2 import apply_cpu_fallback, get_cfg, model_zoo
from seg_d2.compat import create_ddp_model, restart_data_loader
from seg_d2.data import (
    add_dataset_arguments, build_test_loader, build_train_loader, check_datasets_registered, check_model_and_data,
    check_test_datasets_not_empty, generates_images, merge_dataset_arguments, register_datasets_from_config,
    restore_config_options, set_num_classes_from_data, warn_if_data_and_input_sizes_disagree,
)
from seg_d2.engine import (
    GuardedTrainer, ResumableDataStream, SampleGrids, SegD2Checkpointer, configure_from_data, configure_iterations,
    explicit_keys, get_rng_state, launch, set_rng_state,  # launch: detectron2's, ending its process groups
)
from seg_d2.evaluation import build_evaluator_with_visualization
from seg_d2.solver import build_optimizer
from seg_d2.modeling import check_model_config


class Trainer(DefaultTrainer):
    """detectron2's DefaultTrainer with evaluators picked by each dataset's ``evaluator_type``, and made to
    survive: atomic, safely loaded checkpoints with a fallback on resume (``SegD2Checkpointer``), a loss
    guard naming the non-finite term (``GuardedTrainer``), and an exact ``--resume``: the checkpoints hold
    the RNG states and the data stream's seed, and the stream continues after the finished iterations."""

    def __init__(self, cfg):  # DefaultTrainer.__init__, with seg_d2's checkpointer and training step
        TrainerBase.__init__(self)
        logger = logging.getLogger("detectron2")
        if not logger.isEnabledFor(logging.INFO):  # setup_logger is not called for d2
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self.data_stream = ResumableDataStream(data_loader)
        model = create_ddp_model(model, broadcast_buffers=False)
        if cfg.SOLVER.AMP.ENABLED:  # its GradScaler skips the steps of non-finite gradients itself
            self._trainer = AMPTrainer(model, data_loader, optimizer)
        else:
            self._trainer = GuardedTrainer(model, data_loader, optimizer,
                                           max_nonfinite_skips=cfg.SEG_D2.SOLVER.MAX_NONFINITE_SKIPS,
                                           last_checkpoint=self._last_checkpoint)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SegD2Checkpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self),
                                              allow_pickle=cfg.SEG_D2.CHECKPOINT.ALLOW_PICKLE)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self._resumed_rng, self._resumed_data = None, {}
        self.register_hooks(self.build_hooks())

    def _last_checkpoint(self) -> str:
        return self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else ""

    def resume_or_load(self, resume=True):
        super().resume_or_load(resume=resume)
        if self.start_iter > 0:  # resumed: the data stream continues after the batches of iterations 0..iter
            self.data_stream.resume(self._resumed_data, num_batches=self.start_iter)
            # a new iterator: the old one's workers (if any) hold the old sampler
            restart_data_loader(self._trainer)

    def train(self):
        if self._resumed_rng is not None:
            if comm.get_world_size() == 1:
                set_rng_state(self._resumed_rng)
            else:  # only process 0's states are saved (the checkpoint is written there)
                logging.getLogger("seg_d2").info("Resumed RNG states: process 0 continues its own, the others "
                                                 "restart from their seed")
                if comm.is_main_process():
                    set_rng_state(self._resumed_rng)
        return super().train()

    def state_dict(self):
        ret = super().state_dict()
        # detectron2 v0.6's DefaultTrainer leaves the optimizer out of its checkpoints (a resumed run restarts
        # SGD momentum / Adam moments, and trains its first iteration at the base LR)
        ret["_trainer"] = self._trainer.state_dict()
        ret["rng"] = get_rng_state()
        ret["data_stream"] = self.data_stream.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        self._resumed_rng = state_dict.get("rng")
        self._resumed_data = state_dict.get("data_stream", {})

    def build_hooks(self):
        hooks = super().build_hooks()
        p = self.cfg.MODEL.PIX2PIX
        if generates_images(self.cfg) and p.SAMPLE_PERIOD > 0 and self.cfg.DATASETS.TEST:
            # a generator's progress, seen: label | generated | real grids in OUTPUT_DIR/samples
            hooks.insert(-1, SampleGrids(self.cfg, self.cfg.DATASETS.TEST[0], p.SAMPLE_PERIOD, p.SAMPLE_IMAGES,
                                         os.path.join(self.cfg.OUTPUT_DIR, "samples")))
        return hooks

    @classmethod
    def build_model(cls, cfg):
        check_model_config(cfg)  # e.g. MODEL.MASK_SCORING with detectron2's ROI heads would be ignored silently
        return super().build_model(cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        # metrics by evaluator_type, plus TEST.VIS_NUM_IMAGES drawn predictions and a per-class CSV
        return build_evaluator_with_visualization(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        # INPUT.DATASET_MAPPER_NAME picks the mapper: detectron2's DatasetMapper by default.
        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_optimizer(cls, cfg, model):
        # SOLVER.OPTIMIZER: detectron2's SGD, or Adam (the shapes quick-start recipe)
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        # detectron2's schedulers plus WarmupPolyLR (SOLVER.LR_SCHEDULER_NAME), from projects/deeplab. Steps past
        # MAX_ITER never come in a shortened run (the README's $QUICK): dropped, without detectron2's warning.
        steps = tuple(s for s in cfg.SOLVER.STEPS if s <= cfg.SOLVER.MAX_ITER)
        if steps != tuple(cfg.SOLVER.STEPS):
            cfg = cfg.clone()
            cfg.defrost()
            cfg.SOLVER.STEPS = steps
        return build_lr_scheduler(cfg, optimizer)


def setup(args):
    """seg_d2.get_cfg -> merge file -> merge opts -> dataset flags -> CPU fallback -> register the datasets ->
    NUM_CLASSES 0 from the data -> freeze -> default_setup."""
    args.config_file = model_zoo.resolve_config_file(args.config_file)  # a file, or configs/... from any folder
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    merge_dataset_arguments(cfg, args)  # --coco-dataset, --sem-seg-folder, --coco-panoptic, --dataset-module -> SEG_D2.DATASETS
    apply_cpu_fallback(cfg)
    # seg_d2's log first: what the registration and NUM_CLASSES 0 say goes to the console and OUTPUT_DIR/log.txt
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="seg_d2")
    register_datasets_from_config(cfg)  # in every process (launch spawns workers that run setup again)
    check_datasets_registered(cfg)  # a misspelt name: "Did you mean ...?" before anything reads its metadata
    set_num_classes_from_data(cfg)  # MODEL.{SEM_SEG_HEAD,ROI_HEADS}.NUM_CLASSES 0 -> the datasets' class count
    if getattr(args, "auto_config", False):  # (args of detectron2's own parser lack the flag)
        cfg.SEG_D2.AUTO_CONFIG.ENABLED = True
    if cfg.SEG_D2.AUTO_CONFIG.ENABLED and not args.eval_only:  # the training set's fingerprint -> a plan
        configure_from_data(cfg, explicit_keys(args.config_file, args.opts))
    cfg.freeze()
    default_setup(cfg, args)
    if cfg.MODEL.DEVICE == "cpu" and args.num_gpus > 1:
        logging.getLogger("seg_d2").info(
            f"No GPU: running {args.num_gpus} CPU processes of DistributedDataParallel over GLOO."
        )
    return cfg


def main(args):
    cfg = setup(args)
    # datasets registered, NUM_CLASSES vs the datasets' classes, ignore labels: fail now, not at iteration 0
    # or after training (--eval-only: the test datasets only)
    check_model_and_data(cfg, cfg.DATASETS.TEST if args.eval_only else None)
    check_test_datasets_not_empty(cfg)  # a training run evaluates them after its last iteration: check now
    if args.eval_only:
        model = Trainer.build_model(cfg)
        # evaluating weights that do not fit the config is an error; fine-tuning (training) skips those tensors
        SegD2Checkpointer(model, save_dir=cfg.OUTPUT_DIR, allow_pickle=cfg.SEG_D2.CHECKPOINT.ALLOW_PICKLE,
                          strict_shapes=True).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    if comm.is_main_process():
        warn_if_data_and_input_sizes_disagree(cfg)  # e.g. a toy-shapes recipe on real photos
    if cfg.SEG_D2.AUTO_CONFIG.ENABLED and cfg.SEG_D2.AUTO_CONFIG.BUDGET_MINUTES > 0:  # iterations for the budget
        cfg = configure_iterations(Trainer, cfg, explicit_keys(args.config_file, args.opts))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    """detectron2's default_argument_parser plus seg_d2's dataset flags (seg_d2.data.add_dataset_arguments) and
    --auto-config."""
    parser = add_dataset_arguments(default_argument_parser(__doc__))
    parser.add_argument("--auto-config", action="store_true",
                        help="configure normalisation, sizes and batch from the training set's fingerprint "
                             "(SEG_D2.AUTO_CONFIG.*; explicit values win; the plan goes to OUTPUT_DIR/plan.json)")
    return parser


def parse_args(argv=None):
    parser = argument_parser()
    args = restore_config_options(parser.parse_args(argv))  # the KEY VALUE options --coco-panoptic's nargs took
    flags = [o for o in args.opts if o.startswith("--")]
    if flags:  # after the first KEY VALUE pair everything is an option: a flag there would be merged as a key
        parser.error(f"{flags[0]} comes after the KEY VALUE options: put the flags (--config-file, --coco-dataset, "
                     f"...) first, then the KEY VALUE options.")
    return args


if __name__ == "__main__":
    args = parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
