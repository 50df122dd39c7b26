#!/usr/bin/env python
"""CPU RoI ops and CPU Mask R-CNN training speed: seg_d2_ops (from this checkout) vs torchvision.

1. Ops, at the shapes of detectron2's R-50-FPN poolers on an 800x1216 image pair: ``roi_align``
   (box pooler 7x7 over p2-p5 with 512 RoIs per image, mask pooler 14x14 with 128), and
   ``roi_align_rotated_forward/backward`` at angle 0, against torchvision's ``roi_align`` (which
   computes the same thing there); forward, and forward + backward.
2. Training s/iter of Mask R-CNN R-50-FPN and BMask R-CNN R-50-FPN on the shapes dataset and on the
   real aerial buildings (``../shared/data/make_real_buildings.py``, built when missing), with
   detectron2's ``ROIAlign`` running torchvision's op or seg_d2_ops' CPU path (the switch is
   ``detectron2.layers.roi_align._CPU_ROI_ALIGN``); the two alternate iteration by iteration in one
   process, on the same batches, so that machine load hits both alike.

Usage: python benchmarks/bench_roi_ops.py [--threads 2] [--repeat 3] [--iters 3]
           [--datasets shapes,real_buildings] [--skip-models] [--skip-ops]
"""
import argparse
import importlib
import itertools
import os
import statistics
import sys
import time

import torch
from torchvision.ops import roi_align as tv_roi_align

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the ops from source
import seg_d2_ops  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_bmask  # noqa: E402  (the real buildings set: built and registered once, there)


