"""Inference options of SegD2SemanticSegmentor (TEST.CHANNELS_LAST, TEST.AMP, TEST.COMPILE, TEST.FUSE_CONV_BN):
each gives the label map of plain detectron2 inference, and they are refused for models that don't apply them."""
import pytest
import torch

from detectron2.modeling import build_model

from seg_d2.modeling.semantic_segmentor import check_inference_options
from tests.modeling.test_sem_seg_inference import images, model_pair
from tests.modeling.test_unet_fcn import FAMILIES, make_cfg

SIZES = [(45, 61), (33, 47)]  # one batch of two sizes: padded to a common, stride-divisible size


def _outputs(model, inputs):
    with torch.no_grad():
        return [o["sem_seg"] for o in model(inputs)]


def test_channels_last_gives_the_plain_label_map():
    plain, cl = model_pair("unet_classic_rgb", "TEST.CHANNELS_LAST", "True")
    inputs = images(SIZES)
    for ref, out in zip(_outputs(plain, inputs), _outputs(cl, inputs)):
        assert out.dtype == torch.float32 and out.shape == ref.shape
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max())
        assert torch.equal(out.argmax(0), ref.argmax(0))
    convs = [m.weight for m in cl.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    # the weights are the model's own: its state_dict has the same keys, nothing duplicated
    assert cl.state_dict().keys() == plain.state_dict().keys()


def test_amp_on_cpu_is_bfloat16_and_close_to_plain():
    """bfloat16 keeps ~3 significant digits: logits move by a few percent of their range, and a pixel
    flips where the float32 top-two logits are that close, which a random-init model has plenty of
    (a trained one far fewer): the label map is the plain one up to those near-ties."""
    plain, amp = model_pair("unet_classic_rgb", "TEST.AMP.ENABLED", "True")  # DTYPE float16 -> bf16 on CPU
    inputs = images(SIZES)
    seen = []
    handle = amp.sem_seg_head.register_forward_hook(lambda m, i, o: seen.append(o[0].dtype))
    outs = _outputs(amp, inputs)
    handle.remove()
    assert seen == [torch.bfloat16]  # the head ran in bfloat16, the output is float32
    for ref, out in zip(_outputs(plain, inputs), outs):
        assert out.dtype == torch.float32
        assert torch.allclose(out, ref, atol=0.05 * ref.abs().max())
        assert (out.argmax(0) == ref.argmax(0)).float().mean() > 0.98


def test_compile_is_used_and_gives_the_plain_label_map():
    """The wiring of torch.compile (backend "eager": dynamo traces backbone + head, without inductor's
    C++ compilation, which takes minutes on a loaded CPU; benchmarks/bench_inference.py runs inductor)."""
    import torch._dynamo

    plain, comp = model_pair("unet_classic_rgb", "TEST.COMPILE.ENABLED", "True", "TEST.COMPILE.BACKEND", "eager",
                             "TEST.CHANNELS_LAST", "True")
    inputs = images(SIZES[:1])
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    out = _outputs(comp, inputs)[0]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it was traced
    assert isinstance(comp._nets["compiled"], torch._dynamo.eval_frame.OptimizedModule)
    assert comp.state_dict().keys() == plain.state_dict().keys()
    ref = _outputs(plain, inputs)[0]
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max())
    assert torch.equal(out.argmax(0), ref.argmax(0))
    torch._dynamo.reset()


def test_compile_errors_name_the_cause(monkeypatch):
    import torch._inductor.config

    _, bad_backend = model_pair("unet_classic_rgb", "TEST.COMPILE.ENABLED", "True", "TEST.COMPILE.BACKEND", "nope")
    with pytest.raises(RuntimeError, match=r"TEST.COMPILE: .*backend='nope'.*Invalid backend"):
        _outputs(bad_backend, images(SIZES[:1]))
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, "no-such-g++"))
    _, no_cxx = model_pair("unet_classic_rgb", "TEST.COMPILE.ENABLED", "True")
    with pytest.raises(RuntimeError, match=r"TEST.COMPILE: .*No working C\+\+ compiler.*no-such-g\+\+"):
        _outputs(no_cxx, images(SIZES[:1]))


