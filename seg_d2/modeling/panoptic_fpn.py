"""detectron2's PanopticFPN, with mask scoring's ``mask_scores`` ranking the instances it pastes."""
from detectron2.modeling import META_ARCH_REGISTRY, PanopticFPN
from detectron2.modeling.meta_arch.panoptic_fpn import combine_semantic_and_instance_outputs
from detectron2.structures import Instances

__all__ = ["SegD2PanopticFPN", "check_panoptic_config"]


@META_ARCH_REGISTRY.register()
class SegD2PanopticFPN(PanopticFPN):
    """PanopticFPN whose panoptic merge (detectron2's ``combine_semantic_and_instance_outputs``, with the
    ``MODEL.PANOPTIC_FPN.COMBINE`` keys) orders and thresholds the instances by their ``mask_scores``
    when the ROI heads give them (Mask Scoring R-CNN, Huang 2019: the score of the mask rather than of
    the box, which is what the merge pastes). Without ``mask_scores`` it is PanopticFPN exactly."""

    def inference(self, batched_inputs, do_postprocess: bool = True):
        results = super().inference(batched_inputs, do_postprocess)
        if not do_postprocess:
            return results
        for r in results:
            instances = r["instances"]
            if not instances.has("mask_scores"):
                continue
            ranked = Instances(instances.image_size, **instances.get_fields())
            ranked.scores = instances.mask_scores
            r["panoptic_seg"] = combine_semantic_and_instance_outputs(
                ranked, r["sem_seg"].argmax(dim=0), self.combine_overlap_thresh, self.combine_stuff_area_thresh,
                self.combine_instances_score_thresh)
        return results


def check_panoptic_config(cfg) -> None:
    """detectron2's PanopticFPN would merge mask-scored instances by their box scores: refuse it."""
    if cfg.MODEL.META_ARCHITECTURE == "PanopticFPN" and cfg.MODEL.MASK_SCORING.ENABLED:
        raise ValueError("MODEL.MASK_SCORING.ENABLED with MODEL.META_ARCHITECTURE 'PanopticFPN': its panoptic merge "
                         "would rank the instances by box score. Use 'SegD2PanopticFPN', which ranks them by "
                         "mask_scores.")
