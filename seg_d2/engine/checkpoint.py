"""A checkpointer that survives kill -9, refuses corrupt and unsafe files with a clear message, and resumes
from the newest complete checkpoint.

detectron2's (fvcore's) ``Checkpointer.save`` writes ``model_*.pth`` and ``last_checkpoint`` in place: a
process killed while saving leaves a truncated file that every later ``--resume`` fails on with torch's
"PytorchStreamReader failed ...". Its loader also unpickles ``.pkl`` files (and, with ``weights_only=False``,
``.pth`` files) from any source, which runs whatever code they hold.
"""
import io
import logging
import os
import pickle
import re
from typing import Any, Dict, List, Optional

import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

__all__ = ["CheckpointError", "CorruptCheckpointError", "UnsafeCheckpointError", "IncompatibleWeightsError",
           "SegD2Checkpointer", "check_weight_shapes"]

ALLOW_PICKLE_KEY = "SEG_D2.CHECKPOINT.ALLOW_PICKLE"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be loaded (missing, unreadable); the message names the file."""


class CorruptCheckpointError(CheckpointError):
    """A truncated or corrupt checkpoint (e.g. written by a process killed while saving)."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that needs full pickle (arbitrary code) to load, while pickle is not allowed."""


class IncompatibleWeightsError(CheckpointError):
    """Weights whose tensors do not fit the model's shapes: trained with another config."""


def check_weight_shapes(incompatible, path: str) -> None:
    """Raise :class:`IncompatibleWeightsError` if fvcore's ``_load_model`` result has any tensor of another shape
    than the model's (e.g. a 3-class model's predictor under a 5-class config), naming the key, both shapes and
    the config to use instead. detectron2 only logs it and leaves those tensors random, which is right for
    fine-tuning, and wrong for inference, evaluation and export."""
    wrong = incompatible.incorrect_shapes
    if not wrong:
        return
    key, in_file, in_model = wrong[0]
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    where = f" (here: {config})" if os.path.isfile(config) else ""
    raise IncompatibleWeightsError(
        f"Weights {path} do not fit this config's model: {key} is {tuple(in_file)} in the weights but "
        f"{tuple(in_model)} in the model" + (f" (and {len(wrong) - 1} more tensors)" if len(wrong) > 1 else "")
        + f". Pass the config they were trained with: the training run's OUTPUT_DIR/config.yaml{where}.")


def check_weights_complete(incompatible, path: str) -> None:
    """Raise :class:`IncompatibleWeightsError` if the weights lack some of the model's parameters or buffers (e.g.
    a Mask R-CNN checkpoint for a Pix2Pix config): those would stay randomly initialised, which is right for
    fine-tuning a new head, and wrong for inference, evaluation and export."""
    missing = list(incompatible.missing_keys)
    if not missing:
        return
    unexpected = list(incompatible.unexpected_keys)
    other = (f"; the weights have {len(unexpected)} tensors the model lacks, such as {unexpected[:3]}: they are of "
             f"another model" if unexpected else "")
    raise IncompatibleWeightsError(
        f"Weights {path}{_arch_of(path)} do not fit this config's model: they lack {len(missing)} of its tensors, "
        f"such as {missing[:3]}{other}. Pass the weights of a model trained with this config, or the config they "
        f"were trained with (the training run's OUTPUT_DIR/config.yaml).")


def _arch_of(path: str) -> str:
    """", a <META_ARCHITECTURE> model's" from the config.yaml beside ``path`` (a training run's), else ""."""
    config = os.path.join(os.path.dirname(os.path.abspath(path)), "config.yaml")
    try:
        with open(config) as f:
            arch = next((line.split(":", 1)[1].strip().strip("'\"") for line in f
                         if line.strip().startswith("META_ARCHITECTURE:")), None)
    except OSError:
        return ""
    return f", a {arch} model's per {config}" if arch else ""


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. directories cannot be opened on this platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write_fn) -> None:
    """Write ``path`` through ``write_fn(file)`` into a temporary file beside it, fsync, then ``os.replace``:
    a reader (or a process killed meanwhile) sees either the old file or the complete new one."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(directory)  # the rename itself reaches the disk


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles containers of numpy arrays and Python scalars only (detectron2's and Caffe2's model zoo
    ``.pkl`` files); any other global (a class, a function such as ``os.system``) is refused."""

    _SAFE = {
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "complex"),
        ("_codecs", "encode"),  # numpy arrays pickled by Python 2 store their bytes through it
    }

    def find_class(self, module, name):
        if (module, name) in self._SAFE:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


# The files the trainer writes: periodic checkpoints (detectron2's PeriodicCheckpointer) and the final one.
_TRAINER_CHECKPOINT = re.compile(r"model_(\d+|final)\.pth")


