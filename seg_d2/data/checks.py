"""Build-time checks that a model and its datasets agree, and class counts taken from the data.

Without them a class-count mismatch surfaces late and obscurely: torch's "Target 4 is out of bounds"
at iteration 0, wrong metrics from ``--eval-only``, or a reshape error in evaluation after the whole
training; an unregistered dataset name gives a KeyError listing every other name.

- semantic models (SemanticSegmentor and subclasses): ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` equals the
  number of ``stuff_classes`` (:func:`check_sem_seg_model_and_data`);
- instance models (GeneralizedRCNN with ROI heads, RetinaNet): ``MODEL.ROI_HEADS.NUM_CLASSES`` (or
  ``MODEL.RETINANET.NUM_CLASSES``) equals the number of ``thing_classes``, the json's categories for a
  COCO dataset (:func:`check_instance_model_and_data`);
- NUM_CLASSES 0 means "from the data": :func:`set_num_classes_from_data` sets it.
"""
import difflib
import logging
import os
from typing import Iterable, List, Optional

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, PanopticFPN, RetinaNet, SemanticSegmentor

from .datasets.coco_instances import COCOFormatError, json_categories

__all__ = ["check_sem_seg_model_and_data", "check_instance_model_and_data", "check_model_and_data",
           "check_test_datasets_not_empty", "warn_if_data_and_input_sizes_disagree",
           "check_datasets_registered", "dataset_ignore_label", "dataset_thing_classes", "instance_num_classes_key",
           "generates_images", "get_cfg_key", "reads_label_maps", "set_cfg_key", "set_num_classes_from_data", "uses_sem_seg_model"]

_MAX_LISTED = 20
_FROM_DATA = "(0: taken from the data by tools/train_net.py, or seg_d2.data.set_num_classes_from_data)"


def uses_sem_seg_model(cfg) -> bool:
    """Whether ``MODEL.META_ARCHITECTURE`` is detectron2's SemanticSegmentor or PanopticFPN, or a subclass
    (such as SegD2SemanticSegmentor): a model with a per-pixel classifier of ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``
    outputs for the ``stuff_classes`` of its datasets (for PanopticFPN: "things" and the stuff classes)."""
    arch = _meta_arch(cfg)
    return isinstance(arch, type) and (issubclass(arch, (SemanticSegmentor, PanopticFPN)) or reads_label_maps(cfg))


def reads_label_maps(cfg) -> bool:
    """Whether the model takes the label maps as its input, in inference too (``reads_label_maps`` on the class:
    seg_d2's Pix2Pix generator): its test loaders read them, its class count is checked like a semantic model's."""
    return bool(getattr(_meta_arch(cfg), "reads_label_maps", False))


def generates_images(cfg) -> bool:
    """Whether the model paints images from label maps (``generates_images`` on the class: Pix2Pix): it is
    evaluated against the real images (L1, PSNR) and draws sample grids, not as a segmenter."""
    return bool(getattr(_meta_arch(cfg), "generates_images", False))


def _meta_arch(cfg):
    try:
        return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    except KeyError:
        return None


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
            f"model predicts MODEL.SEM_SEG_HEAD.NUM_CLASSES = {k}: set MODEL.SEM_SEG_HEAD.NUM_CLASSES {n}{binary}. "
            f"{_FROM_DATA}"
        )
    train = [name for name in dataset_names if name in cfg.DATASETS.TRAIN]
    for name in train:  # a panoptic set registered without its separated semantic maps has no semantic targets
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type", None) == "coco_panoptic_seg" and not meta.get("sem_seg_root", None):
            raise ValueError(
                f"Dataset '{name}' is panoptic without semantic maps (metadata sem_seg_root), so it cannot train "
                f"{cfg.MODEL.META_ARCHITECTURE}'s semantic head: register it with SEM_SEG_ROOT (--coco-panoptic NAME JSON "
                f"IMAGE_ROOT PANOPTIC_ROOT SEM_SEG_ROOT; tools/make_panoptic.py writes them in panoptic_semseg/).")
    ignore = dataset_ignore_label(train)
    if ignore is not None and ignore != ignore_value and cfg.INPUT.DATASET_MAPPER_NAME != "sem_seg":
        # only seg_d2's mapper remaps the dataset's ignore label: otherwise the loss trains on it
        raise ValueError(
            f"Dataset(s) {train} mark ignored pixels with {ignore} (metadata ignore_label) but "
            f"MODEL.SEM_SEG_HEAD.IGNORE_VALUE is {ignore_value}, and INPUT.DATASET_MAPPER_NAME "
            f"{cfg.INPUT.DATASET_MAPPER_NAME!r} does not remap labels: set INPUT.DATASET_MAPPER_NAME \"sem_seg\" "
            f"(it maps the dataset's ignore label to IGNORE_VALUE) or MODEL.SEM_SEG_HEAD.IGNORE_VALUE {ignore}."
        )


