"""The fixes seg_d2 applies to detectron2 v0.6's Python sources (from the pb1-detectron2 sdist).

Each fix is small, named after what it fixes, and tested in ``tests/detectron2_provisioning``.
A replacement whose text is not found exactly as expected aborts the build: the sdist is then not
the v0.6 code these fixes were written for, and nothing is installed.
"""
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple


class PatchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Patch:
    name: str
    summary: str
    # (relative file, old text, new text); old must occur exactly once.
    edits: List[Tuple[str, str, str]] = field(default_factory=list)
    # (regex, replacement) applied to every .py file; must change at least one file.
    regex: Tuple[str, str] = None


PATCHES = [
    Patch(
        "pillow10_linear",
        "Image.LINEAR was removed in Pillow 10; ExtentTransform now defaults to Image.BILINEAR",
        [("data/transforms/transform.py", "interp=Image.LINEAR", "interp=Image.BILINEAR")],
    ),
    Patch(
        "setuptools81_pkg_resources",
        "pkg_resources is gone in setuptools >= 81; model_zoo finds its configs beside its own file",
        [
            ("model_zoo/model_zoo.py", "import pkg_resources\n", ""),
            (
                "model_zoo/model_zoo.py",
                'cfg_file = pkg_resources.resource_filename(\n'
                '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
                '    )',
                'cfg_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)',
            ),
        ],
    ),
    Patch(
        "export_without_caffe2",
        "caffe2 was removed from torch; detectron2.export imports, with the caffe2 exporter left out",
        [(
            "export/__init__.py",
            "from .api import *\n",
            "try:\n"
            "    from .api import *  # needs caffe2, which torch >= 2.0 no longer ships\n"
            "except ImportError as _e:  # TracingAdapter and scripting still work without it\n"
            "    _CAFFE2_IMPORT_ERROR = _e\n",
        )],
    ),
    Patch(
        "mapdataset_sample_from_set",
        "random.sample() rejects sets on Python >= 3.11; MapDataset's fallback samples a sorted list",
        [(
            "data/common.py",
            "cur_idx = self._rng.sample(self._fallback_candidates, k=1)[0]",
            "cur_idx = self._rng.sample(sorted(self._fallback_candidates), k=1)[0]",
        )],
    ),
    Patch(
        "numpy2_removed_aliases",
        "np.bool/np.int/np.float/np.str were removed in NumPy >= 1.24; use the builtins",
        regex=(r"\bnp\.(bool|int|float|str)\b(?!_)", r"\1"),
    ),
    Patch(
        "resume_lr_scheduler_state",
        "torch 2.x schedulers derive from LRScheduler, not _LRScheduler; save and load their state",
        [
            (
                "engine/hooks.py",
                "    def state_dict(self):\n"
                "        if isinstance(self.scheduler, torch.optim.lr_scheduler._LRScheduler):",
                "    def state_dict(self):\n"
                "        if isinstance(self.scheduler, _LR_SCHEDULER_BASE):",
            ),
            (
                "engine/hooks.py",
                "    def load_state_dict(self, state_dict):\n"
                "        if isinstance(self.scheduler, torch.optim.lr_scheduler._LRScheduler):",
                "    def load_state_dict(self, state_dict):\n"
                "        if isinstance(self.scheduler, _LR_SCHEDULER_BASE):",
            ),
            (
                "engine/hooks.py",
                "class LRScheduler(HookBase):",
                "_LR_SCHEDULER_BASE = getattr(\n"
                "    torch.optim.lr_scheduler, \"LRScheduler\", torch.optim.lr_scheduler._LRScheduler\n"
                ")\n\n\nclass LRScheduler(HookBase):",
            ),
        ],
    ),
    Patch(
        "launch_cpu_gloo",
        "launch() ran only on CUDA with NCCL; without a GPU it now runs CPU processes over GLOO",
        [
            (
                "engine/launch.py",
                '    assert torch.cuda.is_available(), "cuda is not available. Please check your installation."\n',
                "    has_gpu = torch.cuda.is_available()\n",
            ),
            ("engine/launch.py", 'backend="NCCL",', 'backend="NCCL" if has_gpu else "GLOO",'),
            (
                "engine/launch.py",
                "    assert num_gpus_per_machine <= torch.cuda.device_count()\n"
                "    torch.cuda.set_device(local_rank)\n",
                "    if has_gpu:\n"
                "        assert num_gpus_per_machine <= torch.cuda.device_count()\n"
                "        torch.cuda.set_device(local_rank)\n",
            ),
            (
                "engine/defaults.py",
                '    if "device_ids" not in kwargs:\n',
                '    if "device_ids" not in kwargs and next(model.parameters()).is_cuda:\n',
            ),
        ],
    ),
    Patch(
        "coco_eval_pycocotools_fallback",
        "without the compiled fast COCOeval, COCOEvaluator uses pycocotools' COCOeval (same numbers)",
        [(
            "evaluation/coco_evaluation.py",
            "    coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)",
            "    from detectron2 import _C\n\n"
            "    if use_fast_impl and not getattr(_C, \"HAS_FAST_COCOEVAL\", True):\n"
            "        use_fast_impl = False  # pure-PyTorch _C: pycocotools computes the same AP\n"
            "    coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)",
        )],
    ),
    Patch(
        "deform_conv_on_cpu",
        "deformable conv refused CPU tensors; with seg_d2's _C, DeformConv and ModulatedDeformConv "
        "call torchvision's deform_conv2d and its autograd, on every device",
        [(
            "layers/deform_conv.py",
            "deform_conv = _DeformConv.apply\nmodulated_deform_conv = _ModulatedDeformConv.apply\n",
            "deform_conv = _DeformConv.apply\nmodulated_deform_conv = _ModulatedDeformConv.apply\n"
            "if getattr(_C, \"PURE_PYTORCH\", False):  # seg_d2's _C: torchvision's op, any device\n"
            "    deform_conv = _C.deform_conv\n"
            "    modulated_deform_conv = _C.modulated_deform_conv\n",
        )],
    ),
    Patch(
        "roi_align_cpu_fast_path",
        "ROIAlign on CPU tensors runs seg_d2's _C.roi_align (torchvision's CPU kernel is scalar and "
        "single-threaded); CUDA tensors, scripting and tracing keep torchvision's op",
        [
            (
                "layers/roi_align.py",
                "from torchvision.ops import roi_align\n",
                "from torchvision.ops import roi_align\n\n"
                "import torch\n"
                "from detectron2 import _C\n\n"
                "# seg_d2's _C: same results as torchvision's roi_align, faster on CPU (None: torchvision's)\n"
                "_CPU_ROI_ALIGN = getattr(_C, \"roi_align\", None)\n",
            ),
            (
                "layers/roi_align.py",
                "            input = input.dequantize()\n        return roi_align(\n",
                "            input = input.dequantize()\n"
                "        if not torch.jit.is_scripting():\n"
                "            if _CPU_ROI_ALIGN is not None and input.device.type == \"cpu\":\n"
                "                return _CPU_ROI_ALIGN(input, rois.to(dtype=input.dtype), self.output_size,\n"
                "                                      self.spatial_scale, self.sampling_ratio, self.aligned)\n"
                "        return roi_align(\n",
            ),
        ],
    ),
    Patch(
        "register_nms_rotated_op",
        "layers/nms.py calls torch.ops.detectron2.nms_rotated, which importing _C registers",
        [(
            "layers/nms.py",
            "from torchvision.ops import nms  # BC-compat\n",
            "from torchvision.ops import nms  # BC-compat\n\n"
            "from detectron2 import _C  # noqa: F401  registers torch.ops.detectron2.nms_rotated\n",
        )],
    ),
]


