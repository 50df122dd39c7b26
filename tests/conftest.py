"""Shared test set-up: datasets live in the repo's ./datasets (generated on first use, git-ignored)."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import pytest

from tests.tmp_dirs import _remove_module_tmp_dirs, pytest_runtest_makereport  # noqa: F401 (disk: see the module)

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DETECTRON2_DATASETS", str(REPO / "datasets"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # tools/test.sh runs one pytest-xdist worker per core: one thread each (and in the tools they start),
    # since two workers of two threads on two cores stall on each other's descheduled threads.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


def run_tool(args, cwd=None, env=None, timeout=900, fresh=False):
    """Run ``python <script> <args>`` from the repo root with seg_d2 importable; return CompletedProcess.

    The script runs as ``__main__`` in a child forked from this test process, which has imported torch,
    detectron2 and seg_d2 already: that start-up is 6 s of CPU per run, which dozens of tool runs paid
    again and again. A new interpreter (``fresh=True``) where a test is about the start-up itself (import
    warnings, modules replaced before import), where ``env`` changes the environment (read at import
    time: DETECTRON2_DATASETS, CITYSCAPES_*, the display), and where forking is unsafe (torch running
    several threads, whose OpenMP pool a child cannot use, or a process group already set up).
    """
    import torch
    import torch.distributed as dist

    if fresh or env or torch.get_num_threads() != 1 or (dist.is_available() and dist.is_initialized()):
        full_env = {**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})}
        return subprocess.run(
            [sys.executable, "-W", "ignore::FutureWarning", *map(str, args)], cwd=cwd or REPO, env=full_env,
            capture_output=True, text=True, timeout=timeout,
        )
    return _run_forked([str(a) for a in args], str(cwd or REPO), timeout)


def _pythonpath():
    """PYTHONPATH with the repository first: seg_d2 importable in the tool and in what it starts."""
    return os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def _run_forked(argv, cwd, timeout):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                code = _forked_main(argv, cwd, out.fileno(), err.fileno())
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(argv, timeout)
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        stdout, stderr = (f.read().decode("utf-8", "replace") for f in (out, err))
    return subprocess.CompletedProcess([sys.executable, *argv], os.waitstatus_to_exitcode(status), stdout, stderr)


def _forked_main(argv, cwd, out_fd, err_fd):
    """What ``python -W ignore::FutureWarning <argv>`` would do, in a forked child; returns the exit code."""
    import atexit
    import logging
    import runpy
    import threading

    from detectron2.utils import logger as d2_logger

    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.stdin = open(os.devnull)
    # as in a new interpreter: no logging set up by earlier tests (nor pytest's capture handlers), Python's
    # own warning filters, and signals at their defaults
    for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        if isinstance(lg, logging.Logger):
            lg.handlers.clear()
    logging._handlerList.clear()  # so that the child's logging.shutdown() flushes none of the parent's files
    d2_logger.setup_logger.cache_clear()
    _restore_python_warnings()
    warnings.filterwarnings("ignore", category=FutureWarning)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)
    atexit._clear()  # pytest's and xdist's exit handlers are not the tool's
    os.chdir(cwd)
    os.environ["PYTHONPATH"] = _pythonpath()
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))  # as python <script> does
    code = 0
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    # what the interpreter does at exit: wait for the tool's threads, run its exit handlers (they close
    # its log files), flush
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _restore_python_warnings():
    """Python's warning filters and display as the interpreter started, undoing pytest's recording of
    warnings: the list the C module started with (pytest's contexts replace ``warnings.filters`` with
    copies) and the display function of an unmodified copy of the warnings module."""
    import _warnings
    import importlib.util

    spec = importlib.util.find_spec("warnings")
    pristine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pristine)
    warnings.filters = list(_warnings.filters)
    warnings.showwarning = warnings._showwarning_orig
    warnings._showwarnmsg_impl = pristine._showwarnmsg_impl
    warnings._filters_mutated()  # forget which warnings were shown already


def pytest_collection_modifyitems(config, items):
    """Cross-stack tests (tests/test_cross_stack.py) compare this detectron2 with the one that
    SEG_D2_OTHER_PYTHON runs; without it they are deselected, and the summary says so.

    Then the files that hold a ``long`` test go first, in collection order (a stable sort keeps each file's
    tests together): tools/test.sh hands whole files to the xdist workers in this order
    (``--no-loadscope-reorder``), and a two-minute file handed out last would leave one worker running it
    alone at the end."""
    if not os.environ.get("SEG_D2_OTHER_PYTHON"):
        dropped = [item for item in items if item.get_closest_marker("cross_stack")]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if not item.get_closest_marker("cross_stack")]
    long_files = {item.path for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.path not in long_files)


def pytest_terminal_summary(terminalreporter, config):
    if not os.environ.get("SEG_D2_OTHER_PYTHON"):  # (said here: with xdist the workers collect)
        terminalreporter.write_line("tests/test_cross_stack.py deselected: it needs SEG_D2_OTHER_PYTHON, an interpreter "
                                    "with the other detectron2 (.ci/run runs it while it tests detectron2 main)")


@pytest.fixture(scope="session")
def repo():
    return REPO


def _is_provisioned():
    from seg_d2.compat import is_pure_pytorch_build

    return is_pure_pytorch_build()


# Tests of what tools/install_detectron2.py provisions (detectron2 v0.6 with seg_d2's fixes and a _C that is
# seg_d2_ops): they skip where detectron2 was compiled (main, or a user's own build), whose code is its own.
provisioned_only = pytest.mark.skipif(
    not _is_provisioned(), reason="specific to the provisioned detectron2 v0.6 (pure-PyTorch _C); this one is compiled")

# detectron2's compiled fast COCOeval (C++) sums precision in another order than pycocotools: the same numbers
# to the last bit or two. seg_d2_ops' (the provisioned build's) equals pycocotools exactly.
COCOEVAL_FAST_ATOL = 0.0 if _is_provisioned() else 1e-12
