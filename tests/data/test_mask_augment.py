"""seg_d2.data.mask_augment: new label maps from training maps, checked against hand-worked maps."""
import numpy as np
import pytest

from seg_d2.data.mask_augment import LabelMapSampler, copy_paste_objects, elastic_warp, label_map_instances


def test_elastic_warp_moves_a_boundary_by_at_most_alpha_and_adds_no_value():
    label = np.zeros((64, 64), np.int64)
    label[:, 32:] = 3  # a vertical boundary between columns 31 and 32
    label[0, 0] = 255  # an ignored pixel stays a value of its own
    out = elastic_warp(label, np.random.default_rng(0), alpha=4.0, sigma=5.0)
    assert set(np.unique(out)) <= {0, 3, 255}
    assert (out != label).any()  # it did move
    for row in out[8:-8]:  # away from the reflected borders: each row's first 3 within 4 px (+1 for rounding)
        first = int(np.argmax(row == 3))
        assert 32 - 5 <= first <= 32 + 5
    assert np.array_equal(elastic_warp(label, np.random.default_rng(0), alpha=0.0), label)


def test_copy_paste_pastes_a_donor_object_whole():
    label = np.zeros((40, 40), np.int64)
    donor = np.zeros((40, 40), np.int64)
    donor[5:10, 20:27] = 2  # one 5 x 7 object of class 2
    out = copy_paste_objects(label, donor, np.random.default_rng(1), classes=[2])
    ys, xs = np.nonzero(out == 2)
    assert len(ys) == 35 and ys.max() - ys.min() + 1 == 5 and xs.max() - xs.min() + 1 == 7
    assert set(np.unique(out)) == {0, 2}
    # an object class the donor lacks: the map unchanged
    assert np.array_equal(copy_paste_objects(label, donor, np.random.default_rng(1), classes=[1]), label)


def test_instances_are_the_8_connected_objects_of_each_class():
    label = np.array([[1, 0, 0, 2],
                      [0, 1, 0, 2],
                      [0, 0, 0, 0],
                      [1, 1, 0, 2]])
    found = label_map_instances(label, [1, 2])
    # class 1: the diagonal pair (8-connected) and the bottom pair; class 2: the top pair and the corner pixel
    assert sorted((c, int(m.sum())) for c, m in found) == [(1, 2), (1, 2), (2, 1), (2, 2)]


def test_sampler_copy_mode_returns_training_maps_and_rejects_unknown_modes_and_a_missing_vae():
    maps = [np.full((8, 8), k) for k in range(3)]
    sampler = LabelMapSampler(maps, object_classes=[1, 2], mode="copy")
    rng = np.random.default_rng(0)
    for _ in range(10):
        out = sampler.sample(rng)
        assert any(np.array_equal(out, m) for m in maps)
    with pytest.raises(ValueError, match="mode must be one of"):
        LabelMapSampler(maps, object_classes=[1], mode="gan")
    with pytest.raises(ValueError, match="takes a VAE with mode 'vae', and only then"):
        LabelMapSampler(maps, object_classes=[1], mode="vae")
