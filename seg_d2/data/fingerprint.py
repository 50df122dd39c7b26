"""A dataset fingerprint, as nnU-Net plans from one (Isensee et al. 2021): image sizes, channels and bit depth,
intensity statistics (with nnU-Net's 0.5 / 99.5 percentile clipping), class frequencies of the label maps, and
object sizes and counts of the instance annotations. seg_d2.engine.auto_config turns it into a config plan."""
from typing import Dict, List, Sequence

import numpy as np

__all__ = ["MAX_PIXELS_PER_IMAGE", "fingerprint_dataset"]

MAX_PIXELS_PER_IMAGE = 65536  # intensity samples per image (a regular grid), so that large images cost no more


def _stats(values: Sequence[float]) -> Dict[str, float]:
    return {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}


def fingerprint_dataset(dataset_dicts: List[dict], *, image_format: str = "BGR", max_images: int = 200,
                        num_classes: int = 0, ignore_label: int = 255, seed: int = 0) -> dict:
    """The fingerprint of ``dataset_dicts`` (detectron2's dataset dicts), from at most ``max_images`` of them (a
    seeded sample). Intensities are in the units the model sees (seg_d2's image reader in ``image_format``: 16-bit
    scaled to 0..255), per channel in that format's order. Class pixels are counted for values below
    ``num_classes`` (or the largest value seen) other than ``ignore_label``; instance sizes are sqrt(area) in
    pixels of the annotations' masks or boxes."""
    import pycocotools.mask as mask_util

    from .image_io import _decode, read_image
    from .sem_seg_io import read_label_map

    if not dataset_dicts:
        raise ValueError("Cannot fingerprint an empty dataset")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(dataset_dicts), max_images, replace=False)) if len(dataset_dicts) > max_images \
        else range(len(dataset_dicts))
    heights, widths, depths, channels, samples = [], [], set(), set(), []
    class_pixels: Dict[int, int] = {}
    objects_per_image, object_sizes = [], []
    for i in picked:
        d = dataset_dicts[i]
        raw = _decode(d["file_name"])
        depths.add({np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(raw.dtype, 32))
        channels.add(1 if raw.ndim == 2 else raw.shape[2])
        image = read_image(d["file_name"], image_format).astype(np.float64)
        heights.append(image.shape[0])
        widths.append(image.shape[1])
        step = max(1, int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / MAX_PIXELS_PER_IMAGE))))
        samples.append(image[::step, ::step].reshape(-1, image.shape[2]))
        if "sem_seg_file_name" in d:
            label = read_label_map(d["sem_seg_file_name"])
            values, counts = np.unique(label, return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist()):
                if v != ignore_label:
                    class_pixels[v] = class_pixels.get(v, 0) + c
        if "annotations" in d:
            anns = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
            objects_per_image.append(len(anns))
            for a in anns:
                seg = a.get("segmentation")
                if isinstance(seg, dict):  # RLE
                    rle = mask_util.frPyObjects(seg, *seg["size"]) if isinstance(seg["counts"], list) else seg
                    area = float(mask_util.area(rle))
                elif seg:  # polygons
                    rles = mask_util.frPyObjects(seg, image.shape[0], image.shape[1])
                    area = float(mask_util.area(mask_util.merge(rles)))
                else:
                    from detectron2.structures import BoxMode

                    x0, y0, x1, y1 = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                    area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
                object_sizes.append(float(np.sqrt(area)))
    pixels = np.concatenate(samples)
    low, high = np.percentile(pixels, 0.5, axis=0), np.percentile(pixels, 99.5, axis=0)
    clipped = np.clip(pixels, low, high)
    fp = {
        "images": len(dataset_dicts), "sampled": len(picked),
        "height": _stats(heights), "width": _stats(widths),
        "short_side": _stats([min(h, w) for h, w in zip(heights, widths)]),
        "long_side": _stats([max(h, w) for h, w in zip(heights, widths)]),
        "channels": sorted(channels), "bit_depth": sorted(depths), "format": image_format,
        "intensity": {"mean": pixels.mean(0).tolist(), "std": pixels.std(0).tolist(),
                      "percentile_0.5": low.tolist(), "percentile_99.5": high.tolist(),
                      "clipped_mean": clipped.mean(0).tolist(), "clipped_std": clipped.std(0).tolist()},
    }
    if class_pixels:
        n = max(num_classes, max(class_pixels) + 1)
        counts = [class_pixels.get(k, 0) for k in range(n)]
        fp["class_pixels"] = counts
        fp["class_frequency"] = (np.asarray(counts) / max(1, sum(counts))).tolist()
    if objects_per_image:
        fp["objects_per_image"] = _stats(objects_per_image)
        if object_sizes:
            p = np.percentile(object_sizes, [5, 50, 95])
            fp["object_size"] = {"p5": float(p[0]), "p50": float(p[1]), "p95": float(p[2]), "count": len(object_sizes)}
    return fp
