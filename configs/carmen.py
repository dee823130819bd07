"""CarMEN (motion) training config: ``--config=configs/carmen.py:cpu`` (or ``:smoke``, ``:paper``).

Loss: lambda_i intensity + lambda_a anatomical + lambda_s smoothness (the paper's 0.01 / 0.5 / 0.1), plus
lambda_epe x supervised end-point error where the truth is known (phantoms); ``lambda_epe = 0`` is the paper's
unsupervised training.
"""

from configs import common


def get_config(arg: str = "cpu"):
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
    elif arg == "paper":
        c.model.gf, c.model.depth = 64, 7
        c.train.batch_size, c.train.epochs, c.train.lr = 5, 300, 1e-4
    return c
