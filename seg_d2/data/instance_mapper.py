"""detectron2's ``DatasetMapper`` for instance datasets, reading images with seg_d2's reader."""
import copy

import numpy as np
import torch

from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import read_image
from .sem_seg_io import read_label_map

__all__ = ["InstanceDatasetMapper"]


class _WritableSegmentation(T.NoOpTransform):
    """A last transform for the annotations: bitmasks come out writable. detectron2's resize of a bitmask returns
    PIL's read-only buffer, and torch.from_numpy (annotations_to_instances) warns about every such array."""

    def apply_segmentation(self, segmentation):
        return np.require(segmentation, requirements="W")


class InstanceDatasetMapper(DatasetMapper):
    """``DatasetMapper`` (same config, arguments and output) whose images come from
    :func:`seg_d2.data.image_io.read_image` with EXIF orientation applied, as detectron2 does: 16-bit
    images are scaled to [0, 255] instead of saturating, gray ones replicated, CMYK/palette/RGBA converted,
    and a missing, truncated or undecodable file raises :class:`~seg_d2.data.image_io.DataFileError`
    naming it (detectron2's PIL error, "image file is truncated", does not)."""

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], self.image_format, exif_transpose=True)
        utils.check_image_size(dataset_dict, image)
        sem_seg_gt = read_label_map(dataset_dict.pop("sem_seg_file_name")) if "sem_seg_file_name" in dataset_dict \
            else None
        # the rest as DatasetMapper.__call__ (detectron2 v0.6)
        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        super()._transform_annotations(dataset_dict, transforms + T.TransformList([_WritableSegmentation()]),
                                       image_shape)
