"""U-Net head, U-Net encoders and FCN head: registration, the output contract, odd input sizes."""
import pytest
import torch

import seg_d2  # noqa: F401
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY, build_model

from seg_d2 import add_seg_d2_config
from seg_d2.modeling.fcn_head import FCNHead
from seg_d2.modeling.norm import resolve_norm
from seg_d2.modeling.unet_head import UNetHead
from tests.conftest import REPO

ODD_SIZES = [(97, 131), (64, 65), (33, 47)]


def make_cfg(base, *opts):
    cfg = get_cfg()
    add_seg_d2_config(cfg)
    cfg.merge_from_file(str(REPO / "configs" / base))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5", *opts])
    return cfg


# small versions of the shipped families, so that the tests stay fast
R18 = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NORM", "BN",
       "MODEL.BACKBONE.FREEZE_AT", "0"]
FAMILIES = {
    "unet_resnet": ("Base-UNet.yaml", R18 + ["MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[64, 32, 16, 16, 16]"]),
    "unet_classic_rgb": ("Base-UNet-Classic.yaml", ["MODEL.UNET.BASE_CHANNELS", "8",
                                                    "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[32, 16, 8, 8]"]),
    "unet_classic_gray": ("Base-UNet-Classic.yaml", ["MODEL.UNET.BASE_CHANNELS", "8", "INPUT.FORMAT", "L",
                                                     "MODEL.PIXEL_MEAN", "[110.0]", "MODEL.PIXEL_STD", "[60.0]",
                                                     "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[32, 16, 8, 8]"]),
    "fcn_resnet": ("Base-FCN.yaml", R18 + ["MODEL.SEM_SEG_HEAD.CONVS_DIM", "32"]),
}


def test_import_registers_everything():
    assert "UNetHead" in SEM_SEG_HEADS_REGISTRY and "FCNHead" in SEM_SEG_HEADS_REGISTRY
    assert "build_unet_backbone" in BACKBONE_REGISTRY and "build_resnet_unet_backbone" in BACKBONE_REGISTRY
    assert "SegD2SemanticSegmentor" in META_ARCH_REGISTRY


def batch(channels, sizes, with_gt=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in sizes:
        d = {"image": torch.rand(channels, h, w, generator=g) * 255}
        if with_gt:
            d["sem_seg"] = torch.randint(0, 5, (h, w), generator=g)
            d["sem_seg"][: h // 5] = 255
        out.append(d)
    return out


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_odd_sizes_train_and_infer_at_original_size(family):
    torch.manual_seed(0)
    base, opts = FAMILIES[family]
    cfg = make_cfg(base, *opts)
    model = build_model(cfg)
    channels = len(cfg.MODEL.PIXEL_MEAN)
    model.train()
    losses = model(batch(channels, ODD_SIZES))
    assert "loss_sem_seg" in losses and "loss_sem_seg_dice" in losses
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        outputs = model(batch(channels, ODD_SIZES, with_gt=False))
    for (h, w), out in zip(ODD_SIZES, outputs):
        assert out["sem_seg"].shape == (5, h, w)
    # "height"/"width" ask for another output size (the test-time resize is undone)
    with torch.no_grad():
        out = model([{"image": torch.rand(channels, 50, 70) * 255, "height": 101, "width": 141}])
    assert out[0]["sem_seg"].shape == (5, 101, 141)


def test_unet_head_without_padding_backbone():
    """Plain detectron2 ResNet (size_divisibility 0: no padding) and res2..res5 only: still no shape error."""
    cfg = make_cfg("Base-UNet.yaml", *R18, "MODEL.BACKBONE.NAME", "build_resnet_backbone",
                   "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']",
                   "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[32, 16, 16]")
    model = build_model(cfg)
    assert model.backbone.size_divisibility == 0
    assert model(batch(3, [(61, 77)]))["loss_sem_seg"].isfinite()
    model.eval()
    with torch.no_grad():
        assert model(batch(3, [(61, 77)], with_gt=False))[0]["sem_seg"].shape == (5, 61, 77)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "deconv"])
