"""Semantic models (U-Net, FCN, any detectron2 ``SemanticSegmentor``) as a traceable image -> logits module."""
from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.modeling import SemanticSegmentor

__all__ = ["SemanticExportModule"]


class SemanticExportModule(nn.Module):
    """One image ``(C, H, W)`` (float, pixel values in ``INPUT.FORMAT``, at the size the model is run
    at) -> ``(logits (K, H, W), label map (H, W) int64)``, as ``SemanticSegmentor`` computes them:
    normalize, pad bottom/right with zeros to the backbone's ``size_divisibility``, backbone, head,
    crop back. K = 2 for a binary model. Any H and W work: under ``torch.jit.trace`` the padding and
    the crop follow the input's size (traced sizes are tensors), so the ONNX graph has dynamic H, W.

    What stays outside, in :class:`~seg_d2.export.predictor.ExportedPredictor`, as in detectron2's
    own export: the test-time resize (``INPUT.MIN_SIZE_TEST``) and the resize of the logits back to
    the original size, and sliding windows / TTA (``TEST.SLIDING_WINDOW``, ``TEST.SEM_SEG_TTA``),
    which call this module once per window or per scale.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not isinstance(model, SemanticSegmentor):
            raise ValueError(
                f"SemanticExportModule exports semantic models (a SemanticSegmentor, e.g. seg_d2's U-Net and FCN "
                f"configs), got {type(model).__name__}"
            )
        self.backbone = model.backbone
        self.sem_seg_head = model.sem_seg_head
        self.register_buffer("pixel_mean", model.pixel_mean.detach().clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().clone(), False)
        self.size_divisibility = int(model.backbone.size_divisibility)
        self.eval()

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = (image - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2], x.shape[-1]
        d = max(self.size_divisibility, 1)
        x = F.pad(x, [0, (d - w % d) % d, 0, (d - h % d) % d], value=0.0)  # as ImageList.from_tensors
        logits, _ = self.sem_seg_head(self.backbone(x[None]), None)
        logits = logits[0, :, :h, :w]
        return logits, logits.argmax(dim=0)
