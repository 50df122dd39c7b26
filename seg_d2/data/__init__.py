from . import datasets  # noqa: F401  (registers seg_d2's datasets)
from .checks import (  # noqa: F401  (NUM_CLASSES vs stuff_classes / thing_classes, ignore label; 0 = from the data)
    check_datasets_registered, check_instance_model_and_data, check_model_and_data, check_sem_seg_model_and_data,
    check_test_datasets_not_empty, warn_if_data_and_input_sizes_disagree,
    generates_images, reads_label_maps, set_num_classes_from_data,
)
from .build import build_test_loader, build_train_loader  # noqa: F401  (mapper chosen by INPUT.DATASET_MAPPER_NAME)
from .image_io import DataFileError, read_image  # noqa: F401  (one image reader, errors naming the file)
from .sem_seg_io import SemSegDataError  # noqa: F401
from .sem_seg_mapper import SemSegDatasetMapper  # noqa: F401
from .instance_mapper import InstanceDatasetMapper  # noqa: F401  (detectron2's DatasetMapper, seg_d2's image reader)
from .rotated_mapper import RotatedDatasetMapper  # noqa: F401  (rotated-box datasets)
from .user_datasets import (  # noqa: F401  (--coco-dataset, --sem-seg-folder, --coco-panoptic, --dataset-module)
    add_dataset_arguments, merge_dataset_arguments, register_datasets_from_config, restore_config_options,
)
