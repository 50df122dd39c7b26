"""The U-Net decoder (Ronneberger et al. 2015) as a detectron2 semantic segmentation head."""
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from .head_inputs import common_head_args, crop_to, stride_ratio, two_class_logits, upsample
from .norm import double_conv
from .sem_seg_losses import SemSegLoss

__all__ = ["UNetHead"]

PREDICTOR_INITS = ("normal", "xavier")


@SEM_SEG_HEADS_REGISTRY.register()
class UNetHead(nn.Module):
    """U-Net decoder: from the deepest feature up, upsample (x2), concatenate the skip, double conv.

    Works on any multi-scale backbone (ResNet ``res2..res5`` with ``s2``/``s1``, the classic U-Net
    encoder, ...). The features in ``input_shape`` are ordered by stride; the deepest is the
    bottleneck, every other one a skip. Skipless stages may follow the finest skip (upsample x2, double
    conv), as smp's Unet ends at full resolution without an encoder feature there. If the last stage has
    stride > 1, the logits are upsampled to the input resolution at the end. Optional deep supervision
    adds a 1x1 classifier and a weighted auxiliary loss at each lower-resolution decoder stage, on the
    targets sampled at that stage's resolution. With ``num_classes`` 1 (binary) it trains one foreground
    logit z and outputs ``[0, z]`` in inference.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        decoder_channels: Sequence[int],
        norm: Union[str, Callable, None] = "BN",
        upsample_mode: str = "bilinear",
        skipless_stages: int = 0,
        deep_supervision: bool = False,
        deep_supervision_weight: float = 0.4,
        conv_init: str = "fan_out",
        predictor_kernel_size: int = 1,
        predictor_init: str = "normal",
        loss: Optional[nn.Module] = None,
        loss_weight: float = 1.0,
        ignore_value: int = 255,
    ):
        """
        Args:
            input_shape: shapes of the input features (at least 2).
            num_classes: number of classes (1 = binary, a single sigmoid logit).
            decoder_channels: output channels of each decoder stage, deepest first; one per skip, then one per
                skipless stage.
            norm: normalization of the decoder convs.
            upsample_mode: how each decoder stage upsamples: "bilinear", "nearest" (smp's Unet's op) or
                "deconv" (learned 2x2 transposed convolution).
            skipless_stages: decoder stages after the finest skip, each x2 finer, without a skip.
            deep_supervision: add auxiliary losses at the lower-resolution decoder stages.
            deep_supervision_weight: weight of each auxiliary loss.
            conv_init: He initialisation mode of the decoder convs, "fan_out" or "fan_in" (see
                MODEL.SEM_SEG_HEAD.CONV_INIT).
            predictor_kernel_size: kernel size of the final classifier (odd; smp's Unet: 3).
            predictor_init: init of the final classifier's weights: "normal" (std 0.01, as detectron2's heads) or
                "xavier" (Glorot uniform, as smp's heads); its bias starts at 0.
            loss: maps (logits, targets) to a dict of losses; default CE + Dice.
            loss_weight: multiplies every loss.
            ignore_value: label ignored by the losses (and used to pad targets).
        """
        super().__init__()
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        if len(shapes) < 2:
            raise ValueError(f"UNetHead needs >= 2 input features (a bottleneck and a skip), got {list(input_shape)}")
        if predictor_init not in PREDICTOR_INITS:
            raise ValueError(f"UNetHead predictor_init must be one of {PREDICTOR_INITS}, got {predictor_init!r}")
        if predictor_kernel_size < 1 or predictor_kernel_size % 2 == 0:
            raise ValueError(f"UNetHead predictor_kernel_size must be odd (the logits keep the input size), "
                             f"got {predictor_kernel_size}")
        if upsample_mode not in ("bilinear", "nearest", "deconv"):
            raise ValueError(
                f"UNetHead upsample_mode must be 'bilinear', 'nearest' or 'deconv', got {upsample_mode!r}")
        self.in_features = [k for k, _ in shapes]
        skips = shapes[:-1][::-1]  # deepest skip first
        if skipless_stages < 0 or shapes[0][1].stride % 2 ** skipless_stages:
            raise ValueError(f"UNetHead: {skipless_stages} skipless stages (x2 each) past the finest feature "
                             f"{shapes[0][0]} (stride {shapes[0][1].stride}) would go finer than the input")
        # each decoder stage's skip: (feature name, shape), or (None, None) for a skipless stage
        stages = skips + [(None, None)] * skipless_stages
        if len(decoder_channels) < len(stages):
            raise ValueError(
                f"UNetHead has {len(stages)} decoder stages ({len(skips)} skips {[k for k, _ in skips]}, "
                f"{skipless_stages} skipless) but only {len(decoder_channels)} DECODER_CHANNELS "
                f"{list(decoder_channels)}"
            )
        self.skip_features = [k for k, _ in stages]
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.upsample_mode = upsample_mode
        self.deep_supervision_weight = deep_supervision_weight
        self.output_stride = shapes[0][1].stride // 2 ** skipless_stages

        self.upsamplers = nn.ModuleList()
        self.blocks = nn.ModuleList()
        self.aux_predictors = nn.ModuleList()
        channels, stride = shapes[-1][1].channels, shapes[-1][1].stride
        self.stage_strides: List[int] = []
        self.up_factors: List[int] = []
        for k, ((_, skip), out_channels) in enumerate(zip(stages, decoder_channels)):
            skip_stride = skip.stride if skip is not None else stride // 2
            factor = stride_ratio(stride, skip_stride)
            if upsample_mode == "deconv":
                self.upsamplers.append(nn.ConvTranspose2d(channels, channels // 2, factor, stride=factor))
                channels = channels // 2
            else:
                self.upsamplers.append(nn.Identity())
            self.blocks.append(double_conv(channels + (skip.channels if skip is not None else 0), out_channels, norm,
                                           init_mode=conv_init))
            channels = out_channels
            self.stage_strides.append(skip_stride)
            self.up_factors.append(factor)
            stride = skip_stride
            if deep_supervision and k < len(stages) - 1:  # the last stage is the main output
                self.aux_predictors.append(nn.Conv2d(out_channels, num_classes, 1))
        self.predictor = nn.Conv2d(channels, num_classes, predictor_kernel_size, padding=predictor_kernel_size // 2)
        # no norm follows the classifier, so its init scales the gradient every decoder and encoder layer gets at the
        # start: std 0.01 passes back ~1/40 of what Glorot's init (Glorot & Bengio 2010; smp's heads) does
        # (benchmarks/profile_unet.py --init-grads)
        if predictor_init == "xavier":
            nn.init.xavier_uniform_(self.predictor.weight)
        else:
            nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)
        self.loss = loss if loss is not None else SemSegLoss(ignore_value=ignore_value)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        h = cfg.MODEL.SEM_SEG_HEAD
        return {
            **common_head_args(cfg, input_shape),
            "decoder_channels": h.DECODER_CHANNELS,
            "upsample_mode": h.UPSAMPLE_MODE,
            "skipless_stages": h.SKIPLESS_STAGES,
            "deep_supervision": h.DEEP_SUPERVISION,
            "deep_supervision_weight": h.DEEP_SUPERVISION_WEIGHT,
            "conv_init": h.CONV_INIT,
            "predictor_kernel_size": h.PREDICTOR_KERNEL_SIZE,
            "predictor_init": h.PREDICTOR_INIT,
        }

    def layers(self, features: Dict[str, torch.Tensor]):
        """Logits at the finest feature's resolution, and the auxiliary logits (deepest first)."""
        x = features[self.in_features[-1]]
        aux = []
        for k, (up, block) in enumerate(zip(self.upsamplers, self.blocks)):
            x = up(x) if self.upsample_mode == "deconv" else upsample(x, self.up_factors[k], self.upsample_mode)
            if self.skip_features[k] is not None:
                skip = features[self.skip_features[k]]
                # an odd-sized skip is the top-left of the upsampled map: crop, never resize (see crop_to)
                x = torch.cat([crop_to(x, skip.shape[-2:]), skip], dim=1)
            x = block(x)
            if self.training and k < len(self.aux_predictors):  # auxiliary logits only feed the training loss
                aux.append(self.aux_predictors[k](x))
        return self.predictor(x), aux

    def forward(self, features, targets=None):
        """
        Returns:
            In training, (None, dict of losses); in inference, (N x C x H x W logits, {}), C = 2 for
            a binary head (see :func:`two_class_logits`).
        """
        logits, aux = self.layers(features)
        logits = upsample(logits, self.output_stride)
        if not self.training:
            return two_class_logits(logits), {}
        return None, self.losses(logits, aux, targets)

    def losses(self, logits, aux, targets):
        logits = crop_to(logits, targets.shape[-2:])
        losses = {k: v * self.loss_weight for k, v in self.loss(logits, targets).items()}
        for a, stride in zip(aux, self.stage_strides):
            # as nnU-Net (Isensee et al. 2021): each stage's logits against the targets at its own resolution, the
            # label at the centre of each stride x stride cell; upsampling 4 stages' logits to the input and taking
            # 4 full-resolution losses cost ~6 % of an R-50 U-Net's training step
            t = targets[..., stride // 2::stride, stride // 2::stride]
            for k, v in self.loss(crop_to(a.float(), t.shape[-2:]), t).items():
                losses[f"{k}_aux{stride}"] = v * self.loss_weight * self.deep_supervision_weight
        return losses
