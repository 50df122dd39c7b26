"""LabelMapVAE (seg_d2.modeling.label_map_vae): it learns to reconstruct label maps in a fixed budget, samples
valid maps of the requested size, and refuses a map it cannot take, naming the file."""
import itertools

import numpy as np
import pytest
import torch

from seg_d2.modeling.label_map_vae import LabelMapVAE
from seg_d2.modeling.pix2pix import LabelMapError


def _maps(n=16, size=32, seed=0):
    """Discs (class 1) of radius 6-9 at random places on background (0); a few ignored pixels (255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        lab = np.zeros((size, size), np.int64)
        cy, cx, r = rng.integers(9, size - 9), rng.integers(9, size - 9), rng.integers(6, 10)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        lab[0, :3] = 255
        out.append(lab)
    return out


def _model():
    torch.manual_seed(0)
    return LabelMapVAE(num_classes=2, size=(32, 32), channels=16, depth=3, latent_dim=8, kl_weight=1e-3)


def _disc_iou(model, maps):
    """IoU of class 1 between the reconstructions (argmax) and the maps, over all of them."""
    model.eval()
    out = model([{"sem_seg": torch.as_tensor(m)} for m in maps])
    model.train()
    pred = np.stack([o["sem_seg"].argmax(0).numpy() for o in out])
    gt = np.stack(maps)
    return ((pred == 1) & (gt == 1)).sum() / ((pred == 1) | (gt == 1)).sum()


def test_vae_learns_to_reconstruct_label_maps_in_a_fixed_budget():
    """150 iterations (batch 4) through seg_d2's trainer take the discs' reconstruction IoU from 0 (an untrained
    decoder's argmax is one class everywhere) to above 0.5."""
    from detectron2.utils.events import EventStorage

    from seg_d2.engine import GuardedTrainer

    maps = _maps()
    model = _model()
    assert _disc_iou(model, maps) < 0.2
    batches = ([{"sem_seg": torch.as_tensor(maps[(4 * k + i) % len(maps)])} for i in range(4)] for k in itertools.count())
    trainer = GuardedTrainer(model, batches, torch.optim.Adam(model.parameters(), lr=3e-3))
    with EventStorage(0) as storage:
        for trainer.iter in range(150):
            storage.iter = trainer.iter
            trainer.run_step()
    assert _disc_iou(model, maps) > 0.5
    assert set(storage.histories()) >= {"loss_recon", "loss_kl"}


def test_samples_are_valid_label_maps_of_the_requested_size():
    model = _model().eval()
    maps = _maps()
    model.fit_latents(maps)
    samples = model.sample(5, torch.Generator().manual_seed(0), size=(40, 48))
    assert len(samples) == 5
    for s in samples:
        assert s.shape == (40, 48) and set(np.unique(s)) <= {0, 1, 255}
    again = model.sample(5, torch.Generator().manual_seed(0), size=(40, 48))
    assert all(np.array_equal(a, b) for a, b in zip(samples, again))  # seeded


def test_a_map_it_cannot_take_is_refused_naming_the_file():
    model = _model()
    bad = _maps(1)[0]
    bad[5, 5] = 3
    with pytest.raises(LabelMapError, match=r"Label map scans/a\.png: the VAE takes H x W maps of classes 0\.\.1 and "
                                            r"255, got shape \(32, 32\), values \[3\]"):
        model([{"sem_seg": torch.as_tensor(bad), "sem_seg_file_name": "scans/a.png"}])
    with pytest.raises(ValueError, match=r"SIZE \[30, 32\] must be multiples of 2\*\*DEPTH = 8"):
        LabelMapVAE(num_classes=2, size=(30, 32), depth=3)
