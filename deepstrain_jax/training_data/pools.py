"""Pools of training subjects: phantoms made on first use, or ACDC-layout folders, behind a bounded cache.

A pool is a sequence of :class:`deepstrain_jax.training_data.subjects.Subject`: ``len(pool)`` and ``pool[i]``. Subject
``i`` is a pure function of the pool's settings and ``i``, so the batch samplers can draw it at any step and a
resumed run sees the same data.

* :class:`PhantomPool`: subject ``i`` is ``make_case(patient_seed(seed, i), phenotypes[i % len(phenotypes)],
  **make_case_kwargs)`` (:mod:`deepstrain_jax.phantom.dataset`), the same patient as ``generate_dataset(seed=seed)``
  writes as ``patient{i+1:03d}``. ``size`` may be huge: nothing is made until it is asked for.
* :class:`AcdcPool`: the patient folders under a root (real ACDC or written phantoms), sorted by path.

Caching: an in-memory LRU bounded by ``cache_mb`` (the most recently used subject is always kept), and with
``cache_dir`` an on-disk ``.npz`` per subject under ``cache_dir/<kind>-<key>/`` where ``key`` hashes every
setting that changes the subject (so runs with other settings never read each other's files). Files are written
atomically, so a killed run leaves no partial file and a resumed run reuses what is there. Rendering one phantom
takes seconds to tens of seconds: fill the cache up front with :meth:`prefetch`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from deepstrain_jax import console
from deepstrain_jax.data import acdc, acdc_real
from deepstrain_jax.io.atomic import atomic_path, write_text
from deepstrain_jax.phantom import dataset
from deepstrain_jax.training_data import subjects as sj

CACHE_FORMAT = "deepstrain-subject/1"


def _nbytes(s: sj.Subject) -> int:
    return sum(np.asarray(v).nbytes for v in s if isinstance(v, np.ndarray))


def _check_index(i, n: int) -> int:
    """Subject index ``i`` of a pool of ``n`` (negative from the end) as a plain int; TypeError / IndexError."""
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"subject index must be an integer, got {i!r}")
    i = int(i) + n if i < 0 else int(i)
    if not 0 <= i < n:
        raise IndexError(f"subject {i} outside [0, {n})")
    return i


class CachedPool:
    """Shared machinery: ``__getitem__`` through the memory LRU, then the disk cache, then :meth:`_build`.

    A new source of subjects subclasses it with a ``kind`` (a short name), ``__len__``, ``_settings()`` (a
    JSON-able dict of everything that changes its subjects, hashed into the cache key) and ``_build(i)``.
    """

    kind = "pool"
    has_motion_truth = False

    def __init__(self, cfg: sj.SubjectConfig = sj.SubjectConfig(), cache_dir=None, cache_mb: float = 2048):
        self.cfg = sj.check_config(cfg)
        if not cache_mb >= 0:
            raise ValueError(f"cache_mb must be >= 0, got {cache_mb}")
        self.cache_bytes = float(cache_mb) * 2 ** 20
        self._lru: collections.OrderedDict[int, sj.Subject] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.cache_dir = None if cache_dir is None else Path(cache_dir) / f"{self.kind}-{self._key()}"
        self.build_seconds: list[float] = []

    # -- to be provided by the pools ---------------------------------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def _settings(self) -> dict:
        raise NotImplementedError

    def _build(self, i: int) -> sj.Subject:
        raise NotImplementedError

    # -- caching -------------------------------------------------------------------------------------------------
    def _key(self) -> str:
        text = json.dumps({"format": CACHE_FORMAT, "cfg": self.cfg._asdict(), **self._settings()}, sort_keys=True,
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _path(self, i: int) -> Path:
        return self.cache_dir / f"subject_{i:07d}.npz"

    def _remember(self, i: int, s: sj.Subject) -> None:
        with self._lock:
            self._lru[i] = s
            self._lru.move_to_end(i)
            total = sum(_nbytes(v) for v in self._lru.values())
            while len(self._lru) > 1 and total > self.cache_bytes:
                _, old = self._lru.popitem(last=False)
                total -= _nbytes(old)

    def _check_index(self, i) -> int:
        return _check_index(i, len(self))

    def __getitem__(self, i) -> sj.Subject:
        i = self._check_index(i)
        with self._lock:
            s = self._lru.get(i)
            if s is not None:
                self._lru.move_to_end(i)
                return s
        s = self._load(i)
        if s is None:
            start = time.perf_counter()
            s = self._build(i)
            self.build_seconds.append(time.perf_counter() - start)
            self._save(i, s)
        self._remember(i, s)
        return s

    def _load(self, i: int) -> sj.Subject | None:
        if self.cache_dir is None or not self._path(i).is_file():
            return None
        try:
            with np.load(self._path(i), allow_pickle=False) as z:
                return sj.subject_from_arrays({k: z[k] for k in z.files})
        except Exception:  # a damaged cache file (disk full, foreign file): rebuild it
            return None

    def _save(self, i: int, s: sj.Subject) -> None:
        if self.cache_dir is None:
            return

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        info = self.cache_dir / "pool.json"
        if not info.is_file():
            write_text(info, json.dumps({"format": CACHE_FORMAT, "kind": self.kind, "cfg": self.cfg._asdict(),
                                         **self._settings()}, indent=1, default=str) + "\n")
        with atomic_path(self._path(i)) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **sj.subject_to_arrays(s))

    def prefetch(self, indices: Iterable[int] | None = None,
                 progress: Callable[[int, int, float], None] | bool | None = True, workers: int = 1) -> None:
        """Make (or load) the subjects ``indices`` (default: all) so that later draws hit the cache.

        With a ``cache_dir`` every subject lands on disk; the memory LRU keeps what fits in ``cache_mb`` (without
        a ``cache_dir``, prefetching more than fits in memory only wastes work).
        ``progress(done, total, seconds_each)`` is called after each subject (``seconds_each`` is wall time per
        subject); ``True``: a progress bar on a terminal (:func:`deepstrain_jax.console.progress`) and one line
        when all are ready.

        ``workers > 1`` builds the missing subjects in that many spawned processes (CPU-only JAX, so they
        never claim an accelerator) that write them into the disk cache, which is then required; nothing is
        loaded into memory by the parent.
        """
        indices = list(range(len(self))) if indices is None else [self._check_index(i) for i in indices]
        total = len(indices)
        bar = None
        if progress is True:
            bar = console.progress(total=total, desc=f"{self.kind} subjects", unit="subject")
            report = lambda done, total, each: bar.update(1)  # noqa: E731
        else:
            report = progress or None
        start = time.perf_counter()
        try:
            self._prefetch(indices, report, workers, total, start)
        finally:
            if bar is not None:
                bar.close()
                console.info("%s: %d subjects ready (%.1f s each)", self.kind, total,
                             (time.perf_counter() - start) / max(total, 1))

    def _prefetch(self, indices, report, workers: int, total: int, start: float) -> None:
        if workers > 1:
            if self.cache_dir is None:
                raise ValueError("prefetch(workers > 1) needs a cache_dir: the workers hand subjects over on disk")

            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                        initializer=_cpu_only_worker) as ex:
                futures = [ex.submit(_build_into_cache, self, i) for i in indices]
                for done, f in enumerate(concurrent.futures.as_completed(futures), start=1):
                    f.result()
                    if report is not None:
                        report(done, total, (time.perf_counter() - start) / done)
            return
        for done, i in enumerate(indices, start=1):
            self[i]
            if report is not None:
                report(done, total, (time.perf_counter() - start) / done)

    def __getstate__(self):
        # Sent to prefetch workers: settings only, not the lock or the cached subjects.
        state = dict(self.__dict__)
        state.pop("_lock")
        state["_lru"] = collections.OrderedDict()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]


def _cpu_only_worker() -> None:
    os.environ["JAX_PLATFORMS"] = "cpu"


def _build_into_cache(pool: CachedPool, i: int) -> None:
    if not pool._path(i).is_file():
        pool._save(i, pool._build(i))


class PhantomPool(CachedPool):
    """``size`` phantom subjects made lazily from ``seed`` (module docstring).

    Args:
      seed: master seed (>= 0); subject ``i`` has seed ``patient_seed(seed, i)``.
      size: number of subjects (may be huge).
      cfg: :class:`~deepstrain_jax.training_data.subjects.SubjectConfig`.
      phenotypes: the cycle of phenotypes (default all five of ``dataset.PHENOTYPES``).
      cache_dir: folder for the ``.npz`` disk cache, or ``None``.
      cache_mb: bound of the in-memory cache in MiB.
      **make_case_kwargs: passed to ``dataset.make_case`` (``model``, ``n_frames``, ``snr``, ``oblique``,
        acquisition fields such as ``supersample_inplane``...).
    """

    kind = "phantom"
    has_motion_truth = True

    def __init__(self, seed: int, size: int, *, cfg: sj.SubjectConfig = sj.SubjectConfig(),
                 phenotypes: Sequence[str] | None = None, cache_dir=None, cache_mb: float = 2048,
                 **make_case_kwargs):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self.seed, self.size = int(seed), int(size)
        self.phenotypes = tuple(dataset.check_phenotype(p) for p in (phenotypes or dataset.PHENOTYPES))
        self.make_case_kwargs = dict(make_case_kwargs)
        super().__init__(cfg, cache_dir, cache_mb)

    def __len__(self) -> int:
        return self.size

    def _settings(self) -> dict:
        # size is left out: subject i does not depend on it, so pools of different sizes share a cache.
        return {"seed": self.seed, "phenotypes": list(self.phenotypes), "make_case": self.make_case_kwargs}

    def phenotype(self, i: int) -> str:
        return self.phenotypes[self._check_index(i) % len(self.phenotypes)]

    def _build(self, i: int) -> sj.Subject:
        seed = dataset.patient_seed(self.seed, i)
        case = dataset.make_case(seed, self.phenotype(i), **self.make_case_kwargs)
        return sj.subject_from_phantom(case, self.cfg, name=f"phantom {i} (seed {seed}, {self.phenotype(i)})")


class AcdcPool(CachedPool):
    """The ACDC-layout patient folders under ``root`` as subjects (real ACDC or written phantoms).

    Args:
      root: a patient folder or a folder above patient folders (searched recursively; hidden folders skipped).
      cfg: :class:`~deepstrain_jax.training_data.subjects.SubjectConfig`.
      slice_order: hint for the stored slice order (see :func:`~deepstrain_jax.training_data.subjects.subject_from_acdc`).
      use_truth: use phantom truth sidecars where present (labels of every frame, ``u_mm``).
      jitter_seed: with ``cfg.centre_jitter_mm > 0``, subject ``i`` jitters with seed ``[jitter_seed, i]``.
      cache_dir, cache_mb: as :class:`PhantomPool`. The disk cache is keyed by the folders' absolute paths and
        the settings, not by file contents: clear it after editing the data.
    """

    kind = "acdc"

    def __init__(self, root, *, cfg: sj.SubjectConfig = sj.SubjectConfig(), slice_order: str | None = None,
                 use_truth: bool = True, jitter_seed: int = 0, cache_dir=None, cache_mb: float = 2048):
        self.root = Path(root).absolute()
        self.folders = acdc.find_patient_folders(self.root)
        if slice_order is not None and slice_order not in sj.SLICE_ORDERS:
            raise ValueError(f"slice_order must be one of {sj.SLICE_ORDERS} or None, got {slice_order!r}")
        self.slice_order, self.use_truth, self.jitter_seed = slice_order, bool(use_truth), int(jitter_seed)
        self.has_motion_truth = self.use_truth and any(sj.has_phantom_truth(f) for f in self.folders)
        super().__init__(cfg, cache_dir, cache_mb)

    def __len__(self) -> int:
        return len(self.folders)

    def _settings(self) -> dict:
        return {"folders": [os.fspath(f) for f in self.folders], "slice_order": self.slice_order,
                "use_truth": self.use_truth, "jitter_seed": self.jitter_seed}

    def _build(self, i: int) -> sj.Subject:
        return sj.subject_from_acdc(self.folders[i], self.cfg, slice_order=self.slice_order,
                                    use_truth=self.use_truth, jitter_seed=[self.jitter_seed, i])


class RealAcdcPool(CachedPool):
    """Real ACDC cases of the forms in ``shared/data/acdc`` (:mod:`deepstrain_jax.data.acdc_real`) as subjects.

    Args:
      refs: the :class:`~deepstrain_jax.data.acdc_real.CaseRef` list (``acdc_real.find_cases``), in pool order.
      held_out: patient numbers that must not be in ``refs`` (the training side of the split; checked).
      cfg: :class:`~deepstrain_jax.training_data.subjects.SubjectConfig` (``centre="fov"`` for unlabelled cines).
      jitter_seed: with ``cfg.centre_jitter_mm > 0``, subject ``i`` jitters with seed ``[jitter_seed, i]``.
      cache_dir, cache_mb: as :class:`PhantomPool` (keyed by the files' absolute paths and the settings).
      labeller: optional automatic labels for the frames without manual labels (the CarMEN anatomical loss on
        full-cycle cines, issue 12): a picklable callable ``labeller(case) -> {frame: (X, Y, Z) labels}`` on
        the case's native grid, with a ``key`` attribute (a string naming it, e.g. its models' hashes) that
        enters the cache key. Manual labels are never replaced.
    """

    kind = "acdc-real"

    def __init__(self, refs, *, held_out=(), cfg: sj.SubjectConfig = sj.SubjectConfig(), jitter_seed: int = 0,
                 cache_dir=None, cache_mb: float = 2048, labeller=None):
        self.refs = list(refs)
        if not self.refs:
            raise ValueError("a real-data pool needs at least one case")
        acdc_real.check_split(self.refs, held_out)
        self.jitter_seed = int(jitter_seed)
        if labeller is not None and not isinstance(getattr(labeller, "key", None), str):
            raise TypeError("labeller must be a callable with a string 'key' attribute")
        self.labeller = labeller
        super().__init__(cfg, cache_dir, cache_mb)

    def __len__(self) -> int:
        return len(self.refs)

    def _settings(self) -> dict:
        settings = {"refs": [[r.form, r.number, [os.fspath(Path(p).absolute()) for p in r.paths]] for r in self.refs],
                    "jitter_seed": self.jitter_seed, "nominal_spacing_mm": list(acdc_real.NOMINAL_SPACING_MM)}
        if self.labeller is not None:  # absent otherwise: the cache keys of pools without one are unchanged
            settings["labeller"] = self.labeller.key
        return settings

    def patients(self) -> list[str]:
        """The patient numbers of the pool, in order (for the split checks)."""
        return [r.number for r in self.refs]

    def _build(self, i: int) -> sj.Subject:
        case = acdc_real.read_case(self.refs[i])
        if self.labeller is not None:
            auto = {int(t): np.asarray(v, np.uint8) for t, v in self.labeller(case).items()
                    if int(t) not in case.labels}
            case = case._replace(labels={**auto, **case.labels})
        return sj.subject_from_real_case(case, self.cfg, jitter_seed=[self.jitter_seed, i])


class MixturePool:
    """Several pools as one: pool ``k`` appears ``repeats[k]`` times, so a uniform draw over the mixture takes
    its subjects ``repeats[k] * len(pool_k)`` times out of every ``sum_j repeats[j] * len(pool_j)``.

    Index ``i`` maps to ``(k, j)`` in order: the copies of pool 0, then of pool 1, ... ``pool[i]`` is that
    pool's subject ``j``, so a mixture is as deterministic as its parts.
    """

    def __init__(self, pools: Sequence, repeats: Sequence[int] | None = None):
        self.pools = list(pools)
        if not self.pools:
            raise ValueError("a mixture needs at least one pool")
        self.repeats = [1] * len(self.pools) if repeats is None else [int(r) for r in repeats]
        if len(self.repeats) != len(self.pools) or any(r < 0 for r in self.repeats) or not any(
                r * len(p) for r, p in zip(self.repeats, self.pools)):
            raise ValueError(f"repeats {list(repeats or [])} must be one non-negative count per pool, not all 0")
        self._bounds = np.cumsum([r * len(p) for r, p in zip(self.repeats, self.pools)])
        self.has_motion_truth = any(getattr(p, "has_motion_truth", False) for p in self.pools)

    def __len__(self) -> int:
        return int(self._bounds[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """``(pool, index in that pool)`` of mixture subject ``i``."""
        i = _check_index(i, len(self))
        k = int(np.searchsorted(self._bounds, i, side="right"))
        start = 0 if k == 0 else int(self._bounds[k - 1])
        return k, (i - start) % len(self.pools[k])

    def __getitem__(self, i) -> sj.Subject:
        k, j = self.locate(i)
        return self.pools[k][j]

    def prefetch(self, indices=None, progress=True, workers: int = 1) -> None:
        for p in self.pools:
            if hasattr(p, "prefetch"):
                p.prefetch(progress=progress, workers=workers)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
