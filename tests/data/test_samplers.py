"""SEG_D2.DATASETS.TRAIN_WEIGHTS: WeightedDatasetsSampler draws each training dataset at its share."""
import itertools
from collections import Counter
from unittest import mock

import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from seg_d2 import get_cfg
from seg_d2.data import build_train_loader
from seg_d2.data.samplers import WeightedDatasetsSampler, check_train_weights


def test_each_dataset_is_drawn_at_its_share_and_its_images_alike():
    # datasets of 10 and 100 images, weights 3 : 1 -> 75 % from the first (7.5 % per image), 25 % from the
    # second (0.25 % per image), whatever their sizes; uniform sampling would give the first 10 / 110 = 9 %
    n = 40000
    draws = list(itertools.islice(iter(WeightedDatasetsSampler([10, 100], [3.0, 1.0], seed=0)), n))
    first = sum(i < 10 for i in draws) / n
    assert abs(first - 0.75) < 4 * (0.75 * 0.25 / n) ** 0.5  # within 4 binomial standard deviations
    counts = Counter(draws)
    assert set(counts) <= set(range(110))
    for i in range(10):
        assert abs(counts[i] / n - 0.075) < 4 * (0.075 * 0.925 / n) ** 0.5, i


def test_the_stream_is_seeded_and_shared_between_processes():
    a = list(itertools.islice(iter(WeightedDatasetsSampler([5, 7], [1, 1], seed=3)), 50))
    assert a == list(itertools.islice(iter(WeightedDatasetsSampler([5, 7], [1, 1], seed=3)), 50))
    shards = []
    for rank in (0, 1):  # as detectron2's TrainingSampler: process r takes indices r, r + 2, ...
        with mock.patch("detectron2.utils.comm.get_rank", return_value=rank), \
                mock.patch("detectron2.utils.comm.get_world_size", return_value=2):
            shards.append(list(itertools.islice(iter(WeightedDatasetsSampler([5, 7], [1, 1], seed=3)), 25)))
    assert [x for pair in zip(*shards) for x in pair] == a


def _cfg(weights, train):
    cfg = get_cfg()
    cfg.merge_from_file("configs/Shapes-SemanticSegmentation/unet_classic_c16_d3_scratch_adam_bs4_160it.yaml")
    cfg.merge_from_list(["DATASETS.TRAIN", str(tuple(train)), "SEG_D2.DATASETS.TRAIN_WEIGHTS", str(weights),
                         "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8", "SEED", "0"])
    return cfg


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="one positive weight per dataset of DATASETS.TRAIN"):
        check_train_weights(_cfg([1.0], ["seg_d2_shapes_sem_seg_train", "seg_d2_shapes_sem_seg_val"]))
    with pytest.raises(ValueError, match="one positive weight"):
        check_train_weights(_cfg([1.0, 0.0], ["seg_d2_shapes_sem_seg_train", "seg_d2_shapes_sem_seg_val"]))


def test_train_loader_samples_a_small_dataset_at_its_weight():
    small, large = "test_weights_small", "test_weights_large"
    for name, part in ((small, slice(0, 4)), (large, slice(4, 44))):
        if name not in DatasetCatalog:
            DatasetCatalog.register(name, lambda part=part: DatasetCatalog.get("seg_d2_shapes_sem_seg_train")[part])
            MetadataCatalog.get(name).set(**{k: v for k, v in MetadataCatalog.get("seg_d2_shapes_sem_seg_train").as_dict().items()
                                             if k != "name"})
    small_files = {d["file_name"] for d in DatasetCatalog.get(small)}
    loader = iter(build_train_loader(_cfg([1.0, 1.0], [small, large])))
    seen = [x["file_name"] for _ in range(8) for x in next(loader)]  # 64 images
    from_small = sum(f in small_files for f in seen)
    # weights 1 : 1 -> 32 expected from the 4 small-set images (binomial sd 4); uniform sampling: 64 * 4 / 44 = 5.8
    assert 16 <= from_small <= 48, from_small


def test_a_resumed_weighted_stream_continues_where_it_stopped():
    """seg_d2's exact --resume (ResumableDataStream) replays the weighted sampler: the batches after N are those
    the uninterrupted stream gives."""
    from seg_d2.engine import ResumableDataStream

    names = ["seg_d2_shapes_sem_seg_train", "seg_d2_shapes_sem_seg_val"]
    first = build_train_loader(_cfg([1.0, 3.0], names))
    saved = ResumableDataStream(first).state_dict()  # what a checkpoint of the first run holds
    full = iter(first)
    files = [[x["file_name"] for x in next(full)] for _ in range(5)]
    loader = build_train_loader(_cfg([1.0, 3.0], names))
    stream = ResumableDataStream(loader)
    assert stream.supported and saved
    stream.resume(saved, num_batches=3)
    resumed = iter(loader)
    assert [[x["file_name"] for x in next(resumed)] for _ in range(2)] == files[3:]
