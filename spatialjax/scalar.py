"""Scalar root finding shared by the models (pure JAX, jit/vmap friendly).

:func:`bracket_root` is the one bracketing root finder of the package: bisection on a
bracket ``[lo, hi]`` with a sign change, returning a :class:`ScalarRoot` that carries a
status (the names of :data:`spatialjax.results.STATUSES`), the residual ``|f(x)|``, the final
bracket width and the number of halvings, and whose value is differentiable in ``args``
by the implicit function theorem::

    dx*/dargs = -(df/dargs) / (df/dx)        at the root x*

The derivative is NaN (never a plausible number) when the root was not found
(status not ``successful``) or when ``df/dx`` is (near-)zero at the root (a double root or
a tangency; status ``singular``). Bisection itself has a zero derivative almost
everywhere: differentiating through the halvings would silently return 0, which is why the
derivative is defined by a custom JVP instead.

Caveat (bisection, by construction): a sign change of a *discontinuous* ``f`` (a pole) is
found as if it were a root; the residual ``|f(x)|`` then stays large, so callers that can
meet poles pass ``ftol`` (status ``stalled`` when ``|f(x)| > ftol``).

:func:`bisect` is the bare value (fixed number of halvings), kept for callers that check
the bracket themselves.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["bisect", "bracket_root", "ScalarRoot", "SCALAR_STATUSES"]

#: status names by code (a subset of :data:`spatialjax.results.STATUSES`)
SCALAR_STATUSES = ("successful", "max_steps_reached", "stalled", "nonfinite", "singular", "no_solution")
_OK, _MAXSTEPS, _STALLED, _NONFINITE, _SINGULAR, _NOBRACKET = range(6)


def bisect(f, lo, hi, iters: int = 60):
    """Root of a scalar ``f`` on ``[lo, hi]`` where ``f(lo)`` and ``f(hi)`` differ in sign.

    Fixed number of halvings (``lax.fori_loop``), so it vmaps; returns the midpoint of the
    final bracket. The caller checks the sign change (a bracket without one returns an end).
    Prefer :func:`bracket_root`, which checks it and reports a status.
    """
    flo = f(lo)

    def body(_, c):
        a, b, fa = c
        m = 0.5 * (a + b)
        fm = f(m)
        same = jnp.sign(fm) == jnp.sign(fa)
        return jnp.where(same, m, a), jnp.where(same, b, m), jnp.where(same, fm, fa)

    a, b, _ = jax.lax.fori_loop(0, iters, body, (lo, hi, flo))
    return 0.5 * (a + b)


class ScalarRoot(eqx.Module):
    """Result of :func:`bracket_root` (batched under ``vmap``: every field gains the batch axis).

    Fields: ``value`` (the root; differentiable in ``args``), ``code`` (index into
    :data:`SCALAR_STATUSES`), ``residual`` (``|f(value)|``), ``width`` (final bracket width),
    ``steps`` (halvings done), ``slope`` (``df/dx`` at the root).
    """

    value: jax.Array
    code: jax.Array
    residual: jax.Array
    width: jax.Array
    steps: jax.Array
    slope: jax.Array

    @property
    def converged(self) -> jax.Array:
        return self.code == _OK

    @property
    def status(self) -> str | list[str]:
        c = jnp.asarray(self.code)
        if c.ndim == 0:
            return SCALAR_STATUSES[int(c)]
        return [SCALAR_STATUSES[int(k)] for k in c.reshape(-1)]


def _halvings(f, lo, hi, flo, xtol, rtol, max_iter):
    def cond(c):
        a, b, fa, k = c
        return (k < max_iter) & (jnp.abs(b - a) > xtol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b)))

    def body(c):
        a, b, fa, k = c
        m = 0.5 * (a + b)
        fm = f(m)
        same = jnp.sign(fm) == jnp.sign(fa)
        return jnp.where(same, m, a), jnp.where(same, b, m), jnp.where(same, fm, fa), k + 1

    a, b, _, k = jax.lax.while_loop(cond, body, (lo, hi, flo, jnp.asarray(0)))
    return a, b, k


def bracket_root(f: Callable[[jax.Array, Any], jax.Array], lo, hi, args: Any = None, *, max_iter: int = 200,
                 xtol: float | None = None, rtol: float = 4e-16, ftol: float | None = None,
                 singular_rtol: float = 1e-12) -> ScalarRoot:
    """Root of ``f(x, args) = 0`` on the bracket ``[lo, hi]`` by bisection, with a status.

    Args:
        f: scalar function ``(x, args) -> f``, pure JAX; must not close over traced values
            (pass them in ``args`` so that derivatives reach them).
        lo, hi: the bracket (``lo < hi`` not required; the ends are sorted).
        args: PyTree of parameters; ``value`` is differentiable in its inexact leaves.
        max_iter: at most this many halvings (status ``max_steps_reached`` if the bracket is
            still wider than the tolerance then).
        xtol, rtol: stop when the bracket is narrower than ``xtol + rtol * max(|a|, |b|)``
            (``a, b`` the current ends; default ``xtol = 1e-15 * |hi - lo|``: about 50 halvings,
            float64 resolution for a root away from 0).
        ftol: if given, a root with ``|f(x)| > ftol`` is reported ``stalled`` (a pole).
        singular_rtol: ``singular`` when ``|df/dx| * |hi - lo| < singular_rtol *
            max(|f(lo)|, |f(hi)|)`` at the root (a double root/tangency: the implicit
            derivative is undefined and is returned as NaN).

    Statuses: ``successful``; ``no_solution`` (``f(lo)`` and ``f(hi)`` have the same sign,
    value NaN); ``nonfinite`` (f not finite at an end or at the root); ``max_steps_reached``;
    ``stalled`` (``ftol`` violated); ``singular``. Works under ``jit``/``vmap``/``grad``.
    """
    lo = jnp.asarray(lo, dtype=jnp.result_type(float))
    hi = jnp.asarray(hi, dtype=jnp.result_type(float))
    lo, hi = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
    xtol = 1e-15 * (hi - lo) if xtol is None else xtol
    # Python floats and weakly-typed scalars would not be seen as differentiable (a silent zero
    # gradient): promote every inexact leaf to a strong float dtype, as solve_root does.
    args = jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(float))
                        if (isinstance(x, float) or (eqx.is_inexact_array(x) and getattr(x, "weak_type", False)))
                        else x, args)
    diff, static = eqx.partition(args, eqx.is_inexact_array)

    def fx(x, d):
        return f(x, eqx.combine(d, static))

    def forward(d):
        d = jax.lax.stop_gradient(d)
        g = lambda x: fx(x, d)  # noqa: E731
        # f at both ends in one (vmapped) evaluation, and f with its slope at the root in one
        # forward-mode pass: each copy of f in the program is compiled, and f may itself hold
        # solves (nested bracketed roots), so the copies are kept to three
        fends = jax.vmap(g)(jnp.stack([lo, hi]))
        flo, fhi = fends[0], fends[1]
        a, b, k = _halvings(g, lo, hi, flo, xtol, rtol, max_iter)
        x = 0.5 * (a + b)
        fxv, slope = jax.jvp(g, (x,), (jnp.ones_like(x),))
        ends_finite = jnp.isfinite(flo) & jnp.isfinite(fhi)
        bracketed = (jnp.sign(flo) != jnp.sign(fhi)) | (flo == 0) | (fhi == 0)
        width = jnp.abs(b - a)
        done = width <= xtol + rtol * jnp.maximum(jnp.abs(a), jnp.abs(b))
        scale = jnp.maximum(jnp.abs(flo), jnp.abs(fhi))
        singular = jnp.abs(slope) * (hi - lo) < singular_rtol * scale
        pole = jnp.asarray(False) if ftol is None else (jnp.abs(fxv) > ftol)
        code = jnp.where(~ends_finite, _NONFINITE,
                         jnp.where(~bracketed, _NOBRACKET,
                                   jnp.where(~(jnp.isfinite(fxv) & jnp.isfinite(x)), _NONFINITE,
                                             jnp.where(~done, _MAXSTEPS,
                                                       jnp.where(pole, _STALLED,
                                                                 jnp.where(singular, _SINGULAR, _OK))))))
        x = jnp.where(bracketed & ends_finite, x, jnp.nan)
        return x, code, jnp.abs(fxv), width, k, slope

    @jax.custom_jvp
    def root(d):
        return forward(d)

    @root.defjvp
    def root_jvp(primals, tangents):
        (d,), (dd,) = primals, tangents
        out = forward(d)
        x, code, _, _, _, slope = out
        _, df = jax.jvp(lambda dd_: fx(x, dd_), (d,), (dd,))
        ok = (code == _OK) & (slope != 0)
        # linear in the tangent (a NaN factor, not a NaN branch, so that it survives
        # transposition under reverse mode)
        poison = jnp.where(ok, 1.0, jnp.nan)
        dx = -df * (poison / jnp.where(ok, slope, 1.0))
        zeros = tuple(jnp.zeros_like(o) if jnp.issubdtype(o.dtype, jnp.inexact) else
                      np.zeros(jnp.shape(o), dtype=jax.dtypes.float0) for o in out[1:])
        return out, (dx,) + zeros

    x, code, res, width, k, slope = root(diff)
    return ScalarRoot(value=x, code=code, residual=res, width=width, steps=k, slope=slope)
