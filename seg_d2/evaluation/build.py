"""Pick evaluators from a dataset's ``evaluator_type`` metadata."""
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators, RotatedCOCOEvaluator

from .cityscapes_evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .coco_evaluation import COCOBoundaryEvaluator
from .panoptic_evaluation import CityscapesPanopticEvaluator, PanopticEvaluator
from .sem_seg_evaluation import SemSegBoundaryEvaluator


def _forget_removed_coco_cache(name):
    """detectron2's COCOEvaluator converts a dataset that has no COCO json into
    ``<output_dir>/<name>_coco_format.json`` and records that path in the dataset's metadata for the rest of the
    process: an evaluation after that folder was removed (a notebook, a test's temporary folder) failed to open
    it. A removed cache of that name is forgotten, so that the evaluator converts the dataset again."""
    meta = MetadataCatalog.get(name)
    cached = meta.get("json_file", None)
    if cached and os.path.basename(cached) == f"{name}_coco_format.json" and not os.path.exists(cached):
        del meta.json_file


def _coco(cfg, name, output_folder):
    _forget_removed_coco_cache(name)
    # bbox and segm AP as detectron2's COCOEvaluator, plus Boundary AP (task "boundary") for masks. The tasks
    # come from the model (not from its predictions), so that every row is reported, NaN, without detections.
    tasks = None if cfg.MODEL.KEYPOINT_ON else (("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",))
    retinanet = cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    key = "MODEL.RETINANET.SCORE_THRESH_TEST" if retinanet else "MODEL.ROI_HEADS.SCORE_THRESH_TEST"
    value = cfg.MODEL.RETINANET.SCORE_THRESH_TEST if retinanet else cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    return COCOBoundaryEvaluator(name, tasks=tasks, output_dir=output_folder, score_thresh_test=(key, value),
                                 boundary_ap_workers=cfg.TEST.BOUNDARY_AP_WORKERS)


def _sem_seg(cfg, name, output_folder):
    # detectron2's SemSegEvaluator metrics, plus per-class Dice and Boundary IoU.
    return SemSegBoundaryEvaluator(name, distributed=True, output_dir=output_folder)


def _cityscapes_instance(cfg, name, output_folder):
    # seg_d2's, not detectron2's: works on detectron2 main (#5436), on CPU (#3810) and across processes.
    return CityscapesInstanceEvaluator(name, output_dir=output_folder)


def _cityscapes_sem_seg(cfg, name, output_folder):
    return CityscapesSemSegEvaluator(name, output_dir=output_folder)


def _rotated_coco(cfg, name, output_folder):
    # Box AP with rotated-box IoU (RotatedCOCOeval); detectron2's RotatedCOCOEvaluator evaluates boxes only.
    _forget_removed_coco_cache(name)
    return RotatedCOCOEvaluator(name, tasks=("bbox",), output_dir=output_folder)


def _require_panopticapi(name):
    try:
        import panopticapi.evaluation  # noqa: F401
    except ImportError:
        raise ImportError(f"Evaluating the panoptic dataset '{name}' (PQ) needs COCO's panopticapi: pip install --no-deps "
                          "panopticapi-lite==0.2.0 (--no-deps: its numpy<2 pin is stale; see requirements/no-deps.txt)"
                          ) from None


def _coco_panoptic(cfg, name, output_folder):
    _require_panopticapi(name)
    # as detectron2's tools/train_net.py evaluates PanopticFPN: PQ (with per-class figures), the thing head's AP
    # and the stuff head's mIoU (where the dataset has separated semantic maps)
    evaluators = [PanopticEvaluator(name, output_dir=output_folder), _coco(cfg, name, output_folder)]
    if MetadataCatalog.get(name).get("sem_seg_root", None):
        evaluators.append(_sem_seg(cfg, name, output_folder))
    return DatasetEvaluators(evaluators)


def _cityscapes_panoptic(cfg, name, output_folder):
    # the official Cityscapes PQ (cityscapesscripts), and the semantic head's mIoU on the separated maps
    _require_panopticapi(name)  # detectron2's COCOPanopticEvaluator writes the predictions with it
    return DatasetEvaluators([CityscapesPanopticEvaluator(name, output_dir=output_folder),
                              _sem_seg(cfg, name, output_folder)])


# evaluator_type -> factory(cfg, dataset_name, output_folder)
EVALUATOR_TYPES = {
    "coco": _coco,
    "sem_seg": _sem_seg,
    "cityscapes_instance": _cityscapes_instance,
    "cityscapes_sem_seg": _cityscapes_sem_seg,
    "rotated_coco": _rotated_coco,
    "coco_panoptic_seg": _coco_panoptic,
    "cityscapes_panoptic_seg": _cityscapes_panoptic,
}


def build_evaluator(cfg, dataset_name: str, output_folder: str = None):
    """Build the evaluator(s) that ``MetadataCatalog.get(dataset_name).evaluator_type`` names.

    Raises:
        ValueError: the dataset has no ``evaluator_type`` or one that seg_d2 does not know.
    """
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    types = [evaluator_type] if isinstance(evaluator_type, str) else list(evaluator_type or [])
    unknown = [t for t in types if t not in EVALUATOR_TYPES]
    if not types or unknown:
        raise ValueError(
            f"Cannot build an evaluator for dataset '{dataset_name}': its metadata evaluator_type is "
            f"{evaluator_type!r}; seg_d2 knows {sorted(EVALUATOR_TYPES)}. Set it with "
            f"MetadataCatalog.get('{dataset_name}').set(evaluator_type=...)."
        )
    evaluators = [EVALUATOR_TYPES[t](cfg, dataset_name, output_folder) for t in types]
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def build_evaluator_with_visualization(cfg, dataset_name: str, output_folder: str = None):
    """:func:`build_evaluator`, plus (as tools/train_net.py evaluates) the first ``TEST.VIS_NUM_IMAGES``
    predictions drawn next to their ground truth in ``output_folder/vis`` and the per-class metrics
    logged as one table and written to ``output_folder/per_class_metrics.csv``."""
    from seg_d2.data.checks import generates_images

    from .synthesis_evaluation import ImageSynthesisEvaluator
    from .visualization import EvaluatorsWithPerClassTable, PredictionVisualizer

    if generates_images(cfg):  # a label map -> image generator: its images against the real ones (samples: the hook)
        return ImageSynthesisEvaluator(dataset_name, image_format=cfg.INPUT.FORMAT,
                                       max_pixel_value=cfg.MODEL.PIX2PIX.MAX_PIXEL_VALUE)
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluators = [build_evaluator(cfg, dataset_name, output_folder)]
    if cfg.TEST.VIS_NUM_IMAGES > 0:
        evaluators.append(PredictionVisualizer(dataset_name, output_folder, cfg.TEST.VIS_NUM_IMAGES,
                                               score_threshold=cfg.TEST.VIS_SCORE_THRESH))
    return EvaluatorsWithPerClassTable(evaluators, output_folder)
