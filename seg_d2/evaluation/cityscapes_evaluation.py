"""Cityscapes evaluation with cityscapesscripts' own evaluation functions.

Both evaluators write the predictions in the official result formats and score them by calling
cityscapesscripts' evaluation functions, configured through their ``args`` objects; the result
folder can be passed unchanged to cityscapesscripts' ``csEvalPixelLevelSemanticLabeling`` /
``csEvalInstanceLevelSemanticLabeling`` (``CITYSCAPES_RESULTS=<folder>``), which give the same numbers.
Two things of cityscapesscripts 2.3.0 are worked around without changing a number: it calls
``np.in1d`` (gone in NumPy 2.4; its modules get a numpy with ``in1d``), and its instance AP crashes on
a class whose predictions all lie on ignored pixels (see ``_evaluate_matches_per_cell``).

Unlike detectron2's Cityscapes evaluators, they do not import cityscapesscripts through a module
path that only exists inside Meta (detectron2 #5436), they run on CPU (detectron2 #3810), and in
multi-process evaluation every process keeps its predictions in memory (compressed) and gathers
them to the main process through ``detectron2.utils.comm`` instead of sharing a temporary folder,
so they also work across machines.

Result formats:

- semantic: ``<city>/<city>_<seq>_<frame>_pred.png``, labelIds (not trainIds) of each pixel;
- instance: ``<city>/<city>_<seq>_<frame>_pred.txt``, one line per instance
  ``masks/<mask png> <labelId> <confidence>``, with binary masks in ``<city>/masks/``.
"""
import contextlib
import copy
import glob
import io
import itertools
import logging
import os
import shutil
import tempfile
import types
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from cityscapesscripts.helpers.labels import category2labels, name2label, trainId2label

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from ..data.datasets.cityscapes import GT_SUFFIXES, IMAGE_SUFFIX, STUFF_CLASSES, THING_CLASSES

logger = logging.getLogger(__name__)

SEM_SEG_RESULTS = "cityscapes_sem_seg_results"
INSTANCE_RESULTS = "cityscapes_instance_results"


class _NumpyWithIn1d(types.ModuleType):
    """numpy, plus ``np.in1d`` (removed in NumPy 2.4), which cityscapesscripts 2.3.0 calls."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def in1d(ar1, ar2, assume_unique=False, invert=False):
        return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique, invert=invert)


def _cityscapes_eval_module(name: str):
    """Import ``cityscapesscripts.evaluation.<name>``, giving it ``np.in1d`` where NumPy lacks it.

    Only that module's ``np`` global is replaced; numpy itself is left alone.
    """
    import importlib

    module = importlib.import_module(f"cityscapesscripts.evaluation.{name}")
    if not hasattr(np, "in1d") and not isinstance(module.np, _NumpyWithIn1d):
        module.np = _NumpyWithIn1d("numpy")
    return module


@contextlib.contextmanager
def _script_errors(script: str):
    """cityscapesscripts reports errors with print + sys.exit: turn them into a RuntimeError."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            yield
    except SystemExit:
        lines = [l for l in out.getvalue().splitlines() if l.strip()]
        msg = next((l for l in reversed(lines) if l.startswith("ERROR")), lines[-1] if lines else "(no message)")
        raise RuntimeError(f"cityscapesscripts' {script} failed: {msg}") from None


def _fresh_args(module, **overrides):
    """A copy of the module's default ``args``, so that its global state is never modified."""
    args = copy.copy(module.args)
    args.predictionPath, args.predictionWalk = None, None
    args.colorized, args.quiet = False, True
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def evaluate_pixel_level(prediction_files: Sequence[str], gt_files: Sequence[str], export_file: Optional[str] = None):
    """cityscapesscripts' ``evalPixelLevelSemanticLabeling.evaluateImgLists`` on the given lists
    (labelIds predictions, ``*_gtFine_labelIds.png``; the ``instanceIds`` beside them give the iIoU).
    Returns its result dict (fractions, not percentages)."""
    cs = _cityscapes_eval_module("evalPixelLevelSemanticLabeling")
    args = _fresh_args(cs, evalInstLevelScore=True, evalPixelAccuracy=False, bold="", nocol="",
                       JSONOutput=export_file is not None, exportFile=export_file)
    with _script_errors("evalPixelLevelSemanticLabeling"):
        return cs.evaluateImgLists(list(prediction_files), list(gt_files), args)


