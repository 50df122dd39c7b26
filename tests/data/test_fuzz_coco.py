"""Property-based fuzzing of dataset files (issue 14): malformed COCO jsons and label maps either load or
raise seg_d2's documented error (:class:`~seg_d2.data.image_io.DataFileError`: ``COCOFormatError``,
``SemSegDataError``) with the file named. Never another exception, a crash, a hang or a half-written cache.

Each COCO case starts from a valid json (polygons, compressed and uncompressed RLE, a crowd region) and
applies 1-3 random corruptions: a value replaced (NaN, infinity, negative, huge, wrong type), a key deleted,
an entry duplicated, unknown ids, RLE of the wrong size, bad polygons; then the text may be truncated or a
byte garbled. A case that loads is used as training does (detectron2's ``annotations_to_instances`` on every
image, masks decoded) and converted to label maps (``coco_json_to_sem_seg``), which must then be complete.
Deterministic (``derandomize``): the same cases in every CI run; the case counts are asserted.
"""
import copy
import json
import math
import os
import signal

import numpy as np
import pycocotools.mask as mask_util
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from detectron2.data.detection_utils import annotations_to_instances
from seg_d2.data import DataFileError
from seg_d2.data.datasets import coco_json_to_sem_seg
from seg_d2.data.datasets._atomic import DONE_MARKER
from seg_d2.data.datasets.coco_instances import load_coco_instances
from seg_d2.data.sem_seg_io import read_label_map

N_JSON, N_LABEL, N_FOLDER = 1000, 400, 200  # cases per run
SIZES = {1: (6, 8), 2: (5, 4)}  # image id -> (height, width)
FUZZ_SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                     suppress_health_check=list(HealthCheck))


def _rle(h, w, y0, y1, x0, x1, compressed=True):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_util.encode(np.asfortranarray(m))
    if compressed:
        return {"size": [h, w], "counts": rle["counts"].decode()}
    flat, runs, cur, run = m.ravel(order="F"), [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(run)
            cur, run = v, 0
        run += 1
    return {"size": [h, w], "counts": runs + [run]}


def base_dataset():
    return {
        "images": [{"id": i, "file_name": f"img{i}.png", "height": h, "width": w} for i, (h, w) in SIZES.items()],
        "categories": [{"id": 1, "name": "a"}, {"id": 5, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 1, 4, 3], "area": 12,
             "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]},
            {"id": 2, "image_id": 1, "category_id": 5, "iscrowd": 0, "bbox": [0, 2, 3, 3],
             "segmentation": _rle(6, 8, 2, 5, 0, 3)},
            {"id": 3, "image_id": 2, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 2, 2],
             "segmentation": _rle(5, 4, 0, 2, 0, 2, compressed=False)},
            {"id": 4, "image_id": 2, "category_id": 5, "iscrowd": 0, "bbox": [1, 1, 2.5, 2.5],
             "segmentation": [[1, 1, 3.5, 1, 3.5, 3.5], [1, 2, 2, 2, 2, 3]]},
        ],
    }


BAD_VALUES = st.sampled_from([
    math.nan, math.inf, -math.inf, -1, 0, -0.5, 2.5, 10 ** 30, 10 ** 400, 1e308, 2 ** 31, 2 ** 63, "x", "", "1",
    None, True, False, [], {}, [1, 2], [[1]], [math.nan] * 6, {"size": [6, 8]}, {"counts": "0"}, "\x7f\x00",
])


def _slots(node, out, depth=0):
    """Every (container, key) of a json tree."""
    if depth > 6:
        return out
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((node, k))
        _slots(v, out, depth + 1)
    return out


