"""tools/train_net.py on your own data from the command line alone, run from a folder outside the
repository: --coco-dataset, --sem-seg-folder (16-bit grayscale scans), --dataset-module, NUM_CLASSES 0
from the data, configs/... found from anywhere. Evaluation-only runs (no training: fast); the README
test trains."""
import importlib.util

import pytest

from tests.conftest import REPO, run_tool
from tests.own_data import make_coco, make_sem_seg_16bit

TRAIN_NET = REPO / "tools" / "train_net.py"
FAST = ["MODEL.WEIGHTS", "", "DATALOADER.NUM_WORKERS", "0", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "256"]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A user's folder, outside the repository: data and a registration module."""
    root = tmp_path_factory.mktemp("user")
    make_coco(str(root / "my_coco"))
    make_sem_seg_16bit(str(root / "my_scans"))
    (root / "my_datasets.py").write_text(
        "from seg_d2.data.datasets import register_coco_dataset\n"
        "register_coco_dataset('mod_train', 'my_coco/train.json', 'my_coco/images')\n")
    return root


def _log(res):
    return res.stdout + res.stderr


def test_coco_dataset_and_dataset_module_flags(user_folder):
    out = user_folder / "out_instances"
    res = run_tool([TRAIN_NET, "--config-file", "configs/Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml",
                    "--coco-dataset", "my_val", "my_coco/val.json", "my_coco/images",
                    "--dataset-module", "my_datasets.py", "--eval-only",
                    "DATASETS.TRAIN", "('mod_train',)", "DATASETS.TEST", "('my_val',)",
                    "MODEL.ROI_HEADS.NUM_CLASSES", "0", *FAST, "OUTPUT_DIR", out], cwd=user_folder)
    log = _log(res)
    assert res.returncode == 0, log[-5000:]
    assert "Registered COCO dataset 'my_val'" in log and "Imported dataset module" in log
    assert "MODEL.ROI_HEADS.NUM_CLASSES 0 -> 2: the thing_classes of mod_train, my_val" in log
    for task in ("bbox", "segm", "boundary"):
        assert f"copypaste: Task: {task}" in log
    config = (out / "config.yaml").read_text()
    assert str(user_folder / "my_coco" / "val.json") in config and "NUM_CLASSES: 2" in config


def test_sem_seg_folder_flags_with_16bit_grayscale_scans(user_folder):
    out = user_folder / "out_scans"
    res = run_tool([TRAIN_NET, "--config-file", "configs/Shapes-SemanticSegmentation/unet_classic_c16_scratch_bs8_600it.yaml",
                    "--sem-seg-folder", "scans_val", "my_scans/images/val", "my_scans/labels/val", "background,lesion",
                    "--eval-only", "DATASETS.TRAIN", "()", "DATASETS.TEST", "('scans_val',)",
                    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0", "INPUT.FORMAT", "L", "MODEL.PIXEL_MEAN", "[128.0]",
                    "MODEL.PIXEL_STD", "[64.0]", *FAST, "OUTPUT_DIR", out], cwd=user_folder)
    log = _log(res)
    assert res.returncode == 0, log[-5000:]
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES 0 -> 2: the stuff_classes of scans_val" in log
    assert "copypaste: mIoU,fwIoU,mACC,pACC,mDice,mBoundaryIoU" in log
    assert "np.float64" not in log


def test_class_count_mismatch_names_the_key(user_folder):
    res = run_tool([TRAIN_NET, "--config-file", "configs/Shapes-InstanceSegmentation/mask_rcnn_R_18_FPN_scratch_bs4_600it.yaml",
                    "--coco-dataset", "my_val", "my_coco/val.json", "my_coco/images", "--eval-only",
                    "DATASETS.TRAIN", "()", "DATASETS.TEST", "('my_val',)", *FAST,
                    "OUTPUT_DIR", user_folder / "out_mismatch"], cwd=user_folder)
    assert res.returncode != 0
    assert ("Dataset 'my_val' has 2 categories (thing_classes ['disc', 'box']) but the model predicts "
            "MODEL.ROI_HEADS.NUM_CLASSES = 4: set MODEL.ROI_HEADS.NUM_CLASSES 2.") in _log(res)


def test_an_unregistered_dataset_says_how_to_register_it(user_folder):
    """Before: KeyError "Dataset 'my_ds' is not registered! Available datasets are: ..." and 60 names."""
    res = run_tool([TRAIN_NET, "--config-file", "configs/Shapes-SemanticSegmentation/unet_classic_c16_scratch_bs8_600it.yaml",
                    "DATASETS.TRAIN", "('my_ds',)", *FAST, "OUTPUT_DIR", user_folder / "out_unregistered"],
                   cwd=user_folder)
    assert res.returncode != 0
    assert ("Dataset 'my_ds' of DATASETS.TRAIN is not registered. Register it from the command line of "
            "tools/train_net.py with --coco-dataset my_ds JSON IMAGE_ROOT") in _log(res)


def test_a_misspelt_dataset_with_num_classes_0_says_did_you_mean(user_folder):
    """NUM_CLASSES 0 reads the datasets' classes: with a typo in DATASETS.TRAIN that reported "no dataset ... has
    stuff_classes metadata"; the "not registered. Did you mean" hint comes first now."""
    res = run_tool([TRAIN_NET, "--config-file", "configs/Shapes-SemanticSegmentation/unet_classic_c16_scratch_bs8_600it.yaml",
                    "--sem-seg-folder", "scans_train", "my_scans/images/train", "my_scans/labels/train",
                    "background,lesion", "DATASETS.TRAIN", "('scans_trian',)", "DATASETS.TEST", "()",
                    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "0", *FAST, "OUTPUT_DIR", user_folder / "out_typo"],
                   cwd=user_folder)
    assert res.returncode != 0
    log = _log(res)
    assert "Dataset 'scans_trian' of DATASETS.TRAIN is not registered. Did you mean 'scans_train'?" in log, log[-3000:]
    assert "stuff_classes metadata" not in log


@pytest.fixture(scope="module")
def train_net():
    spec = importlib.util.spec_from_file_location("seg_d2_tools_train_net", TRAIN_NET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flags_after_the_options_are_an_error(train_net, capsys):
    args = train_net.parse_args(["--config-file", "x.yaml", "--coco-dataset", "a", "a.json", "imgs",
                                 "--sem-seg-folder", "b", "i", "l", "x,y", "DATASETS.TRAIN", "('a',)"])
    assert args.coco_dataset == [["a", "a.json", "imgs"]] and args.sem_seg_folder == [["b", "i", "l", "x,y"]]
    with pytest.raises(SystemExit):
        train_net.parse_args(["--config-file", "x.yaml", "DATASETS.TRAIN", "('a',)", "--coco-dataset", "a", "b", "c"])
    assert "--coco-dataset comes after the KEY VALUE options" in capsys.readouterr().err
