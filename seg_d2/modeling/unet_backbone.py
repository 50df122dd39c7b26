"""The classic U-Net encoder (Ronneberger et al. 2015) as a detectron2 backbone."""
from typing import Sequence

from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from .norm import double_conv, resolve_norm

__all__ = ["UNetEncoder", "build_unet_backbone"]


class UNetEncoder(Backbone):
    """Double 3x3 conv blocks separated by 2x2 max-pooling.

    Level ``k`` (1-based) is named ``enc{k}``, has stride ``2**(k-1)`` and ``base_channels * 2**(k-1)``
    channels; the last level is the bottleneck. Convolutions are padded ("same"), so with inputs
    padded to ``size_divisibility`` the decoder's skips align exactly, unlike the paper's valid
    convolutions and cropping.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        base_channels: int = 64,
        depth: int = 5,
        norm: str = "BN",
        out_features: Sequence[str] = None,
    ):
        """
        Args:
            in_channels: 1 (grayscale, e.g. medical) or 3 (RGB/BGR).
            base_channels: channels of the first level (64 in the paper).
            depth: number of levels, the bottleneck included (5 in the paper).
            norm: normalization after each conv ("" for none, as in the paper).
            out_features: levels to return; default all.
        """
        super().__init__()
        if depth < 2:
            raise ValueError(f"UNetEncoder needs depth >= 2, got {depth}")
        names = [f"enc{k + 1}" for k in range(depth)]
        out_features = list(out_features or names)
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise ValueError(f"UNetEncoder of depth {depth} has features {names}, not {unknown}")
        self.blocks = nn.ModuleList()
        channels = in_channels
        self._out_feature_channels, self._out_feature_strides = {}, {}
        for k, name in enumerate(names):
            out = base_channels * 2**k
            self.blocks.append(double_conv(channels, out, norm))
            channels = out
            self._out_feature_channels[name] = out
            self._out_feature_strides[name] = 2**k
        self._names = names
        self._out_features = out_features

    @property
    def size_divisibility(self) -> int:
        # SemanticSegmentor pads inputs to this, and crops the prediction back.
        return 2 ** (len(self._names) - 1)

    def forward(self, x):
        outputs = {}
        for k, (name, block) in enumerate(zip(self._names, self.blocks)):
            if k > 0:
                x = F.max_pool2d(x, 2, ceil_mode=True)  # ceil: odd sizes never lose a row or column
            x = block(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self):
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_unet_backbone(cfg, input_shape: ShapeSpec) -> UNetEncoder:
    """``MODEL.UNET`` -> :class:`UNetEncoder`; input channels = ``len(MODEL.PIXEL_MEAN)``."""
    if input_shape.channels not in (1, 3):
        raise ValueError(
            f"The U-Net encoder takes 1 or 3 input channels, got {input_shape.channels} "
            f"(len(MODEL.PIXEL_MEAN) = {len(cfg.MODEL.PIXEL_MEAN)})"
        )
    return UNetEncoder(
        in_channels=input_shape.channels,
        base_channels=cfg.MODEL.UNET.BASE_CHANNELS,
        depth=cfg.MODEL.UNET.DEPTH,
        norm=resolve_norm(cfg.MODEL.UNET.NORM, cfg.MODEL.DEVICE),
        out_features=cfg.MODEL.UNET.OUT_FEATURES,
    )
