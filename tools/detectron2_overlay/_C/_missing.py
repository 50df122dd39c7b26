"""Placeholders for compiled ops that have no pure-PyTorch implementation yet."""


def missing_op(name: str, hint: str):
    """Return a function that raises a NotImplementedError naming op ``name``."""

    def op(*args, **kwargs):
        raise NotImplementedError(
            f"detectron2._C.{name} is not available in this detectron2 build: it was provisioned by "
            f"seg_d2 without a C++ compiler and has no pure-PyTorch '{name}' yet. {hint}"
        )

    op.__name__ = name
    op.implemented = False
    return op
