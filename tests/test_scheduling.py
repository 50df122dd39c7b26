"""tests/conftest.py hands the files that hold a ``long`` test to the xdist workers first (tools/test.sh)."""
import subprocess
import sys

from tests.conftest import REPO


def test_files_with_a_long_test_are_collected_first():
    # given in this order, the short file first; tests/engine/test_distributed.py holds a long test
    files = ["tests/data/test_image_io.py", "tests/engine/test_distributed.py"]
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    ids = [line for line in res.stdout.splitlines() if "::" in line]
    assert list(dict.fromkeys(i.split("::")[0] for i in ids)) == files[::-1], ids  # each file's tests together
    assert sum(i.startswith(files[0]) for i in ids) > 1
