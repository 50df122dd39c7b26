"""One image reader for every mapper (issue 14): errors name the file (truncated PNG/JPEG), 16-bit and
single-channel images in instance datasets are scaled as for semantic ones, CMYK/palette/RGBA/EXIF as
detectron2 reads them. References: detectron2's ``read_image``/``DatasetMapper`` and hand calculation."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import seg_d2
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as d2_utils
from seg_d2.data import DataFileError
from seg_d2.data.build import build_mapper
from seg_d2.data.datasets import COCOFormatError, validate_coco_json
from seg_d2.data.image_io import read_image

H, W = 6, 8
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (H, W, 3), np.uint8)


def instance_mapper(fmt="BGR"):
    cfg = seg_d2.get_cfg()
    cfg.INPUT.FORMAT = fmt
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.RANDOM_FLIP = (0,), "none"  # no resize, no flip: the pixels as read
    return build_mapper(cfg, True)


def record(path, h=H, w=W):
    box = {"bbox": [1, 1, 3, 2], "bbox_mode": 1, "category_id": 0, "iscrowd": 0}
    return {"file_name": str(path), "height": h, "width": w, "image_id": 1, "annotations": [box]}


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_a_truncated_image_is_named(tmp_path, ext):
    path = tmp_path / f"img.{ext}"
    Image.fromarray(RGB).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataFileError, match=rf"(?i)Unreadable image {path}: .*truncated"):
        instance_mapper()(record(path))
    # the semantic reader too (OpenCV alone would return a grey-filled JPEG)
    with pytest.raises(DataFileError, match=rf"Unreadable image {path}"):
        read_image(str(path))


def test_a_missing_image_is_named(tmp_path):
    with pytest.raises(DataFileError, match=rf"Image file not found: {tmp_path / 'nope.png'}"):
        instance_mapper()(record(tmp_path / "nope.png"))


def test_16bit_gray_instance_image_is_scaled_not_saturated(tmp_path):
    values = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
    path = tmp_path / "scan.png"
    Image.fromarray(values).save(path)
    image = instance_mapper()(record(path))["image"]
    expected = torch.from_numpy((values.astype(np.float32) * (255.0 / 65535.0)))
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    for c in range(3):
        torch.testing.assert_close(image[c], expected)
    # detectron2's reader saturates: most of the range reads as 255
    assert (d2_utils.read_image(str(path), "BGR") == 255).mean() > 0.9


def _save(path, mode):
    if mode == "L":
        Image.fromarray(RGB[..., 0]).save(path)
    elif mode == "P":
        Image.fromarray(RGB).convert("P").save(path)
    elif mode == "RGBA":
        Image.fromarray(np.dstack([RGB, RGB[..., :1]])).save(path)
    elif mode == "LA":
        Image.fromarray(np.dstack([RGB[..., 0], RGB[..., 1]]), "LA").save(path)
    elif mode == "CMYK":
        Image.fromarray(RGB).convert("CMYK").save(path, quality=95)
    elif mode == "1":
        Image.fromarray(RGB[..., 0] > 128).save(path)


@pytest.mark.parametrize("fmt", ["BGR", "RGB", "L", "YUV-BT.601"])
@pytest.mark.parametrize("mode,ext", [("L", "png"), ("P", "png"), ("RGBA", "png"), ("LA", "png"), ("CMYK", "jpg"),
                                      ("1", "png"), ("L", "jpg")])
def test_modes_read_as_detectron2_reads_them(tmp_path, mode, ext, fmt):
    path = tmp_path / f"img.{ext}"
    _save(path, mode)
    ours = read_image(str(path), fmt, exif_transpose=True)
    ref = d2_utils.read_image(str(path), fmt)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    if fmt == "L" and mode not in ("L", "1", "LA"):
        # colour -> gray: OpenCV's and PIL's rounding of the same weights differ by at most 1
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    else:
        np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_detectron2(tmp_path, orientation):
    path = tmp_path / "photo.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(RGB).save(path, exif=exif)
    h, w = (W, H) if orientation >= 5 else (H, W)
    out = instance_mapper()(record(path, h, w))
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), d2_utils.read_image(str(path), "BGR"))
    # the json's sizes are those of the displayed (rotated) image, as detectron2 checks them
    data = {"images": [{"id": 1, "file_name": "photo.png", "height": h, "width": w}], "annotations": [],
            "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    validate_coco_json(str(tmp_path / "a.json"), str(tmp_path))
    if orientation >= 5:  # label maps of semantic datasets follow the stored pixels
        with pytest.raises(COCOFormatError, match=f"is {W}x{H} \\(width x height\\), but the json says {w}x{h}"):
            validate_coco_json(str(tmp_path / "a.json"), str(tmp_path), exif_transpose=False)


def test_instance_mapper_output_is_detectron2s_for_plain_images(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(RGB).save(path)
    cfg = seg_d2.get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (12,), 100  # a resize and a random flip
    mapper = build_mapper(cfg, True)
    assert type(mapper) is not DatasetMapper and isinstance(mapper, DatasetMapper)
    torch.manual_seed(0)
    np.random.seed(0)
    ours = mapper(record(path))
    np.random.seed(0)
    ref = DatasetMapper(cfg, True)(record(path))
    assert torch.equal(ours["image"], ref["image"])
    assert torch.equal(ours["instances"].gt_boxes.tensor, ref["instances"].gt_boxes.tensor)
