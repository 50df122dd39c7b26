#!/usr/bin/env python
"""Evaluation cost against detectron2 / pycocotools, measured in the same run on the same inputs.

(a) Semantic segmentation, per image at 1024x2048 with 19 classes (synthetic label maps of smooth
    blobs, an ignored strip at the bottom, the prediction a perturbed copy, given as (19, H, W) logits
    like a model's output): ``SemSegEvaluator.process`` of detectron2 (mIoU only) against seg_d2's
    ``SemSegBoundaryEvaluator.process`` (mIoU, Dice and Boundary IoU). Target: ratio <= 1.5.
(b) Instance segmentation, ``--images`` images x ``--instances`` instances (synthetic ellipses and
    polygons, detections perturbed copies plus false positives): pycocotools' segm ``COCOeval``
    (evaluate + accumulate) against seg_d2's Boundary AP (``evaluate_boundary_on_coco``: evaluate +
    accumulate + summarize, ``--workers`` processes for the boundaries). Target: ratio <= 2.

Usage: python benchmarks/bench_eval.py [--part a|b|ab] [--sem-images 3] [--device cpu|cuda]
       [--images 500] [--instances 50] [--height 480] [--width 640] [--workers 2]
"""
import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ---------------------------------------------------------------- (a) semantic segmentation

def blob_labels(rng, h, w, num_classes, cells=(8, 16)):
    """A label map of smooth blobs: argmax of per-class noise upsampled from a coarse grid."""
    coarse = rng.random((num_classes, *cells)).astype(np.float32)
    field = np.stack([cv2.resize(c, (w // 4, h // 4), interpolation=cv2.INTER_CUBIC) for c in coarse])
    labels = field.argmax(0).astype(np.uint8)
    return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST), field


def sem_seg_case(rng, h, w, num_classes):
    """(ground truth with 255 = ignore, (C, H, W) float logits of a perturbed prediction)."""
    gt, field = blob_labels(rng, h, w, num_classes)
    gt[int(0.9 * h):] = 255  # the ego-vehicle strip, as in Cityscapes
    for _ in range(5):  # a few ignored islands
        cv2.circle(gt, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(10, 60)), 255, -1)
    noise = rng.random(field.shape).astype(np.float32) * 0.05
    pred = cv2.resize((field + noise).argmax(0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred).long(), num_classes).permute(2, 0, 1).float()
    return gt, logits


def bench_semantic(args):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import SemSegEvaluator

    from seg_d2.evaluation import SemSegBoundaryEvaluator

    h, w, n = args.sem_height, args.sem_width, 19
    rng = np.random.default_rng(0)
    tmp = tempfile.mkdtemp(prefix="bench_eval_")
    records, outputs = [], []
    for i in range(args.sem_images):
        gt, logits = sem_seg_case(rng, h, w, n)
        cv2.imwrite(os.path.join(tmp, f"{i}.png"), gt)
        records.append({"file_name": os.path.join(tmp, f"{i}.jpg"), "sem_seg_file_name": os.path.join(tmp, f"{i}.png"),
                        "height": h, "width": w})
        outputs.append(logits.to(args.device))
    name = "bench_eval_sem_seg"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=[f"c{i}" for i in range(n)], ignore_label=255)
    evaluators = {"detectron2 SemSegEvaluator": SemSegEvaluator(name, distributed=False),
                  "seg_d2 SemSegBoundaryEvaluator": SemSegBoundaryEvaluator(name, distributed=False)}
    times = {k: [] for k in evaluators}
    for ev in evaluators.values():
        ev.reset()
    for rep in range(args.repeat + 1):  # interleaved, so that load on the machine hits both alike
        for rec, out in zip(records, outputs):
            for key, ev in evaluators.items():
                if out.is_cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                ev.process([{"file_name": rec["file_name"]}], [{"sem_seg": out}])
                if rep > 0:  # the first round warms up
                    times[key].append(time.perf_counter() - t0)
    print(f"(a) SemSegEvaluator.process at {h}x{w}, {n} classes, {args.sem_images} images x {args.repeat} "
          f"rounds, prediction on {args.device}; median s/image:")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"    {k:32s} {v:.3f}")
    ours, ref = med["seg_d2 SemSegBoundaryEvaluator"], med["detectron2 SemSegEvaluator"]
    print(f"    ratio seg_d2 / detectron2         {ours / ref:.2f}x   (target <= 1.5x)")
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    return ours / ref


# ---------------------------------------------------------------- (b) Boundary AP

