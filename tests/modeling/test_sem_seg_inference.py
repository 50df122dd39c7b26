"""Sliding-window inference and TTA: equal to plain inference where they must be."""
import pytest
import torch
from torch.nn import functional as F

from detectron2.modeling import build_model

from seg_d2.modeling.sem_seg_inference import (
    blending_weights, sliding_window_inference, tta_inference, window_starts,
)
from tests.modeling.test_unet_fcn import FAMILIES, make_cfg

SIZES = [(45, 61), (64, 64)]


def images(sizes, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(channels, h, w, generator=g) * 255} for h, w in sizes]


def model_pair(family, *opts):
    """(plain model, the same weights with ``opts`` for inference), both in eval mode."""
    base, fam_opts = FAMILIES[family]
    torch.manual_seed(0)
    plain = build_model(make_cfg(base, *fam_opts)).eval()
    other = build_model(make_cfg(base, *fam_opts, *opts)).eval()
    other.load_state_dict(plain.state_dict())
    return plain, other


@pytest.mark.parametrize("size,window,overlap", [(100, 40, 0.25), (97, 32, 0.5), (64, 64, 0.3), (10, 40, 0.0)])
def test_window_starts_cover_everything(size, window, overlap):
    starts = window_starts(size, window, overlap)
    w = min(window, size)
    assert starts[0] == 0 and starts[-1] + w == size
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts:
        covered[s : s + w] = True
    assert covered.all()
    assert all(b - a <= w * (1 - overlap) + 1 for a, b in zip(starts, starts[1:]))


def test_blending_weights():
    g = blending_weights(9, 15, "gaussian")
    assert g.shape == (9, 15) and g.max() == 1.0 and g.min() > 0
    assert g[4, 7] == 1.0 and g[0, 0] < g[4, 7]
    assert torch.equal(blending_weights(3, 4, "uniform"), torch.ones(3, 4))
    with pytest.raises(ValueError, match="gaussian"):
        blending_weights(3, 3, "triangle")


@pytest.mark.parametrize("blending", ["gaussian", "uniform"])
def test_sliding_window_of_a_pointwise_predictor_is_exact(blending):
    """A per-pixel predictor gives the same logits in every window: blending must reproduce them."""
    conv = torch.nn.Conv2d(3, 4, 1)
    image = torch.randn(3, 70, 90)

    def predict(x):
        return conv(x[None])[0]

    with torch.no_grad():
        out = sliding_window_inference(predict, image, (32, 40), 0.25, blending)
        assert torch.allclose(out, predict(image), atol=1e-5)


@pytest.mark.parametrize("family", ["unet_resnet", "unet_classic_rgb", "fcn_resnet"])
def test_sliding_window_equals_plain_when_one_window_covers_the_image(family):
    plain, sliding = model_pair(family, "TEST.SLIDING_WINDOW.ENABLED", "True",
                                "TEST.SLIDING_WINDOW.SIZE", "[64, 64]")
    with torch.no_grad():
        for inp in images(SIZES):  # one image per batch, as the test loader gives them
            a, b = plain([inp])[0]["sem_seg"], sliding([inp])[0]["sem_seg"]
            assert torch.equal(a, b)


def test_sliding_window_over_several_windows():
    plain, sliding = model_pair("unet_classic_rgb", "TEST.SLIDING_WINDOW.ENABLED", "True",
                                "TEST.SLIDING_WINDOW.SIZE", "[32, 32]", "TEST.SLIDING_WINDOW.OVERLAP", "0.5")
    with torch.no_grad():
        inp = images([(45, 61)])
        out = sliding(inp)[0]["sem_seg"]
        ref = plain(inp)[0]["sem_seg"]
    assert out.shape == ref.shape == (5, 45, 61)
    assert torch.isfinite(out).all()


def test_tta_off_is_plain_and_identity_tta_matches():
    plain, same = model_pair("unet_resnet", "TEST.SEM_SEG_TTA.ENABLED", "False")
    _, tta1 = model_pair("unet_resnet", "TEST.SEM_SEG_TTA.ENABLED", "True", "TEST.SEM_SEG_TTA.FLIP", "False",
                         "TEST.SEM_SEG_TTA.SCALES", "[1.0]")
    with torch.no_grad():
        inp = images([(45, 61)])
        ref = plain(inp)[0]["sem_seg"]
        assert torch.equal(same(inp)[0]["sem_seg"], ref)
        # one augmentation: log of the softmax of the plain logits
        assert torch.allclose(tta1(inp)[0]["sem_seg"], F.log_softmax(ref, dim=0), atol=1e-4)


