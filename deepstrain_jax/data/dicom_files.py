"""Which files and folders hold DICOM: the magic bytes, and a bounded walk of a folder (no DICOM parsing here)."""

from __future__ import annotations

import os

MAX_DEPTH = 3  # folders below the given one searched for DICOM files


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file with the DICOM magic ``DICM`` at byte 128 (reads 132 bytes, parses nothing)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:  # missing, a folder, unreadable
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def walk_files(folder: str, max_depth: int = MAX_DEPTH):
    """Yield the files under ``folder`` (sorted, hidden entries skipped) down to ``max_depth`` folders below."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    subfolders = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_file():
                yield entry.path
            elif entry.is_dir():
                subfolders.append(entry.path)
        except OSError:
            continue
    if max_depth > 0:
        for sub in subfolders:
            yield from walk_files(sub, max_depth - 1)


def is_dicom_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding at least one DICOM file (:func:`is_dicom_file`), directly or up to
    :data:`MAX_DEPTH` folders below, hidden entries skipped. Stops at the first DICOM file found."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return False
    return any(is_dicom_file(f) for f in walk_files(path))
