"""LazyConfig twins of the yaml recipes (same model, same outputs) and tools/lazyconfig_train_net.py."""
import importlib.util
import json

import pytest
import torch

from tests.conftest import REPO, run_tool

TRAIN = REPO / "tools" / "lazyconfig_train_net.py"
TWINS = {  # yaml recipe -> its LazyConfig twin (same path, .py)
    "unet_R_50": "configs/Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it",
    "fcn8s_R_50": "configs/Shapes-SemanticSegmentation/fcn8s_R_50_scratch_bs8_600it",
    "bmask_rcnn_R_18": "configs/Shapes-InstanceSegmentation/bmask_rcnn_R_18_FPN_scratch_bs4_600it",
    "mask_rcnn_light_boundary_R_18":
        "configs/Shapes-InstanceSegmentation/mask_rcnn_light_boundary_R_18_FPN_scratch_bs4_600it",
}


def _yaml_model(path):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    import seg_d2  # noqa: F401
    from seg_d2 import add_seg_d2_config

    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def _lazy_model(path, device="cpu"):
    from detectron2.config import LazyConfig, instantiate

    return instantiate(LazyConfig.load(str(path)).model).to(device)


def _one_input(instance: bool):
    """A training input (image and ground truth) of the shapes val set, without augmentation."""
    from detectron2.data import DatasetCatalog, DatasetMapper

    from seg_d2.data import SemSegDatasetMapper

    if instance:
        mapper = DatasetMapper(is_train=True, augmentations=[], image_format="BGR", use_instance_mask=True,
                               instance_mask_format="bitmask")
        return mapper(DatasetCatalog.get("seg_d2_shapes_val")[0])
    mapper = SemSegDatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    return mapper(DatasetCatalog.get("seg_d2_shapes_sem_seg_val")[0])


@pytest.mark.parametrize("name", sorted(TWINS))
def test_twin_builds_the_same_model(name):
    """Same modules and parameters; with the same weights, the same inference outputs and training
    losses (same seed: same RoI sampling) on the same input."""
    from detectron2.utils.events import EventStorage

    torch.manual_seed(0)  # the random init, whatever ran before in this process (a model that detects nothing
    # compares nothing); then both models hold the same weights
    yaml_model = _yaml_model(REPO / f"{TWINS[name]}.yaml")
    lazy_model = _lazy_model(REPO / f"{TWINS[name]}.py")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(lazy_model) == count(yaml_model)
    ys, ls = yaml_model.state_dict(), lazy_model.state_dict()
    assert list(ls) == list(ys) and all(ls[k].shape == ys[k].shape for k in ys)
    assert str(lazy_model) == str(yaml_model)
    if hasattr(yaml_model, "roi_heads"):
        assert lazy_model.roi_heads.train_on_pred_boxes == yaml_model.roi_heads.train_on_pred_boxes
    lazy_model.load_state_dict(ys)

    x = _one_input(instance="rcnn" in name)
    with torch.no_grad():
        yaml_model.eval(), lazy_model.eval()
        a, b = yaml_model([x])[0], lazy_model([x])[0]
    if "sem_seg" in a:
        assert a["sem_seg"].shape[-2:] == (x["height"], x["width"]) and torch.equal(a["sem_seg"], b["sem_seg"])
    else:
        ia, ib = a["instances"], b["instances"]
        assert len(ia) == len(ib) > 0
        for field in ("pred_classes", "scores", "pred_masks"):
            assert torch.equal(ia.get(field), ib.get(field)), field
        assert torch.equal(ia.pred_boxes.tensor, ib.pred_boxes.tensor)
    yaml_model.train(), lazy_model.train()
    with EventStorage():
        torch.manual_seed(0)
        la = yaml_model([x])
        torch.manual_seed(0)
        lb = lazy_model([x])
    assert sorted(la) == sorted(lb) and all(torch.equal(la[k], lb[k]) for k in la), (la, lb)


def test_save_and_to_py(tmp_path):
    """LazyConfig.save writes a yaml that loads back to the same model; to_py (black) works."""
    from detectron2.config import LazyConfig, instantiate

    import black  # noqa: F401  (pinned in requirements/base.txt: LazyConfig.to_py needs it)

    path = REPO / f"{TWINS['bmask_rcnn_R_18']}.py"
    cfg = LazyConfig.load(str(path))
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    assert not (tmp_path / "config.yaml.pkl").exists()  # saved as yaml, not pickled
    again = LazyConfig.load(str(tmp_path / "config.yaml"))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(instantiate(again.model)) == count(instantiate(cfg.model))
    assert again.dataloader.evaluator.output_dir == cfg.dataloader.evaluator.output_dir
    code = LazyConfig.to_py(cfg)
    compile(code, "to_py", "exec")
    assert "BoundaryROIHeads" in code and "BoundaryPreservingHead" in code


def test_train_and_evaluate(tmp_path):
    """A few iterations of the FCN twin on the shapes data, evaluated (at a small test size), then the
    demo on the result through the same LazyConfig."""
    out = tmp_path / "run"
    res = run_tool([
        TRAIN, "--config-file", REPO / f"{TWINS['fcn8s_R_50']}.py",
        "train.max_iter=1", "train.log_period=1", f"train.output_dir={out}",
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0", "dataloader.test.num_workers=0",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[96]",
        "dataloader.test.mapper.augmentations=[{_target_:detectron2.data.transforms.ResizeShortestEdge,"
        "short_edge_length:48,max_size:64}]",
    ])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "copypaste: mIoU,fwIoU,mACC,pACC,mDice,mBoundaryIoU" in res.stdout + res.stderr
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in r for r in rows) and any("sem_seg/mIoU" in r for r in rows)
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
    assert (out / "inference" / "seg_d2_shapes_sem_seg_val" / "sem_seg_predictions.json").is_file()

    spec = importlib.util.spec_from_file_location("seg_d2_tools_demo_lazy", REPO / "tools" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    import cv2
    from detectron2.data import DatasetCatalog

    image = DatasetCatalog.get("seg_d2_shapes_sem_seg_val")[0]["file_name"]
    h, w = cv2.imread(image).shape[:2]
    args = demo.get_parser().parse_args([
        "--config-file", str(REPO / f"{TWINS['fcn8s_R_50']}.py"), "--input", str(image),
        "--output", str(tmp_path / "demo"), "--opts", f"train.init_checkpoint={out / 'model_final.pth'}",
    ])
    (rec,) = demo.main(args)
    assert sum(rec["pixels"].values()) == h * w
    assert set(rec["pixels"]) <= {"background", "circle", "square", "triangle", "star"}


def test_eval_only_needs_weights(tmp_path):
    spec = importlib.util.spec_from_file_location("seg_d2_tools_lazyconfig_train_net", TRAIN)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.default_argument_parser().parse_args([
        "--config-file", str(REPO / f"{TWINS['fcn8s_R_50']}.py"), "--eval-only", f"train.output_dir={tmp_path}"])
    with pytest.raises(SystemExit, match="train.init_checkpoint is empty"):
        tool.main(args)
    args.opts = [f"train.output_dir={tmp_path}", f"train.init_checkpoint={tmp_path / 'none.pth'}"]
    with pytest.raises(SystemExit, match=f"Weights file not found: {tmp_path / 'none.pth'}"):
        tool.main(args)
