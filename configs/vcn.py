"""VCN (centring) training config: ``--config=configs/vcn.py:cpu`` (or ``:smoke``, ``:paper``, ``:real``)."""

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
    elif arg in ("real", "real_smoke"):
        # Real ACDC full views (25 training patients) x 4 against 8 + 8 phantoms (models A and B); warm start
        # from the phantom-trained shipped VCN. No elastic or slice mixing: the target is a point.
        common.real_mixture(c, arg == "real_smoke")
        c.augment.translation_vox = 16.0
        c.augment.elastic_vox = 0.0
        c.augment.slice_mix_prob = 0.0
        if arg == "real":
            c.model.gf = 8
            c.data.pool_size, c.data.val_size = 8, 2
            c.data.real.repeat = 4
            c.data.cache_mb = 8000
            c.train.batch_size, c.train.steps, c.train.lr = 8, 1500, 5e-4
            c.train.eval_every, c.train.ckpt_every = 250, 250
            c.train.init_from = "deepstrain_jax/assets/models/vcn"
        else:
            c.model.input_shape = (16, 16, 1)
    elif arg == "paper":
        c.model.gf, c.model.depth = 64, 7
        c.train.batch_size, c.train.epochs, c.train.lr = 80, 1000, 5e-4
    return c
