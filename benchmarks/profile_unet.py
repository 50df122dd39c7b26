#!/usr/bin/env python
"""Where a semantic model's CPU time goes: forward, backward and inference time per stage (encoder stages,
decoder blocks, predictor; the rest is the loss, the optimizer step and glue), and the peak memory.

Every model runs in this one process, on the same random batch, one after the other in rounds (so that the
load of the machine hits them alike); timings are the median over rounds after a warm-up. Stage times come
from module hooks: forward pre/post hooks, and full backward pre/post hooks (the time from the gradient of a
stage's output to the gradient of its input). With one thread, CPU ops run synchronously, so these are the
stages' own times. A stage whose input needs no gradient (the first ones, on the image) shows no backward
time: its weight gradients fall under "rest".

    python benchmarks/profile_unet.py --configs configs/Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml \
        [--smp] [--size 160] [--batch 8] [--rounds 5] [--threads 1] [--opts KEY VALUE ...] [--init-grads]

--smp adds segmentation_models_pytorch's Unet(resnet50) through benchmarks/smp_peer.py (requirements/bench.txt),
with the first config's data and loss. --opts apply to every config (e.g. the levers
MODEL.RESNET_UNET.FULL_RES_CHANNELS 16 MODEL.SEM_SEG_HEAD.DECODER_CHANNELS "[256,128,64,32,16]"); a config
given as CONFIG::KEY=VALUE;KEY=VALUE gets options of its own and is reported under that name.

--init-grads prints, instead of timings, the norm of the main loss's gradient (auxiliary losses left out) on each
stage's parameters at initialisation (every model built after torch.manual_seed(0)), on the same batch: how much
of the training signal reaches each stage in the first steps.
"""
import argparse
import os
import resource
import statistics
import sys
import time
from collections import defaultdict

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def stages(model):
    """(name, module) of the stages to time, in forward order, none inside another."""
    out = []
    backbone = getattr(model, "backbone", None)
    resnet = getattr(backbone, "resnet", None)
    if resnet is not None:  # seg_d2's ResNetUNetEncoder
        if getattr(backbone, "full_res", None) is not None:
            out.append(("encoder s1 (full-res path)", backbone.full_res))
        # the encoder calls the stem's conv directly (its s2 output), then ReLUs it in place, which a backward
        # hook's output may not be: forward time only (its input, the image, needs no gradient anyway)
        out.append(("encoder stem conv1 (forward only)", resnet.stem.conv1))
        out += [(f"encoder {n}", m) for n, m in zip(resnet.stage_names, resnet.stages)]
    elif backbone is not None:  # the classic U-Net encoder, or any backbone
        out += [(f"encoder {n}", m) for n, m in backbone.named_children()]
    head = getattr(model, "sem_seg_head", None)
    if head is not None and hasattr(head, "blocks"):  # UNetHead: deepest block first
        out += [(f"decoder block {k}", m) for k, m in enumerate(head.blocks)]
        out.append(("predictor", head.predictor))
    elif head is not None:
        out.append(("head", head))
    net = getattr(model, "net", None)  # smp_peer.SmpUnetPeer
    if net is not None:
        # the stem's modules are followed by in-place ReLUs: forward time only (the image needs no gradient)
        out += [(f"encoder {n}" + (" (forward only)" if not n.startswith("layer") else ""), m)
                for n, m in net.encoder.named_children() if n != "relu"]
        out += [(f"decoder block {k}", m) for k, m in enumerate(net.decoder.blocks)]
        out.append(("predictor", net.segmentation_head))
    return out


class StageTimer:
    """Accumulates each stage's forward and backward seconds through hooks."""

    def __init__(self, named):
        self.fwd, self.bwd, self._t = defaultdict(float), defaultdict(float), {}
        self.handles = []
        for name, m in named:
            self.handles += [
                m.register_forward_pre_hook(lambda mod, inp, n=name: self._start(("f", n))),
                m.register_forward_hook(lambda mod, inp, out, n=name: self._stop(("f", n), self.fwd)),
            ]
            if "forward only" not in name:
                self.handles += [
                    m.register_full_backward_pre_hook(lambda mod, g, n=name: self._start(("b", n))),
                    m.register_full_backward_hook(lambda mod, gi, go, n=name: self._stop(("b", n), self.bwd)),
                ]

    def _start(self, key):
        self._t[key] = time.perf_counter()

    def _stop(self, key, acc):
        acc[key[1]] += time.perf_counter() - self._t.pop(key)

    def reset(self):
        self.fwd.clear()
        self.bwd.clear()


def build(config, opts, smp, device):
    from detectron2.modeling import build_model

    from seg_d2 import get_cfg

    cfg = get_cfg()
    if smp:
        from smp_peer import add_smp_peer_config

        add_smp_peer_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", device, *opts] + (["MODEL.META_ARCHITECTURE", "SmpUnetPeer"] if smp else []))
    return build_model(cfg), cfg


