"""tools/deploy/export_model.py and run_exported.py: each model family, trained 2 iterations on the shapes
data, exported to TorchScript and to ONNX (run in onnxruntime on CPU), gives the eager model's outputs on
3 images of different sizes (semantic models), or on 5 images of 4 sizes on which it finds different
numbers of detections, none on one (instance models). The reference is the eager model through seg_d2's
demo predictor (SegPredictor: detectron2's forward and post-processing), which shares no code with the export."""
import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from seg_d2.export import ExportedPredictor, export_model, load_exported, model_kind
from seg_d2.utils.predictor import SegPredictor, SetupError, load_config
from tests.conftest import REPO
from tests.deploy.conftest import SMALL_R18, instance_images, shapes_val_files, train_briefly, val_images

SEM = "Shapes-SemanticSegmentation/"
INS = "Shapes-InstanceSegmentation/"
SMALL_SEM = ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"]
SMALL_INS = ["INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "128",
             "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "128", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
             # a model trained 2 iterations scores below the default 0.05: its 20 best detections, whose
             # scores choose the threshold it is exported with (threshold_for_distinct_counts)
             "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
MASK_SCORING = ["MODEL.ROI_HEADS.NAME", "MaskScoringROIHeads", "MODEL.MASK_SCORING.ENABLED", "True"]
FAMILIES = {  # name -> (config, opts)
    "unet_resnet": (SEM + "unet_R_50_scratch_bs8_600it.yaml", SMALL_R18 + SMALL_SEM + [
        "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[64, 32, 32, 16, 16]", "MODEL.RESNET_UNET.FULL_RES_CHANNELS", "16"]),
    "unet_classic": (SEM + "unet_classic_c16_d3_scratch_adam_bs4_160it.yaml", []),
    "fcn": (SEM + "fcn8s_R_50_scratch_bs8_600it.yaml", SMALL_R18 + SMALL_SEM + ["MODEL.SEM_SEG_HEAD.CONVS_DIM", "64"]),
    "mask_rcnn": (INS + "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml", SMALL_INS),
    "mask_rcnn_ms": (INS + "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml", SMALL_INS + MASK_SCORING),
    "bmask_rcnn": (INS + "bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml", SMALL_INS),
    "bmask_rcnn_ms": (INS + "bmask_rcnn_mask_scoring_R_18_FPN_scratch_bs4_600it.yaml", SMALL_INS),
    "light_boundary": (INS + "mask_rcnn_light_boundary_R_18_FPN_scratch_bs4_600it.yaml", SMALL_INS),
    "light_boundary_ms": (INS + "mask_rcnn_light_boundary_mask_scoring_R_18_FPN_scratch_bs4_600it.yaml", SMALL_INS),
}
SEMANTIC = ["unet_resnet", "unet_classic", "fcn"]
INSTANCE = ["mask_rcnn", "mask_rcnn_ms", "bmask_rcnn", "bmask_rcnn_ms", "light_boundary", "light_boundary_ms"]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"seg_d2_tools_{name}", REPO / "tools" / "deploy" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exporter():
    return load_tool("export_model")


@pytest.fixture(scope="module")
def family(request, exporter, tmp_path_factory):
    """name -> (eager SegPredictor, export dir, config opts, [(image, eager outputs, model input tensor,
    semantic logits / Instances before post-processing, at the input size)]), trained, exported and run
    once per family. Instance models are
    exported with the SCORE_THRESH_TEST under which their images' numbers of detections differ."""
    cache = {}

    def get(name):
        if name not in cache:
            config, opts = FAMILIES[name]
            out = tmp_path_factory.mktemp(name)
            weights = train_briefly(config, opts, out)
            opts = list(opts) + ["MODEL.WEIGHTS", weights]
            eager = SegPredictor(load_config(config, opts), config_file=config)
            images = val_images(eager.input_format)
            if name in INSTANCE:
                images = instance_images(eager.input_format)
                with torch.no_grad():
                    thresh = threshold_for_distinct_counts([eager(x)["instances"].scores for x in images])
                eager.model.roi_heads.box_predictor.test_score_thresh = thresh  # what the option sets
                opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", repr(thresh)]
            exporter.main(exporter.get_parser().parse_args(  # both formats from one trace
                ["--config-file", config, "--format", "torchscript", "onnx", "--output", str(out / "export"), *opts]))
            refs = []  # the eager model's outputs on the test images, computed once for both formats
            with torch.no_grad():
                for image in images:
                    x = model_input(eager, image)
                    at_input = eager.model.inference([{"image": x}], do_postprocess=False)[0] if name in INSTANCE \
                        else eager.model([{"image": x}])[0]["sem_seg"]
                    refs.append((image, eager(image), x, at_input))
            cache[name] = eager, out / "export", opts, refs
        return cache[name]

    return get


def threshold_for_distinct_counts(scores, min_distinct: int = 4) -> float:
    """A score threshold under which the images find different numbers of detections (``min_distinct``
    values at least, 0 among them), so that one export meets other counts than its sample image's.
    ``scores``: each image's detection scores at threshold 0. Of the thresholds that qualify, the one
    in the widest gap (ratio) between two scores, at its geometric middle: far from every score,
    relative to export's float rounding (1e-5). Which image finds none depends on the weights, which
    training 2 iterations leaves to chance: often the blank one, not always."""
    values = sorted(set(torch.cat(scores).tolist()))
    best = (1.0, None)
    for low, high in zip(values, values[1:]):
        thresh = (low * high) ** 0.5 if low > 0 else high / 2
        counts = [int((s > thresh).sum()) for s in scores]
        gap = high / low if low > 0 else float("inf")
        if 0 in counts and len(set(counts)) >= min_distinct and gap > best[0]:
            best = (gap, thresh)
    assert best[0] > 1.01, f"no score threshold gives {min_distinct} different numbers of detections: {scores}"
    return best[1]


def score_threshold(eager) -> float:
    """An instance family's SCORE_THRESH_TEST, that of its export."""
    return eager.model.roi_heads.box_predictor.test_score_thresh


def first_with_detections(refs):
    """(image, eager Instances) of the first of an instance family's test images with detections."""
    return next((image, ref["instances"]) for image, ref, _, _ in refs if len(ref["instances"]))


def write_image(image: np.ndarray, path) -> str:
    """A test image (BGR, the instance configs' INPUT.FORMAT) as a PNG file, for the tools."""
    import cv2

    assert cv2.imwrite(str(path), image)
    return str(path)


def model_input(predictor, image):
    """The tensor the model runs on (after the test-time resize), as SegPredictor makes it."""
    from detectron2.data import transforms as T

    aug = T.AugInput(image)
    T.AugmentationList(predictor.augmentations)(aug)
    return torch.as_tensor(np.ascontiguousarray(aug.image.transpose(2, 0, 1)).astype("float32"))


def assert_same_labels(labels: torch.Tensor, logits: torch.Tensor, ref: torch.Tensor):
    """``labels`` equal eager's argmax of ``ref`` logits, but where eager's top two classes are closer
    than the measured logit error can explain (2 x max |logits - ref|): there the order is a float
    rounding tie, which thread counts alone flip (seen once with 2 threads, on a model trained 2 steps)."""
    diff = labels.to(torch.int64) != ref.argmax(0)
    if diff.any():
        top2 = ref.topk(2, dim=0).values
        margin = (top2[0] - top2[1])[diff]
        assert margin.max() <= 2 * (logits - ref).abs().max(), "a label differs where eager's decision is clear"
        assert diff.sum() <= 1e-3 * diff.numel()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", SEMANTIC)
def test_semantic_export_equals_eager(family, name, fmt):
    eager, out, _, refs = family(name)
    exported = ExportedPredictor(str(out), fmt)
    graph = load_exported(exported.model_path)
    for image, ref, x, ref_at_input in refs:
        ref = ref["sem_seg"]
        out = exported(image)["sem_seg"]
        assert out.shape == ref.shape == (ref.shape[0], *image.shape[:2])
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
        assert_same_labels(out.argmax(0), out, ref)
        # the graph's own outputs, at the model's input size
        logits, labels = graph(x)
        assert (logits - ref_at_input).abs().max() <= 1e-4 * ref_at_input.abs().max()
        assert torch.equal(labels, logits.argmax(0))  # the graph's label map is its logits' argmax
        assert_same_labels(labels, logits, ref_at_input)
    assert len({tuple(x.shape[-2:]) for _, _, x, _ in refs}) == 3  # three input sizes through one graph


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def assert_same_masks(out, ref, out_probs: torch.Tensor, ref_probs: torch.Tensor):
    """Masks of ``out`` as eager's (``ref``): the M x M probabilities before pasting (``*_probs``,
    (N, 1, M, M)) within 1e-4, and the pasted masks with mask IoU >= 0.99, but for masks whose differing
    pixels all lie where eager's pasted probability is closer to the 0.5 threshold than the measured
    error can explain (2 x max |difference|): a model trained 2 iterations predicts mask probabilities
    around 0.5, and float rounding (1e-7) flips the pixels closest to it (seen: IoU 0.984 on a small mask)."""
    from detectron2.layers.mask_ops import _do_paste_mask  # what detector_postprocess thresholds at 0.5

    torch.testing.assert_close(out_probs, ref_probs, rtol=1e-4, atol=1e-5)
    assert out.pred_masks.shape == ref.pred_masks.shape
    if not len(ref):
        return
    h, w = ref.image_size
    pasted = [_do_paste_mask(p, i.pred_boxes.tensor, h, w, skip_empty=False)[0] for p, i in
              ((out_probs, out), (ref_probs, ref))]
    error = (pasted[0] - pasted[1]).abs().max()
    assert error <= 1e-4
    unexplained = (out.pred_masks != ref.pred_masks) & ((pasted[1] - 0.5).abs() > 2 * error)
    iou = mask_iou(out.pred_masks, ref.pred_masks)
    assert ((iou >= 0.99) | ~unexplained.flatten(1).any(1)).all(), f"masks differ where eager's is clear: IoU {iou}"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", INSTANCE)
def test_instance_export_equals_eager(family, name, fmt):
    """One export, then images with other numbers of detections than its sample image, none included:
    the graph follows the number of detections (mask scoring indexed by traced constants; BMask R-CNN's
    ONNX failed in onnxruntime on an image without detections)."""
    eager, out, _, refs = family(name)
    exported = ExportedPredictor(str(out), fmt)
    assert len({tuple(x.shape[-2:]) for _, _, x, _ in refs}) == 4
    counts = [len(ref["instances"]) for _, ref, _, _ in refs]
    assert len(set(counts)) >= 4 and 0 in counts, counts
    for image, ref, x, ref_raw in refs:
        ref = ref["instances"]
        out = exported(image)["instances"]
        assert len(out) == len(ref)
        raw = dict(zip(exported.info["output_names"], exported.run(x)))  # the graph's outputs, before pasting
        assert out.image_size == ref.image_size == image.shape[:2]
        assert set(out.get_fields()) == set(ref.get_fields())
        assert ref.has("mask_scores") == name.endswith("_ms")  # mask scoring's outputs come through too
        assert torch.equal(out.pred_classes, ref.pred_classes)
        torch.testing.assert_close(out.pred_boxes.tensor, ref.pred_boxes.tensor, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(out.scores, ref.scores, rtol=1e-4, atol=1e-5)
        assert_same_masks(out, ref, raw["pred_masks"], ref_raw.pred_masks)
        if ref.has("mask_scores"):
            torch.testing.assert_close(out.mask_scores, ref.mask_scores, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(out.pred_mask_ious, ref.pred_mask_ious, rtol=1e-4, atol=1e-5)


def test_sliding_window_around_the_exported_window_model(family):
    """TEST.SLIDING_WINDOW: the exported per-window network inside seg_d2's sliding_window_inference
    gives the eager SegD2SemanticSegmentor's windowed logits."""
    eager, out, _, _ = family("unet_classic")
    exported = ExportedPredictor(str(out), "onnx")
    exported.info["sliding_window"] = {"enabled": True, "size": [48, 64], "overlap": 0.25, "blending": "gaussian"}
    eager.model.sliding_window, eager.model.window_size = True, (48, 64)
    eager.model.window_overlap, eager.model.window_blending = 0.25, "gaussian"
    try:
        for image in val_images(eager.input_format)[:2]:
            ref = eager(image)["sem_seg"]
            out = exported(image)["sem_seg"]
            assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
            assert_same_labels(out.argmax(0), out, ref)
    finally:
        eager.model.sliding_window = False


def test_run_exported_writes_the_demos_overlays(family, tmp_path):
    """run_exported.py on the ONNX U-Net writes, image for image, the overlays (and confidence maps, to
    one grey level) that tools/demo.py writes with the eager model; on the TorchScript Mask R-CNN, the
    same detections."""
    from PIL import Image

    run, demo = load_tool("run_exported"), run_tool_demo()
    for name, fmt in (("unet_classic", "onnx"), ("mask_rcnn", "torchscript")):
        eager, out, opts, refs = family(name)
        files, thresh = [str(shapes_val_files()[0])], 0.0
        if name == "mask_rcnn":  # an image with detections, all drawn: the demo's model gets the export's threshold
            files = [write_image(first_with_detections(refs)[0], tmp_path / "detections.png")]
            thresh = score_threshold(eager)
        common = ["--input", *files, "--confidence-threshold", repr(thresh), "--confidence-map"]
        ours = run.main(run.get_parser().parse_args(
            ["--model", str(out), "--format", fmt, "--output", str(tmp_path / name), *common]))
        theirs = demo.main(demo.get_parser().parse_args(
            ["--config-file", FAMILIES[name][0], "--output", str(tmp_path / f"{name}_demo"), *common, "--opts", *opts]))
        assert len(ours) == len(theirs) == 1
        for a, b in zip(ours, theirs):
            if name == "unet_classic":
                assert np.array_equal(np.asarray(Image.open(a["output"])), np.asarray(Image.open(b["output"])))
                assert a["pixels"] == b["pixels"]
                ca, cb = (np.asarray(Image.open(r["confidence_map"])).astype(int) for r in (a, b))
                assert ca.shape == cb.shape and np.abs(ca - cb).max() <= 1
            else:
                assert [d["class"] for d in a["instances"]] == [d["class"] for d in b["instances"]]
                assert len(a["instances"]) > 0
        written = json.loads((tmp_path / name / "predictions.json").read_text())
        assert written["predictions"][0]["output"] == ours[0]["output"]


def test_run_exported_on_a_folder_with_a_blank_image(family, tmp_path):
    """run_exported.py on a folder of shapes images and a blank one, with BMask R-CNN + mask scoring in
    onnxruntime: the eager model's detections, named by the dataset, on each image, none on one of them."""
    run = load_tool("run_exported")
    eager, out, _, refs = family("bmask_rcnn_ms")
    folder = tmp_path / "images"
    folder.mkdir()
    # the family's images: 4 crops of shapes images and the blank one
    files = {Path(write_image(image, folder / f"{k}.png")).name: ref["instances"] for k, (image, ref, _, _) in
             enumerate(refs)}
    records = run.main(run.get_parser().parse_args(["--model", str(out), "--format", "onnx", "--input", str(folder),
                                                    "--output", str(tmp_path / "out"), "--confidence-threshold",
                                                    repr(score_threshold(eager))]))
    found = {Path(r["input"]).name: r["instances"] for r in records}
    assert found.keys() == files.keys() and [] in found.values()
    names = list(MetadataCatalog.get("seg_d2_shapes_val").thing_classes)
    for name, ref in files.items():
        assert [d["class"] for d in found[name]] == ref.pred_classes.tolist()
        assert [d["name"] for d in found[name]] == [names[c] for c in ref.pred_classes.tolist()]


def test_export_records_class_names_for_run_exported(family, tmp_path, caplog):
    """export.json records the class names and colours of the config's datasets, and run_exported.py names
    classes by them where the dataset is not registered (a dataset of your own); an export.json without
    them (older seg_d2) gives "class N" and a warning that says to export again."""
    run = load_tool("run_exported")
    semantic_info = json.loads((family("unet_classic")[1] / "export.json").read_text())
    meta = MetadataCatalog.get("seg_d2_shapes_sem_seg_val")
    assert semantic_info["class_metadata"] == {"stuff_classes": list(meta.stuff_classes),
                                               "stuff_colors": [list(c) for c in meta.stuff_colors]}
    eager, out, _, refs = family("mask_rcnn")
    image, ref = first_with_detections(refs)
    info = json.loads((out / "export.json").read_text())
    meta = MetadataCatalog.get("seg_d2_shapes_val")
    assert info["class_metadata"] == {"thing_classes": list(meta.thing_classes),
                                      "thing_colors": [list(c) for c in meta.thing_colors]}

    moved = tmp_path / "export"
    shutil.copytree(out, moved)
    info["dataset"] = "seg_d2_test_own_dataset_not_registered"

    args = ["--model", str(moved), "--format", "onnx", "--input", write_image(image, tmp_path / "image.png"),
            "--output", str(tmp_path / "out"), "--confidence-threshold", repr(score_threshold(eager))]

    def class_names(info):
        (moved / "export.json").write_text(json.dumps(info))
        return [d["name"] for d in run.main(run.get_parser().parse_args(args))[0]["instances"]]

    logger = logging.getLogger("seg_d2.export.predictor")
    logger.addHandler(caplog.handler)  # seg_d2's loggers may not propagate (setup_logger)
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            classes = ref.pred_classes.tolist()
            assert class_names(info) == [meta.thing_classes[c] for c in classes]
            assert not caplog.records
            del info["class_metadata"]
            assert class_names(info) == [f"class {c}" for c in classes]
    finally:
        logger.removeHandler(caplog.handler)
    assert "Export the model again with tools/deploy/export_model.py" in caplog.text


def test_class_metadata_from_the_test_then_the_train_datasets(tmp_path):
    """export.json's class names: DATASETS.TEST's, where a test dataset names its classes, else DATASETS.TRAIN's;
    names and colours from one dataset; things and stuff apart."""
    from seg_d2.export import class_metadata

    names = {k: f"seg_d2_test_export_{k}_{tmp_path.name}" for k in ("plain", "things", "both")}
    MetadataCatalog.get(names["plain"]).set(evaluator_type="coco")
    MetadataCatalog.get(names["things"]).set(thing_classes=["ring", "box"])
    MetadataCatalog.get(names["both"]).set(thing_classes=["a", "b"], thing_colors=[(1, 2, 3), (4, 5, 6)],
                                           stuff_classes=["sky", "road"], stuff_colors=[(7, 8, 9), (10, 11, 12)])
    try:
        cfg = load_config(FAMILIES["mask_rcnn"][0])
        cfg.DATASETS.TEST, cfg.DATASETS.TRAIN = (names["plain"], names["things"]), (names["both"],)
        assert class_metadata(cfg) == {"thing_classes": ["ring", "box"], "stuff_classes": ["sky", "road"],
                                       "stuff_colors": [[7, 8, 9], [10, 11, 12]]}
        cfg.DATASETS.TEST = ("seg_d2_test_export_never_registered",)
        assert class_metadata(cfg) == {"thing_classes": ["a", "b"], "thing_colors": [[1, 2, 3], [4, 5, 6]],
                                       "stuff_classes": ["sky", "road"], "stuff_colors": [[7, 8, 9], [10, 11, 12]]}
        assert "seg_d2_test_export_never_registered" not in MetadataCatalog.list()
    finally:
        for name in names.values():
            MetadataCatalog.remove(name)


def run_tool_demo():
    spec = importlib.util.spec_from_file_location("seg_d2_tools_demo", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scripting_stock_mask_rcnn_equals_eager(family, tmp_path):
    """--export-method scripting works where TorchScript compiles the model: detectron2's stock R-CNN."""
    eager, _, _, refs = family("mask_rcnn")
    image, ref = first_with_detections(refs)
    export_model(eager.model, model_input(eager, image), str(tmp_path), fmt="torchscript", method="scripting",
                 info={"input_format": eager.input_format, "min_size_test": 128, "max_size_test": 320})
    out = ExportedPredictor(str(tmp_path))(image)["instances"]
    assert len(out) == len(ref) > 0 and torch.equal(out.pred_classes, ref.pred_classes)
    torch.testing.assert_close(out.pred_boxes.tensor, ref.pred_boxes.tensor, rtol=1e-5, atol=1e-4)
    assert mask_iou(out.pred_masks, ref.pred_masks).min() >= 0.99


def test_what_cannot_be_exported_says_why(family, tmp_path):
    eager, _, _, _ = family("unet_classic")
    x = torch.zeros(3, 64, 64)
    with pytest.raises(NotImplementedError, match="Scripting the semantic model UNetHead: TorchScript cannot"):
        export_model(eager.model, x, str(tmp_path / "a"), fmt="torchscript", method="scripting")
    with pytest.raises(NotImplementedError, match="ONNX export goes through tracing"):
        export_model(eager.model, x, str(tmp_path / "b"), fmt="onnx", method="scripting")
    with pytest.raises(ValueError, match="--format must be one of"):
        export_model(eager.model, x, str(tmp_path / "c"), fmt="tflite")
    with pytest.raises(NotImplementedError, match="Conv2d is neither"):
        model_kind(torch.nn.Conv2d(3, 3, 1))
    rotated = build_model(load_config("Shapes-RotatedDetection/rotated_faster_rcnn_R_18_FPN_scratch_bs4_600it.yaml"))
    with pytest.raises(NotImplementedError, match="ROI heads RROIHeads \\(rotated boxes\\)"):
        export_model(rotated.eval(), x, str(tmp_path / "d"))
    boundary, _, _, _ = family("bmask_rcnn_ms")
    with pytest.raises(NotImplementedError, match="Scripting BoundaryROIHeads / BoundaryPreservingHead: TorchScript"):
        export_model(boundary.model, x, str(tmp_path / "e"), fmt="torchscript", method="scripting")
    assert not any((tmp_path / d).exists() for d in "abcde")  # nothing written half-way


def test_export_tool_needs_weights(exporter, tmp_path):
    args = exporter.get_parser().parse_args(
        ["--config-file", FAMILIES["unet_classic"][0], "--output", str(tmp_path / "out")])
    with pytest.raises(SetupError, match="gives no weights: MODEL.WEIGHTS is empty"):
        exporter.main(args)
    assert not (tmp_path / "out").exists()


def test_mask_scoring_pooling_is_adaptive_max_pooling():
    """The MaskIoU head pools 28x28 masks to 14x14 with max pooling, which ONNX has, instead of
    adaptive max pooling, which it has not: the same values (torch's adaptive pooling as reference)."""
    from torch.nn import functional as F

    from seg_d2.modeling.mask_scoring import pool_to

    probs = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pool_to(probs, 14), F.adaptive_max_pool2d(probs, 14))
    assert torch.equal(pool_to(probs, 7), F.adaptive_max_pool2d(probs, 7))
    assert torch.equal(pool_to(probs, 10), F.adaptive_max_pool2d(probs, 10))  # not a divisor: adaptive
