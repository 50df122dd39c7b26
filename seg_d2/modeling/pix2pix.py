"""pix2pix (Isola et al. 2017): a label map -> image generator trained against a PatchGAN discriminator, as a
detectron2 meta-architecture. The generator is seg_d2's own U-Net (the classic encoder and the U-Net head)."""
import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import get_norm
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm

from .norm import resolve_norm
from .unet_backbone import UNetEncoder
from .unet_head import UNetHead

__all__ = ["LabelMapError", "PatchDiscriminator", "Pix2Pix", "SPADE", "instance_edges", "label_channels"]


class LabelMapError(ValueError):
    """A label map the generator cannot take: a value it was not trained on, a wrong shape or size; the message
    names the file."""


def label_channels(sem_seg: torch.Tensor, num_classes: int, ignore_value: int) -> torch.Tensor:
    """(N, H, W) labels -> (N, num_classes + 1, H, W) one-hot, the last channel the ignore label (unlabelled
    pixels are an input of their own, not a class). Values must be classes or ``ignore_value``."""
    labels = torch.where(sem_seg == ignore_value, torch.full_like(sem_seg, num_classes), sem_seg)
    return F.one_hot(labels.long(), num_classes + 1).permute(0, 3, 1, 2).float()


def instance_edges(ids: torch.Tensor) -> torch.Tensor:
    """(N, H, W) instance ids -> (N, 1, H, W) float edge map: 1 where a pixel's id differs from its right, left,
    lower or upper neighbour's (pix2pixHD's instance boundary map, Wang et al. 2018)."""
    edge = torch.zeros_like(ids, dtype=torch.bool)
    horizontal = ids[:, :, 1:] != ids[:, :, :-1]
    vertical = ids[:, 1:, :] != ids[:, :-1, :]
    edge[:, :, 1:] |= horizontal
    edge[:, :, :-1] |= horizontal
    edge[:, 1:, :] |= vertical
    edge[:, :-1, :] |= vertical
    return edge[:, None].float()


def _pad_edge(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``x`` (H x W, or C x H x W) padded at the bottom and right to ``h`` x ``w`` by repeating its last row and
    column."""
    pad = (0, w - x.shape[-1], 0, h - x.shape[-2])
    if not any(pad):
        return x
    y = x.float() if not x.is_floating_point() else x
    y = F.pad(y.reshape(1, -1, *x.shape[-2:]), pad, mode="replicate").reshape(*x.shape[:-2], h, w)
    return y.to(x.dtype)


def _dropout_hook(p: float):
    """A forward hook: dropout on a module's output, in inference too (pix2pix's noise)."""

    def hook(module, inputs, out):
        return F.dropout(out, p, training=True)

    return hook


class SPADE(nn.Module):
    """Spatially-adaptive normalization (Park et al. 2019): normalize ``x`` without a learnt affine, then scale and
    shift it per pixel by ``1 + gamma`` and ``beta``, two 3x3 convs over a shared 3x3 conv + ReLU of the label map
    (resized to ``x`` by nearest neighbour). The label map comes from the generator, :attr:`label_map`, set before
    each forward: normalization cannot then wash the labels out of the features."""

    def __init__(self, num_features: int, label_channels: int, *, hidden_channels: int = 32, norm: str = "BN"):
        super().__init__()
        # the parameter-free part: batch statistics as pix2pix's BN, or GroupNorm for "GN"
        self.param_free = (nn.GroupNorm(math.gcd(32, num_features), num_features, affine=False) if norm == "GN"
                           else nn.BatchNorm2d(num_features, affine=False))
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.gamma = nn.Conv2d(hidden_channels, num_features, 3, padding=1)
        self.beta = nn.Conv2d(hidden_channels, num_features, 3, padding=1)
        self.label_map: Optional[torch.Tensor] = None

    def forward(self, x):
        if self.label_map is None:
            raise RuntimeError("SPADE needs the label map: set .label_map (Pix2Pix.generate does) before calling it")
        hidden = self.shared(F.interpolate(self.label_map, size=x.shape[-2:], mode="nearest"))
        return self.param_free(x) * (1 + self.gamma(hidden)) + self.beta(hidden)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): 4x4 convs of stride 2 with LeakyReLU(0.2), norm after all but the first, then
    one of stride 1 and a 1-channel conv; each output scores one patch (70x70 pixels with 3 layers) real or fake."""

    def __init__(self, in_channels: int, *, base_channels: int = 64, num_layers: int = 3, norm: str = "BN"):
        super().__init__()
        layers: List[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        channels = base_channels
        for k in range(1, num_layers + 1):
            out = base_channels * min(2 ** k, 8)
            stride = 2 if k < num_layers else 1
            norm_layer = get_norm(norm, out)
            layers += [nn.Conv2d(channels, out, 4, stride, 1, bias=norm_layer is None)]
            layers += ([norm_layer] if norm_layer is not None else []) + [nn.LeakyReLU(0.2, True)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, 1, 1))
        self.layers = nn.Sequential(*layers)
        for m in self.modules():  # pix2pix's init: N(0, 0.02)
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.layers(x)


