#!/usr/bin/env python
"""Plot training curves from the metrics.json of one or more runs, overlaid: total loss, each loss
term, learning rate and every evaluation metric over iterations.

Examples:
    python tools/plot_metrics.py output/shapes_unet_R_50_quickstart
    python tools/plot_metrics.py output/run_a output/run_b --output plots/ --keys total_loss "sem_seg/m*"

Writes losses.png, lr.png and metrics_<task>.png (sem_seg, bbox, segm, ...) to --output (default:
<first run>/plots) and prints their paths; shows them too where a display exists (not with --no-show).
Needs only matplotlib (it imports neither torch nor detectron2), so it runs anywhere, fast.
"""
import argparse
import fnmatch
import json
import math
import os
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

# Keys of metrics.json that are bookkeeping, not curves.
BOOKKEEPING = {"iteration", "time", "data_time", "eta_seconds", "rank_data_time"}
# Evaluation tasks of detectron2 and seg_d2 (results are flattened as "task/metric").
EVAL_TASKS = {"bbox", "segm", "keypoints", "sem_seg", "panoptic_seg", "boundary", "cityscapes", "rotated"}


def has_display() -> bool:
    """Whether plots can be shown: a display on Linux (X11/Wayland), always on macOS and Windows."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or sys.platform in ("darwin", "win32")


def find_metrics_file(run: str) -> str:
    """``run``'s metrics.json: ``run`` is an OUTPUT_DIR or the file itself."""
    path = os.path.join(run, "metrics.json") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        what = f"No metrics.json in {run}" if os.path.isdir(run) else f"Run directory or metrics file not found: {run}"
        raise FileNotFoundError(what)
    return path


def load_metrics(path: str) -> List[dict]:
    """Rows of a metrics.json, one per iteration in increasing order. Rows of the same iteration
    (a resumed run, an evaluation logged apart) are merged, the later values winning; unreadable
    lines (a run killed while writing) are skipped."""
    by_iter: Dict[int, dict] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "iteration" in row:
                by_iter.setdefault(int(row["iteration"]), {}).update(row)
    if not by_iter:
        raise ValueError(f"{path} has no metrics (no line with an 'iteration')")
    return [by_iter[k] for k in sorted(by_iter)]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def classify_keys(rows: Sequence[dict]) -> "OrderedDict[str, List[str]]":
    """Group the plotted keys: "losses" (``total_loss`` then each ``loss_*`` term), "lr", and one group
    per evaluation task (``sem_seg/mIoU`` -> "sem_seg"). A key is an evaluation metric if its task is
    a known one, or if it is logged in under half of the training rows (evaluations are periodic);
    other per-iteration statistics (``fast_rcnn/cls_accuracy``, ...) are left out."""
    train_rows = [r for r in rows if "total_loss" in r]
    counts: Dict[str, int] = {}
    for r in rows:
        for k, v in r.items():
            if _is_number(v) or (isinstance(v, float) and math.isnan(v)):
                counts[k] = counts.get(k, 0) + 1
    losses = sorted(k for k in counts if k.startswith("loss_"))
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    groups["losses"] = (["total_loss"] if "total_loss" in counts else []) + losses
    groups["lr"] = ["lr"] if "lr" in counts else []
    for k in counts:
        if k in BOOKKEEPING or k == "lr" or k == "total_loss" or k.startswith("loss_"):
            continue
        task = k.split("/", 1)[0] if "/" in k else "metrics"
        in_train = sum(1 for r in train_rows if k in r)
        if task in EVAL_TASKS or not train_rows or in_train < 0.5 * len(train_rows):
            groups.setdefault(task, []).append(k)
    for g, keys in groups.items():  # summary metrics (mIoU, AP, ...) before per-class ones (IoU-circle, ...)
        if g not in ("losses", "lr"):
            keys.sort(key=lambda k: "-" in k.split("/")[-1])
    return OrderedDict((g, keys) for g, keys in groups.items() if keys)


