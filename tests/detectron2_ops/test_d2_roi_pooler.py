"""detectron2 v0.6's ``test_scriptability_cpu``, run on the provisioned detectron2.

Ported from facebookresearch/detectron2 v0.6, ``tests/modeling/test_roi_pooler.py::TestROIPooler::
test_scriptability_cpu`` (seeded here). A scripted ROIPooler runs torchvision's ``roi_align``
(``ROIAlign.forward`` skips the CPU fast path when scripting); the eager one runs
``seg_d2_ops.roi_align`` on CPU tensors (tools/detectron2_patches.py, ``roi_align_cpu_fast_path``).
A deployed TorchScript model must give exactly what eager gives, so seg_d2_ops' forward is
torchvision's op (only its backward is its own). On a compiled detectron2 both run torchvision's op.
"""

import torch

from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes


def random_boxes(num_boxes, max_coord=100):
    """detectron2.utils.testing.random_boxes (v0.6) on CPU: that module imports pkg_resources,
    missing beside detectron2 main here."""
    boxes = torch.rand(num_boxes, 4) * (max_coord * 0.5)
    boxes.clamp_(min=1.0)
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def _scriptability(device, requires_grad=False):
    torch.manual_seed(0)
    pooler_resolution = 14
    canonical_level = 4
    canonical_scale_factor = 2**canonical_level
    pooler_scales = (1.0 / canonical_scale_factor,)
    sampling_ratio = 0

    N, C, H, W = 2, 4, 10, 8
    N_rois = 10
    std = 11
    mean = 0
    feature = (torch.rand(N, C, H, W) - 0.5) * 2 * std + mean

    features = [feature.to(device).requires_grad_(requires_grad)]

    rois = []
    for _ in range(N):
        boxes = random_boxes(N_rois, W * canonical_scale_factor)

        rois.append(Boxes(boxes).to(device))

    roialignv2_pooler = ROIPooler(
        output_size=pooler_resolution,
        scales=pooler_scales,
        sampling_ratio=sampling_ratio,
        pooler_type="ROIAlignV2",
    )

    roialignv2_out = roialignv2_pooler(features, rois)
    scripted_roialignv2_out = torch.jit.script(roialignv2_pooler)(features, rois)
    assert torch.equal(roialignv2_out, scripted_roialignv2_out)


def test_scriptability_cpu():
    _scriptability(device="cpu")


def test_scriptability_cpu_with_grad():
    # Not upstream: features that need a gradient (training, or eval without no_grad) take the
    # autograd path of seg_d2_ops.roi_align; its forward must still be the scripted one.
    _scriptability(device="cpu", requires_grad=True)
