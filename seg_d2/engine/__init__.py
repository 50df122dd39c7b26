"""Training pieces of tools/train_net.py: atomic and safe checkpoints, exact resume, a non-finite loss guard."""
from .checkpoint import (
    CheckpointError, CorruptCheckpointError, IncompatibleWeightsError, SegD2Checkpointer, UnsafeCheckpointError,
    check_weight_shapes,
)
from .resume import ResumableDataStream, get_rng_state, set_rng_state
from .samples import SampleGrids
from .train_loop import GuardedTrainer, NonFiniteLossError

__all__ = [
    "CheckpointError", "CorruptCheckpointError", "GuardedTrainer", "IncompatibleWeightsError", "check_weight_shapes", "NonFiniteLossError", "ResumableDataStream", "SampleGrids",
    "SegD2Checkpointer", "UnsafeCheckpointError", "get_rng_state", "set_rng_state",
]
