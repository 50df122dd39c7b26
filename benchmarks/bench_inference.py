#!/usr/bin/env python
"""Benchmark: sliding-window inference of the Cityscapes U-Net R-50, batched windows and inference options.

One process, one random-init model (no download; speed does not depend on the weights), the same
weights in every variant, the same images. The reference is today's default: sliding windows one at a
time, float32, eager, contiguous. Variants (``--variants``):

- ``batch``: windows stacked ``--batch`` at a time (``TEST.SLIDING_WINDOW.BATCH_SIZE``);
- ``channels_last``: ``TEST.CHANNELS_LAST``;
- ``amp``: ``TEST.AMP`` (float16 on CUDA; bfloat16 on CPU, which is what seg_d2 runs there);
- ``compile``: ``TEST.COMPILE`` (inductor; its compilation time is printed apart, not in s/img);
- ``all``: all of the above together.

Variants are timed image by image in turn (reference, variant, reference, ...), after one warm-up image
each (one window; the whole image for ``all``), so that load on a shared machine hits them alike; both sides of every ratio come from this run.
Also printed: per variant, the share of pixels whose label equals the reference's and the largest
logit difference.

    python benchmarks/bench_inference.py [--images 3] [--size 1024x2048] [--window 512x1024]
        [--batch 8] [--threads 2] [--device cpu|cuda] [--variants batch,channels_last,amp,compile,all]
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "Cityscapes-SemanticSegmentation" / "unet_R_50_bs8_90k.yaml"
VARIANTS = {  # name -> options on top of the reference (sliding windows, batch 1)
    "batch": lambda a: ["TEST.SLIDING_WINDOW.BATCH_SIZE", str(a.batch)],
    "channels_last": lambda a: ["TEST.CHANNELS_LAST", "True"],
    "amp": lambda a: ["TEST.AMP.ENABLED", "True"],
    "compile": lambda a: ["TEST.COMPILE.ENABLED", "True"],
    "all": lambda a: ["TEST.SLIDING_WINDOW.BATCH_SIZE", str(a.batch), "TEST.CHANNELS_LAST", "True",
                      "TEST.AMP.ENABLED", "True", "TEST.COMPILE.ENABLED", "True"],
}


def hw(text: str):
    h, w = text.lower().split("x")
    return int(h), int(w)


def build(args, opts):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from seg_d2 import add_seg_d2_config

    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list([
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", args.device,
        "TEST.SLIDING_WINDOW.ENABLED", "True", "TEST.SLIDING_WINDOW.SIZE", str(list(hw(args.window))),
        *opts,
    ])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=3, help="timed images per variant")
    p.add_argument("--size", default="1024x2048", help="image HxW")
    p.add_argument("--window", default="512x1024", help="sliding window HxW (TEST.SLIDING_WINDOW.SIZE)")
    p.add_argument("--batch", type=int, default=8, help="TEST.SLIDING_WINDOW.BATCH_SIZE of the batch variant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variants", default="batch,channels_last,amp,compile",
                   help=f"comma-separated, from {','.join(VARIANTS)}")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("DETECTRON2_DATASETS", str(REPO / "datasets"))
    from detectron2.modeling.postprocessing import sem_seg_postprocess  # noqa: F401  (import before timing)

    from seg_d2.modeling.sem_seg_inference import window_starts

    names = [v for v in args.variants.split(",") if v]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    (H, W), (wh, ww) = hw(args.size), hw(args.window)
    n_win = len(window_starts(H, min(wh, H), 0.25)) * len(window_starts(W, min(ww, W), 0.25))
    print(f"U-Net R-50 ({CONFIG.relative_to(REPO)}, random init), {H}x{W} images, {wh}x{ww} windows "
          f"(overlap 0.25: {n_win} per image), device {args.device}, {args.threads} threads, torch "
          f"{torch.__version__}, {args.images} timed images per variant after 1 warm-up", flush=True)

    models = {"reference": build(args, [])}
    state = models["reference"].state_dict()
    for name in names:
        models[name] = build(args, VARIANTS[name](args))
        models[name].load_state_dict(state)
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, H, W, generator=g) * 255 for _ in range(args.images + 1)]

    def run(name, img):
        sync(args.device)
        t = time.perf_counter()
        with torch.no_grad():
            out = models[name]([{"image": img}])[0]["sem_seg"]
        sync(args.device)
        return time.perf_counter() - t, out

    warm = {}
    for name in models:  # warm-up (compilation happens here) on one window; "all" needs both batch shapes
        warm[name], _ = run(name, imgs[0] if name == "all" else imgs[0][:, :wh, :ww])
        print(f"  warm-up {name}: {warm[name]:.1f} s", flush=True)
    times = {name: [] for name in models}
    agree, diff = {name: [] for name in names}, {name: 0.0 for name in names}
    for img in imgs[1:]:
        for name in models:  # in turn, so that load changes hit every variant alike
            t, out = run(name, img)
            times[name].append(t)
            if name == "reference":
                ref = out
            else:
                agree[name].append((out.argmax(0) == ref.argmax(0)).float().mean().item())
                diff[name] = max(diff[name], (out - ref).abs().max().item() / ref.abs().max().item())
        print(f"  image done: " + ", ".join(f"{n} {times[n][-1]:.1f} s" for n in models), flush=True)

    ref_t = statistics.mean(times["reference"])
    print(f"\n{'variant':<16}{'s/img':>9}{'speed-up':>10}{'same label':>12}{'max |dlogit|':>14}  options")
    print(f"{'reference':<16}{ref_t:>9.2f}{1.0:>9.2f}x{'':>12}{'':>14}  sliding windows one at a time, fp32, eager")
    for name in names:
        t = statistics.mean(times[name])
        opts = " ".join(VARIANTS[name](args))
        print(f"{name:<16}{t:>9.2f}{ref_t / t:>9.2f}x{100 * min(agree[name]):>11.3f}%"
              f"{diff[name]:>13.1e}r  {opts}")
    if "compile" in names or "all" in names:
        for name in ("compile", "all"):
            if name in names:
                print(f"compilation ({name}): about {warm[name]:.0f} s (its warm-up)")
    print("speed-up = reference s/img / variant s/img, both measured in this run; 'same label': the lowest "
          "over the images of the share of pixels labelled as the reference; max |dlogit| relative to the "
          "largest reference logit.")


if __name__ == "__main__":
    main()
