"""The README as a new user follows it: its "Use your own data" commands and its "Use seg_d2 from your
own training code" snippet run as written (on tiny generated data, from a folder outside the
repository), the config paths it and train_net.py cite exist, the API signatures it quotes are right."""
import ast
import inspect
import json
import math
import os
import re
import subprocess
import sys

import pytest

from seg_d2.data.datasets import register_coco_dataset, register_coco_instances, register_sem_seg_folder
from tests.conftest import REPO
from tests.own_data import make_coco, make_sem_seg_16bit

README = (REPO / "README.md").read_text()


def section(title):
    """The text of the README's "## title" section, up to the next "## " heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def code_blocks(text, lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def expand_braces(path):
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [p for alt in match.group(1).split(",")
            for p in expand_braces(path[:match.start()] + alt + path[match.end():])]


def cited_configs(text):
    return sorted({p for cited in re.findall(r"configs/[\w\-./{},]+?\.(?:yaml|py)\b", text) for p in expand_braces(cited)})


@pytest.mark.parametrize("source", ["README.md", "tools/train_net.py"])
def test_cited_config_paths_exist(source):
    """train_net.py's docstring cited configs/Shapes-InstanceSegmentation/mask_rcnn_R_50_FPN_shapes.yaml."""
    text = README if source == "README.md" else ast.get_docstring(ast.parse((REPO / source).read_text()))
    cited = cited_configs(text)
    assert cited, "no config cited"
    missing = [p for p in cited if not (REPO / p).is_file()]
    assert not missing, f"{source} cites configs that do not exist: {missing}"


@pytest.mark.parametrize("function, keywords_from", [
    (register_coco_dataset, register_coco_instances),
    (register_sem_seg_folder, register_sem_seg_folder),
])
def test_quoted_signatures_match_the_code(function, keywords_from):
    """The README said register_coco_dataset(name, json, image_root); the parameter is json_file."""
    quoted = re.findall(rf"`(?:[\w.]+\.)?{function.__name__}\(([^)]*)\)`", README)
    assert quoted, f"README does not quote {function.__name__}(...)"
    params = list(inspect.signature(function).parameters)
    keywords = set(inspect.signature(keywords_from).parameters)
    for args in quoted:
        names = [a.split("=")[0].strip() for a in args.split(",") if a.strip() not in ("", "...")]
        positional = [n for n, a in zip(names, args.split(",")) if "=" not in a]
        assert positional == params[:len(positional)], (function.__name__, args, params)
        assert set(names) - set(positional) <= keywords | set(params), (function.__name__, args)


def _environment():
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])  # `python`: this one
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("DETECTRON2_DATASETS", None)  # as a new user has it
    # one thread per process: on a busy 2-core machine, torch's default (a thread per core) runs the same
    # iterations several times slower
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """Outside the repository: the user's data where the README's commands look for it, and tools/."""
    root = tmp_path_factory.mktemp("readme_user")
    make_coco(str(root / "my_coco"))
    make_sem_seg_16bit(str(root / "my_scans"))
    (root / "tools").symlink_to(REPO / "tools")  # `python tools/train_net.py` as from a clone
    return root


def final_metrics(out_dir):
    lines = [json.loads(line) for line in (out_dir / "metrics.json").read_text().splitlines()]
    assert max(m["iteration"] for m in lines if "total_loss" in m) == 4  # 5 iterations
    return lines[-1]


@pytest.mark.long
def test_use_your_own_data_commands_run_as_written(user_folder):
    text = section("Use your own data")
    script = "\n".join(code_blocks(text, "bash"))
    for what in ("--coco-dataset", "--sem-seg-folder", "make_cityscapes_fixture.py", "configs/OwnData-InstanceSegmentation/",
                 "tools/make_panoptic.py", "--coco-panoptic",
                 "configs/OwnData-SemanticSegmentation/unet_classic_gray"):
        assert what in script, f"the section's commands lack {what}"
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=user_folder, env=_environment(),
                         capture_output=True, text=True, timeout=1200)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-6000:]
    coco = final_metrics(user_folder / "output" / "my_coco")
    for key in ("bbox/AP", "segm/AP", "boundary/AP", "segm/AP-disc", "segm/AP-box"):
        assert key in coco and math.isfinite(coco[key]), key
    demo = json.loads((user_folder / "output" / "my_coco" / "demo" / "predictions.json").read_text())["predictions"]
    found = [i for p in demo for i in p["instances"]]
    assert found and all(set(i["segmentation"]) == {"size", "counts"} for i in found)  # masks as COCO RLE
    demo = json.loads((user_folder / "output" / "my_scans" / "demo" / "predictions.json").read_text())["predictions"]
    assert demo and all((user_folder / p["label_map"]).is_file() for p in demo)  # --save-masks
    scans = final_metrics(user_folder / "output" / "my_scans")
    for key in ("sem_seg/mIoU", "sem_seg/mDice", "sem_seg/IoU-lesion"):
        assert key in scans and math.isfinite(scans[key]), key
    panoptic = final_metrics(user_folder / "output" / "my_panoptic")
    for key in ("panoptic_seg/PQ", "panoptic_seg/PQ_st", "panoptic_seg/PQ_th", "segm/AP", "sem_seg/mIoU"):
        assert key in panoptic and math.isfinite(panoptic[key]), key
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES 0 -> 3" in log  # "things", wall, floor
    cityscapes = final_metrics(user_folder / "output" / "my_cityscapes")
    assert math.isfinite(cityscapes["sem_seg/IoU"])
    assert "MODEL.ROI_HEADS.NUM_CLASSES 0 -> 2" in log and "MODEL.SEM_SEG_HEAD.NUM_CLASSES 0 -> 2" in log
    assert "np.float64" not in log and "FutureWarning" not in log


def test_own_training_code_snippet_runs_as_written(user_folder):
    (code,) = code_blocks(section("Use seg_d2 from your own training code"), "python")
    res = subprocess.run([sys.executable, "-c", code], cwd=user_folder, env=_environment(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-5000:]
    losses = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    assert "loss_sem_seg" in losses and all(math.isfinite(v) for v in losses.values())


def test_the_activation_line_gives_a_new_shell_seg_d2():
    """A new shell (no environment on the PATH, no PYTHONPATH): `python -c "import seg_d2"` fails, and after
    the README's activation line it works. quickstart.sh ends with that line, for its environment."""
    (block,) = [b for b in code_blocks(section("Quick start"), "bash") if "activate" in b]
    line = block.strip()
    venv = os.path.relpath(sys.prefix, REPO)  # .venv, or $SEG_D2_VENV's (CI's second environment)
    line = line.replace(".venv", venv) if venv != ".venv" else line
    bare = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    bare["PATH"] = os.pathsep.join(p for p in bare["PATH"].split(os.pathsep)
                                   if not p.startswith(sys.prefix) and p != os.path.dirname(sys.executable))
    probe = "python -c 'import seg_d2, sys; print(sys.prefix)'"
    before = subprocess.run(["bash", "-c", probe], cwd=REPO, env=bare, capture_output=True, text=True)
    assert before.returncode != 0 or before.stdout.strip() != sys.prefix
    after = subprocess.run(["bash", "-c", f"{line} && {probe}"], cwd=REPO, env=bare, capture_output=True, text=True)
    assert after.returncode == 0 and after.stdout.strip() == sys.prefix, after.stderr[-2000:]
    quickstart = (REPO / "tools" / "quickstart.sh").read_text().rstrip().splitlines()
    assert quickstart[-1] == 'echo "    source $VENV/bin/activate"'
