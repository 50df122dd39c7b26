"""Cityscapes registration on the generated fixture: both instance sources agree, trainId maps,
metadata, clear errors, and independence from detectron2's own Cityscapes modules."""
import ast
import json
import os
import shutil
import textwrap

import numpy as np
import pycocotools.mask as mask_util
import pytest
from cityscapesscripts.helpers.labels import id2label, labels
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

import seg_d2  # noqa: F401  (registers the datasets)
from seg_d2.data.datasets.cityscapes import (
    STUFF_CLASSES,
    THING_CLASSES,
    instance_map_from_polygons,
    load_cityscapes_instances,
    load_cityscapes_semantic,
    register_cityscapes,
)
from seg_d2.data.datasets.cityscapes_fixture import FIXTURE_CITIES, generate_cityscapes_fixture
from tests.conftest import REPO, run_tool


@pytest.fixture(scope="module")
def cs_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cs") / "cityscapes")
    assert generate_cityscapes_fixture(root) is True
    assert generate_cityscapes_fixture(root) is False  # already there: nothing rewritten
    return root


@pytest.fixture
def cs_copy(cs_root, tmp_path):
    """A private copy of the fixture, for tests that damage it."""
    dst = str(tmp_path / "cityscapes")
    shutil.copytree(cs_root, dst)
    return dst


def _gt(root, split, stem, kind):
    return os.path.join(root, "gtFine", split, stem.split("_")[0], f"{stem}_gtFine_{kind}")


def _stems(root, split):
    return sorted(f[: -len("_leftImg8bit.png")] for c in FIXTURE_CITIES[split]
                  for f in os.listdir(os.path.join(root, "leftImg8bit", split, c)))


