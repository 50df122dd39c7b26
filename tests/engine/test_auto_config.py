"""Configured from the data (seg_d2.data.fingerprint, seg_d2.engine.auto_config): the fingerprint against numbers
computed independently from the files (PIL, numpy, pycocotools), the plan's rules by hand, explicit values kept,
and train_net --auto-config end to end (plan.json, the config it trained with, a time budget)."""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from seg_d2 import get_cfg
from seg_d2.data.fingerprint import fingerprint_dataset
from seg_d2.engine.auto_config import apply_auto_config, explicit_keys, plan_from_fingerprint
from tests.conftest import REPO
from tests.own_data import make_coco, make_sem_seg_16bit

AUTO = REPO / "configs/OwnData-SemanticSegmentation/unet_classic_gray_auto_bs8_6k.yaml"


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return make_sem_seg_16bit(str(tmp_path_factory.mktemp("auto") / "my_scans"))


def _scan_dicts(root, split="train"):
    from seg_d2.data.datasets.sem_seg_folder import load_sem_seg_folder

    return load_sem_seg_folder(f"{root}/images/{split}", f"{root}/labels/{split}", 2)


def test_fingerprint_of_16bit_scans_against_pil_and_numpy(scans):
    dicts = _scan_dicts(scans)
    fp = fingerprint_dataset(dicts, image_format="L", num_classes=2)
    raw = [np.asarray(Image.open(d["file_name"])) for d in dicts]  # PIL: 16-bit, independent of seg_d2's reader
    pixels = np.concatenate([r.ravel().astype(np.float64) * 255 / 65535 for r in raw])
    low, high = np.percentile(pixels, [0.5, 99.5])
    clipped = np.clip(pixels, low, high)
    assert fp["images"] == fp["sampled"] == 4
    assert fp["channels"] == [1] and fp["bit_depth"] == [16]
    assert fp["height"]["median"] == raw[0].shape[0] and fp["width"]["median"] == raw[0].shape[1]
    assert fp["intensity"]["mean"] == pytest.approx([pixels.mean()], rel=1e-5)
    assert fp["intensity"]["std"] == pytest.approx([pixels.std()], rel=1e-5)
    assert fp["intensity"]["percentile_0.5"] == pytest.approx([low], rel=1e-5)
    assert fp["intensity"]["clipped_mean"] == pytest.approx([clipped.mean()], rel=1e-5)
    assert fp["intensity"]["clipped_std"] == pytest.approx([clipped.std()], rel=1e-5)
    labels = np.concatenate([np.asarray(Image.open(d["sem_seg_file_name"])).ravel() for d in dicts])
    assert fp["class_pixels"] == [int((labels == 0).sum()), int((labels == 1).sum())]


def test_fingerprint_of_coco_objects_against_pycocotools(tmp_path):
    from seg_d2.data.datasets import register_coco_dataset
    from detectron2.data import DatasetCatalog

    make_coco(str(tmp_path / "coco"))
    register_coco_dataset("auto_coco_train", str(tmp_path / "coco/train.json"), str(tmp_path / "coco/images"))
    fp = fingerprint_dataset(DatasetCatalog.get("auto_coco_train"))
    coco = json.loads((tmp_path / "coco/train.json").read_text())
    sizes = []
    for a in coco["annotations"]:
        seg = a["segmentation"]
        rle = mask_util.frPyObjects(seg, *seg["size"]) if isinstance(seg["counts"], list) else seg
        sizes.append(np.sqrt(mask_util.area(rle)))
    assert fp["object_size"]["p5"] == pytest.approx(np.percentile(sizes, 5))
    assert fp["object_size"]["p50"] == pytest.approx(np.percentile(sizes, 50))
    per_image = [sum(a["image_id"] == im["id"] for a in coco["annotations"]) for im in coco["images"]]
    assert fp["objects_per_image"]["max"] == max(per_image)
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / "configs/OwnData-InstanceSegmentation/mask_rcnn_R_50_FPN_bs8_6k.yaml"))
    plan = plan_from_fingerprint(cfg, fp)
    smallest = 2 ** int(np.floor(np.log2(np.percentile(sizes, 5))))  # by hand: the octave at or below p5
    assert plan["MODEL.ANCHOR_GENERATOR.SIZES"] == [[smallest * 2 ** k] for k in range(5)]
    assert plan["TEST.DETECTIONS_PER_IMAGE"] == max(10, 2 * max(per_image))


