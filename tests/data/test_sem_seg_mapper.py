"""SemSegDatasetMapper keeps image and label map aligned under each augmentation; loaders pick it."""
import cv2
import numpy as np
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from detectron2.data import transforms as T

from seg_d2 import add_seg_d2_config
from seg_d2.data import SemSegDataError, SemSegDatasetMapper, build_train_loader
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
    assert type(build_mapper(cfg, True)) is DatasetMapper
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
