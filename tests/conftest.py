"""Shared test set-up: datasets live in the repo's ./datasets (generated on first use, git-ignored)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("DETECTRON2_DATASETS", str(REPO / "datasets"))


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
