"""Your own datasets from the command line or the config, no Python needed.

``tools/train_net.py`` registers, before training, the datasets named by

- ``--coco-dataset NAME JSON IMAGE_ROOT`` (config: ``SEG_D2.DATASETS.COCO``, a list of
  ``[name, json_file, image_root]``): a COCO instances json, checked (schema, ids, masks, image files;
  ``SEG_D2.DATASETS.COCO_VALIDATION`` "strict" or "lenient") and registered with ``evaluator_type``
  "coco"; its categories give ``thing_classes``;
- ``--sem-seg-folder NAME IMAGE_DIR LABEL_DIR CLASSES`` (``SEG_D2.DATASETS.SEM_SEG_FOLDER``, a list of
  ``[name, image_dir, label_dir, classes]`` or ``[..., ignore_label]``): images and label maps paired
  by file stem (:func:`~seg_d2.data.datasets.register_sem_seg_folder`), ignore label 255 unless given;
  CLASSES is "background,road,car" or a file of names (``.txt``: one per line; ``.json``: a list);
- ``--coco-panoptic NAME JSON IMAGE_ROOT PANOPTIC_ROOT [SEM_SEG_ROOT]`` (``SEG_D2.DATASETS.COCO_PANOPTIC``): a
  COCO panoptic json and PNG folder (as ``tools/make_panoptic.py`` writes them), with the separated semantic
  maps to train PanopticFPN on (:func:`~seg_d2.data.datasets.register_coco_panoptic_dataset`), registered
  with ``evaluator_type`` "coco_panoptic_seg" (PQ, AP, mIoU);
- ``--dataset-module FILE.py`` (``SEG_D2.DATASETS.MODULES``): your own registration code, imported
  (a file, or a module name importable from the current folder).

Each flag is repeatable and appends to its config key; relative paths are from the current folder.
Use the names in ``DATASETS.TRAIN`` / ``DATASETS.TEST``.
"""
import argparse
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
from typing import Dict, List, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from .datasets.coco_instances import VALIDATION_MODES, register_coco_dataset, validate_coco_json
from .datasets.coco_panoptic import PanopticDataError, register_coco_panoptic_dataset
from .datasets.sem_seg_folder import register_sem_seg_folder
from .sem_seg_io import SemSegDataError

__all__ = ["add_dataset_arguments", "merge_dataset_arguments", "restore_config_options", "parse_classes", "load_dataset_module",
           "register_datasets_from_config"]

logger = logging.getLogger(__name__)
_REGISTERED: Dict[str, tuple] = {}  # name -> what it was registered from (same again: nothing to do)
_LOADED_MODULES: Dict[str, object] = {}


def add_dataset_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add --coco-dataset, --sem-seg-folder, --coco-panoptic and --dataset-module to a (detectron2) argument parser."""
    group = parser.add_argument_group(
        "your own datasets", "registered before training (repeatable); use their names in DATASETS.TRAIN / "
        "DATASETS.TEST. These flags go before the KEY VALUE options.")
    group.add_argument("--coco-dataset", nargs=3, action="append", default=[], metavar=("NAME", "JSON", "IMAGE_ROOT"),
                       help="a COCO instances json and its image folder (SEG_D2.DATASETS.COCO)")
    group.add_argument("--sem-seg-folder", nargs=4, action="append", default=[],
                       metavar=("NAME", "IMAGE_DIR", "LABEL_DIR", "CLASSES"),
                       help="images and label maps paired by file stem; CLASSES: 'a,b,c' or a .txt/.json file of "
                            "names; ignore label 255 (SEG_D2.DATASETS.SEM_SEG_FOLDER)")
    group.add_argument("--coco-panoptic", nargs="+", action=_CocoPanopticAction, default=[],
                       metavar="NAME JSON IMAGE_ROOT PANOPTIC_ROOT [SEM_SEG_ROOT]",
                       help="a COCO panoptic json, its images and PNGs, and (to train PanopticFPN) its separated "
                            "semantic maps, as tools/make_panoptic.py writes them (SEG_D2.DATASETS.COCO_PANOPTIC)")
    group.add_argument("--dataset-module", action="append", default=[], metavar="FILE.py",
                       help="Python file (or module) registering datasets, imported first (SEG_D2.DATASETS.MODULES)")
    return parser


_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")  # MODEL.WEIGHTS, not a path


class _CocoPanopticAction(argparse.Action):
    """Appends NAME JSON IMAGE_ROOT PANOPTIC_ROOT [SEM_SEG_ROOT]. With nargs "+" (4 or 5 values) argparse also
    hands it the KEY VALUE options that follow; they are set aside in ``dataset_flag_overflow`` and put back
    before the options by :func:`restore_config_options`."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) < 4:
            parser.error(f"{option_string} takes NAME JSON IMAGE_ROOT PANOPTIC_ROOT [SEM_SEG_ROOT], got {values}")
        n = 5 if len(values) >= 5 and not _CONFIG_KEY.match(values[4]) else 4
        setattr(namespace, self.dest, list(getattr(namespace, self.dest, None) or []) + [values[:n]])
        setattr(namespace, "dataset_flag_overflow", list(getattr(namespace, "dataset_flag_overflow", [])) + values[n:])


