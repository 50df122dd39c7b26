"""Build-time checks that a semantic segmentation model fits its datasets (classes, ignore label)."""
import pytest

from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog

from seg_d2 import add_seg_d2_config
from seg_d2.data import check_sem_seg_model_and_data


@pytest.fixture
def cfg_for():
    """``cfg_for(train={name: (n_classes, ignore)}, test={...}, *opts)``: a SegD2SemanticSegmentor
    config over datasets registered by metadata only (n_classes None: no stuff_classes); removed after."""
    names = []

    def register(datasets):
        out = []
        for name, (n, ignore) in datasets.items():
            name = f"test_checks_{name}"
            meta = {"evaluator_type": "sem_seg", "ignore_label": ignore}
            if n is not None:
                meta["stuff_classes"] = [f"class{i}" for i in range(n)]
            MetadataCatalog.get(name).set(**meta)
            names.append(name)
            out.append(name)
        return tuple(out)

    def make(*opts, train=None, test=None):
        cfg = get_cfg()
        add_seg_d2_config(cfg)
        cfg.merge_from_list(["MODEL.META_ARCHITECTURE", "SegD2SemanticSegmentor", "INPUT.DATASET_MAPPER_NAME",
                             "sem_seg", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "255", *opts])
        cfg.DATASETS.TRAIN = register(train or {})
        cfg.DATASETS.TEST = register(test or {})
        return cfg

    yield make
    for name in names:
        MetadataCatalog.remove(name)


def test_num_classes_below_the_datasets_classes(cfg_for):
    """NUM_CLASSES 2 on 5-class data: torch's "Target 4 is out of bounds" at iteration 0 (and wrong
    metrics from --eval-only) without the check."""
    cfg = cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", train={"five": (5, 255)})
    with pytest.raises(ValueError, match=r"Dataset 'test_checks_five' has 5 classes \(metadata stuff_classes "
                                         r"\['class0', .*'class4'\]\).*MODEL\.SEM_SEG_HEAD\.NUM_CLASSES = 2.*"
                                         r"set MODEL\.SEM_SEG_HEAD\.NUM_CLASSES 5\."):
        check_sem_seg_model_and_data(cfg)


def test_num_classes_above_a_test_datasets_classes(cfg_for):
    """NUM_CLASSES 5 on 3-class data: a reshape error in evaluation, after the whole training."""
    cfg = cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5", train={"train5": (5, 255)}, test={"three": (3, 255)})
    with pytest.raises(ValueError, match=r"'test_checks_three' has 3 classes.*NUM_CLASSES = 5"):
        check_sem_seg_model_and_data(cfg)
    check_sem_seg_model_and_data(cfg, cfg.DATASETS.TRAIN)  # the train loader checks its datasets only