def batch(cfg, size, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    return [{"image": torch.randint(0, 256, (len(cfg.MODEL.PIXEL_MEAN), size, size), generator=g).float(),
             "sem_seg": torch.randint(0, k, (size, size), generator=g), "height": size, "width": size}
            for _ in range(n)]


def init_gradients(models, size, n):
    for name, (model, cfg) in models.items():
        model.train().zero_grad(set_to_none=True)
        losses = model(batch(cfg, size, n))
        main = sum(v for k, v in losses.items() if "_aux" not in k)
        main.backward()
        print(f"\n### {name}: main loss {main.item():.4f}")
        print("| stage | gradient norm |")
        print("|---|---|")
        for k, m in stages(model):
            norms = [p.grad.norm() for p in m.parameters() if p.grad is not None]
            print(f"| {k} | {torch.stack(norms).norm().item():.3e} |" if norms else f"| {k} | no gradient |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--smp", action="store_true", help="also smp's Unet(resnet50) (benchmarks/smp_peer.py)")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--opts", nargs="*", default=[])
    parser.add_argument("--init-grads", action="store_true", help="gradient norms per stage at init, no timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import seg_d2  # noqa: F401

    models = {}
    for spec in args.configs:
        config, _, own = spec.partition("::")
        opts = list(args.opts) + [x for kv in own.split(";") if kv for x in kv.split("=", 1)]
        name = os.path.basename(config).rsplit(".", 1)[0] + (f" [{own}]" if own else "")
        torch.manual_seed(0)
        models[name] = build(config, opts, False, args.device)
    if args.smp:
        torch.manual_seed(0)
        models["smp Unet(resnet50)"] = build(args.configs[0].partition("::")[0], args.opts, True, args.device)
    if args.init_grads:  # no timers, no optimizer
        return init_gradients(models, args.size, args.batch)
    runs = {}
    for name, (model, cfg) in models.items():
        named = stages(model)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        runs[name] = dict(model=model, opt=opt, timer=StageTimer(named), names=[n for n, _ in named],
                          data=batch(cfg, args.size, args.batch), train=[], infer=[], fwd=defaultdict(list),
                          bwd=defaultdict(list), inf=defaultdict(list),
                          params=sum(p.numel() for p in model.parameters()))
    for rnd in range(args.rounds + 1):  # round 0 warms up
        for name, r in runs.items():
            model, timer = r["model"], r["timer"]
            model.train()
            timer.reset()
            t0 = time.perf_counter()
            losses = model(r["data"])
            sum(losses.values()).backward()
            r["opt"].step()
            r["opt"].zero_grad(set_to_none=True)
            t_train = time.perf_counter() - t0
            fwd, bwd = dict(timer.fwd), dict(timer.bwd)
            model.eval()
            with torch.no_grad():
                model(r["data"][:1])  # untimed: what an evaluation does once (TEST.FUSE_CONV_BN's copy, compiling)
                timer.reset()
                t0 = time.perf_counter()
                for x in r["data"]:
                    model([x])
                t_inf = (time.perf_counter() - t0) / len(r["data"])
            inf = {k: v / len(r["data"]) for k, v in timer.fwd.items()}
            if rnd:
                r["train"].append(t_train)
                r["infer"].append(t_inf)
                for k in r["names"]:
                    r["fwd"][k].append(fwd.get(k, 0.0))
                    r["bwd"][k].append(bwd.get(k, 0.0))
                    r["inf"][k].append(inf.get(k, 0.0))
    med = statistics.median
    base = next(iter(runs))
    print(f"\n{args.batch} x {args.size}x{args.size} images, {args.threads} thread(s), {args.device}; median of "
          f"{args.rounds} rounds (models alternated); ms per training iteration (forward, backward) and per image "
          f"in inference")
    for name, r in runs.items():
        train, infer = med(r["train"]), med(r["infer"])
        print(f"\n### {name}: {r['params'] / 1e6:.2f} M parameters; train {train:.3f} s/iter "
              f"({train / med(runs[base]['train']):.2f}x {base}), inference {infer * 1e3:.1f} ms/img "
              f"({infer / med(runs[base]['infer']):.2f}x)")
        print("| stage | forward ms | backward ms | train share | inference ms/img | inference share |")
        print("|---|---|---|---|---|---|")
        for k in r["names"]:
            f, b, i = med(r["fwd"][k]), med(r["bwd"][k]), med(r["inf"][k])
            print(f"| {k} | {f * 1e3:.1f} | {b * 1e3:.1f} | {100 * (f + b) / train:.1f} % | {i * 1e3:.2f} | "
                  f"{100 * i / infer:.1f} % |")
        staged = sum(med(r["fwd"][k]) + med(r["bwd"][k]) for k in r["names"])
        print(f"| rest (loss, optimizer, glue) | | | {100 * (1 - staged / train):.1f} % | | "
              f"{100 * (1 - sum(med(r['inf'][k]) for k in r['names']) / infer):.1f} % |")
    print(f"\npeak RSS of this process (all models): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
