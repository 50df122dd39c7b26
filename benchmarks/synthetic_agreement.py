#!/usr/bin/env python
"""Do the synthetic images show what their labels say? A real-only U-Net of benchmarks/bench_synthesis.py (the
judge: by default the same (dataset, seed)'s, with --judge the same seed's on another training set, e.g. all the
labelled images), a model that never saw a generated pair, segments each seed's generated images; its figures
against their label maps are set beside its figures on the real val images. Faithful pairs score about as well as
the real images; pairs whose images ignore their labels score far lower (and then teach a U-Net wrong labels).

    python benchmarks/synthetic_agreement.py --out bench_out/synthesis/edgepad_wp_1to1 \\
        --datasets real_buildings_4,real_buildings_8 --judge real_buildings
    python benchmarks/synthetic_agreement.py --pairs synthetic_buildings --real-from bench_out/synthesis/edgepad_wp_1to1 \\
        --datasets real_buildings --judge real_buildings

Park et al. 2019 (SPADE) and Wang et al. 2018 (pix2pixHD) score semantic image synthesis the same way, with a
pretrained segmenter; here the judge is trained on the real labelled images.
"""
import argparse
import glob
import json
import os

import cv2
import numpy as np
import torch

import bench_synthesis as bs  # benchmarks/bench_synthesis.py
from paired_runs import load_train_net, mean_std, read_results, trained_weights


def class_share(label_files, num_classes):
    """Each class's share of the labelled pixels (%) over ``label_files``."""
    from seg_d2.data.sem_seg_io import read_label_map

    counts = sum(np.bincount(read_label_map(f).ravel(), minlength=256)[:num_classes] for f in label_files)
    return (100.0 * counts / counts.sum()).tolist()