def restore_config_options(args):
    """Put the KEY VALUE options that --coco-panoptic took back at the front of ``args.opts``."""
    overflow = getattr(args, "dataset_flag_overflow", [])
    if overflow:
        args.opts = overflow + list(args.opts)
        args.dataset_flag_overflow = []
    return args


def merge_dataset_arguments(cfg, args) -> None:
    """Append the flags of :func:`add_dataset_arguments` to ``cfg.SEG_D2.DATASETS`` (paths made absolute,
    so that the OUTPUT_DIR's config.yaml works from any folder)."""
    datasets = cfg.SEG_D2.DATASETS
    for name, json_file, image_root in getattr(args, "coco_dataset", None) or []:
        datasets.COCO = list(datasets.COCO) + [[name, os.path.abspath(json_file), os.path.abspath(image_root)]]
    for name, image_dir, label_dir, classes in getattr(args, "sem_seg_folder", None) or []:
        if os.path.isfile(classes):
            classes = os.path.abspath(classes)
        datasets.SEM_SEG_FOLDER = list(datasets.SEM_SEG_FOLDER) + [
            [name, os.path.abspath(image_dir), os.path.abspath(label_dir), classes]]
    for entry in getattr(args, "coco_panoptic", None) or []:
        if len(entry) not in (4, 5):
            raise ValueError(f"--coco-panoptic takes NAME JSON IMAGE_ROOT PANOPTIC_ROOT [SEM_SEG_ROOT], got {len(entry)} "
                             f"values: {entry}")
        datasets.COCO_PANOPTIC = list(datasets.COCO_PANOPTIC) + [[entry[0]] + [os.path.abspath(p) for p in entry[1:]]]
    for module in getattr(args, "dataset_module", None) or []:
        if module.endswith(".py") or os.path.exists(module):
            module = os.path.abspath(module)
        datasets.MODULES = list(datasets.MODULES) + [module]


def parse_classes(spec) -> List[str]:
    """Class names from "a,b,c", a list, or a file: ``.json`` (a list of names, or an object with
    "stuff_classes" or "classes") or text (one name per line; blank lines and ``#`` comments skipped)."""
    if isinstance(spec, (list, tuple)):
        names = [str(c).strip() for c in spec]
    elif os.path.isfile(spec):
        with open(spec) as f:
            if spec.endswith(".json"):
                data = json.load(f)
                if isinstance(data, dict):
                    data = data.get("stuff_classes", data.get("classes"))
                if not isinstance(data, list):
                    raise ValueError(f"Classes file {spec}: expected a json list of class names (or an object "
                                     f"with 'stuff_classes')")
                names = [str(c).strip() for c in data]
            else:
                names = [line.split("#")[0].strip() for line in f]
                names = [n for n in names if n]
    else:
        names = [c.strip() for c in str(spec).split(",")]
    if not names or any(not n for n in names):
        raise ValueError(f"Classes {spec!r}: expected names separated by commas ('background,road,car') or a "
                         f".txt/.json file of names (no such file: {os.path.abspath(str(spec))})")
    if len(set(names)) != len(names):
        raise ValueError(f"Classes {spec!r}: a class name appears twice: {names}")
    return names


def load_dataset_module(module: str):
    """Import a Python file (or a module name importable from the current folder) once, for the datasets
    it registers; returns the module."""
    if module in _LOADED_MODULES:
        return _LOADED_MODULES[module]
    if module.endswith(".py") or os.sep in module or os.path.exists(module):
        path = os.path.abspath(module)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Dataset module {module} (SEG_D2.DATASETS.MODULES / --dataset-module) does not exist")
        name = "seg_d2_user_datasets_" + "".join(c if c.isalnum() else "_" for c in os.path.splitext(path)[0])
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        sys.path.insert(0, os.path.dirname(path))  # its own imports of neighbouring files
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[name]
            raise
        finally:
            sys.path.remove(os.path.dirname(path))
    else:
        sys.path.insert(0, os.getcwd())
        try:
            mod = importlib.import_module(module)
        finally:
            sys.path.remove(os.getcwd())
    _LOADED_MODULES[module] = mod
    logger.info(f"Imported dataset module {module}")
    return mod


def _register_once(name: str, source: tuple, register) -> bool:
    if _REGISTERED.get(name) == source:
        return False
    if name in DatasetCatalog.list():
        raise ValueError(f"Cannot register dataset '{name}' from {source[0]}: the name is taken (by seg_d2, "
                         f"detectron2 or an earlier registration); choose another name.")
    register()
    _REGISTERED[name] = source
    return True


def _entries(cfg_list, key: str, lengths: Sequence[int]) -> List[list]:
    out = []
    for entry in cfg_list:
        if not isinstance(entry, (list, tuple)) or len(entry) not in lengths:
            want = " or ".join(str(n) for n in lengths)
            raise ValueError(f"{key}: each entry must be a list of {want} values, got {entry!r}")
        out.append(list(entry))
    return out


