"""Export a built seg_d2/detectron2 model to TorchScript or ONNX, with an ``export.json`` that says how
to run the file (:class:`~seg_d2.export.predictor.ExportedPredictor`).

Both formats come from one ``torch.jit.trace`` of the model (or one ``torch.jit.script``); ONNX is
that trace through torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), as
detectron2 exports. On torch 2.14 the torch.export-based exporter (``dynamo=True``, the default) also
exports the semantic models, with the same outputs, but several times slower, and it cannot export the
R-CNNs, whose TracingAdapter, NMS and per-level RoI assignment are built for ``torch.jit.trace``.
"""
import json
import logging
import os
import warnings
from typing import Optional, Sequence, Union

import torch
from torch import nn

from detectron2.data import MetadataCatalog
from detectron2.modeling import GeneralizedRCNN, PanopticFPN, SemanticSegmentor

from seg_d2.data.checks import dataset_thing_classes
from seg_d2.utils.predictor import config_datasets

from .instance import adapter_output_names, check_instance_model, instance_adapter
from .semantic import SemanticExportModule

__all__ = ["FORMATS", "METHODS", "ONNX_OPSET", "model_kind", "export_model", "model_file_name", "class_metadata"]

FORMATS = ("torchscript", "onnx")
METHODS = ("tracing", "scripting")
ONNX_OPSET = 17  # >= 16: RoiAlign with half_pixel coordinates, detectron2's aligned ROIAlign
EXPORT_INFO = "export.json"
CLASS_KEYS = (("thing_classes", "thing_colors"), ("stuff_classes", "stuff_colors"))  # (names, colours)

logger = logging.getLogger(__name__)


def model_kind(model: nn.Module) -> str:
    """ "semantic" or "instance"; NotImplementedError, naming the model, for anything else."""
    if isinstance(model, PanopticFPN):  # a GeneralizedRCNN: exported as one, its stuff would vanish silently
        raise NotImplementedError(
            f"{type(model).__name__} (panoptic) cannot be exported: its panoptic merge "
            f"(combine_semantic_and_instance_outputs) loops in Python over a data-dependent number of instances, "
            f"which neither tracing nor ONNX captures, and exporting only its detector would drop the stuff. Run it "
            f"with tools/demo.py or seg_d2's predictor."
        )
    if isinstance(model, SemanticSegmentor):
        return "semantic"
    if isinstance(model, GeneralizedRCNN):
        return "instance"
    raise NotImplementedError(
        f"Export covers semantic models (SemanticSegmentor: U-Net, FCN) and R-CNN instance models "
        f"(GeneralizedRCNN: Mask R-CNN, BMask R-CNN); {type(model).__name__} is neither"
    )


def class_metadata(cfg) -> dict:
    """The class names and colours to record in export.json: ``thing_classes`` (and ``thing_colors``)
    of the first of the config's datasets, DATASETS.TEST then TRAIN, that names its things, and the
    same for ``stuff_classes``/``stuff_colors``. Read where the model is exported, since the config's
    own datasets (``SEG_D2.DATASETS``, registration code) are registered there and not where
    run_exported.py runs. JSON-ready: lists of str and of [R, G, B] ints."""
    registered = set(MetadataCatalog.list())
    names = [n for n in config_datasets(cfg, "test") + config_datasets(cfg, "train") if n in registered]
    found = {}
    for classes_key, colors_key in CLASS_KEYS:
        for name in names:
            meta = MetadataCatalog.get(name)
            # thing_classes of a COCO json not loaded yet: its categories
            classes = dataset_thing_classes(name) if classes_key == "thing_classes" else meta.get(classes_key, None)
            if classes:
                found[classes_key] = [str(c) for c in classes]
                colors = meta.get(colors_key, None)
                if colors:
                    found[colors_key] = [[int(v) for v in rgb] for rgb in colors]
                break
    return found


def model_file_name(fmt: str) -> str:
    return "model.ts" if fmt == "torchscript" else "model.onnx"


def _script(module: nn.Module, what: str):
    try:
        return torch.jit.script(module)
    except Exception as e:  # TorchScript's compiler error: the first lines say what it cannot compile
        reason = " ".join(str(e).strip().splitlines()[:2])
        raise NotImplementedError(
            f"Scripting {what}: TorchScript cannot compile it ({reason}). Use --export-method tracing, which "
            f"exports it for any input size."
        ) from None


def _script_instance_model(model: GeneralizedRCNN):
    """detectron2's scripting of R-CNNs (``scripting_with_instances``): TorchScript only."""
    from typing import Dict, List, Tuple

    from detectron2.export import scripting_with_instances
    from detectron2.structures import Boxes

    class ScriptableAdapter(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, inputs: Tuple[Dict[str, torch.Tensor]]) -> List[Dict[str, torch.Tensor]]:
            return [i.get_fields() for i in self.model.inference(inputs, do_postprocess=False)]

    fields = {"proposal_boxes": Boxes, "objectness_logits": torch.Tensor, "pred_boxes": Boxes,
              "scores": torch.Tensor, "pred_classes": torch.Tensor, "pred_masks": torch.Tensor,
              "pred_mask_ious": torch.Tensor, "mask_scores": torch.Tensor}
    try:
        return scripting_with_instances(ScriptableAdapter().eval(), fields)
    except Exception as e:
        reason = " ".join(str(e).strip().splitlines()[:2])
        raise NotImplementedError(
            f"Scripting {type(model.roi_heads).__name__} / "
            f"{type(getattr(model.roi_heads, 'mask_head', None)).__name__}: "
            f"TorchScript cannot compile it ({reason}). Use --export-method tracing."
        ) from None


