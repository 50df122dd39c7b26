"""benchmarks/pending.sh runs the commands it held when it started, even when the file is edited while it runs."""
import os
import re
import subprocess
import sys
import time

from tests.conftest import REPO

# stands in for the venv's python: logs its arguments, makes the results file that pending.sh copies back, and
# takes a moment, as a benchmark takes hours
STUB = """#!/usr/bin/env bash
echo "$*" >> "$STUB_LOG"
prev=""
for a in "$@"; do
  if [ "$prev" = "--out" ]; then mkdir -p "$a" && touch "$a/results.jsonl"; fi
  prev="$a"
done
sleep 0.5
"""


def benchmark_commands(script: str, chained=True):
    """The arguments of each ``run`` line of pending.sh (continuation lines joined), as the stub logs them: with
    ``chained``, also those inside ``{ ...; } &`` chains that run side by side (``{ run ...`` or indented)."""
    joined = script.replace("\\\n", " ")
    pattern = r"^\s*(\{\s*)?run " if chained else r"^run "
    runs = [line.replace("{", " ").split()[1:] for line in joined.splitlines() if re.match(pattern, line)]
    commands = []
    for args in runs:
        args = args[2:]  # after NAME SCRIPT
        end = next((i + 1 for i, a in enumerate(args) if a.endswith(";")), len(args))  # "...; } &"
        commands.append(" ".join(args[:end]).rstrip(";"))
    return commands


def logged_commands(log):
    lines = log.read_text().splitlines() if log.exists() else []
    return [re.sub(r"^.*? --jobs 2 --threads 1 ", "", line) for line in lines if "--out" in line]


def test_an_edit_while_it_runs_changes_nothing(tmp_path):
    repo = tmp_path / "repo"
    (repo / "benchmarks" / "results").mkdir(parents=True)
    original = (REPO / "benchmarks" / "pending.sh").read_text()
    script = repo / "benchmarks" / "pending.sh"
    script.write_text(original)
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], check=True)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(STUB)
    os.chmod(venv / "bin" / "python", 0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "SEG_D2_VENV": str(venv), "NNUNET_PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "STUB_LOG": str(log)}
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not logged_commands(log) and time.time() < deadline:
            time.sleep(0.05)
        assert logged_commands(log), "the first benchmark command never started"
        # the first benchmark command runs: take its line out (what a session does once its runs are done)
        first = next(line for line in original.splitlines() if line.startswith("run "))
        script.write_text(original.replace(first + "\n", "", 1))
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    expected, in_order = benchmark_commands(original), benchmark_commands(original, chained=False)
    assert len(in_order) >= 3
    assert proc.returncode == 0, out[-3000:]
    logged = logged_commands(log)
    assert sorted(logged) == sorted(expected), out[-3000:]  # every command, the chains' in either order
    assert [c for c in logged if c in in_order] == in_order, out[-3000:]  # the top-level ones one after another
