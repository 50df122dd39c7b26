"""Pix2Pix (seg_d2.modeling.pix2pix): it learns label map -> image in a fixed budget where a shuffled-pairs control
does not; its alternating steps reach only their own net; its inputs (label channels, instance edges) against
hand-worked maps; and every bad label map gets a clear error naming the file."""
import itertools

import numpy as np
import pytest
import torch

from seg_d2.modeling.pix2pix import LabelMapError, Pix2Pix, instance_edges, label_channels

COLORS = {1: (40, 40, 220), 2: (60, 200, 60)}  # BGR of classes 1, 2; class 0 is a mid-grey background
GREY = 128


def _scene(rng, size=48):
    """A label map of a disc (class 1) and a square (class 2) at random places, and its image: each class in
    its colour, the background grey (what an untrained generator, tanh(0), outputs), plus pixel noise."""
    labels = np.zeros((size, size), np.int64)
    yy, xx = np.mgrid[:size, :size]
    cy, cx, r = rng.integers(10, size - 10, 2).tolist() + [int(rng.integers(5, 9))]
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    y0, x0 = rng.integers(0, size - 12, 2)
    labels[y0:y0 + 12, x0:x0 + 12] = 2
    image = np.full((size, size, 3), GREY, np.float64)
    for k, c in COLORS.items():
        image[labels == k] = c
    image += rng.normal(0, 4, image.shape)
    return labels, np.clip(image, 0, 255)


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [_scene(rng) for _ in range(n)]


def _inputs(pairs, name="scene"):
    return [{"sem_seg": torch.as_tensor(lab), "image": torch.as_tensor(img.transpose(2, 0, 1).copy()).float(),
             "file_name": f"{name}_{i}.png"} for i, (lab, img) in enumerate(pairs)]


def _model(**kw):
    torch.manual_seed(0)
    return Pix2Pix(num_classes=3, generator_channels=16, generator_depth=3, discriminator_channels=16,
                   discriminator_layers=2, **kw)


def _l1_on_objects(model, pairs):
    """Mean |generated - real| in pixel values over the object pixels (classes 1, 2) of ``pairs``."""
    model.eval()
    out = model(_inputs(pairs))
    model.train()
    errs = [np.abs(o["image"].numpy().transpose(1, 2, 0) - img)[lab > 0].mean() for o, (lab, img) in zip(out, pairs)]
    return float(np.mean(errs))


def _train(model, pairs, iters=60):
    from detectron2.utils.events import EventStorage

    from seg_d2.engine import GuardedTrainer

    def batches():
        for k in itertools.count():
            yield _inputs([pairs[(2 * k) % len(pairs)], pairs[(2 * k + 1) % len(pairs)]])

    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.5, 0.999))
    trainer = GuardedTrainer(model, batches(), optimizer)  # seg_d2's trainer: the alternating steps
    with EventStorage(0) as storage:
        for trainer.iter in range(iters):
            storage.iter = trainer.iter
            trainer.run_step()
    return storage


def test_pix2pix_learns_the_label_to_image_map_and_a_shuffled_control_does_not():
    """60 iterations (batch 2, 8 scenes of 48 px): the object pixels' L1 to the real images, from about 77 (the
    grey of an untrained generator against the class colours), falls below half its start with the true pairs; with
    the images shuffled against the label maps (a derangement), the colours cannot follow the classes, and the same
    budget leaves it above 80 % of its start. Both are measured on the true pairs."""
    pairs = _data()
    start = _l1_on_objects(_model(), pairs)
    # an object pixel starts |(40,40,220) - 128| = 89.3 (class 1) or |(60,200,60) - 128| = 69.3 (class 2) off on
    # average over the channels (by hand), whatever the mix of the two
    assert 65 < start < 93

    true_model = _model()
    storage = _train(true_model, pairs)
    learnt = _l1_on_objects(true_model, pairs)

    shuffled = [(lab, pairs[(i + 1) % len(pairs)][1]) for i, (lab, _) in enumerate(pairs)]
    control = _model()
    _train(control, shuffled)
    unlearnt = _l1_on_objects(control, pairs)
    assert learnt < 0.5 * start, (start, learnt)
    assert unlearnt > 0.8 * start, (start, unlearnt)
    # both steps ran and logged their losses every iteration
    history = storage.histories()
    for key in ("loss_d_real", "loss_d_fake", "loss_g_gan", "loss_g_l1"):
        assert len(history[key].values()) == 60, key


def test_each_alternating_step_reaches_only_its_own_net():
    """The discriminator step gives no generator parameter a gradient, the generator step no discriminator
    parameter: one optimizer then moves only the net of the step (Adam skips parameters without gradient)."""
    model = _model()
    data = _inputs(_data(2))
    for step, own, other in (("discriminator", "discriminator.", None), ("generator", None, "discriminator.")):
        model.zero_grad(set_to_none=True)
        sum(model(data, step=step).values()).backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        disc = {n for n, _ in model.named_parameters() if n.startswith("discriminator.")}
        if step == "discriminator":
            assert with_grad == disc
        else:
            assert with_grad == {n for n, _ in model.named_parameters()} - disc
    with pytest.raises(ValueError, match="alternating steps"):
        model(data)