def test_plan_rules_by_hand():
    cfg = get_cfg()
    cfg.merge_from_file(str(AUTO))
    cfg.SEG_D2.AUTO_CONFIG.CLASS_WEIGHTS = True
    cfg.SEG_D2.AUTO_CONFIG.BATCH_DATASET_SHARE = 0.0  # the pixel rule alone (the cap: the next test)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    fp = {"channels": [1], "short_side": {"median": 96}, "long_side": {"median": 128},
          "intensity": {"mean": [40.0], "std": [20.0], "clipped_mean": [39.5], "clipped_std": [18.25]},
          "class_frequency": [0.9, 0.1]}
    plan = plan_from_fingerprint(cfg, fp)
    assert plan["MODEL.PIXEL_MEAN"] == [39.5] and plan["MODEL.PIXEL_STD"] == [18.25]  # one channel: the clipped ones
    assert plan["INPUT.MIN_SIZE_TRAIN"] == (96,) and plan["INPUT.MAX_SIZE_TEST"] == 128
    assert "INPUT.CROP.ENABLED" not in plan  # 96 px: no crop
    assert plan["SOLVER.IMS_PER_BATCH"] == 16  # 2^19 / (96 * 128) = 42.7 -> 2^5 = 32, at most 16
    # 1/sqrt(0.9) = 1.0541, 1/sqrt(0.1) = 3.1623; their mean 2.1082 -> 0.5, 1.5
    assert plan["MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS"] == pytest.approx([0.5, 1.5], abs=1e-4)
    fp["short_side"]["median"], fp["long_side"]["median"] = 1024, 2048
    plan = plan_from_fingerprint(cfg, fp)
    assert plan["INPUT.CROP.SIZE"] == [512, 512] and plan["SOLVER.IMS_PER_BATCH"] == 2  # 2^19 / 512^2 = 2


@pytest.mark.parametrize("images,batch", [(18, 2), (180, 9), (2000, 16)])
def test_batch_dataset_share_is_nnunets_cap(images, batch):
    """nnU-Net's rule (nnunetv2 ExperimentPlanner, max_dataset_covered 0.05): 18 tiles of 150 x 150 px,
    0.05 x 18 = 0.9 tiles -> 2 at least; 180 -> round(9.0) = 9 (below the pixel rule's 16); 2000 -> 100, so 16."""
    cfg = get_cfg()
    cfg.merge_from_file(str(AUTO))
    fp = {"channels": [1], "images": images, "short_side": {"median": 150}, "long_side": {"median": 150},
          "intensity": {"mean": [40.0], "std": [20.0], "clipped_mean": [39.5], "clipped_std": [18.25]}}
    assert cfg.SEG_D2.AUTO_CONFIG.BATCH_DATASET_SHARE == 0.05  # the scans recipe's: nnU-Net's
    assert plan_from_fingerprint(cfg, fp)["SOLVER.IMS_PER_BATCH"] == batch
    cfg.SEG_D2.AUTO_CONFIG.BATCH_DATASET_SHARE = 0.0  # off
    assert plan_from_fingerprint(cfg, fp)["SOLVER.IMS_PER_BATCH"] == 16  # 2^19 / 150^2 = 23.3 -> 2^5, at most 16


def test_explicit_keys_are_the_file_itself_and_the_options(tmp_path):
    (tmp_path / "base.yaml").write_text("MODEL:\n  PIXEL_MEAN: [1.0]\n")
    (tmp_path / "leaf.yaml").write_text("_BASE_: base.yaml\nINPUT:\n  MIN_SIZE_TEST: 64\nSOLVER:\n  MAX_ITER: 9\n")
    keys = explicit_keys(str(tmp_path / "leaf.yaml"), ["MODEL.PIXEL_STD", "[2.0]"])
    assert keys == {"INPUT.MIN_SIZE_TEST", "SOLVER.MAX_ITER", "MODEL.PIXEL_STD"}  # not the base's PIXEL_MEAN


