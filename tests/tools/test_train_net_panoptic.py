"""Instant train_net runs of every panoptic config (PanopticFPN with detectron2's, seg_d2's U-Net and FCN stuff
heads, Mask R-CNN or BMask R-CNN things) on the panoptic shapes set: trained, then evaluated by PQ (panopticapi),
AP and mIoU; and the --coco-panoptic flag on a set made by tools/make_panoptic.py."""
import json
import math

import pytest
from PIL import Image

from tests.conftest import REPO, run_tool
from tests.tools.test_train_net_instance import INSTANT, SMALL_R18, read_metrics, train_net  # noqa: F401  (fixture)

TRAIN_NET = REPO / "tools" / "train_net.py"
CONFIGS = REPO / "configs"
ON_PANOPTIC_SHAPES = ["MODEL.ROI_HEADS.NUM_CLASSES", "4", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3",
                      "INPUT.MASK_FORMAT", "bitmask", "DATASETS.TRAIN", "('seg_d2_shapes_panoptic_train',)",
                      "DATASETS.TEST", "('seg_d2_shapes_panoptic_val_mini',)",
                      "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", "64", "SEED", "0"]
BMASK_LOSSES = ("loss_mask", "loss_boundary", "loss_boundary_dice")
PANOPTIC = {  # config -> (losses expected besides the semantic head's, extra options)
    "Shapes-PanopticSegmentation/panoptic_fpn_R_18_FPN_scratch_bs4_600it.yaml": (("loss_mask",), []),
    "Shapes-PanopticSegmentation/panoptic_fcn8s_R_18_FPN_scratch_bs4_600it.yaml": (("loss_mask",), []),
    "Shapes-PanopticSegmentation/panoptic_unet_bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml": (BMASK_LOSSES, []),
    # the COCO recipe (Base-Panoptic-UNet-FPN.yaml, which the 1x/3x Mask R-CNN configs are with another schedule),
    # made small (its GN needs channels in multiples of 32)
    "COCO-PanopticSegmentation/panoptic_unet_bmask_rcnn_R_50_FPN_1x.yaml": (BMASK_LOSSES, [
        "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[64, 32, 32, 32, 32]", "MODEL.RESNET_UNET.FULL_RES_CHANNELS", "8"]),
}
PANOPTIC_METRICS = [f"panoptic_seg/{k}{s}" for k in ("PQ", "SQ", "RQ") for s in ("", "_th", "_st")]


def _check_panoptic_metrics(final):
    for key in PANOPTIC_METRICS:
        assert 0 <= final[key] <= 100, key
    assert math.isfinite(final["sem_seg/mIoU"])
    assert "bbox/AP" in final and "segm/AP" in final


