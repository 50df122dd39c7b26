"""detectron2's ``launch``, whose worker processes end their process groups before they exit."""
import functools

import torch.distributed as dist
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["end_process_groups", "launch"]


def end_process_groups() -> None:
    """Once every process got here, destroy all process groups (no-op without any).

    A spawned worker that exits with a live GLOO group can abort (SIGABRT, "terminate called without an
    active exception"): gloo's threads are torn down with the interpreter (pytorch/pytorch#190489).
    detectron2's ``launch`` (v0.6 and main) never destroys its groups, so its CPU runs failed now and then.
    """
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()


def _main_then_end(main_func, *args):
    result = main_func(*args)
    # Only after a success: after an exception another process may still be in a collective, where
    # destroying would hang (pytorch/torchtitan#1342); the exception ends the run anyway.
    end_process_groups()
    return result


def launch(main_func, num_gpus_per_machine, *args, **kwargs):
    """``detectron2.engine.launch`` with the same arguments; each process calls :func:`end_process_groups`
    after ``main_func`` returns. One process (no group) runs ``main_func`` as detectron2 does."""
    return d2_launch(functools.partial(_main_then_end, main_func), num_gpus_per_machine, *args, **kwargs)
