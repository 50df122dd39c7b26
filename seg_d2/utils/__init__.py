"""Helpers of seg_d2's tools: drawing predictions and ground truth (``visualizer``) and loading a
config and its weights into a predictor (``predictor``).

Not imported by ``import seg_d2``: the tools import what they need.
"""
