"""Shared settings for the tests of seg_d2_ops, the ops behind detectron2._C (run from source)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Run these tests single-threaded. The pure-PyTorch ops issue many small tensor ops; on a
    busy 2-core runner each multi-threaded op can stall on a descheduled sibling thread, which
    made this folder ~7x slower. Restored afterwards for whatever runs next."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
