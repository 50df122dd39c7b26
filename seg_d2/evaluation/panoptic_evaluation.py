"""Panoptic quality (Kirillov et al. 2019) of PanopticFPN outputs: detectron2's COCOPanopticEvaluator, which
runs COCO's own ``panopticapi.evaluation.pq_compute``, plus the per-class figures that pq_compute returns
and detectron2 leaves out."""
import contextlib
import copy
import os
from unittest import mock

from detectron2.evaluation import COCOPanopticEvaluator

__all__ = ["PanopticEvaluator", "CityscapesPanopticEvaluator"]


class PanopticEvaluator(COCOPanopticEvaluator):
    """``COCOPanopticEvaluator``: PQ, SQ and RQ over all, thing and stuff classes (x100), and per class
    (``PQ-<name>``, ``SQ-<name>``, ``RQ-<name>``; classes absent from both ground truth and predictions are
    left out, as pq_compute leaves them out of the means).

    The rules are COCO's: a predicted and a ground-truth segment of one class match when their IoU is above
    0.5; void pixels (id 0) and crowd regions do not count against predictions; TP, FP, FN and the IoU sum
    accumulate per class over the whole dataset before PQ = sum IoU / (TP + FP/2 + FN/2).
    """

    def process(self, inputs, outputs):
        # COCOPanopticEvaluator rewrites each segments_info in place (pops "isthing", dataset category ids):
        # give it copies, so that the evaluators after it (overlays, ...) see the model's outputs
        super().process(inputs, [{**o, "panoptic_seg": (o["panoptic_seg"][0], copy.deepcopy(o["panoptic_seg"][1]))}
                                 for o in outputs])

    def _counting(self, stats: list):
        """While COCOPanopticEvaluator evaluates: keep the per-class counts that pq_compute sums in
        pq_compute_multi_core, for panopticapi's own per-class averages."""
        import panopticapi.evaluation as pq_module

        return _keeping_counts(pq_module, stats)

    def evaluate(self):
        stats = []
        with self._counting(stats):  # COCOPanopticEvaluator calls pq_compute, which calls pq_compute_multi_core
            results = super().evaluate()
        if not results or not stats:  # not the main process
            return results
        categories = {c["id"]: {**c, "isthing": 0} for c in _categories(self._metadata)}
        _, per_class = stats[-1].pq_average(categories, isthing=None)
        for cat_id, r in per_class.items():
            counts = stats[-1].pq_per_cat[cat_id]
            if counts.tp + counts.fp + counts.fn == 0:
                continue
            for key in ("pq", "sq", "rq"):
                results["panoptic_seg"][f"{key.upper()}-{categories[cat_id]['name']}"] = 100 * r[key]
        return results


class CityscapesPanopticEvaluator(PanopticEvaluator):
    """:class:`PanopticEvaluator` with cityscapesscripts' ``evalPanopticSemanticLabeling.evaluatePanoptic`` in
    place of panopticapi's pq_compute: the official Cityscapes panoptic figures (the same rules; category ids
    are labelIds), also written to ``<output_dir>/cityscapes_panoptic_results.json``."""

    @contextlib.contextmanager
    def _counting(self, stats: list):
        import panopticapi.evaluation as pq_module
        from cityscapesscripts.evaluation import evalPanopticSemanticLabeling as cs

        def cityscapes_pq(gt_json_file, pred_json_file, gt_folder=None, pred_folder=None):
            out = self._output_dir or pred_folder
            return cs.evaluatePanoptic(gt_json_file, gt_folder, pred_json_file, pred_folder,
                                       os.path.join(out, "cityscapes_panoptic_results.json"))

        with _keeping_counts(cs, stats), mock.patch.object(pq_module, "pq_compute", cityscapes_pq):
            yield


@contextlib.contextmanager
def _keeping_counts(module, stats: list):
    """``module.pq_compute_multi_core`` (panopticapi's or cityscapesscripts'), its PQStat appended to ``stats``."""
    original = module.pq_compute_multi_core

    def pq_compute_multi_core(*args, **kwargs):
        stats.append(original(*args, **kwargs))
        return stats[-1]

    with mock.patch.object(module, "pq_compute_multi_core", pq_compute_multi_core):
        yield


def _categories(metadata):
    """The panoptic json's categories (id, name), from the metadata's class lists and id maps."""
    out = [{"id": i, "name": metadata.thing_classes[k]} for i, k in metadata.thing_dataset_id_to_contiguous_id.items()]
    out += [{"id": i, "name": metadata.stuff_classes[k]} for i, k in metadata.stuff_dataset_id_to_contiguous_id.items()]
    return out
