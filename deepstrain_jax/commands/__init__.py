"""Sub-commands of the ``deepstrain`` command line.

Each module here is one sub-command, named after the module with ``_`` written as ``-``
(``convert_weights.py`` -> ``deepstrain convert-weights``). A module provides:

* a docstring whose first line is the sub-command's one-line help;
* ``add_arguments(parser: argparse.ArgumentParser) -> None``;
* ``run(args: argparse.Namespace) -> int``: the exit status.

Bad input raises :class:`deepstrain_jax.errors.InputError`; the front-end prints its one-line message and exits
with status 2.
"""
