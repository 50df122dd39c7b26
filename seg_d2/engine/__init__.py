"""Training pieces of tools/train_net.py: atomic and safe checkpoints, exact resume, a non-finite loss guard."""
from .checkpoint import CheckpointError, CorruptCheckpointError, SegD2Checkpointer, UnsafeCheckpointError
from .resume import ResumableDataStream, get_rng_state, set_rng_state
from .train_loop import GuardedTrainer, NonFiniteLossError

__all__ = [
    "CheckpointError", "CorruptCheckpointError", "GuardedTrainer", "NonFiniteLossError", "ResumableDataStream",
    "SegD2Checkpointer", "UnsafeCheckpointError", "get_rng_state", "set_rng_state",
]
