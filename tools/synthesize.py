#!/usr/bin/env python
"""Write N synthetic image/label pairs from a trained label map -> image generator (configs/*-ImageSynthesis/,
MODEL.META_ARCHITECTURE "Pix2Pix"): new label maps are drawn from the training label maps (elastic warp + object
copy-paste; --masks copy for the maps unchanged; --masks vae: sampled from a LabelMapVAE trained by train_net on
the same maps, --mask-config/--mask-weights), and the generator paints each.

Output (OUT): images/*.png, labels/*.png, classes.txt (a semantic folder dataset for train_net's --sem-seg-folder),
with --instances instances.json (the objects as COCO RLE, for --coco-dataset), and manifest.json (the generator's
config, weights and their sha256, the seed and the sampler's settings). OUT must not hold anything unless
--overwrite; it is written only once complete.

Example (the generator trained by train_net on your data; its run's config.yaml registers the same datasets):
    python tools/synthesize.py --config-file output/buildings_pix2pix/config.yaml \\
        --weights output/buildings_pix2pix/model_final.pth --num 200 --output synthetic_buildings/
    python tools/train_net.py --config-file configs/OwnData-SemanticSegmentation/unet_R_50_bs8_6k.yaml \\
        --sem-seg-folder real_train ... --sem-seg-folder synthetic synthetic_buildings/images \\
        synthetic_buildings/labels synthetic_buildings/classes.txt \\
        DATASETS.TRAIN "('real_train', 'synthetic')" SEG_D2.DATASETS.TRAIN_WEIGHTS "[3.0, 1.0]" ...
"""
import argparse
import logging
import os
import sys

import numpy as np

import seg_d2  # noqa: F401  (registers seg_d2's models and datasets)

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

from seg_d2 import apply_cpu_fallback, get_cfg, model_zoo
from seg_d2.data import (
    DataFileError, add_dataset_arguments, check_datasets_registered, check_sem_seg_model_and_data,
    merge_dataset_arguments, reads_label_maps, register_datasets_from_config,
)
from seg_d2.data.datasets._atomic import check_output_folder
from seg_d2.data.mask_augment import LabelMapSampler
from seg_d2.data.sem_seg_io import read_label_map
from seg_d2.data.synthesis import SyntheticDataError, synthesize_dataset
from seg_d2.engine import CheckpointError, SegD2Checkpointer
from seg_d2.modeling.pix2pix import LabelMapError


def argument_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the generator's config (its training run's config.yaml)")
    parser.add_argument("--weights", required=True, help="the generator's weights (e.g. OUTPUT_DIR/model_final.pth)")
    parser.add_argument("--output", required=True, help="output folder (must not hold anything, unless --overwrite)")
    parser.add_argument("--num", type=int, default=200, help="pairs to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the label map sampler")
    parser.add_argument("--masks", choices=LabelMapSampler.MODES, default="warp+paste",
                        help="new label maps: training maps flipped and elastically warped, with objects pasted from "
                             "another map (warp+paste), only warped, the training maps as they are (copy), or sampled "
                             "from a label map VAE (vae: --mask-config, --mask-weights)")
    parser.add_argument("--mask-config", default=None, help="--masks vae: the LabelMapVAE's config (its run's config.yaml)")
    parser.add_argument("--mask-weights", default=None, help="--masks vae: the LabelMapVAE's weights")
    parser.add_argument("--object-classes", default=None,
                        help="comma-separated class names that are objects (pasted between maps, and the instances of "
                             "--instances); default: every class but the first (the background)")
    parser.add_argument("--vertical-flip", action="store_true", help="also flip label maps upside down (aerial, cells)")
    parser.add_argument("--instances", action="store_true", help="also write instances.json (COCO, RLE masks)")
    parser.add_argument("--source", default=None,
                        help="comma-separated datasets whose label maps are the sampler's; default: DATASETS.TRAIN")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if it holds anything")
    parser.add_argument("opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE config options")
    return add_dataset_arguments(parser)


def setup(args):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.resolve_config_file(args.config_file))
    cfg.merge_from_list(args.opts)
    merge_dataset_arguments(cfg, args)
    apply_cpu_fallback(cfg)
    if not reads_label_maps(cfg):
        raise SyntheticDataError(f"{args.config_file} is a {cfg.MODEL.META_ARCHITECTURE} config: synthesize.py needs a "
                                 f"label map -> image generator (MODEL.META_ARCHITECTURE 'Pix2Pix', "
                                 f"configs/*-ImageSynthesis/)")
    register_datasets_from_config(cfg)
    cfg.freeze()
    return cfg