@pytest.mark.parametrize("config", sorted(PANOPTIC))
def test_every_panoptic_config_trains_and_evaluates(config, train_net, tmp_path):
    from detectron2.engine import default_argument_parser

    losses, extra = PANOPTIC[config]
    opts = [*INSTANT, "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "2", *SMALL_R18, *ON_PANOPTIC_SHAPES, *extra]
    args = default_argument_parser().parse_args(["--config-file", str(CONFIGS / config), *opts, "OUTPUT_DIR", str(tmp_path)])
    train_net.main(args)
    final = read_metrics(tmp_path, ("loss_sem_seg",) + losses)
    _check_panoptic_metrics(final)
    assert (tmp_path / "model_final.pth").is_file()


@pytest.mark.long
def test_unet_panoptic_learns_the_stuff_in_a_fixed_budget(train_net, tmp_path):
    """The U-Net PanopticFPN (also this config family's instant run): 80 iterations from random weights take the
    stuff's PQ from about 10 (after 1 iteration) to above 40: 53.8-72.9 measured over seeds 0-3 on detectron2 v0.6
    and main (sky >= 41.9, ground >= 65.6). The budget used to be 40 iterations at LR 0.02, where PQ_st ranged
    8.6-40.8 over those seeds on main: seed 0 passed on one machine and failed (17.4) on another."""
    from detectron2.engine import default_argument_parser

    opts = [*INSTANT, *SMALL_R18, *ON_PANOPTIC_SHAPES, "SOLVER.MAX_ITER", "80", "SOLVER.WARMUP_ITERS", "5",
            "SOLVER.BASE_LR", "0.01", "SOLVER.STEPS", "()"]
    config = CONFIGS / "Shapes-PanopticSegmentation/panoptic_unet_R_18_FPN_scratch_bs4_600it.yaml"
    train_net.main(default_argument_parser().parse_args(["--config-file", str(config), *opts, "OUTPUT_DIR", str(tmp_path)]))
    final = read_metrics(tmp_path, ("loss_sem_seg", "loss_mask"))
    _check_panoptic_metrics(final)
    assert final["panoptic_seg/PQ_st"] > 40, final["panoptic_seg/PQ_st"]
    assert final["panoptic_seg/PQ-sky"] > 30 and final["panoptic_seg/PQ-ground"] > 30


def test_panoptic_quick_start_command_and_tools(tmp_path):
    """The README's panoptic command, as a subprocess, made instant: PQ per class reaches the CSV, the evaluation
    overlays, the demo and the dataset browser draw panoptic segments, and export refuses with the reason."""
    config = "configs/Shapes-PanopticSegmentation/panoptic_unet_R_18_FPN_scratch_bs4_600it.yaml"
    run = tmp_path / "run"
    res = run_tool([TRAIN_NET, "--config-file", config, *INSTANT, "SOLVER.MAX_ITER", "4",
                    "DATASETS.TEST", "('seg_d2_shapes_panoptic_val_mini',)", "TEST.VIS_NUM_IMAGES", "2", "OUTPUT_DIR", run])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    final = json.loads((run / "metrics.json").read_text().splitlines()[-1])
    _check_panoptic_metrics(final)
    inference = run / "inference" / "seg_d2_shapes_panoptic_val_mini"
    csv = (inference / "per_class_metrics.csv").read_text()
    assert "panoptic_seg PQ" in csv.splitlines()[0]
    vis = sorted((inference / "vis").glob("*.png"))
    assert len(vis) == 2
    image = REPO / "datasets" / "seg_d2_shapes_panoptic" / "images" / "val" / "00000.png"
    assert Image.open(vis[0]).width > 2 * Image.open(image).width  # prediction | ground truth

    res = run_tool([REPO / "tools" / "demo.py", "--config-file", run / "config.yaml", "--input", image,
                    "--output", tmp_path / "demo", "--opts", "MODEL.WEIGHTS", run / "model_final.pth",
                    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH", "0.0"])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    record = json.loads((tmp_path / "demo" / "predictions.json").read_text())["predictions"][0]
    segments = record["segments"]
    assert segments and {s["class"] for s in segments} <= {"circle", "square", "triangle", "star", "sky", "ground"}
    assert sum(s["pixels"] for s in segments) <= Image.open(image).width * Image.open(image).height
    assert Image.open(record["output"]).size == Image.open(image).size

    res = run_tool([REPO / "tools" / "visualize_data.py", "--config-file", config, "--source", "annotation",
                    "--dataset", "seg_d2_shapes_panoptic_val", "--num-images", "2", "--output", tmp_path / "browse"])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert len(list((tmp_path / "browse").glob("*.png"))) == 2
    stats = json.loads((tmp_path / "browse" / "class_stats.json").read_text())
    assert stats["classes"] and all(r["name"] in ("circle", "square", "triangle", "star") for r in stats["classes"])

    res = run_tool([REPO / "tools" / "deploy" / "export_model.py", "--config-file", run / "config.yaml",
                    "--output", tmp_path / "export", "MODEL.WEIGHTS", run / "model_final.pth"])
    assert res.returncode != 0
    assert "(panoptic) cannot be exported" in res.stderr and "Traceback" not in res.stderr
