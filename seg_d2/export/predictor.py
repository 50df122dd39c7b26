"""Run an exported model (TorchScript with torch alone, ONNX with onnxruntime) like the eager model.

:class:`ExportedPredictor` has the interface of :class:`seg_d2.utils.predictor.SegPredictor`
(``read_image``, ``to_rgb``, ``metadata``, ``device``, ``__call__(image) -> outputs``), so that
``tools/deploy/run_exported.py`` draws with the demo's own code. It does outside the graph what the
eager model does around its network: the test-time resize, sliding windows and TTA of semantic models
(:mod:`seg_d2.modeling.sem_seg_inference`), the resize of the logits to the original size, and
detectron2's ``detector_postprocess`` of instances (boxes rescaled, masks pasted).
"""
import json
import logging
import os
from typing import Callable, List, Optional

import numpy as np
import torch

from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.catalog import Metadata
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Instances

from seg_d2.modeling.sem_seg_inference import sliding_window_inference, tta_inference
from seg_d2.utils.predictor import ImageFormatMixin, SetupError

from .exporter import EXPORT_INFO, model_file_name
from .instance import outputs_to_instances

__all__ = ["ExportedPredictor", "load_exported"]

logger = logging.getLogger(__name__)


def load_exported(path: str, input_style: str = "tensor") -> Callable[[torch.Tensor], List[torch.Tensor]]:
    """A function image ``(C, H, W)`` float32 -> list of output tensors, for ``model.ts`` (torch.jit.load)
    or ``model.onnx`` (an onnxruntime CPU session). ``input_style`` "dict": detectron2's scripted R-CNN,
    called as ``model(({"image": x},))``, which returns a dict of the Instances fields."""
    if not os.path.isfile(path):
        raise SetupError(f"Exported model not found: {path}")
    if path.endswith(".onnx"):
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise SetupError(f"onnxruntime cannot load {path}: {e}") from None
        name = session.get_inputs()[0].name

        def run_onnx(image: torch.Tensor) -> List[torch.Tensor]:
            return [torch.from_numpy(x) for x in session.run(None, {name: image.numpy()})]

        return run_onnx
    try:
        module = torch.jit.load(path, map_location="cpu")
    except Exception as e:
        raise SetupError(f"torch.jit.load cannot load {path}: {e}") from None

    @torch.no_grad()
    def run_torchscript(image: torch.Tensor) -> List[torch.Tensor]:
        if input_style == "dict":
            return module(({"image": image},))[0]
        out = module(image)
        return list(out) if isinstance(out, (tuple, list)) else [out]

    return run_torchscript


class ExportedPredictor(ImageFormatMixin):
    """One exported model (the folder that ``tools/deploy/export_model.py`` wrote, or its model file
    with ``export.json`` beside it) as a predictor of single images (H, W, C) in ``input_format``.

    Outputs are the eager model's: ``{"sem_seg": K x H x W logits}`` or ``{"instances": Instances}``
    at the image's size.
    """

    def __init__(self, path: str, fmt: Optional[str] = None):
        """
        Args:
            path: the export folder, or its model.ts / model.onnx.
            fmt: "torchscript" or "onnx", for a folder that holds both (default: the first exported).
        """
        folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        info_path = os.path.join(folder, EXPORT_INFO)
        if not os.path.isfile(info_path):
            raise SetupError(f"{info_path} not found: pass the folder that tools/deploy/export_model.py wrote")
        with open(info_path) as f:
            self.info = info = json.load(f)
        if os.path.isfile(path):
            model_path = path
        else:
            fmt = fmt or info["formats"][0]
            if fmt not in info["formats"]:
                raise SetupError(f"{folder} holds {info['formats']} exports, not {fmt!r}")
            model_path = os.path.join(folder, model_file_name(fmt))
        self.model_path = model_path
        self.kind = info["kind"]
        self.input_format = info.get("input_format", "BGR")
        self.device = "cpu"
        size = info.get("min_size_test", 0)
        self.augmentations = [T.ResizeShortestEdge([size, size], info.get("max_size_test", 0))] if size > 0 else []
        self.metadata = self._metadata(info)
        self.run = load_exported(model_path, info.get("input_style", "tensor"))

    def _metadata(self, info: dict) -> Metadata:
        """Class names and colours: those export.json records (``class_metadata``); for an export.json
        written before they were recorded, its dataset's, where that is registered here (seg_d2's own
        datasets). Without names, "class N", with a warning that says why."""
        name = info.get("dataset")
        if info.get("class_metadata"):
            metadata = Metadata(name=name or "__exported", **info["class_metadata"])
        elif name and name in MetadataCatalog.list():
            metadata = MetadataCatalog.get(name)
        else:
            metadata = Metadata(name="__none")
        key = "stuff_classes" if self.kind == "semantic" else "thing_classes"
        if not metadata.get(key, None):
            if "class_metadata" in info:
                why = f"its config's datasets had no {key} when it was exported"
            else:
                why = (f"its export.json records no class names (written before export_model.py recorded them) and "
                       f"its dataset {name!r} is not registered here. Export the model again with "
                       f"tools/deploy/export_model.py (same config and weights): export.json then records the class "
                       f"names and colours of the config's datasets")
            logger.warning(f"{self.model_path}: classes are named 'class 0', 'class 1', ...: {why}")
        return metadata

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Semantic logits ``(K, h, w)`` of one image ``(C, h, w)`` at the model's input size, with the
        exported config's sliding windows and TTA around the exported network."""
        predict = lambda x: self.run(x.contiguous())[0]  # noqa: E731
        sw, tta = self.info.get("sliding_window") or {}, self.info.get("tta") or {}
        windowed = predict
        if sw.get("enabled"):
            windowed = lambda x: sliding_window_inference(  # noqa: E731
                predict, x, tuple(sw["size"]), sw["overlap"], sw["blending"])
        if tta.get("enabled"):
            return tta_inference(windowed, image, tta["scales"], tta["flip"])
        return windowed(image)

    def instances(self, image: torch.Tensor, height: int, width: int) -> Instances:
        out = self.run(image)
        if isinstance(out, dict):  # scripted
            fields = {k: (v.tensor if hasattr(v, "tensor") else v) for k, v in out.items()}
            names = sorted(fields)
            values = [fields[k] for k in names] + [torch.tensor(image.shape[-2:])]
            return outputs_to_instances(values, names + ["image_size"], height, width)
        return outputs_to_instances(out, self.info["output_names"], height, width)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> dict:
        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        T.AugmentationList(self.augmentations)(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)).astype("float32"))
        if self.kind == "semantic":
            logits = self.predict_logits(tensor)
            return {"sem_seg": sem_seg_postprocess(logits, tuple(tensor.shape[-2:]), height, width)}
        inst = self.instances(tensor, height, width)
        return {"instances": inst}

