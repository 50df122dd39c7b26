"""nnU-Net v2 (2D) as a peer of seg_d2's U-Net on 2D semantic datasets, scored by seg_d2's own evaluator.

Protocol (one dataset; every nnU-Net step runs nnU-Net 2.8.1's own entry points in a separate venv made by
``benchmarks/setup_nnunet_env.sh``, with nnUNet_raw/_preprocessed/_results under ``--work``):

1. ``convert``: a "semantic folder" dataset (images/*.png, labels/*.png of the same stems, class ids 0..K-1,
   255 = ignore) -> ``$nnUNet_raw/Dataset{ID:03d}_{Name}``, as nnU-Net's documentation (dataset_format.md)
   and its 2D PNG example (``nnunetv2/dataset_conversion/Dataset120_RoadSegmentation.py``) prescribe:
   RGB natural images as ONE 3-channel png per case (``{case}_0000.png``, channel_names R/G/B, read by
   NaturalImage2DIO), label maps ``labelsTr/{case}.png``, the validation images in ``imagesTs``. Label
   255 becomes K, declared as ``"ignore": K`` (nnU-Net's ignore label must be the highest label and be named
   "ignore", documentation/ignore_label.md); it is declared only where some label map has a 255.
2. ``plan``: ``nnUNetv2_plan_and_preprocess -d ID -c 2d --verify_dataset_integrity`` (-np/-npfp = --procs);
   prints the 2d configuration's choices from nnUNetPlans.json.
3. ``train``: ``nnUNetv2_train ID 2d all -tr TRAINER -device cpu`` (fold "all": every training case, no
   held-out fold). Run through nnU-Net's own ``run_training_entry`` with one change: its CPU path calls
   ``torch.set_num_threads(multiprocessing.cpu_count())``, so the launcher makes ``cpu_count()`` return
   ``--threads``. Data augmentation workers: ``nnUNet_n_proc_DA`` (0 = augment in the main process,
   SingleThreadedAugmenter). Wall time -> ``{results}/peer_train_time.json``.
   Budget: nnU-Net's stock short trainers are ``nnUNetTrainer_{1,5,10,20,50,100,250,500,750,2000,4000,
   8000}epochs`` and ``nnUNetTrainer_{250,2000,4000,8000}epochs_NoMirroring`` (variants/training_length/),
   each epoch 250 training + 50 pseudo-validation iterations, then a full validation (of the training
   cases, for fold "all"). Iterations cannot be set from the command line; nnU-Net finds trainers by class
   name anywhere under ``nnunetv2/training/nnUNetTrainer`` (``recursive_find_trainer_class_by_name``), so
   ``install-trainer`` writes TRAINER_SOURCE (class ``nnUNetTrainer_peer``) into
   ``nnunetv2/training/nnUNetTrainer/variants/nnunet_peer_trainer.py`` of the nnU-Net venv. It reads
   NNUNET_PEER_EPOCHS / _ITERS / _VAL_ITERS (defaults: nnU-Net's 1000 / 250 / 50; --epochs/--iters/
   --val-iters here), skips the final validation when NNUNET_PEER_FINAL_VAL=0 (--final-val to keep it),
   and writes ``peer_timing.json`` (s/iteration of the training loop, data loading included) next to the
   checkpoints. The pseudo-validation and final validation do not change the weights (checkpoint_final).
4. ``predict``: ``nnUNetv2_predict -i imagesTs -o OUT -d ID -c 2d -f all -tr TRAINER -device cpu
   --disable_tta -npp 1 -nps 1`` (test-time mirroring off: --disable_tta; --tta to keep it), same launcher.
5. ``score`` (needs seg_d2: run with seg_d2's venv; ``all`` does so by itself): registers the validation
   set with ``seg_d2.data.datasets.register_sem_seg_folder`` and feeds each predicted label map, one-hot,
   to ``seg_d2.evaluation.SemSegBoundaryEvaluator.process``; ``evaluate()`` gives mIoU, mDice,
   mBoundaryIoU, ... exactly as seg_d2's evaluation computes them -> ``{work}/scores_{Name}.json``.

    NN=/work/nnunet-venv/bin/python; W=/work/nnunet_work
    $NN benchmarks/nnunet_peer.py install-trainer
    $NN benchmarks/nnunet_peer.py all --dataset shapes --work $W --epochs 1 --iters 5 --val-iters 1
    # or step by step: convert, plan, train, predict (with $NN), then score (with seg_d2's python)
"""
import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {  # name -> nnU-Net id, folder under $DETECTRON2_DATASETS, images/labels folders (train, val), classes
    "shapes": dict(id=501, name="Shapes", root="seg_d2_shapes",
                   train=("images/train", "sem_seg/train"), val=("images/val", "sem_seg/val"),
                   classes=["background", "circle", "square", "triangle", "star"]),
    "buildings": dict(id=502, name="RealBuildings", root="real_buildings",
                      train=("train", "train_semseg"), val=("val", "val_semseg"), classes=["background", "building"]),
}
IGNORE = 255
NNUNET_PY = os.environ.get("NNUNET_PYTHON", "/work/nnunet-venv/bin/python")
SEG_D2_PY = os.environ.get("SEG_D2_PYTHON", str(ROOT / ".venv/bin/python"))

