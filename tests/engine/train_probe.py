"""Imported by tools/train_net.py (--dataset-module) in the tests' training processes: records each
iteration's batch, learning rate and loss terms to $PROBE_LOG (one JSON line per iteration); with
$PROBE_STALL_AT_SAVE=N, the N-th torch.save writes half of its bytes, creates $PROBE_LOG.stalled and waits
to be killed (a kill -9 in the middle of writing a checkpoint)."""
import io
import json
import os
import time

import torch

from detectron2.engine import DefaultTrainer, SimpleTrainer

_log = open(os.environ["PROBE_LOG"], "a")
_saves = [0]
_torch_save = torch.save


def _stalling_save(obj, f, *args, **kwargs):
    _saves[0] += 1
    if _saves[0] != int(os.environ.get("PROBE_STALL_AT_SAVE", "0")):
        return _torch_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    _torch_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    open(os.environ["PROBE_LOG"] + ".stalled", "w").close()
    while True:  # until SIGKILL
        time.sleep(1)


torch.save = _stalling_save


class _Recorder:
    def __init__(self, it):
        self.it, self.files = it, None

    def __next__(self):
        batch = next(self.it)
        self.files = [os.path.basename(d["file_name"]) for d in batch]
        return batch


_run_step, _write_metrics = DefaultTrainer.run_step, SimpleTrainer.write_metrics
_current = {}


def run_step(self):
    inner = self._trainer
    # where the iterator lives: detectron2 main's _data_loader_iter is a read-only property over this attribute
    attr = ("_data_loader_iter_obj" if isinstance(getattr(type(inner), "_data_loader_iter", None), property)
            else "_data_loader_iter")
    rec = _Recorder(inner._data_loader_iter)
    setattr(inner, attr, rec)
    _current.clear()
    _current.update(iter=self.iter, lr=inner.optimizer.param_groups[0]["lr"])
    try:
        _run_step(self)
    finally:
        setattr(inner, attr, rec.it)
    _current["files"] = rec.files
    _log.write(json.dumps(_current) + "\n")
    _log.flush()


def write_metrics(loss_dict, data_time, *args, **kwargs):  # main adds cur_iter before prefix
    _current["losses"] = {k: float(v.detach()) for k, v in loss_dict.items()}
    return _write_metrics(loss_dict, data_time, *args, **kwargs)


DefaultTrainer.run_step, SimpleTrainer.write_metrics = run_step, staticmethod(write_metrics)
