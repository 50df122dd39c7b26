#!/usr/bin/env python
"""BMask R-CNN's boundary targets on real RoIs: pictures and counts (issue 21's diagnostics).

For the ground-truth objects of a dataset (shapes, or the real aerial buildings of bench_bmask.py), it
draws proposals jittered around each box at IoU >= 0.5 with it (as the RoI heads sample them), crops the
28x28 mask target of each as detectron2 does (``BitMasks.crop_and_resize``) and takes its boundary target
two ways: the authors' (a zero-padded 3x3 Laplacian: mask pixels on the RoI edge are boundary, seg_d2's
default, :func:`seg_d2.modeling.mask_losses.boundary_targets`) and the rule seg_d2 used before (the RoI edge
never boundary). Prints how many boundary pixels each marks, and writes a picture per RoI row: the image
crop, the mask target, the authors' boundary target and the former one (magnified).

    python benchmarks/show_bmask_targets.py --dataset real_buildings --rois 12 --out bmask_targets.png
"""
import argparse
import os
import statistics
import sys

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_bmask  # noqa: E402  (datasets: built and registered there)

SIDE = 28


def jittered_boxes(box, n, gen, min_iou=0.5):
    """``n`` boxes around ``box`` (x0, y0, x1, y1) with IoU >= ``min_iou``: each side moved by up to 25 %."""
    from detectron2.structures import Boxes, pairwise_iou

    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    out = []
    while len(out) < n:
        d = (torch.rand(4, generator=gen) - 0.5) * 0.5 * torch.tensor([w, h, w, h])
        cand = torch.tensor([x0, y0, x1, y1]) + d
        if cand[2] - cand[0] > 1 and cand[3] - cand[1] > 1 and \
                pairwise_iou(Boxes(cand[None]), Boxes(torch.tensor([box]))).item() >= min_iou:
            out.append(cand)
    return torch.stack(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="real_buildings", choices=list(bench_bmask.DATASETS))
    parser.add_argument("--per-object", type=int, default=4, help="jittered proposals per object (and its own box)")
    parser.add_argument("--rois", type=int, default=12, help="RoIs drawn in the picture")
    parser.add_argument("--out", default="bmask_targets.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(bench_bmask.REPO, "datasets"))
    if args.dataset == "real_buildings":
        bench_bmask.prepare_real_buildings()
    import seg_d2  # noqa: F401
    from detectron2.data import DatasetCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.structures import BitMasks

    from seg_d2.layers import boundary_band
    from seg_d2.modeling.mask_losses import boundary_targets

    bench_bmask.register_real_buildings()
    cfg = bench_bmask.setup_cfg("bmask", args.dataset, "cpu", args.seed)
    dicts = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])
    gen = torch.Generator().manual_seed(args.seed)
    rows, counts = [], {"authors": [], "former": [], "own box authors": [], "own box former": []}
    for d in dicts:
        image = utils.read_image(d["file_name"], format="RGB")
        annos = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        if not annos:
            continue
        inst = utils.annotations_to_instances(annos, image.shape[:2], mask_format="bitmask")
        masks = BitMasks(inst.gt_masks.tensor)
        for i, box in enumerate(inst.gt_boxes.tensor.tolist()):
            boxes = torch.cat([torch.tensor([box]), jittered_boxes(box, args.per_object, gen)])
            crops = masks[[i] * len(boxes)].crop_and_resize(boxes, SIDE).float()
            authors = boundary_targets(crops)
            former = ((crops > 0.5) & boundary_band(crops > 0.5, 1, border_is_boundary=False)).float()
            counts["own box authors"].append(authors[0].sum().item())
            counts["own box former"].append(former[0].sum().item())
            counts["authors"] += authors[1:].sum((1, 2)).tolist()
            counts["former"] += former[1:].sum((1, 2)).tolist()
            for k in range(len(boxes)):
                if len(rows) < args.rois:
                    x0, y0, x1, y1 = [int(round(v)) for v in boxes[k].tolist()]
                    h, w = image.shape[:2]
                    crop = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
                    crop = cv2.resize(crop, (SIDE, SIDE)) if crop.size else np.zeros((SIDE, SIDE, 3), np.uint8)
                    gray = lambda t: np.repeat((t.numpy()[:, :, None] * 255).astype(np.uint8), 3, 2)  # noqa: E731
                    rows.append(np.concatenate([crop, gray(crops[k]), gray(authors[k]), gray(former[k])], axis=1))
    fewer = [1 - f / a for a, f in zip(counts["authors"], counts["former"]) if a > 0]
    print(f"{args.dataset}: {len(counts['own box authors'])} objects, {len(counts['authors'])} jittered RoIs "
          f"(IoU >= 0.5), {SIDE}x{SIDE} targets")
    print(f"  boundary pixels per RoI, the object's own box: authors' {statistics.fmean(counts['own box authors']):.1f}, "
          f"former rule {statistics.fmean(counts['own box former']):.1f}")
    print(f"  boundary pixels per RoI, jittered: authors' {statistics.fmean(counts['authors']):.1f}, former rule "
          f"{statistics.fmean(counts['former']):.1f}; the former marks {100 * statistics.fmean(fewer):.0f} % fewer "
          f"(quartiles {', '.join(f'{100 * q:.0f}' for q in statistics.quantiles(fewer, n=4))} %)")
    grid = np.concatenate(rows, axis=0)
    grid = cv2.resize(grid, (grid.shape[1] * 4, grid.shape[0] * 4), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(args.out, grid[:, :, ::-1])
    print(f"  picture: {args.out} (per row: image crop, mask target, authors' boundary, former boundary)")


if __name__ == "__main__":
    main()
