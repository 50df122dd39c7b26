"""RLE masks under INPUT.MASK_FORMAT "polygon" (detectron2's default and the COCO configs'): a json with
RLE masks (what tools/png_instances_to_coco.py writes) failed at the first batch with detectron2's "Failed
to use mask_format=='polygon'", naming neither the file nor the key. Training now loads them as bitmasks,
with one log line."""
import logging

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from seg_d2 import add_seg_d2_config
from seg_d2.data import build_train_loader
from seg_d2.data.datasets import register_coco_dataset
from tests.conftest import REPO
from tests.own_data import make_coco

RCNN = REPO / "configs" / "Shapes-InstanceSegmentation" / "mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask_format")
    make_coco(str(root / "coco"))
    make_coco(str(root / "coco_poly"), rle=False)
    return root


@pytest.fixture
def names():
    registered = []
    yield registered
    for name in registered:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def config(*opts):
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(RCNN))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_rle_masks_train_under_mask_format_polygon(data, names, caplog, mask_format):
    """An RLE json (what tools/png_instances_to_coco.py writes) with detectron2's default INPUT.MASK_FORMAT
    "polygon" failed at the first batch with "Failed to use mask_format=='polygon'": the masks load as
    bitmasks instead, with one log line."""
    name = f"own_rle_{mask_format}"
    names.append(name)
    register_coco_dataset(name, str(data / "coco/train.json"), str(data / "coco/images"))
    cfg = config("DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", "()", "MODEL.ROI_HEADS.NUM_CLASSES", "2",
                 "INPUT.MASK_FORMAT", mask_format, "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2")
    with caplog.at_level(logging.INFO, logger="seg_d2"):
        batch = next(iter(build_train_loader(cfg)))
    masks = batch[0]["instances"].gt_masks
    assert isinstance(masks.tensor, torch.Tensor) and masks.tensor.dtype == torch.bool  # BitMasks
    switched = [r for r in caplog.records if "INPUT.MASK_FORMAT 'polygon' -> 'bitmask'" in r.getMessage()]
    assert len(switched) == (1 if mask_format == "polygon" else 0)


def test_polygon_masks_stay_polygons(data, names, caplog):
    names.append("own_poly")
    register_coco_dataset("own_poly", str(data / "coco_poly/train.json"),
                                               str(data / "coco_poly/images"))
    cfg = config("DATASETS.TRAIN", "('own_poly',)", "DATASETS.TEST", "()", "MODEL.ROI_HEADS.NUM_CLASSES", "2",
                 "INPUT.MASK_FORMAT", "polygon", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2")
    with caplog.at_level(logging.INFO, logger="seg_d2"):
        batch = next(iter(build_train_loader(cfg)))
    assert type(batch[0]["instances"].gt_masks).__name__ == "PolygonMasks"
    assert not [r for r in caplog.records if "'bitmask'" in r.getMessage()]