@pytest.mark.parametrize("norm", ["", "BN", "GN", "SyncBN"])
def test_unet_head_options(mode, norm):
    shapes = {"a": ShapeSpec(channels=8, stride=1), "b": ShapeSpec(channels=16, stride=2),
              "c": ShapeSpec(channels=32, stride=4)}
    head = UNetHead(shapes, num_classes=3, decoder_channels=[16, 8], norm=resolve_norm(norm),
                    upsample_mode=mode, deep_supervision=True, ignore_value=255)
    feats = {"a": torch.randn(2, 8, 20, 20), "b": torch.randn(2, 16, 10, 10), "c": torch.randn(2, 32, 5, 5)}
    targets = torch.randint(0, 3, (2, 20, 20))
    head.train()
    _, losses = head(feats, targets)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_dice", "loss_sem_seg_aux2", "loss_sem_seg_dice_aux2"}
    head.eval()
    logits, _ = head(feats)
    assert logits.shape == (2, 3, 20, 20)


def test_deep_supervision_weight_scales_aux_losses():
    shapes = {"a": ShapeSpec(channels=4, stride=1), "b": ShapeSpec(channels=4, stride=2)}
    torch.manual_seed(0)
    h1 = UNetHead(shapes, num_classes=2, decoder_channels=[4], deep_supervision=True)
    assert len(h1.aux_predictors) == 0  # one stage: it is the main output
    shapes["c"] = ShapeSpec(channels=4, stride=4)
    feats = {"a": torch.randn(1, 4, 8, 8), "b": torch.randn(1, 4, 4, 4), "c": torch.randn(1, 4, 2, 2)}
    t = torch.randint(0, 2, (1, 8, 8))
    torch.manual_seed(0)
    ha = UNetHead(shapes, num_classes=2, decoder_channels=[4, 4], deep_supervision=True, deep_supervision_weight=0.4)
    torch.manual_seed(0)
    hb = UNetHead(shapes, num_classes=2, decoder_channels=[4, 4], deep_supervision=True, deep_supervision_weight=0.8)
    la, lb = ha(feats, t)[1], hb(feats, t)[1]
    assert lb["loss_sem_seg_aux2"].item() == pytest.approx(2 * la["loss_sem_seg_aux2"].item(), rel=1e-5)
    assert lb["loss_sem_seg"].item() == pytest.approx(la["loss_sem_seg"].item(), rel=1e-6)


def test_syncbn_falls_back_in_a_single_process():
    assert resolve_norm("SyncBN") == "BN"
    cfg = make_cfg(FAMILIES["unet_classic_rgb"][0], *FAMILIES["unet_classic_rgb"][1], "MODEL.UNET.NORM", "SyncBN", "MODEL.SEM_SEG_HEAD.NORM", "SyncBN")
    model = build_model(cfg)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert model(batch(3, [(32, 32), (32, 32)]))["loss_sem_seg"].isfinite()


def test_classic_unet_rejects_other_channel_counts():
    cfg = make_cfg(FAMILIES["unet_classic_rgb"][0], *FAMILIES["unet_classic_rgb"][1], "MODEL.PIXEL_MEAN", "[1.0, 2.0]", "MODEL.PIXEL_STD", "[1.0, 1.0]")
    with pytest.raises(ValueError, match="1 or 3 input channels"):
        build_model(cfg)


def test_head_names_missing_features():
    cfg = make_cfg(FAMILIES["fcn_resnet"][0], *FAMILIES["fcn_resnet"][1], "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['res2', 'res5']")
    with pytest.raises(ValueError, match="has no \\['res2'\\]"):
        build_model(cfg)


ALIGN_SHAPES = {"a": ShapeSpec(channels=4, stride=2), "b": ShapeSpec(channels=6, stride=4),
                "c": ShapeSpec(channels=8, stride=8)}


