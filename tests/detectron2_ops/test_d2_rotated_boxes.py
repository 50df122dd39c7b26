"""detectron2 v0.6's ``test_iou_issue_2154`` and ``test_iou_issue_2167``, run on the provisioned detectron2.

Ported from facebookresearch/detectron2 v0.6, ``tests/structures/test_rotated_boxes.py::
TestRotatedBoxesLayer`` (pytest functions; the RotatedBoxes / reversed-order checks are added).
Nearly identical boxes must have IoU 1: the kernel before detectron2 PR #2178 missed crossings and
vertices on their almost coincident edges and returned 0.60 and 0.58. v0.6's kernel
(box_iou_rotated_utils.h) intersects around the boxes' mid-point and takes crossings and vertices
with a slack of EPS = 1e-5, which seg_d2_ops.box_iou_rotated follows (``_rotated._EPS``).
"""

import pytest
import torch

from detectron2.layers.rotated_boxes import pairwise_iou_rotated
from detectron2.structures import RotatedBoxes
from detectron2.structures import pairwise_iou_rotated as structures_pairwise_iou_rotated

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _check_iou_one(boxes1, boxes2):
    ious = pairwise_iou_rotated(boxes1, boxes2)
    expected_ious = torch.tensor([[1.0]], dtype=torch.float32)
    assert torch.allclose(ious.cpu(), expected_ious)
    # the same through the structures, either way round
    for a, b in ((boxes1, boxes2), (boxes2, boxes1)):
        ious = structures_pairwise_iou_rotated(RotatedBoxes(a), RotatedBoxes(b))
        assert torch.allclose(ious.cpu(), expected_ious)


@pytest.mark.parametrize("device", DEVICES)
def test_iou_issue_2154(device):
    boxes1 = torch.tensor(
        [
            [
                296.6620178222656,
                458.73883056640625,
                23.515729904174805,
                47.677001953125,
                0.08795166015625,
            ]
        ],
        device=device,
    )
    boxes2 = torch.tensor(
        [[296.66201, 458.73882000000003, 23.51573, 47.67702, 0.087951]],
        device=device,
    )
    _check_iou_one(boxes1, boxes2)


@pytest.mark.parametrize("device", DEVICES)
def test_iou_issue_2167(device):
    boxes1 = torch.tensor(
        [
            [
                2563.74462890625000000000,
                1436.79016113281250000000,
                2174.70336914062500000000,
                214.09500122070312500000,
                115.11834716796875000000,
            ]
        ],
        device=device,
    )
    boxes2 = torch.tensor(
        [
            [
                2563.74462890625000000000,
                1436.79028320312500000000,
                2174.70288085937500000000,
                214.09495544433593750000,
                115.11835479736328125000,
            ]
        ],
        device=device,
    )
    _check_iou_one(boxes1, boxes2)
