"""register_sem_seg_folder: formats, pairing by stem, and every validation error."""
import cv2
import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from seg_d2.data import DataFileError, SemSegDataError
from seg_d2.data.datasets import load_sem_seg_folder, register_sem_seg_folder
from seg_d2.data.sem_seg_io import read_image, read_label_map

CLASSES = ["background", "a", "b"]


def write_pair(root, stem, img, label, img_ext=".png", label_ext=".png"):
    (root / "images").mkdir(exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    img_path, label_path = root / "images" / f"{stem}{img_ext}", root / "labels" / f"{stem}{label_ext}"
    assert cv2.imwrite(str(img_path), img)
    if label_ext == ".npy":
        np.save(label_path, label)
    else:
        assert cv2.imwrite(str(label_path), label)
    return img_path, label_path


def label_map(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 3, size=(h, w)).astype(np.uint8)


@pytest.fixture
def mixed_folder(tmp_path):
    """One pair of every supported kind."""
    rng = np.random.default_rng(0)
    write_pair(tmp_path, "rgb8", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), label_map(20, 30))
    write_pair(tmp_path, "gray16", rng.integers(0, 65536, (18, 25), dtype=np.uint16), label_map(18, 25, 1),
               img_ext=".tif", label_ext=".npy")
    write_pair(tmp_path, "jpg", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), label_map(16, 16, 2),
               img_ext=".jpg")
    lab16 = label_map(12, 14, 3).astype(np.uint16)
    lab16[0, 0] = 255  # ignore
    write_pair(tmp_path, "gray8", rng.integers(0, 256, (12, 14), dtype=np.uint8), lab16)
    # palette PNG label map: the indices are the labels, not the palette colours
    pal = Image.fromarray(label_map(10, 11, 4), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    cv2.imwrite(str(tmp_path / "images" / "palette.png"), rng.integers(0, 256, (10, 11, 3), dtype=np.uint8))
    pal.save(tmp_path / "labels" / "palette.png")
    return tmp_path


def test_register_and_load_every_format(mixed_folder):
    name = "test_sem_seg_folder_mixed"
    register_sem_seg_folder(name, mixed_folder / "images", mixed_folder / "labels", CLASSES, ignore_label=255)
    try:
        meta = MetadataCatalog.get(name)
        assert meta.stuff_classes == CLASSES and meta.ignore_label == 255 and meta.evaluator_type == "sem_seg"
        dicts = DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    by_id = {d["image_id"]: d for d in dicts}
    assert sorted(by_id) == ["gray16", "gray8", "jpg", "palette", "rgb8"]
    assert (by_id["gray16"]["height"], by_id["gray16"]["width"]) == (18, 25)
    assert by_id["gray16"]["sem_seg_file_name"].endswith("gray16.npy")
    assert np.array_equal(read_label_map(by_id["palette"]["sem_seg_file_name"]), label_map(10, 11, 4))


def test_read_image_bit_depths_and_channels(tmp_path):
    img16 = np.array([[0, 65535], [32768, 1000]], np.uint16)
    cv2.imwrite(str(tmp_path / "a.tif"), img16)
    bgr = read_image(str(tmp_path / "a.tif"), "BGR")
    assert bgr.shape == (2, 2, 3) and bgr.dtype == np.float32
    assert bgr[0, 1, 0] == pytest.approx(255.0) and bgr[1, 0, 2] == pytest.approx(32768 * 255 / 65535)
    gray = read_image(str(tmp_path / "a.tif"), "L")
    assert gray.shape == (2, 2, 1)
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 2] = 200  # red in BGR
    cv2.imwrite(str(tmp_path / "c.png"), rgb)
    assert read_image(str(tmp_path / "c.png"), "RGB")[0, 0].tolist() == [200, 0, 0]
    assert read_image(str(tmp_path / "c.png"), "L").shape == (2, 3, 1)


def load(root, **kw):
    return load_sem_seg_folder(str(root / "images"), str(root / "labels"), 3, 255, **kw)


def test_missing_label_map(tmp_path):
    write_pair(tmp_path, "a", np.zeros((8, 8, 3), np.uint8), label_map(8, 8))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SemSegDataError, match=r"1 image\(s\) .* have no label map .*b\.png"):
        load(tmp_path)