def series(rows: Sequence[dict], key: str):
    """(iterations, values) of ``key``, skipping rows without a finite value."""
    pts = [(r["iteration"], r[key]) for r in rows if _is_number(r.get(key))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _labels(runs: Sequence[str]) -> List[str]:
    """Short, distinct names for the runs: folder names, or paths where those clash."""
    names = [os.path.basename(os.path.normpath(r) if os.path.isdir(r) else os.path.dirname(os.path.abspath(r)))
             for r in runs]
    if len(set(names)) < len(names):
        names = [os.path.relpath(r) for r in runs]
    return names


def plot_runs(
    runs: Sequence[str],
    output_dir: str,
    *,
    keys: Optional[Sequence[str]] = None,
    show: bool = False,
    dpi: int = 80,
    log_loss: bool = False,
) -> List[str]:
    """Plot ``runs`` (OUTPUT_DIRs or metrics.json files) overlaid: ``losses.png``, ``lr.png`` and
    ``metrics_<task>.png`` per evaluation task in ``output_dir``; returns the files written.

    Args:
        keys: fnmatch patterns (``sem_seg/*IoU``); only matching keys are plotted.
        show: also show the figures (needs a display: see :func:`has_display`).
        log_loss: logarithmic y axis for the losses.
    """
    import matplotlib

    if not (show and has_display()):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [load_metrics(find_metrics_file(r)) for r in runs]
    labels = _labels(runs)
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for rows in data:
        for g, ks in classify_keys(rows).items():
            groups.setdefault(g, [])
            groups[g] += [k for k in ks if k not in groups[g]]
    if keys:
        wanted = {g: [k for k in ks if any(fnmatch.fnmatch(k, p) for p in keys)] for g, ks in groups.items()}
        groups = OrderedDict((g, ks) for g, ks in wanted.items() if ks)
        if not groups:
            raise ValueError(f"No metric matches {list(keys)} in {list(runs)}")
    os.makedirs(output_dir, exist_ok=True)
    written, colors = [], plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for group, ks in groups.items():
        ncols = min(4, len(ks))
        nrows = math.ceil(len(ks) / ncols)
        height = 3 * nrows + 0.3
        fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, height), squeeze=False, dpi=dpi,
                                 layout="constrained")
        for ax, key in zip(axes.flat, ks):
            for i, (rows, label) in enumerate(zip(data, labels)):
                xs, ys = series(rows, key)
                if xs:
                    ax.plot(xs, ys, marker="o" if len(xs) <= 20 else None, markersize=3, label=label,
                            color=colors[i % len(colors)])
            ax.set_title(key, fontsize=10)
            ax.set_xlabel("iteration", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            if group == "losses" and log_loss:
                ax.set_yscale("log")
        for ax in list(axes.flat)[len(ks):]:
            ax.axis("off")
        handles = [plt.Line2D([], [], color=colors[i % len(colors)], label=lab) for i, lab in enumerate(labels)]
        title = {"losses": "losses", "lr": "learning rate"}.get(group, f"evaluation: {group}")
        fig.suptitle(title + ("" if len(runs) > 1 else f" ({labels[0]})"), fontsize=11)
        if len(runs) > 1:
            fig.legend(handles=handles, loc="outside upper right", fontsize=8)
        name = group if group in ("losses", "lr") else f"metrics_{group.replace('/', '_')}"
        path = os.path.join(output_dir, name + ".png")
        fig.savefig(path)
        written.append(path)
        if not show:
            plt.close(fig)
    if show and has_display():
        plt.show()
    return written


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="OUTPUT_DIR", help="training output folders (or metrics.json files)")
    p.add_argument("--output", metavar="DIR", help="folder for the PNG files (default: <first run>/plots)")
    p.add_argument("--keys", nargs="+", metavar="PATTERN", help="plot only these keys (fnmatch patterns)")
    p.add_argument("--log-loss", action="store_true", help="logarithmic axis for the losses")
    p.add_argument("--dpi", type=int, default=80)
    p.add_argument("--no-show", action="store_true", help="only write the files, even where a display exists")
    return p


def main(args):
    first = args.runs[0] if os.path.isdir(args.runs[0]) else os.path.dirname(args.runs[0]) or "."
    output = args.output or os.path.join(first, "plots")
    show = not args.no_show and has_display()
    written = plot_runs(args.runs, output, keys=args.keys, show=show, dpi=args.dpi, log_loss=args.log_loss)
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    args = get_parser().parse_args()
    try:
        main(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"plot_metrics.py: error: {e}", file=sys.stderr)
        sys.exit(2)
