"""seg_d2.engine.launch (seg_d2/engine/distributed.py): detectron2's launch whose workers destroy their process
groups before they exit.

Without that, a spawned CPU worker sometimes aborted at exit (SIGABRT, "terminate called without an active
exception", pytorch/pytorch#190489): CI saw it once in tests/tools/test_train_net.py::test_two_cpu_processes.
The abort is a rare race, so these tests check its cause instead: whether a group is still alive when a
worker's interpreter exits.
"""
import pytest
import torch.distributed as dist

from seg_d2.engine import distributed
from tests.conftest import run_tool

WORKERS_SCRIPT = """
import atexit, os, sys
import torch.distributed as dist
from detectron2.utils import comm

def work(out_dir):
    comm.all_gather(comm.get_rank())  # a collective, as evaluation does
    rank = comm.get_rank()
    # atexit runs as the spawned worker's interpreter exits: is a process group still alive then?
    atexit.register(lambda: open(os.path.join(out_dir, f"rank{rank}"), "w").write(str(dist.is_initialized())))
    return rank

if __name__ == "__main__":
    if sys.argv[2] == "seg_d2":
        from seg_d2.engine import launch
    else:
        from detectron2.engine import launch
    launch(work, 2, dist_url="auto", args=(sys.argv[1],))
"""


def _groups_alive_at_exit(tmp_path, which):
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_SCRIPT)
    out = tmp_path / which
    out.mkdir()
    res = run_tool([script, out, which], env={"CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 0, res.stderr[-3000:]
    return sorted((p.name, p.read_text()) for p in out.iterdir())


@pytest.mark.long
def test_workers_exit_without_a_live_process_group(tmp_path):
    assert _groups_alive_at_exit(tmp_path, "seg_d2") == [("rank0", "False"), ("rank1", "False")]
    # the cause of the abort, in detectron2's own launch (v0.6 and main alike)
    assert _groups_alive_at_exit(tmp_path, "detectron2") == [("rank0", "True"), ("rank1", "True")]


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_group_ends_after_a_success_and_stays_after_an_exception(one_process_group):
    def fails():
        raise ValueError("bad data")

    # after an exception another process may be inside a collective: destroying there could hang
    with pytest.raises(ValueError, match="bad data"):
        distributed._main_then_end(fails)
    assert dist.is_initialized()
    assert distributed._main_then_end(lambda x: x + 1, 41) == 42
    assert not dist.is_initialized()


def test_one_process_runs_main_without_any_group():
    seen = []
    distributed.launch(seen.append, 1, args=("ran",))
    assert seen == ["ran"] and not dist.is_initialized()
    distributed.end_process_groups()  # no group: nothing to do, no error

