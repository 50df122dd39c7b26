"""Binary models (MODEL.SEM_SEG_HEAD.NUM_CLASSES 1): one foreground logit z in training (sigmoid,
BCE, Dice), the two-class logits [0, z] in inference, whatever the inference mode."""
import pytest
import torch
from torch.nn import functional as F

from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model

from seg_d2.modeling.fcn_head import FCNHead
from seg_d2.modeling.sem_seg_inference import sliding_window_inference, tta_inference
from seg_d2.modeling.sem_seg_losses import SemSegLoss, boundary_loss, cross_entropy_loss, dice_loss, focal_loss
from seg_d2.modeling.unet_head import UNetHead
from tests.modeling.test_unet_fcn import FAMILIES, make_cfg

IGN = 255
SHAPES = {"a": ShapeSpec(channels=4, stride=2), "b": ShapeSpec(channels=8, stride=4)}


def features(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(2, 4, 9, 12, generator=g), "b": torch.randn(2, 8, 5, 6, generator=g)}


def binary_heads():
    torch.manual_seed(0)
    unet = UNetHead(SHAPES, num_classes=1, decoder_channels=[4], norm="")
    fcn = FCNHead(SHAPES, num_classes=1, conv_dims=4, dropout=0.0, norm="")
    torch.nn.init.normal_(fcn.skip_scores[0].weight)  # zero-initialised: let the skip matter
    return {"unet": unet, "fcn": fcn}


