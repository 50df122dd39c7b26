"""R-CNN instance models (stock Mask R-CNN, BMask R-CNN, the light boundary head, mask scoring) through
detectron2's :class:`~detectron2.export.TracingAdapter`, as detectron2's ``tools/deploy/export_model.py``."""
from typing import Dict, List, Sequence

import torch
from torch import nn

from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

__all__ = [
    "check_instance_model", "rcnn_inference", "instance_adapter", "adapter_output_names", "outputs_to_instances",
]


def check_instance_model(model: nn.Module) -> None:
    """Raise NotImplementedError, saying why, for an instance model the tracing export cannot handle."""
    if not isinstance(model, GeneralizedRCNN):
        raise NotImplementedError(
            f"Instance export covers R-CNN models (GeneralizedRCNN: Mask R-CNN, BMask R-CNN, the light boundary "
            f"head); {type(model).__name__} is not one"
        )
    if model.proposal_generator is None:
        raise NotImplementedError("Instance export needs the model's own proposal generator (MODEL.LOAD_PROPOSALS)")
    roi_heads = model.roi_heads
    name = type(roi_heads).__name__
    if "Rotated" in name or "RROI" in name or not hasattr(roi_heads, "box_predictor"):
        raise NotImplementedError(
            f"Instance export covers axis-aligned boxes; ROI heads {name} (rotated boxes) would need "
            f"nms_rotated and ROIAlignRotated, which have no ONNX operator and no traceable kernel here"
        )
    if getattr(roi_heads, "keypoint_on", False):
        raise NotImplementedError(
            "Instance export covers boxes, classes, scores and masks; keypoint heads (MODEL.KEYPOINT_ON) are not "
            "supported: their heatmap decoding is not traced"
        )


def rcnn_inference(model: GeneralizedRCNN, inputs):
    """The traced function: the model's inference on one image without detectron2's post-processing
    (rescaling to the original size and pasting masks), which runs outside the graph
    (:func:`outputs_to_instances`), as in detectron2's own export."""
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def instance_adapter(model: GeneralizedRCNN, image: torch.Tensor) -> TracingAdapter:
    """A TracingAdapter for one image ``(C, H, W)`` (pixel values in ``INPUT.FORMAT``), in eval mode
    (exporters restore the mode they found: a training-mode adapter would leave the model training)."""
    check_instance_model(model)
    model.eval()
    return TracingAdapter(model, [{"image": image}], rcnn_inference).eval()


def adapter_output_names(adapter: TracingAdapter) -> List[str]:
    """Names of the flattened outputs, in order: the Instances fields (sorted, as the adapter's
    schema flattens them) and ``image_size``. The adapter must have run (traced) once."""
    schema = adapter.outputs_schema
    if schema is None:
        raise ValueError("The TracingAdapter has not run yet: trace it first")
    instances_schema = schema.schemas[0].schemas[0]
    return list(instances_schema.keys) + ["image_size"]


def outputs_to_instances(outputs: Sequence, names: Sequence[str], height: int, width: int) -> Instances:
    """Flattened outputs of the exported model (tensors or numpy arrays, named by ``names``) ->
    detectron2's Instances at the original ``height`` x ``width``: boxes rescaled and masks pasted by
    ``detector_postprocess``, as the eager model's forward does."""
    values: Dict[str, torch.Tensor] = {n: torch.as_tensor(v) for n, v in zip(names, outputs)}
    image_size = tuple(int(v) for v in values.pop("image_size"))
    fields = {n: (Boxes(v) if n == "pred_boxes" else v) for n, v in values.items()}
    return detector_postprocess(Instances(image_size, **fields), height, width)
