"""detectron2's SemanticSegmentor with sliding-window inference and TTA switched on in config."""
from typing import Sequence, Tuple

import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList

from .sem_seg_inference import sliding_window_inference, tta_inference

__all__ = ["SegD2SemanticSegmentor"]


@META_ARCH_REGISTRY.register()
class SegD2SemanticSegmentor(SemanticSegmentor):
    """:class:`SemanticSegmentor`, unchanged in training and, by default, in inference.

    SemanticSegmentor already takes any input size: it pads the batch to the backbone's
    ``size_divisibility`` and ``sem_seg_postprocess`` crops the logits back to the image and resizes
    them to its original height and width. This class only adds, when enabled in config
    (``TEST.SLIDING_WINDOW``, ``TEST.SEM_SEG_TTA``), inference image by image over sliding windows
    and/or flip and multi-scale TTA. The output is detectron2's: ``[{"sem_seg": K x H x W logits}]``,
    K = 2 (background, foreground) for a binary model (``NUM_CLASSES`` 1), whatever the inference.
    """

    @configurable
    def __init__(
        self,
        *,
        sliding_window: bool = False,
        window_size: Tuple[int, int] = (512, 1024),
        window_overlap: float = 0.25,
        window_blending: str = "gaussian",
        tta: bool = False,
        tta_flip: bool = True,
        tta_scales: Sequence[float] = (1.0,),
        **kwargs,
    ):
        """
        Args:
            sliding_window, window_size, window_overlap, window_blending: see
                :func:`sliding_window_inference`.
            tta, tta_flip, tta_scales: see :func:`tta_inference`.
            kwargs: arguments of :class:`SemanticSegmentor`.
        """
        super().__init__(**kwargs)
        self.sliding_window = sliding_window
        self.window_size = tuple(window_size)
        self.window_overlap = window_overlap
        self.window_blending = window_blending
        self.tta = tta
        self.tta_flip = tta_flip
        self.tta_scales = tuple(tta_scales)

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        sw, tta = cfg.TEST.SLIDING_WINDOW, cfg.TEST.SEM_SEG_TTA
        ret.update(
            sliding_window=sw.ENABLED, window_size=tuple(sw.SIZE), window_overlap=sw.OVERLAP,
            window_blending=sw.BLENDING, tta=tta.ENABLED, tta_flip=tta.FLIP, tta_scales=tuple(tta.SCALES),
        )
        return ret

    def _predict(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (K, h, w) of one normalized image (C, h, w), padded to the stride and cropped back."""
        images = ImageList.from_tensors([image], self.backbone.size_divisibility)
        logits, _ = self.sem_seg_head(self.backbone(images.tensor), None)
        h, w = image.shape[-2:]
        return logits[0, :, :h, :w]

    def _predict_windows(self, image: torch.Tensor) -> torch.Tensor:
        if not self.sliding_window:
            return self._predict(image)
        return sliding_window_inference(
            self._predict, image, self.window_size, self.window_overlap, self.window_blending
        )

    def forward(self, batched_inputs):
        if self.training or not (self.sliding_window or self.tta):
            return super().forward(batched_inputs)
        results = []
        for x in batched_inputs:
            image = (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std
            if self.tta:
                logits = tta_inference(self._predict_windows, image, self.tta_scales, self.tta_flip)
            else:
                logits = self._predict_windows(image)
            h, w = image.shape[-2:]
            results.append({"sem_seg": sem_seg_postprocess(logits, (h, w), x.get("height", h), x.get("width", w))})
        return results