def test_fixture_files_are_consistent(cs_root):
    for split in ("train", "val"):
        stems = _stems(cs_root, split)
        assert len(stems) == 4 and {s.split("_")[0] for s in stems} == set(FIXTURE_CITIES[split])
        for stem in stems:
            label_ids = np.asarray(Image.open(_gt(cs_root, split, stem, "labelIds.png")))
            inst = np.asarray(Image.open(_gt(cs_root, split, stem, "instanceIds.png"))).astype(np.int32)
            img = np.asarray(Image.open(os.path.join(cs_root, "leftImg8bit", split, stem.split("_")[0],
                                                     f"{stem}_leftImg8bit.png")))
            assert img.shape == (128, 256, 3) and label_ids.shape == inst.shape == (128, 256)
            # instanceIds encode labelId * 1000 + k (objects) or labelId (stuff, crowd): same classes as labelIds.
            np.testing.assert_array_equal(np.where(inst >= 1000, inst // 1000, inst), label_ids)
            # The json, rasterised the official way, gives the instanceIds PNG.
            np.testing.assert_array_equal(instance_map_from_polygons(_gt(cs_root, split, stem, "polygons.json")), inst)
    # What the evaluators must cope with is in the val split: all 8 thing classes, crowd, void, tiny objects.
    val_ids = set()
    for stem in _stems(cs_root, "val"):
        inst = np.asarray(Image.open(_gt(cs_root, "val", stem, "instanceIds.png"))).astype(np.int32)
        val_ids |= set(np.unique(inst).tolist())
        sizes = [(inst == i).sum() for i in np.unique(inst[inst >= 1000])]
        assert min(sizes) < 100  # below cityscapesscripts' minimum instance size
    thing_ids = {l.id for l in labels if l.hasInstances and not l.ignoreInEval}
    assert {i // 1000 for i in val_ids if i >= 1000} >= thing_ids
    assert 26 in val_ids  # a "cargroup" crowd region
    assert {1, 4} <= val_ids  # ego vehicle, static: void


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_instance_dicts_are_identical_from_pngs_and_from_polygons(cs_root, mask_format):
    for split in ("train", "val"):
        from_png = load_cityscapes_instances(cs_root, split, "instanceIds", mask_format)
        from_json = load_cityscapes_instances(cs_root, split, "polygons", mask_format)
        assert from_png == from_json
        assert len(from_png) == 4 and sum(len(d["annotations"]) for d in from_png) > 20


def test_instance_dicts_match_the_instance_maps(cs_root):
    dicts = load_cityscapes_instances(cs_root, "val", mask_format="bitmask")
    polys = load_cityscapes_instances(cs_root, "val", mask_format="polygon")
    n_crowd = 0
    for d, dp in zip(dicts, polys):
        inst = np.asarray(Image.open(_gt(cs_root, "val", d["image_id"], "instanceIds.png"))).astype(np.int32)
        ids = [i for i in np.unique(inst).tolist()
               if (i // 1000 if i >= 1000 else i) in {l.id for l in labels if l.hasInstances and not l.ignoreInEval}]
        assert len(d["annotations"]) == len(ids)
        assert (d["height"], d["width"]) == inst.shape
        for inst_id, a in zip(ids, d["annotations"]):
            label = id2label[inst_id // 1000 if inst_id >= 1000 else inst_id]
            assert THING_CLASSES[a["category_id"]] == label.name
            assert a["iscrowd"] == int(inst_id < 1000)
            n_crowd += a["iscrowd"]
            mask = mask_util.decode(a["segmentation"]).astype(bool)
            np.testing.assert_array_equal(mask, inst == inst_id)
            ys, xs = np.nonzero(mask)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        # Polygons trace the boundary pixels' centres: they cover the mask up to its edge.
        for a, ap in zip(d["annotations"], dp["annotations"]):
            assert ap["bbox"] == a["bbox"] and ap["category_id"] == a["category_id"]
            rle = mask_util.merge(mask_util.frPyObjects(ap["segmentation"], d["height"], d["width"]))
            assert mask_util.iou([rle], [a["segmentation"]], [0])[0, 0] > 0.6
    assert n_crowd >= 1
    assert "caravan" not in THING_CLASSES  # a thing class ignored in evaluation is not a category


def test_semantic_dicts_and_train_id_maps(cs_copy):
    dicts = load_cityscapes_semantic(cs_copy, "val")
    assert [d["image_id"] for d in dicts] == _stems(cs_copy, "val")
    lut = {l.id: (l.trainId if 0 <= l.trainId < 255 else 255) for l in labels if l.id >= 0}
    for d in dicts:
        assert d["sem_seg_file_name"] == _gt(cs_copy, "val", d["image_id"], "labelTrainIds.png")
        label_ids = np.asarray(Image.open(_gt(cs_copy, "val", d["image_id"], "labelIds.png")))
        train_ids = np.asarray(Image.open(d["sem_seg_file_name"]))
        assert train_ids.dtype == np.uint8 and (d["height"], d["width"]) == train_ids.shape
        np.testing.assert_array_equal(train_ids, np.vectorize(lut.get)(label_ids))
    assert set(np.unique(train_ids)) <= set(range(19)) | {255} and 255 in train_ids
    # Written once: a second load reuses the files.
    mtimes = [os.path.getmtime(d["sem_seg_file_name"]) for d in dicts]
    assert load_cityscapes_semantic(cs_copy, "val") == dicts
    assert [os.path.getmtime(d["sem_seg_file_name"]) for d in dicts] == mtimes
    # ... unless the labelIds map changed since.
    label_file = _gt(cs_copy, "val", dicts[0]["image_id"], "labelIds.png")
    Image.fromarray(np.full((128, 256), 7, np.uint8)).save(label_file)  # all road
    os.utime(label_file, (mtimes[0] + 10, mtimes[0] + 10))
    load_cityscapes_semantic(cs_copy, "val")
    assert (np.asarray(Image.open(dicts[0]["sem_seg_file_name"])) == 0).all()
    assert not [f for _, _, fs in os.walk(cs_copy) for f in fs if f.startswith(".tmp_")]  # atomic writes


def test_read_only_ground_truth_goes_to_the_cache(cs_copy, tmp_path, monkeypatch):
    gt_city = os.path.join(cs_copy, "gtFine", "val", "frankfurt")
    real_access = os.access
    # Tests may run as root, for whom chmod does not make a folder read-only: fake the check.
    monkeypatch.setattr(os, "access", lambda p, m: False if os.path.abspath(p) == gt_city else real_access(p, m))
    monkeypatch.setenv("SEG_D2_CACHE", str(tmp_path / "cache"))
    dicts = load_cityscapes_semantic(cs_copy, "val")
    for d in dicts:
        in_cache = d["sem_seg_file_name"].startswith(str(tmp_path / "cache"))
        assert in_cache == d["image_id"].startswith("frankfurt") and os.path.isfile(d["sem_seg_file_name"])
    assert not [f for f in os.listdir(gt_city) if "labelTrainIds" in f]


def test_registered_names_and_metadata():
    names = DatasetCatalog.list()
    for split in ("train", "val"):
        sem = MetadataCatalog.get(f"seg_d2_cityscapes_fine_sem_seg_{split}")
        ins = MetadataCatalog.get(f"seg_d2_cityscapes_fine_instance_seg_{split}")
        assert f"seg_d2_cityscapes_fine_sem_seg_{split}" in names
        assert f"seg_d2_cityscapes_fine_instance_seg_{split}" in names
        assert sem.evaluator_type == "cityscapes_sem_seg" and ins.evaluator_type == "cityscapes_instance"
        for m in (sem, ins):
            assert m.stuff_classes == STUFF_CLASSES and len(m.stuff_classes) == 19 and len(m.stuff_colors) == 19
            assert m.thing_classes == ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
            assert len(m.thing_colors) == 8 and m.ignore_label == 255
            root = os.path.join(os.path.expanduser(os.environ["DETECTRON2_DATASETS"]), "cityscapes")
            assert m.gt_dir == os.path.join(root, "gtFine", split)
            assert m.image_dir == os.path.join(root, "leftImg8bit", split)
    assert STUFF_CLASSES[0] == "road" and STUFF_CLASSES[18] == "bicycle"


def test_registration_reads_nothing_and_loading_uses_the_fixture(cs_root, tmp_path):
    register_cityscapes(str(tmp_path / "nowhere"), name_prefix="test_reg_missing_")  # no error: nothing read
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(FileNotFoundError, match="Expected the official layout"):
        DatasetCatalog.get("test_reg_missing_cityscapes_fine_sem_seg_val")
    register_cityscapes(os.path.dirname(cs_root), instance_source="polygons", mask_format="bitmask",
                        name_prefix="test_reg_fixture_")
    assert DatasetCatalog.get("test_reg_fixture_cityscapes_fine_instance_seg_val") == \
        load_cityscapes_instances(cs_root, "val", "instanceIds", "bitmask")
    assert len(DatasetCatalog.get("test_reg_fixture_cityscapes_fine_sem_seg_train")) == 4


# ---- clear errors ----

def test_wrong_root_says_what_was_expected_and_found(cs_root, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_cityscapes_semantic(str(tmp_path / "missing"), "train")
    msg = str(e.value)
    assert "Expected the official layout" in msg and "leftImg8bit/train/<city>/" in msg
    assert "does not exist" in msg
    # Pointing at the parent of cityscapes/: lists what is there.
    with pytest.raises(FileNotFoundError) as e:
        load_cityscapes_instances(os.path.dirname(cs_root), "val")
    assert "Found:" in str(e.value) and "[cityscapes]" in str(e.value)
    # gtFine missing.
    root = tmp_path / "only_images" / "cityscapes"
    shutil.copytree(os.path.join(cs_root, "leftImg8bit"), root / "leftImg8bit")
    with pytest.raises(FileNotFoundError, match=r"ground truth folder .*gtFine/val' is missing") as e:
        load_cityscapes_semantic(str(root), "val")
    assert "contains [leftImg8bit]" in str(e.value)
    # No images.
    (root / "gtFine" / "val").mkdir(parents=True)
    shutil.rmtree(root / "leftImg8bit" / "val")
    (root / "leftImg8bit" / "val" / "frankfurt").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no \\*_leftImg8bit.png images"):
        load_cityscapes_semantic(str(root), "val")


@pytest.mark.parametrize("kind,load", [
    ("labelIds.png", lambda r: load_cityscapes_semantic(r, "val")),
    ("instanceIds.png", lambda r: load_cityscapes_instances(r, "val", "instanceIds")),
    ("polygons.json", lambda r: load_cityscapes_instances(r, "val", "polygons")),
])
def test_missing_ground_truth_file_names_the_image(cs_copy, kind, load):
    stem = _stems(cs_copy, "val")[1]
    os.remove(_gt(cs_copy, "val", stem, kind))
    with pytest.raises(FileNotFoundError) as e:
        load(cs_copy)
    assert f"{stem}_leftImg8bit.png" in str(e.value) and f"{stem}_gtFine_{kind}" in str(e.value)


def test_unknown_label_ids(cs_copy):
    stem = _stems(cs_copy, "val")[0]
    label_file = _gt(cs_copy, "val", stem, "labelIds.png")
    label_ids = np.asarray(Image.open(label_file)).copy()
    label_ids[:4, :4] = 40
    Image.fromarray(label_ids).save(label_file)
    with pytest.raises(ValueError, match=r"labelIds \[40\] that cityscapesscripts' labels do not define") as e:
        load_cityscapes_semantic(cs_copy, "val")
    assert label_file in str(e.value)
    assert not os.path.exists(_gt(cs_copy, "val", stem, "labelTrainIds.png"))  # nothing written half-way

    inst_file = _gt(cs_copy, "val", stem, "instanceIds.png")
    inst = np.asarray(Image.open(inst_file)).copy()
    inst[:4, :4] = 45001
    Image.fromarray(inst).save(inst_file)
    with pytest.raises(ValueError, match=r"instance ids \[45001\]") as e:
        load_cityscapes_instances(cs_copy, "val", "instanceIds")
    assert inst_file in str(e.value)

    json_file = _gt(cs_copy, "val", stem, "polygons.json")
    with open(json_file) as f:
        data = json.load(f)
    data["objects"].append({"label": "spaceship", "polygon": [[0, 0], [5, 0], [5, 5]]})
    with open(json_file, "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match="label 'spaceship'") as e:
        load_cityscapes_instances(cs_copy, "val", "polygons")
    assert json_file in str(e.value)


def test_unexpected_image_file_is_an_error(cs_copy):
    city_dir = os.path.join(cs_copy, "leftImg8bit", "val", "frankfurt")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(os.path.join(city_dir, "frankfurt_000000_000019_rightImg8bit.png"))
    with pytest.raises(ValueError, match="rightImg8bit.png' among Cityscapes images"):
        load_cityscapes_semantic(cs_copy, "val")


def test_works_where_detectron2s_cityscapes_modules_are_broken(cs_root, tmp_path):
    """On detectron2 main, its Cityscapes modules fail with "No module named 'deeplearning'" (#5436).

    The subprocess installs stand-ins for both modules that raise that error as soon as anything
    of theirs is called (v0.6's ``detectron2.data`` imports the dataset module, so the stand-in
    has to exist), then registers, loads and evaluates seg_d2's Cityscapes datasets, and checks
    that the stand-ins are still the modules in ``sys.modules`` (nothing re-imported the real ones).
    """
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent(f"""
        import sys, types
        ERR = "No module named 'deeplearning'"
        BROKEN = ("detectron2.data.datasets.cityscapes", "detectron2.evaluation.cityscapes_evaluation")

        def broken(*args, **kwargs):
            raise ModuleNotFoundError(ERR)

        class Broken(types.ModuleType):
            def __getattr__(self, name):
                if name.startswith("__"):
                    raise AttributeError(name)
                return type(name, (), {{"__init__": broken}}) if name[0].isupper() else broken

        for name in BROKEN:
            sys.modules[name] = Broken(name)
        import numpy as np, torch
        import seg_d2
        from detectron2.data import DatasetCatalog, MetadataCatalog
        from seg_d2.data.datasets.cityscapes import register_cityscapes
        from seg_d2.evaluation.cityscapes_evaluation import CityscapesSemSegEvaluator
        register_cityscapes({os.path.dirname(cs_root)!r}, name_prefix="t_")
        assert len(DatasetCatalog.get("t_cityscapes_fine_instance_seg_val")) == 4
        dicts = DatasetCatalog.get("t_cityscapes_fine_sem_seg_val")
        ev = CityscapesSemSegEvaluator("t_cityscapes_fine_sem_seg_val", distributed=False)
        ev.reset()
        for d in dicts:
            ev.process([d], [{{"sem_seg": torch.zeros(19, d["height"], d["width"])}}])
        assert 0 < ev.evaluate()["sem_seg"]["IoU"] < 100
        for name in BROKEN:
            assert isinstance(sys.modules[name], Broken), name
        print("OK")
    """))
    res = run_tool([script], cwd=REPO, fresh=True)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stdout[-2000:] + res.stderr[-4000:]


def test_sources_do_not_import_detectron2s_cityscapes_modules():
    forbidden = {"detectron2.data.datasets.cityscapes", "detectron2.evaluation.cityscapes_evaluation"}
    for rel in ("seg_d2/data/datasets/cityscapes.py", "seg_d2/data/datasets/cityscapes_fixture.py",
                "seg_d2/evaluation/cityscapes_evaluation.py"):
        imported = set()
        for node in ast.walk(ast.parse((REPO / rel).read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        assert not imported & forbidden, rel
        assert "cityscapesscripts.helpers.labels" in imported or "cityscapesscripts.helpers.annotation" in imported


def test_fixture_is_deterministic_and_the_cli_writes_it(cs_root, tmp_path):
    res = run_tool([REPO / "tools" / "make_cityscapes_fixture.py", "--root", tmp_path / "cityscapes"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"DETECTRON2_DATASETS={tmp_path}" in res.stdout
    files = sorted(os.path.relpath(os.path.join(d, f), cs_root) for d, _, fs in os.walk(cs_root) for f in fs
                   if "labelTrainIds" not in f)
    assert files == sorted(os.path.relpath(os.path.join(d, f), tmp_path / "cityscapes")
                           for d, _, fs in os.walk(tmp_path / "cityscapes") for f in fs)
    for rel in files:
        with open(os.path.join(cs_root, rel), "rb") as a, open(tmp_path / "cityscapes" / rel, "rb") as b:
            assert a.read() == b.read(), rel
