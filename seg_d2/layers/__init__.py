"""Low-level operations shared by seg_d2's models and evaluators."""
from .boundary import boundary_band, mask_boundary

__all__ = ["boundary_band", "mask_boundary"]
