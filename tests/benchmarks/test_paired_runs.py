"""benchmarks/paired_runs.py's job pool: a run that needs another run's result (bench_semseg's unet_auto and nnunet
train for the time unet_R_50 took on the same seed) starts only once that run has finished, and the pool keeps both
processes busy meanwhile. Before `needs`, `--variants unet_R_50,unet_auto` started the two side by side, and
unet_auto failed at once for want of unet_R_50's record."""
import argparse
import json
import sys

import paired_runs  # benchmarks/, on the path by conftest.py

# A stand-in for a benchmark's child: logs its start and end times; "base" trains (sleeps) and records itself,
# fails when told to; "dependent" fails unless base's record of the same dataset and seed is there, as
# bench_semseg's budget_seconds does.
CHILD = r"""
import json, os, sys, time
results, log, fail, _, variant, dataset, seed = sys.argv[1:]
t0 = time.time()
done = [json.loads(l) for l in open(results)] if os.path.exists(results) else []
if variant == "dependent" and not any(r["variant"] == "base" and r["seed"] == int(seed) for r in done):
    sys.exit(f"no base run for seed {seed}")
time.sleep(0.6)
if variant == "base" and int(seed) in [int(x) for x in fail.split(",") if x]:
    sys.exit(f"base of seed {seed} fails")
with open(results, "a") as f:
    f.write(json.dumps({"kind": "train", "dataset": dataset, "seed": int(seed), "variant": variant, "iters": 5}) + "\n")
with open(log, "a") as f:
    f.write(json.dumps({"run": f"{variant}/{seed}", "start": t0, "end": time.time()}) + "\n")
"""


def _run(tmp_path, seeds, needs, fail=""):
    args = argparse.Namespace(jobs=2, iters=5, out=str(tmp_path))
    results, log = tmp_path / "results.jsonl", tmp_path / "times.jsonl"

    def child_cmd(*extra):
        return [sys.executable, "-c", CHILD, str(results), str(log), fail, *extra]

    failed = paired_runs.run_paired(args, ["d"], ["base", "dependent"], seeds, child_cmd, str(results), 0.0,
                                    timed=False, needs=needs)
    times = {r["run"]: r for r in map(json.loads, log.read_text().splitlines())} if log.exists() else {}
    return failed, times


def test_a_run_waits_for_the_run_it_needs_and_the_pool_stays_full(tmp_path, capsys):
    failed, t = _run(tmp_path, [0, 1], {"dependent": "base"})
    assert failed == []
    assert set(t) == {"base/0", "base/1", "dependent/0", "dependent/1"}
    for s in (0, 1):
        assert t[f"dependent/{s}"]["start"] >= t[f"base/{s}"]["end"]
    # seed 0's dependent could not start with base/0, so base/1 took the second process beside it
    events = [line.split("] ", 1)[1].split(" on d")[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("== [")]
    assert events[:2] == ["start train base", "start train base"]


def test_without_needs_the_pair_starts_together_and_the_dependent_fails(tmp_path):
    # the behaviour the `needs` option fixes, kept visible: the stand-in child is a faithful one
    failed, t = _run(tmp_path, [0], None)
    assert failed == ["train dependent on d, seed 0, 5 iterations"]
    assert set(t) == {"base/0"}


def test_a_run_whose_prerequisite_failed_is_reported_and_never_started(tmp_path, capsys):
    failed, t = _run(tmp_path, [0, 1], {"dependent": "base"}, fail="0")
    assert sorted(failed) == ["train base on d, seed 0, 5 iterations", "train dependent on d, seed 0, 5 iterations"]
    assert set(t) == {"base/1", "dependent/1"}
    assert "not started train dependent on d, seed 0, 5 iterations: its prerequisite failed" in capsys.readouterr().out
