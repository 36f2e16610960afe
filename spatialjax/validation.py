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


def check_finite(name: str, x) -> None:
    a = _concrete(x)
    if a is not None and not np.all(np.isfinite(a)):
        bad = np.argwhere(~np.isfinite(a))
        raise ParameterError(name, f"must be finite; found non-finite value(s) at index {bad[:3].tolist()}")


def check_positive(name: str, x, *, strict: bool = True) -> None:
    check_finite(name, x)
    a = _concrete(x)
    if a is None:
        return
    bad = a <= 0 if strict else a < 0
    if np.any(bad):
        where = np.argwhere(np.atleast_1d(bad))[:3].tolist()
        rel = "> 0" if strict else ">= 0"
        raise ParameterError(name, f"must be {rel}; found {np.atleast_1d(a)[np.atleast_1d(bad)][:3].tolist()} at {where}")


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
        raise ParameterError(name, f"must lie in {lb}, {ub}; got {np.atleast_1d(a)[~np.atleast_1d(ok)][:3].tolist()}")


def check_shape(name: str, x, shape: tuple) -> None:
    s = tuple(np.shape(x))
    if s != tuple(shape):
        raise ParameterError(name, f"must have shape {tuple(shape)}; got {s}")
