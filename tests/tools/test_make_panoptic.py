"""tools/make_panoptic.py (COCO instances json + semantic label maps -> COCO panoptic + separated maps), its
errors, and the --coco-panoptic flag of train_net on its output."""
import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from panopticapi.utils import rgb2id
from tests.conftest import REPO, run_tool
from tests.tools.test_train_net_instance import INSTANT

MAKE_PANOPTIC = REPO / "tools" / "make_panoptic.py"
TRAIN_NET = REPO / "tools" / "train_net.py"
H = W = 48
CLASSES = ["background", "grass", "box"]  # label values 0, 1, 2; "box" is the json's thing category


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _box(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _make_source(root, n_images=3, instances=None, labels=None):
    """n images: grass below row 24, background above; a box instance (label 2) at rows 4-13, cols 4-13 (100
    px) and one at rows 30-39, cols 30-41 (120 px); an unannotated "box" label at rows 40-43, cols 4-7 (16 px,
    void); ignored pixels (255) at rows 0-1 (96 px)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    images, annotations = [], []
    for i in range(n_images):
        name = f"im{i}.png"
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(root / "images" / name)
        label = np.zeros((H, W), np.uint8)
        label[24:] = 1
        masks = instances if instances is not None else [_box(4, 14, 4, 14), _box(30, 40, 30, 42)]
        for m in masks:
            label[m] = 2
        label[40:44, 4:8] = 2
        label[0:2] = 255
        if labels is not None:
            label = labels
        Image.fromarray(label).save(root / "labels" / name)
        images.append({"id": i + 1, "file_name": name, "height": H, "width": W})
        for m in masks:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 7, "iscrowd": 0,
                                "segmentation": _rle(m), "area": int(m.sum()),
                                "bbox": [float(v) for v in mask_util.toBbox(_rle(m))]})
    with open(root / "instances.json", "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": [{"id": 7, "name": "box"}]}, f)
    return root


def _run(root, *extra):
    return run_tool([MAKE_PANOPTIC, "--instances", root / "instances.json", "--semantic", root / "labels",
                     "--classes", ",".join(CLASSES), "--output", root / "out", *extra])


def test_converts_instances_and_label_maps(tmp_path):
    root = _make_source(tmp_path)
    res = _run(root)
    assert res.returncode == 0, res.stderr
    pan = json.loads((root / "out" / "panoptic.json").read_text())
    cats = {c["name"]: c for c in pan["categories"]}
    assert cats["box"]["id"] == 7 and cats["box"]["isthing"] == 1
    assert (cats["background"]["id"], cats["grass"]["id"]) == (8, 9)  # after the largest thing id
    assert not cats["background"]["isthing"] and not cats["grass"]["isthing"]
    ann = pan["annotations"][0]
    ids = rgb2id(np.asarray(Image.open(root / "out" / "panoptic" / ann["file_name"]).convert("RGB")))
    areas = {(s["category_id"], s["area"]) for s in ann["segments_info"]}
    # by hand: background = rows 2-23 (22 x 48 = 1056) less box 1's 100 px -> 956 (its rows 4-13 are all above
    # row 24); grass = rows 24-47 (1152) less box 2 (120) and the void 4x4 (16) -> 1016
    assert areas == {(7, 100), (7, 120), (8, 956), (9, 1016)}
    for s in ann["segments_info"]:
        assert (ids == s["id"]).sum() == s["area"]
    assert (ids == 0).sum() == 96 + 16  # void: the ignored rows and the unannotated box label
    sep = np.asarray(Image.open(root / "out" / "panoptic_semseg" / ann["file_name"]))
    assert (sep == 0).sum() == 220 and (sep == 1).sum() == 956 and (sep == 2).sum() == 1016
    assert (sep == 255).sum() == 112
    assert "3 images, 12 segments" in res.stdout


def _fails(root, *needles, extra=()):
    res = _run(root, *extra)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: ")
    for n in needles:
        assert n in res.stderr, res.stderr
    assert not (root / "out").exists()  # nothing written half-way
    assert not [p for p in os.listdir(root) if p.startswith(".out_tmp")]
    return res.stderr


def test_overlapping_instances_are_refused_unless_told_which_is_on_top(tmp_path):
    # a 10x10 and a 10x10 box sharing 4x4 = 16 px, and a 2x2 box inside the second one
    root = _make_source(tmp_path, n_images=1, instances=[_box(4, 14, 4, 14), _box(10, 20, 10, 20), _box(15, 17, 15, 17)])
    _fails(root, "Annotations 1 and 2", "overlap on 16 pixels", "im0.png", "instances.json", "--overlaps")

    def areas(*extra):
        assert _run(root, "--overwrite", *extra).returncode == 0
        pan = json.loads((root / "out" / "panoptic.json").read_text())
        return sorted(s["area"] for s in pan["annotations"][0]["segments_info"] if s["category_id"] == 7)

    # later on top: box 3 keeps its 4 px, box 2 loses them (96), box 1 loses the 16 shared with box 2 (84)
    assert areas("--overlaps", "later-on-top") == [4, 84, 96]
    # smaller on top: box 3 (4 px) first, then box 1 (100, id 1 before id 2 at equal area), box 2 what is left
    assert areas("--overlaps", "smaller-on-top") == [4, 80, 100]


def test_a_label_that_is_no_class_is_refused(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[5, 5] = 7
    root = _make_source(tmp_path, instances=[], labels=labels)
    _fails(root, "im0.png", "values [7] that are no class", "0..2")


def test_an_instance_over_ignored_pixels_is_refused(tmp_path):
    labels = np.full((H, W), 255, np.uint8)
    root = _make_source(tmp_path, instances=[_box(4, 14, 4, 14)], labels=labels)
    _fails(root, "Annotation 1", "lies over 100 pixels", "marks ignore (255)", "im0.png")


def test_missing_and_mis_sized_label_maps_are_refused(tmp_path):
    root = _make_source(tmp_path / "a")
    os.remove(root / "labels" / "im1.png")
    _fails(root, "No label map for image im1.png", str(root / "labels"))
    root = _make_source(tmp_path / "b")
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(root / "labels" / "im2.png")
    _fails(root, "im2.png", "is 50x48 (WxH)", "48x48")


def test_an_existing_output_is_refused_unless_overwrite(tmp_path):
    root = _make_source(tmp_path)
    (root / "out").mkdir()
    (root / "out" / "keep.txt").write_text("x")
    res = _run(root)
    assert res.returncode == 1 and "exists and is not empty" in res.stderr
    assert (root / "out" / "keep.txt").exists()
    assert _run(root, "--overwrite").returncode == 0
    assert not (root / "out" / "keep.txt").exists() and (root / "out" / "panoptic.json").is_file()


def test_a_panoptic_set_without_semantic_maps_cannot_train(tmp_path):
    """Evaluation needs only the PNGs; PanopticFPN's semantic head needs the separated maps: said before training.
    (Training on the flag's output, with them: the README's own-data commands, run by tests/test_readme.py.)"""
    root = _make_source(tmp_path / "data", n_images=2)
    assert _run(root).returncode == 0
    out = root / "out"
    res = run_tool([TRAIN_NET, "--config-file", "configs/Shapes-PanopticSegmentation/panoptic_unet_R_18_FPN_scratch_bs4_600it.yaml",
                    "--coco-panoptic", "my_pan_nosem", out / "panoptic.json", root / "images", out / "panoptic", *INSTANT,
                    "DATASETS.TRAIN", "('my_pan_nosem',)", "DATASETS.TEST", "('my_pan_nosem',)",
                    "MODEL.ROI_HEADS.NUM_CLASSES", "1", "OUTPUT_DIR", tmp_path / "run"])
    assert res.returncode != 0
    assert "is panoptic without semantic maps" in res.stderr and "SEM_SEG_ROOT" in res.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("sem", [[], ["sem_dir"]])
def test_coco_panoptic_flag_leaves_the_config_options_alone(sem):
    import importlib.util

    spec = importlib.util.spec_from_file_location("seg_d2_train_net_flags", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args(["--config-file", "c.yaml", "--coco-panoptic", "n", "p.json", "img", "pan", *sem,
                              "--coco-panoptic", "m", "q.json", "img2", "pan2", "SOLVER.MAX_ITER", "5", "OUTPUT_DIR", "o"])
    assert args.coco_panoptic == [["n", "p.json", "img", "pan", *sem], ["m", "q.json", "img2", "pan2"]]
    assert args.opts == ["SOLVER.MAX_ITER", "5", "OUTPUT_DIR", "o"]
