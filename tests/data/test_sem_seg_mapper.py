"""SemSegDatasetMapper keeps image and label map aligned under each augmentation; loaders pick it."""
import cv2
import numpy as np
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import transforms as T

from seg_d2 import add_seg_d2_config
from seg_d2.data import InstanceDatasetMapper, SemSegDataError, SemSegDatasetMapper, build_train_loader
from seg_d2.data.build import build_mapper

STEP = 60  # image value = STEP * label, so that the label can be read back from the image


@pytest.fixture
def pair(tmp_path):
    """An image whose pixel values encode its label map (large blocks, 3 classes)."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 3, size=(6, 8)).astype(np.uint8)
    label = np.kron(blocks, np.ones((10, 10), np.uint8))[:57, :75]  # 57x75, odd sizes
    image = (label * STEP).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "img.png"), np.stack([image] * 3, -1))
    cv2.imwrite(str(tmp_path / "lab.png"), label)
    return {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "lab.png")}, label


def decoded(out):
    """Label read back from the mapped image (channel 0)."""
    img = out["image"][0].float().numpy()
    return np.clip(np.round(img / STEP), 0, 2).astype(np.int64)


AUGS = {
    "resize_shortest_edge": lambda: [T.ResizeShortestEdge(91, 1000)],
    "random_crop": lambda: [T.RandomCrop_CategoryAreaConstraint("absolute", (31, 40), 1.0, 255)],
    "horizontal_flip": lambda: [T.RandomFlip(prob=1.0, horizontal=True)],
    "vertical_flip": lambda: [T.RandomFlip(prob=1.0, horizontal=False, vertical=True)],
    "all_geometric": lambda: [T.ResizeShortestEdge(80, 1000), T.RandomCrop("absolute", (50, 60)),
                              T.RandomFlip(prob=1.0)],
}


@pytest.mark.parametrize("aug", sorted(AUGS))
@pytest.mark.parametrize("fmt", ["BGR", "L"])
def test_image_and_label_stay_aligned(pair, aug, fmt):
    d, label = pair
    np.random.seed(0)
    mapper = SemSegDatasetMapper(True, augmentations=AUGS[aug](), image_format=fmt)
    out = mapper(d)
    assert out["image"].shape[0] == (1 if fmt == "L" else 3)
    sem = out["sem_seg"].numpy()
    assert sem.dtype == np.int64 and sem.shape == out["image"].shape[1:]
    agree = (decoded(out) == sem).mean()
    if "resize" in aug or aug == "all_geometric":
        # bilinear image vs nearest label differ only along block edges
        assert agree > 0.95, agree
        assert set(np.unique(sem)) <= {0, 1, 2}  # nearest: no interpolated labels
    else:
        assert agree == 1.0


def test_colour_jitter_changes_the_image_not_the_label(pair):
    d, label = pair
    np.random.seed(1)
    jitter = [T.RandomBrightness(0.5, 0.6), T.RandomContrast(1.4, 1.5), T.RandomSaturation(0.5, 1.5)]
    out = SemSegDatasetMapper(True, augmentations=jitter, image_format="BGR")(d)
    assert np.array_equal(out["sem_seg"].numpy(), label)
    assert not np.array_equal(out["image"][0].numpy(), (label * STEP).astype(np.uint8))


def test_category_area_constraint(tmp_path):
    label = np.zeros((100, 100), np.uint8)
    label[:, 60:] = 1  # 40% class 1: many 40x40 crops are a single class
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((100, 100, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "lab.png"), label)
    d = {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "lab.png")}

    def max_area(single_category_max_area):
        np.random.seed(0)
        aug = T.RandomCrop_CategoryAreaConstraint("absolute", (40, 40), single_category_max_area, 255)
        mapper = SemSegDatasetMapper(True, augmentations=[aug])
        return [max((s == 0).mean(), (s == 1).mean()) for s in (mapper(d)["sem_seg"].numpy() for _ in range(20))]

    assert max(max_area(1.0)) == 1.0  # unconstrained: some crops hold one class only
    assert max(max_area(0.9)) < 0.9


def test_config_builds_every_augmentation():
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_list(["INPUT.CROP.ENABLED", "True", "INPUT.COLOR_JITTER.ENABLED", "True",
                         "INPUT.DATASET_MAPPER_NAME", "sem_seg"])
    kinds = [type(a).__name__ for a in build_mapper(cfg, True).augmentations.augs]
    assert kinds == ["ResizeShortestEdge", "RandomCrop_CategoryAreaConstraint", "RandomFlip",
                     "RandomBrightness", "RandomContrast", "RandomSaturation"]
    cfg.INPUT.FORMAT = "L"  # no saturation for gray images
    assert "RandomSaturation" not in [type(a).__name__ for a in build_mapper(cfg, True).augmentations.augs]
    assert [type(a).__name__ for a in build_mapper(cfg, False).augmentations.augs] == ["ResizeShortestEdge"]


def test_test_mode_reads_no_label_and_keeps_original_size(pair):
    d, _ = pair
    out = SemSegDatasetMapper(False, augmentations=[T.ResizeShortestEdge(100, 1000)])(d)
    assert "sem_seg" not in out and (out["height"], out["width"]) == (57, 75)
    assert out["image"].shape[1] == 100


def test_mapper_size_mismatch(tmp_path):
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((10, 12, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "lab.png"), np.zeros((10, 13), np.uint8))
    d = {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "lab.png")}
    with pytest.raises(SemSegDataError, match=r"img\.png is 10x12.*lab\.png is 10x13"):
        SemSegDatasetMapper(True, augmentations=[])(d)


def test_mapper_choice_default_is_detectron2s():
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    # detectron2's DatasetMapper, reading images with seg_d2's reader (tests/data/test_image_io.py)
    assert type(build_mapper(cfg, True)) is InstanceDatasetMapper and isinstance(build_mapper(cfg, True), DatasetMapper)
    cfg.INPUT.DATASET_MAPPER_NAME = "sem_seg"
    assert type(build_mapper(cfg, True)) is SemSegDatasetMapper
    cfg.INPUT.DATASET_MAPPER_NAME = "nope"
    with pytest.raises(ValueError, match="Unknown INPUT.DATASET_MAPPER_NAME 'nope'"):
        build_mapper(cfg, True)


def test_train_loader_on_shapes():
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_list(["DATASETS.TRAIN", "('seg_d2_shapes_sem_seg_train',)", "INPUT.DATASET_MAPPER_NAME",
                         "sem_seg", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
                         "INPUT.MIN_SIZE_TRAIN", "(128,)"])
    batch = next(iter(build_train_loader(cfg)))
    assert len(batch) == 2
    for d in batch:
        assert d["sem_seg"].dtype == torch.int64 and d["sem_seg"].shape == d["image"].shape[1:]
        assert min(d["image"].shape[1:]) == 128


# ---- label values, the dataset's ignore label, labels > 255 -------------------------------------

def write_pair(tmp_path, label, ext=".png", stem="lab"):
    """An image of label's size and the label map as a (16-bit if needed) PNG or .npy; the dict."""
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((*label.shape, 3), np.uint8))
    path = tmp_path / f"{stem}{ext}"
    if ext == ".npy":
        np.save(path, label)
    else:
        assert cv2.imwrite(str(path), label.astype(np.uint16 if label.max() > 255 else np.uint8))
    return {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(path)}


