"""Train/test data loaders with the dataset mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``."""
import logging

from detectron2.data import (
    DatasetMapper, build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts,
)

from .checks import check_model_and_data
from .instance_mapper import InstanceDatasetMapper
from .rotated_mapper import RotatedDatasetMapper, uses_rotated_boxes
from .sem_seg_mapper import SemSegDatasetMapper
from .samplers import WeightedDatasetsSampler, check_train_weights

__all__ = ["DATASET_MAPPERS", "build_mapper", "build_train_loader", "build_test_loader"]

# INPUT.DATASET_MAPPER_NAME -> mapper class taking (cfg, is_train)
DATASET_MAPPERS = {
    "": InstanceDatasetMapper,  # detectron2's, with seg_d2's image reader: instance datasets (and the default)
    "default": InstanceDatasetMapper,
    "sem_seg": SemSegDatasetMapper,
    "rotated": RotatedDatasetMapper,  # rotated boxes (XYWHA), picked by default for "rotated_coco" datasets
}


def _mapper_name(cfg, is_train: bool) -> str:
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name == "" and is_train and uses_rotated_boxes(cfg.DATASETS.TRAIN):
        name = "rotated"  # DatasetMapper would turn the rotated boxes into axis-aligned ones
    if name not in DATASET_MAPPERS:
        raise ValueError(f"Unknown INPUT.DATASET_MAPPER_NAME {name!r}: choose from {sorted(DATASET_MAPPERS)}")
    return name


def build_mapper(cfg, is_train: bool, **kwargs):
    """The mapper of INPUT.DATASET_MAPPER_NAME; ``kwargs`` override its config-derived arguments."""
    return DATASET_MAPPERS[_mapper_name(cfg, is_train)](cfg, is_train, **kwargs)


def build_train_loader(cfg):
    """detectron2's train loader with the configured mapper, once the model is known to fit the data.

    With ``SEG_D2.DATASETS.TRAIN_WEIGHTS``, each dataset of DATASETS.TRAIN is drawn at its share, whatever its
    size (:class:`~seg_d2.data.samplers.WeightedDatasetsSampler`).

    Instance masks: when INPUT.MASK_FORMAT is "polygon" (detectron2's default and the COCO configs') and
    the training data has RLE masks (COCO "counts"/"size" dicts, such as tools/png_instances_to_coco.py
    writes), the masks are loaded as "bitmask" instead, with one log line (polygon masks would fail with
    detectron2's "Failed to use mask_format=='polygon'"). Polygons load as bitmasks too.
    """
    check_model_and_data(cfg, cfg.DATASETS.TRAIN)
    weights = check_train_weights(cfg)
    name = _mapper_name(cfg, True)
    polygons = cfg.MODEL.MASK_ON and cfg.INPUT.MASK_FORMAT == "polygon" and issubclass(DATASET_MAPPERS[name], DatasetMapper)
    if not polygons and not weights:
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, True))

    def load(names):  # as detectron2's build_detection_train_loader loads them
        return get_detection_dataset_dicts(
            names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None)

    kwargs, loader_kwargs = {}, {}
    if weights:  # each dataset its share of the samples (SEG_D2.DATASETS.TRAIN_WEIGHTS)
        parts = [load([n]) for n in cfg.DATASETS.TRAIN]
        dataset = [d for part in parts for d in part]
        loader_kwargs["sampler"] = WeightedDatasetsSampler([len(p) for p in parts], weights)
        logging.getLogger(__name__).info("Training sampled by SEG_D2.DATASETS.TRAIN_WEIGHTS: " + ", ".join(
            f"'{n}' {100 * w / sum(weights):.0f} % ({len(p)} images)" for n, w, p in zip(cfg.DATASETS.TRAIN, weights, parts)))
    else:
        dataset = load(cfg.DATASETS.TRAIN)  # loaded once here to look at the masks
    if not polygons:
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, True), dataset=dataset, **loader_kwargs)
    if any(isinstance(a.get("segmentation"), dict) for d in dataset for a in d.get("annotations", ())):
        logging.getLogger(__name__).info(
            f"INPUT.MASK_FORMAT 'polygon' -> 'bitmask': the masks of {list(cfg.DATASETS.TRAIN)} include RLE, which "
            f"polygons cannot hold (set INPUT.MASK_FORMAT \"bitmask\" to say so in the config)."
        )
        kwargs["instance_mask_format"] = "bitmask"
    return build_detection_train_loader(cfg, mapper=build_mapper(cfg, True, **kwargs), dataset=dataset, **loader_kwargs)


def build_test_loader(cfg, dataset_name: str):
    """detectron2's test loader for ``dataset_name`` with the configured mapper, once the model is
    known to fit the data."""
    check_model_and_data(cfg, [dataset_name])
    return build_detection_test_loader(cfg, dataset_name, mapper=build_mapper(cfg, False))
