"""Convert published DeepStrain Keras weights (HDF5) into a deepstrain-jax model folder.

Reads a Keras-2 weight file such as carson_Jan2021.h5 or carmen_Jan2021.h5 (no TensorFlow needed), maps it
onto the legacy network (detected from the weights, or given with --name), checks every shape, and writes
the model folder format of deepstrain_jax.io.checkpoints: OUT_DIR/model.json (the architecture, as
accepted by deepstrain_jax.models.build) and OUT_DIR/variables/ (Orbax checkpoint of params and
batch_stats). Load it with deepstrain_jax.io.checkpoints.load_variables(OUT_DIR). The SHA-256 of the
input file is printed, to record where the weights came from.

Example:
  deepstrain convert-weights carmen_Jan2021.h5 models/carmen_legacy
"""

from __future__ import annotations

import argparse
import hashlib
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", metavar="IN.h5", help="Keras HDF5 weight file")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="model folder to write")
    parser.add_argument("--name", choices=["carson", "carmen", "vcn"],
                        help="network (default: detected from the weights)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(args: argparse.Namespace) -> int:
    import jax

    from deepstrain_jax.errors import InputError
    from deepstrain_jax.io.checkpoints import save_variables
    from deepstrain_jax.models import architecture, build, count_variables
    from deepstrain_jax.models.keras_weights import infer_architecture, keras_to_variables, read_keras_h5

    if os.path.exists(args.out_dir) and not args.overwrite:
        raise InputError("already exists (use --overwrite to replace it)", args.out_dir)
    layers = read_keras_h5(args.weights)
    try:
        arch = infer_architecture(layers)
        if args.name:
            arch["name"] = args.name
        arch = architecture(arch)
        template = jax.eval_shape(build(arch)[0], jax.random.key(0))
        variables = keras_to_variables(layers, template)
    except ValueError as e:
        raise InputError(str(e), args.weights) from None
    out = save_variables(args.out_dir, variables, arch)
    print(f"{arch['name']} ({arch['family']}, gf {arch['gf']}, depth {arch['depth']}, input "
          f"{tuple(arch['input_shape'])}): {count_variables(variables):,} variables from "
          f"{os.path.basename(args.weights)} (sha256 {_sha256(args.weights)}) -> {out}")
    return 0
