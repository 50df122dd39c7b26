"""New label maps from a set of training label maps, so that generated image/label pairs are not copies of the
training masks: elastic warps (Simard et al. 2003) and object copy-paste between maps (Ghiasi et al. 2021),
combined by :class:`LabelMapSampler`. Label maps are H x W integer arrays; nearest-neighbour everywhere, so no
new label value ever appears."""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["LabelMapSampler", "copy_paste_objects", "elastic_warp", "label_map_instances"]


def label_map_instances(label: np.ndarray, object_classes: Sequence[int]) -> List[Tuple[int, np.ndarray]]:
    """(class, binary mask) of every 8-connected component of each of ``object_classes`` in ``label``."""
    found = []
    for c in object_classes:
        n, comps = cv2.connectedComponents((label == c).astype(np.uint8), connectivity=8)
        found += [(c, comps == k) for k in range(1, n)]
    return found


def elastic_warp(label: np.ndarray, rng: np.random.Generator, *, alpha: float = 8.0, sigma: float = 6.0) -> np.ndarray:
    """``label`` displaced by a random smooth field: uniform(-1, 1) per pixel, Gaussian-smoothed with ``sigma``
    pixels, scaled so that its largest displacement is ``alpha`` pixels; nearest-neighbour, borders reflected."""
    h, w = label.shape
    field = [cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma) for _ in range(2)]
    scale = alpha / max(float(np.abs(field[0]).max()), float(np.abs(field[1]).max()), 1e-6)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x, map_y = xx + field[0] * scale, yy + field[1] * scale
    # cv2.remap takes at most 4-channel 8/16-bit or 32-bit float images: labels as float32 (exact up to 2^24)
    out = cv2.remap(label.astype(np.float32), map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    return out.astype(label.dtype)


def copy_paste_objects(label: np.ndarray, donor: np.ndarray, rng: np.random.Generator, *, classes: Sequence[int],
                       max_objects: int = 3) -> np.ndarray:
    """``label`` with up to ``max_objects`` connected objects of ``classes`` cut from ``donor`` pasted on top,
    each at a uniformly random place where it fits whole (objects larger than ``label`` are skipped)."""
    out = label.copy()
    objects = label_map_instances(donor, classes)
    if not objects:
        return out
    for idx in rng.permutation(len(objects))[:max_objects]:
        c, mask = objects[idx]
        ys, xs = np.nonzero(mask)
        y0, x0 = ys.min(), xs.min()
        oh, ow = ys.max() - y0 + 1, xs.max() - x0 + 1
        if oh > out.shape[0] or ow > out.shape[1]:
            continue
        ty, tx = int(rng.integers(0, out.shape[0] - oh + 1)), int(rng.integers(0, out.shape[1] - ow + 1))
        out[ys - y0 + ty, xs - x0 + tx] = c
    return out


class LabelMapSampler:
    """Draws new label maps from ``labels`` (the training maps): one chosen at random, flipped (horizontally, and
    vertically if ``vertical_flip``, e.g. aerial images), elastically warped, and with objects of
    ``object_classes`` copy-pasted from another map; ``mode`` "copy" returns training maps unchanged (the control),
    "warp" only warps, "warp+paste" does both; "vae" draws from ``vae`` (a trained seg_d2 LabelMapVAE) at the size
    of a training map drawn at random."""

    MODES = ("copy", "warp", "warp+paste", "vae")

    def __init__(self, labels: List[np.ndarray], *, object_classes: Sequence[int], mode: str = "warp+paste",
                 vertical_flip: bool = False, alpha: float = 8.0, sigma: float = 6.0, max_objects: int = 3, vae=None):
        if mode not in self.MODES:
            raise ValueError(f"Label map sampler mode must be one of {self.MODES}, got {mode!r}")
        if not labels:
            raise ValueError("The label map sampler needs at least one training label map")
        if (mode == "vae") != (vae is not None):
            raise ValueError("The label map sampler takes a VAE with mode 'vae', and only then")
        self.labels, self.object_classes, self.mode, self.vae = labels, list(object_classes), mode, vae
        if vae is not None:
            vae.fit_latents(labels)  # draw codes like the training maps' (Ghosh et al. 2020), not from N(0, I)
        self.vertical_flip, self.alpha, self.sigma, self.max_objects = vertical_flip, alpha, sigma, max_objects

    def sample(self, rng: np.random.Generator, index: Optional[int] = None) -> np.ndarray:
        label = self.labels[int(rng.integers(len(self.labels))) if index is None else index]
        if self.mode == "vae":
            import torch

            seed = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
            return self.vae.sample(1, seed, size=label.shape)[0]
        if self.mode == "copy":
            return label.copy()
        if rng.random() < 0.5:
            label = label[:, ::-1]
        if self.vertical_flip and rng.random() < 0.5:
            label = label[::-1]
        label = elastic_warp(np.ascontiguousarray(label), rng, alpha=self.alpha, sigma=self.sigma)
        if self.mode == "warp+paste" and len(self.labels) > 1:
            donor = self.labels[int(rng.integers(len(self.labels)))]
            label = copy_paste_objects(label, donor, rng, classes=self.object_classes, max_objects=self.max_objects)
        return label
