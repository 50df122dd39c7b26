"""Models. Importing this module registers seg_d2's architectures and heads into detectron2."""
# Instance segmentation: BMask R-CNN's head (Cheng 2020), seg_d2's light boundary head, mask scoring.
from .bmask_head import BoundaryPreservingHead  # noqa: F401  (registers into ROI_MASK_HEAD_REGISTRY)
from .light_boundary_head import LightBoundaryMaskHead  # noqa: F401  (ROI_MASK_HEAD_REGISTRY)
from .mask_scoring import MaskIoUHead  # noqa: F401
from .roi_heads import BoundaryROIHeads, CascadeBoundaryROIHeads, MaskScoringROIHeads  # noqa: F401  (registers into ROI_HEADS_REGISTRY)
# Panoptic segmentation: PanopticFPN with seg_d2's heads; mask_scores rank its instances.
from .panoptic_fpn import SegD2PanopticFPN  # noqa: F401  (META_ARCH_REGISTRY)
# Semantic segmentation (U-Net, FCN): heads, encoders and the meta-architecture.
from .fcn_head import FCNHead  # noqa: F401  (registers into SEM_SEG_HEADS_REGISTRY)
from .resnet_unet_backbone import build_resnet_unet_backbone, build_resnet_unet_fpn_backbone  # noqa: F401  (BACKBONE_REGISTRY)
from .semantic_segmentor import SegD2SemanticSegmentor  # noqa: F401  (META_ARCH_REGISTRY)
from .unet_backbone import build_unet_backbone  # noqa: F401  (BACKBONE_REGISTRY)
from .unet_head import UNetHead  # noqa: F401  (SEM_SEG_HEADS_REGISTRY)
# Label map -> image generation: pix2pix (Isola 2017) on seg_d2's U-Net.
from .pix2pix import Pix2Pix  # noqa: F401  (META_ARCH_REGISTRY)
from .label_map_vae import LabelMapVAE  # noqa: F401  (META_ARCH_REGISTRY; new label maps, Kingma 2014)
from .config_checks import check_model_config  # noqa: F401
