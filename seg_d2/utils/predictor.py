"""A config (yaml, or LazyConfig ``.py``) and its trained weights as a predictor of single images.

Like detectron2's ``DefaultPredictor``, with what seg_d2's tools need besides: LazyConfig files,
semantic configs that test at the original size (``INPUT.MIN_SIZE_TEST 0``), gray and 16-bit input
images, and clear errors for a config without weights, a missing weights file or weights that do not
fit the model.
"""
import logging
import os
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from detectron2.config import CfgNode, LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as d2_utils
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.modeling import build_model

from seg_d2.engine.checkpoint import IncompatibleWeightsError, SegD2Checkpointer, check_weight_shapes
from seg_d2.modeling import check_model_config

__all__ = [
    "SetupError", "is_lazy_config", "load_config", "config_datasets", "weights_key", "SegPredictor",
    "read_image", "image_to_rgb", "bgr_to_format", "ImageFormatMixin",
]

logger = logging.getLogger(__name__)


class SetupError(ValueError):
    """A config, weights file or input that a tool cannot use; the message names it."""


def is_lazy_config(path: str) -> bool:
    return str(path).endswith(".py")


def load_config(config_file: str, opts: Sequence[str] = ()):
    """A yaml config (seg_d2's keys + the file + ``opts`` as KEY VALUE pairs, as tools/train_net.py
    reads it: the datasets of ``SEG_D2.DATASETS`` registered, ``NUM_CLASSES`` 0 taken from the data) or
    a LazyConfig (the ``.py`` file + ``opts`` as key=value overrides). ``config_file`` is a file or one
    of seg_d2's configs by its path under configs/. ``MODEL.DEVICE`` (``train.device``) falls back from
    cuda to cpu where no GPU is visible."""
    from seg_d2.config import apply_cpu_fallback, get_cfg
    from seg_d2.data import register_datasets_from_config, set_num_classes_from_data
    from seg_d2.model_zoo import resolve_config_file

    try:
        path = resolve_config_file(config_file)
    except FileNotFoundError as e:
        raise SetupError(str(e)) from None
    opts = list(opts or [])
    if is_lazy_config(path):
        bad = [o for o in opts if "=" not in o]
        if bad:
            raise SetupError(f"{config_file} is a LazyConfig: give overrides as key=value, not {bad}")
        cfg = LazyConfig.apply_overrides(LazyConfig.load(path), opts)
        if "train" in cfg and "device" in cfg.train and not torch.cuda.is_available():
            cfg.train.device = "cpu" if str(cfg.train.device).startswith("cuda") else cfg.train.device
        return cfg
    cfg = get_cfg()
    try:
        cfg.merge_from_file(path)
    except (KeyError, ValueError, TypeError, AssertionError) as e:  # e.g. a key of another seg_d2 version
        raise SetupError(f"Cannot use config {config_file}: {e}") from None
    if len(opts) % 2:
        raise SetupError(f"Config overrides must be KEY VALUE pairs, got an odd number: {opts}")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, TypeError, AssertionError) as e:
        raise SetupError(f"Cannot apply --opts {opts} to {config_file}: {e}") from None
    apply_cpu_fallback(cfg)
    # as tools/train_net.py: the config's own datasets, then NUM_CLASSES 0 from them
    register_datasets_from_config(cfg)
    set_num_classes_from_data(cfg)
    return cfg


