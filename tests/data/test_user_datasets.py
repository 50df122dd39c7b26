"""Your own datasets without Python: SEG_D2.DATASETS (what train_net's --coco-dataset, --sem-seg-folder and
--dataset-module fill), class counts from the data (NUM_CLASSES 0) and checked against it, clear errors
for unregistered names."""
import argparse

import pytest

import seg_d2
from detectron2.data import DatasetCatalog, MetadataCatalog
from seg_d2 import model_zoo
from seg_d2.data import (
    add_dataset_arguments, check_instance_model_and_data, check_model_and_data,
    merge_dataset_arguments, register_datasets_from_config, set_num_classes_from_data,
)
from seg_d2.data.datasets import COCOFormatError
from seg_d2.data.user_datasets import parse_classes
from tests.own_data import make_coco, make_sem_seg_16bit

SEM = "Shapes-SemanticSegmentation/unet_classic_c16_scratch_bs8_600it.yaml"
RCNN = "Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("own_data")
    make_coco(str(root / "coco"))
    make_sem_seg_16bit(str(root / "scans"))
    return root


@pytest.fixture
def names():
    """Dataset names to remove after the test (registrations are process-wide)."""
    from seg_d2.data import user_datasets

    registered = []
    yield registered
    for name in registered:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        user_datasets._REGISTERED.pop(name, None)


def config(name, *opts):
    cfg = model_zoo.get_config(name)
    cfg.merge_from_list(list(opts))
    return cfg


def test_flags_fill_the_config_keys(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data)
    parser = add_dataset_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--coco-dataset", "a", "coco/train.json", "coco/images",
                              "--sem-seg-folder", "b", "scans/images/train", "scans/labels/train", "background,lesion",
                              "--dataset-module", "my_datasets.py"])
    cfg = seg_d2.get_cfg()
    merge_dataset_arguments(cfg, args)
    assert cfg.SEG_D2.DATASETS.COCO == [["a", str(data / "coco/train.json"), str(data / "coco/images")]]
    assert cfg.SEG_D2.DATASETS.SEM_SEG_FOLDER == [
        ["b", str(data / "scans/images/train"), str(data / "scans/labels/train"), "background,lesion"]]
    assert cfg.SEG_D2.DATASETS.MODULES == [str(data / "my_datasets.py")]
    # the keys survive a dump (OUTPUT_DIR/config.yaml) and a reload
    reloaded = seg_d2.get_cfg()
    path = tmp_path / "config.yaml"
    path.write_text(cfg.dump())
    reloaded.merge_from_file(str(path))
    assert reloaded.SEG_D2.DATASETS.COCO == cfg.SEG_D2.DATASETS.COCO


def test_register_from_config_keys_and_num_classes_from_the_data(data, names, monkeypatch):
    monkeypatch.chdir(data)
    names += ["own_sem_train", "own_sem_val"]
    cfg = config(SEM, "SEG_D2.DATASETS.SEM_SEG_FOLDER",
                 "[['own_sem_train', 'scans/images/train', 'scans/labels/train', 'background,lesion'],"
                 " ['own_sem_val', 'scans/images/val', 'scans/labels/val', 'background,lesion', 65535]]",
                 "DATASETS.TRAIN", "('own_sem_train',)", "DATASETS.TEST", "('own_sem_val',)",
                 "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0")
    assert register_datasets_from_config(cfg) == ["own_sem_train", "own_sem_val"]
    assert register_datasets_from_config(cfg) == ["own_sem_train", "own_sem_val"]  # again: nothing to do
    assert MetadataCatalog.get("own_sem_val").ignore_label == 65535
    assert len(DatasetCatalog.get("own_sem_train")) == 4
    set_num_classes_from_data(cfg)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2
    check_model_and_data(cfg)


def test_coco_from_config_sets_classes_and_instance_num_classes(data, names):
    names += ["own_coco_train"]
    cfg = config(RCNN, "SEG_D2.DATASETS.COCO", f"[['own_coco_train', '{data}/coco/train.json', '{data}/coco/images']]",
                 "DATASETS.TRAIN", "('own_coco_train',)", "DATASETS.TEST", "()", "MODEL.ROI_HEADS.NUM_CLASSES", "0")
    register_datasets_from_config(cfg)
    meta = MetadataCatalog.get("own_coco_train")
    assert meta.thing_classes == ["disc", "box"] and meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    set_num_classes_from_data(cfg)
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2
    check_model_and_data(cfg)
    DatasetCatalog.get("own_coco_train")  # loading sets the same metadata: no conflict