def test_label_channels_and_instance_edges_by_hand():
    sem_seg = torch.tensor([[[0, 1], [255, 2]]])
    onehot = label_channels(sem_seg, 3, 255)
    assert onehot.shape == (1, 4, 2, 2)
    # pixel (0,0) class 0, (0,1) class 1, (1,0) ignored -> the 4th channel, (1,1) class 2
    assert onehot[0, :, 0, 0].tolist() == [1, 0, 0, 0] and onehot[0, :, 0, 1].tolist() == [0, 1, 0, 0]
    assert onehot[0, :, 1, 0].tolist() == [0, 0, 0, 1] and onehot[0, :, 1, 1].tolist() == [0, 0, 1, 0]
    ids = torch.tensor([[[0, 0, 0, 0],
                         [0, 1, 1, 0],
                         [0, 1, 1, 2],
                         [0, 0, 0, 2]]])
    # every pixel with a 4-neighbour of another id (pix2pixHD's rule), worked out by hand
    expected = [[0, 1, 1, 0],
                [1, 1, 1, 1],
                [1, 1, 1, 1],
                [0, 1, 1, 1]]
    assert instance_edges(ids)[0, 0].int().tolist() == expected


def test_instance_edges_channel_is_an_input_and_needs_instances():
    model = _model(use_instance_edges=True)
    pairs = _data(2)
    ids = [torch.as_tensor((lab > 0).astype(np.int64)) for lab, _ in pairs]
    data = [{**x, "instance_ids": i} for x, i in zip(_inputs(pairs), ids)]
    assert model.encoder.blocks[0][0][0].in_channels == 3 + 1 + 1  # classes, ignore, edges
    assert set(model(data, step="generator")) == {"loss_g_gan", "loss_g_l1"}
    with pytest.raises(LabelMapError, match=r"scene_0\.png: MODEL.PIX2PIX.INSTANCE_EDGES needs the instances"):
        model(_inputs(pairs), step="generator")


def test_bad_label_maps_get_clear_errors_naming_the_file():
    model = _model().eval()
    lab, img = _data(1)[0]
    bad = lab.copy()
    bad[0, 0] = 7
    with pytest.raises(LabelMapError, match=r"scene_0\.png has values \[7\] the generator was not trained on: it "
                                            r"knows classes 0\.\.2 and the ignore label 255"):
        model(_inputs([(bad, img)]))
    with pytest.raises(LabelMapError, match=r"scene_0\.png has shape \(48, 48, 3\)"):
        model([{"sem_seg": torch.zeros(48, 48, 3, dtype=torch.long), "file_name": "scene_0.png"}])
    with pytest.raises(LabelMapError, match=r"scene_0\.png is 2x48: the generator takes maps of at least 4 pixels"):
        model([{"sem_seg": torch.zeros(2, 48, dtype=torch.long), "file_name": "scene_0.png"}])
    model.train()
    with pytest.raises(LabelMapError, match=r"scene_0\.png: image \(40, 48\) and label map \(48, 48\) differ"):
        model([{"sem_seg": torch.as_tensor(lab), "image": torch.zeros(3, 40, 48), "file_name": "scene_0.png"}],
              step="generator")


def test_inference_returns_images_at_the_requested_size_in_pixel_range():
    model = _model().eval()
    lab, _ = _data(1)[0]
    out = model([{"sem_seg": torch.as_tensor(lab[:45, :47]), "height": 90, "width": 94}])
    assert out[0]["image"].shape == (3, 90, 94)
    assert 0 <= float(out[0]["image"].min()) and float(out[0]["image"].max()) <= 255


def test_dropout_is_noise_in_inference_and_leaves_the_weights_as_they_are():
    """pix2pix's noise (Isola 2017): dropout kept on at test time, so one label map gives different images; with
    rate 0 the generator is a function of the map. Either way the state dict is the same (checkpoints load)."""
    lab = torch.as_tensor(_data(1)[0][0])
    plain, noisy = _model().eval(), _model(dropout=0.5).eval()
    assert plain.state_dict().keys() == noisy.state_dict().keys()
    noisy.load_state_dict(plain.state_dict())
    with torch.no_grad():
        a, b = (plain([{"sem_seg": lab}])[0]["image"] for _ in range(2))
        c, d = (noisy([{"sem_seg": lab}])[0]["image"] for _ in range(2))
    assert torch.equal(a, b)
    assert (c - d).abs().max() > 1.0  # in 0..255 pixels
    with pytest.raises(ValueError, match=r"MODEL.PIX2PIX.DROPOUT must be in \[0, 1\), got 1.0"):
        _model(dropout=1.0)


