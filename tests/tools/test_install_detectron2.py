"""tools/install_detectron2.py: idempotent, leaves compiled builds alone, fails clearly offline; --source builds
detectron2 from source into a cache keyed by its sha256."""
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, provisioned_only, run_tool

sys.path.insert(0, str(REPO / "tools"))
from detectron2_patches import PATCHES, Patch, PatchError, apply_patches  # noqa: E402

pytestmark = pytest.mark.long  # installer runs on small test sources: about 50 s in all

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


@provisioned_only  # a compiled detectron2 is left alone before any fetch
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


def _fake_detectron2_source(root, version="0.6"):
    """A source tree shaped like detectron2's (setup.py, detectron2/__init__.py, a "compiled" _C), tarred as
    git archive writes it; it builds in seconds."""
    import tarfile

    tree = root / "detectron2-main-fake"
    (tree / "detectron2").mkdir(parents=True)
    (tree / "setup.py").write_text("from setuptools import setup\n"
                                   f"setup(name='detectron2', version='{version}', packages=['detectron2'])\n")
    (tree / "detectron2" / "__init__.py").write_text(f"__version__ = '{version}'\n")
    (tree / "detectron2" / "_C.py").write_text("def has_cuda():\n    return False\n")  # stands in for the .so
    tarball = root / "detectron2-main-fake.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tree, arcname=tree.name)
    return tarball


def test_source_build_is_cached_by_sha256_and_reused(tmp_path):
    """--source compiles into a wheel cached outside the checkout under the source's key; a second run with
    it installed does nothing, and a new environment installs the cached wheel without compiling again."""
    import hashlib

    import torch

    tarball = _fake_detectron2_source(tmp_path)
    site, cache = tmp_path / "site", tmp_path / "cache"
    env = {"PIP_TARGET": str(site), "PYTHONPATH": str(site), "SEG_D2_CACHE": str(cache)}
    first = run_tool([INSTALLER, "--source", tarball], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    h = hashlib.sha256(tarball.read_bytes())
    h.update(f"torch {torch.__version__} python {sys.version_info[0]}.{sys.version_info[1]}".encode())
    wheels = list((cache / "detectron2-wheels" / h.hexdigest()[:16]).glob("detectron2-0.6-*.whl"))
    assert len(wheels) == 1, list(cache.rglob("*"))
    assert "compiling detectron2 from" in first.stdout and (site / "detectron2" / "_C.py").is_file()
    assert "setuptools<81" in first.stdout

    again = run_tool([INSTALLER, "--source", tarball], env=env)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr

    shutil.rmtree(site)  # a new environment on the same machine
    fresh_env = run_tool([INSTALLER, "--source", tarball], env=env)
    assert fresh_env.returncode == 0, fresh_env.stdout + fresh_env.stderr
    assert "reusing the cached wheel" in fresh_env.stdout and "compiling" not in fresh_env.stdout
    assert (site / "detectron2" / "_C.py").is_file()


def test_source_that_is_not_detectron2_fails_clearly(tmp_path):
    env = {"SEG_D2_CACHE": str(tmp_path / "cache")}
    missing = run_tool([INSTALLER, "--source", tmp_path / "nope.tar.gz"], env=env)
    assert missing.returncode == 2 and f"--source {tmp_path / 'nope.tar.gz'}: no such file or folder" in missing.stdout
    (tmp_path / "empty").mkdir()
    empty = run_tool([INSTALLER, "--source", tmp_path / "empty"], env=env)
    assert empty.returncode == 2 and "no detectron2 source tree inside" in empty.stdout, empty.stdout
    for res in (missing, empty):
        assert "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "cache" / "detectron2-wheels").exists() or not any((tmp_path / "cache").rglob("*.whl"))