def test_flip_and_multiscale_tta():
    image = torch.randn(3, 20, 30)
    conv = torch.nn.Conv2d(3, 2, 1)

    def predict(x):
        return conv(x[None])[0]

    with torch.no_grad():
        # a pointwise model is flip-equivariant: flip TTA gives its own log-probabilities
        out = tta_inference(predict, image, [1.0], flip=True)
        assert torch.allclose(out, F.log_softmax(predict(image), 0), atol=1e-5)
        # multi-scale: every prediction resized back to the input size, probabilities averaged
        ms = tta_inference(predict, image, [0.5, 1.0, 1.5], flip=True)
    assert ms.shape == (2, 20, 30)
    assert torch.allclose(ms.exp().sum(0), torch.ones(20, 30), atol=1e-5)


def test_tta_and_sliding_window_together():
    _, model = model_pair("unet_classic_rgb", "TEST.SEM_SEG_TTA.ENABLED", "True", "TEST.SEM_SEG_TTA.SCALES",
                          "[0.75, 1.0]", "TEST.SLIDING_WINDOW.ENABLED", "True", "TEST.SLIDING_WINDOW.SIZE", "[32, 48]")
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 45, 61) * 255, "height": 90, "width": 122}])
    assert out[0]["sem_seg"].shape == (5, 90, 122)


def test_sliding_window_batch_contract():
    """batch_size 1 calls ``predict`` on (C, h, w) windows (old per-window callables work); batch_size N
    on stacks of up to N windows, the last one partial."""
    image = torch.randn(2, 70, 97)
    seen = {1: [], 3: []}
    for b in seen:
        def predict(x, b=b):
            seen[b].append(tuple(x.shape))
            return x[..., :1, :, :] * 2  # (…, 1, h, w)

        out = sliding_window_inference(predict, image, (32, 40), 0.25, "uniform", batch_size=b)
        assert torch.allclose(out, image[:1] * 2, atol=1e-6)
    # windows: rows 0/19/38, columns 0/28/57 -> 9 windows of 32x40
    assert seen[1] == [(2, 32, 40)] * 9
    assert seen[3] == [(3, 2, 32, 40)] * 3
    with pytest.raises(ValueError, match="batch size"):
        sliding_window_inference(lambda x: x, image, (32, 40), 0.25, "uniform", batch_size=0)


def test_batched_windows_give_the_one_at_a_time_result():
    """Windows stacked 1, 3 or 8 at a time (9 windows that don't tile 70x97 evenly: the last batch of 3
    and of 8 is partial) give the logits of a hand-written blend of the plain model's prediction of each
    crop, and identical label maps."""
    window, overlap = (32, 40), 0.25
    raw = images([(70, 97)], seed=3)[0]["image"]
    plain, _ = model_pair("unet_classic_rgb")
    with torch.no_grad():
        # reference: detectron2's inference on each crop (rows 0/19/38, columns 0/28/57), gaussian-blended
        acc, norm = torch.zeros(5, 70, 97), torch.zeros(70, 97)
        g = torch.exp(-0.5 * ((torch.arange(32.) - 15.5) / 4) ** 2)[:, None] * \
            torch.exp(-0.5 * ((torch.arange(40.) - 19.5) / 5) ** 2)[None, :]
        g = g / g.max()
        for y in (0, 19, 38):
            for x in (0, 28, 57):
                acc[:, y : y + 32, x : x + 40] += plain([{"image": raw[:, y : y + 32, x : x + 40]}])[0]["sem_seg"] * g
                norm[y : y + 32, x : x + 40] += g
        ref = acc / norm
        for b in (1, 3, 8):
            _, model = model_pair("unet_classic_rgb", "TEST.SLIDING_WINDOW.ENABLED", "True",
                                  "TEST.SLIDING_WINDOW.SIZE", str(list(window)),
                                  "TEST.SLIDING_WINDOW.OVERLAP", str(overlap), "TEST.SLIDING_WINDOW.BATCH_SIZE", str(b))
            out = model([{"image": raw}])[0]["sem_seg"]
            assert torch.allclose(out, ref, atol=1e-4), (b, (out - ref).abs().max())
            assert torch.equal(out.argmax(0), ref.argmax(0)), b
