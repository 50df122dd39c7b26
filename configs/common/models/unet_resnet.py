# U-Net (Ronneberger 2015) on a detectron2 ResNet-50 encoder: res2..res5 plus the stem's stride-2
# feature "s2" and a full-resolution path "s1" (ResNetUNetEncoder), decoded by UNetHead back to full
# resolution; CE + Dice loss. The yaml twin: configs/Base-UNet.yaml with MODEL.RESNETS.DEPTH 50.
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from seg_d2.config import shape_spec
from seg_d2.modeling import SegD2SemanticSegmentor, UNetHead
from seg_d2.modeling.resnet_unet_backbone import ResNetUNetEncoder
from seg_d2.modeling.sem_seg_losses import SemSegLoss

model = L(SegD2SemanticSegmentor)(
    backbone=L(ResNetUNetEncoder)(
        resnet=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="BN"),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=0,
        ),
        full_res_channels=32,
        in_channels=3,
        norm="BN",
    ),
    sem_seg_head=L(UNetHead)(
        # The encoder's features (ResNetUNetEncoder.output_shape() for ResNet-50).
        input_shape={
            "s1": L(shape_spec)(channels="${....backbone.full_res_channels}", stride=1),
            "s2": L(shape_spec)(channels=64, stride=2),
            "res2": L(shape_spec)(channels=256, stride=4),
            "res3": L(shape_spec)(channels=512, stride=8),
            "res4": L(shape_spec)(channels=1024, stride=16),
            "res5": L(shape_spec)(channels=2048, stride=32),
        },
        num_classes=19,
        decoder_channels=[256, 128, 64, 32, 32],
        norm="BN",
        upsample_mode="bilinear",
        deep_supervision=False,
        loss=L(SemSegLoss)(losses=["ce", "dice"], weights=[1.0, 1.0], ignore_value="${..ignore_value}",
                           num_classes="${..num_classes}"),
        loss_weight=1.0,
        ignore_value=255,
    ),
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
)