def test_instance_num_classes_must_match_the_categories(data, names):
    """The shapes config's 4 classes on a 2-category json: trained for nothing, evaluated wrongly, before."""
    names += ["own_coco_mismatch"]
    cfg = config(RCNN, "DATASETS.TRAIN", "('own_coco_mismatch',)", "DATASETS.TEST", "()")
    seg_d2.data.datasets.register_coco_dataset("own_coco_mismatch", str(data / "coco/train.json"),
                                               str(data / "coco/images"))  # not loaded yet: categories from the json
    with pytest.raises(ValueError, match=r"Dataset 'own_coco_mismatch' has 2 categories \(thing_classes \['disc', "
                                         r"'box'\]\) but the model predicts MODEL\.ROI_HEADS\.NUM_CLASSES = 4: "
                                         r"set MODEL\.ROI_HEADS\.NUM_CLASSES 2\. \(0: taken from the data"):
        check_instance_model_and_data(cfg)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    check_instance_model_and_data(cfg)


def test_num_classes_from_data_needs_datasets_that_agree(data, names, monkeypatch):
    monkeypatch.chdir(data)
    names += ["own_two", "own_three"]
    cfg = config(SEM, "SEG_D2.DATASETS.SEM_SEG_FOLDER",
                 "[['own_two', 'scans/images/train', 'scans/labels/train', 'background,lesion'],"
                 " ['own_three', 'scans/images/val', 'scans/labels/val', 'background,lesion,cyst']]",
                 "DATASETS.TRAIN", "('own_two',)", "DATASETS.TEST", "('own_three',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0")
    register_datasets_from_config(cfg)
    with pytest.raises(ValueError, match=r"NUM_CLASSES 0 takes the number of classes from the data, but the datasets "
                                         r"disagree: 'own_two': 2 .*'own_three': 3"):
        set_num_classes_from_data(cfg)


def test_registration_errors(data, names, monkeypatch, tmp_path):
    monkeypatch.chdir(data)
    names += ["own_bad_json", "own_taken"]
    cfg = config(RCNN, "SEG_D2.DATASETS.COCO", f"[['own_bad_json', '{tmp_path}/missing.json', 'coco/images']]")
    with pytest.raises(COCOFormatError, match="missing.json does not exist"):
        register_datasets_from_config(cfg)
    cfg = config(RCNN, "SEG_D2.DATASETS.COCO", "[['seg_d2_shapes_train', 'coco/train.json', 'coco/images']]")
    with pytest.raises(ValueError, match="Cannot register dataset 'seg_d2_shapes_train'.*the name is taken"):
        register_datasets_from_config(cfg)
    cfg = config(RCNN, "SEG_D2.DATASETS.COCO", "[['own_taken', 'coco/train.json']]")
    with pytest.raises(ValueError, match=r"SEG_D2\.DATASETS\.COCO: each entry must be a list of 3 values"):
        register_datasets_from_config(cfg)
    cfg = config(SEM, "SEG_D2.DATASETS.SEM_SEG_FOLDER", "[['own_taken', 'nowhere', 'scans/labels/val', 'a,b']]")
    with pytest.raises(ValueError, match="the image folder nowhere does not exist"):
        register_datasets_from_config(cfg)


def test_parse_classes(tmp_path):
    assert parse_classes("background, road ,car") == ["background", "road", "car"]
    (tmp_path / "classes.txt").write_text("# my classes\nbackground\n\nlesion  # the one\n")
    assert parse_classes(str(tmp_path / "classes.txt")) == ["background", "lesion"]
    (tmp_path / "classes.json").write_text('{"stuff_classes": ["a", "b", "c"]}')
    assert parse_classes(str(tmp_path / "classes.json")) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="appears twice"):
        parse_classes("a,b,a")
    with pytest.raises(ValueError, match="expected names separated by commas"):
        parse_classes("a,,b")


def test_dataset_module(data, names, tmp_path):
    names += ["own_module_ds"]
    module = tmp_path / "my_datasets.py"
    module.write_text("from seg_d2.data.datasets import register_coco_dataset\n"
                      f"register_coco_dataset('own_module_ds', r'{data}/coco/val.json', r'{data}/coco/images')\n")
    cfg = config(RCNN, "SEG_D2.DATASETS.MODULES", f"['{module}']")
    register_datasets_from_config(cfg)
    register_datasets_from_config(cfg)  # imported once
    assert "own_module_ds" in DatasetCatalog.list()


def test_an_unregistered_dataset_says_how_to_register_it():
    """detectron2 says KeyError: "Dataset 'my_ds' is not registered! Available datasets are: ..." (60 names)."""
    cfg = config(SEM, "DATASETS.TRAIN", "('my_ds',)")
    with pytest.raises(ValueError, match=r"Dataset 'my_ds' of DATASETS\.TRAIN is not registered\. Register it from the "
                                         r"command line of tools/train_net\.py with --coco-dataset my_ds JSON IMAGE_ROOT"):
        check_model_and_data(cfg)
    cfg = config(SEM, "DATASETS.TEST", "('seg_d2_shapes_sem_seg_vall',)")
    with pytest.raises(ValueError, match=r"Did you mean 'seg_d2_shapes_sem_seg_val'"):
        check_model_and_data(cfg)