def test_reflect_padding_leaves_no_border_signal_to_paint_a_frame_from():
    """Convs, BN, ReLU, pooling and bilinear upsampling map a constant input to a constant output unless the
    padding brings in something else: with reflect padding an all-background map gives a flat image (what a
    frame along the borders cannot come from); zero padding makes the border differ from the interior."""
    flat = [{"sem_seg": torch.zeros(48, 48, dtype=torch.long)}]
    with torch.no_grad():
        reflect = _model(padding_mode="reflect").eval()(flat)[0]["image"]
        zeros = _model().eval()(flat)[0]["image"]
    assert float(reflect.std(dim=(1, 2)).max()) < 1e-3
    assert float((zeros[:, 0, 0] - zeros[:, 24, 24]).abs().max()) > 0.1
    assert _model(padding_mode="reflect").state_dict().keys() == _model().state_dict().keys()
    with pytest.raises(ValueError, match="MODEL.PIX2PIX.PADDING_MODE must be 'zeros' or 'reflect', got 'circular'"):
        _model(padding_mode="circular")


def test_a_map_that_needs_padding_is_padded_with_its_own_edges():
    """Bug fix: maps whose size is not a multiple of the generator's stride were padded with the ignore label,
    an input never met in training (random crops are never padded), and the generator painted it as a frame.
    With reflect padding an all-background map gives a flat image at any size, as at a stride multiple."""
    model = _model(padding_mode="reflect").eval()
    assert model.size_divisibility == 4
    with torch.no_grad():
        aligned = model([{"sem_seg": torch.zeros(48, 48, dtype=torch.long)}])[0]["image"]
        padded = model([{"sem_seg": torch.zeros(46, 47, dtype=torch.long)}])[0]["image"]
    assert padded.shape == (3, 46, 47)
    assert float(padded.std(dim=(1, 2)).max()) < 1e-3
    assert torch.allclose(padded, aligned[:, :46, :47], atol=1e-3)


def test_spade_normalizes_without_affine_then_scales_and_shifts_from_the_label_map():
    """SPADE (Park 2019): with its gamma and beta convs zeroed it is plain batch normalization without affine
    (torch's functional batch_norm); otherwise the output follows the label map, resized by nearest neighbour (a
    2x map gives what its every other pixel gives)."""
    from torch.nn import functional as F

    from seg_d2.modeling.pix2pix import SPADE

    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6) * 3 + 1
    spade = SPADE(4, 3, hidden_channels=5)
    labels = label_channels(torch.randint(0, 2, (2, 12, 12)), 2, 255)
    for conv in (spade.gamma, spade.beta):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    spade.label_map = labels
    assert torch.allclose(spade(x), F.batch_norm(x, None, None, training=True, eps=1e-5), atol=1e-5)
    torch.nn.init.normal_(spade.gamma.weight)
    torch.nn.init.normal_(spade.beta.weight)
    spade.eval()  # running statistics: the label map's effect alone
    full = spade(x)
    spade.label_map = labels[:, :, ::2, ::2]
    assert torch.allclose(spade(x), full, atol=1e-6)
    spade.label_map = label_channels(torch.zeros(2, 12, 12, dtype=torch.long), 2, 255)
    assert (spade(x) - full).abs().max() > 0.1
    spade.label_map = None
    with pytest.raises(RuntimeError, match="SPADE needs the label map"):
        spade(x)


def test_spade_generator_replaces_the_decoder_norms_and_learns():
    """MODEL.PIX2PIX.SPADE: every norm of the generator's decoder becomes a SPADE on the 4 label channels (3
    classes + ignore), adding per norm of C channels 4*16*9+16 (shared conv) + 2*(16*C*9+C) (gamma, beta) - 2*C
    (BN's affine) parameters; the encoder keeps its BN. The generator learns as the plain one does (the first
    test's budget and margin), and keeps no reference to a batch between calls."""
    from seg_d2.modeling.pix2pix import SPADE

    plain, spade = _model(), _model(spade=True)
    norms = [m for m in spade.decoder.modules() if isinstance(m, SPADE)]
    channels = [c for block in plain.decoder.blocks for c in (block[0][0].out_channels, block[1][0].out_channels)]
    assert [m.gamma.out_channels for m in norms] == channels and len(channels) == 4
    extra = sum(4 * 16 * 9 + 16 + 2 * (16 * c * 9 + c) - 2 * c for c in channels)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(spade) - count(plain) == extra
    assert not any(isinstance(m, SPADE) for m in spade.encoder.modules())

    pairs = _data()
    start = _l1_on_objects(spade, pairs)
    _train(spade, pairs)
    assert _l1_on_objects(spade, pairs) < 0.5 * start
    assert all(m.label_map is None for m in norms)
    with pytest.raises(ValueError, match="MODEL.PIX2PIX.SPADE replaces the generator's norms"):
        _model(spade=True, norm="")