def test_train_net_auto_config_plans_logs_and_keeps_explicit_values(scans, tmp_path):
    from tests.conftest import run_tool

    root = scans
    common = ["--config-file", str(AUTO), "--auto-config",
              "--sem-seg-folder", "auto_scans_train", f"{root}/images/train", f"{root}/labels/train", "background,lesion",
              "--sem-seg-folder", "auto_scans_val", f"{root}/images/val", f"{root}/labels/val", "background,lesion",
              "DATASETS.TRAIN", "('auto_scans_train',)", "DATASETS.TEST", "('auto_scans_val',)",
              # no loader workers: in a child forked from the test process (run_tool), the measuring trainer's four
              # took 20 s to shut down on detectron2 main (none when train_net starts on its own)
              "DATALOADER.NUM_WORKERS", "0",
              "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "0", "TEST.VIS_NUM_IMAGES", "0", "MODEL.UNET.BASE_CHANNELS", "8",
              "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[64, 32, 16, 8]"]
    out = tmp_path / "auto"
    res = run_tool([str(REPO / "tools/train_net.py"), *common, "INPUT.MIN_SIZE_TRAIN", "(64,)", "OUTPUT_DIR", str(out)],
                   cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    mean = plan["fingerprint"]["intensity"]["clipped_mean"]
    assert plan["applied"]["MODEL.PIXEL_MEAN"] == pytest.approx(mean, abs=1e-3)  # not the base recipe's 128
    assert plan["kept"]["INPUT.MIN_SIZE_TRAIN"]["config"] == [64]  # explicit on the command line: kept
    from detectron2.config import CfgNode

    trained = CfgNode.load_yaml_with_base(str(out / "config.yaml"))
    assert trained["MODEL"]["PIXEL_MEAN"] == pytest.approx(mean, abs=1e-3)
    log = (out / "log.txt").read_text()
    assert "[auto-config] INPUT.MIN_SIZE_TRAIN = (64,) kept: set explicitly" in log
    assert "[auto-config] MODEL.PIXEL_MEAN = [" in log

    # a time budget: the iterations from a measured s/iter (SOLVER.MAX_ITER not given explicitly this time)
    out = tmp_path / "budget"
    opts = [o for o in common if o not in ("SOLVER.MAX_ITER", "2")]
    res = run_tool([str(REPO / "tools/train_net.py"), *opts, "SEG_D2.AUTO_CONFIG.BUDGET_MINUTES", "0.05",
                    "OUTPUT_DIR", str(out)], cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    iters = plan["applied"]["SOLVER.MAX_ITER"]
    assert plan["s_per_iter"] > 0 and iters == max(1, int(0.05 * 60 * 0.9 / plan["s_per_iter"]))
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == iters - 1


def test_a_past_runs_plan_json_is_replaced_not_merged(tmp_path):
    """A second run into the same OUTPUT_DIR (no budget this time) must not report the first run's iterations: the
    record and plan.json hold this run's plan only; the budget phase then updates this run's own file."""
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"fingerprint": {"images": 3}, "kept": {},  # an earlier run's, with a budget
                                "applied": {"SOLVER.MAX_ITER": 138, "MODEL.PIXEL_MEAN": [9.0]}, "s_per_iter": 8.0}))
    cfg = get_cfg()
    record = apply_auto_config(cfg, {"MODEL.PIXEL_MEAN": [6.13]}, set(), {"images": 18}, str(path))
    assert record["applied"] == {"MODEL.PIXEL_MEAN": [6.13]} and "s_per_iter" not in record
    assert json.loads(path.read_text()) == record
    apply_auto_config(cfg, {"SOLVER.MAX_ITER": 273}, set(), None, str(path), s_per_iter=8.2)
    assert json.loads(path.read_text()) == {"fingerprint": {"images": 18}, "kept": {}, "s_per_iter": 8.2,
                                            "applied": {"MODEL.PIXEL_MEAN": [6.13], "SOLVER.MAX_ITER": 273}}
    other = tmp_path / "other" / "plan.json"  # only the budget phase in this process: nothing of a past run either
    other.parent.mkdir()
    other.write_text(path.read_text())
    apply_auto_config(cfg, {"SOLVER.MAX_ITER": 5}, set(), None, str(other), s_per_iter=1.0)
    assert json.loads(other.read_text()) == {"fingerprint": None, "applied": {"SOLVER.MAX_ITER": 5}, "kept": {},
                                             "s_per_iter": 1.0}