TRAINER_SOURCE = '''"""Installed by seg_d2's benchmarks/nnunet_peer.py (install-trainer): nnUNetTrainer with its budget from env."""
import json
import os
import time

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_peer(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("NNUNET_PEER_EPOCHS", self.num_epochs))
        self.num_iterations_per_epoch = int(os.environ.get("NNUNET_PEER_ITERS", self.num_iterations_per_epoch))
        self.num_val_iterations_per_epoch = max(1, int(os.environ.get("NNUNET_PEER_VAL_ITERS",
                                                                      self.num_val_iterations_per_epoch)))
        self._peer = {"train_loop_s": 0.0, "train_step_s": 0.0, "iterations": 0}

    def on_train_start(self):
        super().on_train_start()
        budget = float(os.environ.get("NNUNET_PEER_BUDGET_S", 0))
        if budget > 0:  # before run_training's epoch loop is laid out: its epochs from measured steps
            self._fit_epochs_to(budget)

    def _fit_epochs_to(self, budget, warmup=1, timed=3, min_epochs=20):
        """num_epochs (and the poly LR's length) that fill ``budget`` seconds, from the time of ``timed`` training
        steps (data loading included) after ``warmup`` and of a validation step; a budget shorter than
        ``min_epochs`` of nnU-Net's epochs gets shorter epochs (the pseudo-validation shortened alike), so that the
        LR still decays in ``min_epochs`` steps. The probe's updates are undone (network and optimizer restored)."""
        import copy

        net, opt = copy.deepcopy(self.network.state_dict()), copy.deepcopy(self.optimizer.state_dict())
        self.network.train()
        for _ in range(warmup):
            self.train_step(next(self.dataloader_train))
        t = time.perf_counter()
        for _ in range(timed):
            self.train_step(next(self.dataloader_train))
        step = (time.perf_counter() - t) / timed
        with torch.no_grad():
            t = time.perf_counter()
            self.network.eval()
            self.validation_step(next(self.dataloader_val))
            val = time.perf_counter() - t
        self.network.load_state_dict(net)
        self.optimizer.load_state_dict(opt)
        self._peer["train_step_s"] = 0.0
        val_share = self.num_val_iterations_per_epoch / self.num_iterations_per_epoch
        total = max(1, int(budget / (step + val * val_share)))  # training iterations that fit
        if total < min_epochs * self.num_iterations_per_epoch:
            self.num_iterations_per_epoch = max(1, total // min_epochs)
            self.num_val_iterations_per_epoch = max(1, round(self.num_iterations_per_epoch * val_share))
        self.num_epochs = max(1, total // self.num_iterations_per_epoch)
        self.lr_scheduler.max_steps = self.num_epochs
        self._peer.update(budget_s=budget, probe_s_per_step=step, probe_s_per_val_step=val)
        self.print_to_log_file(f"nnUNetTrainer_peer: {step:.2f} s/step, {val:.2f} s/val step: {self.num_epochs} "
                               f"epochs of {self.num_iterations_per_epoch} + {self.num_val_iterations_per_epoch} "
                               f"iterations for {budget:.0f} s")

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._peer_t0 = time.perf_counter()

    def train_step(self, batch: dict) -> dict:
        t = time.perf_counter()
        out = super().train_step(batch)
        self._peer["train_step_s"] += time.perf_counter() - t
        return out

    def on_train_epoch_end(self, train_outputs):
        self._peer["train_loop_s"] += time.perf_counter() - self._peer_t0
        self._peer["iterations"] += len(train_outputs)
        super().on_train_epoch_end(train_outputs)

    def on_train_end(self):
        super().on_train_end()
        p, n = self._peer, max(1, self._peer["iterations"])
        p.update(s_per_iter=p["train_loop_s"] / n, s_per_train_step=p["train_step_s"] / n, batch_size=self.batch_size,
                 patch_size=list(self.configuration_manager.patch_size), torch_threads=torch.get_num_threads(),
                 epochs=self.num_epochs, iters_per_epoch=self.num_iterations_per_epoch,
                 val_iters_per_epoch=self.num_val_iterations_per_epoch,
                 params=sum(p.numel() for p in self.network.parameters()))
        with open(os.path.join(self.output_folder, "peer_timing.json"), "w") as f:
            json.dump(p, f, indent=1)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("NNUNET_PEER_FINAL_VAL", "1") == "0":
            self.print_to_log_file("nnUNetTrainer_peer: final validation skipped (NNUNET_PEER_FINAL_VAL=0)")
            return
        super().perform_actual_validation(save_probabilities)
'''

