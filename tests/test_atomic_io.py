"""io/atomic.py: nothing half-written survives an error; complete results replace old ones."""

import pytest

from deepstrain_jax.io import atomic


def test_write_text_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "a.json"
    atomic.write_text(p, "one")
    atomic.write_text(p, "two")
    assert p.read_text() == "two"
    assert [q.name for q in p.parent.iterdir()] == ["a.json"]


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path):
    p = tmp_path / "a.nii.gz"
    atomic.write_bytes(p, b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(p) as tmp:
            assert tmp.name.endswith(".nii.gz")  # format-by-suffix libraries keep working
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["a.nii.gz"]


def test_atomic_directory_success_failure_and_overwrite(tmp_path):
    out = tmp_path / "patient001"
    with pytest.raises(ValueError):
        with atomic.atomic_directory(out) as d:
            (d / "x.txt").write_text("partial")
            raise ValueError("bad input")
    assert not out.exists() and list(tmp_path.iterdir()) == []

    with atomic.atomic_directory(out) as d:
        (d / "x.txt").write_text("first")
    assert (out / "x.txt").read_text() == "first"

    with pytest.raises(ValueError):
        with atomic.atomic_directory(out) as d:
            (d / "x.txt").write_text("second, never finished")
            raise ValueError("bad input")
    assert (out / "x.txt").read_text() == "first"

    with atomic.atomic_directory(out) as d:
        (d / "y.txt").write_text("second")
    assert sorted(p.name for p in out.iterdir()) == ["y.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["patient001"]

    with pytest.raises(FileExistsError):
        with atomic.atomic_directory(out, overwrite=False):
            pass


def test_results_get_ordinary_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        with atomic.atomic_directory(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
