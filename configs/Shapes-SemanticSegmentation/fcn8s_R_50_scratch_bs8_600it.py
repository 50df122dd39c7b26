# LazyConfig twin of fcn8s_R_50_scratch_bs8_600it.yaml: FCN-8s with a ResNet-50 encoder, from scratch,
# on the generated shapes scenes. Train and evaluate with
#   python tools/lazyconfig_train_net.py --config-file \
#       configs/Shapes-SemanticSegmentation/fcn8s_R_50_scratch_bs8_600it.py
from ..common.data.shapes_sem_seg import dataloader
from ..common.models.fcn_resnet import model
from ..common.optim import SGD as optimizer
from ..common.schedules import warmup_poly
from ..common.train import train

model.sem_seg_head.num_classes = 5
dataloader.train.mapper.num_classes = 5  # label values are checked against the model's classes

train.max_iter = 600
train.checkpointer.period = 600
train.eval_period = 0  # evaluate after training
train.output_dir = "./output/shapes_fcn8s_R_50_lazy"

optimizer.lr = 0.02
optimizer.weight_decay = 1e-4
lr_multiplier = warmup_poly(max_iter=600, warmup_iters=50, power=0.9)
