"""Write files and folders so that a crash, a bad input or a second writer never leaves a wrong result.

Files are written to a temporary sibling and renamed into place (``os.replace`` is atomic on POSIX when both
paths are on one filesystem). Folders are built under a temporary sibling name and renamed when complete; an
existing folder of the same name is only removed after the new one is complete.

Temporary names carry their owner: ``.NAME.p<pid>h<host>.<random>.partial`` (``.tmp...`` for files, ``.old``
for a folder being replaced), ``<host>`` a short hash of the host name. A process killed mid-write leaves such a
name behind; :func:`remove_stale` deletes the ones whose owner is no longer running on this host (others'
hosts and live owners are left alone), and :func:`atomic_directory` and :func:`claim` call it.

:func:`claim` makes one process the only writer of a path: an exclusive ``flock`` on ``.NAME.lock`` beside it,
holding the owner's pid. The kernel drops the lock when its owner dies, so a killed run never blocks the next
one; a second live writer gets :class:`~deepstrain_jax.errors.OutputBusyError` at once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from deepstrain_jax.errors import OutputBusyError

try:  # POSIX; elsewhere claims are not exclusive (documented in the README)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def _host_hash(host: str | None = None) -> str:
    return hashlib.sha1((host or socket.gethostname()).encode()).hexdigest()[:8]


def owner_tag() -> str:
    """``p<pid>h<host>``: who owns a temporary name (this process on this host)."""
    return f"p{os.getpid()}h{_host_hash()}"


_TEMP = re.compile(r"^\.(?P<name>.+)\.p(?P<pid>\d+)h(?P<host>[0-9a-f]{8})\.[^.]+\.(?:partial|old|tmp.*)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete the temporary files and folders in ``folder`` (of ``name`` only, if given) left by dead owners.

    An entry is stale when its owner tag names this host and a pid that is no longer running. Returns what
    was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, removed = _host_hash(), []
    for entry in folder.iterdir():
        m = _TEMP.match(entry.name)
        if m is None or (name is not None and m["name"] != name) or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _suffixes(path: Path) -> str:
    # Keep compound suffixes such as ".nii.gz" so that libraries choosing a format by name still work.
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp" + _suffixes(path),
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; a result file gets the permissions of an ordinary file (0666 less the umask).
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path``, on error it is removed.

    With ``overwrite`` an existing ``path`` is replaced only once the new folder is complete; without it an
    existing ``path`` raises ``FileExistsError`` before anything is written. Temporary folders of ``path`` left
    by a killed writer are removed first (:func:`remove_stale`).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; the finished folder is an ordinary one
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_held: dict[tuple[str, int], int] = {}  # (lock path, thread) -> depth: a claim is re-entrant in its thread
_held_lock = threading.Lock()


def _lock_path(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


def _owner_text(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def claim(path: str | os.PathLike) -> Iterator[Path]:
    """Be the only writer of ``path`` (a file or folder) for the duration of the block.

    Takes an exclusive, non-blocking ``flock`` on ``.NAME.lock`` beside ``path`` and writes the owner (pid,
    host, time) into it; raises :class:`~deepstrain_jax.errors.OutputBusyError` naming that owner when another
    live process holds it. Re-entrant within one thread. Stale temporary folders of ``path`` are removed once
    the claim is held. The lock file is removed on exit.
    """
    path = Path(path).absolute()
    lock = _lock_path(path)
    key = (os.fspath(lock), threading.get_ident())
    with _held_lock:
        if key in _held:
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _held_lock:
                _held[key] -= 1
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = None
    for _ in range(10):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise OutputBusyError(f"being written by another deepstrain process ({_owner_text(lock)}); wait "
                                  "for it to finish or choose another output", path) from None
        # The previous owner may have removed the lock file between our open and our flock: then we hold a
        # lock on a deleted file, which excludes nobody. Only a lock on the file at the path counts.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
        fd = None
    if fd is None:
        raise OutputBusyError("could not take the output lock (it keeps changing owner)", path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        with _held_lock:
            _held[key] = 1
        remove_stale(path.parent, path.name)
        yield path
    finally:
        with _held_lock:
            _held.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still holding it, so nobody can hold a lock on this inode
        os.close(fd)
