"""Writing a generated dataset so that no reader ever sees it half-written."""
import contextlib
import os
import shutil
import tempfile
from typing import Callable

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no lock, see discard_stale_dataset
    fcntl = None

DONE_MARKER = "DONE"


def write_dataset_once(root: str, write: Callable[[str], None]) -> bool:
    """Call ``write(tmp_dir)`` and rename ``tmp_dir`` to ``root``, unless ``root`` is complete.

    The temporary folder sits beside ``root``, so the rename is atomic: an interrupted run leaves
    nothing at ``root``, and of several processes generating at once, one wins and the others
    find its data. Returns True if this call wrote the data.
    """
    if os.path.isfile(os.path.join(root, DONE_MARKER)):
        return False
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}_tmp_", dir=parent)
    try:
        write(tmp)
        open(os.path.join(tmp, DONE_MARKER), "w").close()
        try:
            os.rename(tmp, root)
        except OSError:
            if not os.path.isfile(os.path.join(root, DONE_MARKER)):
                raise  # not another process winning the race: a real error
            return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def check_output_folder(out_dir: str, overwrite: bool, error=ValueError) -> None:
    """Refuse (``error``) an ``out_dir`` that exists and is not empty, unless ``overwrite``: a tool's output
    never lands in, or silently replaces, a folder that holds a dataset already."""
    if os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
        raise error(f"Output folder {out_dir} exists and is not empty: choose another, or overwrite it (--overwrite)")


@contextlib.contextmanager
def staged_folder(out_dir: str):
    """Yield a temporary folder beside ``out_dir`` to write into; when the block ends without an error it
    replaces ``out_dir`` (check it first with :func:`check_output_folder`), otherwise it is deleted: nothing is
    ever left written half-way."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}_tmp_", dir=parent)
    try:
        yield tmp
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(path: str):
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block; POSIX only (no lock elsewhere)."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def discard_stale_dataset(root: str, is_stale: Callable[[str], bool]) -> bool:
    """Move ``root`` out of the way and delete it if ``is_stale(root)``, so that
    :func:`write_dataset_once` writes it anew. Returns True if it did.

    Deciding and moving happen under an exclusive lock (a file beside ``root``; POSIX only): of
    several processes that all found ``root`` stale, the first discards it and the others, checking
    again, keep the fresh data that may meanwhile have replaced it.
    """
    parent, base = os.path.split(os.path.abspath(root))
    with exclusive_lock(os.path.join(parent, f".{base}.lock")):
        if not os.path.isdir(root) or not is_stale(root):
            return False
        trash = tempfile.mkdtemp(prefix=f".{base}_stale_", dir=parent)
        os.rename(root, os.path.join(trash, base))  # atomic: readers find the old data or none
    shutil.rmtree(trash, ignore_errors=True)
    return True