def _dynamic_axes(output_names) -> dict:
    """Input height and width, and the outputs' sizes that follow them or the number of detections."""
    axes = {"image": {1: "height", 2: "width"}}
    for name in output_names:
        if name == "sem_seg":
            axes[name] = {1: "height", 2: "width"}
        elif name == "labels":
            axes[name] = {0: "height", 1: "width"}
        elif name != "image_size":
            axes[name] = {0: "detections"}
    return axes


def _to_onnx(traced, image: torch.Tensor, path: str, meta: dict, what: str) -> None:
    """The traced module through the TorchScript-based ONNX exporter (converted, not traced again)."""
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notice
            torch.onnx.export(
                traced, (image,), path, dynamo=False, opset_version=ONNX_OPSET,
                input_names=meta["input_names"], output_names=meta["output_names"],
                dynamic_axes=_dynamic_axes(meta["output_names"]),
            )
    except torch.onnx.errors.OnnxExporterError as e:  # e.g. an operator with no ONNX conversion
        reason = str(e).strip().splitlines()[0]
        raise NotImplementedError(
            f"ONNX export of {what}: {reason} (--format torchscript exports it)"
        ) from None


def _describe(model: nn.Module) -> str:
    if isinstance(model, SemanticSegmentor):
        return f"the semantic model {type(model.backbone).__name__} + {type(model.sem_seg_head).__name__}"
    heads = model.roi_heads
    return f"the R-CNN {type(heads).__name__} + {type(getattr(heads, 'mask_head', None)).__name__}"


def export_model(model: nn.Module, image: torch.Tensor, output_dir: str, *,
                 fmt: Union[str, Sequence[str]] = "onnx", method: str = "tracing", info: Optional[dict] = None) -> str:
    """Export ``model`` (eval mode, weights loaded), traced on ``image`` ``(C, H, W)`` (pixel values
    in ``INPUT.FORMAT``, at the size the model runs at), to ``output_dir``/model.ts and/or model.onnx
    (``fmt``: one format or several, all from one trace), and write ``export.json`` there (``info``
    plus what the predictor needs). Returns the path of the (first) file.

    Raises:
        ValueError: an unknown format or method, or a sample image that is not (C, H, W).
        NotImplementedError: a model, or a format/method combination, that cannot be exported (why).
    """
    formats = [fmt] if isinstance(fmt, str) else list(dict.fromkeys(fmt))
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"--format must be one of {FORMATS}, got {bad or formats!r}")
    if method not in METHODS:
        raise ValueError(f"--export-method must be one of {METHODS}, got {method!r}")
    if image.dim() != 3:
        raise ValueError(f"The sample image must be (C, H, W), got shape {tuple(image.shape)}")
    kind = model_kind(model)
    if "onnx" in formats and method == "scripting":
        raise NotImplementedError(
            "ONNX export goes through tracing (--export-method tracing): scripted models, whose outputs are "
            "detectron2 structures or whose control flow depends on data, have no ONNX conversion (detectron2's "
            "export_model.py has none either)"
        )
    model.eval()
    what = _describe(model)
    image = image.to(torch.float32).cpu()
    meta = dict(info or {})
    meta.update(kind=kind, formats=formats, method=method, torch_version=torch.__version__,
                sample_size=list(image.shape[-2:]), channels=int(image.shape[0]))
    if kind == "semantic":
        module = SemanticExportModule(model)
        meta.update(input_names=["image"], output_names=["sem_seg", "labels"], input_style="tensor")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            exported = _script(module, f"the semantic model {type(model.sem_seg_head).__name__}") \
                if method == "scripting" else torch.jit.trace(module, (image,), check_trace=False)
    else:
        check_instance_model(model)
        if method == "scripting":
            exported = _script_instance_model(model)
            meta.update(input_names=["image"], output_names=None, input_style="dict")
        else:
            adapter = instance_adapter(model, image)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                exported = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
            meta.update(input_names=["image"], output_names=adapter_output_names(adapter), input_style="tensor")

    created = not os.path.isdir(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, model_file_name(f)) for f in formats]
    try:
        for f, path in zip(formats, paths):
            if f == "torchscript":
                exported.save(path)
            else:
                meta["onnx_opset"] = ONNX_OPSET
                _to_onnx(exported, image, path, meta, what)
        with open(os.path.join(output_dir, EXPORT_INFO), "w") as f:
            json.dump(meta, f, indent=1)
    except BaseException:  # nothing written half-way
        for path in paths + [os.path.join(output_dir, EXPORT_INFO)]:
            if os.path.isfile(path):
                os.remove(path)
        if created and not os.listdir(output_dir):
            os.rmdir(output_dir)
        raise
    logger.info(f"Exported {kind} model ({method}) to {', '.join(paths)}")
    return paths[0]
