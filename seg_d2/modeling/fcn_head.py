"""The FCN head (Long et al. 2015) as a detectron2 semantic segmentation head."""
from typing import Callable, Dict, Optional, Union

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .head_inputs import common_head_args, crop_to, stride_ratio, two_class_logits, upsample
from .norm import conv_norm_act
from .sem_seg_losses import SemSegLoss

__all__ = ["FCNHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(nn.Module):
    """Fully convolutional classifier with skip fusion of class scores.

    The deepest feature goes through ``num_convs`` 3x3 convs (the paper's fc6/fc7 as convolutions)
    and a 1x1 scorer; each shallower feature gets its own 1x1 scorer, zero-initialised as in the
    paper, whose scores are added to the upsampled coarser ones. With features res3/res4/res5 this is
    FCN-8s, with res4/res5 FCN-16s, with res5 alone FCN-32s. The fused scores are upsampled
    bilinearly to the input resolution. With ``num_classes`` 1 (binary) it trains one foreground
    logit z and outputs ``[0, z]`` in inference.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        num_convs: int = 2,
        dropout: float = 0.1,
        norm: Union[str, Callable, None] = "BN",
        loss: Optional[nn.Module] = None,
        loss_weight: float = 1.0,
        ignore_value: int = 255,
    ):
        """
        Args:
            input_shape: shapes of the input features (1 or more).
            num_classes: number of classes (1 = binary).
            conv_dims: channels of the convs on the deepest feature.
            num_convs: number of those convs.
            dropout: dropout after each of them.
            norm: normalization of those convs.
            loss: maps (logits, targets) to a dict of losses; default CE + Dice.
            loss_weight: multiplies every loss.
            ignore_value: label ignored by the losses.
        """
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        if not shapes:
            raise ValueError("FCNHead needs at least one input feature")
        self.in_features = [k for k, _ in shapes]
        self.output_stride = shapes[0][1].stride
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        layers, channels = [], shapes[-1][1].channels
        for _ in range(num_convs):
            layers.append(conv_norm_act(channels, conv_dims, norm))
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
            channels = conv_dims
        self.convs = nn.Sequential(*layers)
        self.score = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.score.weight, std=0.01)
        nn.init.zeros_(self.score.bias)
        self.skip_scores = nn.ModuleList()
        strides = [shape.stride for _, shape in shapes]
        self.up_factors = [stride_ratio(c, f) for c, f in zip(strides[:0:-1], strides[-2::-1])]
        for _, shape in shapes[:-1][::-1]:  # deepest skip first
            conv = nn.Conv2d(shape.channels, num_classes, 1)
            nn.init.zeros_(conv.weight)  # the paper: start from the coarser net's prediction
            nn.init.zeros_(conv.bias)
            self.skip_scores.append(conv)
        self.loss = loss if loss is not None else SemSegLoss(ignore_value=ignore_value)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            **common_head_args(cfg, input_shape),
            "conv_dims": h.CONVS_DIM,
            "num_convs": h.NUM_CONVS,
            "dropout": h.DROPOUT,
        }

    def layers(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Fused class scores at the finest input feature's resolution."""
        x = self.score(self.convs(features[self.in_features[-1]]))
        for k, scorer in enumerate(self.skip_scores):
            skip = features[self.in_features[-2 - k]]
            x = crop_to(upsample(x, self.up_factors[k]), skip.shape[-2:]) + scorer(skip)
        return x

    def forward(self, features, targets=None):
        """
        Returns:
            In training, (None, dict of losses); in inference, (N x C x H x W logits, {}), C = 2 for
            a binary head (see :func:`two_class_logits`).
        """
        x = upsample(self.layers(features), self.output_stride)
        if not self.training:
            return two_class_logits(x), {}
        x = crop_to(x, targets.shape[-2:])
        return None, {k: v * self.loss_weight for k, v in self.loss(x, targets).items()}