@pytest.mark.parametrize("name", ["unet_bilinear", "unet_nearest", "unet_deconv", "fcn"])
def test_training_meets_each_label_with_its_inference_logit(name):
    """Finest feature at stride 2, input 13 x 18 (13 not a multiple of 2, 4 or 8), features rounded up
    as the backbones do: the training loss is the loss of the inference logits cropped to the targets
    (SemanticSegmentor crops them so), not of logits resized onto them."""
    torch.manual_seed(0)
    if name == "fcn":
        head = FCNHead(ALIGN_SHAPES, num_classes=3, conv_dims=8, dropout=0.0, norm="", loss_weight=0.5)
        for conv in head.skip_scores:  # zero-initialised: let the skips matter
            torch.nn.init.normal_(conv.weight)
    else:
        head = UNetHead(ALIGN_SHAPES, num_classes=3, decoder_channels=[8, 8], norm="", loss_weight=0.5,
                        upsample_mode=name.split("_")[1], deep_supervision=True)
    g = torch.Generator().manual_seed(0)
    feats = {"a": torch.randn(2, 4, 7, 9, generator=g), "b": torch.randn(2, 6, 4, 5, generator=g),
             "c": torch.randn(2, 8, 2, 3, generator=g)}
    targets = torch.randint(0, 3, (2, 13, 18), generator=g)
    targets[0, :3] = 255
    with torch.no_grad():
        logits, _ = head.eval()(feats)
        assert logits.shape == (2, 3, 14, 18)
        expected = {k: 0.5 * v for k, v in head.loss(logits[..., :13, :18], targets).items()}
        head.train()
        if name != "fcn":  # the auxiliary stride-4 logits (3 x 5, cropped to 3 x 4) against the labels at the
            # centres of their 4 x 4 cells, rows 2, 6, 10 and columns 2, 6, 10, 14 (as nnU-Net samples its targets)
            aux = head.layers(feats)[1][0]
            assert aux.shape[-2:] == (4, 5)
            centres = targets[:, [2, 6, 10]][:, :, [2, 6, 10, 14]]
            expected.update({f"{k}_aux4": 0.5 * 0.4 * v for k, v in head.loss(aux[..., :3, :4], centres).items()})
        _, losses = head(feats, targets)
    assert set(losses) == set(expected)
    for k, v in expected.items():
        assert losses[k].item() == pytest.approx(v.item(), rel=1e-6), k


@pytest.mark.parametrize("mode", ["fan_out", "fan_in"])
def test_conv_init_mode_sets_the_decoder_weight_scale(mode):
    """He et al. 2015: std sqrt(2 / fan), fan = kernel area x (output or input) channels. The first conv of the
    deepest stage takes 64 + 32 concatenated channels to 48: by hand, std sqrt(2 / (9 * 48)) = 0.0680 with fan_out,
    sqrt(2 / (9 * 96)) = 0.0481 with fan_in; its second conv (48 -> 48) is 0.0680 either way."""
    shapes = {"a": ShapeSpec(channels=32, stride=4), "b": ShapeSpec(channels=64, stride=8)}
    torch.manual_seed(0)
    head = UNetHead(shapes, num_classes=2, decoder_channels=[48], conv_init=mode)
    first, second = head.blocks[0][0][0].weight, head.blocks[0][1][0].weight
    assert first.shape == (48, 96, 3, 3)
    assert first.std().item() == pytest.approx(0.0680 if mode == "fan_out" else 0.0481, rel=0.03)
    assert second.std().item() == pytest.approx(0.0680, rel=0.03)
    # from the config: R-18's res5 (512) + res4 (256) -> 64 channels, std sqrt(2 / (9 * 64)) or sqrt(2 / (9 * 768))
    cfg = make_cfg(FAMILIES["unet_resnet"][0], *FAMILIES["unet_resnet"][1], "MODEL.SEM_SEG_HEAD.CONV_INIT", mode)
    first = build_model(cfg).sem_seg_head.blocks[0][0][0].weight
    assert first.shape == (64, 768, 3, 3)
    assert first.std().item() == pytest.approx(0.0589 if mode == "fan_out" else 0.0170, rel=0.03)


