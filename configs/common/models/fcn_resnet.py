# FCN-8s (Long 2015) on a detectron2 ResNet-50: class scores from res5 (after two 3x3 convs, the
# paper's fc6/fc7), fused with scores from res4 and res3, upsampled to full resolution; CE + Dice.
# The yaml twin: configs/Base-FCN.yaml with MODEL.RESNETS.DEPTH 50.
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from seg_d2.config import shape_spec
from seg_d2.modeling import FCNHead, SegD2SemanticSegmentor
from seg_d2.modeling.sem_seg_losses import SemSegLoss

model = L(SegD2SemanticSegmentor)(
    backbone=L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
        stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="BN"),
        out_features=["res3", "res4", "res5"],
        freeze_at=0,
    ),
    sem_seg_head=L(FCNHead)(
        input_shape={  # ResNet-50's res3..res5
            "res3": L(shape_spec)(channels=512, stride=8),
            "res4": L(shape_spec)(channels=1024, stride=16),
            "res5": L(shape_spec)(channels=2048, stride=32),
        },
        num_classes=19,
        conv_dims=512,
        num_convs=2,
        dropout=0.1,
        norm="BN",
        loss=L(SemSegLoss)(losses=["ce", "dice"], weights=[1.0, 1.0], ignore_value="${..ignore_value}",
                           num_classes="${..num_classes}"),
        loss_weight=1.0,
        ignore_value=255,
    ),
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
)
