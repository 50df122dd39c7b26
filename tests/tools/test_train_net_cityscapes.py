"""Instant tools/train_net.py runs of the Cityscapes configs on the generated Cityscapes-layout fixture.

``DETECTRON2_DATASETS`` points at the fixture's parent, so the configs' own dataset names
(``seg_d2_cityscapes_fine_*``) load it, and the final evaluation goes through seg_d2's Cityscapes
evaluators (cityscapesscripts' metrics). Tiny inputs, 4 iterations, no pretrained weights.
"""
import json
import math

import pytest

from seg_d2.data.datasets.cityscapes_fixture import generate_cityscapes_fixture
from tests.conftest import REPO, run_tool

pytestmark = pytest.mark.long  # five train_net runs: about 65 s in all

TRAIN_NET = REPO / "tools" / "train_net.py"
CONFIGS = REPO / "configs"
INSTANT = ["MODEL.WEIGHTS", "", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "2",
           "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "256", "INPUT.MIN_SIZE_TEST", "128",
           "INPUT.MAX_SIZE_TEST", "256", "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0"]
# R-CNN: a ResNet-18 and narrower heads instead of the recipe's (time); from scratch, so trainable BN
# and no frozen stages (random FrozenBN layers make the losses explode at once); all detections kept.
RCNN_INSTANT = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NORM", "BN",
                "MODEL.RESNETS.STRIDE_IN_1X1", "False", "MODEL.BACKBONE.FREEZE_AT", "0",
                "MODEL.FPN.OUT_CHANNELS", "128",
                "MODEL.ROI_BOX_HEAD.FC_DIM", "256", "MODEL.ROI_MASK_HEAD.CONV_DIM", "128",
                "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "500", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "300",
                "MODEL.RPN.PRE_NMS_TOPK_TEST", "300", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
                "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                "TEST.DETECTIONS_PER_IMAGE", "20"]
SEM_SEG_KEYS = ["sem_seg/IoU", "sem_seg/iIoU", "sem_seg/IoU_sup", "sem_seg/iIoU_sup", "sem_seg/IoU-road",
                "sem_seg/IoU-bicycle", "sem_seg/IoU_sup-vehicle"]
SEGM_KEYS = ["segm/AP", "segm/AP50", "segm/AP-car", "segm/AP50-person"]


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    generate_cityscapes_fixture(str(root / "cityscapes"))
    return root


def instant_run(config, datasets_root, out_dir, *opts):
    res = run_tool([TRAIN_NET, "--config-file", config, *INSTANT, *opts, "OUTPUT_DIR", out_dir],
                   env={"DETECTRON2_DATASETS": str(datasets_root)})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    with open(out_dir / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    losses = [m["total_loss"] for m in metrics if "total_loss" in m]
    assert len(losses) >= 1 and all(math.isfinite(x) for x in losses)
    assert max(m["iteration"] for m in metrics if "total_loss" in m) == 3
    return metrics[-1], res.stdout + res.stderr


def test_unet_cityscapes_config(datasets_root, tmp_path):
    final, log = instant_run(CONFIGS / "Cityscapes-SemanticSegmentation" / "unet_R_50_bs8_90k.yaml", datasets_root,
                             tmp_path, "INPUT.CROP.SIZE", "(64,128)")
    for key in SEM_SEG_KEYS:
        assert key in final and 0 <= final[key] <= 100, key
    assert "copypaste: IoU,iIoU,IoU_sup,iIoU_sup" in log
    results = tmp_path / "inference" / "seg_d2_cityscapes_fine_sem_seg_val" / "cityscapes_sem_seg_results"
    assert len(list(results.rglob("*_pred.png"))) == 4  # official-format predictions, one per val image


def test_mask_rcnn_variant_cityscapes_config(datasets_root, tmp_path):
    final, log = instant_run(CONFIGS / "Cityscapes-InstanceSegmentation" / "mask_rcnn_light_boundary_R_50_FPN_bs8_24k.yaml",
                             datasets_root, tmp_path, *RCNN_INSTANT)
    for key in SEGM_KEYS:
        assert key in final and 0 <= final[key] <= 100, key
    assert "copypaste: AP,AP50" in log
    results = tmp_path / "inference" / "seg_d2_cityscapes_fine_instance_seg_val" / "cityscapes_instance_results"
    assert len(list(results.rglob("*_pred.txt"))) == 4


# detectron2's stock models on the same datasets: its own DatasetMapper reads the trainId maps, and
# its Mask R-CNN uses INPUT.MASK_FORMAT "bitmask" (the shapes base config) on the polygon annotations.

def test_stock_detectron2_mask_rcnn(datasets_root, tmp_path):
    final, _ = instant_run(CONFIGS / "Shapes-InstanceSegmentation" / "Base-Shapes-RCNN.yaml", datasets_root, tmp_path,
                           "DATASETS.TRAIN", "('seg_d2_cityscapes_fine_instance_seg_train',)",
                           "DATASETS.TEST", "('seg_d2_cityscapes_fine_instance_seg_val',)",
                           "MODEL.ROI_HEADS.NUM_CLASSES", "8", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
    for key in SEGM_KEYS:
        assert key in final and 0 <= final[key] <= 100, key


def test_stock_detectron2_semantic_fpn(datasets_root, tmp_path):
    from seg_d2.model_zoo import get_detectron2_config_file

    final, _ = instant_run(get_detectron2_config_file("Misc/semantic_R_50_FPN_1x.yaml"), datasets_root, tmp_path,
                           "DATASETS.TRAIN", "('seg_d2_cityscapes_fine_sem_seg_train',)",
                           "DATASETS.TEST", "('seg_d2_cityscapes_fine_sem_seg_val',)",
                           "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "19", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", "255",
                           "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
                           "MODEL.RESNETS.NORM", "BN", "MODEL.RESNETS.STRIDE_IN_1X1", "False")
    for key in SEM_SEG_KEYS:
        assert key in final and 0 <= final[key] <= 100, key


def test_panoptic_cityscapes_config(datasets_root, tmp_path):
    """PanopticFPN (U-Net stuff + Mask R-CNN) on the fixture's createPanopticImgs ground truth, evaluated by
    cityscapesscripts' evalPanopticSemanticLabeling."""
    final, log = instant_run(CONFIGS / "Cityscapes-PanopticSegmentation" / "panoptic_unet_R_50_FPN_bs8_24k.yaml",
                             datasets_root, tmp_path, *RCNN_INSTANT, "MODEL.SEM_SEG_HEAD.NORM", "BN",
                             "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[64, 32, 32, 16, 16]",
                             "MODEL.RESNET_UNET.FULL_RES_CHANNELS", "8", "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT", "16")
    for key in ("panoptic_seg/PQ", "panoptic_seg/PQ_th", "panoptic_seg/PQ_st", "sem_seg/mIoU"):
        assert key in final and 0 <= final[key] <= 100, key
    inference = tmp_path / "inference" / "seg_d2_cityscapes_fine_panoptic_val"
    official = json.loads((inference / "cityscapes_panoptic_results.json").read_text())
    assert final["panoptic_seg/PQ"] == pytest.approx(100 * official["All"]["pq"])
