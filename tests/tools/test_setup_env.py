"""tools/setup_env.sh with SEG_D2_VENV_SEED (.ci/run's second environment): the new environment is hard links to
the seed's files, its scripts name their own environment, and the seed is left as it was."""
import os
import subprocess

# stands in for a venv's interpreter: records its arguments, does nothing (setup_env.sh runs pip, the detectron2
# provisioning and compileall with it)
FAKE_PYTHON = '#!/bin/sh\necho "$0 $*" >> "$(dirname "$0")/../calls.log"\n'


def test_an_environment_seeded_from_another_is_hard_links_with_its_own_scripts(tmp_path, repo):
    seed, venv = tmp_path / "seed", tmp_path / "venv"
    (seed / "bin").mkdir(parents=True)
    (seed / "lib" / "site-packages" / "torch").mkdir(parents=True)
    big = seed / "lib" / "site-packages" / "torch" / "libtorch.so"
    big.write_bytes(b"\0" * 4096)
    (seed / "bin" / "python").write_text(FAKE_PYTHON)
    (seed / "bin" / "python").chmod(0o755)
    pip = f"#!{seed}/bin/python\nimport pip\n"
    (seed / "bin" / "pip").write_text(pip)
    (seed / "pyvenv.cfg").write_text(f"home = /usr/bin\ncommand = /usr/bin/python3 -m venv {seed}\n")
    env = {**os.environ, "SEG_D2_VENV": str(venv), "SEG_D2_VENV_SEED": str(seed)}
    env.pop("SEG_D2_DETECTRON2_SOURCE", None)
    res = subprocess.run(["bash", str(repo / "tools" / "setup_env.sh")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"creating virtual environment {venv} from {seed} (hard links)" in res.stdout
    copy = venv / "lib" / "site-packages" / "torch" / "libtorch.so"
    assert os.stat(copy).st_ino == os.stat(big).st_ino and os.stat(big).st_nlink == 2  # no second copy
    assert (venv / "bin" / "pip").read_text() == f"#!{venv}/bin/python\nimport pip\n"
    assert (venv / "pyvenv.cfg").read_text().endswith(f"-m venv {venv}\n")
    assert (seed / "bin" / "pip").read_text() == pip and f"venv {seed}\n" in (seed / "pyvenv.cfg").read_text()
    calls = (venv / "calls.log").read_text()  # the set-up ran in the new environment, with its interpreter
    assert f"{venv}/bin/python -m pip install" in calls and str(seed) not in calls
    assert not (seed / "calls.log").exists()