def _register_coco(name: str, json_file: str, image_root: str, validation: str) -> None:
    # COCOFormatError now, naming the file, not at iteration 0; parsed once, reused on loading
    dataset = validate_coco_json(json_file, image_root, validation=validation)
    register_coco_dataset(name, json_file, image_root, validation=validation)
    # what detectron2's load_coco_json sets on loading; known now for the class-count checks
    cat_ids = sorted(c["id"] for c in dataset["categories"])
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    MetadataCatalog.get(name).set(thing_classes=[names[i] for i in cat_ids],
                                  thing_dataset_id_to_contiguous_id={i: k for k, i in enumerate(cat_ids)})
    n_rle = sum(isinstance(a.get("segmentation"), dict) for a in dataset["annotations"])
    logger.info(f"Registered COCO dataset '{name}': {json_file} ({len(dataset['images'])} images, "
                f"{len(dataset['annotations'])} annotations{f', {n_rle} RLE masks' if n_rle else ''}, "
                f"{len(cat_ids)} categories), images in {image_root}")


def register_datasets_from_config(cfg) -> List[str]:
    """Register the datasets of ``cfg.SEG_D2.DATASETS`` (COCO, SEM_SEG_FOLDER, COCO_PANOPTIC, then MODULES imported).

    Calling it again with the same entries does nothing; a name already registered otherwise is an error.

    Returns:
        The names registered from COCO, SEM_SEG_FOLDER and COCO_PANOPTIC entries.

    Raises:
        ValueError: a malformed entry, a name already taken, bad classes.
        COCOFormatError: an invalid COCO json or image files (the file named).
        PanopticDataError: a missing or unreadable panoptic json or folder (the file named).
    """
    datasets = cfg.SEG_D2.DATASETS
    names = []
    validation = datasets.get("COCO_VALIDATION", "strict")
    if validation not in VALIDATION_MODES:
        raise ValueError(f"SEG_D2.DATASETS.COCO_VALIDATION {validation!r}: choose one of {VALIDATION_MODES}")
    for name, json_file, image_root in _entries(datasets.COCO, "SEG_D2.DATASETS.COCO", (3,)):
        source = ("--coco-dataset / SEG_D2.DATASETS.COCO", json_file, image_root, validation)
        _register_once(name, source, lambda: _register_coco(name, json_file, image_root, validation))
        names.append(name)
    for entry in _entries(datasets.SEM_SEG_FOLDER, "SEG_D2.DATASETS.SEM_SEG_FOLDER", (4, 5)):
        name, image_dir, label_dir, classes = entry[:4]
        ignore_label = int(entry[4]) if len(entry) == 5 else 255
        classes = parse_classes(classes)
        for what, folder in (("image", image_dir), ("label map", label_dir)):
            if not os.path.isdir(folder):
                raise SemSegDataError(f"Dataset '{name}': the {what} folder {folder} does not exist "
                                      f"(--sem-seg-folder / SEG_D2.DATASETS.SEM_SEG_FOLDER; relative to {os.getcwd()})")
        source = ("--sem-seg-folder / SEG_D2.DATASETS.SEM_SEG_FOLDER", image_dir, label_dir, tuple(classes), ignore_label)

        def register(name=name, image_dir=image_dir, label_dir=label_dir, classes=classes, ignore_label=ignore_label):
            register_sem_seg_folder(name, image_dir, label_dir, classes, ignore_label)
            logger.info(f"Registered semantic dataset '{name}': images {image_dir}, label maps {label_dir}, "
                        f"{len(classes)} classes {classes}, ignore label {ignore_label}")

        _register_once(name, source, register)
        names.append(name)
    for entry in _entries(datasets.get("COCO_PANOPTIC", []), "SEG_D2.DATASETS.COCO_PANOPTIC", (4, 5)):
        name, panoptic_json, image_root, panoptic_root = entry[:4]
        sem_seg_root = entry[4] if len(entry) == 5 else None
        for what, folder in (("image", image_root), ("panoptic PNG", panoptic_root), ("semantic map", sem_seg_root)):
            if folder is not None and not os.path.isdir(folder):
                raise PanopticDataError(f"Dataset '{name}': the {what} folder {folder} does not exist (--coco-panoptic / "
                                        f"SEG_D2.DATASETS.COCO_PANOPTIC; relative to {os.getcwd()})")
        source = ("--coco-panoptic / SEG_D2.DATASETS.COCO_PANOPTIC", *entry)

        def register(name=name, entry=entry, sem_seg_root=sem_seg_root):
            register_coco_panoptic_dataset(name, entry[1], entry[2], entry[3], sem_seg_root)
            meta = MetadataCatalog.get(name)
            logger.info(f"Registered COCO panoptic dataset '{name}': {entry[1]}, {len(meta.thing_classes)} thing classes "
                        f"{meta.thing_classes}, stuff {meta.stuff_classes[1:]}, PNGs {entry[3]}"
                        + (f", semantic maps {sem_seg_root}" if sem_seg_root else " (no semantic maps: evaluation only)"))

        _register_once(name, source, register)
        names.append(name)
    for module in datasets.MODULES:
        load_dataset_module(module)
    return names