def evaluate_instance_level(prediction_files: Sequence[str], gt_files: Sequence[str], prediction_root: str,
                            work_dir: str, export_file: Optional[str] = None):
    """cityscapesscripts' ``evalInstanceLevelSemanticLabeling`` on the given lists (``*_pred.txt``,
    ``*_gtFine_instanceIds.png``). Returns its result dict (``averages``: ``allAp``, ``allAp50%``, ...).

    Runs the steps of its ``evaluateImgLists`` one by one, to keep its ground-truth cache
    (``gtInstances.json``) in ``work_dir`` and to skip the ``matches.json`` it writes into the
    current directory (which NumPy 2's integers also make it fail to write).
    """
    cs = _cityscapes_eval_module("evalInstanceLevelSemanticLabeling")
    args = _fresh_args(cs, predictionPath=os.path.abspath(prediction_root), JSONOutput=False, csv=False,
                       distanceAvailable=False, gtInstancesFile=os.path.join(work_dir, "gtInstances.json"))
    if os.path.exists(args.gtInstancesFile):
        os.remove(args.gtInstancesFile)  # a stale cache would give wrong numbers
    with _script_errors("evalInstanceLevelSemanticLabeling"):
        cs.setInstanceLabels(args)
        gt_instances = cs.getGtInstances(list(gt_files), args)
        matches = cs.matchGtWithPreds(list(prediction_files), list(gt_files), gt_instances, args)
        try:
            ap_scores = cs.evaluateMatches(matches, args)
        except IndexError:
            ap_scores = _evaluate_matches_per_cell(cs, matches, args)
        averages = cs.computeAverages(ap_scores, args)
        result = cs.prepareJSONDataForResults(averages, ap_scores, args)
    if export_file:
        os.makedirs(os.path.dirname(os.path.abspath(export_file)), exist_ok=True)
        cs.writeDict2JSON(result, export_file)
    return result


def _evaluate_matches_per_cell(cs, matches, args) -> np.ndarray:
    """cityscapesscripts' ``evaluateMatches``, one (class, overlap threshold) at a time.

    Its ``evaluateMatches`` (2.3.0 and its latest source) indexes an empty array when a class has
    ground truth and predictions but, at some threshold, no prediction matches and every one lies
    on ignored pixels (void, crowd, or objects under the minimum size): nothing is left to rank.
    Its own formula gives AP 0 there (recall 0, as for a class with ground truth and no
    predictions), so that cell gets 0 and every other cell the script's own value.
    """
    ap = np.zeros((1, len(args.instLabels), len(args.overlaps)))
    for i, label in enumerate(args.instLabels):
        for j, overlap in enumerate(args.overlaps):
            cell = copy.copy(args)
            cell.instLabels, cell.overlaps = [label], np.array([overlap])
            try:
                ap[0, i, j] = cs.evaluateMatches(matches, cell)[0, 0, 0]
            except IndexError:
                ap[0, i, j] = 0.0
    return ap


def _stem_and_city(file_name: str):
    base = os.path.basename(file_name)
    if not base.endswith(IMAGE_SUFFIX):
        raise ValueError(
            f"Cityscapes evaluation needs inputs whose file_name ends with '{IMAGE_SUFFIX}'; got '{file_name}'."
        )
    return base[: -len(IMAGE_SUFFIX)], os.path.basename(os.path.dirname(file_name))


def _gt_files(gt_dir: str, kind: str) -> List[str]:
    files = sorted(glob.glob(os.path.join(gt_dir, "*", "*" + GT_SUFFIXES[kind])))
    if not files:
        raise FileNotFoundError(f"No Cityscapes ground truth '<city>/*{GT_SUFFIXES[kind]}' in '{gt_dir}'.")
    return files


def _pair_with_predictions(gt_files: List[str], predictions: Dict[str, str], kind: str) -> List[str]:
    """The prediction file of every ground-truth file; every ground-truth image needs one (as in
    the official scripts)."""
    stems = [os.path.basename(g)[: -len(GT_SUFFIXES[kind])] for g in gt_files]
    missing = [s for s in stems if s not in predictions]
    if missing:
        raise RuntimeError(
            f"Cityscapes evaluation scores every ground-truth image, but {len(missing)} of {len(stems)} have no "
            f"prediction (e.g. {missing[:3]}). Evaluate on the whole split."
        )
    return [predictions[s] for s in stems]


