"""A variational autoencoder over label maps (Kingma & Welling 2014): it learns the layouts of a dataset's label
maps and samples new ones, for tools/synthesize.py's pairs (seg_d2.modeling.pix2pix paints them)."""
from typing import List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import get_norm
from detectron2.modeling import META_ARCH_REGISTRY

from .norm import resolve_norm
from .pix2pix import LabelMapError, label_channels

__all__ = ["LabelMapVAE"]


def _down(cin, cout, norm):
    n = get_norm(norm, cout)
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=n is None), *([n] if n is not None else []),
                         nn.LeakyReLU(0.2, True))


def _up(cin, cout, norm):
    n = get_norm(norm, cout)
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=n is None), *([n] if n is not None else []),
                         nn.ReLU(True))


@META_ARCH_REGISTRY.register()
class LabelMapVAE(nn.Module):
    """Label maps, resized (nearest) to ``size``, one-hot with a channel for unlabelled pixels, through a strided
    conv encoder to a ``latent_dim`` Gaussian, and back through a transposed-conv decoder to per-pixel class logits.
    Trained by cross-entropy reconstruction plus ``kl_weight`` x KL(q(z|x) || N(0, I)). ``sample`` decodes z into new
    label maps (the argmax class per pixel), z from N(0, I) or, after ``fit_latents``, from a Gaussian fitted to the
    training maps' codes.

    Inputs: detectron2's list of dicts with ``sem_seg``. Inference returns, per input, ``sem_seg``: the
    reconstruction's class scores (C x H x W, at the input's ``height``/``width``), so a ``sem_seg`` evaluator
    gives its mIoU against the input.
    """

    reads_label_maps = True  # its input is the label map, in inference too

    @configurable
    def __init__(self, *, num_classes: int, ignore_value: int = 255, size: Sequence[int] = (128, 128),
                 channels: int = 32, depth: int = 4, latent_dim: int = 64, kl_weight: float = 1e-3, norm: str = "BN"):
        """
        Args:
            num_classes, ignore_value: the label maps' classes (0..num_classes-1) and unlabelled value.
            size: (H, W) the maps are modelled at; multiples of 2**depth.
            channels, depth: the first conv's channels (doubling per level, at most 8x) and the stride-2 levels.
            latent_dim: dimensions of z.
            kl_weight: weight of the KL term against the per-pixel mean cross-entropy.
        """
        super().__init__()
        h, w = size
        if h % 2 ** depth or w % 2 ** depth:
            raise ValueError(f"MODEL.LABEL_MAP_VAE.SIZE {list(size)} must be multiples of 2**DEPTH = {2 ** depth}")
        self.num_classes, self.ignore_value, self.size, self.latent_dim = num_classes, ignore_value, (h, w), latent_dim
        self.kl_weight = kl_weight
        widths = [channels * min(2 ** k, 8) for k in range(depth)]
        enc, cin = [], num_classes + 1
        for c in widths:
            enc.append(_down(cin, c, norm))
            cin = c
        self.encoder = nn.Sequential(*enc)
        self.grid = (h // 2 ** depth, w // 2 ** depth)
        flat = widths[-1] * self.grid[0] * self.grid[1]
        self.to_stats = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        dec = []
        for c in widths[::-1][1:]:
            dec.append(_up(cin, c, norm))
            cin = c
        dec.append(nn.ConvTranspose2d(cin, num_classes + 1, 4, 2, 1))
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("_dummy", torch.zeros(0), persistent=False)
        self._latent_prior = None  # (mean, Cholesky factor) of fit_latents; not saved: fitted to the maps at hand

    @classmethod
    def from_config(cls, cfg):
        v = cfg.MODEL.LABEL_MAP_VAE
        return {"num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                "size": tuple(v.SIZE), "channels": v.CHANNELS, "depth": v.DEPTH, "latent_dim": v.LATENT_DIM,
                "kl_weight": v.KL_WEIGHT, "norm": resolve_norm(v.NORM, cfg.MODEL.DEVICE)}

    @property
    def device(self):
        return self._dummy.device

    def _targets(self, batched_inputs) -> torch.Tensor:
        """(N, H, W) labels at ``size``; the ignore label as class ``num_classes``."""
        maps = []
        for x in batched_inputs:
            lab = x["sem_seg"].to(self.device)
            name = x.get("sem_seg_file_name", x.get("file_name", "an input without a file name"))
            bad = (lab != self.ignore_value) & ((lab < 0) | (lab >= self.num_classes))
            if lab.dim() != 2 or bad.any():
                raise LabelMapError(f"Label map {name}: the VAE takes H x W maps of classes 0..{self.num_classes - 1} "
                                    f"and {self.ignore_value}, got shape {tuple(lab.shape)}, values "
                                    f"{torch.unique(lab[bad]).tolist()[:10] if lab.dim() == 2 else '-'}")
            lab = torch.where(lab == self.ignore_value, torch.full_like(lab, self.num_classes), lab)
            maps.append(F.interpolate(lab[None, None].float(), size=self.size, mode="nearest")[0, 0].long())
        return torch.stack(maps)

    def encode(self, targets: torch.Tensor):
        """(N, H, W) targets of ``_targets`` -> the posterior's mean and log-variance, (N, latent_dim) each."""
        onehot = label_channels(targets, self.num_classes, self.num_classes)  # the ignore class is the last channel
        mu, logvar = self.to_stats(self.encoder(onehot).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    @torch.no_grad()
    def fit_latents(self, labels: Sequence) -> None:
        """Ex-post density estimation (Ghosh et al. 2020): sample z from a Gaussian fitted to the codes of ``labels``
        (H x W maps) -- their mean, their covariance plus the mean posterior variance -- instead of N(0, I). With
        sparse maps (objects on a background) N(0, I)'s draws between the codes decode to background only."""
        was_training = self.training
        self.eval()
        mu, logvar = self.encode(self._targets([{"sem_seg": torch.as_tensor(lab)} for lab in labels]))
        self.train(was_training)
        cov = torch.diag(logvar.exp().mean(0))
        if len(mu) > 1:
            cov = cov + torch.cov(mu.T)
        self._latent_prior = (mu.mean(0), torch.linalg.cholesky(cov.double()).float())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.from_latent(z).view(z.shape[0], -1, *self.grid)
        return self.decoder(x)

    def forward(self, batched_inputs: List[dict]):
        targets = self._targets(batched_inputs)
        mu, logvar = self.encode(targets)
        if not self.training:
            logits = self.decode(mu)
            return [{"sem_seg": F.interpolate(lg[None, :self.num_classes], size=(x.get("height", self.size[0]),
                                                                              x.get("width", self.size[1])),
                                              mode="nearest")[0].softmax(0)}
                    for lg, x in zip(logits, batched_inputs)]
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.decode(z)
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu ** 2 - logvar.exp(), dim=1))
        return {"loss_recon": F.cross_entropy(logits, targets), "loss_kl": self.kl_weight * kl}

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None, size: Optional[Sequence[int]] = None):
        """``n`` new label maps (H x W int64 numpy arrays at ``size``, default the model's): z drawn (see
        ``fit_latents``) and decoded, the most likely class per pixel, unlabelled pixels as ``ignore_value``."""
        z = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        if self._latent_prior is not None:
            mean, chol = self._latent_prior
            z = mean + z @ chol.T
        labels = self.decode(z).argmax(1)
        labels = torch.where(labels == self.num_classes, torch.full_like(labels, self.ignore_value), labels)
        if size is not None and tuple(size) != self.size:
            labels = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()
        return [lab.cpu().numpy() for lab in labels]
