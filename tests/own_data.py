"""Tiny "user" datasets for the own-data tests: a COCO instances json with RLE masks and a semantic
image/label folder of 16-bit grayscale scans, in the layouts the README's "Use your own data" uses."""
import json
import os

import cv2
import numpy as np
import pycocotools.mask as mask_util

H, W = 96, 128
CATEGORIES = [{"id": 3, "name": "disc"}, {"id": 7, "name": "box"}]  # non-contiguous ids, as in real jsons


def _scene(rng):
    """An RGB image and its objects: (category_id, binary mask)."""
    img = np.full((H, W, 3), 40, np.uint8) + rng.integers(0, 20, (H, W, 3), dtype=np.uint8)
    objects = []
    for k in range(2):
        mask = np.zeros((H, W), np.uint8)
        cx, cy, r = int(rng.integers(25, W - 25)), int(rng.integers(25, H - 25)), int(rng.integers(10, 20))
        if k == 0:
            cv2.circle(mask, (cx, cy), r, 1, -1)
            cat = 3
        else:
            cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, -1)
            cat = 7
        img[mask > 0] = (200, 80, 60) if cat == 3 else (60, 200, 90)
        objects.append((cat, mask))
    return img, objects


PANOPTIC_CLASSES = ["wall", "floor", "disc", "box"]  # root/labels: the label maps' classes, in label order


def make_coco(root, n_train=4, n_val=2, seed=0, rle=True):
    """``root/images/*.png``, ``root/train.json``, ``root/val.json``; masks as RLE (``rle``) or polygons;
    ``root/labels/*.png``: label maps of ``PANOPTIC_CLASSES`` (wall above the middle row, floor below, the
    objects by class), for tools/make_panoptic.py."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    ann_id = 1
    for split, n in (("train", n_train), ("val", n_val)):
        images, annotations = [], []
        for i in range(n):
            img, objects = _scene(rng)
            file_name = f"{split}_{i:03d}.png"
            cv2.imwrite(os.path.join(root, "images", file_name), img)
            label = np.zeros((H, W), np.uint8)
            label[H // 2:] = PANOPTIC_CLASSES.index("floor")
            for cat, mask in objects:  # the later object on top, as drawn
                label[mask > 0] = PANOPTIC_CLASSES.index({3: "disc", 7: "box"}[cat])
            cv2.imwrite(os.path.join(root, "labels", file_name), label)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": file_name, "height": H, "width": W})
            for cat, mask in objects:
                enc = mask_util.encode(np.asfortranarray(mask))
                x, y, w, h = (float(v) for v in mask_util.toBbox(enc))
                if rle:
                    segm = {"size": [H, W], "counts": enc["counts"].decode("ascii")}
                else:
                    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                    segm = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                                    "area": float(mask.sum()), "iscrowd": 0, "segmentation": segm})
                ann_id += 1
        with open(os.path.join(root, f"{split}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
    return root


def make_sem_seg_16bit(root, n_train=4, n_val=2, seed=1):
    """``root/images/{train,val}/*.png``: 16-bit grayscale scans; ``root/labels/{train,val}/*.png``: 8-bit
    label maps, 0 = background, 1 = lesion (a bright blob)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        os.makedirs(os.path.join(root, "images", split), exist_ok=True)
        os.makedirs(os.path.join(root, "labels", split), exist_ok=True)
        for i in range(n):
            scan = rng.integers(8000, 12000, (H, W)).astype(np.uint16)
            label = np.zeros((H, W), np.uint8)
            cx, cy, r = int(rng.integers(25, W - 25)), int(rng.integers(25, H - 25)), int(rng.integers(10, 22))
            cv2.circle(label, (cx, cy), r, 1, -1)
            scan[label == 1] += 30000
            cv2.imwrite(os.path.join(root, "images", split, f"scan_{i:03d}.png"), scan)
            cv2.imwrite(os.path.join(root, "labels", split, f"scan_{i:03d}.png"), label)
    return root
