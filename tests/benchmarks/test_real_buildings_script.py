"""benchmarks/paired_runs.py builds the real buildings set with the team's shared/data/make_real_buildings.py. It
looked for it only beside the checkout, so benchmarks/pending.sh, which runs from a snapshot under bench_out/, failed
on a fresh machine with "can't open file '<checkout>/bench_out/shared/data/make_real_buildings.py'". Now
$SEG_D2_SHARED names the shared folder (pending.sh sets it), and a missing script is a clear error before any run."""
import os

import pytest

import paired_runs  # benchmarks/, on the path by conftest.py

# A stand-in for make_real_buildings.py: writes the two COCO files the benchmarks check for, under its argument.
MAKER = r"""
import os, sys
os.makedirs(sys.argv[1], exist_ok=True)
for split in ("train", "val"):
    open(os.path.join(sys.argv[1], split + ".json"), "w").write("{}")
"""


def test_the_script_is_found_under_seg_d2_shared(tmp_path, monkeypatch):
    shared = tmp_path / "team" / "shared"
    (shared / "data").mkdir(parents=True)
    (shared / "data" / "make_real_buildings.py").write_text(MAKER)
    monkeypatch.setenv("SEG_D2_SHARED", str(shared))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    paired_runs.prepare_real_buildings()
    assert sorted(os.listdir(tmp_path / "datasets" / "real_buildings")) == ["train.json", "val.json"]


def test_without_the_variable_the_shared_folder_beside_the_checkout(monkeypatch):
    monkeypatch.delenv("SEG_D2_SHARED", raising=False)
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    expected = os.path.join(os.path.dirname(checkout), "shared", "data", "make_real_buildings.py")
    assert os.path.abspath(paired_runs.real_buildings_script()) == expected


def test_a_missing_script_is_an_error_that_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_D2_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    with pytest.raises(FileNotFoundError) as e:
        paired_runs.prepare_real_buildings()
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "data" / "make_real_buildings.py") in msg
    assert str(tmp_path / "datasets" / "real_buildings") in msg
    assert "SEG_D2_SHARED" in msg and "--real-buildings-script" in msg
    assert not (tmp_path / "datasets").exists()  # nothing written


def test_a_set_that_is_there_needs_no_script(tmp_path, monkeypatch):
    root = tmp_path / "datasets" / "real_buildings"
    root.mkdir(parents=True)
    for split in ("train", "val"):
        (root / f"{split}.json").write_text("{}")
    monkeypatch.setenv("SEG_D2_SHARED", str(tmp_path / "nowhere"))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "datasets"))
    paired_runs.prepare_real_buildings()  # no error: the script is needed only to build the set
