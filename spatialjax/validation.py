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
