"""tools/install_detectron2.py: idempotent, leaves compiled builds alone, fails clearly offline."""
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_tool

sys.path.insert(0, str(REPO / "tools"))
from detectron2_patches import PATCHES, Patch, PatchError, apply_patches  # noqa: E402

INSTALLER = REPO / "tools" / "install_detectron2.py"


def test_second_run_does_nothing():
    res = run_tool([INSTALLER], fresh=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "nothing to do" in res.stdout or "leaving it alone" in res.stdout


def test_compiled_detectron2_is_left_alone(tmp_path):
    fake = tmp_path / "site" / "detectron2"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '0.6+compiled'\n")
    (fake / "_C.py").write_text("def has_cuda():\n    return True\n")  # stands in for a compiled .so
    res = run_tool([INSTALLER, "--force"], env={"PYTHONPATH": str(tmp_path / "site")})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "found a compiled detectron2 0.6+compiled" in res.stdout
    assert "leaving it alone" in res.stdout


def test_unreachable_sdist_fails_with_a_clear_message():
    import detectron2

    before = Path(detectron2.__file__).read_bytes()
    res = run_tool([INSTALLER, "--force"], env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""})
    assert res.returncode == 2
    assert "could not fetch pb1-detectron2==0.6 from the package index" in res.stdout
    assert "--sdist PATH" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    assert Path(detectron2.__file__).read_bytes() == before  # nothing was replaced


def test_a_mismatching_patch_aborts_without_writing(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    patches = [
        Patch("good", "", [("a.py", "x = 1", "x = 10")]),
        Patch("stale", "", [("b.py", "y = 3", "y = 30")]),
    ]
    with pytest.raises(PatchError, match="fix 'stale': expected the text to replace once in b.py, found it 0"):
        apply_patches(tmp_path, patches)
    assert (tmp_path / "a.py").read_text() == "x = 1\n"  # all-or-nothing


def test_fix_names_say_what_they_fix():
    names = [p.name for p in PATCHES]
    assert len(set(names)) == len(names)
    assert {"pillow10_linear", "setuptools81_pkg_resources", "export_without_caffe2",
            "mapdataset_sample_from_set", "resume_lr_scheduler_state", "launch_cpu_gloo"} <= set(names)


def _fake_sdist(path):
    """A plausible pb1-detectron2-0.6.tar.gz that is not the registry's file (another sha256)."""
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        data = b"__version__ = '0.6'\nimport os; os.system('echo tampered')\n"
        info = tarfile.TarInfo("pb1-detectron2-0.6/detectron2/__init__.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_a_tampered_sdist_is_refused_before_anything_is_unpacked(tmp_path):
    import hashlib

    import detectron2

    sdist = _fake_sdist(tmp_path / "pb1-detectron2-0.6.tar.gz")
    before = Path(detectron2.__file__).read_bytes()
    res = run_tool([INSTALLER, "--sdist", sdist], fresh=True)  # no --force: the shared environment is never rebuilt here
    assert res.returncode == 2, res.stdout + res.stderr
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    assert f"{sdist} is not the pb1-detectron2==0.6 source distribution" in res.stdout
    pinned = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"  # pip download's file, sha256sum
    assert f"its sha256 is {digest}, expected {pinned}" in res.stdout
    assert "Nothing was installed" in res.stdout and "unpacking" not in res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    assert Path(detectron2.__file__).read_bytes() == before


def test_the_hash_is_checked_on_the_build_path_too(tmp_path, monkeypatch):
    """With --force (and, as for a downloaded file, after the installed-build check) the file is refused
    before build_and_install is reached; the same file with a matching pin goes through."""
    import install_detectron2 as inst

    sdist = _fake_sdist(tmp_path / "pb1-detectron2-0.6.tar.gz")
    built = []
    monkeypatch.setattr(inst, "probe_installed", lambda: {"error": "not importable"})
    monkeypatch.setattr(inst, "build_and_install", lambda *a: built.append(a))
    monkeypatch.setattr(inst, "fetch_sdist", lambda dest: sdist)  # as if pip had downloaded it
    assert inst.main(["--force"]) == 2 and built == []
    assert inst.main(["--force", "--sdist", str(sdist)]) == 2 and built == []
    assert inst.main(["--sdist", str(tmp_path / "missing.tar.gz")]) == 2 and built == []
    import hashlib

    monkeypatch.setattr(inst, "SDIST_SHA256", hashlib.sha256(sdist.read_bytes()).hexdigest())
    monkeypatch.setattr(inst, "probe_installed", lambda: {"error": "not importable"} if not built else
                        {"version": "0.6", "path": "x", "pure": True})
    assert inst.main(["--force", "--sdist", str(sdist)]) == 0 and len(built) == 1