# nnU-Net's console entry points, run with torch's thread count pinned (see step 3 of the docstring)
LAUNCHER = ("import multiprocessing, sys; n = int(sys.argv.pop(1)); multiprocessing.cpu_count = lambda: n; "
            "from nnunetv2.{mod} import {fn}; sys.argv[0] = '{name}'; sys.exit({fn}())")


def spec(args) -> dict:
    return spec_of(args.dataset)


def spec_of(dataset: str) -> dict:
    """DATASETS[dataset], its root under $DETECTRON2_DATASETS (as seg_d2 and the benchmarks register it; default
    datasets/ in this checkout), its nnU-Net folder name."""
    d = dict(DATASETS[dataset])
    d["root"] = Path(os.environ.get("DETECTRON2_DATASETS", ROOT / "datasets")) / d["root"]
    d["folder"] = f"Dataset{d['id']:03d}_{d['name']}"
    return d


def nnunet_env(work: Path, threads: int = 1, da_procs: int = 0, results: Path = None) -> dict:
    env = dict(os.environ, nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(results or work / "nnUNet_results"), nnUNet_n_proc_DA=str(da_procs),
               nnUNet_def_n_proc=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    return env


def run(cmd, env=None) -> float:
    print("+", " ".join(map(str, cmd)), flush=True)
    t = time.perf_counter()
    subprocess.run([str(c) for c in cmd], env=env, check=True)
    return time.perf_counter() - t


def nnunet_cli(entry: str, threads: int, *cli) -> list:
    mod, fn, name = {"train": ("run.run_training", "run_training_entry", "nnUNetv2_train"),
                     "predict": ("inference.predict_from_raw_data", "predict_entry_point", "nnUNetv2_predict")}[entry]
    return [NNUNET_PY, "-c", LAUNCHER.format(mod=mod, fn=fn, name=name), threads, *cli]


# ------------------------------------------------------------------------------------------------------ steps
def convert(d: dict, work: Path) -> Path:
    out = work / "nnUNet_raw" / d["folder"]
    shutil.rmtree(out, ignore_errors=True)
    k, has_ignore, n_train = len(d["classes"]), False, 0
    for split, (img_dir, lab_dir) in (("train", d["train"]), ("val", d["val"])):
        imgs = sorted((d["root"] / img_dir).glob("*.png"))
        assert imgs, f"no images in {d['root'] / img_dir}"
        img_out = out / ("imagesTr" if split == "train" else "imagesTs")
        img_out.mkdir(parents=True, exist_ok=True)
        for f in imgs:
            im = Image.open(f)
            if im.mode == "RGB":  # one 3-channel png, as Dataset120_RoadSegmentation (NaturalImage2DIO)
                shutil.copy(f, img_out / f"{f.stem}_0000.png")
            else:
                im.convert("RGB").save(img_out / f"{f.stem}_0000.png")
            if split != "train":
                continue
            lab = np.array(Image.open(d["root"] / lab_dir / f.name))
            assert lab.ndim == 2 and lab.shape == (im.height, im.width), f"bad label map for {f}"
            bad = np.setdiff1d(np.unique(lab), [*range(k), IGNORE])
            assert not bad.size, f"{f.name}: label values {bad} outside 0..{k - 1} and {IGNORE}"
            ignored = lab == IGNORE
            has_ignore |= bool(ignored.any())
            lab = lab.astype(np.uint8)
            lab[ignored] = k  # nnU-Net's ignore label: the highest label, named "ignore"
            (out / "labelsTr").mkdir(exist_ok=True)
            Image.fromarray(lab).save(out / "labelsTr" / f.name)
            n_train += 1
    assert d["classes"][0] == "background", "nnU-Net's label 0 is 'background'"
    labels = {c: i for i, c in enumerate(d["classes"])}
    if has_ignore:
        labels["ignore"] = k
    js = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": labels, "numTraining": n_train,
          "file_ending": ".png", "name": d["folder"], "description": f"seg_d2 {d['root'].name} (benchmarks/nnunet_peer.py)"}
    (out / "dataset.json").write_text(json.dumps(js, indent=1))
    print(f"converted {n_train} training cases to {out} (ignore label: {has_ignore})")
    return out