class _CityscapesEvaluator(DatasetEvaluator):
    _results_name = ""

    def __init__(self, dataset_name: str, *, distributed: bool = True, output_dir: Optional[str] = None):
        """
        Args:
            dataset_name: a registered dataset with metadata ``gt_dir`` (``gtFine/<split>``).
            distributed: gather the predictions of all processes to the main process.
            output_dir: where to write the official-format predictions (``<output_dir>/cityscapes_*_results``)
                and cityscapesscripts' result json; None: a temporary folder, removed afterwards.
        """
        self._dataset_name = dataset_name
        self._metadata = MetadataCatalog.get(dataset_name)
        gt_dir = self._metadata.get("gt_dir")
        if gt_dir is None:
            raise ValueError(f"Dataset '{dataset_name}' has no 'gt_dir' metadata: Cityscapes evaluation needs "
                             f"the gtFine/<split> folder.")
        self._gt_dir = gt_dir
        self._distributed = distributed
        self._output_dir = output_dir
        self._cpu_device = torch.device("cpu")

    def reset(self):
        self._predictions = []

    def _gather(self) -> Optional[list]:
        if not self._distributed:
            return self._predictions
        comm.synchronize()
        gathered = comm.gather(self._predictions, dst=0)
        if not comm.is_main_process():
            return None
        return list(itertools.chain(*gathered))

    @contextlib.contextmanager
    def _results_dir(self):
        """A fresh folder for the prediction files (previous results there are replaced)."""
        if self._output_dir is None:
            with tempfile.TemporaryDirectory(prefix="seg_d2_cityscapes_") as d:
                yield os.path.join(d, self._results_name)
            return
        path = os.path.join(self._output_dir, self._results_name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.makedirs(path)
        yield path

    def _export_file(self, name: str) -> Optional[str]:
        return os.path.join(self._output_dir, name) if self._output_dir else None


class CityscapesSemSegEvaluator(_CityscapesEvaluator):
    """IoU and iIoU per class and per category, as cityscapesscripts' evalPixelLevelSemanticLabeling
    computes them, from ``outputs[i]["sem_seg"]`` (19 trainId scores per pixel at the input's size).

    Results (percent): ``IoU``, ``iIoU`` (class averages), ``IoU_sup``, ``iIoU_sup`` (category
    averages, the names of detectron2's evaluator), ``IoU-<class>`` and ``IoU_sup-<category>``.
    """

    _results_name = SEM_SEG_RESULTS

    def __init__(self, dataset_name: str, *, distributed: bool = True, output_dir: Optional[str] = None):
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir)
        classes = list(self._metadata.get("stuff_classes", STUFF_CLASSES))
        if classes != STUFF_CLASSES:
            raise ValueError(f"Dataset '{dataset_name}' has stuff_classes {classes}; Cityscapes evaluation needs "
                             f"cityscapesscripts' 19 train classes {STUFF_CLASSES}.")
        self._train_id_to_label_id = np.array([trainId2label[t].id for t in range(len(STUFF_CLASSES))], np.uint8)

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            stem, city = _stem_and_city(inp["file_name"])
            scores = out["sem_seg"]
            if scores.dim() != 3 or scores.shape[0] != len(STUFF_CLASSES):
                raise ValueError(f"Cityscapes semantic evaluation needs sem_seg scores of shape "
                                 f"({len(STUFF_CLASSES)}, H, W); got {tuple(scores.shape)} for '{inp['file_name']}'.")
            train_ids = scores.argmax(dim=0).to(self._cpu_device).numpy()
            ok, png = cv2.imencode(".png", self._train_id_to_label_id[train_ids])
            assert ok
            self._predictions.append((city, stem, png.tobytes()))

    def evaluate(self):
        predictions = self._gather()
        if predictions is None:
            return None
        gt_files = _gt_files(self._gt_dir, "labelIds")
        with self._results_dir() as results_dir:
            files = {}
            for city, stem, png in predictions:
                os.makedirs(os.path.join(results_dir, city), exist_ok=True)
                files[stem] = os.path.join(results_dir, city, f"{stem}_pred.png")
                with open(files[stem], "wb") as f:
                    f.write(png)
            logger.info(f"Evaluating {len(files)} Cityscapes semantic predictions in {results_dir} ...")
            res = evaluate_pixel_level(_pair_with_predictions(gt_files, files, "labelIds"), gt_files,
                                       self._export_file("resultPixelLevelSemanticLabeling.json"))
        ret = OrderedDict()
        for key, name in (("IoU", "averageScoreClasses"), ("iIoU", "averageScoreInstClasses"),
                          ("IoU_sup", "averageScoreCategories"), ("iIoU_sup", "averageScoreInstCategories")):
            ret[key] = 100 * float(res[name])
        for name in STUFF_CLASSES:
            ret[f"IoU-{name}"] = 100 * float(res["classScores"][name])
        for category, members in category2labels.items():
            if not all(l.ignoreInEval for l in members):  # "void"
                ret[f"IoU_sup-{category}"] = 100 * float(res["categoryScores"][category])
        logger.info("Cityscapes semantic segmentation, per class:\n"
                    + create_small_table({k[4:]: v for k, v in ret.items() if k.startswith("IoU-")}))
        return OrderedDict(sem_seg=ret)


