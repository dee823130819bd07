"""The ``deepstrain`` command line: one sub-command per module of :mod:`deepstrain_jax.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from deepstrain_jax import commands
from deepstrain_jax.errors import InputError
from deepstrain_jax.version import __version__
from deepstrain_jax.xla_flags import use_fast_cpu_convolutions


def _command_modules() -> dict[str, str]:
    names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))
    return {name.replace("_", "-"): f"{commands.__name__}.{name}" for name in names}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepstrain", description=__doc__)
    parser.add_argument("--version", action="version", version=f"deepstrain-jax {__version__}")
    # -v / -q on every sub-command (``deepstrain analyze IN --out OUT -q``).
    common = argparse.ArgumentParser(add_help=False)
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    loudness.add_argument("-q", "--quiet", action="store_true",
                          help="warnings and errors only: no progress bars or per-subject lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in _command_modules().items():
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or name).strip().splitlines()[0]
        p = sub.add_parser(name, help=summary, description=(module.__doc__ or summary).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    use_fast_cpu_convolutions()
    parser = build_parser()
    args = parser.parse_args(argv)
    from deepstrain_jax import console

    before = console.verbosity()
    console.set_verbosity(console.QUIET if args.quiet else console.VERBOSE if args.verbose else console.DEFAULT)
    try:
        return int(args._run(args) or 0)
    except InputError as e:
        print(f"deepstrain {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deepstrain {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:  # main() called from Python (tests, notebooks) leaves the caller's verbosity as it was
        console.set_verbosity(before)


if __name__ == "__main__":
    sys.exit(main())
