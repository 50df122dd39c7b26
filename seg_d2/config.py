"""seg_d2's config keys, added to a detectron2 config by ``add_seg_d2_config``; ``get_cfg`` (the entry
point for user code) and ``apply_cpu_fallback``."""
from detectron2.config import CfgNode as CN
from detectron2.layers import ShapeSpec


def get_cfg():
    """detectron2's default config plus seg_d2's keys, with the CPU fallback applied (``MODEL.DEVICE``
    "cpu" when no GPU is visible). Then merge a config: ``cfg.merge_from_file(
    seg_d2.model_zoo.get_config_file("Shapes-SemanticSegmentation/unet_R_50_scratch_bs8_600it.yaml"))``."""
    from detectron2.config import get_cfg as d2_get_cfg

    cfg = d2_get_cfg()
    add_seg_d2_config(cfg)
    return apply_cpu_fallback(cfg)


def apply_cpu_fallback(cfg):
    """Set ``MODEL.DEVICE`` from "cuda[:N]" to "cpu" when no GPU is visible, unless
    ``SEG_D2.CPU_FALLBACK`` is False; off the GPU, every ``MODEL.*.NORM`` "SyncBN"/"nnSyncBN" (torch's
    SyncBatchNorm needs CUDA in several processes) becomes "BN" in one process and detectron2's
    "naiveSyncBN" (all_reduce over GLOO, the same global statistics) in several. Returns ``cfg`` (changed
    in place, even if frozen). tools/train_net.py calls it after merging the config file and options, in
    each process; call it again after setting ``MODEL.DEVICE`` yourself."""
    import torch

    from .modeling.norm import resolve_cfg_norms

    frozen = cfg.is_frozen()
    cfg.defrost()
    enabled = cfg.get("SEG_D2", CN()).get("CPU_FALLBACK", True)
    if enabled and str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if not str(cfg.MODEL.DEVICE).startswith("cuda"):
        resolve_cfg_norms(cfg.MODEL, cfg.MODEL.DEVICE)
    if frozen:
        cfg.freeze()
    return cfg


def shape_spec(**kwargs) -> ShapeSpec:
    """``ShapeSpec(**kwargs)`` as a LazyConfig target (``L(shape_spec)(channels=256)``): detectron2 main turns a
    dataclass target such as ``ShapeSpec`` into its name, which its ``LazyConfig.to_py`` then cannot print."""
    return ShapeSpec(**kwargs)