def test_conv_init_rejects_an_unknown_mode():
    shapes = {"a": ShapeSpec(channels=4, stride=4), "b": ShapeSpec(channels=4, stride=8)}
    with pytest.raises(ValueError, match="conv init mode must be one of \\('fan_out', 'fan_in'\\), got 'xavier'"):
        UNetHead(shapes, num_classes=2, decoder_channels=[4], conv_init="xavier")


@pytest.mark.parametrize("kernel", [1, 3])
def test_predictor_kernel_and_init_from_the_config(kernel):
    """Glorot & Bengio 2010 (smp's heads): uniform on +-sqrt(6 / (fan_in + fan_out)), fan = kernel area x
    channels, so std bound / sqrt(3); by hand for the last stage's 16 channels -> 5 classes: bound sqrt(6 / 21) =
    0.5345 with a 1x1 kernel, sqrt(6 / 189) = 0.1782 with a 3x3 one. The default is detectron2's std 0.01."""
    family = FAMILIES["unet_resnet"]
    cfg = make_cfg(family[0], *family[1], "MODEL.SEM_SEG_HEAD.PREDICTOR_KERNEL_SIZE", str(kernel), "MODEL.SEM_SEG_HEAD.PREDICTOR_INIT", "xavier")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    w, b = model.sem_seg_head.predictor.weight, model.sem_seg_head.predictor.bias
    bound = {1: 0.5345, 3: 0.1782}[kernel]
    assert w.shape == (5, 16, kernel, kernel)
    assert w.abs().max().item() <= bound * 1.001
    assert w.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.15)
    assert not b.any()
    with torch.no_grad():  # the logits keep the input's size whatever the kernel
        out = model([{"image": torch.rand(3, 40, 56) * 255, "height": 40, "width": 56}])[0]["sem_seg"]
    assert out.shape == (5, 40, 56)
    default = build_model(make_cfg(family[0], *family[1])).sem_seg_head.predictor.weight
    assert default.shape[-2:] == (1, 1)
    assert default.std().item() == pytest.approx(0.01, rel=0.3)


def test_predictor_options_are_checked():
    shapes = {"a": ShapeSpec(channels=4, stride=4), "b": ShapeSpec(channels=4, stride=8)}
    with pytest.raises(ValueError, match="predictor_init must be one of \\('normal', 'xavier'\\), got 'kaiming'"):
        UNetHead(shapes, num_classes=2, decoder_channels=[4], predictor_init="kaiming")
    with pytest.raises(ValueError, match="predictor_kernel_size must be odd .* got 2"):
        UNetHead(shapes, num_classes=2, decoder_channels=[4], predictor_kernel_size=2)


def test_deep_supervision_costs_nothing_at_inference():
    shapes = {"a": ShapeSpec(channels=4, stride=2), "b": ShapeSpec(channels=4, stride=4), "c": ShapeSpec(channels=4, stride=8)}
    head = UNetHead(shapes, num_classes=3, decoder_channels=[4, 4], deep_supervision=True)
    calls = []
    head.aux_predictors[0].register_forward_hook(lambda *args: calls.append(1))
    feats = {"a": torch.randn(1, 4, 8, 8), "b": torch.randn(1, 4, 4, 4), "c": torch.randn(1, 4, 2, 2)}
    with torch.no_grad():
        logits, _ = head.eval()(feats)
    assert logits.shape == (1, 3, 16, 16) and calls == []
    head.train()(feats, torch.randint(0, 3, (1, 16, 16)))
    assert calls == [1]


