from . import datasets  # noqa: F401  (registers seg_d2's datasets)
