"""The tests' tool runner: a run forked from the test process ends as a new interpreter's run does."""
import textwrap

import pytest

from tests.conftest import run_tool

SCRIPT = textwrap.dedent("""
    import atexit, logging, os, sys, threading, time, warnings

    out_dir = sys.argv[1]
    print("argv", sys.argv[2:], "cwd", os.getcwd() == out_dir)
    print("to stderr", file=sys.stderr)
    warnings.warn("a UserWarning")
    warnings.warn("a FutureWarning", FutureWarning)  # -W ignore::FutureWarning
    log = logging.getLogger("tool")
    log.addHandler(logging.FileHandler(os.path.join(out_dir, "log.txt")))
    log.warning("logged")
    late = open(os.path.join(out_dir, "late.txt"), "w", buffering=4096)
    atexit.register(late.close)  # its buffer reaches the file only at exit
    late.write("written at exit")

    def worker():
        time.sleep(0.3)
        with open(os.path.join(out_dir, "thread.txt"), "w") as f:
            f.write("thread done")

    threading.Thread(target=worker).start()  # not a daemon: the interpreter waits for it
    sys.exit(int(sys.argv[2]))
""")


@pytest.mark.parametrize("code", [0, 3])
def test_forked_run_equals_a_new_interpreter(tmp_path, code):
    script = tmp_path / "tool.py"
    script.write_text(SCRIPT)
    results = {}
    for fresh in (True, False):
        out = tmp_path / ("fresh" if fresh else "forked")
        out.mkdir()
        res = run_tool([script, out, code], cwd=out, fresh=fresh)
        files = {f: (out / f).read_text() for f in ("log.txt", "late.txt", "thread.txt")}
        results[fresh] = (res.returncode, res.stdout, res.stderr.splitlines(), files)
    assert results[False] == results[True]
    returncode, stdout, stderr, files = results[False]
    assert returncode == code
    assert stdout == f"argv ['{code}'] cwd True\n"
    assert "to stderr" in stderr and any("UserWarning: a UserWarning" in line for line in stderr)
    assert not any("FutureWarning" in line for line in stderr)
    assert files == {"log.txt": "logged\n", "late.txt": "written at exit", "thread.txt": "thread done"}


def test_an_exception_exits_1_with_its_traceback(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text("raise ValueError('bad input')\n")
    for fresh in (True, False):
        res = run_tool([script], fresh=fresh)
        assert res.returncode == 1
        assert "Traceback" in res.stderr and res.stderr.strip().endswith("ValueError: bad input")
