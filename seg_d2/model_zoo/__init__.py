"""seg_d2's configs, found from any folder, as detectron2's ``model_zoo`` finds detectron2's.

The configs live in the repository's top-level ``configs/`` (which ``tools/train_net.py --config-file
configs/...`` and the configs' ``_BASE_`` paths use). A built wheel ships them as package data in
``seg_d2/model_zoo/configs`` (setup.py copies them there); an editable install reads the repository's.

::

    from seg_d2 import model_zoo
    path = model_zoo.get_config_file("Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml")
    cfg = model_zoo.get_config("Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml")
"""
import difflib
import importlib.util
import os
from typing import List

__all__ = ["configs_root", "list_configs", "get_config_file", "get_config", "resolve_config_file",
           "get_detectron2_config_file", "get_detectron2_config"]

_PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_REPOSITORY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def configs_root() -> str:
    """The folder of seg_d2's configs: the package's copy (wheel), else the repository's (editable install)."""
    for root in (_PACKAGED, _REPOSITORY):
        if os.path.isdir(root):
            return root
    raise FileNotFoundError(
        f"seg_d2's configs are not installed: neither {_PACKAGED} (a wheel's copy) nor {_REPOSITORY} (a "
        f"source checkout) exists. Reinstall seg_d2 from its repository (pip install .)."
    )


def list_configs() -> List[str]:
    """Every config, as the relative path ``get_config_file`` takes (e.g. "Base-UNet.yaml"), sorted."""
    root = configs_root()
    found = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        found += [os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                  for f in files if f.endswith((".yaml", ".py")) and f != "__init__.py"]
    return sorted(found)


def _relative(config_path: str) -> str:
    rel = str(config_path).replace("\\", "/")
    return rel[len("configs/"):] if rel.startswith("configs/") else rel


def _closest(rel: str) -> str:
    close = difflib.get_close_matches(rel, list_configs(), n=5, cutoff=0.4)
    return (f" Closest: {', '.join(close)}." if close else "") + " seg_d2.model_zoo.list_configs() lists them all."


def get_config_file(config_path: str) -> str:
    """The absolute path of a seg_d2 config.

    Args:
        config_path: relative to seg_d2's ``configs/`` folder, such as
            "Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml" (a leading "configs/" is accepted).

    Raises:
        FileNotFoundError: no such config; the message lists the closest names.
    """
    rel = _relative(config_path)
    path = os.path.join(configs_root(), *rel.split("/"))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'{config_path}' is not one of seg_d2's configs (in {configs_root()})."
                                + _closest(rel))
    return path


def resolve_config_file(path: str) -> str:
    """``path`` if it is a file (from the current folder), else seg_d2's config of that name (see
    :func:`get_config_file`): ``configs/...`` paths work from any folder."""
    if os.path.isfile(path):
        return path
    try:
        return get_config_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"Config file '{path}' not found: it is neither a file (from {os.getcwd()}) nor "
                                f"one of seg_d2's configs (in {configs_root()})." + _closest(_relative(path))) from None


def get_config(config_path: str):
    """A config of seg_d2's (see :func:`get_config_file`), ready to use.

    A yaml config gives a detectron2 ``CfgNode`` with seg_d2's keys (:func:`seg_d2.get_cfg`), the file
    merged and the CPU fallback applied (``MODEL.DEVICE`` "cpu" when no GPU is visible). A LazyConfig
    (``.py``) gives detectron2's ``LazyConfig.load`` of it, with ``train.device`` "cpu" when no GPU is visible.
    """
    from ..config import apply_cpu_fallback, get_cfg

    path = get_config_file(config_path)
    if path.endswith(".py"):
        import torch
        from detectron2.config import LazyConfig

        cfg = LazyConfig.load(path)
        train = cfg.get("train", None)
        if train is not None and str(train.get("device", "")).startswith("cuda") and not torch.cuda.is_available():
            train.device = "cpu"
        return cfg
    cfg = get_cfg()
    cfg.merge_from_file(path)
    return apply_cpu_fallback(cfg)


def get_detectron2_config_file(config_path: str) -> str:
    """The absolute path of a config of detectron2's own model zoo (e.g. "common/models/mask_rcnn_fpn.py"),
    found without importing ``detectron2.model_zoo``: detectron2 main's imports ``pkg_resources``, which
    setuptools >= 81 no longer ships."""
    spec = importlib.util.find_spec("detectron2.model_zoo")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = os.path.join(root, "configs", *str(config_path).split("/"))
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"'{config_path}' is not in detectron2's model zoo (searched "
                            f"{[os.path.join(r, 'configs') for r in roots]})")


def get_detectron2_config(config_path: str):
    """A config of detectron2's own model zoo, as ``detectron2.model_zoo.get_config(path)`` gives it
    (untrained): ``LazyConfig.load`` of a ``.py``; a yaml merged into :func:`seg_d2.get_cfg`."""
    path = get_detectron2_config_file(config_path)
    if path.endswith(".py"):
        from detectron2.config import LazyConfig

        return LazyConfig.load(path)
    from ..config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(path)
    return cfg
