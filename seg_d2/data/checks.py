"""Build-time checks that a semantic segmentation model and its datasets agree.

Without them a class-count mismatch surfaces late and obscurely: torch's "Target 4 is out of bounds"
at iteration 0, wrong metrics from ``--eval-only``, or a reshape error in evaluation after the whole
training.
"""
from typing import Iterable, Optional

from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor

__all__ = ["check_sem_seg_model_and_data", "dataset_ignore_label", "uses_sem_seg_model"]

_MAX_LISTED = 20


def uses_sem_seg_model(cfg) -> bool:
    """Whether ``MODEL.META_ARCHITECTURE`` is detectron2's SemanticSegmentor or a subclass of it
    (such as SegD2SemanticSegmentor): a per-pixel classifier with ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``
    outputs for the ``stuff_classes`` of its datasets."""
    try:
        arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    except KeyError:
        return False
    return isinstance(arch, type) and issubclass(arch, SemanticSegmentor)


def _classes(classes) -> str:
    listed = ", ".join(map(repr, classes[:_MAX_LISTED]))
    return f"[{listed}{f', ... ({len(classes) - _MAX_LISTED} more)' if len(classes) > _MAX_LISTED else ''}]"


def dataset_ignore_label(dataset_names: Iterable[str]) -> Optional[int]:
    """The ``ignore_label`` metadata (default 255) shared by ``dataset_names``; None if there are none.

    Raises:
        ValueError: the datasets have different ignore labels (one label map value cannot mean
            "ignore" in one dataset and be checked as a class index in another).
    """
    labels = {name: int(MetadataCatalog.get(name).get("ignore_label", 255)) for name in dataset_names}
    if len(set(labels.values())) > 1:
        raise ValueError(
            f"The datasets of DATASETS.TRAIN have different ignore labels (metadata 'ignore_label'): "
            f"{labels}. seg_d2's semantic mapper maps one dataset ignore label to "
            f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE: register them with the same ignore_label."
        )
    return next(iter(labels.values()), None)


def check_sem_seg_model_and_data(cfg, dataset_names: Optional[Iterable[str]] = None) -> None:
    """Check that a semantic segmentation model fits the classes of its datasets.

    For a SemanticSegmentor (see :func:`uses_sem_seg_model`), each dataset (default: DATASETS.TRAIN
    and DATASETS.TEST) with ``stuff_classes`` metadata must have MODEL.SEM_SEG_HEAD.NUM_CLASSES
    classes; NUM_CLASSES 1 (one sigmoid foreground logit) goes with 2 classes (background,
    foreground). MODEL.SEM_SEG_HEAD.IGNORE_VALUE must not be a class index. The train datasets must
    share one ``ignore_label``, equal to IGNORE_VALUE unless INPUT.DATASET_MAPPER_NAME is "sem_seg"
    (which remaps it). Other models, and datasets without ``stuff_classes`` (for the class count),
    are not checked.

    Raises:
        ValueError: naming the dataset, its classes or ignore label, and the config key to change.
    """
    if not uses_sem_seg_model(cfg):
        return
    if dataset_names is None:
        dataset_names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    dataset_names = list(dict.fromkeys(dataset_names))
    k, ignore_value = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    if 0 <= ignore_value < max(k, 2):  # binary: labels 0 and 1
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE {ignore_value} is a class of the model "
            f"(MODEL.SEM_SEG_HEAD.NUM_CLASSES {k}): that class would never be learnt. Use a value outside "
            f"0..{max(k, 2) - 1}, such as {255 if k <= 255 else 65535}."
        )
    for name in dataset_names:
        classes = MetadataCatalog.get(name).get("stuff_classes", None)
        if classes is None:
            continue
        n = len(classes)
        if k == n or (k == 1 and n == 2):
            continue
        binary = " (or 1 for a binary model: one sigmoid foreground logit)" if n == 2 else ""
        raise ValueError(
            f"Dataset '{name}' has {n} classes (metadata stuff_classes {_classes(list(classes))}) but the "
            f"model predicts MODEL.SEM_SEG_HEAD.NUM_CLASSES = {k}: set MODEL.SEM_SEG_HEAD.NUM_CLASSES {n}{binary}."
        )
    train = [name for name in dataset_names if name in cfg.DATASETS.TRAIN]
    ignore = dataset_ignore_label(train)
    if ignore is not None and ignore != ignore_value and cfg.INPUT.DATASET_MAPPER_NAME != "sem_seg":
        # only seg_d2's mapper remaps the dataset's ignore label: otherwise the loss trains on it
        raise ValueError(
            f"Dataset(s) {train} mark ignored pixels with {ignore} (metadata ignore_label) but "
            f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE is {ignore_value}, and INPUT.DATASET_MAPPER_NAME "
            f"{cfg.INPUT.DATASET_MAPPER_NAME!r} does not remap labels: set INPUT.DATASET_MAPPER_NAME \"sem_seg\" "
            f"(it maps the dataset's ignore label to IGNORE_VALUE) or MODEL.SEM_SEG_HEAD.IGNORE_VALUE {ignore}."
        )