class CityscapesInstanceEvaluator(_CityscapesEvaluator):
    """AP and AP50 of masks, as cityscapesscripts' evalInstanceLevelSemanticLabeling computes them,
    from ``outputs[i]["instances"]`` (``pred_masks``, ``pred_classes`` over the 8 thing classes, and
    ``mask_scores`` when present (mask scoring), ``scores`` otherwise).

    Results (percent): ``AP``, ``AP50``, ``AP-<class>``, ``AP50-<class>`` (NaN for a class without
    ground truth, left out of the averages as cityscapesscripts does).
    """

    _results_name = INSTANCE_RESULTS

    def __init__(self, dataset_name: str, *, distributed: bool = True, output_dir: Optional[str] = None):
        super().__init__(dataset_name, distributed=distributed, output_dir=output_dir)
        classes = list(self._metadata.get("thing_classes", THING_CLASSES))
        unknown = [c for c in classes if c not in name2label or not name2label[c].hasInstances]
        if unknown:
            raise ValueError(f"Dataset '{dataset_name}' has thing_classes {unknown} that are not Cityscapes "
                             f"instance classes {THING_CLASSES}.")
        self._class_to_label_id = [name2label[c].id for c in classes]

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            stem, city = _stem_and_city(inp["file_name"])
            preds = []
            if "instances" in out:
                instances = out["instances"].to(self._cpu_device)
                if len(instances):
                    masks = instances.pred_masks
                    size = (inp.get("height", masks.shape[1]), inp.get("width", masks.shape[2]))
                    if tuple(masks.shape[1:]) != tuple(size):
                        raise ValueError(f"pred_masks of '{inp['file_name']}' are {tuple(masks.shape[1:])}, not the "
                                         f"image size {tuple(size)}: Cityscapes evaluation needs full-size masks.")
                    masks = (masks > 0.5) if masks.is_floating_point() else masks.bool()
                    rles = mask_util.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
                    # Masks are ranked by their own score where the model predicts one (mask scoring, Huang
                    # 2019), as the COCO evaluator does; Cityscapes AP is mask AP only.
                    scores = instances.mask_scores if instances.has("mask_scores") else instances.scores
                    for cls, score, rle in zip(instances.pred_classes.tolist(), scores.tolist(), rles):
                        preds.append((self._class_to_label_id[cls], float(score), rle))
            # An image without instances still gets its (empty) result file, as the scripts require.
            self._predictions.append((city, stem, preds))

    def evaluate(self):
        predictions = self._gather()
        if predictions is None:
            return None
        gt_files = _gt_files(self._gt_dir, "instanceIds")
        with self._results_dir() as results_dir:
            files = {}
            for city, stem, preds in predictions:
                mask_dir = os.path.join(results_dir, city, "masks")
                os.makedirs(mask_dir, exist_ok=True)
                lines = []
                for k, (label_id, score, rle) in enumerate(preds):
                    mask_name = f"{stem}_{k:04d}_{label_id}.png"
                    cv2.imwrite(os.path.join(mask_dir, mask_name), mask_util.decode(rle) * 255)
                    lines.append(f"masks/{mask_name} {label_id} {score!r}\n")
                files[stem] = os.path.join(results_dir, city, f"{stem}_pred.txt")
                with open(files[stem], "w") as f:
                    f.writelines(lines)
            logger.info(f"Evaluating {len(files)} Cityscapes instance predictions in {results_dir} ...")
            res = evaluate_instance_level(_pair_with_predictions(gt_files, files, "instanceIds"), gt_files,
                                          results_dir, results_dir,
                                          self._export_file("resultInstanceLevelSemanticLabeling.json"))
        averages = res["averages"]
        ret = OrderedDict(AP=100 * float(averages["allAp"]), AP50=100 * float(averages["allAp50%"]))
        for name in THING_CLASSES:
            ret[f"AP-{name}"] = 100 * float(averages["classes"][name]["ap"])
        for name in THING_CLASSES:
            ret[f"AP50-{name}"] = 100 * float(averages["classes"][name]["ap50%"])
        logger.info("Cityscapes instance segmentation, mask AP per class:\n"
                    + create_small_table({k[3:]: v for k, v in ret.items() if k.startswith("AP-")}))
        return OrderedDict(segm=ret)
