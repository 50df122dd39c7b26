"""Export of seg_d2's models to TorchScript and ONNX (``tools/deploy/export_model.py``), and the
predictor that runs the exported files (``tools/deploy/run_exported.py``)."""
from .exporter import FORMATS, METHODS, ONNX_OPSET, class_metadata, export_model, model_file_name, model_kind
from .instance import adapter_output_names, check_instance_model, instance_adapter, outputs_to_instances, rcnn_inference
from .predictor import ExportedPredictor, load_exported
from .semantic import SemanticExportModule

__all__ = [k for k in globals().keys() if not k.startswith("_")]
