"""Cityscapes panoptic (seg_d2_cityscapes_fine_panoptic_*): the fixture's createPanopticImgs ground truth loaded for
PanopticFPN, and CityscapesPanopticEvaluator against cityscapesscripts on the ground truth itself."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id
from seg_d2.data.datasets.cityscapes import register_cityscapes
from seg_d2.data.datasets.cityscapes_fixture import generate_cityscapes_fixture
from seg_d2.evaluation import CityscapesPanopticEvaluator

PREFIX = "test_cspan_"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    datasets = tmp_path_factory.mktemp("datasets")
    generate_cityscapes_fixture(str(datasets / "cityscapes"))
    register_cityscapes(str(datasets), name_prefix=PREFIX)
    return datasets / "cityscapes"


def test_records_follow_the_panoptic_ground_truth(root):
    records = DatasetCatalog.get(f"{PREFIX}cityscapes_fine_panoptic_val")
    gt = json.loads((root / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    assert len(records) == len(gt["annotations"]) == 4
    meta = MetadataCatalog.get(f"{PREFIX}cityscapes_fine_panoptic_val")
    assert len(meta.thing_classes) == 8 and meta.stuff_classes[0] == "things" and len(meta.stuff_classes) == 12
    for rec, ann in zip(records, gt["annotations"]):
        assert rec["file_name"].endswith(ann["file_name"].replace("_gtFine_panoptic.png", "_leftImg8bit.png"))
        assert Image.open(rec["file_name"]).size == (rec["width"], rec["height"])
        ids = rgb2id(np.asarray(Image.open(rec["pan_seg_file_name"]).convert("RGB")))
        sem = np.asarray(Image.open(rec["sem_seg_file_name"]))
        things = {s["id"] for s in ann["segments_info"] if s["category_id"] in meta.thing_dataset_id_to_contiguous_id}
        # by cityscapesscripts' labels: thing pixels 0, stuff pixels their class's 1..11, the rest void
        assert (sem[np.isin(ids, list(things))] == 0).all()
        for s in ann["segments_info"]:
            if s["id"] not in things:
                assert (sem[ids == s["id"]] == meta.stuff_dataset_id_to_contiguous_id[s["category_id"]]).all()
        assert (sem[ids == 0] == 255).all()
        n_things = sum(1 for s in ann["segments_info"] if s["id"] in things)
        assert len(rec["annotations"]) == n_things


def test_ground_truth_as_prediction_scores_100(root, tmp_path):
    name = f"{PREFIX}cityscapes_fine_panoptic_val"
    meta = MetadataCatalog.get(name)
    evaluator = CityscapesPanopticEvaluator(name, output_dir=str(tmp_path))
    evaluator.reset()
    for rec in DatasetCatalog.get(name):
        ids = rgb2id(np.asarray(Image.open(rec["pan_seg_file_name"]).convert("RGB")))
        info = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]} for s in rec["segments_info"]
                if not s.get("iscrowd")]  # a prediction has no crowd segments: their pixels predicted void
        ids[np.isin(ids, [s["id"] for s in rec["segments_info"] if s.get("iscrowd")])] = 0
        evaluator.process([rec], [{"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), info)}])
    res = evaluator.evaluate()["panoptic_seg"]
    official = json.loads((tmp_path / "cityscapes_panoptic_results.json").read_text())
    assert res["PQ"] == pytest.approx(100.0) and official["All"]["pq"] == pytest.approx(1.0)
    assert res["PQ_th"] == pytest.approx(100.0) and res["PQ_st"] == pytest.approx(100.0)
    assert res["PQ-car"] == pytest.approx(100.0) and "PQ-road" in res
    assert meta.evaluator_type == "cityscapes_panoptic_seg"
