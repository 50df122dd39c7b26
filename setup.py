#!/usr/bin/env python
"""seg_d2: semantic and instance segmentation models for Detectron2.

detectron2 itself is not on any package registry: provision it with ``tools/install_detectron2.py``
(or bring your own compiled build) after installing seg_d2, whose ``seg_d2_ops`` package is the
pure-PyTorch ``detectron2._C`` of that build.
"""
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithConfigs(build_py):
    """Ship the top-level configs/ (which tools/train_net.py and the configs' _BASE_ paths use) inside the
    package, as seg_d2/model_zoo/configs, as detectron2 ships its configs: seg_d2.model_zoo finds them
    from an installed wheel. Editable installs read the repository's configs/ instead."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        dst = os.path.join(self.build_lib, "seg_d2", "model_zoo", "configs")
        if os.path.isdir(dst):
            shutil.rmtree(dst)
        shutil.copytree(os.path.join(HERE, "configs"), dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(
    name="seg_d2",
    version="0.1.0",
    description="U-Net, FCN and boundary-preserving Mask R-CNN for Detectron2",
    packages=find_packages(include=["seg_d2", "seg_d2.*", "seg_d2_ops"]),
    cmdclass={"build_py": BuildPyWithConfigs},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.0",
        "torchvision",
        "numpy",
        "pillow>=10",
        "opencv-python-headless",
        "pycocotools>=2.0.2",
        "fvcore>=0.1.5",
        "iopath",
        "cityscapesscripts",
        "shapely",
        "tensorboard",
    ],
    extras_require={"test": ["pytest"]},
)
