"""COCO-format jsons (instances and/or stuff; polygons, RLE) turned into semantic label maps."""
import importlib
import json
import multiprocessing
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_d2.data.datasets import COCOFormatError, coco_json_to_sem_seg, register_coco_sem_seg
from seg_d2.data.sem_seg_io import read_label_map

H, W = 20, 30


def rle(mask, compressed=True):
    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    if compressed:
        return {"size": r["size"], "counts": r["counts"].decode("ascii")}
    # uncompressed RLE: run lengths in column-major order, starting with zeros
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def box(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def ann(i, cat, segm, iscrowd=0):
    return {"id": i, "image_id": 1, "category_id": cat, "segmentation": segm, "bbox": [0, 0, 2, 2],
            "iscrowd": iscrowd, "area": 4.0}


@pytest.fixture
def coco(tmp_path):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((H, W, 3), np.uint8))
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W}]
    big = box(2, 16, 2, 20)
    instances = {
        "images": images,
        "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "person"}],
        "annotations": [
            # a small person (polygon) lying on a large car (RLE); listed first to test the order
            ann(1, 7, [[5.0, 5.0, 10.0, 5.0, 10.0, 10.0, 5.0, 10.0]]),
            ann(2, 3, rle(big)),
            ann(3, 3, rle(box(17, 20, 25, 30), compressed=False)),  # uncompressed RLE
            ann(4, 7, rle(box(0, 4, 24, 30)), iscrowd=1),  # crowd -> ignore
        ],
    }
    stuff = {
        "images": images,
        "categories": [{"id": 100, "name": "sky"}],
        "annotations": [ann(10, 100, rle(box(0, 20, 0, 30)))],  # everything: instances paint over it
    }
    for name, d in (("instances.json", instances), ("stuff.json", stuff)):
        (tmp_path / name).write_text(json.dumps(d))
    return tmp_path


def test_label_maps_from_instances_and_stuff(coco):
    dicts = coco_json_to_sem_seg(str(coco / "sem"), instances_json=str(coco / "instances.json"),
                                 stuff_json=str(coco / "stuff.json"), image_root=str(coco / "images"))
    assert len(dicts) == 1 and dicts[0]["file_name"] == str(coco / "images" / "a.png")
    label = read_label_map(dicts[0]["sem_seg_file_name"])
    # classes: background 0, car (id 3) 1, person (id 7) 2, sky (id 100) 3
    expected = np.full((H, W), 3)
    expected[box(2, 16, 2, 20)] = 1
    person = np.zeros((H, W), np.uint8)
    cv2.fillPoly(person, [np.array([[5, 5], [10, 5], [10, 10], [5, 10]], np.int32)], 1)
    expected[mask_util.decode(mask_util.merge(mask_util.frPyObjects(
        [[5.0, 5.0, 10.0, 5.0, 10.0, 10.0, 5.0, 10.0]], H, W))) > 0] = 2
    expected[box(17, 20, 25, 30)] = 1
    expected[box(0, 4, 24, 30)] = 255
    assert np.array_equal(label, expected)
    assert label[7, 7] == 2  # the small person stays visible on the large car


def test_background_and_ignore_without_stuff(coco):
    dicts = coco_json_to_sem_seg(str(coco / "sem"), instances_json=str(coco / "instances.json"))
    label = read_label_map(dicts[0]["sem_seg_file_name"])
    assert label[19, 0] == 0 and label[1, 26] == 255
    dicts = coco_json_to_sem_seg(str(coco / "sem_nobg"), instances_json=str(coco / "instances.json"), background=None)
    label = read_label_map(dicts[0]["sem_seg_file_name"])
    assert label[19, 0] == 255 and label[3, 3] == 0  # car is class 0 without background


def test_overlap_resolution_does_not_depend_on_annotation_order(coco):
    a = coco_json_to_sem_seg(str(coco / "sem_a"), instances_json=str(coco / "instances.json"))
    d = json.loads((coco / "instances.json").read_text())
    d["annotations"] = d["annotations"][::-1]
    (coco / "reversed.json").write_text(json.dumps(d))
    b = coco_json_to_sem_seg(str(coco / "sem_b"), instances_json=str(coco / "reversed.json"))
    assert np.array_equal(read_label_map(a[0]["sem_seg_file_name"]), read_label_map(b[0]["sem_seg_file_name"]))


def test_written_once_and_reused(coco):
    out = coco / "sem"
    coco_json_to_sem_seg(str(out), instances_json=str(coco / "instances.json"))
    f = out / "a.png"
    mtime = os.stat(f).st_mtime_ns
    coco_json_to_sem_seg(str(out), instances_json=str(coco / "instances.json"))
    assert os.stat(f).st_mtime_ns == mtime
    assert not [p for p in os.listdir(coco) if p.startswith(".")]  # no temporary left