@torch.no_grad()
def write_grid(cfg, model, dataset_name, path, num):
    """The first ``num`` pairs of ``dataset_name``: label | image | the judge's prediction, one row each."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from seg_d2.data.image_io import read_image
    from seg_d2.data.sem_seg_io import read_label_map
    from seg_d2.engine.samples import sample_grid, to_bgr
    from seg_d2.utils.visualizer import class_colors

    colors = np.array(class_colors(MetadataCatalog.get(dataset_name), cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
                      + [(0, 0, 0)], np.uint8)  # the last row: ignored pixels
    labels, rows = [], []
    for d in DatasetCatalog.get(dataset_name)[:num]:
        image = read_image(d["file_name"], cfg.INPUT.FORMAT)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=torch.float32)
        pred = model([{"image": tensor, "height": image.shape[0], "width": image.shape[1]}])[0]["sem_seg"].argmax(0)
        labels.append(read_label_map(d["sem_seg_file_name"]))
        rows.append([to_bgr(image, cfg.INPUT.FORMAT), colors[pred.numpy()][:, :, ::-1]])
    cv2.imwrite(path, sample_grid(labels, rows, colors))


def agreement(dataset, seed, synth_dir, real_out, judge, device, grid=""):
    """The real-only model of (``judge``, ``seed``)'s sem_seg figures on the val set and on the pairs in
    ``synth_dir`` (and, with ``grid``, a picture of its first pairs there)."""
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from seg_d2.data.datasets import register_sem_seg_folder
    from seg_d2.engine import SegD2Checkpointer

    subset, val = bs._register(dataset, seed)
    classes = bs.BASES[bs.DATASETS[dataset][0]][0]
    name = f"bench_agreement_{dataset}_{seed}_{os.path.basename(synth_dir)}"
    if name not in DatasetCatalog:
        register_sem_seg_folder(name, os.path.join(synth_dir, "images"), os.path.join(synth_dir, "labels"), classes)
    share = {"labelled": class_share([d["sem_seg_file_name"] for d in DatasetCatalog.get(subset)], len(classes)),
             "synthetic": class_share([d["sem_seg_file_name"] for d in DatasetCatalog.get(name)], len(classes))}
    weights = trained_weights(os.path.join(real_out, "results.jsonl"), real_out, judge, seed, ["real"])["real"]
    cfgs = {split: bs.unet_cfg(dataset, seed, [subset], [], test, 1, device, os.path.join(synth_dir, "agreement"))
            for split, test in (("val", val), ("synthetic", name))}  # the same model, tested on each set
    model = build_model(cfgs["val"])
    SegD2Checkpointer(model, strict_shapes=True).load(weights)
    model.eval()
    trainer = load_train_net().Trainer
    figures = {split: bs.summarize(trainer.test(cfg, model))["sem_seg"] for split, cfg in cfgs.items()}
    if grid:
        write_grid(cfgs["synthetic"], model, name, grid, 4)
    return {"weights": weights, "class_share": share, **figures}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="", help="a bench_synthesis --out (its synthetic_* folders are read)")
    parser.add_argument("--pairs", nargs="+", default=[], help="instead, these folders of tools/synthesize.py, each "
                        "judged by every seed's judge")
    parser.add_argument("--real-from", default="", help="the --out that holds the real-only runs (default: --out)")
    parser.add_argument("--datasets", default="real_buildings_4,real_buildings_8")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--judge", default="", help="the training set whose real-only runs judge the pairs (default: "
                        "each dataset's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default="", help="also write the figures to this json file")
    parser.add_argument("--grid", default="", help="a picture of the first set's first 4 pairs: label | image | the "
                        "judge's prediction")
    args = parser.parse_args()
    if not (args.real_from or args.out):
        parser.error("give --out (a bench_synthesis --out) or --pairs and --real-from")
    import seg_d2  # noqa: F401

    real_out = args.real_from or args.out
    done, rows = read_results(os.path.join(real_out, "results.jsonl")), []
    for dataset in args.datasets.split(","):
        for seed in map(int, args.seeds.split(",")):
            judge = args.judge or dataset
            if ("train", judge, seed, "real") not in done:
                continue
            found = args.pairs or sorted(glob.glob(os.path.join(args.out, dataset, str(seed), "synthetic_*")))
            for synth_dir in found:
                if os.path.isdir(synth_dir):
                    rows.append({"dataset": dataset, "seed": seed, "pairs": os.path.basename(synth_dir), "judge": judge,
                                 **agreement(dataset, seed, synth_dir, real_out, judge, args.device,
                                             "" if rows else args.grid)})
    keys = ("mIoU", "mBoundaryIoU") + tuple(sorted({k for r in rows for k in r["val"] if k.startswith("IoU-")}))
    print("\nthe real-only U-Net (judge) of each seed on the real val images | on the seed's generated pairs:")
    print("| dataset | pairs | judge | seeds | " + " | ".join(keys) + " |")
    print("|---|---|---|---|" + "---|" * len(keys))
    for key in sorted({(r["dataset"], r["pairs"], r["judge"]) for r in rows}):
        sel = [r for r in rows if (r["dataset"], r["pairs"], r["judge"]) == key]
        cells = [[mean_std([r[split].get(k, float("nan")) for r in sel]) for split in ("val", "synthetic")] for k in keys]
        print(f"| {' | '.join(key)} | {len(sel)} | " + " | ".join(
            f"{v[0]:.1f} ± {v[1]:.1f} \\| {p[0]:.1f} ± {p[1]:.1f}" for v, p in cells) + " |")
    print("\nshare of the labelled pixels per class (%): the seed's labelled images | its generated pairs")
    for key in sorted({(r["dataset"], r["pairs"]) for r in rows}):
        sel = [r for r in rows if (r["dataset"], r["pairs"]) == key]
        real, synthetic = (np.mean([r["class_share"][k] for r in sel], axis=0) for k in ("labelled", "synthetic"))
        print(f"  {key[0]} {key[1]}: " + ", ".join(f"{a:.1f} | {b:.1f}" for a, b in zip(real, synthetic)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