def instance_case(rng, num_images, num_instances, h, w, num_cats=5):
    """COCO ground truth and results: ellipses/polygons; detections are jittered copies plus false positives."""
    import pycocotools.mask as mask_util
    from pycocotools.coco import COCO

    def rle(m):
        r = mask_util.encode(np.asfortranarray(m))
        r["counts"] = r["counts"].decode()
        return r

    def shape(rng):
        m = np.zeros((h, w), np.uint8)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.choice([8, 30, 90]) * rng.uniform(0.5, 1.5))
        if rng.random() < 0.5:
            cv2.ellipse(m, (cx, cy), (size, int(size * rng.uniform(0.4, 1.0))), float(rng.uniform(0, 180)),
                        0, 360, 1, -1)
        else:
            ang = np.sort(rng.uniform(0, 2 * np.pi, 7))
            rad = size * rng.uniform(0.5, 1.0, 7)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(m, [pts], 1)
        return m

    images, anns, results = [], [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"})
        for _ in range(num_instances):
            m = shape(rng)
            if not m.any():
                continue
            cat = int(rng.integers(1, num_cats + 1))
            r = rle(m)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "segmentation": r,
                         "area": float(m.sum()), "bbox": mask_util.toBbox(r).tolist(), "iscrowd": 0})
            if rng.random() < 0.8:  # detected: shifted and dilated/eroded a little
                k = int(rng.integers(1, 4))
                d = np.roll(m, tuple(int(v) for v in rng.integers(-3, 4, 2)), axis=(0, 1))
                d = (cv2.dilate if rng.random() < 0.5 else cv2.erode)(d, np.ones((k, k), np.uint8))
                if d.any():
                    results.append({"image_id": i, "category_id": cat, "segmentation": rle(d),
                                    "score": float(rng.random())})
            if rng.random() < 0.2:  # a false positive
                results.append({"image_id": i, "category_id": cat, "segmentation": rle(shape(rng)),
                                "score": float(rng.random() * 0.5)})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_cats + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco, [r for r in results if r["segmentation"]["counts"]]


def bench_boundary_ap(args):
    import copy

    from pycocotools.cocoeval import COCOeval

    from seg_d2.evaluation import evaluate_boundary_on_coco

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    coco, results = instance_case(rng, args.images, args.instances, args.height, args.width)
    print(f"(b) Boundary AP: {args.images} images x {args.instances} instances at {args.height}x{args.width} "
          f"({len(coco.anns)} ground truth, {len(results)} detections; made in {time.perf_counter() - t0:.0f} s)")

    def pycocotools_segm():
        with contextlib.redirect_stdout(io.StringIO()):
            e = COCOeval(coco, coco.loadRes(copy.deepcopy(results)), "segm")
            e.evaluate()
            e.accumulate()
        return e

    def ours():
        with contextlib.redirect_stdout(io.StringIO()):
            return evaluate_boundary_on_coco(coco, results, workers=args.workers)

    timed = {}
    for key, fn in [("pycocotools COCOeval segm", pycocotools_segm), ("seg_d2 Boundary AP", ours)]:
        t0 = time.perf_counter()
        e = fn()
        timed[key] = time.perf_counter() - t0
        print(f"    {key:32s} {timed[key]:.2f} s   AP {e.eval['precision'][e.eval['precision'] > -1].mean():.4f}")
    ratio = timed["seg_d2 Boundary AP"] / timed["pycocotools COCOeval segm"]
    print(f"    ratio seg_d2 / pycocotools        {ratio:.2f}x   (target <= 2x; workers={args.workers})")
    return ratio


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", default="ab", choices=["a", "b", "ab"])
    p.add_argument("--sem-images", type=int, default=3)
    p.add_argument("--sem-height", type=int, default=1024)
    p.add_argument("--sem-width", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=2, help="timed rounds over the semantic images")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--instances", type=int, default=50)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--workers", type=int, default=None,
                   help="Boundary AP processes (default: seg_d2's TEST.BOUNDARY_AP_WORKERS)")
    p.add_argument("--threads", type=int, default=None, help="torch / OpenCV threads (default: theirs)")
    args = p.parse_args()
    if args.workers is None:
        from seg_d2 import get_cfg

        args.workers = get_cfg().TEST.BOUNDARY_AP_WORKERS
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    print(f"CPU cores: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, OpenCV threads: "
          f"{cv2.getNumThreads()}, load average: {os.getloadavg()[0]:.1f}")
    if "a" in args.part:
        bench_semantic(args)
    if "b" in args.part:
        bench_boundary_ap(args)


if __name__ == "__main__":
    main()
