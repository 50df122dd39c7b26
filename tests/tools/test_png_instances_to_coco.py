"""tools/png_instances_to_coco.py: PNG instance-id maps -> COCO RLE json -> back, both encodings."""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from seg_d2.data.datasets import register_coco_dataset, validate_coco_json
from tests.conftest import REPO, run_tool

TOOL = REPO / "tools" / "png_instances_to_coco.py"
H, W = 30, 40
CATS = "1:circle,4:square"


def instance_maps():
    """Two images' encoded maps (category * 1000 + instance), with touching and crowd regions."""
    a = np.zeros((H, W), np.uint16)
    a[2:12, 3:15] = 1001  # circle #1
    a[5:20, 15:25] = 1002  # circle #2, touching #1
    a[20:28, 30:38] = 4001  # square #1
    a[0:4, 30:40] = 4  # a square crowd region (value < divisor, a listed category)
    a[25:30, 0:10] = 7  # an unlisted class without instances (stuff): background
    b = np.zeros((H, W), np.uint16)
    b[10:25, 5:35] = 4001  # instance indices count from 1 per category: the round trip keeps them
    return {"a": a, "b": b}


def write_inputs(root, maps, image_ext=".jpg"):
    (root / "images").mkdir()
    (root / "inst").mkdir()
    for stem, m in maps.items():
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(root / "images" / f"{stem}{image_ext}")
        Image.fromarray(m).save(root / "inst" / f"{stem}.png")


def convert(root, *extra, output="out.json"):
    return run_tool([TOOL, "--images", root / "images", "--instances", root / "inst", "--categories", CATS,
                     "--output", root / output, *extra])


def decode_to_instance_map(coco, image_id, divisor=1000):
    """Rebuild the encoded map from the json: category * divisor + instance index (crowd: category)."""
    img = next(i for i in coco["images"] if i["id"] == image_id)
    out = np.zeros((img["height"], img["width"]), np.int64)
    counters = {}
    for ann in (a for a in coco["annotations"] if a["image_id"] == image_id):
        m = mask_util.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
        assert not (out[m > 0]).any(), "instances overlap"
        cat = ann["category_id"]
        if ann["iscrowd"]:
            out[m > 0] = cat
        else:
            counters[cat] = counters.get(cat, 0) + 1
            out[m > 0] = cat * divisor + counters[cat]
    return out


def test_round_trip_encoded_maps(tmp_path):
    maps = instance_maps()
    write_inputs(tmp_path, maps)
    res = convert(tmp_path)
    assert res.returncode == 0, res.stderr
    assert "2 images, 5 instances (1 crowd)" in res.stdout
    coco = json.loads((tmp_path / "out.json").read_text())
    validate_coco_json(str(tmp_path / "out.json"), str(tmp_path / "images"))
    assert [c["id"] for c in coco["categories"]] == [1, 4]
    names = {i["id"]: i["file_name"] for i in coco["images"]}
    assert sorted(names.values()) == ["a.jpg", "b.jpg"]
    for image_id, fname in names.items():
        expected = maps[fname[0]].astype(np.int64)
        expected[expected == 7] = 0  # the unlisted class is background
        assert np.array_equal(decode_to_instance_map(coco, image_id), expected)
    for ann in coco["annotations"]:
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        assert ann["area"] == mask_util.area(rle)
        assert ann["bbox"] == pytest.approx(mask_util.toBbox(rle).tolist())


def test_round_trip_instance_ids_with_semantic_maps(tmp_path):
    ids = np.zeros((H, W), np.uint8)
    sem = np.zeros((H, W), np.uint8)
    ids[2:10, 2:10], sem[2:10, 2:10] = 1, 4
    ids[12:20, 5:30], sem[12:20, 5:30] = 2, 1
    ids[22:29, 20:39], sem[22:29, 20:39] = 3, 4
    write_inputs(tmp_path, {"x": ids}, image_ext=".png")
    (tmp_path / "sem").mkdir()
    Image.fromarray(sem).save(tmp_path / "sem" / "x.png")
    res = convert(tmp_path, "--semantic", tmp_path / "sem")
    assert res.returncode == 0, res.stderr
    coco = json.loads((tmp_path / "out.json").read_text())
    rebuilt_ids, rebuilt_sem = np.zeros_like(ids), np.zeros_like(sem)
    for k, ann in enumerate(coco["annotations"], start=1):
        m = mask_util.decode({"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()})
        rebuilt_ids[m > 0], rebuilt_sem[m > 0] = k, ann["category_id"]
        assert ann["iscrowd"] == 0
    assert np.array_equal(rebuilt_ids, ids) and np.array_equal(rebuilt_sem, sem)

    # ... and the json registers and loads as a seg_d2 dataset.
    name = "test_seg_d2_png_instances"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_dataset(name, str(tmp_path / "out.json"), str(tmp_path / "images"))
    (record,) = DatasetCatalog.get(name)
    assert [a["category_id"] for a in record["annotations"]] == [1, 0, 1]  # ids 4, 1, 4 -> contiguous


@pytest.mark.parametrize("case, message", [
    ("unknown category", "value 3001 encodes category 3 (divisor 1000), not among the categories [1, 4]"),
    ("missing image", "no image named 'b.*'"),
    ("size mismatch", "instance map is 20x30, its image a.jpg is 40x30"),
])
def test_errors_name_the_file_and_nothing_is_written(tmp_path, case, message):
    maps = instance_maps()
    write_inputs(tmp_path, maps)
    if case == "unknown category":
        maps["b"][0:3, 0:3] = 3001
        Image.fromarray(maps["b"]).save(tmp_path / "inst" / "b.png")
    elif case == "missing image":
        (tmp_path / "images" / "b.jpg").unlink()
    else:
        Image.fromarray(np.zeros((H, 20), np.uint16)).save(tmp_path / "inst" / "a.png")
    res = convert(tmp_path)
    assert res.returncode == 1
    assert message in res.stderr and "inst/" in res.stderr
    assert not (tmp_path / "out.json").exists()
