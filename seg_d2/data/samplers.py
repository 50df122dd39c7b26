"""Sampling several training datasets at set shares (``SEG_D2.DATASETS.TRAIN_WEIGHTS``)."""
import itertools
import logging
from typing import List, Optional, Sequence

import torch
from torch.utils.data import Sampler

from detectron2.utils import comm

__all__ = ["WeightedDatasetsSampler", "check_train_weights"]

logger = logging.getLogger(__name__)


def check_train_weights(cfg) -> List[float]:
    """``SEG_D2.DATASETS.TRAIN_WEIGHTS`` as floats: [] or one positive weight per ``DATASETS.TRAIN`` entry."""
    weights = [float(w) for w in cfg.SEG_D2.DATASETS.TRAIN_WEIGHTS]
    names = list(cfg.DATASETS.TRAIN)
    if weights and (len(weights) != len(names) or min(weights) <= 0):
        raise ValueError(f"SEG_D2.DATASETS.TRAIN_WEIGHTS {weights}: give one positive weight per dataset of "
                         f"DATASETS.TRAIN {names} (or [] to sample all their images uniformly)")
    return weights


class WeightedDatasetsSampler(Sampler):
    """An infinite stream of indices into the concatenation of datasets of ``sizes`` images, drawing dataset
    ``k`` with probability ``weights[k] / sum(weights)`` whatever its size, and an image of it uniformly (with
    replacement). So a large synthetic set cannot swamp a small real one: with weights [1, 1] half the
    images of every batch (in expectation) are real.

    Like detectron2's ``TrainingSampler``: seeded (all processes alike), each process takes every
    ``world_size``-th index from ``rank``; ``_infinite_indices`` / ``_seed`` / ``_rank`` / ``_world_size``,
    so that seg_d2's exact ``--resume`` replays it.
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: Optional[int] = None):
        if len(sizes) != len(weights) or not sizes:
            raise ValueError(f"WeightedDatasetsSampler: {len(sizes)} dataset sizes but {len(weights)} weights")
        if min(sizes) <= 0:
            raise ValueError(f"WeightedDatasetsSampler: a dataset has no image (sizes {list(sizes)})")
        total = float(sum(weights))
        self._probs = torch.cat([torch.full((n,), w / total / n, dtype=torch.float64) for n, w in zip(sizes, weights)])
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = comm.get_rank(), comm.get_world_size()

    def __iter__(self):
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self):
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            yield from torch.multinomial(self._probs, 4096, replacement=True, generator=g).tolist()