def _iteration_of(path: str) -> int:
    """The iteration of a trainer checkpoint: from its name, or read from ``model_final.pth`` (memory-mapped:
    no tensor is read); -1 when it cannot be read (it then comes last)."""
    number = _TRAINER_CHECKPOINT.fullmatch(os.path.basename(path)).group(1)
    if number != "final":
        return int(number)
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("iteration", -1))
    except Exception:  # corrupt or unreadable: loading it will say so
        return -1


class SegD2Checkpointer(DetectionCheckpointer):
    """detectron2's ``DetectionCheckpointer`` with:

    * atomic saves: ``model_*.pth`` and ``last_checkpoint`` are written to a temporary file, fsynced and
      ``os.replace``d, so a kill at any moment leaves the previous checkpoint and tag intact;
    * safe loading: ``.pth`` files with ``torch.load(weights_only=True)``, ``.pkl`` files (the model zoo's
      numpy weights) with an unpickler that builds numpy arrays only; a file that needs full pickle
      raises :class:`UnsafeCheckpointError` unless ``allow_pickle`` (``SEG_D2.CHECKPOINT.ALLOW_PICKLE``);
    * clear errors: a truncated or corrupt file raises :class:`CorruptCheckpointError` naming it;
    * resume that validates the last checkpoint and falls back to the newest complete one (logged),
      and never restarts from scratch while checkpoints exist but none loads.
    """

    def __init__(self, model, save_dir: str = "", *, save_to_disk: Optional[bool] = None, allow_pickle: bool = False,
                 strict_shapes: bool = False, **checkpointables):
        """
        Args:
            allow_pickle: load files that need full pickle (``SEG_D2.CHECKPOINT.ALLOW_PICKLE``).
            strict_shapes: a tensor of another shape than the model's is an error (:func:`check_weight_shapes`)
                instead of detectron2's skipped-with-a-warning (fine-tuning): for evaluation and inference.
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_pickle = allow_pickle
        self.strict_shapes = strict_shapes
        self._loading = None
        self.logger = logging.getLogger(__name__)

    # --- saving ---
    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda f: f.write(last_filename_basename.encode()))

    # --- loading ---
    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # detectron2 main asserts this is None when a load starts, and resets it only after a load that
            # succeeded: a refused or corrupt file would break every later load on this checkpointer.
            self._parsed_url_during_load = None

    def _load_model(self, checkpoint: Dict[str, Any]):
        incompatible = super()._load_model(checkpoint)
        if self.strict_shapes:
            check_weight_shapes(incompatible, self._loading or "(weights)")
            check_weights_complete(incompatible, self._loading or "(weights)")
        return incompatible

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pyth"):  # pycls: detectron2 loads it with full pickle
            raise NotImplementedError(f"{filename}: pycls .pyth checkpoints are not supported by seg_d2's loader; "
                                      f"convert it to a .pth state dict")
        try:
            if filename.endswith(".pkl"):
                return super()._load_file(filename) if self.allow_pickle else self._load_pkl(filename)
            data = self._load_pth(filename)
        except CheckpointError:
            raise
        except OSError as e:  # missing, no permission, an I/O error: the file was not read, not found corrupt
            what = "does not exist" if isinstance(e, FileNotFoundError) else "cannot be read"
            raise CheckpointError(f"Checkpoint {filename} {what} ({type(e).__name__}: {e.strerror or e})") from e
        except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, UnicodeDecodeError) as e:
            raise CorruptCheckpointError(
                f"Checkpoint {filename} is truncated or corrupt ({type(e).__name__}: {str(e).splitlines()[0]}); "
                f"it was probably written by a process that was killed while saving."
            ) from e
        return data if "model" in data else {"model": data}

    def _load_pth(self, filename: str) -> Dict[str, Any]:
        with open(filename, "rb"):  # missing or unreadable: an OSError here, before torch reads anything
            pass
        try:
            return torch.load(filename, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Weights only load failed" not in str(e):
                raise  # a truncated legacy (non-zip) file: corrupt
            if not self.allow_pickle:
                raise UnsafeCheckpointError(
                    f"Checkpoint {filename} holds Python objects that only full pickle can load, and unpickling "
                    f"a file from an unknown source can run arbitrary code. If you trust it, set "
                    f"{ALLOW_PICKLE_KEY} True. ({str(e).splitlines()[-1] if str(e) else ''})"
                ) from e
        self.logger.warning(f"Loading {filename} with full pickle ({ALLOW_PICKLE_KEY} is True)")
        return torch.load(filename, map_location="cpu", weights_only=False)

    def _load_pkl(self, filename: str) -> Dict[str, Any]:
        with PathManager.open(filename, "rb") as f:
            raw = f.read()
        try:
            data = _NumpyUnpickler(io.BytesIO(raw), encoding="latin1").load()
        except pickle.UnpicklingError as e:
            if "is not allowed" not in str(e):
                raise
            raise UnsafeCheckpointError(
                f"Weights file {filename} is a pickle holding more than numpy arrays ({e}); unpickling a file "
                f"from an unknown source can run arbitrary code. If you trust it, set {ALLOW_PICKLE_KEY} True."
            ) from e
        if not isinstance(data, dict):
            raise CorruptCheckpointError(f"Weights file {filename} holds a {type(data).__name__}, not a dict of "
                                         f"weights")
        # the rest as detectron2's DetectionCheckpointer._load_file does for .pkl
        if "model" in data and "__author__" in data:
            self.logger.info(f"Reading a file from '{data['__author__']}'")
            return data
        if "blobs" in data:
            data = data["blobs"]
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

    # --- resuming ---
    def complete_checkpoints(self) -> List[str]:
        """The checkpoints the trainer wrote in ``save_dir`` (``model_NNNNNNN.pth``, ``model_final.pth``; not
        other ``.pth`` files such as initial weights, nor the temporary files of interrupted saves), newest
        first by iteration: from the name, or for ``model_final.pth`` the one stored in it. Modification
        times are not used: a copy of the folder (``cp -r``, cloud storage) does not keep them."""
        files = [f for f in self.get_all_checkpoint_files() if _TRAINER_CHECKPOINT.fullmatch(os.path.basename(f))]
        return sorted(files, key=_iteration_of, reverse=True)

    def has_checkpoint(self) -> bool:
        # also when last_checkpoint is missing or empty while checkpoints exist (an interrupted old-style tag)
        return super().has_checkpoint() or bool(self.save_dir and self.complete_checkpoints())

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """Resume from ``last_checkpoint`` if ``resume`` and a checkpoint exists, falling back to the newest
        complete checkpoint when it is corrupt or missing (logged); otherwise load ``path`` (weights only).
        Raises :class:`CorruptCheckpointError` when checkpoints exist and none of them loads."""
        if resume and self.save_dir and self.save_to_disk:
            self._remove_interrupted_saves()
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        tagged = self.get_checkpoint_file() if super().has_checkpoint() else ""
        if os.path.abspath(tagged) == os.path.abspath(self.save_dir):
            tagged = ""  # an empty last_checkpoint: a tag interrupted while detectron2 wrote it in place
        if tagged and not os.path.exists(tagged):
            raise CheckpointError(
                f"--resume: {os.path.join(self.save_dir, 'last_checkpoint')} names {tagged}, which does not exist. "
                f"Restore it, or write the name of the checkpoint to resume from into last_checkpoint.")
        candidates = [tagged] if tagged else []
        candidates += [f for f in self.complete_checkpoints() if os.path.abspath(f) != os.path.abspath(tagged)]
        failures = []
        for i, candidate in enumerate(candidates):
            try:
                checkpoint = self._load_file(candidate)
            except CorruptCheckpointError as e:
                self.logger.error(str(e))
                failures.append(str(e))
                continue
            if candidate != tagged:
                self.logger.warning(
                    f"Resuming from {candidate}, the newest complete checkpoint"
                    + (f", instead of {tagged} (last_checkpoint), which cannot be loaded" if tagged else "")
                )
            return self._load_checked(candidate, checkpoint)
        raise CorruptCheckpointError(
            f"--resume: no checkpoint in {self.save_dir} can be loaded, so training would restart from scratch; "
            f"move the directory away to do that on purpose.\n" + "\n".join(failures)
        )

    def _remove_interrupted_saves(self) -> None:
        """Delete the temporary files that saves killed midway left (never a complete checkpoint)."""
        for name in PathManager.ls(self.save_dir):
            if re.fullmatch(r"\.(.+\.pth|last_checkpoint)\.tmp\d+", name):  # as atomic_write names them
                os.remove(os.path.join(self.save_dir, name))
                self.logger.info(f"Removed {name}, left in {self.save_dir} by a save that was interrupted")

    def _load_checked(self, path: str, checkpoint: Dict[str, Any]) -> Dict[str, Any]:
        """``load(path)`` with the file already read (and validated) as ``checkpoint``."""
        cached = checkpoint

        def read_once(filename):
            nonlocal cached
            data, cached = cached, None
            return data if data is not None else type(self)._load_file(self, filename)

        self._load_file = read_once
        try:
            return self.load(path)
        finally:
            del self._load_file
