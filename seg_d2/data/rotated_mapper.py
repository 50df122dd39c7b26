"""Dataset mapper for rotated-box datasets (``bbox_mode`` XYWHA_ABS), e.g. ``seg_d2_shapes_rotated_*``.

detectron2's ``DatasetMapper`` converts every box to an axis-aligned XYXY one; this mapper applies the
image's augmentation to the rotated boxes instead (``apply_rotated_box``: HFlip, Resize and NoOp have
rules for them in detectron2) and builds ``gt_boxes`` as ``RotatedBoxes``.
"""
from typing import Sequence

import numpy as np

from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode

from .instance_mapper import InstanceDatasetMapper

__all__ = ["RotatedDatasetMapper", "uses_rotated_boxes"]

ROTATED_EVALUATOR_TYPE = "rotated_coco"


def uses_rotated_boxes(dataset_names: Sequence[str]) -> bool:
    """Whether the datasets are rotated-box ones (metadata ``evaluator_type`` "rotated_coco").

    Raises:
        ValueError: rotated-box and axis-aligned datasets are mixed.
    """
    rotated = {n: MetadataCatalog.get(n).get("evaluator_type") == ROTATED_EVALUATOR_TYPE for n in dataset_names}
    if len(set(rotated.values())) > 1:
        raise ValueError(
            f"Datasets {list(dataset_names)} mix rotated-box ones "
            f"{[n for n, r in rotated.items() if r]} with axis-aligned ones: train them separately."
        )
    return any(rotated.values())


class RotatedDatasetMapper(InstanceDatasetMapper):
    """``InstanceDatasetMapper`` for rotated boxes: ``instances`` get ``gt_boxes`` (RotatedBoxes) and ``gt_classes``."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        if cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON:
            raise ValueError("RotatedDatasetMapper maps boxes only: set MODEL.MASK_ON and MODEL.KEYPOINT_ON False")
        if cfg.INPUT.CROP.ENABLED and is_train:
            raise ValueError("INPUT.CROP cannot be used with rotated boxes: detectron2 has no rotated-box rule for crops")
        return super().from_config(cfg, is_train)

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        annos = [a for a in dataset_dict.pop("annotations") if a.get("iscrowd", 0) == 0]
        for k, a in enumerate(annos):
            if a["bbox_mode"] != BoxMode.XYWHA_ABS or len(a["bbox"]) != 5:
                raise ValueError(
                    f"{dataset_dict.get('file_name')!r}, annotation #{k}: RotatedDatasetMapper expects "
                    f"5-value boxes in BoxMode.XYWHA_ABS, got {a['bbox_mode']} {list(a['bbox'])}"
                )
        boxes = np.asarray([a["bbox"] for a in annos], dtype=np.float64).reshape(-1, 5)
        try:
            boxes = transforms.apply_rotated_box(boxes)
        except (AttributeError, NotImplementedError) as e:  # fvcore: a transform without the rule
            raise ValueError(
                f"Cannot apply {transforms} to rotated boxes ({e}): detectron2 has rules for HFlip, Resize "
                "and NoOp only"
            ) from None
        annos = [{"bbox": b.tolist(), "category_id": a["category_id"]} for b, a in zip(boxes, annos)]
        instances = utils.annotations_to_instances_rotated(annos, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
