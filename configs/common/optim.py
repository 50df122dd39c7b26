# SGD as the yaml configs' default (detectron2's build_optimizer): momentum 0.9, no weight decay on
# normalization layers. `params.model` is set to the model by the training script.
import torch

from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)
