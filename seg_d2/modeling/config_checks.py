"""Config combinations a model would otherwise ignore silently, refused before the model is built."""
from .panoptic_fpn import check_panoptic_config
from .roi_heads import check_mask_scoring_config
from .semantic_segmentor import check_inference_options


def check_model_config(cfg) -> None:
    """Raise if ``cfg`` asks for something its model does not do: ``MODEL.MASK_SCORING`` with ROI heads
    that ignore it, or with detectron2's PanopticFPN, which would rank its instances by box score (ValueError), or the semantic-only inference options ``TEST.CHANNELS_LAST``,
    ``TEST.AMP``, ``TEST.COMPILE`` on another architecture (NotImplementedError). tools/train_net.py and
    seg_d2's predictor call it before ``build_model``."""
    check_mask_scoring_config(cfg)
    check_panoptic_config(cfg)
    check_inference_options(cfg)
