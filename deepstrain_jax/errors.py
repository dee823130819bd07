"""Errors raised for bad user input.

Every problem with data a user hands us (a file, a folder, a header value) raises :class:`InputError`, whose
message names the file and the problem in one line. The command-line front-end prints that line and exits
with status 2; library callers can catch it.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input data: names the offending path (if any) and the problem."""

    def __init__(self, problem: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class OutputBusyError(InputError):
    """The output is being written by another live process (see :func:`deepstrain_jax.io.atomic.claim`)."""


def check_type(function: str, argument: str, value, types: tuple, accepts: str, hint: str = "") -> None:
    """Raise TypeError ``function(): argument must be <accepts>, got <type> <value>[; hint]`` unless ``value``
    is an instance of ``types`` (``bool`` is not taken for a number)."""
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        return
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        shown = f"of shape {tuple(value.shape)}"
    else:
        shown = " ".join(repr(value).split())
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
    kind = type(value).__module__ + "." + type(value).__qualname__ if type(value).__module__ != "builtins" \
        else type(value).__qualname__
    raise TypeError(f"{function}(): {argument} must be {accepts}, got {kind} {shown}" + (f"; {hint}" if hint else ""))