@st.composite
def corrupted_json(draw):
    d = base_dataset()
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(d, dict):  # replaced by a non-object: nothing more to corrupt inside
            break
        kind = draw(st.sampled_from(["set", "set", "set", "jitter", "jitter", "jitter", "delete", "duplicate",
                                     "unknown", "rle", "polygon", "degenerate", "section", "top"]))
        slots = _slots(d, [])
        if kind == "jitter":  # a number moved a little: often still valid, or just outside the image
            numeric = [(n, k) for n, k in slots if isinstance(n[k], (int, float)) and not isinstance(n[k], bool)]
            node, k = numeric[draw(st.integers(0, len(numeric) - 1))]
            node[k] = draw(st.one_of(st.integers(-2, 10), st.floats(-2, 10)))
        elif kind == "set" and slots:
            node, k = slots[draw(st.integers(0, len(slots) - 1))]
            node[k] = copy.deepcopy(draw(BAD_VALUES))
        elif kind == "delete":
            keyed = [(n, k) for n, k in slots if isinstance(n, dict)]
            if keyed:
                node, k = keyed[draw(st.integers(0, len(keyed) - 1))]
                del node[k]
        elif kind == "duplicate":
            section = d.get(draw(st.sampled_from(["annotations", "images", "categories"])))
            if isinstance(section, list) and section:
                section.append(copy.deepcopy(section[draw(st.integers(0, len(section) - 1))]))
        elif kind == "unknown" and isinstance(d.get("annotations"), list) and d["annotations"]:
            ann = d["annotations"][draw(st.integers(0, len(d["annotations"]) - 1))]
            if isinstance(ann, dict):
                ann[draw(st.sampled_from(["image_id", "category_id"]))] = draw(st.sampled_from([99, -1, 0, 2 ** 70]))
        elif kind == "rle":  # RLE of the wrong size: size swapped or off by one, runs off by one
            ann = d.get("annotations", [None, None])[1] if isinstance(d.get("annotations"), list) and \
                len(d["annotations"]) > 1 else None
            if isinstance(ann, dict) and isinstance(ann.get("segmentation"), dict):
                segm = ann["segmentation"]
                how = draw(st.sampled_from(["swap", "taller", "runs", "uncompressed-runs"]))
                if how == "swap":
                    segm["size"] = [8, 6]
                elif how == "taller":
                    segm["size"] = [7, 8]
                elif how == "runs":
                    segm["counts"] = _rle(7, 8, 2, 5, 0, 3)["counts"]
                else:
                    segm["counts"] = _rle(6, 8, 2, 5, 0, 3, compressed=False)["counts"] + [draw(st.integers(-3, 3))]
        elif kind == "polygon" and isinstance(d.get("annotations"), list) and d["annotations"]:
            ann = d["annotations"][0]
            if isinstance(ann, dict):
                ann["segmentation"] = [draw(st.lists(
                    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10 ** 6, 10 ** 6)),
                    max_size=9))]
        elif kind == "degenerate" and isinstance(d.get("annotations"), list) and d["annotations"]:
            # a polygon inside its image that covers no pixel: one point repeated, or points on a line
            ann = d["annotations"][draw(st.sampled_from([0, len(d["annotations"]) - 1]))]
            if isinstance(ann, dict):
                x, y = draw(st.floats(0, 3)), draw(st.floats(0, 3))
                dx, dy = draw(st.sampled_from([(0, 0), (1, 1), (1, 0), (0.5, 0)]))
                ann["segmentation"] = [[x, y, x + dx, y + dy, x + 2 * dx, y + 2 * dy, x, y]]
        elif kind == "section":
            d[draw(st.sampled_from(["annotations", "images", "categories"]))] = draw(BAD_VALUES)
        elif kind == "top":
            d = draw(st.sampled_from([[], "coco", 3, None, [d]]))
    text = json.dumps(d, allow_nan=True)
    raw = text.encode()
    damage = draw(st.sampled_from(["none"] * 8 + ["truncate", "garble", "empty", "deep"]))
    if damage == "truncate":
        raw = raw[:draw(st.integers(0, max(0, len(raw) - 1)))]
    elif damage == "garble" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1:]
    elif damage == "empty":
        raw = b""
    elif damage == "deep":
        raw = b"[" * 100000  # nesting beyond Python's recursion limit
    return raw


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_images")
    rng = np.random.default_rng(0)
    for i, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(root / f"img{i}.png")
    return root


class _Timeout(Exception):
    pass


