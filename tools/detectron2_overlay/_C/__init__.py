"""detectron2's compiled extension ``detectron2._C``, provided by seg_d2's ``seg_d2_ops`` package.

``tools/install_detectron2.py`` installs this shim as ``detectron2/_C/__init__.py``; the ops
themselves live (and are tested and benchmarked) in the seg_d2 repository's ``seg_d2_ops``.
"""
try:
    from seg_d2_ops import *  # noqa: F401,F403
    from seg_d2_ops import __all__  # noqa: F401
except ImportError as _e:  # pragma: no cover - a broken environment
    raise ImportError(
        "detectron2._C is seg_d2's pure-PyTorch seg_d2_ops package, which is not importable here "
        f"({_e}); install seg_d2 into this environment (pip install -e <seg_d2 checkout>)."
    ) from _e
