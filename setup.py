#!/usr/bin/env python
"""seg_d2: semantic and instance segmentation models for Detectron2.

detectron2 itself is not on any package registry: provision it with ``tools/install_detectron2.py``
(or bring your own compiled build) before or after installing seg_d2.
"""
from setuptools import find_packages, setup

setup(
    name="seg_d2",
    version="0.1.0",
    description="U-Net, FCN and boundary-preserving Mask R-CNN for Detectron2",
    packages=find_packages(include=["seg_d2", "seg_d2.*"]),
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
