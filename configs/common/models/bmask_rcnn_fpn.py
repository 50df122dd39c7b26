# BMask R-CNN as published (Cheng et al., ECCV 2020): detectron2's Mask R-CNN R-50-FPN (model_zoo
# common/models/mask_rcnn_fpn.py) whose ROI heads (BoundaryROIHeads) pool the mask RoI features (14x14)
# and boundary RoI features (28x28 from p2) for BoundaryPreservingHead, its mask (4 convs) and boundary
# (2 convs) branches fusing both ways; mask BCE, boundary BCE + Dice. The mask head trains on the box head's
# refined boxes, as in the authors' configs (hustvl/BMaskR-CNN).
# The yaml twin: configs/Base-RCNN-FPN.yaml with MODEL.ROI_HEADS.NAME "BoundaryROIHeads",
# MODEL.ROI_MASK_HEAD.NAME "BoundaryPreservingHead", NUM_CONV 4, MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES True,
# and MODEL.BOUNDARY_MASK_HEAD's defaults.
from detectron2.config import LazyCall as L
from detectron2.modeling.poolers import ROIPooler

from seg_d2.config import shape_spec
from seg_d2.model_zoo import get_detectron2_config
from seg_d2.modeling import BoundaryPreservingHead, BoundaryROIHeads

model = get_detectron2_config("common/models/mask_rcnn_fpn.py").model

model.roi_heads._target_ = BoundaryROIHeads
model.roi_heads.train_on_pred_boxes = True
model.roi_heads.boundary_in_features = ["p2"]
model.roi_heads.boundary_pooler = L(ROIPooler)(
    output_size=28,  # the mask pooler's 14 x 2^k
    scales=(1.0 / 4,),
    sampling_ratio=0,
    pooler_type="ROIAlignV2",
)
model.roi_heads.mask_head = L(BoundaryPreservingHead)(
    input_shape=L(shape_spec)(channels=256, height=14, width=14),  # mask RoI features
    boundary_shape=L(shape_spec)(channels=256, height=28, width=28),  # boundary RoI features
    num_classes="${..num_classes}",  # 1 for class-agnostic masks
    conv_dim=256,
    num_mask_conv=4,
    num_boundary_conv=2,
    conv_norm="",
    mask_bce_weight=1.0,
    mask_dice_weight=0.0,
    boundary_bce_weight=1.0,
    boundary_dice_weight=1.0,
    mask_iou_head=None,  # or L(MaskIoUHead)(...) for mask scoring
)
