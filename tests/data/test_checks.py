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
