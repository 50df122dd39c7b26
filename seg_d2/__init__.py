"""seg_d2: semantic and instance segmentation for Detectron2.

``import seg_d2`` registers seg_d2's models into detectron2's registries and its datasets into
``DatasetCatalog``. In your own code::

    import seg_d2
    cfg = seg_d2.model_zoo.get_config("Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml")
    # or: cfg = seg_d2.get_cfg(); cfg.merge_from_file(...)
"""
import warnings as _warnings

with _warnings.catch_warnings():
    # detectron2 v0.6 and fvcore call torch.jit.script at import time, which recent torch versions deprecate
    # with a FutureWarning per call: not the user's concern, and nothing they can act on.
    _warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
    from . import compat  # noqa: F401  (on a compiled detectron2: deformable conv on CPU through torchvision)
    from . import data  # noqa: F401  (registers datasets)
    from . import modeling  # noqa: F401  (registers models)
# detectron2's anchor generator (v0.6 and main) calls torch.meshgrid without `indexing`: torch warns in every
# R-CNN run, about the "ij" default that detectron2 relies on.
_warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)
from . import model_zoo  # noqa: F401  (get_config_file, get_config: configs shipped with the package)
from .config import add_seg_d2_config, apply_cpu_fallback, get_cfg

__all__ = ["add_seg_d2_config", "apply_cpu_fallback", "get_cfg", "model_zoo"]