@META_ARCH_REGISTRY.register()
class Pix2Pix(nn.Module):
    """Label map (one-hot, + the ignore channel, + an instance edge channel) -> image, the pix2pix way (Isola et al.
    2017): a U-Net generator, a PatchGAN discriminator on (label, image) pairs, the GAN loss plus L1 to the real
    image. It trains in two alternating steps (``training_steps``; seg_d2's trainer calls ``model(data, step=s)``
    for each, with its own backward and optimizer step): the discriminator on real and (detached) generated
    images, then the generator against the updated discriminator. Its noise is the paper's: dropout on the coarse
    decoder blocks (all but the full-resolution one), in training and inference alike (``dropout``; 0 = none, an
    image then follows from its label map alone, and new images come only from new label maps).

    Inputs: detectron2's list of dicts with ``sem_seg`` (H x W labels), in training also ``image``; with
    ``instance_edges``, ``instance_ids`` (H x W) or ``instances.gt_masks``. Inference returns one dict per input
    with ``image``: the generated C x H x W image in the input's pixel range and format (0..``max_pixel_value``).
    """

    training_steps = ("discriminator", "generator")
    reads_label_maps = True  # the data loaders give it label maps in inference too
    generates_images = True  # evaluated against the real images, with sample grids

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        image_channels: int = 3,
        ignore_value: int = 255,
        use_instance_edges: bool = False,
        generator_channels: int = 32,
        generator_depth: int = 4,
        discriminator_channels: int = 32,
        discriminator_layers: int = 3,
        norm: str = "BN",
        l1_weight: float = 100.0,
        gan_loss: str = "vanilla",
        max_pixel_value: float = 255.0,
        dropout: float = 0.0,
        padding_mode: str = "zeros",
        spade: bool = False,
    ):
        """
        Args:
            num_classes: classes of the label maps (their values 0..num_classes-1, or ``ignore_value``).
            image_channels: channels of the generated images (3 for BGR/RGB, 1 for gray).
            ignore_value: the label of unlabelled pixels, a generator input of its own.
            use_instance_edges: add the instance edge channel (:func:`instance_edges`).
            generator_channels, generator_depth: the U-Net generator's first-level channels and levels.
            discriminator_channels, discriminator_layers: the PatchGAN's first channels and stride-2 layers.
            norm: normalization of both nets ("BN" as pix2pix, "GN", "" ...).
            l1_weight: weight of the L1 loss against the GAN loss (100 in the paper).
            gan_loss: "vanilla" (the paper's cross-entropy) or "lsgan" (least squares, Mao et al. 2017).
            max_pixel_value: the images' white (255 for 8-bit); pixels are mapped to [-1, 1] for the generator's tanh.
            dropout: rate of the generator's noise, dropout after each coarse decoder block, kept on in inference
                (pix2pix's 0.5; 0 = none).
            padding_mode: the generator's conv padding, "zeros" or "reflect" (pix2pixHD's and CycleGAN's): zero
                padding tells every layer where the border is, which a generator can paint as a frame.
            spade: replace the norms of the generator's decoder by :class:`SPADE` on the label channels (Park 2019);
                its own convs take ``generator_channels`` hidden channels.
        """
        super().__init__()
        if gan_loss not in ("vanilla", "lsgan"):
            raise ValueError(f"MODEL.PIX2PIX.GAN_LOSS must be 'vanilla' or 'lsgan', got {gan_loss!r}")
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.use_instance_edges = use_instance_edges
        self.l1_weight = l1_weight
        self.gan_loss = gan_loss
        self.max_pixel_value = max_pixel_value
        in_channels = num_classes + 1 + int(use_instance_edges)
        self.encoder = UNetEncoder(in_channels=in_channels, base_channels=generator_channels, depth=generator_depth,
                                   norm=norm)
        self.decoder = UNetHead(self.encoder.output_shape(), num_classes=image_channels, norm=norm,
                                decoder_channels=[generator_channels * 2 ** k for k in range(generator_depth - 2, -1, -1)])
        self.discriminator = PatchDiscriminator(in_channels + image_channels, base_channels=discriminator_channels,
                                                num_layers=discriminator_layers, norm=norm)
        self._spade: List[SPADE] = []  # a plain list: the modules are registered in the decoder
        if spade:
            if not norm:
                raise ValueError("MODEL.PIX2PIX.SPADE replaces the generator's norms: it needs MODEL.PIX2PIX.NORM")
            for block in self.decoder.blocks:  # double_conv: Sequentials of conv, norm, ReLU
                for layer in block:
                    self._spade.append(SPADE(layer[0].out_channels, in_channels, hidden_channels=generator_channels,
                                             norm="GN" if norm == "GN" else "BN"))
                    layer[1] = self._spade[-1]
        if padding_mode not in ("zeros", "reflect"):
            raise ValueError(f"MODEL.PIX2PIX.PADDING_MODE must be 'zeros' or 'reflect', got {padding_mode!r}")
        for module in (self.encoder, self.decoder):
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d) and any(conv.padding):  # not a weight: checkpoints are unchanged
                    conv.padding_mode = padding_mode
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MODEL.PIX2PIX.DROPOUT must be in [0, 1), got {dropout}")
        self.dropout = dropout
        if dropout:  # a hook, not a module: the state dict (and checkpoints without dropout) stay as they are
            for block in list(self.decoder.blocks)[:-1]:
                block.register_forward_hook(_dropout_hook(dropout))

    @classmethod
    def from_config(cls, cfg):
        p = cfg.MODEL.PIX2PIX
        return {
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "image_channels": len(cfg.MODEL.PIXEL_MEAN),
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "use_instance_edges": p.INSTANCE_EDGES,
            "generator_channels": p.GENERATOR_CHANNELS,
            "generator_depth": p.GENERATOR_DEPTH,
            "discriminator_channels": p.DISCRIMINATOR_CHANNELS,
            "discriminator_layers": p.DISCRIMINATOR_LAYERS,
            "norm": resolve_norm(p.NORM, cfg.MODEL.DEVICE),
            "l1_weight": p.L1_WEIGHT,
            "gan_loss": p.GAN_LOSS,
            "max_pixel_value": p.MAX_PIXEL_VALUE,
            "dropout": p.DROPOUT,
            "padding_mode": p.PADDING_MODE,
            "spade": p.SPADE,
        }

    @property
    def device(self):
        return self.decoder.predictor.weight.device

    @property
    def size_divisibility(self) -> int:
        return self.encoder.size_divisibility

    def generator_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("discriminator.")]

    def generate(self, labels: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) label channels, H and W multiples of ``size_divisibility`` -> images in [-1, 1]."""
        for m in self._spade:
            m.label_map = labels
        try:
            logits, _ = self.decoder.layers(self.encoder(labels))
        finally:
            for m in self._spade:
                m.label_map = None  # no reference to a batch kept between calls
        return torch.tanh(logits)

    def check_input(self, x: dict, with_image: bool = False):
        """Raise :class:`LabelMapError`, naming the file, for an input the generator cannot take."""
        name = x.get("sem_seg_file_name", x.get("file_name", "an input without a file name"))
        if "sem_seg" not in x:
            raise LabelMapError(f"{name}: Pix2Pix needs the label map ('sem_seg'), the dict has {sorted(x)}")
        sem_seg = x["sem_seg"]
        if sem_seg.dim() != 2:
            raise LabelMapError(f"Label map {name} has shape {tuple(sem_seg.shape)}: the generator takes one H x W "
                                f"map of class ids (not a colour image)")
        if min(sem_seg.shape) < self.size_divisibility:
            raise LabelMapError(f"Label map {name} is {sem_seg.shape[0]}x{sem_seg.shape[1]}: the generator takes maps "
                                f"of at least {self.size_divisibility} pixels a side (its encoder's total stride, "
                                f"MODEL.PIX2PIX.GENERATOR_DEPTH {len(self.encoder.blocks)})")
        bad = (sem_seg != self.ignore_value) & ((sem_seg < 0) | (sem_seg >= self.num_classes))
        if bad.any():
            values = torch.unique(sem_seg[bad]).tolist()
            raise LabelMapError(f"Label map {name} has values {values[:10]} the generator was not trained on: it "
                                f"knows classes 0..{self.num_classes - 1} and the ignore label {self.ignore_value}")
        if with_image:
            if "image" not in x:
                raise LabelMapError(f"{name}: training Pix2Pix needs the real image ('image') with the label map")
            if tuple(x["image"].shape[-2:]) != tuple(sem_seg.shape):
                raise LabelMapError(f"{name}: image {tuple(x['image'].shape[-2:])} and label map {tuple(sem_seg.shape)}"
                                    f" differ in size")
        if self.use_instance_edges and "instance_ids" not in x and "instances" not in x:
            raise LabelMapError(f"{name}: MODEL.PIX2PIX.INSTANCE_EDGES needs the instances ('instance_ids' or "
                                f"'instances' with gt_masks), the dict has {sorted(x)}")

    def _instance_ids(self, x: dict) -> torch.Tensor:
        if "instance_ids" in x:
            return x["instance_ids"]
        masks = x["instances"].gt_masks
        h, w = x["sem_seg"].shape
        if not isinstance(masks, torch.Tensor):
            from detectron2.structures import BitMasks, PolygonMasks

            masks = (BitMasks.from_polygon_masks(masks, h, w) if isinstance(masks, PolygonMasks) else masks).tensor
        ids = torch.zeros((h, w), dtype=torch.long)
        for k, m in enumerate(masks.to("cpu")):
            ids[m.bool()] = k + 1
        return ids

    def _batch(self, batched_inputs: Sequence[dict], with_image: bool):
        """Padded label channels (N, C_in, H, W), images in [-1, 1] or None, the valid-pixel mask (N, 1, H, W)
        and each input's size."""
        for x in batched_inputs:
            self.check_input(x, with_image)
        sizes = [tuple(x["sem_seg"].shape) for x in batched_inputs]
        d = self.size_divisibility
        h = -(-max(s[0] for s in sizes) // d) * d
        w = -(-max(s[1] for s in sizes) // d) * d
        valid = torch.zeros((len(batched_inputs), 1, h, w), device=self.device)
        sem_seg, ids, images = [], [], []
        for i, (x, (hi, wi)) in enumerate(zip(batched_inputs, sizes)):
            # the maps are padded with their own edge pixels, as the generator saw maps in training (random
            # crops, never padded): a band of "ignore" or of no class would be an input it never met, and it
            # painted that band's influence as a frame around the image
            sem_seg.append(_pad_edge(x["sem_seg"].to(self.device), h, w))
            valid[i, :, :hi, :wi] = 1
            if self.use_instance_edges:
                ids.append(_pad_edge(self._instance_ids(x).to(self.device), h, w))
            if with_image:
                images.append(_pad_edge(x["image"].to(self.device).float() / self.max_pixel_value * 2 - 1, h, w))
        sem_seg = torch.stack(sem_seg)
        images = torch.stack(images) if with_image else None
        labels = label_channels(sem_seg, self.num_classes, self.ignore_value)
        if self.use_instance_edges:
            labels = torch.cat([labels, instance_edges(torch.stack(ids))], dim=1)
        return labels, images, valid, sizes

    def _gan(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.full_like(logits, 1.0 if real else 0.0)
        if self.gan_loss == "lsgan":
            return F.mse_loss(logits, target)
        return F.binary_cross_entropy_with_logits(logits, target)

    def forward(self, batched_inputs: List[dict], step: Optional[str] = None):
        if not self.training:
            return self.inference(batched_inputs)
        if step not in self.training_steps:
            raise ValueError(f"Pix2Pix trains in alternating steps {self.training_steps}: call model(data, step=...) "
                             f"for each (tools/train_net.py's trainer does); got step={step!r}")
        if comm.get_world_size() > 1:
            raise NotImplementedError("Pix2Pix training in several processes (--num-gpus > 1) is not implemented: its "
                                      "alternating steps freeze the discriminator, which DistributedDataParallel's "
                                      "gradient sync does not allow. Train with --num-gpus 1.")
        labels, real, valid, _ = self._batch(batched_inputs, with_image=True)
        if step == "discriminator":
            with torch.no_grad():
                fake = self.generate(labels) * valid + real * (1 - valid)  # padding: the same in both
            real_logits = self.discriminator(torch.cat([labels, real], 1))
            fake_logits = self.discriminator(torch.cat([labels, fake], 1))
            # halved, as in pix2pix: the discriminator learns more slowly than the generator
            return {"loss_d_real": 0.5 * self._gan(real_logits, True), "loss_d_fake": 0.5 * self._gan(fake_logits, False)}
        fake = self.generate(labels) * valid + real * (1 - valid)
        self.discriminator.requires_grad_(False)  # its gradient here would push it the generator's way
        try:
            fake_logits = self.discriminator(torch.cat([labels, fake], 1))
        finally:
            self.discriminator.requires_grad_(True)
        l1 = (fake - real).abs().sum() / (valid.sum() * real.shape[1])
        return {"loss_g_gan": self._gan(fake_logits, True), "loss_g_l1": self.l1_weight * l1}

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[Dict[str, torch.Tensor]]:
        """Generated images, each at its label map's size, or resized to the input's ``height``/``width``."""
        labels, _, _, sizes = self._batch(batched_inputs, with_image=False)
        fake = self.generate(labels)
        results = []
        for x, f, (h, w) in zip(batched_inputs, fake, sizes):
            image = (f[:, :h, :w] + 1) / 2 * self.max_pixel_value
            out_h, out_w = x.get("height", h), x.get("width", w)
            if (out_h, out_w) != (h, w):
                image = F.interpolate(image[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
            results.append({"image": image.clamp(0, self.max_pixel_value)})
        return results