def load_mask_vae(args, cfg):
    """--masks vae: the LabelMapVAE of --mask-config/--mask-weights, checked against the generator's classes."""
    if args.masks != "vae":
        if args.mask_config or args.mask_weights:
            raise SyntheticDataError("--mask-config/--mask-weights go with --masks vae")
        return None
    if not (args.mask_config and args.mask_weights):
        raise SyntheticDataError("--masks vae needs the VAE's --mask-config and --mask-weights (a LabelMapVAE run)")
    vae_cfg = get_cfg()
    vae_cfg.merge_from_file(model_zoo.resolve_config_file(args.mask_config))
    apply_cpu_fallback(vae_cfg)
    if vae_cfg.MODEL.META_ARCHITECTURE != "LabelMapVAE":
        raise SyntheticDataError(f"--mask-config {args.mask_config} is a {vae_cfg.MODEL.META_ARCHITECTURE} config, not a "
                                 f"LabelMapVAE's")
    if vae_cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
        raise SyntheticDataError(f"The VAE of {args.mask_config} has {vae_cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} classes, "
                                 f"the generator {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}")
    vae = build_model(vae_cfg)
    SegD2Checkpointer(vae, allow_pickle=vae_cfg.SEG_D2.CHECKPOINT.ALLOW_PICKLE, strict_shapes=True).load(args.mask_weights)
    return vae


def source_label_maps(cfg, names):
    """(file, label map in the model's labels) of every image of the datasets ``names``, and their classes."""
    check_datasets_registered(cfg, names)
    check_sem_seg_model_and_data(cfg, names)  # the class count against the generator's
    ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    maps, classes = [], None
    for name in names:
        meta = MetadataCatalog.get(name)
        classes = classes or list(meta.get("stuff_classes", []))
        dataset_ignore = int(meta.get("ignore_label", ignore))
        for d in DatasetCatalog.get(name):
            if "sem_seg_file_name" not in d:
                raise SyntheticDataError(f"Dataset '{name}' has no label maps ({d['file_name']} has no sem_seg_file_name)")
            label = read_label_map(d["sem_seg_file_name"]).astype(np.int64)
            maps.append((d["sem_seg_file_name"], np.where(label == dataset_ignore, ignore, label)))
    if not classes:
        classes = [str(k) for k in range(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)]
    return maps, classes


def main(argv=None):
    args = argument_parser().parse_args(argv)
    setup_logger(name="seg_d2")
    try:
        check_output_folder(args.output, args.overwrite, SyntheticDataError)  # before any long work
        cfg = setup(args)
        names = args.source.split(",") if args.source else list(cfg.DATASETS.TRAIN)
        source, classes = source_label_maps(cfg, names)
        objects = args.object_classes.split(",") if args.object_classes else classes[1:]
        missing = [c for c in objects if c not in classes]
        if missing:
            raise SyntheticDataError(f"--object-classes {missing} are not classes of {names}: {classes}")
        model = build_model(cfg)
        # strict: weights of another model (or config) are an error, not a generator with random layers
        SegD2Checkpointer(model, allow_pickle=cfg.SEG_D2.CHECKPOINT.ALLOW_PICKLE, strict_shapes=True).load(args.weights)
        vae = load_mask_vae(args, cfg)
        manifest = synthesize_dataset(
            model, source, classes, args.output, num=args.num, seed=args.seed, mask_mode=args.masks,
            object_classes=[classes.index(c) for c in objects], vertical_flip=args.vertical_flip,
            instances=args.instances, image_format=cfg.INPUT.FORMAT, overwrite=args.overwrite, mask_vae=vae,
            provenance={"config": os.path.abspath(args.config_file), "weights": os.path.abspath(args.weights),
                        "meta_architecture": cfg.MODEL.META_ARCHITECTURE, "source_datasets": names,
                        **({"mask_vae_config": os.path.abspath(args.mask_config),
                            "mask_vae_weights": os.path.abspath(args.mask_weights)} if vae is not None else {})})
    except (CheckpointError, DataFileError, LabelMapError, SyntheticDataError, ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = args.output
    logging.getLogger("seg_d2").info(
        f"Wrote {manifest['num']} pairs to {out}. Train on them with: --sem-seg-folder NAME {out}/images {out}/labels "
        f"{out}/classes.txt" + (f" (instances: --coco-dataset NAME {out}/instances.json {out}/images)"
                                if args.instances else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
