#!/usr/bin/env python
"""U-Net R50 against detectron2's Semantic FPN R50 (SemSegFPNHead), in one run, on the same inputs.

Both models train from scratch with the same recipe (the shapes configs share data, mapper, solver,
seed; only the model differs), for the same number of iterations, then are evaluated on
``seg_d2_shapes_sem_seg_val``. Reported per model:

- train s/iter (median after warm-up) and inference s/img (mean over the val set, batch 1);
- peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak RSS of the process
  (each model runs in its own process, so the peaks are not mixed), and its growth over the RSS
  before the model was built;
- fvcore FLOPs per val image (fvcore counts one multiply-add as one flop) and the GFLOP/s achieved
  at inference; training GFLOP/s estimated as 3x the forward FLOPs per iteration;
- mIoU, mDice, mBoundaryIoU after training; and the U-Net / FPN ratios.

Usage: python benchmarks/bench_semseg.py [--iters 300] [--batch 8] [--threads 2] [--device cpu]

On a CPU shared with other jobs use ``--threads 1``: OpenMP threads on oversubscribed cores slow down
by up to 10x, and unevenly between the two models, which makes the timings meaningless.
"""
import argparse
import json
import multiprocessing as mp
import os
import queue
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    "unet_R_50": "configs/Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml",
    "semantic_fpn_R_50": "configs/Shapes-SemanticSegmentation/semantic_fpn_R_50_scratch_bs8_600it.yaml",
}


def _rss_mb() -> float:
    """Current RSS of this process, in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_one(name: str, args, out) -> None:
    """Train, time and evaluate one model; put a dict of results on ``out``."""
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DETECTRON2_DATASETS", str(REPO / "datasets"))
    import torch

    torch.set_num_threads(args.threads)
    import seg_d2  # noqa: F401
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.projects.deeplab import build_lr_scheduler
    from detectron2.solver import build_optimizer
    from detectron2.utils.analysis import FlopCountAnalysis
    from seg_d2 import add_seg_d2_config
    from seg_d2.data import build_test_loader, build_train_loader
    from seg_d2.evaluation import SemSegBoundaryEvaluator

    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(REPO / CONFIGS[name]))
    cfg.merge_from_list([
        "SOLVER.MAX_ITER", str(args.iters), "SOLVER.IMS_PER_BATCH", str(args.batch),
        "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", args.device, "SEED", "0",
    ])
    cfg.freeze()
    torch.manual_seed(0)
    cuda = args.device.startswith("cuda")
    rss0 = _rss_mb()
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    data = iter(build_train_loader(cfg))
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def sync():
        if cuda:
            torch.cuda.synchronize()

    model.train()
    times, losses = [], []
    for it in range(args.iters):
        batch = next(data)  # data loading is not timed
        sync()
        t0 = time.perf_counter()
        loss_dict = model(batch)
        loss = sum(loss_dict.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        sync()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
        if (it + 1) % max(1, args.iters // 10) == 0:
            print(f"[{name}] iter {it + 1}/{args.iters} loss {statistics.mean(losses[-20:]):.3f} "
                  f"{statistics.median(times[-20:]):.2f} s/iter", flush=True)
    train_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb()

    model.eval()
    dataset = cfg.DATASETS.TEST[0]
    evaluator = SemSegBoundaryEvaluator(dataset, distributed=False)
    evaluator.reset()
    inf_times, flops, sizes = [], {}, []
    with torch.no_grad():
        for inputs in build_test_loader(cfg, dataset):
            sync()
            t0 = time.perf_counter()
            outputs = model(inputs)
            sync()
            inf_times.append(time.perf_counter() - t0)
            evaluator.process(inputs, outputs)
            size = tuple(inputs[0]["image"].shape[-2:])
            sizes.append(size)
            if size not in flops:
                fca = FlopCountAnalysis(model, inputs)
                fca.unsupported_ops_warnings(False)
                fca.uncalled_modules_warnings(False)
                flops[size] = fca.total()
    mean_flops = statistics.mean(flops[s] for s in sizes)  # FLOPs of each val image at its input size
    res = evaluator.evaluate()["sem_seg"]
    s_iter, s_img = statistics.median(times[min(5, args.iters - 1):]), statistics.mean(inf_times)
    out.put({
        "model": name,
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "train_s_per_iter": s_iter,
        "infer_s_per_img": s_img,
        "peak_mem_MiB": train_peak if cuda else _peak_rss_mb(),
        "peak_mem_growth_MiB": None if cuda else _peak_rss_mb() - rss0,
        "GFLOPs_per_img": mean_flops / 1e9,
        "infer_GFLOP_per_s": mean_flops / 1e9 / s_img,
        "train_GFLOP_per_s_est": 3 * mean_flops * args.batch / 1e9 / s_iter,
        "final_loss": statistics.mean(losses[-20:]),
        "mIoU": res["mIoU"], "mDice": res["mDice"], "mBoundaryIoU": res["mBoundaryIoU"],
        "IoU_per_class": {k[4:]: v for k, v in res.items() if k.startswith("IoU-")},
    })


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    for name in CONFIGS:
        q = ctx.Queue()
        proc = ctx.Process(target=run_one, args=(name, args, q))
        proc.start()
        while name not in results:
            try:
                results[name] = q.get(timeout=5)
            except queue.Empty:
                if not proc.is_alive():
                    sys.exit(f"benchmark of {name} failed (exit code {proc.exitcode})")
        proc.join()
    u, f = results["unet_R_50"], results["semantic_fpn_R_50"]
    print(f"\nShapes semantic segmentation, {args.iters} iterations x batch {args.batch}, from scratch, "
          f"device {args.device}, {args.threads} threads")
    keys = ["params_M", "train_s_per_iter", "infer_s_per_img", "peak_mem_MiB", "peak_mem_growth_MiB",
            "GFLOPs_per_img", "infer_GFLOP_per_s", "train_GFLOP_per_s_est", "final_loss", "mIoU", "mDice",
            "mBoundaryIoU"]
    print(f"{'metric':<24}{'U-Net R50':>14}{'SemanticFPN R50':>18}{'ratio U/FPN':>14}")
    for k in keys:
        a, b = u[k], f[k]
        if a is None:
            continue
        print(f"{k:<24}{a:>14.3f}{b:>18.3f}{a / b if b else float('nan'):>14.3f}")
    for name, r in results.items():
        print(f"{name} IoU per class: " + ", ".join(f"{k} {v:.1f}" for k, v in r["IoU_per_class"].items()))
    if args.json:
        with open(args.json, "w") as fp:
            json.dump({"args": vars(args), "results": results}, fp, indent=1)


if __name__ == "__main__":
    main()