def _meta_architecture(cfg):
    try:
        arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    except KeyError:
        return None
    return arch if isinstance(arch, type) else None


def instance_num_classes_key(cfg) -> Optional[str]:
    """The config key of an instance model's class count: "MODEL.ROI_HEADS.NUM_CLASSES" for a
    GeneralizedRCNN (Faster/Mask R-CNN, BMask R-CNN; not an RPN-only model), "MODEL.RETINANET.NUM_CLASSES"
    for a RetinaNet; None for other models."""
    arch = _meta_architecture(cfg)
    if arch is None:
        return None
    if issubclass(arch, GeneralizedRCNN):
        return "MODEL.ROI_HEADS.NUM_CLASSES"
    if issubclass(arch, RetinaNet):
        return "MODEL.RETINANET.NUM_CLASSES"
    return None


def get_cfg_key(cfg, key: str):
    """The value of the dotted ``key`` ("MODEL.PIXEL_MEAN") in ``cfg``."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def set_cfg_key(cfg, key: str, value) -> None:
    """Set the dotted ``key`` of ``cfg`` (not frozen) to ``value``."""
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[last] = value


def dataset_thing_classes(name: str) -> Optional[List[str]]:
    """A dataset's ``thing_classes`` metadata, or for a COCO-json dataset not loaded yet (its metadata has
    ``json_file``, or ``source_json_file`` for a lenient one) its categories' names sorted by id, as
    detectron2's ``load_coco_json`` sets them; None if neither is known."""
    meta = MetadataCatalog.get(name)
    classes = meta.get("thing_classes", None)
    if classes is not None:
        return list(classes)
    json_file = meta.get("json_file", None) or meta.get("source_json_file", None)
    if json_file and os.path.isfile(json_file):
        try:
            return json_categories(json_file)  # parsed once per process, shared with loading
        except COCOFormatError:
            return None  # an invalid json: loading it reports the problem
    return None


def check_instance_model_and_data(cfg, dataset_names: Optional[Iterable[str]] = None) -> None:
    """Check that an instance model (see :func:`instance_num_classes_key`) predicts the classes of its
    datasets: NUM_CLASSES must equal the number of ``thing_classes`` (or json categories, see
    :func:`dataset_thing_classes`) of every dataset (default: DATASETS.TRAIN and DATASETS.TEST). Datasets
    whose classes are not known are not checked.

    Raises:
        ValueError: naming the dataset, its classes and the config key to change.
    """
    key = instance_num_classes_key(cfg)
    if key is None:
        return
    if dataset_names is None:
        dataset_names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    k = get_cfg_key(cfg, key)
    for name in dict.fromkeys(dataset_names):
        classes = dataset_thing_classes(name)
        if classes is None or len(classes) == k:
            continue
        raise ValueError(
            f"Dataset '{name}' has {len(classes)} categories (thing_classes {_classes(classes)}) but the model "
            f"predicts {key} = {k}: set {key} {len(classes)}. {_FROM_DATA}"
        )


