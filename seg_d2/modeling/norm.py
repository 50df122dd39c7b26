"""Normalization layers for seg_d2's semantic heads and encoders."""
import math
from typing import Callable, Optional, Union

from torch import nn

from detectron2.layers import get_norm
from detectron2.utils import comm


def resolve_norm(norm: Union[str, Callable, None], device: str = "cpu") -> Union[str, Callable, None]:
    """``norm`` for ``detectron2.layers.get_norm``, with SyncBN made safe to use anywhere.

    ``nn.SyncBatchNorm`` needs a GPU process group (detectron2 #2174): in a single process plain BN
    computes the same statistics, and CPU processes (GLOO) use detectron2's ``NaiveSyncBatchNorm``,
    which synchronises with ``all_reduce`` on any backend.
    """
    if norm in ("SyncBN", "nnSyncBN"):
        if comm.get_world_size() == 1:
            return "BN"
        if not str(device).startswith("cuda"):
            return "naiveSyncBN"
    return norm


def resolve_cfg_norms(model_cfg, device: str = "cpu") -> dict:
    """Apply :func:`resolve_norm` to every ``NORM`` key under ``model_cfg`` (``cfg.MODEL``), in place, so that
    detectron2's own modules (ResNet, FPN, ROI heads) get a SyncBN that works where they run; returns
    {key: (old, new)} of the keys changed."""
    changed = {}

    def visit(node, prefix):
        for key, value in node.items():
            if hasattr(value, "items"):
                visit(value, f"{prefix}{key}.")
            elif key == "NORM" and isinstance(value, str):
                new = resolve_norm(value, device)
                if new != value:
                    node[key] = new
                    changed[prefix + key] = (value, new)

    visit(model_cfg, "MODEL.")
    return changed


CONV_INIT_MODES = ("fan_out", "fan_in")


def conv_norm_act(in_channels: int, out_channels: int, norm, kernel_size: int = 3,
                  init_mode: str = "fan_out") -> nn.Sequential:
    """Conv (no bias when normalized) -> norm -> ReLU, He-initialised (He et al. 2015) in ``init_mode``:
    "fan_out" (detectron2's and torchvision's ResNets) or "fan_in" (torch's default rule; smp's decoder)."""
    if init_mode not in CONV_INIT_MODES:
        raise ValueError(f"conv init mode must be one of {CONV_INIT_MODES}, got {init_mode!r}")
    if norm == "GN":  # detectron2's GN uses 32 groups, more than narrow decoder stages have
        norm_layer: Optional[nn.Module] = nn.GroupNorm(math.gcd(32, out_channels), out_channels)
    else:
        norm_layer = get_norm(norm, out_channels)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=norm_layer is None)
    nn.init.kaiming_normal_(conv.weight, mode=init_mode, nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    layers = [conv] + ([norm_layer] if norm_layer is not None else []) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def double_conv(in_channels: int, out_channels: int, norm, init_mode: str = "fan_out") -> nn.Sequential:
    """The U-Net block: two 3x3 conv-norm-ReLU (Ronneberger et al. 2015)."""
    return nn.Sequential(conv_norm_act(in_channels, out_channels, norm, init_mode=init_mode),
                         conv_norm_act(out_channels, out_channels, norm, init_mode=init_mode))


def fuse_conv_bn_(module: nn.Module) -> nn.Module:
    """Fold every batch norm that directly follows a convolution into the convolution's weights and bias, in
    place, for inference: detectron2's ``Conv2d`` with a ``norm`` (BatchNorm2d in eval mode or
    FrozenBatchNorm2d), and a ``nn.Conv2d`` followed by a ``nn.BatchNorm2d`` in an ``nn.Sequential`` (seg_d2's
    :func:`conv_norm_act`). conv(x) * s + t with s = gamma / sqrt(var + eps), t = beta - mean * s is one conv;
    the norm's multiply-add per pixel goes. Returns ``module``; it must not be trained afterwards."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    from detectron2.layers import Conv2d as D2Conv2d, FrozenBatchNorm2d

    bn_types = (nn.BatchNorm2d, FrozenBatchNorm2d)

    def fold(conv: nn.Conv2d, bn: nn.Module) -> None:
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias)
        conv.weight, conv.bias = weight, bias

    for m in list(module.modules()):
        if isinstance(m, D2Conv2d) and isinstance(m.norm, bn_types):
            fold(m, m.norm)
            m.norm = None
        elif isinstance(m, nn.Sequential):
            children = list(m._modules.items())
            for (_, conv), (name, bn) in zip(children, children[1:]):
                if type(conv) is nn.Conv2d and isinstance(bn, bn_types) and conv.out_channels == bn.num_features:
                    fold(conv, bn)
                    m._modules[name] = nn.Identity()
    return module
