"""Each fix that tools/install_detectron2.py applies to detectron2 v0.6 (tools/detectron2_patches.py),
tested through detectron2's public behaviour; each test fails on the unpatched v0.6 code."""
import importlib
import sys
import tempfile

import numpy as np
import pytest
import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

from tests.conftest import provisioned_only, run_tool

pytestmark = provisioned_only


def test_pillow10_extent_transform_default_interp():
    # v0.6: `interp=Image.LINEAR` raised AttributeError at import with Pillow >= 10.
    from detectron2.data.transforms import ExtentTransform

    img = np.arange(100, dtype=np.uint8).reshape(10, 10)
    out = ExtentTransform(src_rect=(0, 0, 10, 10), output_size=(5, 5)).apply_image(img)
    assert out.shape == (5, 5)


def test_model_zoo_without_pkg_resources(monkeypatch):
    # v0.6 imported pkg_resources, which setuptools >= 81 no longer ships.
    monkeypatch.setitem(sys.modules, "pkg_resources", None)
    import detectron2.model_zoo.model_zoo as mz

    mz = importlib.reload(mz)
    path = mz.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml")
    assert path.endswith("mask_rcnn_R_50_FPN_1x.yaml")
    assert mz.get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml").MODEL.MASK_ON


def test_export_imports_without_caffe2():
    # v0.6's export/__init__ imported caffe2 (removed from torch) unconditionally.
    from detectron2.export import TracingAdapter, scripting_with_instances  # noqa: F401

    model = nn.Linear(3, 2)
    adapter = TracingAdapter(model, torch.ones(1, 3))
    traced = torch.jit.trace(adapter, adapter.flattened_inputs)
    x = torch.randn(4, 3)
    torch.testing.assert_close(traced(x)[0], model(x))


def test_mapdataset_fallback_on_python311():
    # v0.6 called random.sample() on a set, a TypeError on Python >= 3.11.
    from detectron2.data.common import MapDataset

    ds = MapDataset(list(range(8)), lambda x: None if x in (0, 1) else x * 10)
    out = ds[0]
    assert out in {20, 30, 40, 50, 60, 70}


def test_numpy2_removed_aliases():
    # v0.6 used np.int / np.float / np.str, removed in NumPy >= 1.24 (e.g. in the class histogram
    # printed by every training run and in SemSegEvaluator).
    from detectron2.data.build import print_instances_class_histogram
    from detectron2.structures.masks import polygons_to_bitmask

    dicts = [{"annotations": [{"category_id": 0}, {"category_id": 1}, {"category_id": 1}]}]
    print_instances_class_histogram(dicts, ["a", "b"])
    mask = polygons_to_bitmask([np.array([0, 0, 8, 0, 8, 8, 0, 8], dtype=float)], 10, 10)
    assert mask.dtype == bool and mask.sum() == 64


class _LinearModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.mod = nn.Linear(10, 20)

    def forward(self, x):
        return {"loss": x.sum() + sum(p.mean() for p in self.parameters())}


def _data():
    while True:
        yield torch.rand(3, 3)


def test_resume_keeps_torch_lr_scheduler_state():
    # v0.6 saved scheduler state only for `_LRScheduler` subclasses; torch 2.x schedulers derive
    # from `LRScheduler`, so resume silently restarted the schedule.
    from detectron2.engine import SimpleTrainer, hooks

    model = _LinearModel()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 3)
    with tempfile.TemporaryDirectory() as d:
        trainer = SimpleTrainer(model, _data(), opt)
        checkpointer = Checkpointer(model, d, opt=opt, trainer=trainer)
        trainer.register_hooks([hooks.LRScheduler(scheduler=scheduler), hooks.PeriodicCheckpointer(checkpointer, 10)])
        trainer.train(0, 12)
        assert scheduler.last_epoch == 12

        opt = torch.optim.SGD(model.parameters(), 999)
        trainer = SimpleTrainer(model, _data(), opt)
        scheduler = torch.optim.lr_scheduler.StepLR(opt, 3)
        trainer.register_hooks([hooks.LRScheduler(scheduler=scheduler)])
        Checkpointer(model, d, opt=opt, trainer=trainer).resume_or_load("non_exist.pth")
        assert trainer.iter == 11
        assert scheduler.last_epoch == 12
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)


