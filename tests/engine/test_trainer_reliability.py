"""tools/train_net.py's Trainer in this process, on a tiny U-Net: corrupt checkpoints on --resume, non-finite
losses, and weights files that need pickle. (kill -9 and exact resume: tests/tools/test_train_net.py.)"""
import importlib.util
import logging
import os
import pickle
import re

import numpy as np
import pytest
import torch

from detectron2.engine import HookBase

import seg_d2
from tests.conftest import REPO

CONFIG = REPO / "configs" / "Shapes-SemanticSegmentation" / "unet_classic_c16_d3_scratch_adam_bs4_160it.yaml"
TINY = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(40,)", "INPUT.MAX_SIZE_TRAIN", "64",
        "MODEL.UNET.BASE_CHANNELS", "8", "MODEL.SEM_SEG_HEAD.DECODER_CHANNELS", "[8,8]", "DATASETS.TEST", "()"]


@pytest.fixture(scope="module")
def train_net():
    spec = importlib.util.spec_from_file_location("seg_d2_train_net_reliability", REPO / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_trainer(train_net, out_dir, *opts):
    cfg = seg_d2.get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list([*TINY, "OUTPUT_DIR", str(out_dir), *opts])
    seg_d2.apply_cpu_fallback(cfg)
    cfg.freeze()
    return train_net.Trainer(cfg)


class _Records(logging.Handler):
    def __init__(self, name):
        super().__init__(logging.INFO)
        self.messages, self.logger = [], logging.getLogger(name)

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.logger.addHandler(self)
        self.level, self.logger.level = self.logger.level, min(self.logger.level or logging.INFO, logging.INFO)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.level = self.level


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_resume_falls_back_from_a_corrupt_last_checkpoint(train_net, tmp_path):
    trainer = make_trainer(train_net, tmp_path, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2")
    trainer.train()  # model_0000001.pth, model_0000003.pth, model_final.pth (the last one tagged)
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    truncate(tmp_path / "model_final.pth")  # e.g. a disk that filled up, a copy that was cut short
    truncate(tmp_path / "model_0000003.pth")

    resumed = make_trainer(train_net, tmp_path, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2")
    with _Records("seg_d2.engine.checkpoint") as log:
        resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2  # after the newest complete checkpoint, not from scratch
    text = "\n".join(log.messages)
    assert re.search(r"Checkpoint \S*model_final\.pth is truncated or corrupt", text), text
    assert re.search(r"Checkpoint \S*model_0000003\.pth is truncated or corrupt", text), text
    assert re.search(r"Resuming from \S*model_0000001\.pth, the newest complete checkpoint, instead of "
                     r"\S*model_final\.pth", text), text

    # no complete checkpoint left: an error naming the file, never a silent restart from iteration 0
    truncate(tmp_path / "model_0000001.pth")
    again = make_trainer(train_net, tmp_path, "SOLVER.MAX_ITER", "4")
    with pytest.raises(RuntimeError, match=r"model_0000001\.pth is truncated or corrupt") as e:
        again.resume_or_load(resume=True)
    assert "restart from scratch" in str(e.value)


class _NaNAt:
    """Wraps the model's forward: the Dice loss term is NaN at the given iterations."""

    def __init__(self, trainer, iterations):
        self.trainer, self.iterations = trainer, iterations
        self.model = trainer._trainer.model
        self.forward = self.model.forward
        self.model.forward = self

    def __call__(self, batch):
        losses = self.forward(batch)
        if self.trainer.iter in self.iterations:
            losses["loss_sem_seg_dice"] = losses["loss_sem_seg_dice"] * float("nan")
        return losses


class _Weights(HookBase):
    def __init__(self):
        self.before, self.after = {}, {}

    def before_step(self):
        self.before[self.trainer.iter] = [p.detach().clone() for p in self.trainer.model.parameters()]

    def after_step(self):
        self.after[self.trainer.iter] = [p.detach().clone() for p in self.trainer.model.parameters()]


def test_nonfinite_loss_names_the_term_iteration_and_checkpoint(train_net, tmp_path):
    trainer = make_trainer(train_net, tmp_path, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1")
    _NaNAt(trainer, {2})
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    message = str(e.value)
    # the finite term (loss_sem_seg) is not named as non-finite; the checkpoint after iteration 1 is safe
    assert re.search(r"non-finite at iteration 2: loss_sem_seg_dice = nan\.", message), message
    assert re.search(r"last checkpoint safe to resume from is \S*model_0000001\.pth", message), message


def test_nonfinite_loss_skips_a_bounded_number_of_batches(train_net, tmp_path):
    trainer = make_trainer(train_net, tmp_path, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "100",
                           "SEG_D2.SOLVER.MAX_NONFINITE_SKIPS", "1")
    _NaNAt(trainer, {1, 2})
    weights = _Weights()
    trainer.register_hooks([weights])
    with pytest.raises(FloatingPointError, match=r"non-finite at iteration 2 after 1 skipped batch.*No checkpoint "
                                                 r"has been written yet"):
        trainer.train()
    # iteration 1 was skipped: no optimizer step (Adam would move every weight); iteration 0 trained
    assert all(torch.equal(a, b) for a, b in zip(weights.before[1], weights.after[1]))
    assert not all(torch.equal(a, b) for a, b in zip(weights.before[0], weights.after[0]))


class _NaNGradAt:
    """A finite loss whose backward gives the first conv a NaN gradient (e.g. an overflow in a backward op)
    at the given iterations."""

    def __init__(self, trainer, iterations):
        name, param = next(iter(trainer._trainer.model.named_parameters()))
        self.name = name
        param.register_hook(lambda g: g * float("nan") if trainer.iter in iterations else g)


def test_nonfinite_gradients_stop_before_the_optimizer_step(train_net, tmp_path):
    trainer = make_trainer(train_net, tmp_path, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "1")
    nan = _NaNGradAt(trainer, {2})
    weights = _Weights()
    trainer.register_hooks([weights])
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    message = str(e.value)
    assert re.search(rf"Gradients became non-finite at iteration 2: gradient norm = nan, non-finite in = "
                     rf"{re.escape(nan.name)}\.", message), message
    assert re.search(r"last checkpoint safe to resume from is \S*model_0000001\.pth", message), message
    # no step with the NaN gradient: every weight stays finite, and no checkpoint after iteration 1 exists
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert not (tmp_path / "model_0000002.pth").exists()


def test_nonfinite_gradients_share_the_skip_budget(train_net, tmp_path):
    trainer = make_trainer(train_net, tmp_path, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "100",
                           "SEG_D2.SOLVER.MAX_NONFINITE_SKIPS", "1")
    _NaNGradAt(trainer, {1})
    _NaNAt(trainer, {2})
    weights = _Weights()
    trainer.register_hooks([weights])
    with pytest.raises(FloatingPointError, match=r"Loss became non-finite at iteration 2 after 1 skipped batch"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(weights.before[1], weights.after[1]))  # skipped: no step
    assert all(torch.isfinite(p).all() for p in weights.after[1])


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what a hostile weights file does when unpickled
        return (os.makedirs, (self.marker,))


@pytest.fixture(scope="module")
def trainer(train_net, tmp_path_factory):
    return make_trainer(train_net, tmp_path_factory.mktemp("safe_load"), "SOLVER.MAX_ITER", "1")


def test_weights_that_need_pickle_are_refused(trainer, tmp_path):
    marker = tmp_path / "payload_ran"
    evil_pkl = tmp_path / "R-50.pkl"
    evil_pkl.write_bytes(pickle.dumps({"model": {"w": _Payload(str(marker))}, "__author__": "x"}))
    with pytest.raises(RuntimeError, match=rf"{re.escape(str(evil_pkl))} is a pickle holding more than numpy "
                                           r"arrays.*SEG_D2\.CHECKPOINT\.ALLOW_PICKLE True"):
        trainer.checkpointer.resume_or_load(str(evil_pkl), resume=False)
    assert not marker.exists()

    evil_pth = tmp_path / "model.pth"
    torch.save({"model": {}, "extra": _Payload(str(marker))}, evil_pth)
    with pytest.raises(RuntimeError, match=rf"{re.escape(str(evil_pth))} holds Python objects that only full "
                                           r"pickle can load.*SEG_D2\.CHECKPOINT\.ALLOW_PICKLE True"):
        trainer.checkpointer.resume_or_load(str(evil_pth), resume=False)
    assert not marker.exists()


def test_model_zoo_pickles_of_numpy_arrays_load_and_pickle_when_allowed(trainer, tmp_path):
    state = trainer.model.state_dict()
    arrays = {k: np.full(tuple(v.shape), 0.25, dtype=np.float32) for k, v in state.items() if v.is_floating_point()}
    zoo = tmp_path / "model_zoo.pkl"  # detectron2's model zoo format: numpy arrays in a plain pickle
    zoo.write_bytes(pickle.dumps({"model": arrays, "__author__": "seg_d2 test"}, protocol=2))
    trainer.checkpointer.resume_or_load(str(zoo), resume=False)
    loaded = trainer.model.state_dict()
    assert all(torch.equal(loaded[k], torch.full_like(loaded[k], 0.25)) for k in arrays)

    trainer.checkpointer.allow_pickle = True  # SEG_D2.CHECKPOINT.ALLOW_PICKLE True: the user trusts the file
    try:
        pth = tmp_path / "with_objects.pth"
        torch.save({"model": {k: torch.full_like(v, 0.5) for k, v in state.items()},
                    "args": argparse_namespace()}, pth)
        extra = trainer.checkpointer.resume_or_load(str(pth), resume=False)
        assert extra["args"].lr == 0.1
        assert torch.equal(next(iter(trainer.model.parameters())),
                           torch.full_like(next(iter(trainer.model.parameters())), 0.5))
    finally:
        trainer.checkpointer.allow_pickle = False


def argparse_namespace():
    import argparse

    return argparse.Namespace(lr=0.1)
