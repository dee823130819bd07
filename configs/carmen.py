"""CarMEN (motion) training config: ``--config=configs/carmen.py:cpu`` (or ``:smoke``, ``:paper``, ``:ablation``).

Loss: lambda_i intensity + lambda_a anatomical + lambda_s smoothness (the paper's 0.01 / 0.5 / 0.1), plus
lambda_epe x supervised end-point error where the truth is known (phantoms); ``lambda_epe = 0`` is the paper's
unsupervised training.
"""

from configs import common


def get_config(arg: str = "cpu"):
    if arg == "ablation":
        return ablation_config()
    if arg in ("real", "real_smoke"):
        raise ValueError("configs/carmen.py has no real-data variant yet (real-cine motion training is issue 12); "
                         "use 'smoke', 'cpu', 'paper' or 'ablation'")
    c = common.base_config("carmen", arg)
    c.model.input_shape = (128, 128, 16, 2)
    c.loss = {"lambda_i": 0.01, "lambda_a": 0.5, "lambda_s": 0.1, "lambda_epe": 0.0, "intensity": "mse",
              "penalty": "l2", "legacy_softmax": False}
    c.data.identity_prob = 0.1
    c.train.best_metric = "epe_myo_mm"
    if arg == "smoke":
        common.smoke(c)
        c.model.input_shape = (32, 32, 8, 2)
        c.train.batch_size = 4
    elif arg == "cpu":
        c.model.gf = 12
        c.loss.lambda_epe = 0.05       # phantoms know the truth: a little supervision goes a long way
        c.train.batch_size, c.train.steps, c.train.lr = 4, 3000, 1e-3
        c.train.lr_decay = ((2000, 0.3),)  # the shipped CarMEN: 1e-3 to step 2000, then 3e-4
    elif arg == "paper":
        c.model.gf, c.model.depth = 64, 7
        c.train.batch_size, c.train.epochs, c.train.lr = 5, 300, 1e-4
    return c


def ablation_config():
    """``:ablation``: the lambda grid at a scale 2 CPU cores can afford (train/ablation.py, unsupervised).

    A quarter of the :cpu network's voxels (64 x 64 crop at 2.5 mm, 16 slices), width 8, 300 steps of batch 4 per
    cell, 12 training and 3 validation phantoms shared by every cell. Small enough for the 15-cell grid in about
    half an hour; the ranking of the cells, not their absolute errors, is what it measures.
    """
    c = get_config("cpu")
    c.variant = "ablation"
    c.model.gf = 8
    c.model.input_shape = (64, 64, 16, 2)
    c.data.crop, c.data.inplane_mm = 64, 2.5
    c.data.pool_size, c.data.val_size = 12, 3
    c.train.steps, c.train.lr, c.train.lr_decay = 300, 1e-3, ()
    c.train.eval_every = c.train.ckpt_every = 100
    return c
