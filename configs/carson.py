"""CarSON (segmentation) training config: ``--config=configs/carson.py:cpu`` (or ``:smoke``, ``:paper``)."""

from configs import common


def get_config(arg: str = "cpu"):
    c = common.base_config("carson", arg)
    c.model.input_shape = (128, 128, 1)
    c.loss = {"dice_epsilon": 0.0, "ce_weight": 0.0}
    c.train.best_metric = "dice_mean"
    c.train.best_mode = "max"
    c.data.heart_only = True           # sample slices that contain heart labels
    if arg == "smoke":
        common.smoke(c)
        c.model.input_shape = (32, 32, 1)
    elif arg == "cpu":
        c.model.gf = 12
        c.loss.ce_weight = 0.5         # CE speeds up early training; the paper's CarSON2D-MDC is Dice only
        c.train.batch_size, c.train.steps, c.train.lr = 16, 3000, 1e-3
    elif arg == "paper":
        c.model.gf, c.model.depth = 64, 7
        c.train.batch_size, c.train.epochs, c.train.lr = 80, 1000, 5e-4
    return c
