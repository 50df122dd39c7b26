# Training settings read by tools/lazyconfig_train_net.py (detectron2's configs/common/train.py,
# plus seg_d2's gradient clipping and CPU fallback).
train = dict(
    output_dir="./output",
    init_checkpoint="",  # weights to start from ("": from scratch)
    max_iter=90000,
    amp=dict(enabled=False),  # Automatic Mixed Precision (AMPTrainer)
    ddp=dict(  # options of DistributedDataParallel
        broadcast_buffers=False,
        find_unused_parameters=False,
        fp16_compression=False,
    ),
    checkpointer=dict(period=5000, max_to_keep=100),  # options of PeriodicCheckpointer
    eval_period=5000,  # 0: evaluate only after training
    log_period=20,
    # Gradient clipping, as the yaml configs' SOLVER.CLIP_GRADIENTS (clip_type "value" or "norm").
    clip_gradients=dict(enabled=False, clip_type="value", clip_value=1.0, norm_type=2.0),
    device="cuda",  # falls back to "cpu" where no GPU is visible
    seed=-1,  # < 0: a random seed
)
