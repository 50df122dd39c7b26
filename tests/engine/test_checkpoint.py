"""seg_d2.engine's checkpointer (an interrupted save, an interrupted tag), RNG states and resumable data stream."""
import random

import numpy as np
import pytest
import torch
from torch import nn

from detectron2.data import DatasetFromList, MapDataset, build_batch_data_loader
from detectron2.data.samplers import TrainingSampler

import seg_d2.engine.checkpoint as checkpoint_module
from seg_d2.engine import (
    CheckpointError, CorruptCheckpointError, ResumableDataStream, SegD2Checkpointer, get_rng_state, set_rng_state,
)


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    ckpt = SegD2Checkpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000001", iteration=1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    torch_save = torch.save

    def dies_midway(obj, f):  # half the bytes reach the file, then the process is interrupted
        torch_save(obj, f)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt

    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(checkpoint_module.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_0000002", iteration=2)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    extra = SegD2Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_an_empty_last_checkpoint_tag_falls_back_to_the_newest_checkpoint(tmp_path):
    # detectron2's tag_last_checkpoint truncates the file before writing it: a kill there leaves it empty
    model = nn.Linear(3, 2)
    ckpt = SegD2Checkpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000001", iteration=1)
    ckpt.save("model_0000003", iteration=3)
    (tmp_path / "last_checkpoint").write_text("")
    assert SegD2Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 3


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, weights):
    return all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_resume_ignores_pth_files_the_trainer_did_not_write(tmp_path):
    """Only initial weights in OUTPUT_DIR and no last_checkpoint: --resume loads MODEL.WEIGHTS from iteration 0,
    not the stray init_weights.pth (which once was taken as "the newest complete checkpoint")."""
    model = nn.Linear(3, 2)
    torch.save({"model": nn.Linear(3, 2).state_dict(), "iteration": 7}, tmp_path / "init_weights.pth")
    torch.save({"model": nn.Linear(3, 2).state_dict()}, tmp_path / "pretrained.pth")
    pretrained = torch.load(tmp_path / "pretrained.pth")["model"]
    ckpt = SegD2Checkpointer(model, str(tmp_path), save_to_disk=True)
    assert not ckpt.has_checkpoint()
    extra = ckpt.resume_or_load(str(tmp_path / "pretrained.pth"), resume=True)
    assert "iteration" not in extra and _same(model, pretrained)


def test_fallback_order_is_by_iteration_not_modification_time(tmp_path):
    """A folder copied without its mtimes (cp -r): the older checkpoint has the newer mtime. With the tagged
    model_final.pth corrupt, resume takes iteration 3, the newest by its name, not iteration 1."""
    import os

    model = nn.Linear(3, 2)
    ckpt = SegD2Checkpointer(model, str(tmp_path), save_to_disk=True)
    for it in (1, 3):
        ckpt.save(f"model_{it:07d}", iteration=it)
    ckpt.save("model_final", iteration=4)
    final = (tmp_path / "model_final.pth").read_bytes()
    (tmp_path / "model_final.pth").write_bytes(final[: len(final) // 2])  # cut short
    os.utime(tmp_path / "model_0000003.pth", (1_000_000, 1_000_000))  # the copy's arbitrary order
    os.utime(tmp_path / "model_0000001.pth", (2_000_000, 2_000_000))
    assert SegD2Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 3


def test_model_final_is_ordered_by_its_stored_iteration(tmp_path):
    """A run resumed with a larger SOLVER.MAX_ITER: model_final.pth (iteration 4, from the first run) is older
    than model_0000009.pth; with the tag lost, resume takes iteration 9."""
    model = nn.Linear(3, 2)
    ckpt = SegD2Checkpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000009", iteration=9)
    ckpt.save("model_final", iteration=4)
    (tmp_path / "last_checkpoint").write_text("")
    assert SegD2Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)["iteration"] == 9


def test_a_missing_tagged_checkpoint_stops_resume(tmp_path):
    model = nn.Linear(3, 2)
    ckpt = SegD2Checkpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000001", iteration=1)
    ckpt.save("model_0000003", iteration=3)
    (tmp_path / "model_0000003.pth").unlink()  # e.g. removed by hand, or a partial copy
    with pytest.raises(CheckpointError, match=r"last_checkpoint names \S*model_0000003\.pth, which does not exist"):
        SegD2Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)


def test_an_unreadable_checkpoint_is_reported_as_such_and_stops_resume(tmp_path, monkeypatch):
    """An I/O error (or no permission) is no corrupt file: no "killed while saving", no silent fallback."""
    import errno

    model = nn.Linear(3, 2)
    ckpt = SegD2Checkpointer(model, str(tmp_path), save_to_disk=True)
    ckpt.save("model_0000001", iteration=1)
    ckpt.save("model_0000003", iteration=3)
    torch_load = torch.load

    def eio(f, *args, **kwargs):
        if str(f).endswith("model_0000003.pth"):
            raise OSError(errno.EIO, "Input/output error")
        return torch_load(f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "load", eio)
    with pytest.raises(CheckpointError, match=r"model_0000003\.pth cannot be read \(OSError: Input/output error\)") as e:
        SegD2Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert not isinstance(e.value, CorruptCheckpointError) and "killed while saving" not in str(e.value)
    monkeypatch.undo()

    (tmp_path / "model_0000003.pth").unlink()  # a folder where the file should be: open() fails
    (tmp_path / "model_0000003.pth").mkdir()
    with pytest.raises(CheckpointError, match=r"model_0000003\.pth cannot be read \(IsADirectoryError"):
        SegD2Checkpointer(model, str(tmp_path)).resume_or_load("", resume=True)


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # a cached Gaussian is part of NumPy's state
    torch.save(get_rng_state(), tmp_path / "rng.pth")
    expected = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == expected


def _loader(grouping, seed=7):
    # images of both orientations: detectron2's aspect-ratio grouping keeps half-filled buckets between batches
    dicts = [{"id": i, "width": 100 if i % 3 else 50, "height": 60} for i in range(11)]
    dataset = MapDataset(DatasetFromList(dicts, copy=False), lambda d: d)
    return build_batch_data_loader(dataset, TrainingSampler(len(dicts), seed=seed), 3,
                                   aspect_ratio_grouping=grouping, num_workers=0)


@pytest.mark.parametrize("grouping", [True, False])
def test_data_stream_resumes_after_n_batches(grouping):
    it = iter(_loader(grouping))
    expected = [[d["id"] for d in next(it)] for _ in range(12)]  # detectron2's uninterrupted stream
    loader = _loader(grouping, seed=123)  # a resumed run draws a new seed: the checkpoint's is restored
    stream = ResumableDataStream(loader)
    assert stream.supported
    stream.resume({"sampler_seed": 7}, num_batches=5)
    it = iter(loader)
    assert [[d["id"] for d in next(it)] for _ in range(7)] == expected[5:]
