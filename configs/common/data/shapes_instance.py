# The generated shapes scenes as COCO instances (seg_d2_shapes_*: 4 shape classes; masks as polygons
# and RLE, hence bitmask), evaluated with bbox, segm and Boundary AP.
# The yaml twin: the INPUT settings of configs/Shapes-InstanceSegmentation/Base-Shapes-RCNN.yaml.
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)

from seg_d2.data import InstanceDatasetMapper  # detectron2's DatasetMapper with seg_d2's image reader
from seg_d2.evaluation import COCOBoundaryEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="seg_d2_shapes_train"),
    mapper=L(InstanceDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(128, 160, 192), max_size=320, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
        use_instance_mask=True,
        instance_mask_format="bitmask",
    ),
    total_batch_size=4,
    num_workers=2,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="seg_d2_shapes_val", filter_empty=False),
    mapper=L(InstanceDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=160, max_size=320)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=2,
)

dataloader.evaluator = L(COCOBoundaryEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference/${..test.dataset.names}",
)