def add_seg_d2_config(cfg):
    """Add seg_d2's config keys (with their defaults) to ``cfg``, in place."""
    cfg.SEG_D2 = CN()
    # Switch MODEL.DEVICE from "cuda" to "cpu" when no GPU is visible, instead of failing.
    cfg.SEG_D2.CPU_FALLBACK = True
    cfg.SEG_D2.CHECKPOINT = CN()
    # Load checkpoints/weights that need full pickle (it can run code from the file): only for trusted files.
    cfg.SEG_D2.CHECKPOINT.ALLOW_PICKLE = False
    cfg.SEG_D2.SOLVER = CN()
    # Batches whose loss is NaN/Inf skipped (no optimizer step) before training stops; 0 = stop at the first.
    cfg.SEG_D2.SOLVER.MAX_NONFINITE_SKIPS = 0
    # Images of each evaluation drawn as prediction | ground truth (| error map) to OUTPUT_DIR/inference/<dataset>/vis; 0 = none.
    cfg.TEST.VIS_NUM_IMAGES = 8
    cfg.TEST.VIS_SCORE_THRESH = 0.5  # instances drawn in those images: score at least this (0.0 after brief training)
    cfg.TEST.BOUNDARY_AP_WORKERS = 2  # processes computing mask boundaries for Boundary AP (as the official api); 0 or 1: in-process
    # Datasets registered before training by seg_d2.data.register_datasets_from_config (tools/train_net.py's
    # --coco-dataset, --sem-seg-folder and --dataset-module flags append here). Paths are relative to the cwd.
    cfg.SEG_D2.DATASETS = CN()
    cfg.SEG_D2.DATASETS.COCO = []  # [[name, json_file, image_root], ...]: COCO instances json (evaluator "coco")
    # COCO json checking: "strict" (any problem is an error) or "lenient" (bad annotations dropped, one warning).
    cfg.SEG_D2.DATASETS.COCO_VALIDATION = "strict"
    # [[name, image_dir, label_dir, classes(, ignore_label)], ...]: classes "a,b,c" or a .txt/.json file of names
    cfg.SEG_D2.DATASETS.SEM_SEG_FOLDER = []
    # [[name, panoptic_json, image_root, panoptic_root(, sem_seg_root)], ...]: COCO panoptic (tools/make_panoptic.py's
    # output), for PanopticFPN (evaluator "coco_panoptic_seg"); sem_seg_root: its separated semantic maps, to train
    cfg.SEG_D2.DATASETS.COCO_PANOPTIC = []
    # one weight per DATASETS.TRAIN entry: each dataset's share of the sampled images, whatever its size (e.g. real
    # vs synthetic); [] = detectron2's sampling, every image alike
    cfg.SEG_D2.DATASETS.TRAIN_WEIGHTS = []
    cfg.SEG_D2.DATASETS.MODULES = []  # Python files (or module names) whose import registers datasets
    # Configured from the data (seg_d2.engine.auto_config; train_net --auto-config): the training set's fingerprint
    # sets normalisation, input/crop size, batch (and anchors, detections per image); explicit values win.
    cfg.SEG_D2.AUTO_CONFIG = CN()
    cfg.SEG_D2.AUTO_CONFIG.ENABLED = False  # plan from the data, log it, write OUTPUT_DIR/plan.json
    cfg.SEG_D2.AUTO_CONFIG.BUDGET_MINUTES = 0.0  # > 0: SOLVER.MAX_ITER for this training time, from a measured s/iter
    cfg.SEG_D2.AUTO_CONFIG.MAX_IMAGES = 200  # training images read for the fingerprint (a seeded sample of more)
    cfg.SEG_D2.AUTO_CONFIG.CLASS_WEIGHTS = False  # also set MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS from class frequencies
    cfg.SEG_D2.AUTO_CONFIG.BATCH_DATASET_SHARE = 0.0  # > 0: a batch holds at most this share of the training pixels (nnU-Net: 0.05)

    # --- Semantic segmentation: U-Net / FCN heads, losses, data, inference (issue 3) ---
    from detectron2.projects.deeplab import add_deeplab_config

    add_deeplab_config(cfg)  # INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, SOLVER.POLY_LR_POWER (WarmupPolyLR)
    # Optimizer of tools/train_net.py (seg_d2.solver.build_optimizer): "SGD" (detectron2's) or "ADAM".
    cfg.SOLVER.OPTIMIZER = "SGD"
    cfg.SOLVER.ADAM_BETAS = [0.9, 0.999]  # Adam's (beta1, beta2); GANs use beta1 0.5 (pix2pix, DCGAN)
    _add_sem_seg_config(cfg)

    # BMask R-CNN's boundary-preserving mask head (Cheng et al., ECCV 2020): MODEL.ROI_HEADS.NAME
    # "BoundaryROIHeads" with MODEL.ROI_MASK_HEAD.NAME "BoundaryPreservingHead". Its mask branch is set by
    # MODEL.ROI_MASK_HEAD (NUM_CONV, CONV_DIM, NORM, POOLER_*); its boundary branch by these keys.
    cfg.MODEL.BOUNDARY_MASK_HEAD = CN()
    # Side of the boundary RoI features: ROI_MASK_HEAD.POOLER_RESOLUTION x 2^k (the paper: 28 = 2 x 14).
    cfg.MODEL.BOUNDARY_MASK_HEAD.POOLER_RESOLUTION = 28
    # Feature maps the boundary RoI features are pooled from (the paper: the finest FPN level).
    cfg.MODEL.BOUNDARY_MASK_HEAD.IN_FEATURES = ("p2",)
    cfg.MODEL.BOUNDARY_MASK_HEAD.NUM_CONV = 2  # 3x3 convs of the boundary branch, after the mask->boundary fusion
    cfg.MODEL.BOUNDARY_MASK_HEAD.MASK_DICE_WEIGHT = 0.0  # Dice on masks: not in the paper (mask BCE only); > 0 adds it
    cfg.MODEL.BOUNDARY_MASK_HEAD.BOUNDARY_BCE_WEIGHT = 1.0  # weight of the boundary BCE loss
    cfg.MODEL.BOUNDARY_MASK_HEAD.BOUNDARY_DICE_WEIGHT = 1.0  # weight of the boundary Dice loss
    # seg_d2's light boundary head, NOT the paper's (no second pooler: the boundary branch reads the mask
    # branch's features): MODEL.ROI_MASK_HEAD.NAME "LightBoundaryMaskHead", with detectron2's StandardROIHeads.
    cfg.MODEL.LIGHT_BOUNDARY_HEAD = CN()
    cfg.MODEL.LIGHT_BOUNDARY_HEAD.NUM_BOUNDARY_CONV = 2  # 3x3 convs in the boundary branch
    cfg.MODEL.LIGHT_BOUNDARY_HEAD.MASK_RESOLUTION = 28  # side of predicted masks: POOLER_RESOLUTION x 2^k (28, 56)
    cfg.MODEL.LIGHT_BOUNDARY_HEAD.MASK_BCE_WEIGHT = 1.0  # weight of the mask BCE loss
    cfg.MODEL.LIGHT_BOUNDARY_HEAD.MASK_DICE_WEIGHT = 1.0  # weight of the mask Dice loss
    cfg.MODEL.LIGHT_BOUNDARY_HEAD.BOUNDARY_BCE_WEIGHT = 1.0  # weight of the boundary BCE loss
    cfg.MODEL.LIGHT_BOUNDARY_HEAD.BOUNDARY_DICE_WEIGHT = 1.0  # weight of the boundary Dice loss
    # Mask scoring (Mask Scoring R-CNN, Huang 2019): inside the boundary heads above, or for detectron2's
    # mask heads with MODEL.ROI_HEADS.NAME "MaskScoringROIHeads" (StandardROIHeads ignores it).
    cfg.MODEL.MASK_SCORING = CN()
    # Predict each mask's IoU: mask_scores = scores * IoU rank the masks (segm AP); box scores are unchanged.
    cfg.MODEL.MASK_SCORING.ENABLED = False
    cfg.MODEL.MASK_SCORING.NUM_CONV = 4  # 3x3 convs of the MaskIoU head (the last has stride 2)
    cfg.MODEL.MASK_SCORING.CONV_DIM = 256  # width of those convs
    cfg.MODEL.MASK_SCORING.FC_DIM = 1024  # width of its two hidden FC layers
    cfg.MODEL.MASK_SCORING.LOSS_WEIGHT = 1.0  # weight of the L2 mask-IoU loss

    # pix2pix label map -> image generator (Isola et al. 2017): MODEL.META_ARCHITECTURE "Pix2Pix". Its classes and
    # ignore label are MODEL.SEM_SEG_HEAD.NUM_CLASSES / IGNORE_VALUE, its image channels len(MODEL.PIXEL_MEAN).
    cfg.MODEL.PIX2PIX = CN()
    cfg.MODEL.PIX2PIX.GENERATOR_CHANNELS = 32  # first-level channels of the U-Net generator (doubling per level)
    cfg.MODEL.PIX2PIX.GENERATOR_DEPTH = 4  # levels of the U-Net generator, the bottleneck included
    cfg.MODEL.PIX2PIX.DISCRIMINATOR_CHANNELS = 32  # first-layer channels of the PatchGAN discriminator
    cfg.MODEL.PIX2PIX.DISCRIMINATOR_LAYERS = 3  # stride-2 layers of the PatchGAN (3: 70x70-pixel patches)
    cfg.MODEL.PIX2PIX.NORM = "BN"  # normalization of both nets ("BN" as pix2pix, "GN", "")
    cfg.MODEL.PIX2PIX.L1_WEIGHT = 100.0  # weight of the L1 loss to the real image (the paper's lambda)
    cfg.MODEL.PIX2PIX.GAN_LOSS = "vanilla"  # "vanilla" (the paper's cross-entropy) or "lsgan" (least squares)
    cfg.MODEL.PIX2PIX.INSTANCE_EDGES = False  # add an instance edge channel to the input (needs instances)
    cfg.MODEL.PIX2PIX.DROPOUT = 0.0  # the generator's noise (pix2pix: 0.5): dropout after its coarse decoder blocks, in inference too
    cfg.MODEL.PIX2PIX.SPADE = False  # SPADE (Park 2019): the generator's decoder norms scaled and shifted per pixel from the label map
    cfg.MODEL.PIX2PIX.PADDING_MODE = "zeros"  # the generator's conv padding: "zeros" or "reflect" (no border signal to paint a frame from)
    cfg.MODEL.PIX2PIX.MAX_PIXEL_VALUE = 255.0  # the images' white (65535 for 16-bit), mapped to the tanh's 1
    cfg.MODEL.PIX2PIX.SAMPLE_PERIOD = 200  # iterations between sample grids (label | generated | real) in OUTPUT_DIR/samples; 0 = none
    cfg.MODEL.PIX2PIX.SAMPLE_IMAGES = 4  # images of each sample grid, from the first test dataset
    # A VAE over label maps (Kingma & Welling 2014), MODEL.META_ARCHITECTURE "LabelMapVAE": new layouts for
    # tools/synthesize.py (--masks vae). Its classes and ignore label: MODEL.SEM_SEG_HEAD's.
    cfg.MODEL.LABEL_MAP_VAE = CN()
    cfg.MODEL.LABEL_MAP_VAE.SIZE = [128, 128]  # (H, W) the maps are modelled at (nearest resize); multiples of 2**DEPTH
    cfg.MODEL.LABEL_MAP_VAE.CHANNELS = 32  # first conv's channels (doubling per level, at most 8x)
    cfg.MODEL.LABEL_MAP_VAE.DEPTH = 4  # stride-2 levels of the encoder (and the decoder)
    cfg.MODEL.LABEL_MAP_VAE.LATENT_DIM = 64  # dimensions of the latent z
    cfg.MODEL.LABEL_MAP_VAE.KL_WEIGHT = 0.001  # weight of KL(q(z|x) || N(0, I)) against the per-pixel cross-entropy
    cfg.MODEL.LABEL_MAP_VAE.NORM = "BN"  # normalization of the convs


