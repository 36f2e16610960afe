"""The generic equilibrium solver: root finding with checked implicit differentiation.

An equilibrium is a root ``F(y, args) = 0`` of a residual function with a flat float
vector ``y`` of shape ``(n,)`` (positive unknowns in logs, by convention of the models).
:func:`solve_root` finds it and returns a :class:`SolveResult` carrying the solution, a
status enum, the max-norm residual, the number of iterations and an estimate of the
smallest singular value of the Jacobian ``dF/dy`` at the solution.

Differentiation is by the implicit function theorem: ``dy*/dargs = -J^{-1} dF/dargs``.
It is implemented as a ``jax.custom_vjp`` so that the backward (adjoint) linear solve
``J^T lam = ybar`` can be *checked*: its residual is recomputed, and the cotangent is
replaced by NaN when

* the forward solve did not converge (status is not ``successful``),
* the Jacobian at the solution is near-singular (fold, non-isolated equilibrium), or
* the adjoint linear solve did not reach its tolerance (a known failure mode of
  iterative implicit differentiation is an adjoint solve that silently returns its
  zero start, which would give a plausible-looking zero gradient).

A NaN gradient is never a plausible number; the status field says why. (optimistix's
``ImplicitAdjoint`` computes the same derivative without those checks; the tests
compare the two.)

Forward iterations:

* ``linear_solver="dense"``: Newton's method with the Jacobian built by ``jax.jacfwd``,
  LU factorisation, and a backtracking (Armijo) line search on ``||F||^2``; the default
  for ``n <= dense_max``.
* ``linear_solver="gmres"``: matrix-free Newton-Krylov. Jacobian-vector products by
  ``jax.linearize``; each Newton step solved by lineax GMRES (inexact Newton with a
  forcing term), the same line search. Never materialises the ``n x n`` Jacobian.
* ``method="lm"``: optimistix's Levenberg-Marquardt on ``||F||^2`` (trust-region
  globalisation that copes with near-singular Jacobians); slower, most robust.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from spatialjax.errors import ConvergenceError, SingularJacobianError
from spatialjax.results import SOLVER_STATUSES, Result
from spatialjax.tables import format_kv
from spatialjax.validation import is_traced

__all__ = ["RESULTS", "SolveResult", "SolverConfig", "solve_root", "jacobian_sigma_min", "LUFactor", "lu_factor", "lu_solve",
           "Linearization", "DenseLinearization", "linearize", "pgmres", "newton_iterate", "shamanskii_iterate", "DENSE_MAX",
           "raise_if_failed", "status_names"]

# Largest system factorised densely by ``linear_solver="auto"``; above it Newton-Krylov (GMRES).
# At n = 6100 one LU costs about 2 s on 2 CPU cores. Used by every caller that picks a solver.
DENSE_MAX = 6100

# Relative change between successive sigma_min estimates at which the preconditioned Krylov
# diagnostic stops (the dense one stops at 1e-6: its iterations cost two triangular solves).
KRYLOV_SIGMA_RTOL = 1e-2

# Inverse iterations with the preconditioner alone that give the preconditioned Krylov
# diagnostic its start vector (see :func:`jacobian_sigma_min`, ``precond_start_iters``).
KRYLOV_PRECOND_START_ITERS = 30

# Dense systems up to this size get their conditioning diagnostic from an exact SVD of the
# Jacobian (one LAPACK call) instead of inverse and power iterations (two while loops): the
# same numbers to round-off, a smaller program (compile time dominates small solves: the
# Helsley-Strange optimum compiles in 1.8 s instead of 2.4 s).
SVD_DIAGNOSTIC_MAX = 64


class RESULTS(eqx.Enumeration):
    """Status of an equilibrium solve."""

    successful = "converged: max-norm residual below tolerance"
    max_steps_reached = "did not converge: maximum number of iterations reached"
    stalled = "did not converge: the line search / linear solver could not reduce the residual"
    nonfinite = "did not converge: non-finite values in the residual or the solution"
    singular = ("converged to a point where the Jacobian is (near-)singular: a fold or a "
                "non-isolated equilibrium; implicit derivatives there are undefined")


def status_names(result) -> list[str] | None:
    """Per-element status names of a (batched) :class:`spatialjax.solver.RESULTS` item, via the
    public comparison API of the enumeration; ``None`` for any other enumeration."""
    try:
        masks = [(name, np.asarray(result == getattr(RESULTS, name)).reshape(-1)) for name in SOLVER_STATUSES]
    except (ValueError, TypeError):
        return None
    n = masks[0][1].size
    out = []
    for i in range(n):
        hit = [name for name, m in masks if m[i]]
        out.append(hit[0] if hit else "unknown")
    return out


def _status_name(code) -> str:
    for name in ("successful", "max_steps_reached", "stalled", "nonfinite", "singular"):
        if int(code) == int(getattr(RESULTS, name)._value):
            return name
    return f"unknown({int(code)})"


class SolveResult(Result, eqx.Module):
    """Result of :func:`solve_root` (the protocol of :mod:`spatialjax.results`: ``status``,
    ``converged``, ``residual``, ``summary()``, ``to_dict()``/``to_json()``).

    Unlike the models' results, ``converged`` is an array (batched under ``vmap``, usable
    under ``jit``) and ``status`` a list of names for a batched result.

    Attributes:
        value: the solution ``y*``, shape ``(n,)``.
        result: a :class:`RESULTS` member (an enum, batched under ``vmap``).
        residual: ``max_i |F_i(y*)|``.
        steps: number of Newton (or LM) iterations.
        sigma_min: estimated smallest singular value of ``J = dF/dy`` at ``y*``.
        jac_norm: estimate of ``||J||_2`` (so ``sigma_min / jac_norm`` is an inverse
            condition number).
    """

    value: jax.Array
    result: RESULTS
    residual: jax.Array
    steps: jax.Array
    sigma_min: jax.Array
    jac_norm: jax.Array

    @property
    def converged(self) -> jax.Array:
        """True where the solve converged to a regular (non-singular) root."""
        return self.result == RESULTS.successful

    @property
    def status(self) -> str | list[str]:
        """Name of the status (a list of names for a batched result)."""
        code = self.result._value
        if jnp.ndim(code) == 0:
            return _status_name(code)
        return [_status_name(c) for c in jnp.ravel(code)]

    def _dict_fields(self) -> dict:
        return {"steps": self.steps, "sigma_min": self.sigma_min, "jac_norm": self.jac_norm, "value": self.value}

    def summary(self) -> str:
        return format_kv(
            [("status", self.status if isinstance(self.status, str) else ", ".join(self.status)),
             ("max-norm residual", float(jnp.max(self.residual))),
             ("iterations", int(jnp.max(self.steps))),
             ("sigma_min(J)", float(jnp.min(self.sigma_min))),
             ("||J||_2 (est.)", float(jnp.max(self.jac_norm)))],
            title="Equilibrium solve",
        )


# ---------------------------------------------------------------------------------------
# Forward iterations
# ---------------------------------------------------------------------------------------


def _norm_inf(x):
    return jnp.max(jnp.abs(x))


class LUFactor(eqx.Module):
    """LU factorisation ``A[perm] = L U`` stored *transposed* (``luT = (L + U - I)^T``).

    LAPACK's triangular solves (the CPU lowering of ``triangular_solve``) want column-major
    operands; XLA arrays are row-major, so ``jax.scipy.linalg.lu_solve`` physically
    transposes the whole factor on every call (and rebuilds the permutation from the
    pivots in a scalar loop). Keeping the transposed factor makes the transpose a free
    bitcast: about 6x faster per solve at n = 1446 on CPU, and the same on other backends.
    """

    luT: jax.Array
    perm: jax.Array


def lu_factor(A) -> LUFactor:
    """Factor a square matrix ``A`` (shape ``(n, n)``) for repeated :func:`lu_solve` calls."""
    lu, _, perm = jax.lax.linalg.lu(A)
    return LUFactor(luT=lu.T, perm=perm)


def lu_solve(fac: LUFactor, b, trans: bool = False):
    """Solve ``A x = b`` (or ``A^T x = b`` with ``trans=True``); ``b`` shape ``(n,)``."""
    lu = fac.luT.T
    tri = jax.lax.linalg.triangular_solve
    if not trans:
        z = tri(lu, b[fac.perm][:, None], left_side=True, lower=True, unit_diagonal=True)
        return tri(lu, z, left_side=True, lower=False)[:, 0]
    # A = P^T L U  =>  A^T x = b  <=>  U^T L^T (P x) = b
    w = tri(lu, b[:, None], left_side=True, lower=False, transpose_a=True)
    v = tri(lu, w, left_side=True, lower=True, transpose_a=True, unit_diagonal=True)[:, 0]
    return jnp.zeros_like(v).at[fac.perm].set(v)


class Linearization(eqx.Module):
    """A factorised Jacobian ``J = dF/dy`` at one point: what the dense Newton path, the
    conditioning diagnostic and the adjoint solve need.

    A model may return a subclass from its ``jac`` to exploit structure (e.g. a Schur
    complement that eliminates a block with a diagonal Jacobian); :class:`DenseLinearization`
    is the generic one (LU of the dense matrix).

    With ``linear_solver="gmres"`` a ``jac`` may instead return a linearization whose ``mv``
    is exact but whose ``solve`` is only an approximate inverse (a *preconditioner*, cheap to
    build: no factorisation of ``J``). Newton steps, the ``sigma_min`` inverse iterations and
    the adjoint are then solved by right-preconditioned GMRES (:func:`pgmres`) on ``mv``,
    and every such solve is checked against its own residual.
    """

    exact = True  # class attribute: False where ``solve`` is only a preconditioner

    def solve(self, b, trans: bool = False):
        """``J^{-1} b`` (``J^{-T} b`` with ``trans=True``); ``b`` shape ``(n,)``."""
        raise NotImplementedError

    def mv(self, v, trans: bool = False):
        """``J v`` (``J^T v`` with ``trans=True``)."""
        raise NotImplementedError

    def norm_inf(self):
        """``||J||_inf`` (max absolute row sum)."""
        raise NotImplementedError


class DenseLinearization(Linearization):
    """Dense Jacobian with its LU factorisation."""

    J: jax.Array
    lu: LUFactor

    def solve(self, b, trans: bool = False):
        return lu_solve(self.lu, b, trans=trans)

    def mv(self, v, trans: bool = False):
        # v @ J, not J.T @ v: XLA on CPU copies a transposed matrix before a matrix-vector product
        return v @ self.J if trans else self.J @ v

    def norm_inf(self):
        return jnp.linalg.norm(self.J, ord=jnp.inf)


def pgmres(matvec, precond, b, *, rtol=1e-10, atol=0.0, restart=40, max_restarts=5, x0=None):
    """Right-preconditioned restarted GMRES for ``A x = b`` (shape ``(n,)``), pure JAX.

    ``matvec(v) = A v``; ``precond(v) ~ A^{-1} v`` (identity if ``None``). Arnoldi with
    classical Gram-Schmidt applied twice (CGS2), Givens rotations for the small
    least-squares problem, stopping as soon as the residual norm (true at every restart,
    the rotated estimate within a cycle) is ``<= max(rtol ||b||, atol)``. Returns
    ``(x, residual_norm, iterations)``; ``residual_norm`` is recomputed as ``||b - A x||``,
    so a caller can check the solve instead of trusting it.
    """
    n = b.shape[0]
    dt = b.dtype
    m = int(restart)
    M = (lambda v: v) if precond is None else precond
    bn = jnp.linalg.norm(b)
    thresh = jnp.maximum(rtol * bn, atol)
    x0 = jnp.zeros_like(b) if x0 is None else x0

    def cycle(x):
        r = b - matvec(x)
        beta = jnp.linalg.norm(r)
        V = jnp.zeros((m + 1, n), dt).at[0].set(r / jnp.where(beta > 0, beta, 1.0))
        Z = jnp.zeros((m, n), dt)
        R = jnp.zeros((m, m), dt)
        g = jnp.zeros((m + 1,), dt).at[0].set(beta)
        cs = jnp.zeros((m,), dt)
        sn = jnp.zeros((m,), dt)

        def cond(c):
            j, V, Z, R, g, cs, sn = c
            return (j < m) & (jnp.abs(g[j]) > thresh)

        def body(c):
            j, V, Z, R, g, cs, sn = c
            z = M(V[j])
            w = matvec(z)
            mask = (jnp.arange(m + 1) <= j).astype(dt)
            h = (V @ w) * mask
            w = w - h @ V
            h2 = (V @ w) * mask
            w = w - h2 @ V
            h = h + h2
            hn = jnp.linalg.norm(w)
            V = V.at[j + 1].set(w / jnp.where(hn > 0, hn, 1.0))
            h = h.at[j + 1].set(hn)

            # apply the previous rotations to the new column
            def rot(i, hh):
                a, bb = hh[i], hh[i + 1]
                return hh.at[i].set(cs[i] * a + sn[i] * bb).at[i + 1].set(-sn[i] * a + cs[i] * bb)

            h = jax.lax.fori_loop(0, j, rot, h)
            a, bb = h[j], h[j + 1]
            den = jnp.hypot(a, bb)
            c_, s_ = jnp.where(den > 0, a / jnp.where(den > 0, den, 1.0), 1.0), jnp.where(den > 0, bb / jnp.where(den > 0, den, 1.0), 0.0)
            h = h.at[j].set(den).at[j + 1].set(0.0)
            cs, sn = cs.at[j].set(c_), sn.at[j].set(s_)
            gj = g[j]
            g = g.at[j].set(c_ * gj).at[j + 1].set(-s_ * gj)
            R = R.at[:, j].set(h[:m])
            Z = Z.at[j].set(z)
            return j + 1, V, Z, R, g, cs, sn

        k, V, Z, R, g, cs, sn = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), V, Z, R, g, cs, sn))
        act = jnp.arange(m) < k
        Rf = jnp.where(act[None, :] & act[:, None], R, 0.0) + jnp.diag(jnp.where(act, 0.0, 1.0).astype(dt))
        yk = jax.scipy.linalg.solve_triangular(Rf, jnp.where(act, g[:m], 0.0), lower=False)
        yk = jnp.where(act, yk, 0.0)
        return x + yk @ Z, k

    def ocond(c):
        x, rn, it, rs = c
        return (rn > thresh) & (rs < max_restarts) & jnp.isfinite(rn)

    def obody(c):
        x, rn, it, rs = c
        x, k = cycle(x)
        rn = jnp.linalg.norm(b - matvec(x))
        return x, rn, it + k, rs + 1

    rn0 = jnp.linalg.norm(b - matvec(x0))
    x, rn, it, _ = jax.lax.while_loop(ocond, obody, (x0, rn0, jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32)))
    return x, rn, it


def linearize(F, y, jac=None) -> Linearization:
    """Factorised Jacobian of ``F`` at ``y``: ``jac(y)`` when given (a dense array or a
    :class:`Linearization`), else ``jax.jacfwd``."""
    J = jax.jacfwd(F)(y) if jac is None else jac(y)
    if isinstance(J, Linearization):
        return J
    return DenseLinearization(J=J, lu=lu_factor(J))


def _dense_newton_step(F, y, f, jac=None):
    dy = linearize(F, y, jac).solve(-f)
    return dy, jnp.all(jnp.isfinite(dy))


def _gmres_newton_step(F, y, f, rtol, max_krylov, jac=None):
    fn = jnp.linalg.norm(f)
    eta = jnp.clip(fn, 1e-10, 1e-2)
    if jac is not None:
        # Newton-Krylov preconditioned by the model's cheap approximate inverse. A tight forcing
        # term (relative 1e-6): the steps are then Newton's up to round-off-like perturbations, so
        # the iteration stays in the basin exact Newton would (equilibria can be close together),
        # and with a good preconditioner the extra Krylov iterations are few.
        eta = jnp.clip(fn, 1e-10, 1e-6)
        lin = linearize(F, y, jac)
        dy, rn, _ = pgmres(lin.mv, lin.solve, -f, rtol=eta, atol=rtol * 1e-3, restart=40,
                           max_restarts=max(1, max_krylov // 40))
        return dy, jnp.all(jnp.isfinite(dy)) & (jnp.linalg.norm(dy) > 0) & (rn <= 0.5 * fn)
    _, jvp = jax.linearize(F, y)
    op = lx.FunctionLinearOperator(jvp, jax.ShapeDtypeStruct(y.shape, y.dtype))
    # Inexact Newton: the forcing term shrinks with the residual (Eisenstat-Walker flavour).
    sol = lx.linear_solve(op, -f, lx.GMRES(rtol=eta, atol=rtol * 1e-3, max_steps=max_krylov, restart=50),
                          throw=False)
    dy = sol.value
    return dy, jnp.all(jnp.isfinite(dy)) & (jnp.linalg.norm(dy) > 0)


def _merit(F, y):
    f = F(y)
    return f, 0.5 * jnp.sum(f * f)


def _armijo_step(F, y, f, m, dy, ok):
    """Backtracking (Armijo) line search on ``0.5 ||F||^2`` along ``dy`` (halving, at most 40
    times). Returns ``(y_new, f_new, m_new, accepted, m_trial)``; a rejected step leaves
    ``y, f, m`` unchanged. ``m_trial`` is the merit at the last trial point."""

    def ls_cond(s):
        t, fn, mn, i = s
        return (~jnp.isfinite(mn) | (mn > (1.0 - 1e-4 * t) * m)) & (i < 40)

    def ls_body(s):
        t, _, _, i = s
        t = 0.5 * t
        fn, mn = _merit(F, y + t * dy)
        return t, fn, mn, i + 1

    f1, m1 = _merit(F, y + dy)
    t, fn, mn, _ = jax.lax.while_loop(ls_cond, ls_body, (jnp.asarray(1.0, y.dtype), f1, m1, 0))
    accepted = ok & jnp.isfinite(mn) & (mn <= (1.0 - 1e-4 * t) * m)
    return (jnp.where(accepted, y + t * dy, y), jnp.where(accepted, fn, f), jnp.where(accepted, mn, m),
            accepted, mn)


def newton_iterate(F, y0, *, tol, max_steps, linear_solver, max_krylov, jac=None):
    """Newton's method with Armijo backtracking on ``0.5 ||F||^2``. Pure JAX (while_loop).

    The raw iteration (no diagnostics, no custom VJP): returns ``(y, F(y), iterations)``.
    Building block of :func:`solve_root` and of the continuation correctors."""

    f0, m0 = _merit(F, y0)

    # After the tolerance is met, up to ``polish`` further steps are taken (accepted only if
    # they reduce the residual): a regular root then sits at round-off, while a singular
    # (double) root does not, which the error-bound diagnostic in solve_root detects.
    polish = 2

    def cond(c):
        y, f, m, k, code, extra = c
        return (code == 0) & (extra < polish) & (k < max_steps) & (_norm_inf(f) > 1e-3 * tol)

    def body(c):
        y, f, m, k, code, extra = c
        extra = extra + (_norm_inf(f) <= tol).astype(extra.dtype)
        if linear_solver == "dense":
            dy, ok = _dense_newton_step(F, y, f, jac)
        else:
            dy, ok = _gmres_newton_step(F, y, f, tol, max_krylov, jac)
        dy = jnp.where(ok, dy, 0.0)

        y_new, f_new, m_new, accepted, mn = _armijo_step(F, y, f, m, dy, ok)
        # code 1: line search failed, 2: linear solve failed (a failed polish step is not an error)
        code_new = jnp.where(accepted | (_norm_inf(f) <= tol), 0, jnp.where(ok, 1, 2)).astype(code.dtype)
        stop = (~accepted) & (_norm_inf(f) <= tol)
        extra = jnp.where(stop, polish, extra)
        return y_new, f_new, m_new, k + (_norm_inf(f) > tol).astype(k.dtype), code_new, extra

    zero = jnp.asarray(0, jnp.int32)
    y, f, m, k, code, _ = jax.lax.while_loop(cond, body, (y0, f0, m0, zero, zero, zero))
    return y, f, k


def shamanskii_iterate(F, y0, *, tol, max_steps, jac=None):
    """Dense Newton that reuses one LU factorisation while it contracts well (Shamanskii /
    chord steps): the Jacobian is refactored only at the start, after a step that reduced
    the residual by less than a factor 4, or after a failed line search with a reused
    factor. A reused step costs two triangular solves instead of a Jacobian and an LU; for
    warm starts (counterfactuals from a baseline) one factorisation is usually enough.
    Failure codes as in :func:`newton_iterate` (1: line search failed, 2: linear solve failed).

    Two nested loops: the outer one factors, the inner one takes chord steps with that
    factorisation as a loop constant (no factor is carried or copied through a ``cond``)."""
    DONE = 9  # internal: converged to round-off, stop

    def running(f, k, code):
        return (code == 0) & (k < max_steps) & (_norm_inf(f) > 1e-3 * tol)

    def outer_body(c):
        y, f, m, k, code = c
        lin = linearize(F, y, jac)

        def inner_cond(ci):
            y, f, m, k, code, fresh, brk = ci
            return running(f, k, code) & ~brk

        def inner_body(ci):
            y, f, m, k, code, fresh, brk = ci
            dy = lin.solve(-f)
            ok = jnp.all(jnp.isfinite(dy))
            dy = jnp.where(ok, dy, 0.0)
            y_new, f_new, m_new, accepted, mn = _armijo_step(F, y, f, m, dy, ok)
            at_tol = _norm_inf(f) <= tol
            code_new = jnp.where(accepted | ~fresh, 0, jnp.where(at_tol, DONE, jnp.where(ok, 1, 2)))
            brk_new = (~accepted) | (mn > m / 16.0)
            return y_new, f_new, m_new, k + 1, code_new.astype(code.dtype), jnp.asarray(False), brk_new

        y, f, m, k, code, _, _ = jax.lax.while_loop(inner_cond, inner_body,
                                                    (y, f, m, k, code, jnp.asarray(True), jnp.asarray(False)))
        return y, f, m, k, code

    f0, m0 = _merit(F, y0)
    zero = jnp.asarray(0, jnp.int32)
    y, f, m, k, code = jax.lax.while_loop(lambda c: running(c[1], c[3], c[4]), outer_body, (y0, f0, m0, zero, zero))
    return y, f, k


def _lm(F, y0, *, tol, max_steps, jac=None):
    solver = optx.LevenbergMarquardt(rtol=tol, atol=tol, norm=optx.max_norm)
    sol = optx.least_squares(lambda y, _: F(y), solver, y0, None, max_steps=max_steps, throw=False,
                             adjoint=optx.RecursiveCheckpointAdjoint())
    y = sol.value
    # The LM solver stops on its own criterion; polish with Newton steps for the tolerance.
    y, f, k = newton_iterate(F, y, tol=tol, max_steps=20, linear_solver="dense", max_krylov=0, jac=jac)
    return y, f, sol.stats["num_steps"] + k


# ---------------------------------------------------------------------------------------
# Conditioning diagnostics
# ---------------------------------------------------------------------------------------


def _until_converged(step, v, iters, rtol, min_iters=2):
    """Run ``v, est = step(v)`` at most ``iters`` times, stopping once two successive estimates
    agree to ``rtol`` (relative) after at least ``min_iters``. Returns ``(v, est, count)``."""

    def cond(c):
        v, est, prev, k = c
        return (k < iters) & ((k < min_iters) | ~(jnp.abs(est - prev) <= rtol * jnp.abs(est)))

    def body(c):
        v, est, prev, k = c
        v2, e2 = step(v)
        return v2, e2, est, k + 1

    nan = jnp.asarray(jnp.nan, jnp.result_type(float))
    v, est, _, k = jax.lax.while_loop(cond, body, (v, nan, nan, jnp.asarray(0, jnp.int32)))
    return v, est, k


def _gkl_sigma_max(mvJ, mvJT, pJ, pJT, v, iters: int, rtol, krylov_rtol):
    """Largest singular value of ``J^{-1}`` by Golub-Kahan-Lanczos bidiagonalisation with full
    reorthogonalisation, the solves by preconditioned GMRES (``pgmres(mvJ, pJ, .)`` and its
    transpose). ``v``: unit start vector. At most ``iters`` steps (two solves each), stopping
    once two successive estimates agree to ``rtol`` (relative) after at least two.

    Returns ``(sigma_max, ok, steps)``; ``ok`` is False if a solve missed ``krylov_rtol``
    (then ``sigma_max`` is not trusted by the caller). The estimate is the largest singular
    value of the (k+1) x k lower-bidiagonal matrix of the recurrence: a lower bound on
    ``||J^{-1}||`` that converges to it."""
    n, K = v.shape[0], int(iters)
    dt = v.dtype
    U = jnp.zeros((K + 1, n), dt).at[0].set(v)
    V = jnp.zeros((K, n), dt)
    Bd = jnp.zeros((K + 1, K), dt)

    def reorth(x, Q):
        x = x - (Q @ x) @ Q
        return x - (Q @ x) @ Q

    def cond(c):
        U, V, Bd, ok, est, prev, j = c
        return (j < K) & ok & ((j < 2) | ~(jnp.abs(est - prev) <= rtol * jnp.abs(est)))

    def body(c):
        U, V, Bd, ok, est, prev, j = c
        u = U[j]
        p, r1, _ = pgmres(mvJT, pJT, u, rtol=krylov_rtol, atol=1e-300, restart=50, max_restarts=10)
        p = reorth(p, V)
        a = jnp.linalg.norm(p)
        vj = p / jnp.where(a > 0, a, 1.0)
        q, r2, _ = pgmres(mvJ, pJ, vj, rtol=krylov_rtol, atol=1e-300, restart=50, max_restarts=10)
        q = reorth(q - a * u, U)
        b = jnp.linalg.norm(q)
        ok = ok & (r1 <= 2 * krylov_rtol) & (r2 <= 2 * krylov_rtol) & jnp.isfinite(a) & jnp.isfinite(b)
        V = V.at[j].set(vj)
        U = U.at[j + 1].set(q / jnp.where(b > 0, b, 1.0))
        Bd = Bd.at[j, j].set(a).at[j + 1, j].set(b)
        s_new = jnp.linalg.svd(jnp.where(jnp.isfinite(Bd), Bd, 0.0), compute_uv=False)[0]
        return U, V, Bd, ok, s_new, est, j + 1

    nan = jnp.asarray(jnp.nan, dt)
    _, _, _, ok, est, _, j = jax.lax.while_loop(
        cond, body, (U, V, Bd, jnp.asarray(True), nan, nan, jnp.asarray(0, jnp.int32)))
    return est, ok, j


def jacobian_sigma_min(F, y, *, linear_solver="dense", iters: int = 10, norm_iters: int = 12, key_seed: int = 0,
                       jac=None, return_linearization: bool = False, rtol: float = 1e-6, norm_rtol: float = 1e-3,
                       lin: Linearization | None = None, krylov_rtol: float = 1e-6, precond_start_iters: int = 0):
    """Estimate ``(sigma_min, ||J||_2)`` of ``J = dF/dy`` at ``y``.

    Dense: inverse power iteration on ``(J^T J)^{-1}`` with one LU factorisation
    (O(n^3) once, O(n^2) per iteration). Matrix-free with a preconditioning ``jac`` (see
    :class:`Linearization`): Golub-Kahan-Lanczos bidiagonalisation of ``J^{-1}``
    (:func:`_gkl_sigma_max`), every application a preconditioned GMRES solve; without one:
    inverse iteration with lineax GMRES. Power iteration with ``mv`` (or JVP/VJP) for the norm.
    At most ``iters`` inverse iterations / bidiagonalisation steps and ``norm_iters`` power
    iterations for ``||J||_2`` (only used as a scale for the singularity threshold); each stops
    early once two successive estimates agree to ``rtol`` / ``norm_rtol`` (relative). ``lin``: a
    linearization at ``y`` already computed (its factorisation is reused: no new one). ``return_linearization=True`` also
    returns the linearization used (``None`` for the matrix-free path without ``jac``), so
    that the backward pass of an implicit derivative can reuse it.

    ``precond_start_iters`` (preconditioned Krylov path only): before the bidiagonalisation,
    up to that many inverse iterations with the *preconditioner* alone
    (``P^{-1} P^{-T}``: no GMRES, a few N^2 passes each) give the start vector, close to the
    smallest singular direction of ``J`` when ``P`` approximates ``J`` well; the exact
    iterations then usually stop after their minimum of two.

    A non-converged GMRES solve inside the iteration makes ``sigma_min`` 0 (flagged
    as singular by :func:`solve_root`): a failed diagnostic never reads as a regular root.
    """
    n = y.shape[0]
    v = jax.random.normal(jax.random.PRNGKey(key_seed), (n,), dtype=y.dtype)
    v = v / jnp.linalg.norm(v)
    solve_ok = jnp.asarray(True)
    if linear_solver == "dense" or (lin is not None and getattr(lin, "exact", True)):
        lin = linearize(F, y, jac) if lin is None else lin

        def inv_it(v):
            w = lin.solve(v, trans=True)  # J^{-T} v
            w = lin.solve(w)  # J^{-1} J^{-T} v
            nw = jnp.linalg.norm(w)
            return w / nw, nw

        def pow_it(v):
            w = lin.mv(lin.mv(v), trans=True)
            nw = jnp.linalg.norm(w)
            return w / nw, nw

        _, lam_inv, _ = _until_converged(inv_it, v, iters, rtol)
    else:
        if jac is not None or lin is not None:
            lin = linearize(F, y, jac) if lin is None else lin
            mvJ, mvJT = lin.mv, (lambda u: lin.mv(u, trans=True))
            pJ, pJT = lin.solve, (lambda u: lin.solve(u, trans=True))
            if precond_start_iters > 0:
                def pre_it(u):
                    w = pJ(pJT(u))
                    nw = jnp.linalg.norm(w)
                    ok = jnp.isfinite(nw) & (nw > 0)
                    return jnp.where(ok, w / jnp.where(ok, nw, 1.0), u), nw

                v, _, _ = _until_converged(pre_it, v, precond_start_iters, 1e-3)

            # Golub-Kahan-Lanczos bidiagonalisation of J^{-1} (each step one solve with J^T and
            # one with J, GMRES preconditioned by the model's approximate inverse): the largest
            # singular value of the small bidiagonal matrix converges to 1 / sigma_min(J) as a
            # Krylov method (fewer solves than the inverse power iteration it replaced and a more
            # accurate estimate: 12 -> 8 GMRES solves at Jiao-Tian N = 3000, error 0.4 % -> 0.03 %),
            # from below, so sigma_min is approached from above as before. Full
            # reorthogonalisation (at most ``iters`` + 1 vectors). A solve to relative residual krylov_rtol perturbs J^{-1} by about that
            # much relatively; a solve that does not reach it (typically at a fold, where J is
            # singular) sets sigma_min to 0.
            smax, solve_ok, n_inv = _gkl_sigma_max(mvJ, mvJT, pJ, pJT, v, iters, rtol, krylov_rtol)
            lam_inv = smax ** 2
        else:
            # unpreconditioned matrix-free path (no model structure): lineax GMRES, as before
            lin = None
            _, jvp = jax.linearize(F, y)
            vjp = jax.linear_transpose(jvp, y)
            mvJ, mvJT = jvp, (lambda u: vjp(u)[0])
            struct = jax.ShapeDtypeStruct(y.shape, y.dtype)
            opJ = lx.FunctionLinearOperator(jvp, struct)
            opJT = lx.FunctionLinearOperator(mvJT, struct)
            gm = lx.GMRES(rtol=1e-8, atol=1e-14, max_steps=500, restart=50)

            def inv_it(c):
                v, ok = c
                w = lx.linear_solve(opJT, v, gm, throw=False).value
                w = lx.linear_solve(opJ, w, gm, throw=False).value
                nw = jnp.linalg.norm(w)
                return (w / nw, ok), nw

        def pow_it(v):
            w = mvJT(mvJ(v))
            nw = jnp.linalg.norm(w)
            return w / nw, nw

        if lin is None:
            (_, solve_ok), lam_inv, n_inv = _until_converged(inv_it, (v, solve_ok), iters, rtol)
    _, lam, _ = _until_converged(pow_it, v, norm_iters, norm_rtol)
    sigma_min = 1.0 / jnp.sqrt(lam_inv)
    jac_norm = jnp.sqrt(lam)
    sigma_min = jnp.where(jnp.isfinite(sigma_min) & solve_ok, sigma_min, 0.0)
    if return_linearization:
        return sigma_min, jac_norm, lin
    return sigma_min, jac_norm


# ---------------------------------------------------------------------------------------
# The public solve with checked implicit differentiation
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SolverConfig:
    """The options of :func:`solve_root` as one typed, hashable object (it can be a static
    argument of a jitted function and is shared between calls).

    Attributes:
        method: ``"newton"`` (Newton with an Armijo line search) or ``"lm"`` (optimistix
            Levenberg-Marquardt, then a Newton polish).
        linear_solver: ``"dense"`` (LU), ``"gmres"`` (matrix-free Newton-Krylov) or
            ``"auto"`` (dense for ``n <= dense_max``).
        tol: convergence tolerance on ``max_i |F_i|``.
        max_steps: Newton (or LM) iterations at most.
        max_krylov: Krylov iterations per linear solve at most.
        singular_rtol: flag ``singular`` when ``sigma_min(J) < singular_rtol * ||J||``.
        error_rtol: ... or when the first-order error bound ``residual / sigma_min`` exceeds it.
        kantorovich_h: ... or when ``h = ||J|| * residual / sigma_min**2`` exceeds it: the
            Newton-Kantorovich quantity, with ``||J||`` standing in for the Lipschitz constant of
            ``J`` (a heuristic: it is not estimated); ``h > 1/2`` means the point is not certified
            to lie in the basin of a regular root. It catches a double root (fold), where
            ``||F|| ~ sigma_min**2`` and both tests above can narrowly pass.
        adjoint_rtol: relative residual tolerance of the adjoint solve (worse: NaN cotangent).
        diagnose: estimate ``sigma_min`` at the solution (about one extra Newton step). With
            ``False`` no root is ever flagged ``singular``: only for inner loops whose caller
            checks conditioning itself.
        reuse_jacobian: dense Newton only: chord (Shamanskii) steps with one factorisation
            while the iteration contracts.
        dense_max: largest ``n`` that ``"auto"`` factorises densely.
    """

    method: str = "newton"
    linear_solver: str = "auto"
    tol: float = 1e-10
    max_steps: int = 100
    max_krylov: int = 400
    singular_rtol: float = 1e-10
    error_rtol: float = 1e-7
    kantorovich_h: float = 0.5
    adjoint_rtol: float = 1e-6
    diagnose: bool = True
    reuse_jacobian: bool = False
    dense_max: int = DENSE_MAX

    def __post_init__(self):
        if self.method not in ("newton", "lm"):
            raise ValueError(f"method: must be 'newton' or 'lm'; got {self.method!r}")
        if self.linear_solver not in ("auto", "dense", "gmres"):
            raise ValueError(f"linear_solver: must be 'auto', 'dense' or 'gmres'; got {self.linear_solver!r}")
        for name in ("tol", "singular_rtol", "error_rtol", "kantorovich_h", "adjoint_rtol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
                raise ValueError(f"{name}: must be a positive number; got {v!r}")
        for name in ("max_steps", "max_krylov", "dense_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "max_krylov" else 1):
                raise ValueError(f"{name}: must be a positive integer; got {v!r}")

    def resolved(self, n: int) -> "SolverConfig":
        """This config with ``linear_solver="auto"`` resolved for a system of size ``n``."""
        if self.linear_solver != "auto":
            return self
        return dataclasses.replace(self, linear_solver="dense" if n <= self.dense_max else "gmres")


def _iterate(F, y0, cfg: SolverConfig, jac):
    """The forward iteration chosen by ``cfg``: ``(y, F(y), iterations)``."""
    if cfg.method == "lm":
        return _lm(F, y0, tol=cfg.tol, max_steps=cfg.max_steps, jac=jac)
    if cfg.reuse_jacobian and cfg.linear_solver == "dense":
        return shamanskii_iterate(F, y0, tol=cfg.tol, max_steps=cfg.max_steps, jac=jac)
    return newton_iterate(F, y0, tol=cfg.tol, max_steps=cfg.max_steps, linear_solver=cfg.linear_solver,
                          max_krylov=cfg.max_krylov, jac=jac)


def _diagnose(F, y, cfg: SolverConfig, jac):
    """``(sigma_min, ||J||, linearization)`` at ``y`` (NaN, NaN, None without the diagnostic).
    The linearization is kept for the adjoint solve of the backward pass."""
    if not cfg.diagnose:
        nan = jnp.asarray(jnp.nan, y.dtype)
        return nan, nan, None
    if cfg.linear_solver == "dense" and y.shape[0] <= SVD_DIAGNOSTIC_MAX:
        lin = linearize(F, y, jac)
        if isinstance(lin, DenseLinearization):
            return (*_svd_sigma(lin.J), lin)
        return jacobian_sigma_min(F, y, linear_solver="dense", jac=jac, return_linearization=True, lin=lin)
    if cfg.linear_solver == "gmres" and jac is not None:
        # Preconditioned Krylov diagnostic: every inverse iteration costs two GMRES solves, so
        # it is run to the accuracy the singularity test needs (a few per cent; the thresholds
        # are orders of magnitude), not to round-off.
        # The start vector comes from inverse iterations with the preconditioner alone (no GMRES):
        # at N = 722 (Jiao-Tian) that halves the GMRES work of the diagnostic (188 -> 93
        # preconditioned mat-vecs, 6 instead of 12 GMRES solves).
        return jacobian_sigma_min(F, y, linear_solver=cfg.linear_solver, jac=jac, return_linearization=True,
                                  rtol=KRYLOV_SIGMA_RTOL, krylov_rtol=1e-3, norm_rtol=1e-2,
                                  precond_start_iters=KRYLOV_PRECOND_START_ITERS)
    return jacobian_sigma_min(F, y, linear_solver=cfg.linear_solver, jac=jac, return_linearization=True)


def _svd_sigma(J):
    """``(sigma_min, ||J||_2)`` of a dense ``J`` from its singular values; ``sigma_min`` is 0
    (flagged singular) when ``J`` is not finite, as in :func:`jacobian_sigma_min`."""
    finite = jnp.all(jnp.isfinite(J))
    s = jnp.linalg.svd(jnp.where(finite, J, 0.0), compute_uv=False)
    return jnp.where(finite, s[-1], 0.0), jnp.where(finite, s[0], jnp.nan)


def _status_code(y, res, k, smin, jn, cfg: SolverConfig):
    """0 successful, 1 max_steps_reached, 2 stalled, 3 nonfinite, 4 singular."""
    finite = jnp.all(jnp.isfinite(y)) & jnp.isfinite(res)
    conv = finite & (res <= cfg.tol)
    # Near-singular: tiny relative sigma_min, or a first-order error bound
    # ||y - y*|| <~ ||F|| / sigma_min that is not small (a double root converges slowly
    # and keeps ||F|| ~ sigma_min^2).
    # Newton-Kantorovich: h = L ||F|| / sigma_min^2 with L ~ ||J|| (see SolverConfig.kantorovich_h)
    kanto = jn * res > cfg.kantorovich_h * smin * smin
    singular = conv & ((smin < cfg.singular_rtol * jn) | (res > cfg.error_rtol * smin) | kanto)
    return jnp.where(~finite, 3, jnp.where(~conv, jnp.where(k >= cfg.max_steps, 1, 2), jnp.where(singular, 4, 0)))


def _adjoint(Fy, y, ybar, cfg: SolverConfig, jac, lin_saved):
    """Solve ``J^T lam = ybar`` at the root; returns ``(lam, ok)`` with ``ok`` False when the
    recomputed residual of that solve misses ``cfg.adjoint_rtol`` (or ``lam`` is not finite)."""
    if cfg.linear_solver == "dense":
        lin = lin_saved if lin_saved is not None else linearize(Fy, y, jac)
        lam = lin.solve(ybar, trans=True)
        r = lin.mv(lam, trans=True) - ybar
        scale = lin.norm_inf() * _norm_inf(lam) + _norm_inf(ybar)
    elif jac is not None:
        # Newton-Krylov with the model's preconditioner: the adjoint by the same preconditioned
        # GMRES, checked by its recomputed residual below.
        lin = lin_saved if lin_saved is not None else linearize(Fy, y, jac)
        lam, _, _ = pgmres(lambda u: lin.mv(u, trans=True), lambda u: lin.solve(u, trans=True), ybar,
                           rtol=1e-11, atol=1e-300, restart=50, max_restarts=max(2, cfg.max_krylov // 50))
        r = lin.mv(lam, trans=True) - ybar
        scale = lin.norm_inf() * _norm_inf(lam) + _norm_inf(ybar)
    else:
        _, vjp_y = jax.vjp(Fy, y)
        op = lx.FunctionLinearOperator(lambda u: vjp_y(u)[0], jax.ShapeDtypeStruct(y.shape, y.dtype))
        lam = lx.linear_solve(op, ybar, lx.GMRES(rtol=1e-10, atol=1e-14, max_steps=cfg.max_krylov, restart=50),
                              throw=False).value
        r = vjp_y(lam)[0] - ybar
        scale = _norm_inf(ybar) * 10.0
    ok = jnp.all(jnp.isfinite(lam)) & (_norm_inf(r) <= cfg.adjoint_rtol * scale)
    return lam, ok


def _result_enum(code):
    return RESULTS.where(code == 0, RESULTS.successful,
                         RESULTS.where(code == 1, RESULTS.max_steps_reached,
                                       RESULTS.where(code == 2, RESULTS.stalled,
                                                     RESULTS.where(code == 3, RESULTS.nonfinite, RESULTS.singular))))


def _strong_dtypes(args):
    # Python floats and weakly-typed scalars would not be seen as differentiable by the
    # custom VJP (a silent zero gradient): promote every inexact leaf to a strong dtype.
    return jax.tree.map(lambda x: jax.lax.convert_element_type(x, jnp.result_type(float))
                        if (isinstance(x, float) or (eqx.is_inexact_array(x) and getattr(x, "weak_type", False)))
                        else x, args)


def solve_root(
    fn: Callable[[jax.Array, Any], jax.Array],
    y0: jax.Array,
    args: Any = None,
    config: SolverConfig | None = None,
    *,
    throw: bool = False,
    jac: Callable[[jax.Array, Any], jax.Array] | None = None,
    **options,
) -> SolveResult:
    """Solve ``fn(y, args) = 0`` for ``y`` (shape ``(n,)``), differentiably in ``args``.

    Args:
        fn: residual function ``(y, args) -> F`` with ``F.shape == y.shape``. Pure JAX.
            ``fn``/``jac`` must not close over traced values: pass those in ``args``.
        y0: starting point, shape ``(n,)`` (a warm start from data or a baseline
            solution makes counterfactuals fast).
        args: PyTree of parameters. Gradients flow to its inexact-array leaves.
        config: a :class:`SolverConfig` (default ``SolverConfig()``).
        **options: fields of :class:`SolverConfig` overriding ``config`` (e.g. ``tol=1e-12``,
            ``linear_solver="gmres"``); an unknown name is a TypeError.
        throw: raise :class:`ConvergenceError` / :class:`SingularJacobianError` instead of
            returning a failed result. Under ``jit``/``vmap`` the check runs when the compiled
            computation finishes (``equinox.error_if``) and raises a runtime error.
        jac: optional ``(y, args) -> dF/dy`` exploiting the model's structure: a dense
            ``(n, n)`` array, or a :class:`Linearization` (a factorised Jacobian with
            ``solve``/``mv``/``norm_inf``, e.g. a Schur complement); default ``jax.jacfwd``.
            With ``linear_solver="gmres"`` it must return a :class:`Linearization` whose
            ``mv`` is exact and whose ``solve`` may be approximate: it preconditions GMRES
            in the Newton steps, the ``sigma_min`` diagnostic and the adjoint.

    The pieces, each a function of this module: :func:`_iterate` (the forward iteration),
    :func:`_diagnose` (``sigma_min``, ``||J||`` and the factorisation kept for the adjoint),
    :func:`_status_code`, :func:`_adjoint` (the checked adjoint solve of the backward pass).

    Returns:
        :class:`SolveResult`. Under ``jax.grad``, derivatives of ``result.value`` with
        respect to ``args`` are exact implicit derivatives, or NaN when the solve is not
        a regular, converged root (see module docstring).
    """
    unknown = set(options) - {f.name for f in dataclasses.fields(SolverConfig)}
    if unknown:
        raise TypeError(f"solve_root: unknown option(s) {sorted(unknown)}; allowed: "
                        f"{', '.join(f.name for f in dataclasses.fields(SolverConfig))}, throw, jac")
    cfg = dataclasses.replace(config or SolverConfig(), **options) if options else (config or SolverConfig())
    y0 = jnp.asarray(y0)
    if y0.ndim != 1:
        raise ValueError(f"y0: must be a flat vector of shape (n,); got shape {y0.shape}")
    cfg = cfg.resolved(y0.shape[0])
    y0 = jax.lax.stop_gradient(y0)
    args = _strong_dtypes(args)

    def J_of(a):
        return None if jac is None else (lambda y: jac(y, a))

    def forward_lin(d, y0):
        F = lambda y: fn(y, d)  # noqa: E731
        y, f, k = _iterate(F, y0, cfg, J_of(d))
        res = _norm_inf(f)
        smin, jn, lin = _diagnose(F, y, cfg, J_of(d))
        return (y, res, k, smin, jn, _status_code(y, res, k, smin, jn, cfg)), lin

    @eqx.filter_custom_vjp
    def _solve(d, y0):
        return forward_lin(d, y0)[0]

    @_solve.def_fwd
    def _fwd(perturbed, d, y0):
        out, lin = forward_lin(d, y0)
        # The factorised Jacobian at the solution (from the conditioning diagnostic) is
        # kept for the adjoint solve: the backward pass then costs two triangular solves.
        return out, (out[0], out[5], lin)

    @_solve.def_bwd
    def _bwd(saved, cts, perturbed, d, y0):
        y, code, lin_saved = saved
        ybar = cts[0]
        if ybar is None:
            return jax.tree.map(lambda _: None, d)
        diff, static = eqx.partition(d, eqx.is_inexact_array)
        lam, ok_adj = _adjoint(lambda yy: fn(yy, d), y, ybar, cfg, J_of(d), lin_saved)
        poison = jnp.where((code == 0) & ok_adj, 1.0, jnp.nan)
        _, vjp_d = jax.vjp(lambda dd: fn(y, eqx.combine(dd, static)), diff)
        (dbar,) = vjp_d(-lam * poison)
        return dbar

    y, res, k, smin, jn, code = _solve(args, y0)
    out = SolveResult(value=y, result=_result_enum(code), residual=res, steps=k, sigma_min=smin, jac_norm=jn)
    if throw:
        if is_traced(res):
            # Under jit/vmap the status is not known at trace time: a runtime check raises
            # when the compiled solve finishes with any status other than ``successful``.
            y = eqx.error_if(y, code != 0, "solve_root: the equilibrium solve did not succeed (status "
                             "max_steps_reached, stalled, nonfinite or singular); call with throw=False "
                             "and read .status/.residual/.sigma_min for details")
            out = eqx.tree_at(lambda o: o.value, out, y)
        else:
            raise_if_failed(out)
    return out


def raise_if_failed(res: SolveResult, what: str = "equilibrium solve") -> None:
    """Raise a clear error for a failed (concrete, unbatched) :class:`SolveResult`."""
    if is_traced(res.residual):
        raise ValueError("raise_if_failed needs a concrete result (outside jit/vmap); inside, use "
                         "solve_root(..., throw=True), which checks at run time, or throw=False and .result")
    name = res.status if isinstance(res.status, str) else None
    if name is None:
        bad = [s for s in res.status if s != "successful"]
        if bad:
            raise ConvergenceError(f"{what}: {len(bad)} of {len(res.status)} solves failed ({sorted(set(bad))})")
        return
    if name == "successful":
        return
    msg = (f"{what} {name}: max-norm residual {float(res.residual):.3e} after {int(res.steps)} iterations, "
           f"sigma_min(J) = {float(res.sigma_min):.3e}. ")
    if name == "singular":
        raise SingularJacobianError(msg + "The equilibrium sits at a fold; use continuation (pseudo-arclength) "
                                    "to follow the branch, or multistart to find the other equilibria.")
    raise ConvergenceError(msg + "Try a warm start, method='lm', more max_steps, or continuation from a "
                           "nearby solved economy.")
