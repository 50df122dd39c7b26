from . import datasets  # noqa: F401  (registers seg_d2's datasets)
from .checks import check_sem_seg_model_and_data  # noqa: F401  (NUM_CLASSES vs stuff_classes, ignore label)
from .build import build_test_loader, build_train_loader  # noqa: F401  (mapper chosen by INPUT.DATASET_MAPPER_NAME)
from .sem_seg_io import SemSegDataError  # noqa: F401
from .sem_seg_mapper import SemSegDatasetMapper  # noqa: F401
from .rotated_mapper import RotatedDatasetMapper  # noqa: F401  (rotated-box datasets)
