"""Exact resume: the random number generators and the training data stream continue where they stopped.

detectron2 restarts a resumed run's infinite sampler stream at its beginning (with a new random seed unless
SEED is set), so it trains on different batches than the uninterrupted run would have. Here the sampler's
seed and the RNG states are saved in each checkpoint, and on resume the sampler skips the indices that the
finished iterations consumed: replayed from the seed, and from the images' aspect ratios for detectron2's
aspect-ratio grouping (whose half-filled buckets are refilled), without loading any image.

Limitations: with ``DATALOADER.NUM_WORKERS`` > 0 the batches are the same but the workers' augmentation RNG
is reseeded, so random augmentations differ; a mapper that drops images (returns None) makes detectron2 draw
replacements at random, which the replay does not see.
"""
import itertools
import logging
import random
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from detectron2.data.common import AspectRatioGroupedDataset, MapDataset, ToIterableDataset

__all__ = ["get_rng_state", "set_rng_state", "ResumableDataStream"]


def get_rng_state() -> Dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states, as plain types and tensors (``weights_only``-safe)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _image_size(dataset_dict):
    """(width, height) as the mapper reports it: the dict's, or the image file's (EXIF-rotated, as
    detectron2's read_image loads it), read from its header only."""
    if "width" in dataset_dict and "height" in dataset_dict:
        return dataset_dict["width"], dataset_dict["height"]
    from PIL import Image

    with Image.open(dataset_dict["file_name"]) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


class _ResumedSampler(Sampler):
    """This process's part of ``sampler``'s infinite stream, minus its first ``skip`` indices, after ``replay``."""

    def __init__(self, sampler, skip: int, replay):
        self.sampler, self.skip, self.replay = sampler, skip, list(replay)

    def __iter__(self):
        s = self.sampler
        yield from self.replay
        yield from itertools.islice(s._infinite_indices(), s._rank + self.skip * s._world_size, None, s._world_size)


class ResumableDataStream:
    """The resumable state of a detectron2 train loader built on an infinite sampler (``TrainingSampler``,
    ``RepeatFactorTrainingSampler``, ...): its seed, and where its stream stands after N batches."""

    def __init__(self, data_loader):
        self.grouped: Optional[AspectRatioGroupedDataset] = None
        self.batch_size = None
        self.iterable: Optional[ToIterableDataset] = None
        loader = data_loader
        if isinstance(loader, AspectRatioGroupedDataset):
            self.grouped, self.batch_size, loader = loader, loader.batch_size, loader.dataset
        if isinstance(loader, DataLoader) and isinstance(loader.dataset, ToIterableDataset):
            self.batch_size = self.batch_size or loader.batch_size
            self.iterable = loader.dataset
        sampler = self.iterable.sampler if self.iterable is not None else None
        self.sampler = sampler if all(hasattr(sampler, a) for a in ("_infinite_indices", "_seed", "_rank",
                                                                     "_world_size")) else None
        if self.sampler is None:
            logging.getLogger(__name__).warning(
                f"The train loader ({type(data_loader).__name__}) is not detectron2's batched loader over an "
                f"infinite sampler: --resume restarts its data stream")

    @property
    def supported(self) -> bool:
        return self.sampler is not None

    def state_dict(self) -> Dict[str, Any]:
        return {"sampler_seed": int(self.sampler._seed)} if self.supported else {}

    def resume(self, state: Dict[str, Any], num_batches: int) -> None:
        """Continue the stream after ``num_batches`` batches of the run that saved ``state``; call it before
        the loader's first batch is taken."""
        if not self.supported or "sampler_seed" not in state:
            return
        self.sampler._seed = state["sampler_seed"]
        skip, replay = self._position(num_batches)
        self.iterable.sampler = _ResumedSampler(self.sampler, skip, replay)
        logging.getLogger(__name__).info(
            f"Data stream resumed after {num_batches} batches: {skip} sampled images skipped"
            + (f", {len(replay)} waiting in aspect-ratio buckets replayed" if replay else ""))

    def _position(self, num_batches: int):
        """(indices of this process's stream consumed by ``num_batches`` batches, those left in buckets)."""
        if self.grouped is None:
            return num_batches * self.batch_size, []
        dataset = self.iterable.dataset
        dataset = dataset._dataset if isinstance(dataset, MapDataset) else dataset
        bucket_of = {}
        buckets = ([], [])
        stream = itertools.islice(self.sampler._infinite_indices(), self.sampler._rank, None, self.sampler._world_size)
        consumed = batches = 0
        while batches < num_batches:
            idx = next(stream)
            consumed += 1
            if idx not in bucket_of:  # as AspectRatioGroupedDataset groups them
                w, h = _image_size(dataset[idx])
                bucket_of[idx] = 0 if w > h else 1
            bucket = buckets[bucket_of[idx]]
            bucket.append((consumed, idx))
            if len(bucket) == self.batch_size:
                batches += 1
                del bucket[:]
        return consumed, [idx for _, idx in sorted(buckets[0] + buckets[1])]
