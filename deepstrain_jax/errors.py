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