def plan(d: dict, work: Path, procs: int = 1) -> dict:
    env = nnunet_env(work, procs, da_procs=procs)  # the planner sets torch threads to nnUNet_n_proc_DA: not 0
    wall = run([Path(NNUNET_PY).parent / "nnUNetv2_plan_and_preprocess", "-d", d["id"], "-c", "2d",
                "--verify_dataset_integrity", "-np", procs, "-npfp", procs], env)
    plans = json.loads((work / "nnUNet_preprocessed" / d["folder"] / "nnUNetPlans.json").read_text())
    c = plans["configurations"]["2d"]
    arch = c["architecture"]["arch_kwargs"]
    key = {"dataset": d["folder"], "plan_wall_s": round(wall, 1), "patch_size": c["patch_size"],
           "batch_size": c["batch_size"], "spacing": c["spacing"], "median_image_size": c["median_image_size_in_voxels"],
           "normalization": c["normalization_schemes"], "use_mask_for_norm": c["use_mask_for_norm"],
           "network": c["architecture"]["network_class_name"].rsplit(".", 1)[-1], "n_stages": arch["n_stages"],
           "features_per_stage": arch["features_per_stage"], "strides": arch["strides"],
           "kernel_sizes": arch["kernel_sizes"], "n_conv_per_stage": arch["n_conv_per_stage"],
           "n_conv_per_stage_decoder": arch["n_conv_per_stage_decoder"]}
    print(json.dumps(key))
    (work / f"plan_{d['name']}.json").write_text(json.dumps(key, indent=1))
    return key


def train_env(args) -> dict:
    env = nnunet_env(args.work, args.threads, args.da_procs, args.results)
    for var, val in (("NNUNET_PEER_EPOCHS", args.epochs), ("NNUNET_PEER_ITERS", args.iters),
                     ("NNUNET_PEER_VAL_ITERS", args.val_iters), ("NNUNET_PEER_BUDGET_S", args.budget_s)):
        if val is not None:
            env[var] = str(val)
    env["NNUNET_PEER_FINAL_VAL"] = "1" if args.final_val else "0"
    return env


def model_dir(d: dict, args) -> Path:
    return (args.results or args.work / "nnUNet_results") / d["folder"] / f"{args.trainer}__nnUNetPlans__2d" / "fold_all"


def train(d: dict, args) -> dict:
    wall = run(nnunet_cli("train", args.threads, d["id"], "2d", "all", "-tr", args.trainer, "-device", "cpu"),
               train_env(args))
    rec = {"dataset": d["folder"], "trainer": args.trainer, "wall_s": round(wall, 1), "torch_threads": args.threads,
           "nnUNet_n_proc_DA": args.da_procs, "epochs": args.epochs, "iters": args.iters, "val_iters": args.val_iters,
           "final_val": args.final_val, "budget_s": args.budget_s}
    timing = model_dir(d, args) / "peer_timing.json"
    if timing.exists():
        rec["peer_timing"] = json.loads(timing.read_text())
    (model_dir(d, args).parent / "peer_train_time.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec))
    return rec


def pred_dir(d: dict, args) -> Path:
    return args.pred or args.work / "predictions" / d["folder"] / args.trainer


def predict(d: dict, args) -> Path:
    out = pred_dir(d, args)
    cmd = nnunet_cli("predict", args.threads, "-i", args.work / "nnUNet_raw" / d["folder"] / "imagesTs", "-o", out,
                     "-d", d["id"], "-c", "2d", "-f", "all", "-tr", args.trainer, "-device", "cpu",
                     "-npp", 1, "-nps", 1, *([] if args.tta else ["--disable_tta"]))
    wall = run(cmd, nnunet_env(args.work, args.threads, results=args.results))
    (out / "peer_predict_time.json").write_text(json.dumps({"wall_s": round(wall, 1), "tta": args.tta}))
    return out


def score(d: dict, pred: Path, out_json: Path) -> dict:
    import torch
    from seg_d2.data.datasets import register_sem_seg_folder
    from seg_d2.data.sem_seg_io import read_label_map
    from seg_d2.evaluation import SemSegBoundaryEvaluator
    from detectron2.data import DatasetCatalog

    torch.set_num_threads(1)
    name = f"nnunet_peer_{d['folder']}_val"
    register_sem_seg_folder(name, str(d["root"] / d["val"][0]), str(d["root"] / d["val"][1]), d["classes"], IGNORE)
    ev = SemSegBoundaryEvaluator(name, distributed=False)
    ev.reset()
    n = len(d["classes"])
    for rec in DatasetCatalog.get(name):
        labels = torch.from_numpy(read_label_map(str(pred / (Path(rec["file_name"]).stem + ".png"))).astype(np.int64))
        assert labels.max() < n, f"predicted label {int(labels.max())} is no class"
        # one-hot (n, H, W): the evaluator's argmax gives back nnU-Net's label map
        ev.process([{"file_name": rec["file_name"]}], [{"sem_seg": torch.nn.functional.one_hot(labels, n).permute(2, 0, 1)}])
    res = dict(ev.evaluate()["sem_seg"])
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"dataset": d["folder"], "predictions": str(pred), **res}, indent=1))
    print({k: round(res[k], 2) for k in ("mIoU", "mDice", "mBoundaryIoU", "pACC")})
    return res


