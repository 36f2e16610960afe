"""Input checks shared by all models. They run eagerly (outside ``jit``) on concrete values;
under tracing they are skipped, since the values are not known then."""

from __future__ import annotations

import numpy as np
import jax

from spatialjax.errors import ParameterError


def is_traced(x) -> bool:
    """True when ``x`` is an abstract value under ``jit``/``vmap``/``grad`` (no concrete number)."""
    return isinstance(x, jax.core.Tracer)


def _concrete(x):
    """Return a NumPy array if ``x`` is concrete, else ``None`` (a tracer)."""
    if is_traced(x):
        return None
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - abstract values
        return None


def _where(mask: np.ndarray) -> str:
    """' at index 0, 3' for arrays (first three offending positions); '' for scalars."""
    if mask.ndim == 0:
        return ""
    idx = np.argwhere(mask)[:3]
    pos = [str(int(i[0])) if len(i) == 1 else str(tuple(int(j) for j in i)) for i in idx]
    return " at index " + ", ".join(pos)


def _values(a: np.ndarray, mask: np.ndarray) -> str:
    if a.ndim == 0:
        return repr(a.item())
    return ", ".join(repr(v) for v in a[mask][:3].tolist())


def check_finite(name: str, x) -> None:
    a = _concrete(x)
    if a is not None and not np.all(np.isfinite(a)):
        bad = ~np.isfinite(a)
        raise ParameterError(name, f"must be finite; got {_values(a, bad)}{_where(bad)}")


def check_positive(name: str, x, *, strict: bool = True) -> None:
    check_finite(name, x)
    a = _concrete(x)
    if a is None:
        return
    bad = a <= 0 if strict else a < 0
    if np.any(bad):
        rel = "> 0" if strict else ">= 0"
        raise ParameterError(name, f"must be {rel}; got {_values(a, bad)}{_where(bad)}")


def check_interval(name: str, x, lo=None, hi=None, *, lo_open=True, hi_open=True) -> None:
    check_finite(name, x)
    a = _concrete(x)
    if a is None:
        return
    ok = np.ones(np.shape(a), bool)
    if lo is not None:
        ok &= (a > lo) if lo_open else (a >= lo)
    if hi is not None:
        ok &= (a < hi) if hi_open else (a <= hi)
    if not np.all(ok):
        lb = ("(" if lo_open else "[") + (str(lo) if lo is not None else "-inf")
        ub = (str(hi) if hi is not None else "inf") + (")" if hi_open else "]")
        raise ParameterError(name, f"must lie in {lb}, {ub}; got {_values(a, ~ok)}{_where(~ok)}")


def check_shape(name: str, x, shape: tuple) -> None:
    s = tuple(np.shape(x))
    if s != tuple(shape):
        raise ParameterError(name, f"must have shape {tuple(shape)}; got {s}")


# ---------------------------------------------------------------------------------------
# Validate an immutable parameter object once
# ---------------------------------------------------------------------------------------

import weakref  # noqa: E402

_PASSED: dict = {}      # id(obj) -> (weakref to obj, ids of its leaves, the check)
_PASSED_MAX = 4096


def _immutable_leaves(obj):
    """The leaves of ``obj`` if every one is a concrete ``jax.Array`` or a Python scalar
    (immutable values), else ``None`` (a NumPy array can be changed in place after a check)."""
    leaves = jax.tree_util.tree_leaves(obj)
    for x in leaves:
        if is_traced(x) or not (isinstance(x, jax.Array) or isinstance(x, (bool, int, float, complex, str))):
            return None
    return leaves


def check_once(obj, check) -> None:
    """Run ``check(obj)`` unless this very object already passed it.

    Entry checks of a public solve run on every call (``eqx.tree_at`` builds parameter objects
    without their constructor), which costs a host transfer per field: for sub-millisecond solves
    called in a loop with the same parameters that dominates. An ``eqx.Module`` whose leaves are
    all ``jax.Array`` (immutable) cannot change after it passed, so the result is remembered by
    object identity (a weak reference: an id reused by a new object is not mistaken for it). An
    object with a NumPy leaf, a tracer, or that cannot be weakly referenced is checked every time.
    """
    key = id(obj)
    hit = _PASSED.get(key)
    if hit is not None and hit[0]() is obj and hit[2] is check:
        leaves = _immutable_leaves(obj)
        if leaves is not None and tuple(map(id, leaves)) == hit[1]:
            return
    check(obj)
    leaves = _immutable_leaves(obj)
    if leaves is None:
        return
    try:
        ref = weakref.ref(obj, lambda _r, k=key: _PASSED.pop(k, None))
    except TypeError:
        return
    if len(_PASSED) >= _PASSED_MAX:
        _PASSED.clear()
    _PASSED[key] = (ref, tuple(map(id, leaves)), check)
