"""Write a synthetic labelled dataset: new label maps (seg_d2.data.mask_augment) turned into images by a trained
label map -> image generator (Pix2Pix), as a semantic folder dataset (images/, labels/, classes.txt) that
train_net's ``--sem-seg-folder`` reads, optionally with a COCO instances json (RLE) for ``--coco-dataset``, and a
manifest of how it was made."""
import datetime
import hashlib
import json
import logging
import os
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch

from .datasets._atomic import check_output_folder, staged_folder
from .mask_augment import LabelMapSampler, label_map_instances

__all__ = ["SYNTHETIC_LAYOUT", "SyntheticDataError", "synthesize_dataset"]

logger = logging.getLogger(__name__)

# what synthesize_dataset writes under its output folder
SYNTHETIC_LAYOUT = {"images": "images", "labels": "labels", "classes": "classes.txt", "instances": "instances.json",
                    "manifest": "manifest.json"}


class SyntheticDataError(ValueError):
    """A synthesis that cannot be made: the output folder holds a dataset, a source label map the generator cannot
    take (the message names the file)."""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_file(image: np.ndarray, image_format: str, max_pixel_value: float) -> np.ndarray:
    """C x H x W generated image in the model's format -> what cv2.imwrite takes (BGR or gray; 8- or 16-bit)."""
    dtype = np.uint8 if max_pixel_value <= 255 else np.uint16
    image = np.clip(np.rint(image.transpose(1, 2, 0)), 0, np.iinfo(dtype).max).astype(dtype)
    if image.shape[2] == 1:
        return image[:, :, 0]
    return image[:, :, ::-1] if image_format == "RGB" else image


def synthesize_dataset(model, source: Sequence[Tuple[str, np.ndarray]], classes: Sequence[str], out_dir: str, *,
                       num: int, seed: int = 0, mask_mode: str = "warp+paste", object_classes: Sequence[int] = (),
                       vertical_flip: bool = False, instances: bool = False, image_format: str = "BGR",
                       batch_size: int = 8, overwrite: bool = False, provenance: Optional[dict] = None,
                       mask_vae=None) -> dict:
    """Write ``num`` generated image/label pairs to ``out_dir``.

    Args:
        model: a Pix2Pix model (eval mode is set here) with its weights loaded.
        source: (file, label map) of the training label maps the new ones are drawn from, already in the model's
            labels (its ignore value for unlabelled pixels).
        classes: the class names (label value k is ``classes[k]``), written to classes.txt.
        mask_mode, object_classes, vertical_flip, mask_vae: the :class:`LabelMapSampler`'s (``mask_vae``: a trained
            LabelMapVAE for ``mask_mode`` "vae").
        instances: also write instances.json: the connected objects of ``object_classes`` as COCO RLE.
        provenance: recorded in the manifest (the generator's config and weights).

    Every source label map is checked before anything is generated; everything is written in a temporary folder
    that replaces ``out_dir`` only when complete.

    Returns:
        The manifest (also written as manifest.json).
    """
    check_output_folder(out_dir, overwrite, SyntheticDataError)
    if num < 1:
        raise SyntheticDataError(f"Asked for {num} pairs: give at least 1")
    unknown = [c for c in object_classes if not 0 <= c < len(classes)]
    if unknown:
        raise SyntheticDataError(f"Object classes {unknown} are not classes of the generator (0..{len(classes) - 1})")
    for name, label in source:  # every file, before a single image is generated
        model.check_input({"sem_seg": torch.as_tensor(label), "file_name": name})
    if mask_vae is not None:
        mask_vae.eval()
    sampler = LabelMapSampler([label for _, label in source], object_classes=object_classes, mode=mask_mode,
                              vertical_flip=vertical_flip, vae=mask_vae)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.eval()
    max_pixel_value = getattr(model, "max_pixel_value", 255.0)
    coco_images, coco_annotations = [], []
    with staged_folder(out_dir) as tmp:
        for folder in ("images", "labels"):
            os.makedirs(os.path.join(tmp, SYNTHETIC_LAYOUT[folder]))
        for start in range(0, num, batch_size):
            labels = [sampler.sample(rng) for _ in range(min(batch_size, num - start))]
            with torch.no_grad():
                outputs = model([{"sem_seg": torch.as_tensor(lab), "file_name": f"synthetic label map {start + k}"}
                                 for k, lab in enumerate(labels)])
            for k, (lab, out) in enumerate(zip(labels, outputs)):
                stem = f"{start + k:06d}"
                image = _to_file(out["image"].cpu().numpy(), image_format, max_pixel_value)
                cv2.imwrite(os.path.join(tmp, SYNTHETIC_LAYOUT["images"], stem + ".png"), image)
                cv2.imwrite(os.path.join(tmp, SYNTHETIC_LAYOUT["labels"], stem + ".png"),
                            lab.astype(np.uint8 if lab.max(initial=0) < 256 else np.uint16))
                if instances:
                    image_id = start + k + 1
                    coco_images.append({"id": image_id, "file_name": stem + ".png", "height": int(lab.shape[0]),
                                        "width": int(lab.shape[1])})
                    for c, mask in label_map_instances(lab, object_classes):
                        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                        coco_annotations.append({
                            "id": len(coco_annotations) + 1, "image_id": image_id,
                            "category_id": object_classes.index(c) + 1, "iscrowd": 0,
                            "area": float(mask_util.area(rle)), "bbox": mask_util.toBbox(rle).tolist(),
                            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
        with open(os.path.join(tmp, SYNTHETIC_LAYOUT["classes"]), "w") as f:
            f.write("\n".join(classes) + "\n")
        if instances:
            categories = [{"id": i + 1, "name": classes[c]} for i, c in enumerate(object_classes)]
            with open(os.path.join(tmp, SYNTHETIC_LAYOUT["instances"]), "w") as f:
                json.dump({"images": coco_images, "annotations": coco_annotations, "categories": categories}, f)
        manifest = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "num": num, "seed": seed, "classes": list(classes),
            "mask_sampler": {"mode": mask_mode, "object_classes": [classes[c] for c in object_classes],
                             "vertical_flip": vertical_flip, "alpha": sampler.alpha, "sigma": sampler.sigma,
                             "max_objects": sampler.max_objects},
            "source_label_maps": len(source), "instances": instances,
            "generator": dict(provenance or {}),
        }
        weights = manifest["generator"].get("weights")
        if weights and os.path.isfile(weights):
            manifest["generator"]["weights_sha256"] = _sha256(weights)
        with open(os.path.join(tmp, SYNTHETIC_LAYOUT["manifest"]), "w") as f:
            json.dump(manifest, f, indent=2)
    logger.info(f"Wrote {num} synthetic pairs to {out_dir} (label maps: {mask_mode} of {len(source)} training maps)")
    return manifest
