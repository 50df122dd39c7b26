"""The detectron2 underneath: the v0.6 that seg_d2 provisions, or a compiled main.

Both report version 0.6, so every difference seg_d2 adapts to is told apart by feature, here and
nowhere else. Importing this module routes deformable convolution on CPU tensors to torchvision
where a compiled detectron2 cannot run it (see :func:`route_cpu_deform_conv`).
"""
import functools
import inspect
import logging

__all__ = [
    "is_pure_pytorch_build", "evaluate_predictions_on_coco", "restart_data_loader", "create_ddp_model",
    "route_cpu_deform_conv",
]


def is_pure_pytorch_build() -> bool:
    """Whether detectron2 is the build that tools/install_detectron2.py provisions (its ``_C`` is
    seg_d2_ops), rather than one compiled from source."""
    from detectron2 import _C

    return bool(getattr(_C, "PURE_PYTORCH", False))


def evaluate_predictions_on_coco(coco_gt, coco_results, iou_type, *, use_fast_impl: bool = True, **kwargs):
    """detectron2's ``_evaluate_predictions_on_coco``, whose way of choosing the COCOeval class differs:
    v0.6 takes ``use_fast_impl=``, main takes ``cocoeval_fn=``. Other keyword arguments pass through."""
    from detectron2.evaluation import coco_evaluation

    fn = coco_evaluation._evaluate_predictions_on_coco
    if "cocoeval_fn" in inspect.signature(fn).parameters:
        kwargs["cocoeval_fn"] = coco_evaluation.COCOeval_opt if use_fast_impl else coco_evaluation.COCOeval
    else:
        kwargs["use_fast_impl"] = use_fast_impl
    return fn(coco_gt, coco_results, iou_type, **kwargs)


def restart_data_loader(trainer) -> None:
    """Make a ``SimpleTrainer`` take its next batch from a new iterator over its ``data_loader`` (after the
    loader's sampler changed). main's ``_data_loader_iter`` is a lazy read-only property reset by
    ``reset_data_loader``; v0.6 holds the iterator in a plain attribute."""
    if hasattr(trainer, "reset_data_loader"):
        loader = trainer.data_loader
        trainer.reset_data_loader(lambda: loader)
    else:
        trainer._data_loader_iter = iter(trainer.data_loader)


def create_ddp_model(model, **kwargs):
    """detectron2's ``create_ddp_model``, which also works on CPU modules: main passes
    ``device_ids=[local_rank]``, which DistributedDataParallel refuses for a module on the CPU."""
    from detectron2.engine.defaults import create_ddp_model as d2_create_ddp_model

    param = next(model.parameters(), None)
    if "device_ids" not in kwargs and param is not None and param.device.type == "cpu":
        kwargs["device_ids"] = None
    return d2_create_ddp_model(model, **kwargs)


def _by_device(compiled, torchvision_based):
    @functools.wraps(torchvision_based)
    def deform(input, *args, **kwargs):
        return (torchvision_based if input.device.type == "cpu" else compiled)(input, *args, **kwargs)

    deform.seg_d2_cpu_route = True
    return deform


def route_cpu_deform_conv() -> None:
    """Run detectron2's ``DeformConv`` / ``ModulatedDeformConv`` on CPU tensors with torchvision's
    ``deform_conv2d`` (through seg_d2_ops, as the provisioned build does on every device).

    A compiled detectron2 main refuses CPU tensors with ``deformable_groups != 1`` (the
    ``MODEL.RESNETS.DEFORM_NUM_GROUPS`` of seg_d2's dconv configs), in any modulated layer
    (``MODEL.RESNETS.DEFORM_MODULATED``), and in every backward pass. CUDA tensors keep its kernels.
    Idempotent; nothing to do on the provisioned build.
    """
    from detectron2.layers import deform_conv as d2_deform

    if is_pure_pytorch_build() or getattr(d2_deform.deform_conv, "seg_d2_cpu_route", False):
        return
    import seg_d2_ops

    d2_deform.deform_conv = _by_device(d2_deform.deform_conv, seg_d2_ops.deform_conv)
    d2_deform.modulated_deform_conv = _by_device(d2_deform.modulated_deform_conv, seg_d2_ops.modulated_deform_conv)
    logging.getLogger(__name__).debug("detectron2's deformable convolution on CPU tensors: torchvision's deform_conv2d")


route_cpu_deform_conv()
