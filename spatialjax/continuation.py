"""Continuation along a parameter path, fold detection, and multi-start enumeration.

All functions take a residual ``fn(y, lam, args) -> F`` with ``y`` of shape ``(n,)`` and a
scalar continuation parameter ``lam``; they know nothing about any model.

* :func:`homotopy` — natural-parameter continuation from ``lam0`` to ``lam1`` written in
  pure JAX (``lax.while_loop``): secant predictor, Newton corrector, step-size control
  (grow on easy steps, halve on failed ones). Jittable and vmappable, so a model's cold
  start can use it inside ``jit``/``vmap``. It stops and reports when the step falls
  below ``h_min`` (typically a fold: the branch turns back before ``lam1``).
* :func:`trace_path` — natural continuation over a grid of ``lam`` values, recording the
  solution, residual and ``sigma_min`` at every point; reports the first point where the
  corrector fails (a fold) instead of returning a non-equilibrium.
* :func:`pseudo_arclength` — follows a branch in ``(y, lam)`` through folds; the folds
  are where the ``lam``-component of the tangent changes sign.
* :func:`multistart` — solves from many starting points at once (``vmap``) and
  de-duplicates the converged roots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from spatialjax.solver import DENSE_MAX, RESULTS, jacobian_sigma_min, newton_iterate, shamanskii_iterate, solve_root

__all__ = ["homotopy", "HomotopyResult", "trace_path", "TracedPath", "pseudo_arclength", "Branch", "arclength_to",
           "multistart"]


class HomotopyResult(eqx.Module):
    """Outcome of :func:`homotopy`: the solution at ``lam_reached`` (== lam1 on success)."""

    value: jax.Array
    lam_reached: jax.Array
    steps: jax.Array
    newton_iterations: jax.Array
    success: jax.Array
    h_last: jax.Array


def homotopy(fn, y0, args, lam0=0.0, lam1=1.0, *, h0=0.05, h_min=1e-5, h_max=0.25,
             max_corrector=12, tol=1e-9, max_steps=2000, linear_solver="dense",
             max_krylov=400, jac=None, max_correction=0.05, reuse_jacobian=False) -> HomotopyResult:
    """Continue the root of ``fn(y, lam, args)`` from ``(y0, lam0)`` to ``lam1``.

    ``y0`` must solve ``fn(., lam0, args) = 0`` (e.g. a closed form). Pure JAX; the result
    carries no gradient (use it as the warm start of a differentiable solve at ``lam1``).
    ``jac``: optional dense Jacobian ``(y, lam, args) -> dF/dy``. ``max_correction``: a step
    is rejected (and halved) when the corrector moves ``y`` by more than this in max-norm
    from the secant prediction, which keeps the path on its branch instead of jumping to
    another equilibrium. ``reuse_jacobian``: dense corrector with one factorisation reused
    while it contracts (Shamanskii steps, see :func:`spatialjax.solver.solve_root`); much
    cheaper per continuation step when a factorisation is expensive (large N).
    """
    args = jax.lax.stop_gradient(args)
    y0 = jax.lax.stop_gradient(jnp.asarray(y0))
    dt = y0.dtype
    lam0 = jnp.asarray(lam0, dt)
    lam1 = jnp.asarray(lam1, dt)
    sign = jnp.sign(lam1 - lam0)
    span = jnp.abs(lam1 - lam0)

    # carry: y, lam, y_prev, lam_prev, h, steps, newton_its, failed
    def cond(c):
        y, lam, yp, lp, h, k, its, failed = c
        return (~failed) & (jnp.abs(lam - lam1) > 1e-14 * (1 + span)) & (k < max_steps)

    def body(c):
        y, lam, yp, lp, h, k, its, failed = c
        lam_new = lam + sign * jnp.minimum(h, jnp.abs(lam1 - lam))
        # secant predictor from the last two accepted points
        dl = lam - lp
        slope = jnp.where(jnp.abs(dl) > 0, (y - yp) / jnp.where(dl == 0, 1.0, dl), 0.0)
        y_pred = y + slope * (lam_new - lam)
        F = lambda yy: fn(yy, lam_new, args)  # noqa: E731
        Jf = None if jac is None else (lambda yy: jac(yy, lam_new, args))
        if reuse_jacobian and linear_solver == "dense":
            y_c, f_c, kk = shamanskii_iterate(F, y_pred, tol=tol, max_steps=max_corrector, jac=Jf)
        else:
            y_c, f_c, kk = newton_iterate(F, y_pred, tol=tol, max_steps=max_corrector, linear_solver=linear_solver,
                                   max_krylov=max_krylov, jac=Jf)
        # Branch-jumping guard: a corrector that moves far from the predictor has most likely
        # converged onto another branch; reject the step and halve it.
        ok = jnp.all(jnp.isfinite(y_c)) & (jnp.max(jnp.abs(f_c)) <= tol) & \
            (jnp.max(jnp.abs(y_c - y_pred)) <= max_correction)
        easy = (kk <= (8 if reuse_jacobian else 4)) & (jnp.max(jnp.abs(y_c - y_pred)) <= 0.25 * max_correction)
        y2 = jnp.where(ok, y_c, y)
        lam2 = jnp.where(ok, lam_new, lam)
        yp2 = jnp.where(ok, y, yp)
        lp2 = jnp.where(ok, lam, lp)
        h2 = jnp.where(ok, jnp.where(easy, jnp.minimum(1.5 * h, h_max), h), 0.5 * h)
        failed2 = h2 < h_min
        return y2, lam2, yp2, lp2, h2, k + 1, its + kk, failed2

    h0 = jnp.asarray(h0, dt)
    init = (y0, lam0, y0, lam0, h0, jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32), jnp.asarray(False))
    y, lam, _, _, h, k, its, failed = jax.lax.while_loop(cond, body, init)
    success = (~failed) & (jnp.abs(lam - lam1) <= 1e-14 * (1 + span))
    return HomotopyResult(value=y, lam_reached=lam, steps=k, newton_iterations=its, success=success, h_last=h)


@dataclass
class TracedPath:
    """Solutions along a grid of the continuation parameter (:func:`trace_path`)."""

    lam: np.ndarray  # (m,) the grid points reached
    y: np.ndarray  # (m, n)
    residual: np.ndarray  # (m,)
    sigma_min: np.ndarray  # (m,)
    converged: np.ndarray  # (m,) bool
    fold_at: float | None = None  # lam where the branch could not be continued (None: reached the end)
    message: str = ""

    def summary(self) -> str:
        from spatialjax.tables import format_table

        rows = [(l, r, s, c) for l, r, s, c in zip(self.lam, self.residual, self.sigma_min, self.converged)]
        notes = [self.message] if self.message else []
        return format_table(["lam", "residual", "sigma_min(J)", "converged"], rows, title="Continuation path",
                            notes=notes)


def trace_path(fn, y0, args, lams, *, tol=1e-10, h_min=1e-6, max_corrector=20, linear_solver="auto",
               progress=None) -> TracedPath:
    """Natural continuation of ``fn(y, lam, args) = 0`` over the grid ``lams``.

    Between grid points the step is subdivided adaptively (via :func:`homotopy`). At the
    first grid point that cannot be reached the trace stops and ``fold_at`` reports the
    last ``lam`` reached: typically a fold of the branch (``sigma_min`` falls towards 0
    as it is approached). ``y0`` must be (close to) a root at ``lams[0]``.
    """
    lams = np.asarray(lams, dtype=np.float64)
    n = np.shape(y0)[0]
    ls = ("dense" if n <= DENSE_MAX else "gmres") if linear_solver == "auto" else linear_solver

    @eqx.filter_jit
    def first(y, lam, a):
        return solve_root(lambda yy, aa: fn(yy, lam, aa), y, a, tol=tol, linear_solver=ls)

    @eqx.filter_jit
    def step(y, l0, l1, a):
        h = homotopy(fn, y, a, l0, l1, h0=(l1 - l0), h_max=(l1 - l0), h_min=h_min * max(1.0, 1.0),
                     max_corrector=max_corrector, tol=tol, linear_solver=ls)
        F = lambda yy: fn(yy, h.lam_reached, a)  # noqa: E731
        smin, _ = jacobian_sigma_min(F, h.value, linear_solver=ls)
        res = jnp.max(jnp.abs(F(h.value)))
        return h, smin, res

    r0 = first(jnp.asarray(y0), lams[0], args)
    ys, res, smins, conv, lam_out = [np.asarray(r0.value)], [float(r0.residual)], [float(r0.sigma_min)], \
        [bool(r0.converged)], [lams[0]]
    if not bool(r0.converged):
        return TracedPath(np.array(lam_out), np.array(ys), np.array(res), np.array(smins), np.array(conv),
                    fold_at=float(lams[0]), message=f"no equilibrium at the start lam={lams[0]}: {r0.status}")
    y = r0.value
    fold_at, msg = None, ""
    it = range(1, len(lams))
    if progress is not None:
        it = progress(it)
    for i in it:
        h, smin, r = step(y, jnp.asarray(lams[i - 1]), jnp.asarray(lams[i]), args)
        if not bool(h.success):
            fold_at = float(h.lam_reached)
            msg = (f"branch cannot be continued past lam={fold_at:.6g} (step fell below h_min; "
                   f"sigma_min(J) there = {float(smin):.3e}): a fold. Use pseudo_arclength to go around it.")
            break
        y = h.value
        ys.append(np.asarray(y))
        res.append(float(r))
        smins.append(float(smin))
        conv.append(True)
        lam_out.append(lams[i])
    return TracedPath(np.array(lam_out), np.array(ys), np.array(res), np.array(smins), np.array(conv), fold_at=fold_at,
                message=msg)


@dataclass
class Branch:
    """A branch traced by :func:`pseudo_arclength`: points ``(lam_k, y_k)`` in order of arclength."""

    lam: np.ndarray  # (m,)
    y: np.ndarray  # (m, n)
    residual: np.ndarray  # (m,)
    folds: list = field(default_factory=list)  # list of (lam, y) at the detected folds
    det_sign: np.ndarray | None = None  # sign of det(dF/dy) at each point (changes at folds)

    def summary(self) -> str:
        from spatialjax.tables import format_table

        rows = [(float(l), *(f"{v:.5g}" for v in y[:4])) for l, y in self.folds]
        return format_table(["lam at fold"] + [f"y[{i}]" for i in range(min(4, self.y.shape[1]))], rows,
                            title=f"Branch: {len(self.lam)} points, {len(self.folds)} fold(s)")


def _jz(fn, jac, z, a):
    """[F_y, F_lam] at z = (y, lam), shape (n, n+1)."""
    n = z.shape[0] - 1
    if jac is None:
        return jax.jacfwd(lambda zz: fn(zz[:n], zz[n], a))(z)
    Jy = jac(z[:n], z[n], a)
    Jl = jax.jvp(lambda l: fn(z[:n], l, a), (z[n],), (jnp.ones_like(z[n]),))[1]
    return jnp.concatenate([Jy, Jl[:, None]], axis=1)


@eqx.filter_jit
def _pal_tangent(fn, jac, z, t_prev, a):
    n = z.shape[0] - 1
    Jz = _jz(fn, jac, z, a)
    A = jnp.vstack([Jz, t_prev[None, :]])
    rhs = jnp.zeros(n + 1, z.dtype).at[n].set(1.0)
    t = jnp.linalg.solve(A, rhs)
    t = t / jnp.linalg.norm(t)
    t = jnp.where(jnp.dot(t, t_prev) < 0, -t, t)
    sgn, _ = jnp.linalg.slogdet(Jz[:, :n])
    return t, sgn


@eqx.filter_jit
def _pal_correct(fn, jac, tol, z_pred, t, a):
    n = z_pred.shape[0] - 1

    def H(z, aa):
        return jnp.concatenate([fn(z[:n], z[n], aa), jnp.dot(t, z - z_pred)[None]])

    def HJ(z, aa):
        return jnp.vstack([_jz(fn, jac, z, aa), t[None, :]])

    r = solve_root(H, z_pred, a, tol=tol, max_steps=15, diagnose=False, linear_solver="dense", jac=HJ)
    return r.value, r.residual, r.result == RESULTS.successful


def pseudo_arclength(fn, y0, args, lam0, *, ds=0.02, n_steps=400, lam_min=-np.inf, lam_max=np.inf,
                     direction=1.0, tol=1e-10, ds_min=1e-7, ds_max=0.1, jac=None) -> Branch:
    """Follow the solution branch of ``fn(y, lam, args) = 0`` through folds (dense linear algebra).

    Predictor: unit tangent ``t`` of the curve ``F(y, lam) = 0`` in ``z = (y, lam)``
    (kernel of ``[F_y F_lam]``, oriented to continue the previous one). Corrector: Newton on
    ``F(z) = 0, t . (z - z_pred) = 0``. A fold is where the ``lam``-component of ``t``
    changes sign; its location is refined by the secant rule on that component. ``y0`` is
    polished at ``lam0`` first. ``direction`` (+1/-1) is the initial direction in ``lam``.
    ``jac``: optional dense ``(y, lam, args) -> dF/dy``. Steps are compiled once per ``fn``
    (pass the same function object to reuse the compilation). Stops after ``n_steps`` or
    when ``lam`` leaves ``[lam_min, lam_max]``.
    """
    y0 = jnp.asarray(y0)
    n = y0.shape[0]
    first = solve_root(lambda yy, aa: fn(yy, lam0, aa), y0, args, tol=tol,
                       jac=None if jac is None else (lambda yy, aa: jac(yy, lam0, aa)))
    z = jnp.concatenate([first.value, jnp.asarray([lam0], y0.dtype)])
    t_prev = jnp.zeros(n + 1, z.dtype).at[n].set(direction)
    t, sgn = _pal_tangent(fn, jac, z, t_prev, args)
    lams, ys, res, dets, folds = [float(lam0)], [np.asarray(first.value)], [float(first.residual)], [float(sgn)], []
    h = ds
    for _ in range(n_steps):
        z_pred = z + h * t
        z_new, r, ok = _pal_correct(fn, jac, tol, z_pred, t, args)
        if not bool(ok):
            h *= 0.5
            if h < ds_min:
                break
            continue
        t_new, sgn_new = _pal_tangent(fn, jac, z_new, t, args)
        if np.sign(float(t_new[n])) != np.sign(float(t[n])) and float(t[n]) != 0:
            # fold between z and z_new: refine by secant on the lam-component of the tangent
            a0, a1 = float(t[n]), float(t_new[n])
            w = a0 / (a0 - a1)
            zf = z + w * (z_new - z)
            zf, _, okf = _pal_correct(fn, jac, tol, zf, t, args)
            folds.append((float(zf[n]), np.asarray(zf[:n])))
        z, t = z_new, t_new
        lams.append(float(z[n]))
        ys.append(np.asarray(z[:n]))
        res.append(float(r))
        dets.append(float(sgn_new))
        h = min(h * 1.3, ds_max)
        if not (lam_min <= float(z[n]) <= lam_max):
            break
    return Branch(np.array(lams), np.array(ys), np.array(res), folds, np.array(dets))


def arclength_to(fn, y0, args, lam0, lam_target, *, ds=0.02, n_steps=200, lam_bounds=None, tol=1e-10, jac=None):
    """Follow the branch through ``(y0, lam0)`` (e.g. where a homotopy stopped at a fold)
    by :func:`pseudo_arclength`, heading towards ``lam_target``, and return the first point
    where it crosses ``lam_target``.

    Returns ``(y_at_target, branch)``: ``y_at_target`` (shape (n,)) is the secant
    interpolation between the two branch points that straddle ``lam_target``, a start for a
    polishing solve at ``lam_target``; ``None`` if the branch never gets there within
    ``n_steps`` or leaves ``lam_bounds`` (default: the interval spanned by ``lam0`` and
    ``lam_target``, padded by 1e-12), in which case the caller must report failure.
    """
    lo, hi = lam_bounds if lam_bounds is not None else (min(lam0, lam_target), max(lam0, lam_target))
    direction = 1.0 if lam_target >= lam0 else -1.0
    br = pseudo_arclength(fn, y0, args, float(lam0), ds=ds, n_steps=n_steps, lam_min=lo - 1e-12,
                          lam_max=hi + 1e-12, direction=direction, tol=tol, jac=jac)
    d = br.lam - lam_target
    hit = np.flatnonzero(d[:-1] * d[1:] <= 0)
    if lam0 == lam_target:
        hit = hit[hit > 0]  # the starting point itself does not count
    if len(hit) == 0:
        return None, br
    k = int(hit[0])
    den = br.lam[k + 1] - br.lam[k]
    w = (lam_target - br.lam[k]) / den if den != 0 else 0.0
    return br.y[k] + w * (br.y[k + 1] - br.y[k]), br


@eqx.filter_jit
def _multistart_run(fn, tol, max_steps, method, jac, y0s, a):
    return jax.vmap(lambda y: solve_root(fn, y, a, tol=tol, max_steps=max_steps, method=method,
                                         linear_solver="dense", jac=jac))(y0s)


def multistart(fn, y0s, args, *, tol=1e-10, max_steps=100, dedupe_tol=1e-6, method="newton", jac=None):
    """Solve ``fn(y, args) = 0`` from each row of ``y0s`` (shape ``(m, n)``) in one ``vmap``.

    Returns ``(roots, counts, results)``: the distinct converged roots (by max-norm distance
    ``dedupe_tol``), how many starts reached each, and the batched :class:`SolveResult`.
    Compiled once per ``fn`` object (reuse the same function to avoid recompiling).
    """
    y0s = jnp.asarray(y0s)
    res = _multistart_run(fn, tol, max_steps, method, jac, y0s, args)
    vals = np.asarray(res.value)
    conv = np.array([s == "successful" for s in res.status])
    roots, counts = [], []
    for v in vals[conv]:
        for i, r in enumerate(roots):
            if np.max(np.abs(v - r)) < dedupe_tol * (1 + np.max(np.abs(r))):
                counts[i] += 1
                break
        else:
            roots.append(v)
            counts.append(1)
    return roots, counts, res