def _names(value) -> List[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def config_datasets(cfg, split: str) -> List[str]:
    """Dataset names of the ``split`` ("train" or "test") of a yaml or LazyConfig config."""
    if isinstance(cfg, CfgNode):
        return list(cfg.DATASETS.TRAIN if split == "train" else cfg.DATASETS.TEST)
    try:
        return _names(cfg.dataloader[split].dataset.names)
    except Exception:  # no such loader, or a dataset not given by names
        return []


def weights_key(cfg) -> str:
    return "MODEL.WEIGHTS" if isinstance(cfg, CfgNode) else "train.init_checkpoint"


def _weights(cfg) -> str:
    return cfg.MODEL.WEIGHTS if isinstance(cfg, CfgNode) else (cfg.train.get("init_checkpoint", "") or "")


def _output_dir(cfg) -> str:
    return cfg.OUTPUT_DIR if isinstance(cfg, CfgNode) else cfg.train.get("output_dir", "")


def _override_hint(cfg, key: str, value: str) -> str:
    return f"--opts {key} {value}" if isinstance(cfg, CfgNode) else f"--opts {key}={value}"


def read_image(path: str, format: str) -> np.ndarray:
    """An image file as (H, W, C) in the model's ``format``, by seg_d2's one image reader
    (:func:`seg_d2.data.image_io.read_image`: 8/16-bit, gray or colour, EXIF orientation applied as
    detectron2 does). Raises :class:`SetupError` naming a missing or unreadable file."""
    from seg_d2.data.image_io import read_image as read_data_image

    if not os.path.isfile(path):
        raise SetupError(f"Input image not found: {path}")
    try:
        return read_data_image(path, format, exif_transpose=True)
    except Exception as e:
        raise SetupError(f"Cannot read input image {path}: {e}") from None


def image_to_rgb(image: np.ndarray, format: str) -> np.ndarray:
    """An image in the model's ``format`` as RGB uint8 for drawing."""
    from .visualizer import to_uint8_rgb

    image = np.asarray(image)
    if format == "BGR":
        image = image[:, :, ::-1]
    elif format not in ("RGB", "L"):
        image = d2_utils.convert_image_to_rgb(image, format)
    return to_uint8_rgb(image)


def bgr_to_format(frame: np.ndarray, format: str) -> np.ndarray:
    """An OpenCV (BGR uint8) video frame in the model's ``format``."""
    if format == "BGR":
        return frame
    if format == "RGB":
        return np.ascontiguousarray(frame[:, :, ::-1])
    if format == "L":
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)[:, :, None]
    return d2_utils.convert_PIL_to_numpy(Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1])), format)


class ImageFormatMixin:
    """Image reading and conversions of a predictor whose model takes ``self.input_format`` images
    (shared by :class:`SegPredictor` and seg_d2.export's ``ExportedPredictor``, which tools/demo.py's
    drawing code both serve)."""

    input_format: str

    def read_image(self, path: str) -> np.ndarray:
        return read_image(path, self.input_format)

    def to_rgb(self, image: np.ndarray) -> np.ndarray:
        return image_to_rgb(image, self.input_format)

    def from_bgr(self, frame: np.ndarray) -> np.ndarray:
        return bgr_to_format(frame, self.input_format)