@pytest.fixture
def no_hang():
    """Fail (instead of hanging CI) if the fuzz test runs past 5 minutes."""
    def alarm(*_):
        raise _Timeout("fuzzing hung")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _assert_documented(e: Exception, path) -> None:
    assert isinstance(e, DataFileError), f"{type(e).__name__}: {e}"
    assert str(path) in str(e), f"the file is not named: {e}"


def _use_as_training_does(dicts):
    for d in dicts:
        annos = [a for a in d["annotations"] if a.get("iscrowd", 0) == 0]
        inst = annotations_to_instances(annos, (d["height"], d["width"]), mask_format="bitmask")
        if inst.has("gt_masks"):  # the masks decoded at the image's size, none of them empty
            assert inst.gt_masks.tensor.shape[1:] == (d["height"], d["width"])
            assert inst.gt_masks.tensor.flatten(1).any(dim=1).all(), "an instance with an empty mask was loaded"
        assert np.isfinite(inst.gt_boxes.tensor.numpy()).all()


def test_fuzz_coco_jsons(tmp_path, image_root, no_hang):
    counts = {"cases": 0, "loaded": 0, "rejected": 0, "label maps written": 0}

    @settings(max_examples=N_JSON, **FUZZ_SETTINGS)
    @given(raw=corrupted_json(), lenient=st.booleans())
    def case(raw, lenient):
        n = counts["cases"] = counts["cases"] + 1
        path = tmp_path / f"case{n}.json"
        path.write_bytes(raw)
        try:
            dicts = load_coco_instances(str(path), str(image_root), validation="lenient" if lenient else "strict")
        except Exception as e:
            _assert_documented(e, path)
            counts["rejected"] += 1
            return
        counts["loaded"] += 1
        _use_as_training_does(dicts)
        out = tmp_path / f"sem{n}"
        try:
            coco_json_to_sem_seg(str(out / "labels"), instances_json=str(path), image_root=str(image_root))
        except Exception as e:
            _assert_documented(e, path)
            assert not out.exists() or os.listdir(out) == [], f"half-written label maps: {os.listdir(out)}"
            return
        assert os.path.isfile(out / "labels" / DONE_MARKER)
        for img in dicts:
            label = read_label_map(str(out / "labels" / os.path.basename(img["file_name"])))
            assert label.shape == (img["height"], img["width"])
        counts["label maps written"] += 1

    case()
    print(f"COCO json fuzz: {counts}")
    assert counts["cases"] >= N_JSON
    assert counts["loaded"] > 60 and counts["rejected"] > 500  # both outcomes well exercised


@st.composite
def corrupted_label_map(draw):
    kind = draw(st.sampled_from(["png", "npy", "tif", "garbage", "truncated-png", "truncated-npy"]))
    dtype = draw(st.sampled_from(["uint8", "uint16", "int32", "int64", "float32", "float64", "bool", "int8"]))
    shape = draw(st.sampled_from([(4, 5), (4, 5, 1), (4, 5, 3), (4, 5, 4), (20,), (0, 5), (1, 1), (2, 3, 2)]))
    values = draw(st.sampled_from([0, 1, 255, 256, 65535, -1, math.nan, math.inf, 0.5, 2 ** 40]))
    arr = np.full(shape, 0, dtype=np.float64)
    if arr.size:
        arr.flat[draw(st.integers(0, arr.size - 1))] = values
    with np.errstate(invalid="ignore", over="ignore"):
        arr = arr.astype(dtype)
    return kind, arr, draw(st.binary(max_size=64))


def test_fuzz_label_maps(tmp_path, no_hang):
    counts = {"cases": 0, "read": 0, "rejected": 0}

    @settings(max_examples=N_LABEL, **FUZZ_SETTINGS)
    @given(case=corrupted_label_map())
    def case(case):
        kind, arr, junk = case
        n = counts["cases"] = counts["cases"] + 1
        ext = {"npy": ".npy", "truncated-npy": ".npy", "tif": ".tif"}.get(kind, ".png")
        path = tmp_path / f"label{n}{ext}"
        if kind.endswith("npy"):
            np.save(path, arr)
        elif kind == "garbage":
            path.write_bytes(junk)
        else:
            try:
                Image.fromarray(arr).save(path)
            except Exception:  # a dtype/shape PIL cannot write as an image: write junk instead
                path.write_bytes(b"\x89PNG\r\n\x1a\n" + junk)
        if kind.startswith("truncated"):
            path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
        try:
            label = read_label_map(str(path))
        except Exception as e:
            _assert_documented(e, path)
            counts["rejected"] += 1
            return
        assert label.ndim == 2 and label.dtype.kind in "ui"
        counts["read"] += 1

    case()
    print(f"label map fuzz: {counts}")
    assert counts["cases"] >= N_LABEL and counts["read"] > 20 and counts["rejected"] > 100