def check_datasets_registered(cfg, dataset_names: Optional[Iterable[str]] = None) -> None:
    """Check that ``dataset_names`` (default: DATASETS.TRAIN and DATASETS.TEST) are registered, with an error
    that says how to register one (instead of detectron2's KeyError listing every registered name)."""
    registered = DatasetCatalog.list()
    if dataset_names is None:
        named = [(name, f"DATASETS.{key}") for key in ("TRAIN", "TEST") for name in cfg.DATASETS[key]]
    else:
        named = [(name, "DATASETS.TRAIN" if name in cfg.DATASETS.TRAIN else "DATASETS.TEST") for name in dataset_names]
    for name, key in named:
        if name in registered:
            continue
        close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"Dataset '{name}' of {key} is not registered.{hint} Register it from the command line of "
            f"tools/train_net.py with --coco-dataset {name} JSON IMAGE_ROOT (COCO instances), "
            f"--sem-seg-folder {name} IMAGE_DIR LABEL_DIR CLASSES (semantic label maps) or --dataset-module "
            f"FILE.py (your registration code), or with the config keys SEG_D2.DATASETS.COCO / SEM_SEG_FOLDER / "
            f"MODULES; from Python, before training, with seg_d2.data.datasets.register_coco_dataset or "
            f"register_sem_seg_folder. ({len(registered)} datasets are registered: "
            f"{', '.join(sorted(registered)[:5])}, ...)"
        )


def check_test_datasets_not_empty(cfg) -> None:
    """Load each dataset of DATASETS.TEST now and refuse an empty one, naming its file: a training run
    evaluates them only after its last iteration, where detectron2 stops with "Dataset '...' is empty!",
    which names no file, and the training time is lost."""
    for name in cfg.DATASETS.TEST:
        if len(DatasetCatalog.get(name)):
            continue
        meta = MetadataCatalog.get(name)
        source = next((meta.get(k) for k in ("source_json_file", "json_file", "sem_seg_root", "image_root")
                       if meta.get(k, None)), None)
        raise ValueError(f"Dataset '{name}' of DATASETS.TEST is empty" + (f": {source} holds no image" if source else "")
                         + ". Give it images, or leave it out of DATASETS.TEST.")


def check_model_and_data(cfg, dataset_names: Optional[Iterable[str]] = None) -> None:
    """All of the above for ``dataset_names`` (default: DATASETS.TRAIN and DATASETS.TEST): they are
    registered, and a semantic or instance model predicts their classes."""
    if dataset_names is not None:
        dataset_names = list(dataset_names)
    check_datasets_registered(cfg, dataset_names)
    check_sem_seg_model_and_data(cfg, dataset_names)
    check_instance_model_and_data(cfg, dataset_names)


def set_num_classes_from_data(cfg) -> None:
    """Set a class count left at 0 ("from the data") to the number of classes of the datasets.

    ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` 0 of a semantic model becomes the number of ``stuff_classes``, and
    the instance model's ``MODEL.ROI_HEADS.NUM_CLASSES`` (``MODEL.RETINANET.NUM_CLASSES``) 0 the number of
    ``thing_classes`` (a COCO json's categories), of DATASETS.TRAIN and DATASETS.TEST; ``cfg`` must not
    be frozen. Other values are left alone (the checks above compare them with the data).

    Raises:
        ValueError: the datasets disagree on the number of classes, or none of them has class metadata.
    """
    keys = []
    if uses_sem_seg_model(cfg):
        keys.append(("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "stuff_classes",
                     lambda n: MetadataCatalog.get(n).get("stuff_classes", None)))
    key = instance_num_classes_key(cfg)
    if key is not None:
        keys.append((key, "thing_classes", dataset_thing_classes))
    names = list(dict.fromkeys(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)))
    for key, what, classes_of in keys:
        if get_cfg_key(cfg, key) != 0:
            continue
        found = {name: classes_of(name) for name in names}
        found = {name: list(c) for name, c in found.items() if c is not None}
        counts = {len(c) for c in found.values()}
        if not found:
            raise ValueError(f"{key} 0 takes the number of classes from the data, but no dataset of DATASETS.TRAIN "
                             f"/ DATASETS.TEST {names} has {what} metadata: set {key} to the number of classes.")
        if len(counts) > 1:
            listed = "; ".join(f"'{n}': {len(c)} {_classes(c)}" for n, c in found.items())
            raise ValueError(f"{key} 0 takes the number of classes from the data, but the datasets disagree: "
                             f"{listed}. Use datasets with the same classes.")
        n = counts.pop()
        set_cfg_key(cfg, key, n)
        logging.getLogger(__name__).info(f"{key} 0 -> {n}: the {what} of {', '.join(found)}")