class SegPredictor(ImageFormatMixin):
    """Build the model of a loaded config, load its weights, and predict one image at a time.

    Inputs are preprocessed as the config's test loader does: ``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``
    resizing for yaml configs (none when MIN_SIZE_TEST is 0), ``dataloader.test.mapper.augmentations``
    for LazyConfigs; outputs are at the input's size (detectron2's postprocessing).

    Attributes:
        model, metadata (of the first test dataset), input_format, device.
    """

    def __init__(
        self,
        cfg,
        *,
        config_file: str = "",
        allow_random_weights: bool = False,
        score_threshold: Optional[float] = None,
    ):
        """
        Args:
            cfg: from :func:`load_config`.
            config_file: named in error messages.
            allow_random_weights: run without weights (``MODEL.WEIGHTS`` empty): only to check a
                pipeline, the predictions are meaningless.
            score_threshold: minimum score of instance predictions (R-CNN, RetinaNet, Panoptic FPN).
        """
        self.cfg = cfg
        self.config_file = config_file or "the config"
        self.lazy = not isinstance(cfg, CfgNode)
        if self.lazy:
            self._build_lazy(cfg, score_threshold)
        else:
            self._build_yaml(cfg, score_threshold)
        self.model.eval()
        self.metadata = MetadataCatalog.get(self.dataset_name) if self.dataset_name else Metadata(name="__none")
        self._load_weights(allow_random_weights)

    def _build_yaml(self, cfg, score_threshold):
        cfg = cfg.clone()
        cfg.defrost()
        if score_threshold is not None:
            cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_threshold
            cfg.MODEL.RETINANET.SCORE_THRESH_TEST = score_threshold
            cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = score_threshold
        self.cfg = cfg
        check_model_config(cfg)
        self.model = build_model(cfg)
        self.device = cfg.MODEL.DEVICE
        self.input_format = cfg.INPUT.FORMAT
        size = cfg.INPUT.MIN_SIZE_TEST
        self.augmentations = [T.ResizeShortestEdge([size, size], cfg.INPUT.MAX_SIZE_TEST)] if size > 0 else []
        names = config_datasets(cfg, "test") or config_datasets(cfg, "train")
        self.dataset_name = names[0] if names else None

    def _build_lazy(self, cfg, score_threshold):
        if score_threshold is not None:
            try:
                cfg.model.roi_heads.box_predictor.test_score_thresh = score_threshold
            except Exception:  # not an R-CNN: instances are filtered after prediction
                pass
        self.model = instantiate(cfg.model)
        self.device = cfg.train.device if "train" in cfg and "device" in cfg.train else "cpu"
        self.model.to(self.device)
        test = cfg.dataloader.test if "dataloader" in cfg and "test" in cfg.dataloader else None
        mapper = test.mapper if test is not None and "mapper" in test else {}
        self.augmentations = list(instantiate(mapper["augmentations"])) if "augmentations" in mapper else []
        self.input_format = mapper.get("image_format", None) or getattr(self.model, "input_format", "BGR")
        names = config_datasets(cfg, "test") or config_datasets(cfg, "train")
        self.dataset_name = names[0] if names else None

    def _load_weights(self, allow_random_weights: bool):
        key, path = weights_key(self.cfg), _weights(self.cfg)
        if not path:
            if allow_random_weights:
                logger.warning(f"{key} is empty: running with random weights, predictions are meaningless")
                return
            out = _output_dir(self.cfg)
            trained = os.path.join(out, "model_final.pth") if out else "path/to/model_final.pth"
            hint = _override_hint(self.cfg, key, trained)
            found = " (that file exists)" if out and os.path.isfile(trained) else ""
            raise SetupError(
                f"{self.config_file} gives no weights: {key} is empty. Pass the trained model, e.g. {hint}{found}"
            )
        if "://" not in path and not os.path.isfile(path):
            raise SetupError(f"Weights file not found: {path} (the {key} of {self.config_file})")
        # weights_only loading; pickles only where the config allows them (issue 14: unknown sources)
        allow_pickle = (self.cfg.SEG_D2.CHECKPOINT.ALLOW_PICKLE if isinstance(self.cfg, CfgNode)
                        else self.cfg.train.get("allow_pickle", False))
        checkpointer = SegD2Checkpointer(self.model, allow_pickle=allow_pickle)
        try:
            checkpoint = checkpointer._load_file(path)
        except Exception as e:
            raise SetupError(f"Cannot load weights file {path} ({key}): {e}") from None
        incompatible = checkpointer._load_model(checkpoint)
        try:
            check_weight_shapes(incompatible, path)  # e.g. a 3-class model under a 5-class config
        except IncompatibleWeightsError as e:
            raise SetupError(f"{e} (given: {self.config_file}, {key} {path})") from None
        total = len(self.model.state_dict())
        missing = list(incompatible.missing_keys)
        if total and len(missing) > total // 2:
            raise SetupError(
                f"Weights file {path} ({key}) does not fit the model of {self.config_file}: {len(missing)} of "
                f"{total} tensors are missing (e.g. {missing[:3]}). Was it trained with this config?"
            )
        checkpointer._log_incompatible_keys(incompatible)
        logger.info(f"Loaded weights {path}")

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> dict:
        """The model's outputs for one image (H, W, C) in ``input_format``: ``sem_seg`` (K, H, W)
        logits, ``instances`` or ``panoptic_seg``, at the image's size."""
        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        T.AugmentationList(self.augmentations)(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)).astype("float32"))
        return self.model([{"image": tensor, "height": height, "width": width}])[0]
