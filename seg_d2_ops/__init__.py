"""seg_d2's pure-PyTorch implementations of detectron2's compiled ops (``detectron2._C``).

detectron2 as provisioned by ``tools/install_detectron2.py`` has no C++ extension: its
``detectron2/_C`` is a thin shim that re-exports this package, so every detectron2 module that
does ``from detectron2 import _C`` runs these ops. The package exports every name the C++
extension of detectron2 v0.6 exported, plus the CPU ``roi_align`` that detectron2's ``ROIAlign``
uses on CPU tensors and the deformable convolutions its ``DeformConv`` layers call. It lives
outside ``seg_d2`` because importing ``seg_d2`` imports detectron2.
"""
import platform

import torch

from ._cocoeval import COCOevalAccumulate, COCOevalEvaluateImages, ImageEvaluation, InstanceAnnotation
from ._deform import (
    deform_conv,
    deform_conv_backward_filter,
    deform_conv_backward_input,
    deform_conv_forward,
    modulated_deform_conv,
    modulated_deform_conv_backward,
    modulated_deform_conv_forward,
)
from ._roi_align import roi_align
from ._rotated import box_iou_rotated, nms_rotated, roi_align_rotated_backward, roi_align_rotated_forward

# Read by detectron2's patched COCOEvaluator: False would make it use pycocotools' COCOeval.
HAS_FAST_COCOEVAL = True
# Marks these ops as the pure-PyTorch build (a compiled _C has no such attribute).
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
    # the names of detectron2 v0.6's C++ extension
    "COCOevalAccumulate",
    "COCOevalEvaluateImages",
    "ImageEvaluation",
    "InstanceAnnotation",
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
    # seg_d2's additions, read or called by its patched detectron2
    "HAS_FAST_COCOEVAL",
    "PURE_PYTORCH",
    "deform_conv",
    "modulated_deform_conv",
    "roi_align",
]
