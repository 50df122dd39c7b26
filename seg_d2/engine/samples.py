"""Sample grids of a label map -> image generator during training: label | generated | real, one row per image."""
import itertools
import logging
import os
from typing import List, Sequence

import cv2
import numpy as np
import torch

from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["SampleGrids", "sample_grid"]


def to_bgr(image: np.ndarray, image_format: str) -> np.ndarray:
    """HxWxC image in ``image_format`` ("BGR", "RGB", "L"), any range 0..255 -> HxWx3 uint8 BGR for OpenCV."""
    image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return image[:, :, ::-1] if image_format == "RGB" else image


def sample_grid(labels: Sequence[np.ndarray], images: Sequence[Sequence[np.ndarray]], colors: np.ndarray,
                ignore_value: int = 255) -> np.ndarray:
    """One row per label map: the label map in ``colors`` (RGB, last row = ignored) and then each of its images
    (HxWx3 uint8 BGR, the label's size), separated by 2-pixel white gaps; returned as BGR uint8."""
    rows = []
    for lab, row_images in zip(labels, images):
        index = np.where(lab == ignore_value, len(colors) - 1, np.clip(lab, 0, len(colors) - 2))
        cells = [colors[index][:, :, ::-1]] + list(row_images)
        gap = np.full((lab.shape[0], 2, 3), 255, np.uint8)
        row = np.concatenate(list(itertools.chain(*[(c, gap) for c in cells]))[:-1], axis=1)
        rows.append(np.pad(row, ((0, 2), (0, 0), (0, 0)), constant_values=255))
    full = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, full - r.shape[1]), (0, 0)), constant_values=255) for r in rows])


class SampleGrids(HookBase):
    """Every ``period`` iterations and after the last, the generator's images for the first ``num_images`` of a
    dataset (its test mapper: label maps in, real images for comparison) as ``output_dir/iter_NNNNNNN.png``:
    label | generated | real."""

    def __init__(self, cfg, dataset_name: str, period: int, num_images: int, output_dir: str):
        self.cfg, self.dataset_name, self.period, self.num_images = cfg, dataset_name, period, num_images
        self.output_dir = output_dir
        self._inputs: List[dict] = []

    def before_train(self):
        from seg_d2.data import build_test_loader

        loader = build_test_loader(self.cfg, self.dataset_name)
        self._inputs = [x for batch in itertools.islice(loader, self.num_images) for x in batch][: self.num_images]

    def after_step(self):
        it = self.trainer.iter + 1
        if comm.is_main_process() and (it % self.period == 0 or it == self.trainer.max_iter):
            self.write(os.path.join(self.output_dir, f"iter_{it:07d}.png"))

    @torch.no_grad()
    def write(self, path: str):
        from detectron2.data import MetadataCatalog

        from seg_d2.data.image_io import read_image
        from seg_d2.utils.visualizer import class_colors

        model = getattr(self.trainer.model, "module", self.trainer.model)
        was_training = model.training
        model.eval()
        try:
            outputs = model([{k: v for k, v in x.items() if k not in ("height", "width")} for x in self._inputs])
        finally:
            model.train(was_training)
        fmt = self.cfg.INPUT.FORMAT
        labels = [x["sem_seg"].numpy() for x in self._inputs]
        rows = []
        for x, out, lab in zip(self._inputs, outputs, labels):
            fake = to_bgr(out["image"].cpu().numpy().transpose(1, 2, 0) * (255.0 / model.max_pixel_value), fmt)
            real = read_image(x["file_name"], fmt).astype(np.float64) * (255.0 / model.max_pixel_value)
            real = cv2.resize(to_bgr(real, fmt), (lab.shape[1], lab.shape[0]), interpolation=cv2.INTER_AREA)
            rows.append([fake, real])
        # the class colours of every seg_d2 drawing, black for ignored pixels (the grid's last colour)
        colors = np.asarray(class_colors(MetadataCatalog.get(self.dataset_name), model.num_classes) + [(0, 0, 0)],
                            np.uint8)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, sample_grid(labels, rows, colors, model.ignore_value))
        logging.getLogger(__name__).info(f"Sample grid (label | generated | real): {path}")