@pytest.mark.parametrize("family", ["unet_resnet", "unet_classic_rgb", "fcn_resnet"])
def test_fused_conv_bn_gives_the_plain_logits_and_follows_new_weights(family):
    """Folding BN into the convs is exact up to float rounding (the plain model, BN applied after each conv, is
    the reference); the fused copy has no batch norm left, the model keeps its own; after a weight update the
    copy is made again."""
    from detectron2.layers import FrozenBatchNorm2d

    plain, fused = model_pair(family, "TEST.FUSE_CONV_BN", "True")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial statistics, so that the fold has something to do
        for m in plain.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
                for t, lo, hi in ((m.running_mean, -1, 1), (m.running_var, 0.5, 2), (m.weight, 0.5, 1.5),
                                  (m.bias, -0.5, 0.5)):
                    t.copy_(torch.empty(t.shape).uniform_(lo, hi, generator=g))
    fused.load_state_dict(plain.state_dict())
    inputs = images(SIZES)
    for ref, out in zip(_outputs(plain, inputs), _outputs(fused, inputs)):
        assert out.shape == ref.shape
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max())
    bn = (torch.nn.BatchNorm2d, FrozenBatchNorm2d)
    assert not any(isinstance(m, bn) for m in fused._nets["fused"].modules())
    assert any(isinstance(m, bn) for m in fused.modules()) and fused.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():  # a training step's in-place update
        for model in (plain, fused):
            next(m for m in model.sem_seg_head.modules() if isinstance(m, torch.nn.Conv2d)).weight.mul_(-2.0)
    for ref, out in zip(_outputs(plain, inputs), _outputs(fused, inputs)):
        assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max())


@pytest.mark.parametrize("opt", [["TEST.CHANNELS_LAST", "True"], ["TEST.AMP.ENABLED", "True"],
                                 ["TEST.COMPILE.ENABLED", "True"], ["TEST.FUSE_CONV_BN", "True"]])
def test_options_are_semantic_only(opt):
    cfg = make_cfg("Base-RCNN-FPN.yaml", *opt)
    with pytest.raises(NotImplementedError, match=f"{opt[0]}.*SegD2SemanticSegmentor.*GeneralizedRCNN"):
        check_inference_options(cfg)
    check_inference_options(make_cfg("Base-UNet-Classic.yaml", *opt))  # a semantic model: fine


def test_bad_values_are_refused():
    base, opts = FAMILIES["unet_classic_rgb"]
    with pytest.raises(ValueError, match="TEST.AMP.DTYPE"):
        build_model(make_cfg(base, *opts, "TEST.AMP.DTYPE", "float8"))
    with pytest.raises(ValueError, match="TEST.SLIDING_WINDOW.BATCH_SIZE"):
        build_model(make_cfg(base, *opts, "TEST.SLIDING_WINDOW.BATCH_SIZE", "0"))


def test_a_fused_model_can_be_traced_for_flop_counting():
    """detectron2's FlopCountAnalysis (a jit trace) of a model with TEST.FUSE_CONV_BN: the fused copy lives outside
    the model's parameters, so the trace takes its weights as constants, which it refused while they required grad
    ("Cannot insert a Tensor that requires grad as a constant": benchmarks/bench_semseg.py's timing failed so).
    The fused count is the plain one less the batch norms' (fvcore counts a batch norm's FLOPs)."""
    from detectron2.utils.analysis import FlopCountAnalysis

    plain, fused = model_pair("unet_resnet", "TEST.FUSE_CONV_BN", "True")
    fused.load_state_dict(plain.state_dict())
    x = images(SIZES[:1])
    _outputs(fused, x)  # the fused copy made before the trace, as a timed inference does
    counts = {}
    for name, model in (("plain", plain), ("fused", fused)):
        fca = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        counts[name] = fca.by_operator()
    assert counts["fused"]["conv"] == counts["plain"]["conv"] and counts["plain"]["batch_norm"] > 0
    assert "batch_norm" not in counts["fused"]
    assert not any(p.requires_grad for p in fused._nets["fused"].parameters())
