from .build import EVALUATOR_TYPES, build_evaluator