def raw_logit(head, feats):
    """The head's foreground logit z at stride 1 (before any two-class conversion)."""
    x = head.layers(feats)
    x = x[0] if isinstance(x, tuple) else x
    return F.interpolate(x, scale_factor=head.output_stride, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", ["unet", "fcn"])
def test_binary_heads_infer_background_foreground_logits(name):
    head = binary_heads()[name].eval()
    feats = features()
    with torch.no_grad():
        logits, _ = head(feats)
        z = raw_logit(head, feats)
    assert z.shape == (2, 1, 18, 24) and logits.shape == (2, 2, 18, 24)
    assert torch.equal(logits[:, 0], torch.zeros_like(z[:, 0])) and torch.equal(logits[:, 1], z[:, 0])
    probs = F.softmax(logits, dim=1)
    assert torch.allclose(probs[:, 1], torch.sigmoid(z[:, 0]), atol=1e-6)
    assert torch.equal(logits.argmax(1), (torch.sigmoid(z[:, 0]) > 0.5).long())


def test_two_class_logits():
    from seg_d2.modeling.head_inputs import two_class_logits

    z = torch.tensor([[[-2.0, 0.5]]])
    assert torch.equal(two_class_logits(z), torch.tensor([[[0.0, 0.0]], [[-2.0, 0.5]]]))
    multi = torch.randn(3, 2, 2)
    assert two_class_logits(multi) is multi


def test_tta_of_a_binary_predictor_gives_two_class_log_probs():
    def two_class_logits(z):
        return torch.cat([torch.zeros_like(z), z])

    conv = torch.nn.Conv2d(3, 1, 1)
    image = torch.randn(3, 12, 16)

    def predict(x):
        return conv(x[None])[0]

    with torch.no_grad():
        z = predict(image)
        out = tta_inference(predict, image, [1.0], flip=True)
        assert out.shape == (2, 12, 16)
        assert torch.allclose(out, torch.cat([F.logsigmoid(-z), F.logsigmoid(z)]), atol=1e-5)
        # sliding-window blending is linear: converting before or after it is the same
        sw = sliding_window_inference(predict, image, (8, 8), 0.5, "gaussian")
        sw2 = sliding_window_inference(lambda x: two_class_logits(predict(x)), image, (8, 8), 0.5, "gaussian")
        assert torch.allclose(two_class_logits(sw), sw2, atol=1e-6)


BINARY_UNET = [*FAMILIES["unet_classic_rgb"][1], "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "1"]


def binary_model(*opts):
    torch.manual_seed(0)
    return build_model(make_cfg(FAMILIES["unet_classic_rgb"][0], *BINARY_UNET, *opts))


def test_binary_model_trains_and_every_inference_mode_gives_two_classes():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 45, 61, generator=g) * 255
    label = (torch.rand(45, 61, generator=g) > 0.5).long()
    label[:5] = IGN
    model = binary_model("MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS", "[1.0, 3.0]")
    losses = model([{"image": image, "sem_seg": label}])
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    model.eval()
    state = model.state_dict()
    outputs = {}
    for mode, opts in {
        "plain": [],
        "sliding": ["TEST.SLIDING_WINDOW.ENABLED", "True", "TEST.SLIDING_WINDOW.SIZE", "[32, 32]"],
        "tta": ["TEST.SEM_SEG_TTA.ENABLED", "True", "TEST.SEM_SEG_TTA.FLIP", "False",
                "TEST.SEM_SEG_TTA.SCALES", "[1.0]"],
    }.items():
        m = binary_model(*opts).eval()
        m.load_state_dict(state)
        with torch.no_grad():
            outputs[mode] = m([{"image": image}])[0]["sem_seg"]
        assert outputs[mode].shape == (2, 45, 61), mode
    plain = outputs["plain"]
    assert torch.equal(plain[0], torch.zeros_like(plain[0]))
    # identity TTA: the log-probabilities of the plain [0, z], i.e. [log(1 - sigmoid z), log sigmoid z]
    assert torch.allclose(outputs["tta"], F.log_softmax(plain, dim=0), atol=1e-4)
    assert torch.equal(outputs["tta"].argmax(0), plain.argmax(0))
    assert torch.equal(outputs["sliding"][0], torch.zeros_like(plain[0]))


def test_binary_class_weights_are_background_foreground():
    logits = torch.tensor([[[[2.0, -1.0, 0.5]]]])  # (1, 1, 1, 3)
    t = torch.tensor([[[0, 1, IGN]]])
    l0 = F.softplus(torch.tensor(2.0)).item()  # -log(1 - sigmoid(2))
    l1 = F.softplus(torch.tensor(1.0)).item()  # -log sigmoid(-1)
    got = cross_entropy_loss(logits, t, ignore_value=IGN, class_weights=torch.tensor([1.0, 3.0]))
    assert got.item() == pytest.approx((l0 + 3 * l1) / 4, rel=1e-5)
    loss = SemSegLoss(losses=["ce", "boundary"], weights=[1.0, 1.0], class_weights=[1.0, 3.0])
    assert loss(logits, t)["loss_sem_seg"].item() == pytest.approx(got.item())
    checked = SemSegLoss(losses=["ce"], weights=[1.0], class_weights=[1.0, 3.0], num_classes=1)
    assert checked(logits, t)["loss_sem_seg"].item() == pytest.approx(got.item())


@pytest.mark.parametrize("weights", [[1.0], [1.0, 2.0, 3.0]])
def test_binary_class_weights_of_a_wrong_count_name_the_config_key(weights):
    msg = r"MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS has \d weights: it needs 2 \(background and foreground"
    with pytest.raises(ValueError, match=msg):  # on the first batch
        loss = SemSegLoss(losses=["ce"], weights=[1.0], class_weights=weights)
        loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=msg):  # when the model is built
        binary_model("MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS", str(weights))


@pytest.mark.parametrize("loss", [cross_entropy_loss, dice_loss, focal_loss, boundary_loss])
def test_binary_losses_reject_labels_other_than_0_1_ignore(loss):
    logits = torch.zeros(1, 1, 4, 4)
    good = torch.tensor([[[0, 1, IGN, 1]] * 4])
    assert torch.isfinite(loss(logits, good, ignore_value=IGN))
    for bad_label in (2, -1):
        bad = good.clone()
        bad[0, 0, 0] = bad_label
        with pytest.raises(ValueError, match=rf"NUM_CLASSES 1\) takes labels 0 .*, 1 .* and 255 .*\[{bad_label}\]"):
            loss(logits, bad, ignore_value=IGN)