def test_rewritten_when_the_jsons_change(coco):
    out = coco / "sem"
    coco_json_to_sem_seg(str(out), instances_json=str(coco / "instances.json"))
    d = json.loads((coco / "instances.json").read_text())
    d["annotations"] = [a for a in d["annotations"] if a["id"] != 4]  # no crowd region any more
    (coco / "instances.json").write_text(json.dumps(d))
    dicts = coco_json_to_sem_seg(str(out), instances_json=str(coco / "instances.json"))
    assert read_label_map(dicts[0]["sem_seg_file_name"])[1, 26] == 0  # was 255 (crowd)
    assert not [p for p in os.listdir(coco) if p.startswith(".") and not p.endswith(".lock")]


def test_complete_label_maps_are_never_replaced(coco, monkeypatch):
    """Another rank finishing the same conversion first (here: while this one draws its masks) keeps
    its label maps: the others may be reading them, so they must neither vanish nor be rewritten."""
    module = importlib.import_module("seg_d2.data.datasets.coco_sem_seg")
    out, other = coco / "sem", {}
    segm_to_mask = module._segm_to_mask

    def other_rank_first(*args):
        if not other:
            other["started"] = True
            other["dicts"] = coco_json_to_sem_seg(str(out), instances_json=str(coco / "instances.json"))
            other["stat"] = os.stat(out / "a.png")
        return segm_to_mask(*args)

    monkeypatch.setattr(module, "_segm_to_mask", other_rank_first)
    dicts = coco_json_to_sem_seg(str(out), instances_json=str(coco / "instances.json"))
    assert dicts == other["dicts"]
    stat = os.stat(out / "a.png")
    assert (stat.st_ino, stat.st_mtime_ns) == (other["stat"].st_ino, other["stat"].st_mtime_ns)
    assert not [p for p in os.listdir(coco) if p.startswith(".")]


def _convert(barrier, results, root, instances_json):
    """One rank: convert as soon as all ranks are ready, then read every label map back."""
    try:
        barrier.wait()
        dicts = coco_json_to_sem_seg(root, instances_json=instances_json)
        results.put([read_label_map(d["sem_seg_file_name"]).tolist() for d in dicts])
    except BaseException as e:  # reported to the test
        results.put(f"{type(e).__name__}: {e}")


def test_several_processes_convert_at_once(coco):
    """As ranks do: all succeed and read complete label maps."""
    d = json.loads((coco / "instances.json").read_text())
    for i in range(2, 13):  # more images: a conversion long enough for the ranks to overlap
        cv2.imwrite(str(coco / "images" / f"{i}.png"), np.zeros((H, W, 3), np.uint8))
        d["images"].append({"id": i, "file_name": f"{i}.png", "height": H, "width": W})
        d["annotations"] += [dict(a, id=100 * i + a["id"], image_id=i) for a in d["annotations"][:4]]
    (coco / "many.json").write_text(json.dumps(d))
    ctx = multiprocessing.get_context("spawn")
    n = 2  # ranks
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_convert, args=(barrier, results, str(coco / "sem"), str(coco / "many.json")))
             for _ in range(n)]
    for p in procs:
        p.start()
    got = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    expected = [read_label_map(x["sem_seg_file_name"]).tolist()
                for x in coco_json_to_sem_seg(str(coco / "sem_single"), instances_json=str(coco / "many.json"))]
    assert all(g == expected for g in got), [g for g in got if isinstance(g, str)]
    assert not [p for p in os.listdir(coco) if p.startswith(".")]


def test_errors(coco):
    (coco / "foreign").mkdir()
    (coco / "foreign" / "x.txt").write_text("mine")
    with pytest.raises(COCOFormatError, match="was not written by seg_d2"):
        coco_json_to_sem_seg(str(coco / "foreign"), instances_json=str(coco / "instances.json"))
    d = json.loads((coco / "instances.json").read_text())
    d["annotations"][0]["segmentation"] = [[1.0, 2.0, 3.0]]
    (coco / "bad.json").write_text(json.dumps(d))
    with pytest.raises(COCOFormatError, match="(?s)bad.json.*odd number of coordinates"):
        coco_json_to_sem_seg(str(coco / "sem_bad"), instances_json=str(coco / "bad.json"))
    assert not (coco / "sem_bad").exists()  # nothing written half-way
    with pytest.raises(ValueError, match="instances_json and/or stuff_json"):
        coco_json_to_sem_seg(str(coco / "sem_none"))


def test_register_coco_sem_seg(coco):
    name = "test_coco_sem_seg_register"
    register_coco_sem_seg(name, str(coco / "images"), str(coco / "sem"), instances_json=str(coco / "instances.json"),
                          stuff_json=str(coco / "stuff.json"))
    try:
        meta = MetadataCatalog.get(name)
        assert meta.stuff_classes == ["background", "car", "person", "sky"]
        assert meta.stuff_dataset_id_to_contiguous_id == {0: 0, 3: 1, 7: 2, 100: 3}
        assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
        assert len(DatasetCatalog.get(name)) == 1
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