_FAR = 4.0  # a factor beyond which sizes are "far" from what the config expects


def warn_if_data_and_input_sizes_disagree(cfg, max_images: int = 500) -> List[str]:
    """Log (and return) a warning for each way the training data falls far outside the config's sizes:

    - the images are resized by more than 4x (up or down) to ``INPUT.MIN_SIZE_TRAIN``;
    - for R-CNN models, the objects' sizes after that resize (sqrt of the box area, middle 90 %) lie
      beyond ``MODEL.ANCHOR_GENERATOR.SIZES`` (below a quarter of the smallest anchor, or above 2x the largest);
    - an image holds more objects than ``TEST.DETECTIONS_PER_IMAGE`` can return.

    A recipe tuned for small toy images (the shapes configs: 160-320 px, anchors 16-256, 20 detections) then
    says so on real photos instead of training quietly at the wrong scale. Reads at most ``max_images``
    dataset dicts of DATASETS.TRAIN (their height, width and boxes; no image file)."""
    dicts = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)][:max_images]
    sized = [d for d in dicts if d.get("height") and d.get("width")]
    if not sized:
        return []
    warnings, logger = [], logging.getLogger(__name__)
    short = np.array([min(d["height"], d["width"]) for d in sized], dtype=float)
    long_ = np.array([max(d["height"], d["width"]) for d in sized], dtype=float)
    target = float(np.median(cfg.INPUT.MIN_SIZE_TRAIN))
    scale = np.minimum(target / short, cfg.INPUT.MAX_SIZE_TRAIN / long_) if cfg.INPUT.MAX_SIZE_TRAIN else target / short
    median_scale = float(np.median(scale))
    if not 1 / _FAR <= median_scale <= _FAR:
        warnings.append(
            f"The training images are {int(np.median(short))} px on their short side (median), and "
            f"INPUT.MIN_SIZE_TRAIN {tuple(cfg.INPUT.MIN_SIZE_TRAIN)} (MAX_SIZE_TRAIN {cfg.INPUT.MAX_SIZE_TRAIN}) "
            f"resizes them {median_scale:.2g}x: set INPUT.MIN_SIZE_TRAIN / MIN_SIZE_TEST (and MAX_SIZE_*) near "
            f"your images' size, or take a recipe for images like yours (configs/OwnData-*).")
    if instance_num_classes_key(cfg) == "MODEL.ROI_HEADS.NUM_CLASSES":
        sizes, counts = [], []
        for d, k in zip(sized, scale):
            annos = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0) and "bbox" in a]
            counts.append(len(annos))
            for a in annos:
                x0, y0, x1, y1 = BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS),
                                                 BoxMode.XYXY_ABS)
                sizes.append(float(np.sqrt(max(x1 - x0, 0) * max(y1 - y0, 0))) * k)
        anchors = [a for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES for a in level]
        if sizes and anchors:
            lo, mid, hi = np.percentile(sizes, [5, 50, 95])
            if mid < min(anchors) / _FAR or mid > 2 * max(anchors):
                warnings.append(
                    f"The training objects measure {lo:.0f}-{hi:.0f} px (median {mid:.0f}; sqrt of the box area, "
                    f"after resizing) but MODEL.ANCHOR_GENERATOR.SIZES spans {min(anchors)}-{max(anchors)} px: "
                    f"set anchor sizes that cover your objects.")
        if counts and max(counts) > cfg.TEST.DETECTIONS_PER_IMAGE:
            warnings.append(
                f"A training image holds {max(counts)} objects, more than TEST.DETECTIONS_PER_IMAGE "
                f"{cfg.TEST.DETECTIONS_PER_IMAGE} returns: raise it (COCO's recipe: 100).")
    for w in warnings:
        logger.warning(w)
    return warnings
