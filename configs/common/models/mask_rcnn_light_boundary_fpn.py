# seg_d2's light boundary head (LightBoundaryMaskHead; not BMask R-CNN's): detectron2's Mask R-CNN
# R-50-FPN (model_zoo common/models/mask_rcnn_fpn.py) whose mask head also predicts boundaries from the
# same RoI features, its mask and boundary branches exchanging features (2 + 2 convs: the stock head's 4).
# The yaml twin: configs/Base-RCNN-FPN.yaml with MODEL.ROI_MASK_HEAD.NAME "LightBoundaryMaskHead", NUM_CONV 2.
from detectron2.config import LazyCall as L

from seg_d2.config import shape_spec
from seg_d2.model_zoo import get_detectron2_config
from seg_d2.modeling import LightBoundaryMaskHead

model = get_detectron2_config("common/models/mask_rcnn_fpn.py").model

model.roi_heads.mask_head = L(LightBoundaryMaskHead)(
    input_shape=L(shape_spec)(channels=256, height=14, width=14),  # the FPN channels, the mask pooler size
    num_classes="${..num_classes}",  # 1 for class-agnostic masks
    conv_dim=256,
    num_mask_conv=2,
    num_boundary_conv=2,
    conv_norm="",
    mask_resolution=28,  # the pooler's 14 x 2^k
    mask_bce_weight=1.0,
    mask_dice_weight=1.0,
    boundary_bce_weight=1.0,
    boundary_dice_weight=1.0,
    mask_iou_head=None,  # or L(MaskIoUHead)(...) for mask scoring
)
