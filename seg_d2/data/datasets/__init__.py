"""Dataset registration. Importing this module registers seg_d2's datasets under
``$DETECTRON2_DATASETS`` (default ``./datasets``), as detectron2's builtin datasets do."""
import os

from .coco_instances import (  # noqa: F401
    COCOFormatError, register_coco_dataset, register_coco_instances, validate_coco_json,
)
from .shapes import SEM_SEG_CLASSES, SHAPE_CLASSES, generate_shapes_dataset, register_shapes, register_shapes_panoptic
from .coco_panoptic import (  # noqa: F401  (COCO instances + label maps -> COCO panoptic; PanopticFPN's records)
    PanopticDataError, make_coco_panoptic, register_coco_panoptic_dataset,
)
from .coco_sem_seg import coco_json_to_sem_seg, register_coco_sem_seg  # noqa: F401  (COCO json -> label maps)
from .sem_seg_folder import load_sem_seg_folder, register_sem_seg_folder  # noqa: F401  (image/label folders)
from .cityscapes import register_cityscapes  # noqa: F401  (seg_d2_cityscapes_fine_*: not detectron2's, #5436)
from .shapes_rotated import register_rotated_instances, register_shapes_rotated  # noqa: F401  (XYWHA boxes)

_root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
register_shapes(_root)
register_shapes_panoptic(_root)  # seg_d2_shapes_panoptic_*: the shapes as things, sky and ground as stuff
register_shapes_rotated()  # seg_d2_shapes_rotated_*: minimum-area rotated boxes of the shapes' masks
register_cityscapes(_root)  # reads nothing until a dataset is loaded
