"""Fields shared by the three training configs (see README, "Training")."""

from __future__ import annotations

import ml_collections

from deepstrain_jax.phantom.params import PHENOTYPES

# The fixed patient-level split of real ACDC (issue 11): never trained on, never used to pick a checkpoint, in
# any form. deepstrain_jax.data.acdc_real.HELD_OUT is the same list (tests/test_acdc_real.py checks both).
HELD_OUT = ("006", "007", "008", "033", "039", "059", "078", "080", "087", "093")
VARIANTS = ("smoke", "cpu", "paper", "real", "real_ft", "real_ft2", "real_v2", "real_v3", "real_v4",
            "real_v4_control", "real_smoke")


def base_config(task: str, arg: str) -> ml_collections.ConfigDict:
    """The skeleton every config fills: task, seed, model, data, augment, loss, train."""
    if arg not in VARIANTS:
        raise ValueError(f"config argument must be one of {VARIANTS}, got {arg!r}")
    c = ml_collections.ConfigDict()
    c.task = task
    c.variant = arg
    c.seed = 0

    c.model = ml_collections.ConfigDict({"name": task, "family": "v2", "gf": 16, "depth": 5,
                                         "dtype": "float32", "kernel_3d": False, "slice_mix": False})

    c.data = ml_collections.ConfigDict()
    c.data.source = "phantom"          # "phantom" (made on the fly), "acdc" (an ACDC-layout folder) or "mixture"
    # "mixture": real ACDC (data.real) plus phantoms of each of data.phantom_models (data.pool_size each).
    c.data.real = ml_collections.ConfigDict({
        "root": "../shared/data/acdc",  # relative to the repository root, or absolute
        "forms": ("labelled", "h5"),    # a patient in several forms is used once, in the first form listed
        "held_out": HELD_OUT,
        "repeat": 1,                    # the real pool's weight in the mixture (copies of it)
    })
    c.data.phantom_models = ("A",)
    c.data.train_crop = 0              # CarSON: > 0 trains on the central window of that size (0: the whole crop)
    c.data.root = ""                   # ACDC-layout folder when source == "acdc"
    c.data.val_root = ""               # optional separate validation folder (default: phantoms / a split)
    c.data.pool_size = 40              # phantom subjects (made lazily, cached)
    c.data.val_size = 5                # held-out phantom subjects (their own seed)
    c.data.val_seed = 10_000
    c.data.cache_dir = ""              # disk cache of pre-processed subjects ("" -> <workdir>/data_cache)
    c.data.phenotypes = PHENOTYPES
    c.data.phantom_model = "A"
    c.data.snr = (10.0, 40.0)
    c.data.n_frames = 0                # 0 -> drawn per subject (25-30)
    c.data.crop = 128
    c.data.n_slices = 16
    c.data.inplane_mm = 1.25
    c.data.centre_jitter_mm = 5.0
    c.data.acquisition = {}            # fixed phantom.scanner.Acquisition fields (default: drawn per subject)
    c.data.cache_mb = 2048             # in-memory subject cache (a default phantom subject is ~110 MB)
    c.data.prefetch_subjects = False   # build every subject before the first step (progress on stderr)
    c.data.prefetch_workers = 1        # processes for that (rendering runs on the CPU in them)
    c.data.loader_threads = 1          # host batches prepared this many steps ahead, in threads

    c.augment = ml_collections.ConfigDict({"enabled": True, "rotation_deg": 180.0, "translation_vox": 10.0,
                                           "mirror_prob": 0.5, "gamma": (0.7, 1.5)})

    c.loss = ml_collections.ConfigDict()

    c.train = ml_collections.ConfigDict()
    c.train.parallel = "jit"           # "jit" (one-axis data mesh) or "pmap"
    c.train.batch_size = 8
    c.train.steps = 1000
    c.train.max_minutes = 0.0          # > 0: stop (evaluate, save, export) once this much wall time has passed
    c.train.epochs = 0                 # > 0: steps = epochs * ceil(examples / batch_size) instead of `steps`
    c.train.lr = 5e-4
    c.train.lr_decay = ()              # ((step, factor), ...): lr x factor from that step on
    c.train.b1 = 0.9
    c.train.b2 = 0.999
    c.train.log_every = 10
    c.train.eval_every = 200
    c.train.eval_batches = 4
    c.train.ckpt_every = 200
    c.train.keep = 2
    c.train.best_metric = "loss"        # "" : no checkpoint choice, the final state is exported
    c.train.init_from = ""             # a model folder to start from (same architecture), e.g. a shipped model
    c.train.best_mode = "min"
    return c


def smoke(c: ml_collections.ConfigDict) -> None:
    """Tiny everything: a few steps on two small phantoms (tests)."""
    c.model.gf, c.model.depth = 4, 3
    c.data.pool_size, c.data.val_size = 2, 1
    c.data.n_frames = 6
    c.data.crop, c.data.n_slices = 32, 8
    c.data.inplane_mm = 5.0
    # Coarse, fast renders (about a second a subject).
    c.data.acquisition = {"matrix": (40, 40), "pixel_mm": 5.0, "n_slices": 6, "slice_thickness_mm": 10.0,
                          "slice_spacing_mm": 12.0, "supersample_inplane": 1, "supersample_slice": 1}
    c.train.batch_size = 4
    c.train.steps = 4
    c.train.log_every = 1
    c.train.eval_every = 2
    c.train.eval_batches = 1
    c.train.ckpt_every = 2


# Real-data augmentation (issue 11): what real cine-MRI varies in beyond the phantoms.
REAL_AUGMENT = {"rotation_deg": 180.0, "translation_vox": 10.0, "mirror_prob": 0.5, "gamma": (0.6, 1.6),
                "scale": (0.8, 1.25), "elastic_vox": 3.0, "contrast": (0.7, 1.4), "bias_field": 0.3,
                "blur_sigma_vox": (0.0, 1.0), "lowres_prob": 0.3, "lowres_factor": (1.0, 2.0),
                "noise_std": (0.0, 0.05), "slice_mix_prob": 0.3}


def real_mixture(c: ml_collections.ConfigDict, smoke_run: bool = False) -> None:
    """Train on real ACDC plus phantoms of both geometry models, with the real-data augmentation."""
    c.data.source = "mixture"
    c.data.phantom_models = ("A", "B")
    c.augment.update(REAL_AUGMENT)
    c.train.best_metric = ""           # the held-out patients never pick a checkpoint: the final state ships
    if smoke_run:
        smoke(c)
        c.data.real.forms = ("h5",)
        c.data.phantom_models = ()
        c.train.steps = 6
