#!/usr/bin/env python
"""Make a COCO panoptic dataset from what you have: a COCO instances json (the things) and a folder of
semantic label maps (every class; label value k is CLASSES[k]), paired with the images by file stem.

Each pixel becomes the instance that covers it; else the stuff class of its label (the CLASSES that are not
categories of the json); else void: a thing-class label with no instance, or the ignore label. Writes, under
OUT: panoptic.json and panoptic/*.png (COCO panoptic format, for PQ) and panoptic_semseg/*.png (the
"separated" semantic maps that PanopticFPN's semantic head trains on: 0 = things, 1.. = stuff, 255 = void).
Overlapping instances (unless --overlaps says which is on top), a label that is no class, an instance over ignored pixels, a missing or mis-sized
label map: an error naming the file, and nothing written.

Example:
    python tools/make_panoptic.py --instances train.json --semantic labels/ --classes "background,road,car" \\
        --output panoptic_train/
    python tools/train_net.py --config-file configs/Shapes-PanopticSegmentation/panoptic_unet_R_18_FPN_scratch_bs4_600it.yaml \\
        --coco-panoptic my_train panoptic_train/panoptic.json images/ panoptic_train/panoptic panoptic_train/panoptic_semseg \\
        DATASETS.TRAIN "('my_train',)" ...
"""
import argparse
import sys

from seg_d2.data.datasets.coco_panoptic import OVERLAPS, make_coco_panoptic
from seg_d2.data.image_io import DataFileError
from seg_d2.data.user_datasets import parse_classes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", required=True, help="COCO instances json: its categories are the things")
    parser.add_argument("--semantic", required=True, help="folder of label maps (PNG/TIFF/.npy), one per image")
    parser.add_argument("--classes", required=True,
                        help="the label maps' classes, in label order: 'a,b,c' or a .txt/.json file of names")
    parser.add_argument("--output", required=True, help="output folder (must not exist, unless --overwrite)")
    parser.add_argument("--ignore-label", type=int, default=255, help="label of unlabelled pixels (void)")
    parser.add_argument("--overlaps", choices=OVERLAPS, default="error",
                        help="instances that overlap: an error (default), or which one keeps the shared pixels: the "
                             "later annotation (the json's drawing order) or the smaller one")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    args = parser.parse_args(argv)
    try:
        panoptic = make_coco_panoptic(args.instances, args.semantic, parse_classes(args.classes), args.output,
                                      ignore_label=args.ignore_label, overlaps=args.overlaps,
                                      overwrite=args.overwrite)
    except (DataFileError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    things = [c["name"] for c in panoptic["categories"] if c["isthing"]]
    stuff = [c["name"] for c in panoptic["categories"] if not c["isthing"]]
    n_seg = sum(len(a["segments_info"]) for a in panoptic["annotations"])
    print(f"Wrote {args.output}: {len(panoptic['annotations'])} images, {n_seg} segments; things {things}, stuff {stuff}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
