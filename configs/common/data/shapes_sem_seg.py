# The generated shapes scenes as label maps (seg_d2_shapes_sem_seg_*: background + 4 shapes), read
# by seg_d2's semantic mapper; evaluated with mIoU, fwIoU, mACC, pACC, Dice and Boundary IoU.
# The yaml twin: INPUT.DATASET_MAPPER_NAME "sem_seg" and the INPUT settings of
# configs/Shapes-SemanticSegmentation/*_scratch_bs8_600it.yaml.
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts

from seg_d2.data import SemSegDatasetMapper
from seg_d2.evaluation import SemSegBoundaryEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="seg_d2_shapes_sem_seg_train"),
    mapper=L(SemSegDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(112, 128, 144, 160), max_size=320, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True, vertical=False),
        ],
        image_format="BGR",
        ignore_label=255,  # the model's (MODEL.SEM_SEG_HEAD.IGNORE_VALUE)
        num_classes=None,  # set to the model's to check label values
    ),
    total_batch_size=8,
    num_workers=2,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="seg_d2_shapes_sem_seg_val", filter_empty=False),
    mapper=L(SemSegDatasetMapper)(
        is_train=False,
        augmentations=[],  # evaluated at the original size (INPUT.MIN_SIZE_TEST 0)
        image_format="${...train.mapper.image_format}",
        ignore_label="${...train.mapper.ignore_label}",
    ),
    num_workers=2,
)

dataloader.evaluator = L(SemSegBoundaryEvaluator)(
    dataset_name="${..test.dataset.names}",
    distributed=True,
    output_dir="${...train.output_dir}/inference/${..test.dataset.names}",
)
