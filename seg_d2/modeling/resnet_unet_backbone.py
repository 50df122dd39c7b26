"""A detectron2 ResNet with the high-resolution features a U-Net decoder needs."""
from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import BasicStem, ResNet, build_resnet_backbone

from .norm import conv_norm_act, resolve_norm

__all__ = ["ResNetUNetEncoder", "ResNetUNetFPN", "build_resnet_unet_backbone", "build_resnet_unet_fpn_backbone"]


class ResNetUNetEncoder(Backbone):
    """detectron2's ResNet, plus two features above ``res2`` (stride 4):

    - ``s2``: the stem's 7x7 convolution output, before its max-pool (stride 2);
    - ``s1``: an optional light conv path on the input image itself (stride 1).

    Without them a decoder on ``res2..res5`` must upsample x4 at the end, which blurs boundaries.
    """

    def __init__(self, resnet: ResNet, *, full_res_channels: int = 32, in_channels: int = 3, norm="BN"):
        super().__init__()
        if not isinstance(resnet.stem, BasicStem):
            raise ValueError(f"ResNetUNetEncoder expects detectron2's BasicStem, got {type(resnet.stem).__name__}")
        self.resnet = resnet
        self.full_res = (
            nn.Sequential(conv_norm_act(in_channels, full_res_channels, norm),
                          conv_norm_act(full_res_channels, full_res_channels, norm))
            if full_res_channels > 0 else None
        )
        shapes = dict(resnet.output_shape())
        shapes.pop("stem", None)  # same stride as res2; s2 is the useful stem feature
        shapes["s2"] = ShapeSpec(channels=resnet.stem.out_channels, stride=2)
        if self.full_res is not None:
            shapes["s1"] = ShapeSpec(channels=full_res_channels, stride=1)
        self._shapes = shapes
        self._out_features = list(shapes)

    @property
    def size_divisibility(self) -> int:
        # SemanticSegmentor pads inputs to a multiple of res5's stride and crops the prediction back.
        return 32

    def forward(self, x):
        outputs = {}
        if self.full_res is not None:
            outputs["s1"] = self.full_res(x)
        stem = self.resnet.stem
        x = F.relu_(stem.conv1(x))
        outputs["s2"] = x
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for name, stage in zip(self.resnet.stage_names, self.resnet.stages):
            x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self):
        return dict(self._shapes)


@BACKBONE_REGISTRY.register()
def build_resnet_unet_backbone(cfg, input_shape: ShapeSpec) -> ResNetUNetEncoder:
    """``MODEL.RESNETS`` (detectron2's ResNet) + ``MODEL.RESNET_UNET`` -> :class:`ResNetUNetEncoder`."""
    resnet = build_resnet_backbone(cfg, input_shape)
    return ResNetUNetEncoder(
        resnet,
        full_res_channels=cfg.MODEL.RESNET_UNET.FULL_RES_CHANNELS,
        in_channels=input_shape.channels,
        norm=resolve_norm(cfg.MODEL.RESNETS.NORM if cfg.MODEL.RESNETS.NORM != "FrozenBN" else "BN", cfg.MODEL.DEVICE),
    )


class _GivenFeatures(Backbone):
    """The bottom-up of an FPN whose input is the bottom-up features already computed."""

    def __init__(self, shapes):
        super().__init__()
        self._shapes = dict(shapes)
        self._out_features = list(shapes)

    def forward(self, features):
        return features

    def output_shape(self):
        return dict(self._shapes)


class ResNetUNetFPN(Backbone):
    """detectron2's FPN (p2..p6) on a :class:`ResNetUNetEncoder`, which also passes the encoder's fine
    features (``s2``, ``s1``) through: one backbone for PanopticFPN's detector (the p-levels) and a U-Net
    semantic head that keeps a full-resolution path (its skips ``s1``, ``s2``, then p2..p5)."""

    def __init__(self, encoder: ResNetUNetEncoder, fpn: FPN):
        super().__init__()
        self.encoder = encoder
        self.fpn = fpn
        self._fine = [k for k in ("s1", "s2") if k in encoder.output_shape()]
        self._shapes = {**fpn.output_shape(), **{k: encoder.output_shape()[k] for k in self._fine}}
        self._out_features = list(self._shapes)

    @property
    def size_divisibility(self) -> int:
        return self.fpn.size_divisibility

    def forward(self, x):
        features = self.encoder(x)
        out = self.fpn(features)
        out.update({k: features[k] for k in self._fine})
        return out

    def output_shape(self):
        return dict(self._shapes)


@BACKBONE_REGISTRY.register()
def build_resnet_unet_fpn_backbone(cfg, input_shape: ShapeSpec) -> ResNetUNetFPN:
    """``MODEL.RESNETS`` + ``MODEL.RESNET_UNET`` (:func:`build_resnet_unet_backbone`) + ``MODEL.FPN``
    (detectron2's FPN with its LastLevelMaxPool p6, as ``build_resnet_fpn_backbone``) -> :class:`ResNetUNetFPN`."""
    encoder = build_resnet_unet_backbone(cfg, input_shape)
    fpn = FPN(
        bottom_up=_GivenFeatures(encoder.output_shape()),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    return ResNetUNetFPN(encoder, fpn)
