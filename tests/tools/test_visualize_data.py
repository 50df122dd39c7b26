"""tools/visualize_data.py on the shapes datasets: ground truth as stored and as the model sees it."""
import importlib.util
import json

import cv2
import numpy as np
import pytest

from tests.conftest import REPO, run_tool

TOOL = REPO / "tools" / "visualize_data.py"
SEM_CONFIG = REPO / "configs" / "Shapes-SemanticSegmentation" / "unet_R_50_scratch_bs8_600it.yaml"
INS_CONFIG = REPO / "configs" / "Shapes-InstanceSegmentation" / "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"
FAST = ["--opts", "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TRAIN", "(128,)", "SOLVER.IMS_PER_BATCH", "2"]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("seg_d2_tools_visualize_data", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[:, :, ::-1].astype(np.int16)


def test_semantic_dataloader_cli(tmp_path):
    """What the model trains on: the mapper's resized, flipped images and label maps."""
    res = run_tool([TOOL, "--config-file", SEM_CONFIG, "--source", "dataloader", "--output", tmp_path,
                    "--num-images", "3", *FAST])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    stats = json.loads((tmp_path / "class_stats.json").read_text())
    assert len(stats["images"]) == 3 and stats["datasets"] == ["seg_d2_shapes_sem_seg_train"]
    for path in stats["images"]:
        vis = _rgb(path)
        assert vis.shape[0] >= 128 and vis.shape[1] > 128 + 40  # short edge 128, plus the legend
    assert {c["id"] for c in stats["classes"]} <= set(range(5)) and not any(c["note"] for c in stats["classes"])
    assert "| background |" in res.stdout


def test_instance_annotations(tool, tmp_path):
    """As stored: class-coloured masks and boxes where the annotations are, the image elsewhere."""
    from detectron2.data import DatasetCatalog
    from pycocotools import mask as mask_util

    args = tool.get_parser().parse_args(["--config-file", str(INS_CONFIG), "--source", "annotation", "--dataset",
                                         "seg_d2_shapes_val", "--output", str(tmp_path), "--num-images", "2"])
    written = tool.main(args)
    assert len(written) == 2
    dic = DatasetCatalog.get("seg_d2_shapes_val")[0]
    src, vis = _rgb(dic["file_name"]), _rgb(written[0])
    h, w = src.shape[:2]
    assert vis.shape[0] == h and vis.shape[1] > w  # legend
    objects = np.zeros((h, w), bool)
    for a in dic["annotations"]:
        seg = a["segmentation"]
        rle = mask_util.merge(mask_util.frPyObjects(seg, h, w)) if isinstance(seg, list) else seg
        objects |= mask_util.decode(rle).astype(bool)
    changed = np.abs(vis[:, :w] - src).max(axis=2) > 8
    assert changed[objects].mean() > 0.8
    far = cv2.dilate(objects.astype(np.uint8), np.ones((25, 25), np.uint8)) == 0  # away from masks, boxes, texts
    if far.any():
        assert changed[far].mean() < 0.05
    stats = json.loads((tmp_path / "class_stats.json").read_text())
    assert sum(c["instances"] for c in stats["classes"]) >= len(dic["annotations"])


def test_instance_dataloader(tool, tmp_path):
    args = tool.get_parser().parse_args(["--config-file", str(INS_CONFIG), "--source", "dataloader",
                                         "--output", str(tmp_path), "--num-images", "2", *FAST])
    written = tool.main(args)
    assert len(written) == 2 and all(_rgb(p).shape[0] >= 128 for p in written)


def test_wrong_class_ids_are_shown(tool, tmp_path, capsys):
    """A label map with an id that is no class (9) and ignored pixels (255): drawn magenta and grey,
    flagged in the per-class table, with a warning."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import seg_d2  # noqa: F401
    from seg_d2.utils.visualizer import IGNORE_COLOR, UNKNOWN_COLOR

    src = DatasetCatalog.get("seg_d2_shapes_sem_seg_val")[0]
    label = cv2.imread(src["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
    label[10:60, 10:60] = 9
    label[-50:, -50:] = 255
    cv2.imwrite(str(tmp_path / "label.png"), label)
    name = "seg_d2_test_wrong_ids"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [{"file_name": src["file_name"],
                                                "sem_seg_file_name": str(tmp_path / "label.png")}])
        MetadataCatalog.get(name).set(stuff_classes=MetadataCatalog.get("seg_d2_shapes_sem_seg_val").stuff_classes,
                                      ignore_label=255)
    out = tmp_path / "out"
    args = tool.get_parser().parse_args(["--config-file", str(SEM_CONFIG), "--source", "annotation",
                                         "--dataset", name, "--output", str(out)])
    (path,) = tool.main(args)
    img, vis = _rgb(src["file_name"]), _rgb(path)
    h, w = img.shape[:2]
    for (rows, cols), color in (((slice(13, 57), slice(13, 57)), UNKNOWN_COLOR),
                                ((slice(h - 47, h - 3), slice(w - 47, w - 3)), IGNORE_COLOR)):
        expected = 0.5 * img[rows, cols] + 0.5 * np.array(color)  # alpha 0.5 (the name's text box aside)
        close = np.abs(vis[:h, :w][rows, cols] - expected).max(axis=2) < 12
        assert close.mean() > 0.5, (color, close.mean())
    stats = json.loads((out / "class_stats.json").read_text())["classes"]
    notes = {c["id"]: c["note"] for c in stats}
    assert notes[9].startswith("NOT A CLASS") and notes[255] == "ignore_label"
    assert "WARNING: label ids [9] are not classes" in capsys.readouterr().out


def test_unknown_dataset(tool, tmp_path):
    from seg_d2.utils.predictor import SetupError

    args = tool.get_parser().parse_args(["--config-file", str(SEM_CONFIG), "--source", "annotation",
                                         "--dataset", "no_such_dataset", "--output", str(tmp_path)])
    with pytest.raises(SetupError, match="no_such_dataset"):
        tool.main(args)
