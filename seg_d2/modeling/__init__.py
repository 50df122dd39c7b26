"""Models. Importing this module registers seg_d2's architectures and heads into detectron2."""
