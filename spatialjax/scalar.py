"""Scalar root finding shared by the models (pure JAX, jit/vmap friendly)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def bisect(f, lo, hi, iters: int = 60):
    """Root of a scalar ``f`` on ``[lo, hi]`` where ``f(lo)`` and ``f(hi)`` differ in sign.

    Fixed number of halvings (``lax.fori_loop``), so it vmaps; returns the midpoint of the
    final bracket. The caller checks the sign change (a bracket without one returns an end).
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
