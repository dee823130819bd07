"""What long work says on the console: ``absl.logging`` messages and ``tqdm`` progress bars, one verbosity.

* :func:`set_verbosity`: ``-1`` quiet (warnings and errors only, no progress bars), ``0`` the default (progress
  and one line per finished item), ``1`` verbose (debug messages too). The ``deepstrain`` command sets it from
  ``-q`` / ``-v``; library users call it themselves (the default is 0).
* :func:`progress`: a ``tqdm`` bar on stderr for cohorts, phantom pools, training and evaluation. Bars are drawn
  only on a terminal; where stderr is a file or a pipe (batch jobs, SLURM logs, CI), or when quiet, there is no
  bar and the per-item lines of :func:`info` tell the same story, one line each.
* :func:`info`, :func:`warning`, :func:`debug`: ``absl.logging`` on the ``absl`` logger, written as plain
  messages (the CLI's format); while a bar is drawn they are written above it instead of through it. Other
  libraries' messages on that logger (Orbax's file operations) show only when verbose, or from WARNING up.

The first message or bar of a process that never called :func:`set_verbosity` sets the default verbosity (and
the plain-line handler on the ``absl`` logger).
"""

from __future__ import annotations

import logging as std_logging
import sys

from absl import logging
from tqdm import tqdm

QUIET, DEFAULT, VERBOSE = -1, 0, 1
_state = {"verbosity": DEFAULT, "configured": False}


class _BarSafeHandler(std_logging.StreamHandler):
    """Plain ``message`` lines on stderr, through ``tqdm.write``: above any open bar, so the bar stays whole (with
    no bar open it is a plain write)."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _OwnMessages(std_logging.Filter):
    """Other libraries log on the same ``absl`` logger (Orbax reports every file operation at INFO): below
    WARNING only this module's messages pass, unless verbose."""

    def filter(self, record) -> bool:
        return (record.levelno >= std_logging.WARNING or _state["verbosity"] >= VERBOSE
                or record.pathname == __file__)


_HANDLER = _BarSafeHandler()
_HANDLER.setFormatter(std_logging.Formatter("%(message)s"))
_HANDLER.addFilter(_OwnMessages())


def set_verbosity(level: int) -> None:
    """``-1`` quiet, ``0`` default, ``1`` verbose (module docstring). Routes ``absl.logging`` to plain lines."""
    if level not in (QUIET, DEFAULT, VERBOSE):
        raise ValueError(f"verbosity must be -1 (quiet), 0 or 1 (verbose), got {level}")
    _state["verbosity"] = level
    _state["configured"] = True
    logging.set_verbosity({QUIET: logging.WARNING, DEFAULT: logging.INFO, VERBOSE: logging.DEBUG}[level])
    logger = std_logging.getLogger("absl")
    if _HANDLER not in logger.handlers:
        logger.addHandler(_HANDLER)
        logger.propagate = False
    # absl's own stderr handler would print each message a second time (in its prefixed format).
    absl_handler = logging.get_absl_handler()
    if absl_handler in logger.handlers:
        logger.removeHandler(absl_handler)


def verbosity() -> int:
    return _state["verbosity"]


def _ensure() -> None:
    # A library user who never chose: the default verbosity, so progress lines show as they always did.
    if not _state["configured"]:
        set_verbosity(DEFAULT)


def info(msg: str, *args) -> None:
    _ensure()
    logging.info(msg, *args)


def warning(msg: str, *args) -> None:
    _ensure()
    logging.warning(msg, *args)


def debug(msg: str, *args) -> None:
    _ensure()
    logging.debug(msg, *args)


class _Bar:
    """A tqdm bar that counts its updates even when it is disabled (a disabled tqdm bar does not)."""

    def __init__(self, bar):
        self.bar = bar
        self.n = bar.n

    def __getattr__(self, name):
        return getattr(self.bar, name)

    def update(self, n: int = 1) -> None:
        self.n += n
        self.bar.update(n)

    def __iter__(self):
        try:
            yield from self.bar
        finally:
            self.bar.close()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0):
    """A progress bar over ``iterable`` (or ``total`` items updated by hand), drawn on a terminal only.

    Returns an object with tqdm's interface (``update``, ``set_postfix_str``, iteration, ``close``); usable as a
    context manager. Disabled (still counting) when quiet or when stderr is not a terminal.
    """
    _ensure()
    disable = _state["verbosity"] == QUIET or not _isatty(sys.stderr)
    return _Bar(tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, disable=disable,
                     file=sys.stderr, dynamic_ncols=True, leave=True))


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
