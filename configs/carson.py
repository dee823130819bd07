"""CarSON (segmentation) training config: ``--config=configs/carson.py:cpu`` (or ``:smoke``, ``:paper``; the shipped model: ``:real``, then ``:real_ft``, then ``:real_ft2``)."""

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
    elif arg == "real_ft":
        # Stage 2 of the shipped CarSON: from stage 1 (:real), every slice of the stack is sampled, so the slices
        # above the valve and below the apex that carry no label teach "no heart here" (stage 1 sampled only
        # labelled slices and labelled the left atrium / outflow tract of basal slices as LV on training
        # patients 001, 012, 030, 066, 081: LV volume at ES up to 1.9x the manual one).
        c = get_config("real")
        c.variant = "real_ft"
        c.data.heart_only = False
        c.train.steps, c.train.lr = 1200, 3e-4
        c.train.lr_decay = ((800, 0.3),)
        c.train.max_minutes = 0.0
        c.train.init_from = "runs/real/carson/model"
        return c
    elif arg == "real_ft2":
        # Stage 3 (the shipped CarSON): from stage 2, phantoms weigh more (real x 2 instead of x 6: about 3 real
        # slices for 1 phantom slice), at a lower learning rate. Stage 2 had lost phantom accuracy (held-out
        # phantoms, ES Dice RV 0.88, myocardium 0.88 against 0.94 and 0.92 for the phantom-only CarSON).
        c = get_config("real_ft")
        c.variant = "real_ft2"
        c.data.real.repeat = 2
        c.train.steps, c.train.lr = 900, 1e-4
        c.train.lr_decay = ((600, 0.3),)
        c.train.init_from = "runs/real/carson_ft/model"
        return c
    elif arg == "real_v2":
        # carson-acdc-v2: from the shipped carson-acdc-v1, a long run on every slice of the stack now that a
        # step costs a fifth of what it did (augmentation fix): 10000 steps of 16 slices, real x 3 against 8 + 8
        # phantoms, step decay at 6000 and 8500. Planned before any held-out number was seen; the final state
        # ships (no checkpoint choice).
        c = get_config("real_ft")
        c.variant = "real_v2"
        c.data.real.repeat = 3
        c.train.steps, c.train.lr = 10000, 3e-4
        c.train.lr_decay = ((6000, 0.3), (8500, 0.3))
        c.train.max_minutes = 75.0
        c.train.eval_every, c.train.ckpt_every = 500, 500
        c.train.init_from = "deepstrain_jax/assets/models/carson"
        return c
    elif arg == "real_v3":
        # carson-acdc-v3: from carson-acdc-v2, 6000 steps with blood-pool dimming (augment.blood_pool_prob: a
        # quarter of the slices get a darkened LV cavity, half of those the RV too, down to 0.3-0.8 of its
        # intensity), the slow-flow look of dilated, poorly contracting hearts that v2 labels myocardium.
        # Rule fixed before training: the final state ships if, on the 40 held-out phantoms, no class loses
        # more than 0.005 mean Dice at ED or ES against v2; otherwise v2 stays. Held-out patients are measured
        # after that decision, once.
        # Outcome: RV and LV at ED lost 0.010 and 0.006 on the held-out phantoms: not shipped, not measured on the
        # held-out patients (docs/experiments/carson_v3/).
        c = get_config("real_v2")
        c.variant = "real_v3"
        c.augment.blood_pool_prob = 0.25
        c.augment.blood_pool_factor = (0.3, 0.8)
        c.train.steps, c.train.lr = 6000, 2e-4
        c.train.lr_decay = ((4000, 0.3), (5200, 0.3))
        c.train.max_minutes = 60.0
        return c
    elif arg == "real_v4":
        # A gentler try after real_v3 failed its phantom rule (RV and LV lost Dice at ED): from carson-acdc-v2,
        # 3000 steps at 1e-4 (x 0.3 at 2000), the LV cavity alone dimmed (never the RV), in 15 % of the slices,
        # to 0.35-0.8 of its intensity. The same rule, fixed before training: the final state ships if no class
        # loses more than 0.005 mean Dice at ED or ES on the 40 held-out phantoms; held-out patients after that.
        # Outcome: RV and myocardium at ES lost 0.009 and 0.005: not shipped (docs/experiments/carson_v4/).
        c = get_config("real_v3")
        c.variant = "real_v4"
        c.augment.blood_pool_prob = 0.15
        c.augment.blood_pool_factor = (0.35, 0.8)
        c.augment.blood_pool_rv_prob = 0.0
        c.train.steps, c.train.lr = 3000, 1e-4
        c.train.lr_decay = ((2000, 0.3),)
        c.train.max_minutes = 40.0
        return c
    elif arg == "real_v4_control":
        # The control the two blood-pool candidates lacked: real_v4's schedule and data without the dimming
        # (run with --config.seed=0 and =1), to measure how far continued training from carson-acdc-v2 moves
        # the held-out phantom Dice by itself. Rule, fixed before these runs: real_v4 (re-run, seed 0) ships if,
        # on the 40 held-out phantoms, no class at ED or ES is more than 0.005 below the lower of the two
        # controls, and on the 25 training patients (ED and ES, manual labels) no class loses more than 0.01
        # mean Dice against carson-acdc-v2. Held-out patients are measured after that decision, once, and
        # reported whichever way it went.
        # Outcome: real_v4 missed both parts (phantom LV at ES 0.0059 below the lower control; training patients'
        # RV at ES -0.0134): not shipped. The controls themselves move the phantom Dice by up to 0.011 (seed alone)
        # (docs/experiments/carson_control/).
        c = get_config("real_v4")
        c.variant = "real_v4_control"
        c.augment.blood_pool_prob = 0.0
        return c
    elif arg in ("real", "real_smoke"):
        # Real ACDC (25 training patients, labelled + h5 forms) x 6 against 8 + 8 phantoms (models A and B):
        # about 6 real slices for 1 phantom slice. Warm start from the phantom-trained shipped CarSON.
        common.real_mixture(c, arg == "real_smoke")
        if arg == "real":
            c.model.gf = 12
            c.loss.ce_weight = 0.5
            c.data.pool_size, c.data.val_size = 8, 2
            c.data.real.repeat = 6
            c.data.cache_mb = 12000
            c.data.loader_threads = 2
            c.data.train_crop = 96     # 120 mm windows around the heart (a multiple of 32): 1.8x cheaper steps
            c.train.batch_size, c.train.steps, c.train.lr = 16, 3600, 1e-3
            c.train.lr_decay = ((2400, 0.3), (3100, 0.3))
            c.train.max_minutes = 110.0
            c.train.eval_every, c.train.ckpt_every = 250, 250
            c.train.init_from = "deepstrain_jax/assets/models/carson"
        else:
            c.model.input_shape = (32, 32, 1)
    elif arg == "paper":
        c.model.gf, c.model.depth = 64, 7
        c.train.batch_size, c.train.epochs, c.train.lr = 80, 1000, 5e-4
    return c
