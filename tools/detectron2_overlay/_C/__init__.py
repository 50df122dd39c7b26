"""Pure-Python stand-in for detectron2's compiled extension ``detectron2._C``.

seg_d2's provisioning (``tools/install_detectron2.py``) copies this package into the detectron2
wheel it builds, so every detectron2 module that does ``from detectron2 import _C`` imports on a
machine without a compiler. It exports every name the C++ extension of detectron2 v0.6 exported.
"""
import platform

import torch

from ._cocoeval import COCOevalAccumulate, COCOevalEvaluateImages, ImageEvaluation, InstanceAnnotation
from ._deform import (
    deform_conv_backward_filter,
    deform_conv_backward_input,
    deform_conv_forward,
    modulated_deform_conv_backward,
    modulated_deform_conv_forward,
)
from ._rotated import box_iou_rotated, nms_rotated, roi_align_rotated_backward, roi_align_rotated_forward

# Read by detectron2's patched COCOEvaluator: False would make it use pycocotools' COCOeval.
HAS_FAST_COCOEVAL = True
# Marks this module as the pure-PyTorch build (a compiled _C has no such attribute).
PURE_PYTORCH = True


def get_compiler_version() -> str:
    """No C++ compiler was involved: report the interpreter that runs the ops instead."""
    return f"none (pure PyTorch ops, Python {platform.python_version()}, torch {torch.__version__})"


def get_cuda_version() -> str:
    """No CUDA code was compiled; the ops run on CUDA tensors through torch itself."""
    return "not available"


def has_cuda() -> bool:
    """Whether this extension was compiled with CUDA kernels (it was not)."""
    return False


__all__ = [
    "COCOevalAccumulate",
    "COCOevalEvaluateImages",
    "HAS_FAST_COCOEVAL",
    "ImageEvaluation",
    "InstanceAnnotation",
    "PURE_PYTORCH",
    "box_iou_rotated",
    "deform_conv_backward_filter",
    "deform_conv_backward_input",
    "deform_conv_forward",
    "get_compiler_version",
    "get_cuda_version",
    "has_cuda",
    "modulated_deform_conv_backward",
    "modulated_deform_conv_forward",
    "nms_rotated",
    "roi_align_rotated_backward",
    "roi_align_rotated_forward",
]
