# What configs/Shapes-InstanceSegmentation/Base-Shapes-RCNN.yaml changes in an R-CNN R-50-FPN.
from detectron2.layers import ShapeSpec


def shapes_r18_fpn(model, num_classes=4):
    """Turn a LazyConfig R-CNN R-50-FPN ``model`` (detectron2's common/models/mask_rcnn_fpn.py or one
    built on it) into the shapes recipe, in place: ResNet-18 from scratch (BN everywhere, nothing
    frozen), 128 FPN channels, anchors and RPN sized for small images and objects, a light box head.
    The mask head's channels follow (its input_shape, and boundary_shape where it has one)."""
    bottom_up = model.backbone.bottom_up
    bottom_up.stem.norm = "BN"
    bottom_up.stages.depth = 18
    bottom_up.stages.norm = "BN"
    bottom_up.stages.pop("stride_in_1x1", None)  # BasicBlocks have no 1x1 conv
    bottom_up.freeze_at = 0
    model.backbone.out_channels = 128

    rpn = model.proposal_generator
    rpn.head.in_channels = 128
    rpn.anchor_generator.sizes = [[16], [32], [64], [128], [256]]  # shapes are 8-50 px in radius
    rpn.pre_nms_topk = (500, 300)  # (train, test), per FPN level
    rpn.post_nms_topk = (300, 100)

    roi = model.roi_heads
    roi.num_classes = num_classes
    roi.batch_size_per_image = 128
    roi.box_head.input_shape = ShapeSpec(channels=128, height=7, width=7)
    roi.box_head.fc_dims = [256, 256]
    roi.box_predictor.input_shape = ShapeSpec(channels=256)
    roi.box_predictor.test_score_thresh = 0.05
    roi.box_predictor.test_topk_per_image = 20
    roi.mask_head.input_shape.channels = 128
    roi.mask_head.conv_dim = 128
    if "boundary_shape" in roi.mask_head:
        roi.mask_head.boundary_shape.channels = 128
    return model