def timeit(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fpn_rois(gen, per_image, canonical=224.0):
    """Boxes like a trained RPN's proposals on an 800x1216 image pair, split by FPN level as
    detectron2's ROIPooler assigns them: {level: (stride, [K, 5] boxes)}."""
    k = 2 * per_image
    side = torch.exp(torch.rand(k, generator=gen) * (torch.log(torch.tensor(600.0)) - torch.log(torch.tensor(24.0)))) * 24
    aspect = torch.exp((torch.rand(k, generator=gen) - 0.5) * 2.2)
    wh = torch.stack([side * aspect.sqrt(), side / aspect.sqrt()], 1)
    ctr = torch.rand(k, 2, generator=gen) * torch.tensor([1216.0, 800.0])
    batch = torch.arange(k).div(per_image, rounding_mode="floor").float()[:, None]
    boxes = torch.cat([batch, ctr - wh / 2, ctr + wh / 2], 1)
    level = torch.floor(4 + torch.log2(side / canonical + 1e-8)).clamp(2, 5).long()
    return {lvl: (2**lvl, boxes[level == lvl]) for lvl in range(2, 6) if bool((level == lvl).any())}


def bench_ops(repeat, gen):
    channels = 256
    feats = {lvl: torch.randn(2, channels, 800 // 2**lvl, 1216 // 2**lvl, generator=gen) for lvl in range(2, 6)}
    rows = []
    for name, per_image, size in (("box pooler 7x7", 512, 7), ("mask pooler 14x14", 128, 14)):
        levels = fpn_rois(gen, per_image)

        def run(fn, backward):
            def step():
                for lvl, (stride, boxes) in levels.items():
                    x = feats[lvl].requires_grad_(backward)
                    out = fn(x, boxes, (size, size), 1.0 / stride, 0, True)
                    if backward:
                        torch.autograd.grad(out, x, torch.ones_like(out))
            return step

        for backward in (False, True):
            # ours first and last, torchvision in between: load drift hits both
            ours = timeit(run(seg_d2_ops.roi_align, backward), repeat)
            ref = timeit(run(tv_roi_align, backward), repeat)
            ours = min(ours, timeit(run(seg_d2_ops.roi_align, backward), repeat))
            rows.append((f"roi_align {name} {'fwd+bwd' if backward else 'fwd'}", ours, ref))

        def rotated(backward):
            def step():
                for lvl, (stride, boxes) in levels.items():
                    x = feats[lvl]
                    wh = boxes[:, 3:] - boxes[:, 1:3]
                    rois = torch.cat([boxes[:, :1], boxes[:, 1:3] + wh / 2, wh, torch.zeros(len(boxes), 1)], 1)
                    out = seg_d2_ops.roi_align_rotated_forward(x, rois, 1.0 / stride, size, size, 0)
                    if backward:
                        seg_d2_ops.roi_align_rotated_backward(torch.ones_like(out), rois, 1.0 / stride, size, size,
                                                              *x.shape, 0)
            return step

        for backward in (False, True):
            ours = timeit(rotated(backward), repeat)
            ref = timeit(run(tv_roi_align, backward), repeat)
            rows.append((f"roi_align_rotated @0deg {name} {'fwd+bwd' if backward else 'fwd'}", ours, ref))
    return rows


def bench_models(iters, threads, datasets):
    from detectron2.data import build_detection_train_loader
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from seg_d2 import get_cfg

    roi_align_module = importlib.import_module("detectron2.layers.roi_align")
    fast = roi_align_module._CPU_ROI_ALIGN
    if fast is None:
        raise SystemExit("detectron2.layers.ROIAlign has no CPU fast path: provision with tools/install_detectron2.py")
    variants = {
        "Mask R-CNN R-50-FPN": os.path.join(REPO, "configs", "Base-RCNN-FPN.yaml"),
        "BMask R-CNN R-50-FPN": os.path.join(REPO, "configs", "COCO-InstanceSegmentation", "bmask_rcnn_R_50_FPN_1x.yaml"),
    }
    # the shapes, overridden by bench_bmask's options of each dataset; both are resized to the same 320 px
    shapes_opts = ["DATASETS.TRAIN", "('seg_d2_shapes_train',)", "MODEL.ROI_HEADS.NUM_CLASSES", "4"]
    if "real_buildings" in datasets:
        bench_bmask.prepare_real_buildings()
        bench_bmask.register_real_buildings()
    rows = []
    for (name, path), dataset in itertools.product(variants.items(), datasets):
        cfg = get_cfg()
        cfg.merge_from_file(path)
        cfg.merge_from_list([
            "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.MASK_ON", "True", "MODEL.RESNETS.DEPTH", "50",
            *shapes_opts, *bench_bmask.DATASETS[dataset], "INPUT.MASK_FORMAT", "bitmask",
            "INPUT.MIN_SIZE_TRAIN", "(320,)", "INPUT.MAX_SIZE_TRAIN", "480",
            "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0",
            "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0",  # random init: FrozenBN overflows
        ])
        torch.manual_seed(0)
        model = build_model(cfg)
        model.train()
        # lr 0: both implementations time the same weights (a full SGD step is still taken)
        opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
        loader = iter(build_detection_train_loader(cfg))
        batches = [next(loader) for _ in range(iters + 1)]
        times = {"torchvision": [], "seg_d2_ops": []}

        def step(batch, impl):
            roi_align_module._CPU_ROI_ALIGN = fast if impl == "seg_d2_ops" else None
            t0 = time.perf_counter()
            loss = sum(model(batch).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            return time.perf_counter() - t0

        with EventStorage(0):  # the ROI heads log to it
            step(batches[0], "seg_d2_ops"), step(batches[0], "torchvision")  # warm-up
            for i, batch in enumerate(batches[1:]):
                order = ("torchvision", "seg_d2_ops") if i % 2 == 0 else ("seg_d2_ops", "torchvision")
                for impl in order:
                    times[impl].append(step(batch, impl))
        roi_align_module._CPU_ROI_ALIGN = fast
        ref, ours = statistics.median(times["torchvision"]), statistics.median(times["seg_d2_ops"])
        rows.append((f"{name} {dataset} train s/iter (bs 2, {threads} thr)", ours, ref))
        print(f"  {name} on {dataset}: torchvision {['%.2f' % t for t in times['torchvision']]} s, "
              f"seg_d2_ops {['%.2f' % t for t in times['seg_d2_ops']]} s", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3, help="timed training iterations per implementation")
    parser.add_argument("--datasets", default="shapes,real_buildings", help="training data of the model timings")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--skip-ops", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO, "datasets"))
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, seg_d2_ops from "
          f"{os.path.dirname(seg_d2_ops.__file__)}; ratio = torchvision time / ours (> 1: ours faster)")
    header = f"{'':62s} {'ours':>9s} {'torchvision':>12s} {'speed-up':>9s}"
    print(header)

    def show(rows, unit, scale):
        for name, ours, ref in rows:
            print(f"{name:62s} {ours * scale:8.2f}{unit:2s} {ref * scale:10.2f}{unit:2s} {ref / ours:8.2f}x", flush=True)

    if not args.skip_ops:
        show(bench_ops(args.repeat, torch.Generator().manual_seed(0)), "ms", 1e3)
    if not args.skip_models:
        show(bench_models(args.iters, args.threads, args.datasets.split(",")), "s", 1.0)


if __name__ == "__main__":
    main()
