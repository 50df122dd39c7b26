"""Evaluation of a label map -> image generator (Pix2Pix) against the real images of a dataset: L1 and PSNR.
(No FID: its Inception weights cannot be had here; a generator's use is measured downstream, benchmarks/bench_synthesis.)"""
import itertools
import logging
import math
from collections import OrderedDict

import numpy as np

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

__all__ = ["ImageSynthesisEvaluator"]


class ImageSynthesisEvaluator(DatasetEvaluator):
    """Each generated ``image`` against the real image of its input's ``file_name`` (read in ``image_format``, at
    its own size): mean absolute error in pixel values (``L1``) and PSNR in dB with ``max_pixel_value`` as peak,
    both averaged over images; results under the task "image_synthesis"."""

    def __init__(self, dataset_name: str, *, image_format: str = "BGR", max_pixel_value: float = 255.0):
        self.dataset_name = dataset_name
        self.image_format = image_format
        self.max_pixel_value = max_pixel_value
        self._scores = []

    def reset(self):
        self._scores = []

    def process(self, inputs, outputs):
        from seg_d2.data.image_io import read_image

        for x, out in zip(inputs, outputs):
            real = read_image(x["file_name"], self.image_format).astype(np.float64)
            fake = out["image"].to("cpu").numpy().transpose(1, 2, 0).astype(np.float64)
            if real.shape != fake.shape:
                raise ValueError(f"Generated image for {x['file_name']} is {fake.shape} (HxWxC), the real one "
                                 f"{real.shape}: the model must output images at the input's height and width")
            mse = float(np.mean((real - fake) ** 2))
            psnr = math.inf if mse == 0 else 10 * math.log10(self.max_pixel_value ** 2 / mse)
            self._scores.append((float(np.mean(np.abs(real - fake))), psnr))

    def evaluate(self):
        scores = list(itertools.chain(*comm.gather(self._scores, dst=0)))
        if not comm.is_main_process():
            return {}
        if not scores:
            logging.getLogger(__name__).warning(f"[ImageSynthesisEvaluator] no predictions on {self.dataset_name}")
            return {}
        l1, psnr = np.mean(scores, axis=0)
        return OrderedDict(image_synthesis={"L1": float(l1), "PSNR": float(psnr), "images": len(scores)})
