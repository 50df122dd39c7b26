#!/usr/bin/env python
"""Provision detectron2 into the current Python environment, without a C++ compiler.

No package registry has a detectron2 wheel. The registry's ``pb1-detectron2==0.6`` is upstream
v0.6's Python code without its C++ sources, so it cannot build as-is. This tool:

1. leaves a working compiled detectron2 (a user's own build of v0.6 or main) alone, and says so;
2. otherwise fetches the ``pb1-detectron2==0.6`` sdist with pip (or takes ``--sdist``), refuses it
   unless its sha256 is the pinned ``SDIST_SHA256``, applies the small named fixes
   in ``detectron2_patches.py`` (Pillow >= 10, setuptools >= 81, NumPy 2, Python 3.11, torch 2.x,
   CPU-only launch), adds ``detectron2/_C`` from ``detectron2_overlay/`` (a shim onto seg_d2's
   pure-PyTorch ``seg_d2_ops`` package, which must be installed first: ``pip install -e .``), and
   builds and installs a wheel named ``detectron2`` (version ``0.6.post1+segd2``).

The wheel does not copy the ops: the shim imports ``seg_d2_ops`` from wherever seg_d2 is
installed (an editable install: this checkout), so editing an op needs no rebuild; only a change
of the patches, the shim or this tool does (the recipe hash below).

It is idempotent: a second run finds the same build installed and does nothing.

``--source PATH`` instead compiles detectron2 (main, or any release) from a source tree or its tarball,
for users who want the detectron2 that teams compile today. It needs a C++ compiler, torch installed,
and setuptools (``--no-build-isolation``); CPU ops only unless a CUDA toolkit is found. The wheel is cached
outside the checkout (``$SEG_D2_CACHE``, default ``~/.cache/seg_d2``), keyed by the source's sha256, the
torch version and the Python version, so a second environment or CI run on the same machine reuses it.
A compiled detectron2 whose ``_C`` is the cached wheel's is left as it is.

Usage:
    python tools/install_detectron2.py [--force] [--sdist PATH]
    python tools/install_detectron2.py --source ../shared/detectron2-main/detectron2-main-02b5c4e2.tar.gz
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detectron2_patches import PatchError, apply_patches  # noqa: E402

SDIST_SPEC = "pb1-detectron2==0.6"
# sha256 of the registry's pb1-detectron2-0.6.tar.gz: any other file (tampered, truncated, rebuilt) is refused.
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
VERSION = "0.6.post1+segd2"
OVERLAY_DIR = Path(__file__).resolve().parent / "detectron2_overlay"
BUILD_INFO = "_segd2_build.json"  # written into the installed package; records the recipe hash
# Installed as detectron2.projects.*, as upstream's setup.py does.
PROJECTS = {
    "detectron2.projects.point_rend": "projects/PointRend/point_rend",
    "detectron2.projects.deeplab": "projects/DeepLab/deeplab",
    "detectron2.projects.panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
# Same runtime requirements as upstream v0.6, minus the ones only caffe2 export / `black` needed.
INSTALL_REQUIRES = [
    "Pillow>=7.1", "matplotlib", "pycocotools>=2.0.2", "termcolor>=1.1", "yacs>=0.1.8", "tabulate",
    "cloudpickle", "tqdm>4.29.0", "tensorboard", "fvcore>=0.1.5,<0.1.6", "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1", "hydra-core>=1.1",
]


class ProvisionError(RuntimeError):
    """A failure with a message meant for the user (printed without a traceback)."""


def log(msg: str) -> None:
    print(f"[install_detectron2] {msg}", flush=True)


def recipe_hash() -> str:
    """Hash of everything that defines our build: the patches, this tool and the _C shim (the ops in
    seg_d2_ops are imported from seg_d2's installation, not built in)."""
    h = hashlib.sha256(VERSION.encode())
    for p in [Path(__file__).resolve().parent / "detectron2_patches.py", Path(__file__).resolve()]:
        h.update(p.read_bytes())
    for p in sorted(OVERLAY_DIR.rglob("*.py")):
        h.update(str(p.relative_to(OVERLAY_DIR)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def probe_installed() -> dict:
    """Import detectron2 in a fresh interpreter and describe what is installed."""
    code = (
        "import json, os\n"
        "out = {}\n"
        "try:\n"
        "    import detectron2\n"
        "    out['version'] = detectron2.__version__\n"
        "    out['path'] = os.path.dirname(detectron2.__file__)\n"
        "    from detectron2 import _C\n"
        "    out['pure'] = bool(getattr(_C, 'PURE_PYTORCH', False))\n"
        "    out['c_file'] = _C.__file__\n"
        "except Exception as e:\n"
        "    out['error'] = f'{type(e).__name__}: {e}'\n"
        "print(json.dumps(out))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir())
    try:
        info = json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": res.stderr.strip()[-500:]}
    build = Path(info.get("path", "/nonexistent")) / BUILD_INFO
    if build.is_file():
        info["build"] = json.loads(build.read_text())
    return info


def check_sdist(sdist: Path) -> None:
    """Refuse an sdist whose sha256 is not ``SDIST_SHA256`` (before anything is unpacked or installed)."""
    if not sdist.is_file():
        raise ProvisionError(f"--sdist {sdist}: no such file")
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise ProvisionError(
            f"{sdist} is not the {SDIST_SPEC} source distribution seg_d2 was built for: its sha256 is {digest}, "
            f"expected {SDIST_SHA256}. Nothing was installed. Download it again (pip download --no-deps "
            f"--no-binary :all: {SDIST_SPEC}) and check where it comes from."
        )


def check_ops_importable() -> None:
    """The shim imports ``seg_d2_ops``: refuse to build a detectron2 that could not import its _C."""
    res = subprocess.run([sys.executable, "-c", "import seg_d2_ops"], capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["not importable"])[-1]
        raise ProvisionError(
            f"seg_d2's ops package seg_d2_ops is not importable by {sys.executable} ({last}); detectron2._C "
            f"is a shim onto it. Install seg_d2 first: {sys.executable} -m pip install -e "
            f"{Path(__file__).resolve().parents[1]}"
        )


def fetch_sdist(dest: Path) -> Path:
    """Download the pb1-detectron2 sdist with pip (its setup.py imports torch: no build isolation)."""
    log(f"fetching {SDIST_SPEC} (source distribution) with pip ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--no-build-isolation", "-d", str(dest), SDIST_SPEC]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("pb1*detectron2-0.6.tar.gz"))
    if res.returncode != 0 or not found:
        tail = "\n    ".join((res.stderr or res.stdout).strip().splitlines()[-6:])
        raise ProvisionError(
            f"could not fetch {SDIST_SPEC} from the package index.\n"
            f"  pip said:\n    {tail}\n"
            "  Check that pip can reach your package index (and that torch is installed: the sdist's "
            "setup.py imports it), or download the sdist elsewhere and pass --sdist PATH."
        )
    return found[0]


def write_setup_py(root: Path) -> None:
    setup_py = f'''# Generated by seg_d2's tools/install_detectron2.py: pure-Python build of detectron2 v0.6.
from setuptools import find_packages, setup

PROJECTS = {PROJECTS!r}
setup(
    name="detectron2",
    version={VERSION!r},
    description="detectron2 v0.6 (from pb1-detectron2) with seg_d2's fixes and a pure-PyTorch _C",
    packages=find_packages(include=["detectron2", "detectron2.*"]) + list(PROJECTS),
    package_dir=PROJECTS,
    package_data={{"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"],
                   "detectron2": [{BUILD_INFO!r}]}},
    python_requires=">=3.8",
    install_requires={INSTALL_REQUIRES!r},
)
'''
    (root / "setup.py").write_text(setup_py)


def build_and_install(sdist: Path, work: Path, rhash: str) -> None:
    log(f"unpacking {sdist.name}")
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    src = next(work.glob("pb1*detectron2-0.6"))
    pkg = src / "detectron2"
    if not (pkg / "__init__.py").is_file():
        raise ProvisionError(f"{sdist}: no detectron2/ package inside; is it really {SDIST_SPEC}?")

    log("applying fixes:")
    for name, summary in apply_patches(pkg):
        log(f"  - {name}: {summary}")
    c_dir = pkg / "_C"
    shutil.copytree(OVERLAY_DIR / "_C", c_dir, ignore=shutil.ignore_patterns("__pycache__"))
    log("added detectron2/_C: a shim onto seg_d2_ops, seg_d2's pure-PyTorch ops")
    (pkg / BUILD_INFO).write_text(json.dumps({"version": VERSION, "recipe": rhash, "sdist": SDIST_SPEC}))

    build_root = work / "build_root"
    build_root.mkdir()
    shutil.move(str(pkg), build_root / "detectron2")
    for target in PROJECTS.values():
        shutil.copytree(src / target, build_root / target)
    write_setup_py(build_root)

    wheel_dir = work / "wheels"
    log(f"building wheel detectron2=={VERSION}")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
          str(wheel_dir), str(build_root)], "building the detectron2 wheel")
    wheel = next(wheel_dir.glob("detectron2-*.whl"))
    log(f"installing {wheel.name}")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)],
         "installing the detectron2 wheel")