def install_trainer(python: str = NNUNET_PY) -> Path:
    pkg = subprocess.run([python, "-c", "import nnunetv2; print(nnunetv2.__path__[0])"], capture_output=True,
                         text=True, check=True).stdout.strip()
    dst = Path(pkg) / "training/nnUNetTrainer/variants/nnunet_peer_trainer.py"
    dst.write_text(TRAINER_SOURCE)
    print(f"installed nnUNetTrainer_peer in {dst}")
    return dst


# ------------------------------------------------------------------------------------------------------ CLI
def argument_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["install-trainer", "convert", "plan", "train", "predict", "score", "all"])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="shapes")
    p.add_argument("--work", type=Path, default=Path("/work/nnunet_work"))
    p.add_argument("--trainer", default="nnUNetTrainer_peer",
                   help="nnUNetTrainer_peer (installed by install-trainer) or a stock one, e.g. nnUNetTrainer_1epoch")
    p.add_argument("--epochs", type=int, help="nnUNetTrainer_peer: epochs (nnU-Net: 1000)")
    p.add_argument("--iters", type=int, help="nnUNetTrainer_peer: training iterations per epoch (nnU-Net: 250)")
    p.add_argument("--val-iters", type=int, help="nnUNetTrainer_peer: pseudo-validation iterations per epoch (50)")
    p.add_argument("--final-val", action="store_true", help="nnUNetTrainer_peer: keep nnU-Net's final validation")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads and nnU-Net processes (default 1)")
    p.add_argument("--da-procs", type=int, default=0, help="nnUNet_n_proc_DA (0: augmentation in the main process)")
    p.add_argument("--tta", action="store_true", help="predict with test-time mirroring (default: --disable_tta)")
    p.add_argument("--pred", type=Path, help="predict's output and score's input, a folder of PNGs (default: "
                   "WORK/predictions/DATASET/TRAINER)")
    p.add_argument("--results", type=Path, help="nnUNet_results (default: WORK/nnUNet_results)")
    p.add_argument("--budget-s", type=float, help="nnUNetTrainer_peer: seconds of training; its epochs (and the poly "
                   "LR's length) from a few measured steps, instead of --epochs")
    return p


def peer_args(step: str = "all", **values) -> argparse.Namespace:
    """The command line's defaults for ``step`` with ``values`` (dests) set: how other scripts call the steps."""
    args = argument_parser().parse_args([step])
    for k, v in values.items():
        if not hasattr(args, k):
            raise AttributeError(f"nnunet_peer has no option {k!r}")
        setattr(args, k, v)
    args.work = Path(args.work).resolve()
    return args


def main():
    args = argument_parser().parse_args()
    args.work = args.work.resolve()
    d = spec(args)
    pred = pred_dir(d, args)
    scores = args.work / f"scores_{d['name']}_{args.trainer}.json"
    if args.step == "install-trainer":
        install_trainer()
    if args.step in ("convert", "all"):
        convert(d, args.work)
    if args.step in ("plan", "all"):
        plan(d, args.work, args.threads)
    if args.step in ("train", "all"):
        train(d, args)
    if args.step in ("predict", "all"):
        predict(d, args)
    if args.step == "score":
        score(d, pred, scores)
    if args.step == "all":  # in seg_d2's venv
        run([SEG_D2_PY, __file__, "score", "--dataset", args.dataset, "--work", args.work, "--trainer", args.trainer,
             "--pred", pred], dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT)))


if __name__ == "__main__":
    main()
