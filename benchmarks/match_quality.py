#!/usr/bin/env python
"""How good the best mask for each object is: for every ground-truth instance of a bench_bmask.py dataset's val
set, the predicted mask of highest IoU with it, that IoU and the same pair's Boundary IoU (Cheng et al. 2021,
dilation 2 % of the image diagonal, seg_d2.evaluation.boundary_iou). Counts how many objects reach 0.5 in each:
segm AP50 and Boundary AP50 can only count those. Each RUN is VARIANT:DATASET:SEED:WEIGHTS, as bench_bmask.py
trained them (its results.jsonl has each run's weights):

    python benchmarks/match_quality.py bmask:real_buildings_aug:0:bench_out/bmask/real_buildings_aug/0/bmask/model_final.pth
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def best_matches(model, cfg, dataset):
    """[(mask IoU, Boundary IoU, area)] of each ground-truth instance's best-IoU prediction (0, 0 when none)."""
    from detectron2.data import DatasetCatalog, build_detection_test_loader
    from pycocotools import mask as mask_util

    from seg_d2.evaluation.boundary_iou import boundary_iou

    records = {d["file_name"]: d for d in DatasetCatalog.get(dataset)}
    rows = []
    with torch.no_grad():
        for inputs in build_detection_test_loader(cfg, dataset):
            record = records[inputs[0]["file_name"]]
            instances = model(inputs)[0]["instances"].to("cpu")
            predicted = instances.pred_masks.numpy() if len(instances) else np.zeros((0, record["height"], record["width"]), bool)
            for ann in record["annotations"]:
                segm = ann["segmentation"]
                if isinstance(segm, list):  # polygons
                    segm = mask_util.merge(mask_util.frPyObjects(segm, record["height"], record["width"]))
                gt = mask_util.decode(segm).astype(bool)
                if not len(predicted):
                    rows.append((0.0, 0.0, int(gt.sum())))
                    continue
                ious = [(gt & p).sum() / max((gt | p).sum(), 1) for p in predicted]
                k = int(np.argmax(ious))
                rows.append((float(ious[k]), boundary_iou(gt.astype(np.uint8), predicted[k].astype(np.uint8)),
                             int(gt.sum())))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="VARIANT:DATASET:SEED:WEIGHTS")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "datasets"))

    import seg_d2  # noqa: F401
    from bench_bmask import setup_cfg
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from paired_runs import register_real_buildings

    register_real_buildings()
    for run in args.runs:
        variant, dataset, seed, weights = run.split(":", 3)
        if not os.path.isfile(weights):
            sys.exit(f"{run}: no weights file {weights}")
        cfg = setup_cfg(variant, dataset, "cpu", int(seed))
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(weights)
        rows = np.array(best_matches(model, cfg, cfg.DATASETS.TEST[0]))
        hit = rows[:, 0] >= 0.5
        print(f"{variant} on {dataset}, seed {seed}: {len(rows)} objects (median area {np.median(rows[:, 2]):.0f} px); "
              f"best mask IoU median {np.median(rows[:, 0]):.2f}, >= 0.5 for {hit.sum()}; Boundary IoU of those "
              f"median {np.median(rows[hit, 1]) if hit.any() else float('nan'):.2f}; Boundary IoU >= 0.5 for "
              f"{(rows[:, 1] >= 0.5).sum()}")


if __name__ == "__main__":
    main()