def source_key(source: Path) -> str:
    """sha256 of the source (the tarball's bytes, or a tree's paths and contents), the torch version and the
    Python version: what the compiled wheel depends on."""
    h = hashlib.sha256()
    if source.is_file():
        h.update(source.read_bytes())
    else:
        for p in sorted(q for q in source.rglob("*") if q.is_file() and ".git" not in q.parts):
            h.update(str(p.relative_to(source)).encode())
            h.update(p.read_bytes())
    import torch

    h.update(f"torch {torch.__version__} python {sys.version_info[0]}.{sys.version_info[1]}".encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("SEG_D2_CACHE") or Path.home() / ".cache" / "seg_d2")


def _wheel_c_sha256(wheel: Path):
    """sha256 of the wheel's detectron2/_C file (None without one)."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.startswith("detectron2/_C") and "/" not in n[len("detectron2/"):]]
        return hashlib.sha256(z.read(names[0])).hexdigest() if names else None


def build_source_wheel(source: Path, dest: Path) -> Path:
    """Compile detectron2 from ``source`` (a tree or a tarball of one) into a wheel in ``dest``."""
    with tempfile.TemporaryDirectory(prefix="segd2_d2source_") as tmp:
        tree = source
        if source.is_file():
            log(f"unpacking {source.name}")
            try:
                with tarfile.open(source) as tar:
                    tar.extractall(tmp, filter="data")
            except tarfile.TarError as e:
                raise ProvisionError(f"--source {source}: not a readable tarball ({e})") from None
            tops = [p for p in Path(tmp).iterdir() if p.is_dir()]
            tree = tops[0] if len(tops) == 1 else Path(tmp)
        if not (tree / "setup.py").is_file() or not (tree / "detectron2" / "__init__.py").is_file():
            raise ProvisionError(f"--source {source}: no detectron2 source tree inside (expected setup.py and "
                                 f"detectron2/__init__.py at its top)")
        if shutil.which(os.environ.get("CXX", "c++")) is None:
            raise ProvisionError(f"--source {source}: compiling detectron2 needs a C++ compiler "
                                 f"({os.environ.get('CXX', 'c++')} is not on the PATH); install g++ first")
        log(f"compiling detectron2 from {source} (a few minutes on 2 cores) ...")
        out = Path(tmp) / "wheel"
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(tree)],
             "compiling detectron2")
        wheel = next(out.glob("detectron2-*.whl"))
        dest.mkdir(parents=True, exist_ok=True)
        final = dest / wheel.name
        shutil.copy(wheel, dest / (wheel.name + ".part"))
        os.replace(dest / (wheel.name + ".part"), final)  # a killed build leaves no half wheel in the cache
        return final


def install_from_source(source: Path) -> int:
    if not source.exists():
        raise ProvisionError(f"--source {source}: no such file or folder")
    key = source_key(source)
    cache = cache_root() / "detectron2-wheels" / key
    wheels = sorted(cache.glob("detectron2-*.whl"))
    info = probe_installed()
    if wheels and "error" not in info and not info.get("pure") and Path(info["c_file"]).is_file() and (
            hashlib.sha256(Path(info["c_file"]).read_bytes()).hexdigest() == _wheel_c_sha256(wheels[0])):
        log(f"detectron2 compiled from {source.name} (build {key}) is already installed at {info['path']}; "
            "nothing to do.")
        return 0
    if wheels:
        log(f"reusing the cached wheel {wheels[0]} (build {key})")
        wheel = wheels[0]
    else:
        wheel = build_source_wheel(source, cache)
        log(f"cached {wheel}")
    log(f"installing {wheel.name}")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", "--upgrade", str(wheel)],
         "installing the detectron2 wheel")
    after = probe_installed()
    if "error" in after:
        raise ProvisionError(f"detectron2 was installed but does not import: {after['error']}")
    log(f"done: detectron2 {after['version']} compiled from {source.name} at {after['path']} (build {key}). "
        "detectron2's own model_zoo.get_config needs setuptools<81 (it imports pkg_resources); seg_d2 does not.")
    return 0


def _run(cmd, what: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n    ".join((res.stderr or res.stdout).strip().splitlines()[-10:])
        raise ProvisionError(f"{what} failed:\n    {tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true",
                        help="rebuild and reinstall seg_d2's detectron2 build even if it is current "
                        "(a compiled detectron2 is never replaced)")
    parser.add_argument("--sdist", type=Path, help="use this pb1-detectron2-0.6.tar.gz instead of fetching it")
    parser.add_argument("--source", type=Path, help="compile detectron2 from this source tree or tarball (e.g. "
                        "main) instead, cached by its sha256; replaces the detectron2 installed here")
    args = parser.parse_args(argv)
    if args.source and (args.sdist or args.force):
        parser.error("--source builds detectron2 from source; --sdist and --force are for the provisioned v0.6")

    if args.sdist:  # a wrong file is refused even when nothing would be rebuilt
        try:
            check_sdist(args.sdist)
        except ProvisionError as e:
            log(f"error: {e}")
            return 2

    try:
        import torch  # noqa: F401  (the sdist's setup.py and detectron2 itself need it)
    except ImportError:
        log("error: torch is not installed in this environment; install requirements/base.txt first.")
        return 2

    if args.source:
        try:
            return install_from_source(args.source)
        except ProvisionError as e:
            log(f"error: {e}")
            return 2

    info = probe_installed()
    rhash = recipe_hash()
    if "error" not in info and not info.get("pure"):
        log(f"found a compiled detectron2 {info['version']} at {info['path']} (_C: {info['c_file']}); "
            "leaving it alone.")
        return 0
    if "error" not in info and info.get("build", {}).get("recipe") == rhash and not args.force:
        log(f"detectron2 {info['version']} (seg_d2 build {rhash}) is already installed at "
            f"{info['path']}; nothing to do.")
        return 0
    if "error" in info:
        log(f"no working detectron2 here ({info['error'].splitlines()[-1] if info['error'] else 'not importable'})")
    else:
        log(f"replacing detectron2 {info['version']} at {info['path']} (seg_d2 build "
            f"{info.get('build', {}).get('recipe', 'unknown')} -> {rhash})")

    try:
        check_ops_importable()
        with tempfile.TemporaryDirectory(prefix="segd2_d2build_") as tmp:
            work = Path(tmp)
            sdist = args.sdist if args.sdist else fetch_sdist(work / "sdist")
            check_sdist(sdist)
            build_and_install(sdist, work, rhash)
    except (ProvisionError, PatchError) as e:
        log(f"error: {e}")
        return 2

    after = probe_installed()
    if "error" in after:
        log(f"error: detectron2 was installed but does not import: {after['error']}")
        return 2
    log(f"done: detectron2 {after['version']} at {after['path']} (pure-PyTorch _C, seg_d2 build {rhash})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
