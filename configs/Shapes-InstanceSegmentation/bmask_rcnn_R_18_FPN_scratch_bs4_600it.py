# LazyConfig twin of bmask_rcnn_R_18_FPN_scratch_bs4_600it.yaml: BMask R-CNN (Cheng 2020), R-18-FPN from
# scratch, sized for the shapes scenes and CPUs. Train and evaluate with
#   python tools/lazyconfig_train_net.py --config-file \
#       configs/Shapes-InstanceSegmentation/bmask_rcnn_R_18_FPN_scratch_bs4_600it.py
from ..common.data.shapes_instance import dataloader
from ..common.models.bmask_rcnn_fpn import model
from ..common.models.shapes_rcnn import shapes_r18_fpn
from ..common.optim import SGD as optimizer
from ..common.schedules import warmup_multistep
from ..common.train import train

shapes_r18_fpn(model, num_classes=4)

train.max_iter = 600
train.checkpointer.period = 500
train.eval_period = 300
train.output_dir = "./output/shapes_bmask_rcnn_R_18_FPN_lazy"
# From scratch, early gradients can blow BN weights up without clipping.
train.clip_gradients = dict(enabled=True, clip_type="norm", clip_value=5.0, norm_type=2.0)

optimizer.lr = 0.02
optimizer.weight_decay = 1e-4
lr_multiplier = warmup_multistep(max_iter=600, steps=(450, 550), warmup_iters=100)
