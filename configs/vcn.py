"""VCN (centring) training config: ``--config=configs/vcn.py:cpu`` (or ``:smoke``, ``:paper``)."""

from configs import common


def get_config(arg: str = "cpu"):
    c = common.base_config("vcn", arg)
    c.model.input_shape = (128, 128, 1)
    c.loss = {}
    c.train.best_metric = "mse"
    c.augment.translation_vox = 16.0   # 40 mm on the 2.5 mm VCN grid: the LV can be anywhere in the FOV
    if arg == "smoke":
        common.smoke(c)
        c.model.input_shape = (16, 16, 1)
    elif arg == "cpu":
        c.model.gf = 8
        c.train.batch_size, c.train.steps, c.train.lr = 8, 1500, 1e-3
    elif arg == "paper":
        c.model.gf, c.model.depth = 64, 7
        c.train.batch_size, c.train.epochs, c.train.lr = 80, 1000, 5e-4
    return c
