"""Train/test data loaders with the dataset mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``."""
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader

from .checks import check_sem_seg_model_and_data
from .rotated_mapper import RotatedDatasetMapper, uses_rotated_boxes
from .sem_seg_mapper import SemSegDatasetMapper

__all__ = ["DATASET_MAPPERS", "build_mapper", "build_train_loader", "build_test_loader"]

# INPUT.DATASET_MAPPER_NAME -> mapper class taking (cfg, is_train)
DATASET_MAPPERS = {
    "": DatasetMapper,  # detectron2's, for instance datasets (and the default)
    "default": DatasetMapper,
    "sem_seg": SemSegDatasetMapper,
    "rotated": RotatedDatasetMapper,  # rotated boxes (XYWHA), picked by default for "rotated_coco" datasets
}


def build_mapper(cfg, is_train: bool):
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name == "" and is_train and uses_rotated_boxes(cfg.DATASETS.TRAIN):
        name = "rotated"  # DatasetMapper would turn the rotated boxes into axis-aligned ones
    if name not in DATASET_MAPPERS:
        raise ValueError(f"Unknown INPUT.DATASET_MAPPER_NAME {name!r}: choose from {sorted(DATASET_MAPPERS)}")
    return DATASET_MAPPERS[name](cfg, is_train)


def build_train_loader(cfg):
    """detectron2's train loader with the configured mapper, once the model is known to fit the data."""
    check_sem_seg_model_and_data(cfg, cfg.DATASETS.TRAIN)
    return build_detection_train_loader(cfg, mapper=build_mapper(cfg, True))


def build_test_loader(cfg, dataset_name: str):
    """detectron2's test loader for ``dataset_name`` with the configured mapper, once the model is
    known to fit the data."""
    check_sem_seg_model_and_data(cfg, [dataset_name])
    return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, False))
