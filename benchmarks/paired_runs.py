"""What the paired-seed training benchmarks share (bench_bmask.py, bench_panoptic.py): the real buildings set,
one training run timed and evaluated during training, inference timed alternately in one process, the job pool
that runs single-thread processes side by side and records each finished run in a resumable jsonl, and the
statistics and tables of the report."""
import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def real_buildings_script():
    """The team's shared/data/make_real_buildings.py: under $SEG_D2_SHARED (benchmarks/pending.sh sets it, since it
    runs from a snapshot of the checkout under bench_out/), else beside the checkout."""
    shared = os.environ.get("SEG_D2_SHARED") or os.path.join(os.path.dirname(REPO), "shared")
    return os.path.join(shared, "data", "make_real_buildings.py")


def real_buildings_root():
    return os.path.join(os.environ["DETECTRON2_DATASETS"], "real_buildings")


def prepare_real_buildings(script=None):
    """Builds the real buildings set under $DETECTRON2_DATASETS with ``script`` (default real_buildings_script())
    unless it is there; a missing script is an error that says where it was looked for, before any run starts."""
    root = real_buildings_root()
    if not all(os.path.isfile(os.path.join(root, f"{s}.json")) for s in ("train", "val")):
        script = script or real_buildings_script()
        if not os.path.isfile(script):
            raise FileNotFoundError(f"the real buildings set is not in {root}, and the script that builds it is not at "
                                    f"{script}: set SEG_D2_SHARED to the team's shared folder, or pass "
                                    f"--real-buildings-script PATH")
        print(f"== building the real buildings set: {script} {root}", flush=True)
        subprocess.run([sys.executable, script, root], check=True)


def register_real_buildings():
    from detectron2.data import DatasetCatalog

    from seg_d2.data.datasets import register_coco_dataset

    root = real_buildings_root()
    for split in ("train", "val"):
        name = f"seg_d2_real_buildings_{split}"
        if name not in DatasetCatalog:
            register_coco_dataset(name, os.path.join(root, f"{split}.json"), os.path.join(root, split))


def register_real_buildings_panoptic():
    """``seg_d2_real_buildings_panoptic_{train,val}``: the real buildings as panoptic (things: building, stuff:
    background), made by seg_d2's make_coco_panoptic from the instances json and the semantic maps."""
    from detectron2.data import DatasetCatalog

    from seg_d2.data.datasets.coco_panoptic import PANOPTIC_LAYOUT, make_coco_panoptic, register_coco_panoptic_dataset

    root = real_buildings_root()
    for split in ("train", "val"):
        out = os.path.join(root, f"panoptic_{split}")
        if not os.path.isfile(os.path.join(out, PANOPTIC_LAYOUT["json"])):
            make_coco_panoptic(os.path.join(root, f"{split}.json"), os.path.join(root, f"{split}_semseg"),
                               ["background", "building"], out, overwrite=True)
        name = f"seg_d2_real_buildings_panoptic_{split}"
        if name not in DatasetCatalog:
            register_coco_panoptic_dataset(name, os.path.join(out, PANOPTIC_LAYOUT["json"]), os.path.join(root, split),
                                           os.path.join(out, PANOPTIC_LAYOUT["panoptic_root"]),
                                           os.path.join(out, PANOPTIC_LAYOUT["sem_seg_root"]))


