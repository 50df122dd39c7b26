"""The Cityscapes configs' SyncBN (detectron2's own ResNet too) on CPU: BN in one process, detectron2's
NaiveSyncBatchNorm over GLOO in several (torch's SyncBatchNorm needs CUDA there)."""
import socket

import torch
from torch import nn

import detectron2.utils.comm as comm
from detectron2.engine.launch import _distributed_worker
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.modeling import build_model

import seg_d2
from tests.conftest import REPO

CONFIG = REPO / "configs" / "Cityscapes-SemanticSegmentation" / "unet_R_50_bs8_90k.yaml"


def cityscapes_cfg():
    cfg = seg_d2.get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 18, 64  # time: the recipe's norms, a ResNet-18
    return seg_d2.apply_cpu_fallback(cfg)


def train_step(model, seed):
    """One forward/backward on a 64x128 image; returns the loss."""
    g = torch.Generator().manual_seed(seed)
    batch = [{"image": torch.randint(0, 256, (3, 64, 128), generator=g, dtype=torch.uint8),
              "sem_seg": torch.randint(0, 19, (64, 128), generator=g)}]
    losses = model(batch)
    total = sum(losses.values())
    total.backward()
    return total


def test_single_process_uses_bn(tmp_path):
    cfg = cityscapes_cfg()
    assert cfg.MODEL.RESNETS.NORM == "BN" and cfg.MODEL.SEM_SEG_HEAD.NORM == "BN"
    model = build_model(cfg).train()
    assert not [m for m in model.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert torch.isfinite(train_step(model, 0))
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)


def _worker(out_dir):
    torch.set_num_threads(1)  # a forked process: leave the parent's OpenMP pool alone
    cfg = cityscapes_cfg()
    torch.manual_seed(0)  # the same initial weights in both processes
    model = build_model(cfg).train()
    conv1 = model.backbone.resnet.stem.conv1
    inputs = []
    conv1.register_forward_hook(lambda module, args, output: inputs.append(args[0].detach()))
    loss = train_step(model, seed=comm.get_rank())  # different images in each process
    assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN" and cfg.MODEL.SEM_SEG_HEAD.NORM == "naiveSyncBN"
    assert isinstance(conv1.norm, NaiveSyncBatchNorm)
    torch.save({"loss": loss.detach(), "running_mean": conv1.norm.running_mean.clone(), "input": inputs[0],
                "weight": conv1.weight.detach(), "momentum": conv1.norm.momentum},
               f"{out_dir}/rank{comm.get_rank()}.pt")


def test_two_cpu_processes_use_naive_sync_bn(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # detectron2's launch() workers, forked rather than spawned: the same GLOO set-up without re-importing
    torch.multiprocessing.start_processes(
        _distributed_worker, nprocs=2, start_method="fork",
        args=(_worker, 2, 2, 0, f"tcp://127.0.0.1:{port}", (str(tmp_path),)))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.isfinite(r0["loss"]) and torch.isfinite(r1["loss"])
    # the statistics are those of the two processes' batches together (plain BN math on both inputs)
    conv = [torch.nn.functional.conv2d(r["input"], r["weight"], stride=2, padding=3) for r in (r0, r1)]
    expected = r0["momentum"] * torch.cat(conv).mean(dim=(0, 2, 3))
    assert torch.allclose(r0["running_mean"], expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(r1["running_mean"], expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(r0["momentum"] * conv[0].mean(dim=(0, 2, 3)), expected, rtol=1e-3)