def test_binary_model_goes_with_two_classes(cfg_for):
    check_sem_seg_model_and_data(cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1", train={"fg": (2, 255)}))
    check_sem_seg_model_and_data(cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", train={"fg2": (2, 255)}))
    with pytest.raises(ValueError, match=r"has 2 classes.*NUM_CLASSES = 3.*NUM_CLASSES 2 \(or 1 for a binary model"):
        check_sem_seg_model_and_data(cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", train={"fg3": (2, 255)}))
    with pytest.raises(ValueError, match=r"has 3 classes.*NUM_CLASSES = 1"):
        check_sem_seg_model_and_data(cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1", train={"three": (3, 255)}))


def test_not_checked_without_a_semantic_model_or_stuff_classes(cfg_for):
    cfg = cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", train={"five": (5, 255)})
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # SEM_SEG_HEAD unused
    check_sem_seg_model_and_data(cfg)
    check_sem_seg_model_and_data(cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", train={"nometa": (None, 255)}))
    cfg = cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", train={"d2": (3, 255)})
    cfg.MODEL.META_ARCHITECTURE = "SemanticSegmentor"  # detectron2's: checked too
    check_sem_seg_model_and_data(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4
    with pytest.raises(ValueError, match="NUM_CLASSES = 4"):
        check_sem_seg_model_and_data(cfg)


def test_ignore_label(cfg_for):
    """A dataset ignoring 65535 with IGNORE_VALUE 255: seg_d2's mapper remaps it; detectron2's
    DatasetMapper does not (the loss would train on 65535): an error naming both keys."""
    check_sem_seg_model_and_data(cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", train={"big": (3, 65535)}))
    cfg = cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", "INPUT.DATASET_MAPPER_NAME", "", train={"big2": (3, 65535)})
    with pytest.raises(ValueError, match=r"test_checks_big2'\] mark ignored pixels with 65535.*IGNORE_VALUE is 255.*"
                                         r"INPUT\.DATASET_MAPPER_NAME \"sem_seg\""):
        check_sem_seg_model_and_data(cfg)
    cfg = cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3", train={"a": (3, 255), "b": (3, 65535)})
    with pytest.raises(ValueError, match=r"different ignore labels"):
        check_sem_seg_model_and_data(cfg)


def test_ignore_value_is_a_class(cfg_for):
    cfg = cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "300", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "255",
                  train={"many": (300, 65535)})
    with pytest.raises(ValueError, match=r"IGNORE_VALUE 255 is a class of the model \(MODEL\.SEM_SEG_HEAD\."
                                         r"NUM_CLASSES 300\).*outside 0\.\.299, such as 65535"):
        check_sem_seg_model_and_data(cfg)
    cfg = cfg_for("MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "1",
                  train={"bin": (2, 255)})
    with pytest.raises(ValueError, match=r"IGNORE_VALUE 1 is a class.*outside 0\.\.1, such as 255"):
        check_sem_seg_model_and_data(cfg)


# --- data sizes against the config's input sizes and anchors (train_net warns) ---

def _photos(name, n_images=3, side=(1200, 1600), box=(400, 300), per_image=3):
    """A registered instance dataset of large photos with large objects (dicts only: no file is read)."""
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    h, w = side
    dicts = [{"file_name": f"{i}.jpg", "height": h, "width": w, "image_id": i,
              "annotations": [{"bbox": [10 + 20 * k, 10, *box], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
                               "iscrowd": 0} for k in range(per_image)]} for i in range(n_images)]
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["house"])
    return name


def _recipe(path, *opts):
    from seg_d2 import model_zoo

    cfg = model_zoo.get_config(path)
    cfg.defrost()
    cfg.merge_from_list(list(opts))
    return cfg


def test_a_toy_recipe_on_real_photos_warns_with_the_numbers():
    """The shapes recipe (train sizes 128/160/192, max 320; anchors 16-256; 20 detections) on 1200x1600 photos
    with 400x300 objects and 30 per image. By hand: scale = min(160 / 1200, 320 / 1600) = 0.133, a 7.5x downsize
    (beyond 4x); objects sqrt(400 * 300) * 0.133 = 46 px lie inside 16-256 (no anchor warning); 30 > 20."""
    from seg_d2.data import warn_if_data_and_input_sizes_disagree

    name = _photos("test_checks_photos", per_image=30)
    cfg = _recipe("Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml", "DATASETS.TRAIN", f"('{name}',)")
    warnings = warn_if_data_and_input_sizes_disagree(cfg)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("The training images are 1200 px on their short side (median)") and "0.13x" in warnings[0]
    assert warnings[1] == ("A training image holds 30 objects, more than TEST.DETECTIONS_PER_IMAGE 20 returns: "
                           "raise it (COCO's recipe: 100).")
    # the own-data recipe for photos: 704 px median -> scale min(704/1200, 1333/1600) = 0.587; objects
    # 346 * 0.587 = 203 px within 32-512; 30 <= 100 detections: nothing to say
    cfg = _recipe("OwnData-InstanceSegmentation/mask_rcnn_R_50_FPN_bs8_6k.yaml", "DATASETS.TRAIN", f"('{name}',)")
    assert warn_if_data_and_input_sizes_disagree(cfg) == []


def test_objects_far_below_the_anchors_warn():
    """Tiny objects: 6x6 boxes on 800x800 images under the photo recipe, scale 704/800 = 0.88, so 5.3 px
    objects, below a quarter of the smallest anchor (32 / 4 = 8)."""
    from seg_d2.data import warn_if_data_and_input_sizes_disagree

    name = _photos("test_checks_tiny", side=(800, 800), box=(6, 6))
    cfg = _recipe("OwnData-InstanceSegmentation/mask_rcnn_R_50_FPN_bs8_6k.yaml", "DATASETS.TRAIN", f"('{name}',)")
    (warning,) = warn_if_data_and_input_sizes_disagree(cfg)
    assert warning.startswith("The training objects measure 5-5 px (median 5;") and "spans 32-512 px" in warning