def test_nearest_decoder_repeats_each_pixel():
    """UPSAMPLE_MODE "nearest": a decoder stage sees its input with every pixel repeated factor x factor times
    (by hand, with repeat_interleave), concatenated with the skip."""
    shapes = {"a": ShapeSpec(channels=2, stride=1), "b": ShapeSpec(channels=3, stride=2)}
    head = UNetHead(shapes, num_classes=2, decoder_channels=[4], norm="", upsample_mode="nearest").eval()
    seen = []
    head.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    g = torch.Generator().manual_seed(0)
    feats = {"a": torch.randn(1, 2, 6, 8, generator=g), "b": torch.randn(1, 3, 3, 4, generator=g)}
    with torch.no_grad():
        head(feats)
    up = feats["b"].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.equal(seen[0], torch.cat([up, feats["a"]], dim=1))


def test_skipless_stage_upsamples_the_last_stage_alone():
    """SKIPLESS_STAGES 1: after the finest skip (stride 2), one more stage sees only the previous stage's output,
    every pixel repeated 2 x 2 (by hand, with repeat_interleave), and the logits come out at stride 1."""
    shapes = {"a": ShapeSpec(channels=2, stride=2), "b": ShapeSpec(channels=3, stride=4)}
    head = UNetHead(shapes, num_classes=2, decoder_channels=[4, 5], norm="", upsample_mode="nearest",
                    skipless_stages=1).eval()
    seen = []
    for block in head.blocks:
        block.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        block.register_forward_hook(lambda m, args, out: seen.append(out))
    g = torch.Generator().manual_seed(0)
    feats = {"a": torch.randn(1, 2, 6, 8, generator=g), "b": torch.randn(1, 3, 3, 4, generator=g)}
    with torch.no_grad():
        logits, _ = head(feats)
    stage0_out = seen[1]
    assert seen[2].shape == (1, 4, 12, 16)
    assert torch.equal(seen[2], stage0_out.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    assert logits.shape == (1, 2, 12, 16) and head.output_stride == 1
    # the skipless block: 3x3 convs 4 -> 5 and 5 -> 5 with biases (no norm): (180 + 5) + (225 + 5), by hand
    assert sum(p.numel() for p in head.blocks[1].parameters()) == 415


def test_skipless_stages_in_a_resnet_unet_train_and_infer_like_smp():
    """The smp Unet layout: no full-resolution encoder path, a skipless last stage at stride 1."""
    cfg = make_cfg("Base-UNet.yaml", *R18, "MODEL.RESNET_UNET.FULL_RES_CHANNELS", "0",
                   "MODEL.SEM_SEG_HEAD.IN_FEATURES", "['s2', 'res2', 'res3', 'res4', 'res5']",
                   "MODEL.SEM_SEG_HEAD.SKIPLESS_STAGES", "1", "MODEL.SEM_SEG_HEAD.UPSAMPLE_MODE", "nearest",
                   "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[64, 32, 16, 16, 8]")
    model = build_model(cfg)
    head = model.sem_seg_head
    assert head.skip_features == ["res4", "res3", "res2", "s2", None] and head.output_stride == 1
    assert head.predictor.in_channels == 8
    assert model(batch(3, [(61, 77)]))["loss_sem_seg"].isfinite()
    model.eval()
    with torch.no_grad():
        assert model(batch(3, [(61, 77)], with_gt=False))[0]["sem_seg"].shape == (5, 61, 77)


def test_skipless_stages_need_their_channels_and_a_coarse_enough_finest_feature():
    shapes = {"a": ShapeSpec(channels=2, stride=2), "b": ShapeSpec(channels=3, stride=4)}
    with pytest.raises(ValueError, match=r"2 decoder stages \(1 skips \['a'\], 1 skipless\) but only 1 DECODER"):
        UNetHead(shapes, num_classes=2, decoder_channels=[4], skipless_stages=1)
    with pytest.raises(ValueError, match="2 skipless stages .* finest feature a \\(stride 2\\) would go finer"):
        UNetHead(shapes, num_classes=2, decoder_channels=[4, 4, 4], skipless_stages=2)