def test_missing_image(tmp_path):
    write_pair(tmp_path, "a", np.zeros((8, 8, 3), np.uint8), label_map(8, 8))
    np.save(tmp_path / "labels" / "orphan.npy", label_map(8, 8))
    with pytest.raises(SemSegDataError, match=r"label map\(s\) .* have no image .*orphan\.npy"):
        load(tmp_path)


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    img, lab = write_pair(tmp_path, "a", np.zeros((8, 10, 3), np.uint8), label_map(9, 10))
    with pytest.raises(SemSegDataError) as e:
        load(tmp_path)
    msg = str(e.value)
    assert str(img) in msg and str(lab) in msg and "8x10" in msg and "9x10" in msg


def test_label_values_out_of_range(tmp_path):
    lab = label_map(8, 8)
    lab[2, 2] = 7
    lab[3, 3] = 255  # the ignore label is fine
    _, lab_path = write_pair(tmp_path, "a", np.zeros((8, 8, 3), np.uint8), lab)
    with pytest.raises(SemSegDataError, match=rf"{lab_path}.*values \[7\] outside \[0, 3\).*ignore label 255"):
        load(tmp_path)


def test_unreadable_image(tmp_path):
    write_pair(tmp_path, "a", np.zeros((8, 8, 3), np.uint8), label_map(8, 8))
    (tmp_path / "images" / "a.png").write_bytes(b"this is not an image")
    with pytest.raises(DataFileError, match=r"Unreadable image .*a\.png"):
        load(tmp_path)
    with pytest.raises(DataFileError, match=r"Unreadable image .*a\.png"):
        read_image(str(tmp_path / "images" / "a.png"))


def test_unreadable_or_colour_label_map(tmp_path):
    write_pair(tmp_path, "a", np.zeros((8, 8, 3), np.uint8), label_map(8, 8))
    (tmp_path / "labels" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SemSegDataError, match=r"Unreadable label map .*a\.png"):
        load(tmp_path)
    cv2.imwrite(str(tmp_path / "labels" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SemSegDataError, match=r"a\.png has PIL mode 'RGB'.*single channel"):
        load(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(SemSegDataError, match="does not exist"):
        load(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(SemSegDataError, match="No image files"):
        load(tmp_path)
    write_pair(tmp_path, "a", np.zeros((8, 8, 3), np.uint8), label_map(8, 8))
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SemSegDataError, match="Two image files have the stem 'a'"):
        load(tmp_path)


def test_gt_suffix_pairs_by_stem_plus_suffix(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "case1.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(tmp_path / "labels" / "case1_mask.png"), label_map(8, 8))
    dicts = load(tmp_path, gt_suffix="_mask")
    assert dicts[0]["sem_seg_file_name"].endswith("case1_mask.png")


def test_register_rejects_bad_metadata(tmp_path):
    with pytest.raises(ValueError, match="ignore_label 1 is also a class"):
        register_sem_seg_folder("x_bad_ignore", tmp_path, tmp_path, CLASSES, ignore_label=1)
    with pytest.raises(ValueError, match="stuff_colors"):
        register_sem_seg_folder("x_bad_colors", tmp_path, tmp_path, CLASSES, stuff_colors=[(0, 0, 0)])


def test_a_folder_without_labelled_pixels_is_refused(tmp_path):
    """Strict (validate=True, the default): label maps that are all ignore_label are refused when the dataset
    is loaded, naming the folder; validate=False leaves it to the evaluator, which says so."""
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), np.zeros((6, 7, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "gt" / f"{i}.png"), np.full((6, 7), 255, np.uint8))
    with pytest.raises(SemSegDataError, match=rf"Every pixel of the 2 label map\(s\) in {tmp_path / 'gt'} is the "
                                              rf"ignore label 255"):
        load_sem_seg_folder(str(tmp_path / "img"), str(tmp_path / "gt"), 2, 255)
    assert len(load_sem_seg_folder(str(tmp_path / "img"), str(tmp_path / "gt"), 2, 255, validate=False)) == 2
    cv2.imwrite(str(tmp_path / "gt" / "1.png"), np.where(np.eye(6, 7) > 0, 1, 255).astype(np.uint8))
    assert len(load_sem_seg_folder(str(tmp_path / "img"), str(tmp_path / "gt"), 2, 255)) == 2  # one pixel is enough
