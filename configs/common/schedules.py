# LR multipliers (fvcore ParamSchedulers over the whole training, 0 -> 1) matching the yaml configs'
# SOLVER.LR_SCHEDULER_NAME, each with a linear warm-up from warmup_factor.
from fvcore.common.param_scheduler import MultiStepParamScheduler, PolynomialDecayParamScheduler

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler


def warmup_poly(max_iter, warmup_iters, power=0.9, warmup_factor=0.001):
    """WarmupPolyLR (detectron2/projects/deeplab): lr * (1 - iter / max_iter) ** power."""
    return L(WarmupParamScheduler)(
        scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=power),
        warmup_length=warmup_iters / max_iter,
        warmup_factor=warmup_factor,
    )


def warmup_multistep(max_iter, steps, warmup_iters, gamma=0.1, warmup_factor=0.001):
    """WarmupMultiStepLR: lr * gamma ** (number of steps passed)."""
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[gamma**k for k in range(len(steps) + 1)], milestones=list(steps), num_updates=max_iter
        ),
        warmup_length=warmup_iters / max_iter,
        warmup_factor=warmup_factor,
    )