def load_train_net():
    spec = importlib.util.spec_from_file_location("seg_d2_bench_train_net", os.path.join(REPO, "tools", "train_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_and_record(trainer_cls, cfg, iters, eval_at, device, summarize):
    """Train ``cfg`` with ``trainer_cls`` (tools/train_net.py's Trainer or a subclass), evaluating at the
    ``eval_at`` fractions of training (outside the timed steps) and at the end. Returns the figures of the run:
    train s/iter (after a 10 % warm-up), peak memory, parameters, each loss term's mean over the last fifth of
    training (the loss balance), wall time, the final results and the learning curve (``summarize(results)``)."""
    from detectron2.engine import HookBase
    from detectron2.utils.env import seed_all_rng

    steps, curve = [], {}
    eval_iters = sorted({max(1, round(f * iters)) for f in eval_at if 0 < f < 1})

    class StepTimer(HookBase):
        def before_step(self):
            if device == "cuda":
                torch.cuda.synchronize()
            self._t = time.perf_counter()

        def after_step(self):
            if device == "cuda":
                torch.cuda.synchronize()
            steps.append(time.perf_counter() - self._t)
            if self.trainer.iter + 1 in eval_iters:  # intermediate evaluation, outside the timed step
                curve[self.trainer.iter + 1] = summarize(trainer_cls.test(self.trainer.cfg, self.trainer.model))

    seed_all_rng(cfg.SEED)  # what default_setup does: model init and data order follow the seed
    trainer = trainer_cls(cfg)
    trainer.register_hooks([StepTimer()])
    trainer.resume_or_load(resume=False)
    wall = time.perf_counter()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()  # ends with the evaluation of the final model
    train_peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    curve[iters] = summarize(trainer._last_eval_results)
    timed = steps[len(steps) // 10:]  # skip warm-up
    last = max(1, iters // 5)
    losses = {k: statistics.fmean(v for v, _ in h.values()[-last:])
              for k, h in trainer.storage.histories().items() if k.startswith("loss_")}
    return {
        "train_s_per_iter": sum(timed) / len(timed),
        "train_peak_cuda_bytes": train_peak,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "losses_last_fifth": losses,
        "wall_s": time.perf_counter() - wall,
        "results": curve[iters],
        "curve": {str(k): v for k, v in sorted(curve.items())},
        "weights": os.path.join(cfg.OUTPUT_DIR, "model_final.pth"),
    }


@torch.no_grad()
def time_alternately(models, inputs, device, rounds, count):
    """Seconds per image of each model (name -> model), timed image by image in turn so that machine load
    hits them alike, after a warm-up; ``count(output)`` (e.g. detections) averaged per image; CUDA peaks."""
    total = {n: 0.0 for n in models}
    counted = {n: 0 for n in models}
    peak = {n: 0 for n in models}
    for model in models.values():  # warm-up
        for x in inputs[:5]:
            model(x)
    for _ in range(rounds):
        for x in inputs:
            for name, model in models.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t = time.perf_counter()
                out = model(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                    peak[name] = max(peak[name], torch.cuda.max_memory_allocated())
                total[name] += time.perf_counter() - t
                counted[name] += count(out[0])
    n = rounds * len(inputs)
    return {name: {"infer_s_per_img": total[name] / n, "count_per_img": counted[name] / n,
                   "infer_peak_cuda_bytes": peak[name] if device == "cuda" else None} for name in models}


def run_pool(jobs, n_parallel, start):
    """Run the (label, cmd, log, on_done[, ready]) jobs, n_parallel at a time, in their order; on_done(returncode).
    A job with ``ready`` (a callable) waits until ready() is true (its prerequisite has finished: see run_paired),
    and the next ready job takes its slot meanwhile. A failed job is reported with the end of its log; the others go
    on; a job whose prerequisite can no longer finish (nothing runs, nothing is ready) fails unstarted."""
    queue, running, failed = jobs, [], []
    while queue or running:
        while len(running) < n_parallel:
            job = queue.take_ready()
            if job is None:
                break
            label, cmd, log, on_done = job[:4]
            os.makedirs(os.path.dirname(log), exist_ok=True)
            print(f"== [{time.time() - start:6.0f} s] start {label}", flush=True)
            f = open(log, "w")
            running.append((label, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT), f, log, on_done))
        if not running and queue:  # waiting on prerequisites that failed
            for label, *_ in queue.drain():
                print(f"== [{time.time() - start:6.0f} s] not started {label}: its prerequisite failed", flush=True)
                failed.append(label)
            break
        time.sleep(2)
        for job in list(running):
            label, proc, f, log, on_done = job
            if proc.poll() is None:
                continue
            running.remove(job)
            f.close()
            print(f"== [{time.time() - start:6.0f} s] done {label}: exit {proc.returncode}", flush=True)
            if proc.returncode != 0:
                with open(log) as lf:
                    print(lf.read()[-3000:], flush=True)
                failed.append(label)
            on_done(proc.returncode)
    return failed


def read_results(path):
    """The runs recorded in the jsonl: {(kind, dataset, seed, variant(s)): record}; the last record wins."""
    done = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    done[(r["kind"], r["dataset"], r["seed"], r["variant"])] = r
    return done


def trained_weights(results_path, out, dataset, seed, variants):
    """Each variant's final weights: where its training record says (a run resumed from another --out), else
    OUT/dataset/seed/variant/model_final.pth."""
    done = read_results(results_path)
    return {v: _weights_of(done.get(("train", dataset, int(seed), v), {}), out, dataset, seed, v) for v in variants}


def _weights_of(record, out, dataset, seed, variant):
    return record.get("weights") or os.path.join(out, dataset, str(seed), variant, "model_final.pth")


def bench_out_of(run_dir):
    """The benchmark's OUT of a child's output folder, OUT/dataset/seed/variant."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.normpath(run_dir))))


def required_run(run_dir, dataset, seed, variant, iters, needed_by):
    """The training record (its "weights" resolved as in trained_weights) of ``variant`` on ``dataset`` with ``seed``
    for ``iters`` iterations, in the results of the benchmark that ``run_dir`` belongs to, which ``needed_by`` (a
    phrase) needs; FileNotFoundError saying what to train first when it is not there."""
    out = bench_out_of(run_dir)
    results = os.path.join(out, "results.jsonl")
    rec = read_results(results).get(("train", dataset, seed, variant))
    if rec is None or rec.get("iters") != iters:
        raise FileNotFoundError(f"{needed_by} needs {variant} on {dataset}, seed {seed}, {iters} iterations, which is "
                                f"not in {results}: train it first (--datasets {dataset} --variants {variant} --seeds "
                                f"{seed} --out {out}, or list both in --variants)")
    return {**rec, "weights": _weights_of(rec, out, dataset, seed, variant)}


def append_result(path, record):
    with open(path, "a") as f:  # one line per run, written at once: an interrupted run leaves nothing
        f.write(json.dumps(record) + "\n")


def mean_std(values):
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def ratio(a, b):
    return f"{a / b:.3f}" if b and not math.isnan(a) and not math.isnan(b) else "n/a"


def print_table(head, rows):
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(fmt(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(fmt(r))


def print_comparison(runs, get, paired, dataset, variants, seeds, args, baseline="stock"):
    """One dataset's table: each figure of ``get`` (label -> f(run)) as mean ± std over the seeds per variant, the
    ratio of each variant's mean to the ``baseline`` variant's, and for the ``paired`` labels each variant's difference
    to the baseline paired by seed (same data order). Returns {label: {variant: (mean, std)}}."""
    variants = list(variants)
    stats = {label: {v: mean_std([fn(f) for f in runs[v]]) for v in variants} for label, fn in get.items()}
    others = [v for v in variants if v != baseline] if baseline in variants else []
    print(f"\n### {dataset}: {len(seeds)} seed(s) {','.join(map(str, seeds))}, {args.iters} iterations each, "
          f"device {args.device}, torch threads {args.threads or torch.get_num_threads()}; mean ± std over seeds")
    head = ["figure"] + variants + [f"{v}/{baseline}" for v in others]
    rows = []
    for label, by_variant in stats.items():
        digits = 4 if "s/" in label else 2
        rows.append([label] + [f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in (by_variant[v] for v in variants)]
                    + [ratio(by_variant[v][0], by_variant[baseline][0]) for v in others])
    for key in paired:
        for v in others:
            m, s = mean_std([get[key](a) - get[key](b) for a, b in zip(runs[v], runs[baseline])])
            rows.append([f"{key} {v} - {baseline}, paired"] + [""] * (len(variants) + len(others)))
            rows[-1][1 + variants.index(v)] = f"{m:+.2f} ± {s:.2f}"
    print_table(head, rows)
    return stats


def run_paired(args, datasets, variants, seeds, child_cmd, results_path, start, timed=True, needs=None):
    """Train every (dataset, seed, variant) that ``results_path`` lacks (for ``args.iters``), ``args.jobs``
    processes at a time: variants in groups of ``args.jobs`` (--variants order: the first with the next), one
    seed's group after the other, so that a compared pair trains side by side; once a seed's variants are all
    trained, its inference timing job goes first. ``needs``: {variant: the variant whose finished run of the same
    dataset and seed it reads} (e.g. its time budget); a run waits for that one when it trains in this start too,
    and the next run that can start takes its place meanwhile. ``child_cmd("--_train", v, d, s)`` and
    ``child_cmd("--_infer", "v1,v2", d, s)`` are the commands (no timing jobs unless ``timed``). Returns the names
    of failed jobs."""
    done = read_results(results_path)
    train_key = lambda d, s, v: ("train", d, s, v)  # noqa: E731
    infer_key = lambda d, s: ("infer", d, s, ",".join(variants))  # noqa: E731
    groups = [variants[i:i + args.jobs] for i in range(0, len(variants), args.jobs)]
    todo = [(d, s, v) for d in datasets for g in groups for s in seeds for v in g
            if done.get(train_key(d, s, v), {}).get("iters") != args.iters]
    trained_left = {(d, s): sum(1 for t in todo if t[:2] == (d, s)) for d in datasets for s in seeds}
    needs, trained_now = needs or {}, set()
    jobs, front = [], []

    def infer_job(d, s):
        return (f"inference timing {d} seed {s}", child_cmd("--_infer", ",".join(variants), d, str(s)),
                os.path.join(args.out, d, str(s), "infer.log"), lambda rc: None)

    def on_trained(d, s, v):
        def done_cb(rc):
            trained_left[(d, s)] -= 1
            if rc == 0:
                trained_now.add((d, s, v))
            if timed and rc == 0 and trained_left[(d, s)] == 0:  # every variant of this seed trained: time them
                front.append(infer_job(d, s))
        return done_cb

    def waits_for(prerequisite):
        return None if prerequisite not in todo else (lambda: prerequisite in trained_now)

    for d, s, v in todo:
        jobs.append((f"train {v} on {d}, seed {s}, {args.iters} iterations", child_cmd("--_train", v, d, str(s)),
                     os.path.join(args.out, d, str(s), v, "train.log"), on_trained(d, s, v),
                     waits_for((d, s, needs[v])) if v in needs else None))
    for d in datasets:  # trained earlier but never timed with this set of variants
        for s in seeds:
            if timed and trained_left[(d, s)] == 0 and infer_key(d, s) not in done:
                jobs.append(infer_job(d, s))
    failed = run_pool(JobQueue(jobs, front), args.jobs, start)
    print(f"== benchmark wall time this start: {time.time() - start:.0f} s; failed: {failed or 'none'}", flush=True)
    return failed


def collect_figures(done, datasets, seeds, variants, iters, timing_defaults):
    """{(dataset, seed, variant): training record + its inference timing}, and the runs missing."""
    figures, missing = {}, []
    for d in datasets:
        for s in seeds:
            timed = done.get(("infer", d, s, ",".join(variants)), {}).get("timed", {})
            for v in variants:
                rec = done.get(("train", d, s, v))
                if rec is None or rec.get("iters") != iters:
                    missing.append(f"{d}/{s}/{v}")
                    continue
                figures[(d, s, v)] = {**rec, **timed.get(v, timing_defaults)}
    return figures, missing


class JobQueue:
    """run_pool's jobs in their order, with the jobs that callbacks add to ``front`` taken first; a job whose
    ``ready`` (its 5th element) says False is passed over until it says True."""

    def __init__(self, jobs, front=None):
        self.jobs, self.front = list(jobs), front if front is not None else []

    def take_ready(self):
        if self.front:
            return self.front.pop(0)
        for i, job in enumerate(self.jobs):
            if len(job) < 5 or job[4] is None or job[4]():
                return self.jobs.pop(i)
        return None

    def drain(self):
        jobs, self.jobs, self.front = self.front + self.jobs, [], []
        return jobs

    def __bool__(self):
        return bool(self.front) or bool(self.jobs)


def argument_parser(description, datasets, variants, default_datasets, default_variants, default_out):
    """The command line every paired benchmark takes (and its children: --_train, --_infer)."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--datasets", default=default_datasets, help=f"comma-separated, from {list(datasets)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds: one training run each")
    parser.add_argument("--variants", default=default_variants, help=f"comma-separated, from {list(variants)}")
    parser.add_argument("--iters", type=int, default=600, help="training iterations of each run")
    parser.add_argument("--eval-at", default="0.5,0.75", help="extra evaluations, as fractions of --iters (the end "
                        "is always evaluated): after the first LR drop, to see whether the figures still move")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the val set when timing inference")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every process (0: torch's default)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, each its own process (one per core)")
    parser.add_argument("--out", default=default_out,
                        help="folder for checkpoints, logs and results.jsonl (finished runs there are skipped)")
    parser.add_argument("--json", default=None, help="also write every run's figures to this json file")
    parser.add_argument("--report-only", action="store_true", help="train nothing: print the tables of the runs in --out")
    parser.add_argument("--real-buildings-script", default=None,
                        help="shared/data/make_real_buildings.py (default: under $SEG_D2_SHARED, else beside the checkout)")
    parser.add_argument("--_train", nargs=3, default=None, help=argparse.SUPPRESS)  # child: variant dataset seed
    parser.add_argument("--_infer", nargs=3, default=None, help=argparse.SUPPRESS)  # child: variants dataset seed
    return parser


def main(script, parser, datasets_known, variants_known, train_one, time_inference, timing_defaults, title, report,
         forward=(), first=(), needs=None):
    """Parse; in a child, train or time and record; else run (or, --report-only, read) the benchmark, print
    ``title`` and ``report(figures, dataset, variants, seeds, args)`` for each dataset whose runs are all done.
    ``forward``: the script's own options (dests) handed on to the children, whose ``train_one`` gets ``args``
    (``os.environ["SEG_D2_BENCH_ARGS"]``, json) as well; ``time_inference`` None: nothing timed. ``first``: pseudo-
    variants trained for every dataset and seed before the others, which need them (a generator), recorded alike;
    ``needs``: {variant: the variant whose run of the same dataset and seed it needs} (see run_paired)."""
    args = parser.parse_args()
    os.environ["SEG_D2_BENCH_ARGS"] = json.dumps({k: getattr(args, k) for k in forward})
    os.environ.setdefault("DETECTRON2_DATASETS", os.path.join(REPO, "datasets"))
    if args.threads:
        torch.set_num_threads(args.threads)
    eval_at = [float(x) for x in args.eval_at.split(",") if x]
    results_path = os.path.join(args.out, "results.jsonl")
    if args._train:
        variant, dataset, seed = args._train
        res = train_one(variant, dataset, int(seed), args.iters, eval_at, args.device,
                        os.path.join(args.out, dataset, seed, variant))
        append_result(results_path, {"kind": "train", "dataset": dataset, "seed": int(seed), "variant": variant,
                                     "iters": args.iters, "threads": args.threads, **res})
        return
    if args._infer:
        variants, dataset, seed = args._infer[0].split(","), args._infer[1], args._infer[2]
        weights = trained_weights(results_path, args.out, dataset, seed, variants)
        append_result(results_path, {"kind": "infer", "dataset": dataset, "seed": int(seed), "variant": args._infer[0],
                                     "timed": time_inference(variants, dataset, int(seed), weights, args.device,
                                                             args.rounds)})
        return

    datasets, variants = args.datasets.split(","), args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in datasets + variants:
        if name not in datasets_known and name not in variants_known:
            sys.exit(f"unknown dataset or variant {name!r}: datasets {list(datasets_known)}, variants {list(variants_known)}")
    if any(d.startswith("real_buildings") for d in datasets):
        prepare_real_buildings(args.real_buildings_script)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()

    def child_cmd(*extra):
        return [sys.executable, "-W", "ignore", os.path.abspath(script), "--iters", str(args.iters),
                "--device", args.device, "--out", args.out, "--threads", str(args.threads),
                "--eval-at", args.eval_at, "--rounds", str(args.rounds),
                *[a for k in forward for a in (f"--{k.replace('_', '-')}", str(getattr(args, k)))], *extra]

    if not args.report_only:
        if first:
            run_paired(args, datasets, list(first), seeds, child_cmd, results_path, start, timed=False)
        run_paired(args, datasets, variants, seeds, child_cmd, results_path, start, timed=time_inference is not None,
                   needs=needs)
    done = read_results(results_path)
    figures, missing = collect_figures(done, datasets, seeds, variants, args.iters, timing_defaults)
    if missing:
        print(f"runs not (yet) in {results_path}: {', '.join(missing)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"/".join(map(str, k)): v for k, v in figures.items()}, f, indent=1)
    walls = [r["wall_s"] for r in done.values() if "wall_s" in r]
    print(f"\n{title}; {args.jobs} job(s) x {args.threads or torch.get_num_threads()} thread(s). Runs' own wall "
          f"time, summed: {sum(walls):.0f} s.")
    for dataset in datasets:
        if all((dataset, s, v) in figures for s in seeds for v in variants):
            report(figures, dataset, variants, seeds, args)