LAUNCH_SCRIPT = """
import os, sys
import torch.distributed as dist
from detectron2.engine import launch
from detectron2.utils import comm

def work(out_dir):
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}"), "w") as f:
        f.write(f"{comm.get_world_size()} {dist.get_backend()} {comm.get_local_rank()}")
    comm.synchronize()

if __name__ == "__main__":
    launch(work, 2, dist_url="auto", args=(sys.argv[1],))
"""


def test_launch_two_cpu_processes_over_gloo(tmp_path):
    # v0.6 asserted CUDA and used NCCL, so there was no multi-process run without a GPU.
    script = tmp_path / "launch_two.py"
    script.write_text(LAUNCH_SCRIPT)
    res = run_tool([script, tmp_path], env={"CUDA_VISIBLE_DEVICES": ""}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.read_text() for p in tmp_path.glob("rank*")) == ["2 gloo 0", "2 gloo 1"]


def test_create_ddp_model_on_cpu_modules(monkeypatch):
    # v0.6 always passed device_ids=[local_rank], which DDP rejects for CPU modules.
    from detectron2.engine import defaults

    captured = {}

    class FakeDDP:
        def __init__(self, module, **kwargs):
            captured.update(kwargs)

    monkeypatch.setattr(defaults.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(defaults, "DistributedDataParallel", FakeDDP)
    defaults.create_ddp_model(nn.Linear(2, 2), broadcast_buffers=False)
    assert "device_ids" not in captured



@pytest.mark.parametrize("fast_cocoeval", [True, False])
def test_coco_evaluator_matches_pycocotools_with_and_without_fast_cocoeval(tmp_path, monkeypatch, fast_cocoeval):
    # With _C's fast COCOeval, or without it (then COCOEvaluator falls back to pycocotools' COCOeval),
    # COCOEvaluator gives pycocotools' numbers.
    import json

    import detectron2.evaluation.coco_evaluation as coco_evaluation

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from detectron2 import _C
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    rng = np.random.default_rng(0)
    images, anns, preds = [], [], []
    for img_id in range(1, 6):
        images.append({"id": img_id, "width": 100, "height": 100, "file_name": f"{img_id}.png"})
        for k in range(3):
            x, y = rng.uniform(0, 60, size=2)
            w, h = rng.uniform(10, 35, size=2)
            cat = int(rng.integers(1, 3))
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            jitter = rng.normal(0, 3, size=4)
            preds.append((img_id, [x + jitter[0], y + jitter[1], x + w + jitter[2], y + h + jitter[3]],
                          float(rng.uniform(0.3, 1)), cat - 1))
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    if not fast_cocoeval:
        monkeypatch.setattr(_C, "HAS_FAST_COCOEVAL", False, raising=False)

        def fail(*args, **kwargs):
            raise AssertionError("the fast COCOeval must not be used when _C lacks it")

        monkeypatch.setattr(coco_evaluation, "COCOeval_opt", fail)
    name = f"seg_d2_test_coco_eval_{tmp_path.name}"  # metadata is global: one name per test case
    MetadataCatalog.get(name).set(json_file=str(gt), thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
                                  thing_classes=["a", "b"])
    evaluator = COCOEvaluator(name, tasks=("bbox",), distributed=False)
    evaluator.reset()
    for img_id in range(1, 6):
        mine = [p for p in preds if p[0] == img_id]
        inst = Instances((100, 100), pred_boxes=Boxes(torch.tensor([p[1] for p in mine])),
                         scores=torch.tensor([p[2] for p in mine]), pred_classes=torch.tensor([p[3] for p in mine]))
        evaluator.process([{"image_id": img_id}], [{"instances": inst}])
    ours = evaluator.evaluate()["bbox"]

    coco_gt = COCO(str(gt))
    dets = [{"image_id": p[0], "category_id": p[3] + 1, "score": p[2],
             "bbox": [p[1][0], p[1][1], p[1][2] - p[1][0], p[1][3] - p[1][1]]} for p in preds]
    ref = COCOeval(coco_gt, coco_gt.loadRes(dets), "bbox")
    ref.evaluate(), ref.accumulate(), ref.summarize()
    assert ours["AP"] == pytest.approx(100 * ref.stats[0], abs=1e-6)
    assert ours["AP50"] == pytest.approx(100 * ref.stats[1], abs=1e-6)
    assert ours["AP75"] == pytest.approx(100 * ref.stats[2], abs=1e-6)
    assert 0 < ours["AP"] < 100


def test_roi_align_runs_the_fast_cpu_path(monkeypatch):
    # v0.6's ROIAlign always ran torchvision's scalar, single-threaded CPU kernel.
    from torchvision.ops import roi_align as tv_roi_align

    from detectron2.layers import ROIAlign

    roi_align_module = importlib.import_module("detectron2.layers.roi_align")  # not layers.roi_align, the function
    calls = []
    fast = roi_align_module._CPU_ROI_ALIGN

    def spy(*args):
        calls.append(args[0].device.type)
        return fast(*args)

    monkeypatch.setattr(roi_align_module, "_CPU_ROI_ALIGN", spy)
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 10, 12, generator=gen, requires_grad=True)
    boxes = torch.tensor([[0, 1.0, 2.0, 30.0, 25.0], [1, -4.0, 3.0, 17.0, 9.5]])
    pooler = ROIAlign((4, 3), spatial_scale=0.5, sampling_ratio=0, aligned=True)
    out = pooler(feat, boxes)
    assert calls == ["cpu"]
    expected = tv_roi_align(feat, boxes, (4, 3), 0.5, 0, True)
    assert torch.equal(out, expected)  # the forward is torchvision's; only the backward is the fast path's
    grad = torch.randn(out.shape, generator=gen)
    torch.testing.assert_close(torch.autograd.grad(out, feat, grad)[0], torch.autograd.grad(expected, feat, grad)[0],
                               atol=1e-5, rtol=0)
    # TorchScript compiles torchvision's op only (the CPU path is Python): the same output.
    scripted = torch.jit.script(pooler)
    assert torch.equal(scripted(feat, boxes), out)
    assert calls == ["cpu"]


