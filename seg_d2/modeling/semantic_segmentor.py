"""detectron2's SemanticSegmentor with sliding-window inference, TTA and inference options switched on
in config."""
import contextlib
import copy
import logging
from typing import Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, SemanticSegmentor
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import ImageList
from detectron2.utils.logger import log_first_n

from .norm import fuse_conv_bn_
from .sem_seg_inference import sliding_window_inference, tta_inference

__all__ = ["SegD2SemanticSegmentor", "check_inference_options"]

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _inference_options_set(cfg) -> list:
    return [k for k, on in [("TEST.CHANNELS_LAST", cfg.TEST.CHANNELS_LAST), ("TEST.AMP.ENABLED", cfg.TEST.AMP.ENABLED),
                            ("TEST.COMPILE.ENABLED", cfg.TEST.COMPILE.ENABLED),
                            ("TEST.FUSE_CONV_BN", cfg.TEST.FUSE_CONV_BN)] if on]


def check_inference_options(cfg) -> None:
    """Raise if ``cfg`` turns on an inference option (``TEST.CHANNELS_LAST``, ``TEST.AMP``,
    ``TEST.COMPILE``, ``TEST.FUSE_CONV_BN``) that its model does not apply: they are implemented by
    :class:`SegD2SemanticSegmentor` only, not by instance models (GeneralizedRCNN, RetinaNet) nor by
    detectron2's plain SemanticSegmentor.

    Raises:
        NotImplementedError: naming the keys and ``MODEL.META_ARCHITECTURE``.
    """
    keys = _inference_options_set(cfg)
    if not keys:
        return
    arch = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE) if cfg.MODEL.META_ARCHITECTURE in META_ARCH_REGISTRY \
        else None
    if isinstance(arch, type) and issubclass(arch, SegD2SemanticSegmentor):
        return
    raise NotImplementedError(
        f"{', '.join(keys)}: these inference options are implemented for semantic models "
        f"(MODEL.META_ARCHITECTURE \"SegD2SemanticSegmentor\") only, not for "
        f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}: set them to False."
    )