def _add_sem_seg_config(cfg):
    """Keys of the semantic segmentation models (U-Net, FCN), their losses, data and inference."""
    h = cfg.MODEL.SEM_SEG_HEAD
    # Losses, combined with weights: names from ("ce", "dice", "focal", "boundary").
    h.LOSSES = ["ce", "dice"]
    # One weight per entry of LOSSES.
    h.LOSS_WEIGHTS = [1.0, 1.0]
    # Per-class weights of the cross-entropy terms; empty = unweighted.
    h.CLASS_WEIGHTS = []
    # Fraction of the hardest valid pixels kept by "ce" (online hard pixel mining); 1.0 = all.
    h.TOPK_PIXEL_RATIO = 1.0
    # Smoothing term of the soft Dice loss.
    h.DICE_SMOOTH = 1.0
    # Focal loss focusing parameter gamma.
    h.FOCAL_GAMMA = 2.0
    # Focal loss balance alpha (< 0: no alpha balancing).
    h.FOCAL_ALPHA = -1.0
    # Half-width in pixels of the band around ground-truth boundaries used by the "boundary" loss.
    h.BOUNDARY_WIDTH = 3
    # U-Net head: output channels of each decoder stage, deepest first (one per skip feature, then per skipless stage).
    h.DECODER_CHANNELS = [256, 128, 64, 32, 16]
    # U-Net head's upsampling between stages: "bilinear" or "nearest" (interpolate), "deconv" (2x2 transposed conv).
    h.UPSAMPLE_MODE = "bilinear"
    # U-Net head: decoder stages after the finest skip (x2 each, no skip; smp's Unet ends with one at stride 1).
    h.SKIPLESS_STAGES = 0
    # U-Net head: auxiliary losses on the lower-resolution decoder stages (deep supervision).
    h.DEEP_SUPERVISION = False
    # Weight of each auxiliary (deep supervision) loss, relative to the main one.
    h.DEEP_SUPERVISION_WEIGHT = 0.4
    # U-Net head: He init mode of the decoder convs, "fan_out" (detectron2's ResNets) or "fan_in" (smp's decoder).
    h.CONV_INIT = "fan_out"
    # U-Net head: kernel size of the final classifier conv (smp's Unet: 3).
    h.PREDICTOR_KERNEL_SIZE = 1
    # U-Net head: init of the final classifier, "normal" (std 0.01, detectron2's heads) or "xavier" (smp's heads).
    h.PREDICTOR_INIT = "normal"
    # FCN head: number of 3x3 convs on the deepest feature (fc6/fc7 of FCN as convolutions).
    h.NUM_CONVS = 2
    # FCN head: dropout after each of those convs.
    h.DROPOUT = 0.1

    # ResNet encoder for U-Net (build_resnet_unet_backbone): channels of the extra full-resolution
    # path "s1" (0 = none); the stride-2 stem output is exposed as "s2".
    cfg.MODEL.RESNET_UNET = CN()
    cfg.MODEL.RESNET_UNET.FULL_RES_CHANNELS = 32

    # Classic U-Net encoder (build_unet_backbone), Ronneberger et al. 2015.
    cfg.MODEL.UNET = CN()
    # Channels of the first level; each deeper level doubles them.
    cfg.MODEL.UNET.BASE_CHANNELS = 64
    # Number of levels, the bottleneck included (the paper: 5, strides 1..16).
    cfg.MODEL.UNET.DEPTH = 5
    # Normalization after each conv: "", "BN", "GN", "SyncBN".
    cfg.MODEL.UNET.NORM = "BN"
    # Features returned, "enc1" (stride 1) .. "enc{DEPTH}".
    cfg.MODEL.UNET.OUT_FEATURES = ["enc1", "enc2", "enc3", "enc4", "enc5"]

    # Dataset mapper of the train/test loaders: "" = detectron2's DatasetMapper (seg_d2's image reader), "sem_seg".
    cfg.INPUT.DATASET_MAPPER_NAME = ""
    # Colour jitter of the semantic mapper (brightness/contrast/saturation factor ranges).
    cfg.INPUT.COLOR_JITTER = CN({"ENABLED": False})
    cfg.INPUT.COLOR_JITTER.BRIGHTNESS = [0.8, 1.2]  # intensity factor range
    cfg.INPUT.COLOR_JITTER.CONTRAST = [0.8, 1.2]  # contrast factor range
    cfg.INPUT.COLOR_JITTER.SATURATION = [0.8, 1.2]  # saturation factor range (colour images only)

    # Sliding-window inference (SegD2SemanticSegmentor): windows of SIZE (h, w), overlapping by
    # OVERLAP (fraction of the window), blended with "gaussian" or "uniform" weights.
    cfg.TEST.SLIDING_WINDOW = CN({"ENABLED": False})
    cfg.TEST.SLIDING_WINDOW.SIZE = [512, 1024]  # window (height, width)
    cfg.TEST.SLIDING_WINDOW.OVERLAP = 0.25  # overlap of neighbouring windows, fraction of the window
    cfg.TEST.SLIDING_WINDOW.BLENDING = "gaussian"  # "gaussian" or "uniform" weights
    cfg.TEST.SLIDING_WINDOW.BATCH_SIZE = 1  # windows stacked into one forward pass (same result)
    # Inference options of SegD2SemanticSegmentor (semantic models only: an error for other models).
    cfg.TEST.CHANNELS_LAST = False  # backbone, head and inputs in torch.channels_last memory format
    cfg.TEST.AMP = CN({"ENABLED": False})  # autocast of backbone + head in inference
    cfg.TEST.AMP.DTYPE = "float16"  # "float16" or "bfloat16" on CUDA; on CPU always bfloat16
    cfg.TEST.FUSE_CONV_BN = False  # infer with the batch norms folded into the convolutions (a copy, remade when weights change)
    cfg.TEST.COMPILE = CN({"ENABLED": False})  # torch.compile of backbone + head in inference
    cfg.TEST.COMPILE.BACKEND = "inductor"  # torch.compile backend (inductor on CPU needs a C++ compiler)
    cfg.TEST.COMPILE.MODE = "default"  # torch.compile mode: "default", "reduce-overhead", "max-autotune"
    # Test-time augmentation of semantic models (SegD2SemanticSegmentor), averaging probabilities.
    cfg.TEST.SEM_SEG_TTA = CN({"ENABLED": False})
    cfg.TEST.SEM_SEG_TTA.FLIP = True  # also the horizontally flipped image
    cfg.TEST.SEM_SEG_TTA.SCALES = [0.75, 1.0, 1.25]  # image scale factors
