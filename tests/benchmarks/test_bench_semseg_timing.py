"""benchmarks/bench_semseg.py times inference from the runs' records when their files are gone. Runs are resumed
across machines (benchmarks/pending.sh keeps benchmarks/results/*_pending.jsonl, not the weights), and the timing job
of the real buildings failed on this session's fresh machine: "Checkpoint .../real_buildings/0/smp/model_final.pth
not found!". Now a run without weights is timed as initialised (and says so), unet_auto is rebuilt from the plan its
record keeps, and nnU-Net's time comes from its record."""
import json

import pytest

import bench_semseg  # benchmarks/, on the path by conftest.py

PLAN = {"MODEL.PIXEL_MEAN": [81.152, 81.152, 81.152], "MODEL.PIXEL_STD": [60.206, 60.206, 60.206],
        "INPUT.MIN_SIZE_TRAIN": [150], "INPUT.MAX_SIZE_TRAIN": 150, "INPUT.MIN_SIZE_TEST": 150,
        "INPUT.MAX_SIZE_TEST": 150, "SOLVER.IMS_PER_BATCH": 16}


def write_results(out, *records):
    with open(out / "results.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps({"kind": "train", "dataset": "shapes", "seed": 0, "iters": 600, **rec}) + "\n")


def test_runs_without_their_files_are_timed_from_their_records(tmp_path, capsys):
    write_results(tmp_path, {"variant": "unet_classic"}, {"variant": "nnunet", "infer_s_per_img": 1.06})
    weights = {"unet_classic": str(tmp_path / "shapes/0/unet_classic/model_final.pth"),
               "nnunet": str(tmp_path / "shapes/0/nnunet/infer.json")}
    timed = bench_semseg.time_inference(["unet_classic", "nnunet"], "shapes", 0, weights, "cpu", rounds=1)
    assert timed["unet_classic"]["timed_weights"] == "initialised"
    assert timed["unet_classic"]["infer_s_per_img"] > 0 and timed["unet_classic"]["gflops_per_img"] > 0
    assert timed["nnunet"]["infer_s_per_img"] == 1.06
    assert f"{weights['unet_classic']} is not on this machine: timed as initialised" in capsys.readouterr().out


def test_the_auto_configured_run_is_rebuilt_from_its_plan(tmp_path):
    write_results(tmp_path, {"variant": "unet_auto", "plan": PLAN})
    recipe = bench_semseg.setup_cfg("unet_auto", "shapes", "cpu", 0)
    cfg = bench_semseg.run_config("unet_auto", "shapes", "cpu", 0, str(tmp_path / "shapes/0/unet_auto/model_final.pth"))
    assert list(recipe.MODEL.PIXEL_MEAN) != PLAN["MODEL.PIXEL_MEAN"]  # the recipe's own, before the plan
    assert list(cfg.MODEL.PIXEL_MEAN) == PLAN["MODEL.PIXEL_MEAN"] and list(cfg.MODEL.PIXEL_STD) == PLAN["MODEL.PIXEL_STD"]
    assert (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, tuple(cfg.INPUT.MIN_SIZE_TRAIN)) == (150, 150, (150,))
    assert cfg.SOLVER.IMS_PER_BATCH == 16


def test_a_run_with_no_record_is_a_clear_error(tmp_path):
    write_results(tmp_path, {"variant": "smp"})
    with pytest.raises(FileNotFoundError, match=r"no training record of nnunet on shapes, seed 0 in .*results\.jsonl"):
        bench_semseg.training_record("nnunet", "shapes", 0, str(tmp_path / "shapes/0/nnunet/infer.json"))
