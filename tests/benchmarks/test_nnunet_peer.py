"""benchmarks/nnunet_peer.py finds the datasets where seg_d2 and the benchmarks register them: under
$DETECTRON2_DATASETS. It used the checkout's datasets/ folder, so bench_semseg's nnunet run from a snapshot of the
checkout (benchmarks/pending.sh) failed with "no images in <snapshot>/datasets/real_buildings/train"."""
from pathlib import Path

import nnunet_peer  # benchmarks/, on the path by conftest.py


def test_dataset_roots_follow_detectron2_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert nnunet_peer.spec_of("buildings")["root"] == tmp_path / "real_buildings"
    assert nnunet_peer.spec_of("shapes")["root"] == tmp_path / "seg_d2_shapes"
    assert nnunet_peer.spec_of("buildings")["folder"] == "Dataset502_RealBuildings"


def test_without_the_variable_the_checkouts_datasets_folder(monkeypatch):
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert nnunet_peer.spec_of("shapes")["root"] == repo / "datasets" / "seg_d2_shapes"
