"""tests/tmp_dirs.py and pytest.ini keep the suite's disk use down: a passed file's run directories go, a failed
file's stay (CI ran out of disk with every session's checkpoints kept)."""
pytest_plugins = ["pytester"]

INNER = '''
import pytest

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("{name}_run")
    (out / "model_final.pth").write_bytes(b"0" * 1000)
    return out

def test_uses_the_run(run_dir, tmp_path):
    (tmp_path / "scratch").write_text("x")
    assert (run_dir / "model_final.pth").stat().st_size == 1000
    assert {ok}
'''


def test_a_passed_files_tmp_dirs_are_removed_and_a_failed_files_kept(pytester, repo, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(repo))  # tests.tmp_dirs importable in the inner session
    pytester.makeini((repo / "pytest.ini").read_text())  # the suite's own settings
    pytester.makeconftest("from tests.tmp_dirs import *\n")
    pytester.makepyfile(test_passes=INNER.format(name="passes", ok=True),
                        test_fails=INNER.format(name="fails", ok=False))
    basetemp = pytester.path / "basetemp"  # given, so pytest itself removes nothing at the session's end
    result = pytester.runpytest_subprocess("-p", "no:xdist", "-p", "no:cacheprovider", "--basetemp", basetemp)
    result.assert_outcomes(passed=1, failed=1)
    left = sorted(p.name for p in basetemp.iterdir() if not p.is_symlink())
    assert left == ["fails_run0", "test_uses_the_run0"], left  # the failed test's tmp_path kept too
    assert (basetemp / "fails_run0" / "model_final.pth").stat().st_size == 1000
