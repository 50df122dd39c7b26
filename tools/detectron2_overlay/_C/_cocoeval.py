"""Fast-COCOeval entry points of detectron2._C.

Not implemented here: detectron2's COCOEvaluator, as provisioned, checks ``_C.HAS_FAST_COCOEVAL``
and runs pycocotools' COCOeval instead, which gives the same numbers.
"""
from ._missing import missing_op

_HINT = "detectron2's COCOEvaluator falls back to pycocotools' COCOeval, which gives the same AP."
COCOevalAccumulate = missing_op("COCOevalAccumulate", _HINT)
COCOevalEvaluateImages = missing_op("COCOevalEvaluateImages", _HINT)
InstanceAnnotation = missing_op("InstanceAnnotation", _HINT)
ImageEvaluation = missing_op("ImageEvaluation", _HINT)
