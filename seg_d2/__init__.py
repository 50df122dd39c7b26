"""seg_d2: semantic and instance segmentation for Detectron2.

``import seg_d2`` registers seg_d2's models into detectron2's registries and its datasets into
``DatasetCatalog``.
"""
from . import data  # noqa: F401  (registers datasets)
from . import modeling  # noqa: F401  (registers models)
from .config import add_seg_d2_config

__all__ = ["add_seg_d2_config"]