@pytest.fixture
def sem_cfg():
    """``make(*opts, name=ignore_label, ...)``: a train config of seg_d2's semantic mapper (3 classes,
    IGNORE_VALUE 255) over datasets registered by metadata only (None: no ignore_label), removed after."""
    names = []

    def make(*opts, **datasets):
        for name, ignore in datasets.items():
            name = f"test_mapper_{name}"
            names.append(name)
            MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], evaluator_type="sem_seg",
                                          **({} if ignore is None else {"ignore_label": ignore}))
        cfg = get_cfg()
        add_seg_d2_config(cfg)
        cfg.merge_from_list(["INPUT.DATASET_MAPPER_NAME", "sem_seg", "DATASETS.TRAIN", str(tuple(names)),
                             "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "255", *opts])
        return cfg

    yield make
    for name in names:
        MetadataCatalog.remove(name)


def train_mapper(cfg):
    mapper = build_mapper(cfg, True)
    mapper.augmentations = T.AugmentationList([])  # no resize: compare label values pixel for pixel
    return mapper


@pytest.mark.parametrize("ext", [".png", ".npy"])
def test_dataset_ignore_label_is_mapped_to_ignore_value(tmp_path, sem_cfg, ext):
    """A dataset whose ignore label is 65535 (16-bit PNG or .npy) trained with IGNORE_VALUE 255: the
    loss must see 255 where the dataset says "ignore", never 65535 (which it would train on)."""
    label = np.random.default_rng(0).integers(0, 3, size=(12, 17)).astype(np.uint16)
    label[:4, :5] = 65535
    out = train_mapper(sem_cfg(big=65535))(write_pair(tmp_path, label, ext))["sem_seg"].numpy()
    assert np.array_equal(out, np.where(label == 65535, 255, label))


def test_same_ignore_label_passes_through(tmp_path, sem_cfg):
    label = np.array([[0, 1, 2, 255]] * 3, np.uint8)
    out = train_mapper(sem_cfg(std=None))(write_pair(tmp_path, label))["sem_seg"].numpy()  # default 255
    assert np.array_equal(out, label)


def test_train_datasets_with_different_ignore_labels(sem_cfg):
    with pytest.raises(ValueError, match=r"different ignore labels.*test_mapper_a': 255.*test_mapper_b': 65535"):
        build_mapper(sem_cfg(a=255, b=65535), True)


@pytest.mark.parametrize("num_classes, values, bad", [
    ("2", [0, 1, 2, 3, 4, 255], "[2, 3, 4]"),  # labels up to 4 for a 2-class model: torch's "Target 4 is out of bounds"
    ("1", [0, 1, 2, 255], "[2]"),  # binary: 0, 1 and ignore only
    ("3", [0, 1, 2, 1000], "[1000]"),  # a value > 255 that is not the ignore label
])
def test_label_values_outside_the_model_classes(tmp_path, sem_cfg, num_classes, values, bad):
    cfg = sem_cfg("MODEL.SEM_SEG_HEAD.NUM_CLASSES", num_classes, std=255)
    d = write_pair(tmp_path, np.array([values] * 2))
    msg = rf"lab\.png has values \{bad}.*MODEL\.SEM_SEG_HEAD\.NUM_CLASSES {num_classes}.*ignore label 255"
    with pytest.raises(SemSegDataError, match=msg):
        train_mapper(cfg)(d)


def test_binary_labels_pass(tmp_path, sem_cfg):
    label = np.array([[0, 1, 255]] * 2, np.uint8)
    out = train_mapper(sem_cfg("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1", std=255))(write_pair(tmp_path, label))
    assert np.array_equal(out["sem_seg"].numpy(), label)


def test_ignore_value_is_not_the_datasets_ignore_label(tmp_path, sem_cfg):
    """With the dataset's ignore label 65535, a 255 in a label map is a bad value, not "ignore"."""
    d = write_pair(tmp_path, np.array([[0, 1, 255, 65535]] * 2))
    with pytest.raises(SemSegDataError, match=r"values \[255\].*ignore label 65535"):
        train_mapper(sem_cfg(big=65535))(d)


def test_negative_labels_are_rejected(tmp_path, sem_cfg):
    d = write_pair(tmp_path, np.array([[0, 1, -3]] * 2, np.int32), ".npy")
    with pytest.raises(SemSegDataError, match=r"lab\.npy has values \[-3\]"):
        train_mapper(sem_cfg(std=255))(d)


@pytest.mark.parametrize("resize", [(50, 71), (23, 31)])  # up and down, non-integer scales
def test_labels_above_255_resized_on_the_uint8_grid(tmp_path, resize):
    """16-bit labels are resized on exactly the pixel grid of uint8 labels (and so of the image's):
    the low byte of the result is ``label % 256`` resized as uint8."""
    label = np.random.default_rng(0).integers(0, 1000, size=(37, 53)).astype(np.uint16)  # pixel noise
    out = SemSegDatasetMapper(True, augmentations=[T.Resize(resize)])(write_pair(tmp_path, label))
    sem = out["sem_seg"].numpy()
    tfm = T.ResizeTransform(37, 53, *resize)
    low = tfm.apply_segmentation((label % 256).astype(np.uint8))
    high = tfm.apply_segmentation((label // 256).astype(np.uint8))
    assert np.array_equal(sem % 256, low)
    assert np.array_equal(sem, high.astype(np.int64) * 256 + low)


def test_apply_segmentation_any_integers():
    """Labels of any integer range (negative, > 65535) on the uint8 grid, through a TransformList."""
    from seg_d2.data.sem_seg_mapper import apply_segmentation

    rng = np.random.default_rng(1)
    small = rng.integers(0, 4, size=(19, 26)).astype(np.uint8)
    values = np.array([0, -7, 70000, 2**40])  # 0 first: the rotation fills its corners with 0
    tfm = T.TransformList([T.ResizeTransform(19, 26, 30, 41), T.HFlipTransform(41),
                           T.RotationTransform(30, 41, 30), T.CropTransform(2, 3, 30, 20)])
    assert np.array_equal(apply_segmentation(tfm, values[small]), values[tfm.apply_segmentation(small)])
