"""Training pieces of tools/train_net.py: atomic and safe checkpoints, exact resume, a non-finite loss guard,
launch that ends its process groups."""
from .checkpoint import (
    CheckpointError, CorruptCheckpointError, IncompatibleWeightsError, SegD2Checkpointer, UnsafeCheckpointError,
    check_weight_shapes,
)
from .resume import ResumableDataStream, get_rng_state, set_rng_state
from .auto_config import configure_from_data, configure_iterations, explicit_keys
from .distributed import end_process_groups, launch
from .samples import SampleGrids
from .train_loop import GuardedTrainer, NonFiniteLossError

__all__ = [
    "CheckpointError", "CorruptCheckpointError", "GuardedTrainer", "IncompatibleWeightsError", "NonFiniteLossError",
    "ResumableDataStream", "SampleGrids", "SegD2Checkpointer", "UnsafeCheckpointError", "check_weight_shapes",
    "configure_from_data", "configure_iterations", "end_process_groups", "explicit_keys", "get_rng_state", "launch",
    "set_rng_state",
]