def apply_patches(pkg: Path, patches=PATCHES):
    """Apply ``patches`` to the detectron2 package at ``pkg``; yield (name, summary) for each.

    All edits are checked before any file is written, so a mismatch leaves the tree untouched.
    """
    pkg = Path(pkg)
    texts = {}

    def text(rel):
        if rel not in texts:
            path = pkg / rel
            if not path.is_file():
                raise PatchError(f"{path}: file to patch is missing")
            texts[rel] = path.read_text()
        return texts[rel]

    done = []
    for patch in patches:
        for rel, old, new in patch.edits:
            count = text(rel).count(old)
            if count != 1:
                raise PatchError(
                    f"fix '{patch.name}': expected the text to replace once in {rel}, found it "
                    f"{count} times; this is not the detectron2 v0.6 code the fix was written for:\n{old}"
                )
            texts[rel] = texts[rel].replace(old, new)
        if patch.regex:
            pattern, repl = patch.regex
            changed = 0
            for path in sorted(pkg.rglob("*.py")):
                rel = str(path.relative_to(pkg))
                new_text, n = re.subn(pattern, repl, text(rel))
                if n:
                    texts[rel] = new_text
                    changed += 1
            if not changed:
                raise PatchError(f"fix '{patch.name}': pattern {pattern!r} matched no file")
        done.append((patch.name, patch.summary))
    for rel, t in texts.items():
        (pkg / rel).write_text(t)
    return done
