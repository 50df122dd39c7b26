"""Shared test set-up: datasets live in the repo's ./datasets (generated on first use, git-ignored)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DETECTRON2_DATASETS", str(REPO / "datasets"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # tools/test.sh runs one pytest-xdist worker per core: one thread each (and in the tools they start),
    # since two workers of two threads on two cores stall on each other's descheduled threads.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


def run_tool(args, cwd=None, env=None, timeout=900):
    """Run ``python <args>`` from the repo root with seg_d2 importable; return CompletedProcess."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-W", "ignore::FutureWarning", *map(str, args)], cwd=cwd or REPO, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="session")
def repo():
    return REPO
