"""Pick evaluators from a dataset's ``evaluator_type`` metadata."""
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)


def _coco(cfg, name, output_folder):
    return COCOEvaluator(name, output_dir=output_folder)


def _sem_seg(cfg, name, output_folder):
    return SemSegEvaluator(name, distributed=True, output_dir=output_folder)


def _cityscapes_instance(cfg, name, output_folder):
    return CityscapesInstanceEvaluator(name)


def _cityscapes_sem_seg(cfg, name, output_folder):
    return CityscapesSemSegEvaluator(name)


# evaluator_type -> factory(cfg, dataset_name, output_folder)
EVALUATOR_TYPES = {
    "coco": _coco,
    "sem_seg": _sem_seg,
    "cityscapes_instance": _cityscapes_instance,
    "cityscapes_sem_seg": _cityscapes_sem_seg,
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
