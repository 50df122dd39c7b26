"""The training step of tools/train_net.py: detectron2's ``SimpleTrainer`` with a non-finite loss and gradient
guard."""
import logging
import math
import time
from typing import Callable, Optional

import torch

from detectron2.engine import SimpleTrainer
from detectron2.utils import comm

__all__ = ["NonFiniteLossError", "GuardedTrainer"]


class NonFiniteLossError(FloatingPointError):
    """A loss term or the gradients became NaN or Inf; the message names the term (or the parameters), the
    iteration and the checkpoint to resume from."""


class GuardedTrainer(SimpleTrainer):
    """``SimpleTrainer`` that checks every loss term before the backward pass, and the gradients' total norm
    before the optimizer step.

    detectron2 notices a non-finite loss only after ``backward()`` (the optimizer step is then skipped only
    because it raises), with the whole loss dict and no word on which term or what to resume from, and never
    looks at the gradients: a finite loss with a NaN/Inf gradient (an overflow in a backward op) steps the
    optimizer into NaN weights, which later checkpoints save as if they were fine. Here a non-finite loss
    term or gradient norm stops training with a message naming the iteration, the term(s) or parameters and
    the last checkpoint; or, with ``max_nonfinite_skips`` > 0, that batch is skipped (no optimizer step) up
    to that many times in the whole training (one count for both, kept in checkpoints). All processes agree
    on the decision (the loss flag is reduced; the gradients are DDP's all-reduced ones), so
    DistributedDataParallel never waits on a skipped one. (detectron2's gradient clipping, when enabled,
    clips each parameter on its own inside ``optimizer.step`` and keeps no norm to reuse: the total norm is
    computed here, once, with torch's fused ``get_total_norm``.)
    """

    def __init__(self, model, data_loader, optimizer, *, max_nonfinite_skips: int = 0,
                 last_checkpoint: Optional[Callable[[], str]] = None):
        super().__init__(model, data_loader, optimizer)
        self.max_nonfinite_skips = max_nonfinite_skips
        self.nonfinite_skips = 0
        self._last_checkpoint = last_checkpoint or (lambda: "")

    def run_step(self):
        assert self.model.training, "[GuardedTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        # a model trained in alternating steps (a GAN: discriminator, then generator) names them in its
        # ``training_steps``: each is a forward with ``step=``, a backward and an optimizer step. The one optimizer
        # then moves only the parameters that step gave gradients (zero_grad leaves the others' None: skipped).
        steps = getattr(getattr(self.model, "module", self.model), "training_steps", None)
        logged = {}
        for step in steps or (None,):
            loss_dict = self.model(data) if step is None else self.model(data, step=step)
            if isinstance(loss_dict, torch.Tensor):
                loss_dict = {"total_loss": loss_dict}
            bad = self._nonfinite_terms(loss_dict)
            if bad:
                self._handle_nonfinite(bad)
                return
            losses = sum(loss_dict.values())
            self.optimizer.zero_grad(set_to_none=True)
            losses.backward()
            logged.update(loss_dict)
            bad = self._nonfinite_gradients()
            if bad:
                self._write_metrics(logged, data_time)
                self._handle_nonfinite(bad, what="gradients")
                return
            self.optimizer.step()
        self._write_metrics(logged, data_time)

    @staticmethod
    def _nonfinite_terms(loss_dict):
        """{name: value} of this process's non-finite terms, or of the first process that has any."""
        values = torch.stack([v.detach().float().reshape(()) for v in loss_dict.values()])
        flag = (~torch.isfinite(values)).any().float()
        if comm.get_world_size() > 1:  # every process must take the same branch (collectives follow)
            torch.distributed.all_reduce(flag)
        if not flag.item():
            return {}
        bad = {k: v for k, v in zip(loss_dict, values.tolist()) if not math.isfinite(v)}
        if comm.get_world_size() > 1:
            bad = next(b for b in comm.all_gather(bad) if b)
        return bad

    def _nonfinite_gradients(self):
        """{"gradient norm": value, "in": names} when the gradients' total norm is NaN or Inf, else {}."""
        params = [(n, p) for n, p in self.model.named_parameters() if p.grad is not None]
        if not params:
            return {}
        norm = float(torch.nn.utils.get_total_norm([p.grad for _, p in params]))
        if math.isfinite(norm):
            return {}
        # huge but finite gradients overflow the float32 sum of squares: those are not non-finite
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.double())
                                                            for _, p in params])))
        if math.isfinite(norm):
            return {}
        names = [n for n, p in params if not torch.isfinite(p.grad).all()]
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        return {"gradient norm": norm, "non-finite in": listed}

    def _handle_nonfinite(self, bad, what="loss"):
        terms = ", ".join(f"{k} = {v}" for k, v in bad.items())
        if self.nonfinite_skips < self.max_nonfinite_skips:
            self.nonfinite_skips += 1
            logging.getLogger(__name__).warning(
                f"Non-finite {what} at iteration {self.iter} ({terms}): batch skipped, no optimizer step "
                f"({self.nonfinite_skips} of at most {self.max_nonfinite_skips}, SEG_D2.SOLVER.MAX_NONFINITE_SKIPS)"
            )
            self.optimizer.zero_grad()
            if what == "loss" and comm.get_world_size() > 1:
                # DDP expects a backward after each forward: reduce zero gradients, then discard them
                sum(p.sum() * 0.0 for p in self.model.parameters() if p.requires_grad).backward()
                self.optimizer.zero_grad()
            return
        last = self._last_checkpoint()
        resume = (f"The last checkpoint safe to resume from is {last} (--resume)." if last
                  else "No checkpoint has been written yet.")
        skips = (f" after {self.nonfinite_skips} skipped batch(es) (SEG_D2.SOLVER.MAX_NONFINITE_SKIPS "
                 f"{self.max_nonfinite_skips})" if self.max_nonfinite_skips else "")
        raise NonFiniteLossError(
            f"{what.capitalize()} became non-finite at iteration {self.iter}{skips}: {terms}. {resume} "
            f"Lower SOLVER.BASE_LR, add warmup (SOLVER.WARMUP_ITERS) or gradient clipping "
            f"(SOLVER.CLIP_GRADIENTS), check that batch's data, or set SEG_D2.SOLVER.MAX_NONFINITE_SKIPS to skip "
            f"a bad batch a bounded number of times."
        )

    def state_dict(self):
        ret = super().state_dict()
        ret["nonfinite_skips"] = self.nonfinite_skips
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.nonfinite_skips = state_dict.get("nonfinite_skips", 0)