class _BackboneHead(nn.Module):
    """Backbone + semantic head as one module mapping a padded batch to logits: what is compiled."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x), None)[0]


@META_ARCH_REGISTRY.register()
class SegD2SemanticSegmentor(SemanticSegmentor):
    """:class:`SemanticSegmentor`, unchanged in training and, by default, in inference.

    SemanticSegmentor already takes any input size: it pads the batch to the backbone's
    ``size_divisibility`` and ``sem_seg_postprocess`` crops the logits back to the image and resizes
    them to its original height and width. This class only adds, when enabled in config, inference
    image by image over sliding windows, stacked ``window_batch_size`` at a time
    (``TEST.SLIDING_WINDOW``), flip and multi-scale TTA (``TEST.SEM_SEG_TTA``), and inference options:
    channels-last memory format (``TEST.CHANNELS_LAST``), autocast (``TEST.AMP``), batch norms folded into
    the convolutions (``TEST.FUSE_CONV_BN``) and ``torch.compile`` of backbone + head (``TEST.COMPILE``).
    The output is detectron2's: ``[{"sem_seg": K x H x W logits}]`` (float32 whatever the options),
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
        window_batch_size: int = 1,
        tta: bool = False,
        tta_flip: bool = True,
        tta_scales: Sequence[float] = (1.0,),
        channels_last: bool = False,
        amp: bool = False,
        amp_dtype: str = "float16",
        compile: bool = False,
        compile_backend: str = "inductor",
        compile_mode: str = "default",
        fuse_conv_bn: bool = False,
        **kwargs,
    ):
        """
        Args:
            sliding_window, window_size, window_overlap, window_blending, window_batch_size: see
                :func:`sliding_window_inference` (``window_batch_size`` is its ``batch_size``).
            tta, tta_flip, tta_scales: see :func:`tta_inference`.
            channels_last: run backbone and head in ``torch.channels_last`` memory format.
            amp, amp_dtype: autocast backbone and head to ``amp_dtype`` ("float16" or "bfloat16");
                on CPU always bfloat16 (float16 convolutions are slower than float32 on CPUs).
            compile, compile_backend, compile_mode: ``torch.compile`` backbone + head, built at the
                first inference; the weights stay shared with this model.
            fuse_conv_bn: infer with a copy of backbone + head whose batch norms are folded into the
                convolutions (:func:`fuse_conv_bn_`), made again whenever the weights have changed.
            kwargs: arguments of :class:`SemanticSegmentor`.
        """
        super().__init__(**kwargs)
        if window_batch_size < 1:
            raise ValueError(f"TEST.SLIDING_WINDOW.BATCH_SIZE must be >= 1, got {window_batch_size}")
        if amp_dtype not in _AMP_DTYPES:
            raise ValueError(f"TEST.AMP.DTYPE must be one of {sorted(_AMP_DTYPES)}, got {amp_dtype!r}")
        self.sliding_window = sliding_window
        self.window_size = tuple(window_size)
        self.window_overlap = window_overlap
        self.window_blending = window_blending
        self.window_batch_size = window_batch_size
        self.tta = tta
        self.tta_flip = tta_flip
        self.tta_scales = tuple(tta_scales)
        self.channels_last = channels_last
        self.amp = amp
        self.amp_dtype = amp_dtype
        self.compile = compile
        self.compile_backend = compile_backend
        self.compile_mode = compile_mode
        self.fuse_conv_bn = fuse_conv_bn
        # a plain dict, so that these wrappers are no submodules (no duplicate state_dict keys)
        self._nets = {}

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        sw, tta = cfg.TEST.SLIDING_WINDOW, cfg.TEST.SEM_SEG_TTA
        ret.update(
            sliding_window=sw.ENABLED, window_size=tuple(sw.SIZE), window_overlap=sw.OVERLAP,
            window_blending=sw.BLENDING, window_batch_size=sw.BATCH_SIZE,
            tta=tta.ENABLED, tta_flip=tta.FLIP, tta_scales=tuple(tta.SCALES),
            channels_last=cfg.TEST.CHANNELS_LAST, amp=cfg.TEST.AMP.ENABLED, amp_dtype=cfg.TEST.AMP.DTYPE,
            compile=cfg.TEST.COMPILE.ENABLED, compile_backend=cfg.TEST.COMPILE.BACKEND,
            compile_mode=cfg.TEST.COMPILE.MODE, fuse_conv_bn=cfg.TEST.FUSE_CONV_BN,
        )
        return ret

    def _autocast(self):
        if not self.amp:
            return contextlib.nullcontext()
        dtype = _AMP_DTYPES[self.amp_dtype]
        if self.device.type == "cpu" and dtype != torch.bfloat16:
            dtype = torch.bfloat16  # CPU float16 convolutions are slower than float32
            log_first_n(logging.INFO, f"TEST.AMP on CPU: autocast to bfloat16 (TEST.AMP.DTYPE {self.amp_dtype!r} "
                        f"is used on CUDA).", n=1, name=__name__)
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _weights_version(self) -> tuple:
        """Changes whenever a parameter or buffer is written (an optimizer step, load_state_dict)."""
        return tuple((id(t), t._version) for t in (*self.parameters(), *self.buffers()))

    def _net(self):
        """Backbone + head: compiled if ``self.compile``; channels-last if ``self.channels_last``; a copy with
        the batch norms folded in if ``self.fuse_conv_bn``."""
        if self.channels_last:  # a no-op once converted; weights loaded later keep the format
            self.backbone.to(memory_format=torch.channels_last)
            self.sem_seg_head.to(memory_format=torch.channels_last)
        if "eager" not in self._nets:
            self._nets["eager"] = _BackboneHead(self.backbone, self.sem_seg_head)
        net = self._nets["eager"]
        if self.fuse_conv_bn:
            version = self._weights_version()
            if self._nets.get("fused_version") != version:
                with torch.no_grad():
                    # inference only; and a trace (FLOP counting, export) takes its weights, which are not the
                    # model's parameters, as constants, which it refuses while they require grad
                    self._nets["fused"] = fuse_conv_bn_(copy.deepcopy(net).eval()).requires_grad_(False)
                self._nets["fused_version"] = version
                self._nets.pop("compiled", None)  # compiled from the stale copy
            net = self._nets["fused"]
        if not self.compile:
            return net
        if "compiled" not in self._nets:
            try:
                if self.compile_backend == "inductor" and self.device.type == "cpu":
                    from torch._inductor.cpp_builder import get_cpp_compiler

                    get_cpp_compiler()  # fail now, naming the compiler, rather than deep in compilation
                self._nets["compiled"] = torch.compile(
                    net, backend=self.compile_backend,
                    mode=None if self.compile_mode == "default" else self.compile_mode,
                )
            except Exception as e:  # no C++ compiler, an unknown backend or mode
                raise RuntimeError(self._compile_error(e)) from e
        return self._nets["compiled"]

    def _compile_error(self, e: Exception) -> str:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (
            f"TEST.COMPILE: torch.compile(backend={self.compile_backend!r}, mode={self.compile_mode!r}) of "
            f"{type(self).__name__}'s backbone + head failed on {self.device.type}: {cause}. The inductor "
            f"backend needs a working C++ compiler on CPU (g++, see torch._inductor.config.cpp.cxx) and "
            f"Triton on CUDA; otherwise set TEST.COMPILE.ENABLED False."
        )

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        """Float logits (N, K, h, w) of normalized images (N, C, h, w), padded to the backbone's
        ``size_divisibility`` (with zeros, as :meth:`ImageList.from_tensors`) and cropped back."""
        h, w = images.shape[-2:]
        d = self.backbone.size_divisibility
        if d > 1:
            images = F.pad(images, (0, -w % d, 0, -h % d))
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        net = self._net()
        with self._autocast():
            if not self.compile:
                logits = net(images)
            else:
                from torch._dynamo.exc import BackendCompilerFailed  # compiled at a call (first, new shapes)

                try:
                    logits = net(images)
                except BackendCompilerFailed as e:
                    raise RuntimeError(self._compile_error(e)) from e
        return logits[:, :, :h, :w].float()

    def _predict_one(self, image: torch.Tensor) -> torch.Tensor:
        return self._predict(image[None])[0]

    def _predict_windows(self, image: torch.Tensor) -> torch.Tensor:
        if not self.sliding_window:
            return self._predict_one(image)
        b = self.window_batch_size
        return sliding_window_inference(
            self._predict if b > 1 else self._predict_one, image, self.window_size, self.window_overlap,
            self.window_blending, batch_size=b,
        )

    def forward(self, batched_inputs):
        options = self.channels_last or self.amp or self.compile or self.fuse_conv_bn
        if self.training or not (self.sliding_window or self.tta or options):
            return super().forward(batched_inputs)
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        if not (self.sliding_window or self.tta):  # detectron2's inference: one padded batch
            batch = ImageList.from_tensors(images, self.backbone.size_divisibility)
            logits = list(self._predict(batch.tensor))
        else:
            logits = [
                tta_inference(self._predict_windows, image, self.tta_scales, self.tta_flip) if self.tta
                else self._predict_windows(image) for image in images
            ]
        return [
            {"sem_seg": sem_seg_postprocess(r, image.shape[-2:], x.get("height", image.shape[-2]),
                                            x.get("width", image.shape[-1]))}
            for r, image, x in zip(logits, images, batched_inputs)
        ]
