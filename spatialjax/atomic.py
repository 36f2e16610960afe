"""Atomic file output: a kill at any moment leaves the complete old file or the complete new one.

Every writer here writes to a temporary file in the *same directory* as the target (so the
final ``os.replace`` is a rename within one file system, which POSIX makes atomic), flushes
and ``fsync``s it, then renames it over the target. A process killed before the rename leaves
the old file untouched (and at most a stray ``.<name>.tmp-*`` file, which readers ignore and
the next write of the same target removes); killed after it, the new file is complete.

Use these for every file a long run writes: checkpoints, tables, JSON, figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["atomic_path", "write_bytes", "write_text", "write_json", "write_frame", "save_figure"]


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. ``suffix``
    (default: the target's own suffix) lets writers that dispatch on the file ending (pandas,
    matplotlib) see the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by an earlier killed write
        with contextlib.suppress(OSError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix if suffix is None else suffix,
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates files readable by their owner only (0600); outputs get the usual
        # permissions a plain open() would give them (0666 less the umask).
        um = os.umask(0)
        os.umask(um)
        os.chmod(tmp, 0o666 & ~um)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj: Any, *, indent: int = 2, default: Callable | None = None) -> Path:
    """Serialise ``obj`` as JSON (NaN/inf are written as null: JSON has no such numbers) atomically."""
    text = json.dumps(_json_safe(obj), indent=indent, default=default, allow_nan=False)
    return write_text(path, text + "\n")


def write_frame(path, df, **kw) -> Path:
    """Write a pandas DataFrame to ``.csv`` or ``.parquet`` atomically (index not written by default)."""
    path = Path(path)
    kw.setdefault("index", False)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, **kw)
        elif path.suffix == ".csv":
            df.to_csv(tmp, **kw)
        else:
            raise ValueError(f"{path}: unsupported table format {path.suffix!r}; use .csv or .parquet")
    return path


def save_figure(fig, path, **kw) -> Path:
    """``fig.savefig`` atomically (format from the target's suffix)."""
    path = Path(path)
    kw.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, **kw)
    return path


def _json_safe(obj):
    """Replace non-finite floats by None, NumPy scalars/arrays by Python values (recursively)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray) or type(obj).__module__.startswith("jax"):
        return _json_safe(np.asarray(obj).tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj
