"""Dataset registration. Importing this module registers seg_d2's datasets under
``$DETECTRON2_DATASETS`` (default ``./datasets``), as detectron2's builtin datasets do."""
import os

from .shapes import SEM_SEG_CLASSES, SHAPE_CLASSES, generate_shapes_dataset, register_shapes

_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_shapes(_root)