@st.composite
def label_folder(draw):
    """1-3 label maps of 2 classes (0, 1) and ignore 255: all ignored, all one class, random mixes, and now
    and then a value past the classes."""
    maps = []
    for _ in range(draw(st.integers(1, 3))):
        h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        kind = draw(st.sampled_from(["ignore", "ignore", "class", "mixed", "mixed", "bad value"]))
        if kind == "ignore":
            arr = np.full((h, w), 255, np.uint8)
        elif kind == "class":
            arr = np.full((h, w), draw(st.integers(0, 1)), np.uint8)
        else:
            cells = draw(st.lists(st.sampled_from([0, 1, 255, 255]), min_size=h * w, max_size=h * w))
            arr = np.array(cells, np.uint8).reshape(h, w)
            if kind == "bad value":
                arr.flat[draw(st.integers(0, h * w - 1))] = draw(st.sampled_from([2, 7, 254]))
        maps.append(arr)
    return maps


def test_fuzz_sem_seg_folders_without_labelled_pixels(tmp_path, no_hang):
    """Folders of label maps, all-ignore ones among them: loading (validate=True, the default) refuses a folder
    with no labelled pixel, naming it; what loads evaluates to finite metrics (a perfect prediction scores 100).
    (The evaluator's own all-NaN report: tests/evaluation/test_sem_seg_evaluation.py.)"""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from seg_d2.data.datasets import load_sem_seg_folder, register_sem_seg_folder
    from seg_d2.evaluation import SemSegBoundaryEvaluator
    import torch

    counts = {"cases": 0, "loaded": 0, "refused: no labelled pixel": 0, "refused: other": 0}

    @settings(max_examples=N_FOLDER, **FUZZ_SETTINGS)
    @given(maps=label_folder())
    def case(maps):
        n = counts["cases"] = counts["cases"] + 1
        img, gt = tmp_path / f"f{n}" / "img", tmp_path / f"f{n}" / "gt"
        img.mkdir(parents=True)
        gt.mkdir()
        for i, m in enumerate(maps):
            Image.fromarray(np.zeros(m.shape + (3,), np.uint8)).save(img / f"{i}.png")
            Image.fromarray(m).save(gt / f"{i}.png")
        labelled = any((m != 255).any() for m in maps)
        try:
            load_sem_seg_folder(str(img), str(gt), 2, 255)
        except Exception as e:
            _assert_documented(e, gt)
            if "no labelled pixel" in str(e):
                assert not labelled
                counts["refused: no labelled pixel"] += 1
            else:
                counts["refused: other"] += 1
            return
        assert labelled
        counts["loaded"] += 1
        name = f"fuzz_sem_seg_folder_{n}"
        register_sem_seg_folder(name, str(img), str(gt), ["a", "b"], validate=False)
        try:
            ev = SemSegBoundaryEvaluator(name, distributed=False)
            ev.reset()
            for d in DatasetCatalog.get(name):
                label = np.array(Image.open(d["sem_seg_file_name"]), np.int64)
                logits = torch.nn.functional.one_hot(torch.as_tensor(np.where(label == 255, 0, label)), 2)
                ev.process([d], [{"sem_seg": logits.permute(2, 0, 1).float()}])
            res = ev.evaluate()["sem_seg"]
        finally:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        assert res["mIoU"] == 100 and res["pACC"] == 100 and np.isfinite(res["fwIoU"])

    case()
    print(f"sem_seg folder fuzz: {counts}")
    assert counts["cases"] >= N_FOLDER and counts["loaded"] > 20 and counts["refused: no labelled pixel"] > 10
