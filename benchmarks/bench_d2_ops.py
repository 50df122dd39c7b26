#!/usr/bin/env python
"""Time seg_d2_ops (detectron2._C's pure-PyTorch ops, from source) against torchvision, in one run.

Each rotated op is run at angle 0, where torchvision's axis-aligned op computes the same thing,
so the ratio is the price of the rotated (general) code path. Deformable convolution compares
the _C entry points (as detectron2's layers call them) with torchvision.ops.deform_conv2d.

Usage: python benchmarks/bench_d2_ops.py [--device cpu|cuda] [--repeat 5] [--threads N]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.ops import box_iou, deform_conv2d, nms, roi_align

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the ops from this checkout's source
import seg_d2_ops as _C  # noqa: E402  (what detectron2._C re-exports)


def timeit(fn, device, repeat):
    """Median wall time of ``fn()`` over ``repeat`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_boxes(n, gen, device, span=1000.0, size=(8.0, 120.0)):
    """(rotated boxes at angle 0, the same as x1y1x2y2, scores)."""
    xy = torch.rand(n, 2, generator=gen) * span
    wh = torch.rand(n, 2, generator=gen) * (size[1] - size[0]) + size[0]
    rotated = torch.cat([xy, wh, torch.zeros(n, 1)], 1).to(device)
    xyxy = torch.cat([xy - wh / 2, xy + wh / 2], 1).to(device)
    return rotated, xyxy, torch.rand(n, generator=gen).to(device)


def bench_box_iou(device, repeat, gen):
    rows = []
    for n in (500, 2000):
        rotated, xyxy, _ = random_boxes(n, gen, device, span=400.0)
        ours = timeit(lambda: _C.box_iou_rotated(rotated, rotated), device, repeat)
        ref = timeit(lambda: box_iou(xyxy, xyxy), device, repeat)
        rows.append((f"box_iou_rotated @0deg  {n}x{n}", ours, "torchvision box_iou", ref))
    return rows


def bench_nms(device, repeat, gen):
    rows = []
    for n in (1000, 5000):
        rotated, xyxy, scores = random_boxes(n, gen, device)
        assert torch.equal(_C.nms_rotated(rotated, scores, 0.5), nms(xyxy, scores, 0.5))
        ours = timeit(lambda: _C.nms_rotated(rotated, scores, 0.5), device, repeat)
        ref = timeit(lambda: nms(xyxy, scores, 0.5), device, repeat)
        rows.append((f"nms_rotated @0deg  N={n}", ours, "torchvision nms", ref))
    return rows


def bench_roi_align(device, repeat, gen):
    rows = []
    feat = torch.randn(2, 256, 100, 152, generator=gen).to(device)  # stride-4 map of an 800x1216 image
    rotated, xyxy, _ = random_boxes(512, gen, device, span=600.0, size=(16.0, 256.0))
    batch = torch.randint(0, 2, (512, 1), generator=gen).float().to(device)
    rois, boxes = torch.cat([batch, rotated], 1), torch.cat([batch, xyxy], 1)
    for sr in (2, 0):
        ours = timeit(lambda: _C.roi_align_rotated_forward(feat, rois, 0.25, 7, 7, sr), device, repeat)
        ref = timeit(lambda: roi_align(feat, boxes, (7, 7), 0.25, sr, aligned=True), device, repeat)
        rows.append((f"roi_align_rotated fwd @0deg  512 rois, sr={sr}", ours, "torchvision roi_align", ref))
        grad = torch.randn(512, 256, 7, 7, generator=gen).to(device)

        def ours_both():
            _C.roi_align_rotated_forward(feat, rois, 0.25, 7, 7, sr)
            _C.roi_align_rotated_backward(grad, rois, 0.25, 7, 7, 2, 256, 100, 152, sr)

        leaf = feat.clone().requires_grad_()

        def ref_both():
            torch.autograd.grad(roi_align(leaf, boxes, (7, 7), 0.25, sr, aligned=True), leaf, grad)

        rows.append(
            (
                f"roi_align_rotated fwd+bwd @0deg  sr={sr}",
                timeit(ours_both, device, repeat),
                "roi_align fwd+bwd",
                timeit(ref_both, device, repeat),
            )
        )
    return rows


def bench_deform(device, repeat, gen):
    n, c, h, w = 2, 64, 50, 76
    x = torch.randn(n, c, h, w, generator=gen).to(device)
    weight = torch.randn(64, c, 3, 3, generator=gen).to(device)
    bias = torch.randn(64, generator=gen).to(device)
    offset = torch.randn(n, 18, h, w, generator=gen).to(device)
    mask = torch.rand(n, 9, h, w, generator=gen).to(device)
    out = x.new_empty(n, 64, h, w)
    empty = x.new_empty(0)
    go = torch.randn(n, 64, h, w, generator=gen).to(device)

    def v1_fwd():
        _C.deform_conv_forward(x, weight, offset, out, empty, empty, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 64)

    def v2_fwd():
        _C.modulated_deform_conv_forward(
            x, weight, bias, empty, offset, mask, out, empty, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, True
        )

    def v1_bwd():  # what detectron2's _DeformConv.backward calls
        gi, goff, gw = torch.zeros_like(x), torch.zeros_like(offset), torch.zeros_like(weight)
        _C.deform_conv_backward_input(x, offset, go, gi, goff, weight, empty, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 64)
        _C.deform_conv_backward_filter(x, offset, go, gw, empty, empty, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1.0, 64)

    def v2_bwd():
        grads = [torch.zeros_like(t) for t in (x, weight, bias, offset, mask)]
        _C.modulated_deform_conv_backward(
            x, weight, bias, empty, offset, mask, empty, *grads, go, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, True
        )

    leaves = [t.clone().requires_grad_() for t in (x, offset, weight, bias, mask)]

    def tv_v1_bwd():
        torch.autograd.grad(deform_conv2d(leaves[0], leaves[1], leaves[2], padding=1), leaves[:3], go)

    def tv_v2_bwd():
        torch.autograd.grad(
            deform_conv2d(leaves[0], leaves[1], leaves[2], leaves[3], padding=1, mask=leaves[4]), leaves, go
        )

    return [
        (
            "deform_conv fwd (v1) 2x64x50x76",
            timeit(v1_fwd, device, repeat),
            "deform_conv2d",
            timeit(lambda: deform_conv2d(x, offset, weight, padding=1), device, repeat),
        ),
        (
            "modulated_deform_conv fwd (v2)",
            timeit(v2_fwd, device, repeat),
            "deform_conv2d(mask)",
            timeit(lambda: deform_conv2d(x, offset, weight, bias, padding=1, mask=mask), device, repeat),
        ),
        (
            "deform_conv bwd input+filter (v1)",
            timeit(v1_bwd, device, repeat),
            "deform_conv2d fwd+bwd",
            timeit(tv_v1_bwd, device, repeat),
        ),
        (
            "modulated_deform_conv bwd (v2)",
            timeit(v2_bwd, device, repeat),
            "deform_conv2d fwd+bwd",
            timeit(tv_v2_bwd, device, repeat),
        ),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    print(
        f"torch {torch.__version__}, device {device}, CPU threads {torch.get_num_threads()}, "
        f"median of {args.repeat}, _C from {Path(_C.__file__).parent}"
    )
    print(f"{'op (ours)':48s} {'ours ms':>9s}  {'reference':24s} {'ref ms':>9s}  {'ratio':>7s}")
    for bench in (bench_box_iou, bench_nms, bench_roi_align, bench_deform):
        for name, ours, ref_name, ref in bench(device, args.repeat, gen):
            print(f"{name:48s} {ours * 1e3:9.2f}  {ref_name:24s} {ref * 1e3:9.2f}  {ours / ref:6.1f}x", flush=True)


if __name__ == "__main__":
    main()
