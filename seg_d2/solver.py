"""The optimizer named by ``SOLVER.OPTIMIZER``: detectron2's SGD, or Adam for small from-scratch recipes."""
import torch

from detectron2.solver import build_optimizer as build_sgd
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

__all__ = ["build_optimizer"]


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` "SGD": detectron2's ``build_optimizer``; "ADAM": Adam with the same
    per-parameter learning rates and weight decays (norm and bias overrides) and gradient clipping."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        return build_sgd(cfg, model)
    if name != "ADAM":
        raise ValueError(f"SOLVER.OPTIMIZER must be 'SGD' or 'ADAM', got {cfg.SOLVER.OPTIMIZER!r}")
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    return maybe_add_gradient_clipping(cfg, torch.optim.Adam)(params, lr=cfg.SOLVER.BASE_LR,
                                                              betas=tuple(cfg.SOLVER.ADAM_BETAS),
                                                              weight_decay=cfg.SOLVER.WEIGHT_DECAY)
