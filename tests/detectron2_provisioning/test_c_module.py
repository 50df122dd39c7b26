"""detectron2._C, as provisioned, exports every name of v0.6's C++ extension."""
import pytest

from detectron2 import _C

from tests.conftest import provisioned_only

pytestmark = provisioned_only

CPP_EXPORTS = [
    "get_compiler_version", "get_cuda_version", "has_cuda", "box_iou_rotated", "nms_rotated",
    "roi_align_rotated_forward", "roi_align_rotated_backward", "deform_conv_forward",
    "deform_conv_backward_input", "deform_conv_backward_filter", "modulated_deform_conv_forward",
    "modulated_deform_conv_backward", "COCOevalAccumulate", "COCOevalEvaluateImages",
    "InstanceAnnotation", "ImageEvaluation",
]


@pytest.mark.parametrize("name", CPP_EXPORTS)
def test_exports(name):
    assert callable(getattr(_C, name))


def test_c_is_a_shim_onto_seg_d2_ops():
    import seg_d2_ops

    for name in CPP_EXPORTS + ["roi_align", "deform_conv", "modulated_deform_conv"]:
        assert getattr(_C, name) is getattr(seg_d2_ops, name), name


def test_every_detectron2_module_imports():
    import detectron2.evaluation.fast_eval_api  # noqa: F401
    import detectron2.export  # noqa: F401
    import detectron2.layers  # noqa: F401
    import detectron2.layers.deform_conv  # noqa: F401
    import detectron2.layers.roi_align_rotated  # noqa: F401
    import detectron2.layers.rotated_boxes  # noqa: F401
    import detectron2.modeling  # noqa: F401
    import detectron2.utils.collect_env as collect_env

    assert "Compiler" in collect_env.collect_env_info()  # read from _C.get_compiler_version()


def test_version_functions_tell_the_truth():
    assert _C.has_cuda() is False  # no CUDA kernels were compiled
    assert _C.get_cuda_version() == "not available"
    assert "pure PyTorch" in _C.get_compiler_version()
