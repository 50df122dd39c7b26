"""Writing a generated dataset so that no reader ever sees it half-written."""
import os
import shutil
import tempfile
from typing import Callable

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