def test_deform_conv_layers_call_torchvision_on_cpu(monkeypatch):
    # v0.6's DeformConv / ModulatedDeformConv raised NotImplementedError for CPU tensors.
    import torchvision.ops

    from detectron2 import _C
    from detectron2.layers import DeformConv, ModulatedDeformConv

    deform_module = importlib.import_module("detectron2.layers.deform_conv")

    seen = []
    real = torchvision.ops.deform_conv2d
    monkeypatch.setattr(sys.modules[_C.deform_conv.__module__], "deform_conv2d",
                        lambda *a, **k: seen.append(k.get("mask") is not None) or real(*a, **k))
    assert deform_module.deform_conv is _C.deform_conv
    torch.manual_seed(0)
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    dcn = DeformConv(2, 3, 3, padding=1)
    off = torch.zeros(1, 18, 6, 6, requires_grad=True)
    y = dcn(x, off)  # zero offsets: a plain convolution
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, dcn.weight, padding=1), atol=1e-5, rtol=0)
    y.sum().backward()
    assert x.grad is not None and off.grad is not None and dcn.weight.grad is not None
    mdcn = ModulatedDeformConv(2, 3, 3, padding=1)
    mdcn(x, off, torch.ones(1, 9, 6, 6)).sum().backward()
    assert seen == [False, True]
