r"""Thisse, Turner & Ushchev (2023), "Foundations of Cities": every equilibrium and its stability.

Three locations ``(-1, 0, 1)`` with one unit of land each, a continuum of households with
Fréchet(ε) tastes over residence–workplace pairs (1)–(3), commuting costs
``τ_ij = τ^{|i-j|}`` (4), spatial discount factor ``φ = τ^{-ε}`` (5), Cobb–Douglas production
``Y_j = A_j L_j^α N_j^{1-α}`` (10) with TFP ``A_0 = C_0 L_0^γ + 2δ L_1``,
``A_1 = C_1 L_1^γ + δ L_0 + δ² L_1`` (11). Symmetric patterns; lower-case letters are
centre/periphery ratios (``b = B_0/B_1``, ``c = C_0/C_1``, ``d = D_0/D_1``); the levels are
normalised by ``B_1 = C_1 = D_1 = 1``.

Solution method (robust version of Proposition 2)
--------------------------------------------------
Let ``Ω = ω^{(1+ε)/ε}``. Market clearing (24) — written as (B.1), ``λ(r, w) = 1`` — defines a
strictly decreasing relation between ``ρ ∈ (ρ_m, ρ_M)`` and ``Ω ∈ (0, ∞)`` (Lemma 1). The paper
uses ρ as the unknown; just above ``γ_m = α/ε`` the extreme roots have ``|log Ω|`` in the
hundreds, i.e. ``ρ - ρ_m`` or ``ρ_M - ρ`` far below machine precision, so they cannot be
located in ρ. We therefore scan in ``y = log Ω`` and recover ``log ρ(y)`` on the market-clearing
locus by a monotone (bracketed) solve of (B.1) written entirely in logs. Interior equilibria are
the roots of the zero-profit residual (second line of (25), valid for every δ ≥ 0)::

    Z(y) = y - ψ log ρ(y) - (1+ε)/α · [log a(ℓ) - log Ψ],   log ℓ = ε/(1+ε)·y + log Q(ρ(y)),
    Q(ρ) = (ρ + 2φ)/(φρ + 1 + φ²)   (23),  a(ℓ) = A_0/A_1  (16),  Ψ = (b^{1/η} d^{-1})^α.

All roots are found by a dense sign-change scan over a grid of y that provably contains every
root (a core grid plus geometric tails out to an explicit bound: for δ = 0,
``|y*| ≤ max|h| / |1 - γε/α|``), bisection inside each bracket to machine precision, and a final
Newton step that carries exact implicit derivatives (so ``jax.grad`` through a root gives
``dy*/dθ = -Z_θ / Z_y``). A pair of roots closer than the grid spacing (only next to a fold)
leaves no sign change but a discrete extremum of Z; the stationary point is located by bisection
on ``dZ/dy`` and the pair is split there, so roots 1e-9 (relative γ) before a fold are kept.

Corner equilibria (Proposition 6, δ = 0, γ > 0): employment (0, 1, 0) at ``ρ = ρ_m, ω = ∞`` and
(1/2, 0, 1/2) at ``ρ = ρ_M, ω = 0``; levels from Appendix N *with* the β the printed version
omits: ``N̄_0 = (1-α)/(1-α+αβ s_00)``, ``R̄_{±1} = β s_{±1,0} W̄_0``.

Stability (Definition 3) is tested directly: the conditional equilibrium prices ``W̄(s), R̄(s)``
for an arbitrary (not necessarily symmetric) commuting matrix s solve the producers' first-order
conditions (P.1)–(P.2) and land clearing (9) with (P.3); we move a mass Δ of households from a
pair ij to a pair kl, recompute the prices, and differentiate the utility of the indifferent
household, ``log(W̄_l R̄_k^{-β}) - log(W̄_j R̄_i^{-β})``, with forward-mode autodiff. The
equilibrium is unstable if that derivative is positive for some move. ``stable`` uses the moves
of Appendix P (residence-only or workplace-only, centre <-> periphery, mirror-symmetric); the
single-pair and "all moves" variants are reported beside it. The autodiff gains reproduce
(P.14) and the corrected (P.15) to 1e-9 (tests). The printed closed form (Φ, Ψ in Appendix P) is
not used: it lacks a factor (ρ + 2φ) and (P.15) drops a ``-αβw`` term.

Locations are indexed ``0, 1, 2`` for ``-1, 0, 1`` throughout (rows of ``s`` are residences,
columns workplaces).
"""

from __future__ import annotations

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import spatialjax  # noqa: F401  (float64)
from spatialjax.errors import ConvergenceError, ParameterError
from spatialjax.results import Equilibria, Result
from spatialjax.scalar import SCALAR_STATUSES, bisect, bracket_root
from spatialjax.solver import solve_root
from spatialjax.tables import format_table
from spatialjax.validation import check_finite, check_interval, check_positive

__all__ = [
    "Params", "Equilibrium", "Equilibria", "equilibria", "rho_bounds", "rho_L", "f_curve",
    "g_curve", "gamma_of_rho", "folds", "gamma_s", "commuting_shares", "conditional_prices", "full_residuals",
    "sensitivities", "stability_gains", "expected_utility", "sweep_gamma", "threshold_c_bar", "threshold_c_tilde",
    "PARAM_NAMES",
]

PARAM_NAMES = ("alpha", "beta", "eps", "tau", "gamma", "delta", "b", "c", "d")

# Grid and iteration sizes (static: one compile per shape).
_N_CORE = 2049       # core scan points on y ∈ log d ± _Y_CORE
_Y_CORE = 80.0       # beyond this ρ(y) equals ρ_m / ρ_M to machine precision
_N_TAIL = 256        # geometric tail points on each side
_K = 8               # maximum number of interior roots returned
_NEWTON_CP = 60      # at most this many Newton steps for the conditional prices (solve_root)
_CP_TOL = 1e-13      # conditional prices: max-norm tolerance of the log land-clearing equations
_ROOT_TOL = 1e-9     # implicit-derivative re-solve of an interior root in y (sensitivities)
_SAME_ATOL = 1e-12   # an interior root is a corner in float64 when s, W, R agree to this (see equilibria)
_LOG_CLAMP = 700.0   # exponent clamp in the spillover terms of (11)


def _f64(x):
    return jnp.asarray(x, dtype=jnp.float64)


class Params(eqx.Module):
    """Parameters of the model (all scalars; batch them with ``jax.vmap``).

    alpha: labour share α ∈ (0, 1) in (10); stability (Appendix N/P) needs α > 1/2.
    beta: land share β ∈ (0, 1) of consumption.
    eps: Fréchet shape ε > 0 in (1); expected utility (27)–(28) needs ε > 1.
    tau: commuting cost τ > 1 per unit distance (4).
    gamma: local increasing returns γ ≥ 0 in (11).
    delta: spillover δ ∈ [0, 1] in (11) (δ = e^{-σ} ≤ 1, Section 3A).
    b, c, d: central/peripheral ratios of residential amenity, first-nature TFP and workplace
        amenity, all > 0.
    """

    alpha: jax.Array = eqx.field(converter=_f64, default=0.6)
    beta: jax.Array = eqx.field(converter=_f64, default=0.3)
    eps: jax.Array = eqx.field(converter=_f64, default=6.0)
    tau: jax.Array = eqx.field(converter=_f64, default=1.2)
    gamma: jax.Array = eqx.field(converter=_f64, default=0.0)
    delta: jax.Array = eqx.field(converter=_f64, default=0.0)
    b: jax.Array = eqx.field(converter=_f64, default=1.0)
    c: jax.Array = eqx.field(converter=_f64, default=1.0)
    d: jax.Array = eqx.field(converter=_f64, default=1.0)

    def __check_init__(self):
        check_interval("alpha", self.alpha, 0.0, 1.0)
        check_interval("beta", self.beta, 0.0, 1.0)
        check_positive("eps", self.eps)
        check_interval("tau", self.tau, 1.0, None)
        check_positive("gamma", self.gamma, strict=False)
        check_interval("delta", self.delta, 0.0, 1.0, lo_open=False, hi_open=False)
        for name in ("b", "c", "d"):
            check_positive(name, getattr(self, name))

    @classmethod
    def from_dict(cls, values: dict) -> "Params":
        """Build from a mapping; unknown keys raise ParameterError naming them."""
        unknown = sorted(set(values) - set(PARAM_NAMES))
        if unknown:
            raise ParameterError(unknown[0], f"unknown parameter; allowed keys are {', '.join(PARAM_NAMES)}")
        return cls(**values)

    def to_dict(self) -> dict:
        """The parameters as plain floats (scalar parameters only)."""
        return {k: float(getattr(self, k)) for k in PARAM_NAMES}

    def replace(self, **kw) -> "Params":
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(kw) - set(PARAM_NAMES))
        if unknown:
            raise ParameterError(unknown[0], f"unknown parameter; allowed keys are {', '.join(PARAM_NAMES)}")
        vals = {k: getattr(self, k) for k in PARAM_NAMES}
        vals.update(kw)
        return Params(**vals)

    # Derived constants -------------------------------------------------------------------
    @property
    def phi(self):
        """Spatial discount factor φ = τ^{-ε} (5)."""
        return self.tau ** (-self.eps)

    @property
    def eta(self):
        """η = αβ/(1-α) (18)."""
        return self.alpha * self.beta / (1.0 - self.alpha)

    @property
    def psi(self):
        """ψ = (1-α)(1+ε)/(αβε) = (1+ε)/(ηε) (19)."""
        return (1.0 + self.eps) / (self.eta * self.eps)

    @property
    def gamma_m(self):
        """γ_m = α/ε, the weak/moderate IRS threshold (Definition 2)."""
        return self.alpha / self.eps

    @property
    def gamma_strong(self):
        """(1+ε)/((1-β)ε) - α: above it the interior equilibrium is unique (Proposition 9)."""
        return (1.0 + self.eps) / ((1.0 - self.beta) * self.eps) - self.alpha

    @property
    def log_Psi(self):
        """log Ψ, Ψ = (b^{1/η} d^{-1})^α (Proposition 2)."""
        return self.alpha * (jnp.log(self.b) / self.eta - jnp.log(self.d))


def _require_scalar(p: Params) -> None:
    for k in PARAM_NAMES:
        if np.ndim(getattr(p, k)) != 0:
            raise ParameterError(k, f"must be a scalar here (use sweep_gamma or jax.vmap for batches); got shape {np.shape(getattr(p, k))}")


# --------------------------------------------------------------------------------------
# Building blocks, all in logs
# --------------------------------------------------------------------------------------

def _lse(*xs):
    xs = jnp.broadcast_arrays(*xs)
    return jax.nn.logsumexp(jnp.stack(xs), axis=0)


def _log_phi(p):
    return -p.eps * jnp.log(p.tau)


def _land_residual(p, x, lp, lq):
    """Relative land market clearing (B.1), ``λ = 1``, as ``log LHS - log RHS`` in ``x = log ρ``.

    ``lp = log(Ω'/(1+Ω'))``, ``lq = log(1/(1+Ω'))`` with ``Ω' = Ω/d``; numerator and denominator
    of (B.1) are divided by ``1 + Ω'`` so that Ω ∈ [0, ∞] is representable. Increasing in x.
    """
    lphi = _log_phi(p)
    eta = p.eta
    num = _lse(jnp.log1p(eta) + lp + x, jnp.log(2.0) + lphi + lp, jnp.log(2.0 * eta) + lphi + lq + x)
    den = _lse(lphi + lq + x, jnp.log(eta) + lphi + lp, jnp.log1p(jnp.exp(2 * lphi)) + jnp.log1p(eta) + lq)
    return num + x / (p.beta * p.eps) - jnp.log(p.b) / p.beta - den


def _rho_bracket(p):
    lphi = _log_phi(p)
    return 20.0 + p.eps * jnp.abs(jnp.log(p.b)) + (1.0 + p.beta * p.eps) * (
        jnp.abs(jnp.log(p.eta)) + jnp.log1p(p.eta) - lphi + 2.0)


def _log_rho_bounds(p):
    """(log ρ_m, log ρ_M): ends of the market-clearing locus (Lemma 1; (C.1), (C.2), (E.1))."""
    return tuple(r.value for r in _log_rho_bounds_roots(p))


def _bound_m(x, p):
    return _land_residual(p, x, 0.0, -jnp.inf)


def _bound_M(x, p):
    return _land_residual(p, x, -jnp.inf, 0.0)


def _log_rho_bounds_roots(p):
    """The two ends of the locus as :class:`spatialjax.scalar.ScalarRoot` (bracketed solves of
    (B.1) at Ω = ∞ and Ω = 0; status-checked, implicit derivatives in the parameters)."""
    B = jax.lax.stop_gradient(_rho_bracket(p))
    return bracket_root(_bound_m, -B, B, p), bracket_root(_bound_M, -B, B, p)


_log_rho_bounds_jit = jax.jit(_log_rho_bounds)


def _log_rho_of_y(p, y, lrm, lrM):
    """log ρ on the market-clearing locus (24) at ``y = log Ω`` (monotone bracketed solve)."""
    u = y - jnp.log(p.d)
    lp, lq = jax.nn.log_sigmoid(u), jax.nn.log_sigmoid(-u)
    lo = jax.lax.stop_gradient(jnp.minimum(lrm, lrM) - 1e-9)
    hi = jax.lax.stop_gradient(jnp.maximum(lrm, lrM) + 1e-9)
    # (B.1) is strictly increasing in x with a sign change on [ρ_m, ρ_M] (Lemma 1): NaN (status
    # no_solution/nonfinite) otherwise, never an end of the bracket; the value carries the exact
    # implicit derivative in y and the parameters (NaN where the root is not regular).
    return bracket_root(_land_at_y, lo, hi, (p, lp, lq)).value


def _land_at_y(x, a):
    p, lp, lq = a
    return _land_residual(p, x, lp, lq)


def _log_Q(p, x):
    """log Q(ρ), Q(ρ) = (ρ + 2φ)/(φρ + 1 + φ²), the factor in ℓ = ω Q(ρ) (23)."""
    lphi = _log_phi(p)
    return jnp.logaddexp(x, jnp.log(2.0) + lphi) - jnp.logaddexp(lphi + x, jnp.log1p(jnp.exp(2 * lphi)))


def _log_A(p, lL):
    """log TFP (11) for a (possibly asymmetric) employment vector given as log L (3,).

    Written as ``log(C L^γ) + log1p(spillover/(C L^γ))`` so that it is finite and
    differentiable at δ = 0 (Proposition 5(ii) needs d/dδ there).
    """
    g, dl = p.gamma, p.delta
    clip = lambda z: jnp.minimum(z, _LOG_CLAMP)
    lc = jnp.log(p.c)
    own0 = lc + g * lL[1]
    A0 = own0 + jnp.log1p(dl * jnp.exp(clip(jnp.logaddexp(lL[0], lL[2]) - own0)))
    ownm = g * lL[0]
    Am = ownm + jnp.log1p(dl * jnp.exp(clip(lL[1] - ownm)) + dl ** 2 * jnp.exp(clip(lL[2] - ownm)))
    ownp = g * lL[2]
    Ap = ownp + jnp.log1p(dl * jnp.exp(clip(lL[1] - ownp)) + dl ** 2 * jnp.exp(clip(lL[0] - ownp)))
    return jnp.stack([Am, A0, Ap])


def _log_L_of_ell(lell):
    """log (L_{-1}, L_0, L_1) of a symmetric pattern with ℓ = L_0/L_1, L_0 + 2L_1 = 1."""
    lL1 = -jnp.logaddexp(lell, jnp.log(2.0))
    return jnp.stack([lL1, lell + lL1, lL1])


def _log_a(p, lell):
    """log a(ℓ) = log(A_0/A_1) (16)."""
    lA = _log_A(p, _log_L_of_ell(lell))
    return lA[1] - lA[2]


def _Z_fn(y, a):
    p, lrm, lrM = a
    return _Z(p, y, lrm, lrM)


def _Z(p, y, lrm, lrM):
    """Zero-profit residual at y = log Ω on the market-clearing locus (second line of (25))."""
    x = _log_rho_of_y(p, y, lrm, lrM)
    lell = p.eps / (1.0 + p.eps) * y + _log_Q(p, x)
    return y - p.psi * x - (1.0 + p.eps) / p.alpha * (_log_a(p, lell) - p.log_Psi)


def _y_bound(p, lrm, lrM):
    """|y*| ≤ bound for every interior root (see module docstring)."""
    Hrho = p.psi * jnp.maximum(jnp.abs(lrm), jnp.abs(lrM))
    lQmax = jnp.maximum(jnp.abs(_log_Q(p, lrm)), jnp.abs(_log_Q(p, lrM)))
    k = 1.0 - p.gamma * p.eps / p.alpha
    h0 = Hrho + (1.0 + p.eps) / p.alpha * (jnp.abs(jnp.log(p.c)) + p.gamma * lQmax + jnp.abs(p.log_Psi))
    Y0 = h0 / jnp.maximum(jnp.abs(k), 1e-300)
    # δ > 0: a(ℓ) is bounded; bound |log a| on a grid of L_0 ∈ [0, 1] with a safety margin.
    L0 = jnp.linspace(0.0, 1.0, 1025)
    L1 = 0.5 * (1.0 - L0)
    A0 = p.c * L0 ** p.gamma + 2.0 * p.delta * L1
    A1 = L1 ** p.gamma + p.delta * L0 + p.delta ** 2 * L1
    Ba = 1.5 * jnp.max(jnp.abs(jnp.log(A0) - jnp.log(A1))) + 5.0
    Yd = Hrho + (1.0 + p.eps) / p.alpha * (Ba + jnp.abs(p.log_Psi))
    Y = jnp.where(p.delta > 0, jnp.minimum(Yd, Y0), Y0)
    Y = jnp.where(jnp.isfinite(Y), Y, 1e15)
    return jnp.clip(1.2 * Y + 10.0, 2 * _Y_CORE, 1e15)


def _scan_grid(p, Y):
    c0 = jnp.log(p.d)
    core = c0 + jnp.linspace(-_Y_CORE, _Y_CORE, _N_CORE)
    t = jnp.linspace(0.0, 1.0, _N_TAIL + 1)[1:]
    ext = _Y_CORE * (jnp.maximum(Y + jnp.abs(c0), _Y_CORE * 1.01) / _Y_CORE) ** t
    return jnp.concatenate([c0 - ext[::-1], core, c0 + ext])


# --------------------------------------------------------------------------------------
# Equilibrium objects from (log ρ, log ω)
# --------------------------------------------------------------------------------------

def _log_s(p, x, lw):
    """log of the commuting matrix (7) (rows: residence -1,0,1; columns: workplace)."""
    lphi = _log_phi(p)
    zero = jnp.zeros_like(x + lw)
    M = jnp.stack([
        jnp.stack([zero, lphi + lw, 2 * lphi + zero]),
        jnp.stack([lphi + x, x + lw, lphi + x]),
        jnp.stack([2 * lphi + zero, lphi + lw, zero]),
    ])
    return M - jax.nn.logsumexp(M)


def commuting_shares(params: Params, rho, omega):
    """Commuting shares s_ij (7) for given ρ, ω. Returns (3, 3): rows residence, columns workplace,
    both ordered (-1, 0, 1)."""
    return jnp.exp(_log_s(params, jnp.log(_f64(rho)), jnp.log(_f64(omega))))


def _levels(p, x, lw):
    """All quantities of Proposition 1 / Appendix A at an interior (ρ, ω) (logs where positive)."""
    ls = _log_s(p, x, lw)
    lL = jax.nn.logsumexp(ls, axis=0)
    lM = jax.nn.logsumexp(ls, axis=1)
    lwage = lw / p.eps - jnp.log(p.d)                        # log w, from (6)
    lWrel = jnp.stack([0.0 * lwage, lwage, 0.0 * lwage])      # W_j / W_1
    # H_i/N_i = η Σ_j s_ij W_j / (W_i L_i)   ((A.1)–(A.2))
    lhn = jnp.log(p.eta) + jax.nn.logsumexp(ls + lWrel[None, :], axis=1) - lWrel - lL
    lN = -jax.nn.softplus(lhn)
    lH = lhn + lN
    v = lN - lL                                               # log(N_j / L_j)
    lA = _log_A(p, lL)
    lW = jnp.log(p.alpha) + lA + (1.0 - p.alpha) * v          # (P.1)
    lR = jnp.log(1.0 - p.alpha) + lA - p.alpha * v            # (P.2)
    return dict(ls=ls, lL=lL, lM=lM, lN=lN, lH=lH, lA=lA, lW=lW, lR=lR, v=v)


_levels_jit = jax.jit(_levels)


# --------------------------------------------------------------------------------------
# Conditional prices and Definition-3 stability
# --------------------------------------------------------------------------------------

def _cp_residual(p, v, ls, lA, lL):
    """Land clearing with (P.1)–(P.3): log[(1-α)A_i e^{-αv_i}] - log[(1-α)A_i L_i e^{(1-α)v_i}
    + αβ Σ_j s_ij A_j e^{(1-α)v_j}] with v_i = log(N_i/L_i). Shape (3,)."""
    a = p.alpha
    lu = lA + (1.0 - a) * v                               # log(W_j/α)
    rhs = jnp.logaddexp(jnp.log(1.0 - a) + lA + lL + (1.0 - a) * v,
                        jnp.log(a * p.beta) + jax.nn.logsumexp(ls + lu[None, :], axis=1))
    return jnp.log(1.0 - a) + lA - a * v - rhs


def _cp_fn(v, a):
    p, ls, lA, lL = a
    return _cp_residual(p, v, ls, lA, lL)


def _solve_cp(p, ls, v0):
    """The conditional-price system (P.1)–(P.3), (9) for ``v = log(N/L)`` (3,) at log shares ``ls``,
    by :func:`spatialjax.solver.solve_root` (dense Newton with line search) from ``v0``: a
    :class:`~spatialjax.solver.SolveResult` whose value has the implicit derivative in ``p`` and
    ``ls`` — NaN when the solve did not converge or the Jacobian is (near-)singular."""
    lL = jax.nn.logsumexp(ls, axis=0)
    lA = _log_A(p, lL)
    sol = solve_root(_cp_fn, jax.lax.stop_gradient(v0), (p, ls, lA, lL), linear_solver="dense",
                     tol=_CP_TOL, max_steps=_NEWTON_CP)
    return sol, lA


def _conditional_log_prices(p, ls, v0):
    """Conditional equilibrium prices W̄(s), R̄(s) (Appendix N step 1 / P step 1) for a commuting
    matrix with log shares ``ls`` (3, 3), all L_j > 0. Returns (log W̄ (3,), log R̄ (3,), v,
    residual, status code of :class:`spatialjax.solver.RESULTS`)."""
    sol, lA = _solve_cp(p, ls, v0)
    v = sol.value
    lW = jnp.log(p.alpha) + lA + (1.0 - p.alpha) * v
    lR = jnp.log(1.0 - p.alpha) + lA - p.alpha * v
    return lW, lR, v, sol.residual, sol.result


def conditional_prices(params: Params, s, v0=None):
    """Conditional equilibrium wages and rents for a commuting matrix ``s`` (3, 3), every
    column sum (employment) > 0: the prices that clear land markets (9) with producers on
    their first-order conditions (P.1)–(P.2) and TFP (11), employment fixed by s.

    Returns a dict with W, R, N, H (3,), ``residual`` (max abs of the log land-clearing
    equations), ``status`` (a name of :data:`spatialjax.results.STATUSES`: ``successful``, or
    why the Newton solve failed) and ``converged``. Solved by :func:`spatialjax.solver.solve_root`."""
    s = _f64(s)
    check_finite("s", s)
    if np.shape(s) != (3, 3):
        raise ParameterError("s", f"must have shape (3, 3); got {np.shape(s)}")
    if np.any(np.asarray(s) < 0) or np.any(np.asarray(s).sum(axis=0) <= 0):
        raise ParameterError("s", "entries must be >= 0 with every column sum (employment) > 0")
    ls = jnp.log(s)
    v0 = jnp.zeros(3) if v0 is None else _f64(v0)
    lW, lR, v, res, result = _conditional_log_prices_jit(params, ls, v0)
    lL = jax.nn.logsumexp(ls, axis=0)
    N = jnp.exp(v + lL)
    status = _solver_status(result)
    return dict(W=np.asarray(jnp.exp(lW)), R=np.asarray(jnp.exp(lR)), N=np.asarray(N),
                H=np.asarray(1.0 - N), residual=float(res), status=status, converged=status == "successful")


def _solver_status(result) -> str:
    """Name of a (concrete, scalar) :class:`spatialjax.solver.RESULTS` item."""
    from spatialjax.solver import status_names

    names = status_names(result)
    return names[0] if names else "nonfinite"


_conditional_log_prices_jit = jax.jit(_conditional_log_prices)

_MIRROR = np.array([[(2 - i) * 3 + (2 - j) for j in range(3)] for i in range(3)]).ravel()


def _move_directions():
    """All moves ij -> kl (ij != kl): pair (Definition 3 literally) and mirror-symmetric
    (Appendix P: the pattern stays symmetric). Returns (src, dst, D_pair (72, 9), D_sym (72, 9))."""
    src, dst = [], []
    for a in range(9):
        for b in range(9):
            if a != b:
                src.append(a)
                dst.append(b)
    src, dst = np.array(src), np.array(dst)
    E = np.eye(9)
    Dp = E[dst] - E[src]
    Ds = 0.5 * (Dp + E[_MIRROR[dst]] - E[_MIRROR[src]])
    return src, dst, Dp, Ds


_SRC, _DST, _D_PAIR, _D_SYM = _move_directions()
# Appendix P's move set: change residence only (0j <-> 1j) or workplace only (i0 <-> i1), between
# the centre and a periphery (moves between the two peripheries are neutral when mirrored).
_I, _J, _K_, _L_ = _SRC // 3, _SRC % 3, _DST // 3, _DST % 3
_PAPER_MOVES = ((_J == _L_) & ((_I == 1) | (_K_ == 1))) | ((_I == _K_) & ((_J == 1) | (_L_ == 1)))
_ONE_COORD = (_I == _K_) | (_J == _L_)


def _stability_gains(p, ls, v):
    """d/dΔ of the indifferent household's log-utility gain for every move ij -> kl, both for
    single-pair moves and mirror-symmetric moves (Definition 3; (P.8)–(P.11)). Shapes (72,), (72,)."""
    def prices(ls_flat):
        # v solves the conditional-price system at ls (the equilibrium levels); solve_root
        # re-solves it from v (converging at once) and differentiates it implicitly (IFT): the
        # derivatives are NaN — hence "not stable", never a plausible number — when the system
        # is not solved or its Jacobian is (near-)singular at the equilibrium.
        lsm = ls_flat.reshape(3, 3)
        sol, lA = _solve_cp(p, lsm, v)
        lW = jnp.log(p.alpha) + lA + (1.0 - p.alpha) * sol.value
        lR = jnp.log(1.0 - p.alpha) + lA - p.alpha * sol.value
        return jnp.concatenate([lW, lR])

    lsf = ls.reshape(9)
    J = jax.jacrev(prices)(lsf)                   # (6, 9) w.r.t. log s (reverse mode: solve_root's adjoint)
    s = jnp.exp(lsf)
    i, j = _SRC // 3, _SRC % 3
    k, l = _DST // 3, _DST % 3

    def gains(D):
        dX = (J @ (D / s[None, :]).T).T            # (72, 6): d(log W, log R) per unit mass moved
        dW, dR = dX[:, :3], dX[:, 3:]
        idx = jnp.arange(D.shape[0])
        return (dW[idx, l] - p.beta * dR[idx, k]) - (dW[idx, j] - p.beta * dR[idx, i])

    return gains(jnp.asarray(_D_PAIR)), gains(jnp.asarray(_D_SYM))


def _gains_at_impl(p, x, lw):
    lv = _levels(p, x, lw)
    return _stability_gains(p, lv["ls"], lv["v"])


_gains_at = jax.jit(_gains_at_impl)


def stability_gains(params: Params, eq: "Equilibrium") -> dict:
    """Definition-3 gains at an interior equilibrium: for every move ij -> kl (72 of them; pairs
    indexed 3·i + j with locations (-1, 0, 1) -> (0, 1, 2)), the derivative of the indifferent
    household's log-utility gain per unit mass moved; > 0 destabilises. Returns dict with
    ``src``, ``dst`` (72,), ``pair`` (single-pair moves) and ``symmetric`` (mirror-symmetric
    moves) gains, and the boolean mask ``paper_moves`` of Appendix P's move set."""
    if eq.kind != "interior":
        raise ParameterError("eq", "stability gains by autodiff are defined at interior equilibria")
    gp, gs = _gains_at(params, _f64(eq.log_rho), _f64(eq.log_omega))
    return dict(src=_SRC.copy(), dst=_DST.copy(), pair=np.asarray(gp), symmetric=np.asarray(gs),
                paper_moves=_PAPER_MOVES.copy())


def _verdict(g):
    """Stable iff no move makes the indifferent household strictly better off (Definition 3);
    gains within 1e-9 (relative) of zero are neutral (e.g. swapping mirror-image pairs)."""
    gf = jnp.where(jnp.isfinite(g), g, 0.0)
    scale = 1.0 + jnp.max(jnp.abs(gf))
    return (jnp.max(g) <= 1e-9 * scale) & ~jnp.any(jnp.isnan(g))


# --------------------------------------------------------------------------------------
# The core: every interior root, vmappable
# --------------------------------------------------------------------------------------

def _interior_core(p: Params):
    """All interior equilibria as fixed-size arrays (vmappable). See ``equilibria``."""
    lrm, lrM = _log_rho_bounds(p)
    lrm, lrM = jax.lax.stop_gradient(lrm), jax.lax.stop_gradient(lrM)
    Y = _y_bound(p, lrm, lrM)
    grid = _scan_grid(p, Y)
    Zg = jax.vmap(lambda y: _Z(p, y, lrm, lrM))(grid)
    pos = Zg > 0
    ch = pos[1:] != pos[:-1]
    # (1) brackets from sign changes on the grid
    idx = jnp.nonzero(ch, size=_K, fill_value=0)[0]
    v1 = jnp.arange(_K) < jnp.sum(ch)
    lo1, hi1 = grid[idx], grid[idx + 1]
    # (2) a pair of roots closer than the grid spacing (next to a fold) leaves no sign change but a
    # discrete extremum of Z: locate the stationary point by bisection on dZ/dy and split there
    # if Z changes sign (the _K candidates with the smallest |Z| are examined).
    dZ = jnp.diff(Zg)
    cand = (dZ[:-1] * dZ[1:] < 0) & ~ch[:-1] & ~ch[1:]
    ci = jnp.argsort(jnp.where(cand, jnp.abs(Zg[1:-1]), jnp.inf))[:_K]
    cvalid = cand[ci]
    a, c = grid[ci], grid[ci + 2]
    zfun = lambda y: _Z(p, y, lrm, lrM)
    dzfun = jax.grad(zfun)
    # only the value of the stationary point is needed (it splits a bracket); the bracket of the
    # bisection on dZ/dy is checked: dZ/dy must change sign between a and c
    dza, dzc = jax.vmap(dzfun)(a), jax.vmap(dzfun)(c)
    ystar = jax.vmap(lambda u, w: bisect(dzfun, u, w, 100))(a, c)
    split = cvalid & (jnp.sign(dza) != jnp.sign(dzc)) & (jnp.sign(jax.vmap(zfun)(ystar)) != jnp.sign(Zg[ci + 1]))
    los = jnp.concatenate([lo1, a, ystar])
    his = jnp.concatenate([hi1, ystar, c])
    vs = jnp.concatenate([v1, split, split])
    n_roots = jnp.sum(ch) + 2 * jnp.sum(split)
    order = jnp.argsort(jnp.where(vs, los, jnp.inf))[:_K]
    lo, hi = los[order], his[order]
    valid = jnp.arange(_K) < n_roots

    # every bracket is refined by the shared bracketing root finder: status per root (singular at a
    # double root, no_solution if the bracket lost its sign change, ...) and the implicit
    # derivative dy*/dθ = -Z_θ/Z_y, NaN where the root is not regular (never a silent zero)
    roots = jax.vmap(lambda a_, b_: bracket_root(_Z_fn, a_, b_, (p, lrm, lrM)))(lo, hi)
    y, code = roots.value, roots.code
    # order by ρ ascending, i.e. y descending along the market-clearing locus; unused slots last
    order = jnp.argsort(jnp.where(valid, jnp.where(jnp.isfinite(y), -y, 1e300), jnp.inf))   # failed roots last
    y, code = y[order], jnp.where(valid[order], code[order], -1)
    valid = valid[order]
    x = jax.vmap(lambda yy: _log_rho_of_y(p, yy, lrm, lrM))(y)
    lw = p.eps / (1.0 + p.eps) * y
    z = jax.vmap(lambda yy: _Z(p, yy, lrm, lrM))(y)

    def stab(xx, ww):
        lv = _levels(p, xx, ww)
        gp, gs = _stability_gains(p, lv["ls"], lv["v"])
        g1 = jnp.where(jnp.asarray(_PAPER_MOVES), gs, -jnp.inf)
        return jnp.max(g1), _verdict(g1), _verdict(jnp.where(jnp.asarray(_ONE_COORD), gp, -jnp.inf)), _verdict(gs)

    m_sym, st_sym, st_pair, st_all = jax.vmap(stab)(x, lw)
    return dict(y=y, log_rho=x, log_omega=lw, valid=valid, n_roots=n_roots, Z=z, root_code=code,
                margin_sym=m_sym, stable_sym=st_sym, stable_pair=st_pair, stable_all=st_all,
                log_rho_m=lrm, log_rho_M=lrM, grid_finite=jnp.all(jnp.isfinite(Zg)), Y=Y,
                n_fold_pairs=jnp.sum(split))


_FAST_COMPILE = {"xla_backend_optimization_level": 0}   # compile time dominates; runs stay ~10 ms
_interior_core_jit = jax.jit(_interior_core, compiler_options=_FAST_COMPILE)



# --------------------------------------------------------------------------------------
# Public results
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Equilibrium(Result):
    """One spatial equilibrium (Definition 1). Arrays are ordered over locations (-1, 0, 1).

    rho, omega: amenity-adjusted relative rent and wage (6) (ω = inf / 0 at the corners).
    ell: L_0/L_1 (23). s: commuting shares (3, 3) (7). L, M, N, H, W, R: employment, residents,
    commercial and residential land, wages, rents (3,). kind: "interior" or "corner".
    stable: Definition 3 for the moves of Appendix P (change residence only, or workplace only,
    between the centre and a periphery, in either direction), each applied mirror-symmetrically
    so the pattern stays symmetric — the paper's notion (Figure 2). stable_pair: every
    residence-only or workplace-only move applied to a single pair (symmetry-breaking).
    stable_all: mirror-symmetric moves including "diagonal" ones that change residence and
    workplace at once (Definition 3 read literally for every kl != ij).
    stability_margin: max over the Appendix-P moves of the indifferent household's log-utility
    gain per unit mass moved (> 0 means unstable; +inf at corners). residual: |Z| at the root (interior).
    full_residual: max abs residual of the primitive system (3), (9), (12)–(15).
    status: "successful" (interior: full_residual below 1e-9 plus the log-space rounding floor;
    corners: closed form) or "max_steps_reached" (the root's full residual is above it);
    converged is derived from it (:mod:`spatialjax.results`). message: detail, "" if none.
    """

    kind: str
    rho: float
    omega: float
    ell: float
    log_rho: float
    log_omega: float
    s: np.ndarray
    L: np.ndarray
    M: np.ndarray
    N: np.ndarray
    H: np.ndarray
    W: np.ndarray
    R: np.ndarray
    stable: bool | None
    stable_pair: bool | None
    stable_all: bool | None
    stability_margin: float
    residual: float
    full_residual: float
    status: str = "successful"
    message: str = ""

    @property
    def pattern(self) -> str:
        """Employment pattern: "bell" (L_0 > L_1), "U" (L_0 < L_1) or "flat"."""
        if 0 < self.ell < math.inf and abs(math.log(self.ell)) < 1e-9:
            return "flat"
        return "bell" if self.ell > 1 else "U"

    def summary(self) -> str:
        return format_table(["quantity", "value"],
                            [("kind", self.kind), ("pattern", self.pattern), ("rho", self.rho), ("omega", self.omega),
                             ("ell = L_0/L_1", self.ell), ("L (-1, 0, 1)", ", ".join(f"{v:.4g}" for v in self.L)),
                             ("W (-1, 0, 1)", ", ".join(f"{v:.4g}" for v in self.W)),
                             ("R (-1, 0, 1)", ", ".join(f"{v:.4g}" for v in self.R)),
                             ("stable (Definition 3)", _fmt_stable(self.stable)),
                             ("full residual", self.full_residual), ("status", self.status)],
                            title="Thisse-Turner-Ushchev equilibrium", digits=6,
                            notes=[self.message] if self.message else ())

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["pattern"] = self.pattern
        return d

    def as_dict(self) -> dict:
        """Alias of :meth:`to_dict` (JSON-safe: non-finite numbers become None)."""
        return self.to_dict()


def _fmt_stable(v):
    return "n/a" if v is None else ("stable" if v else "unstable")


def _summary_table(eqs: Equilibria) -> str:
    """The table of :func:`equilibria` (one row per equilibrium, ordered by rho)."""
    p = eqs.params
    rows = []
    for k, e in enumerate(eqs):
        rows.append((k + 1, e.kind, e.rho, e.omega, e.ell, e.L[1], e.L[2], e.M[1], e.W[1], e.W[2],
                     e.R[1], e.R[2], _fmt_stable(e.stable), _fmt_stable(e.stable_pair),
                     _fmt_stable(e.stable_all), e.full_residual))
    head = ["#", "kind", "rho", "omega", "ell", "L0", "L1", "M0", "W0", "W1", "R0", "R1",
            "stable", "stable(pair)", "stable(all)", "residual"]
    pv = ", ".join(f"{k}={float(getattr(p, k)):.6g}" for k in PARAM_NAMES)
    notes = [
        f"parameters: {pv}",
        f"phi={float(p.phi):.6g}  eta={float(p.eta):.6g}  psi={float(p.psi):.6g}  gamma_m={float(p.gamma_m):.6g}"
        f"  rho_m={eqs.info['rho_m']:.6g}  rho_M={eqs.info['rho_M']:.6g}  rho_L={eqs.info['rho_L']:.6g}",
        "ell = L_0/L_1; L0, L1: employment at the centre and a periphery; M0: residents at the centre;",
        "W, R: wages and rents (B_1 = C_1 = D_1 = 1).",
        "stable: Definition 3, Appendix-P moves (residence-only / workplace-only), mirror-symmetric;",
        "stable(pair): same moves on a single pair; stable(all): symmetric moves incl. residence+workplace.",
        f"status: {eqs.status}" + (f" ({eqs.message})" if eqs.message else ""),
    ]
    return format_table(head, rows, title="Thisse-Turner-Ushchev: all equilibria (locations -1, 0, 1)",
                        digits=4, notes=notes)


def _full_from_logs(p, ls, lW, lR, lN, lL, x, lw):
    """Residuals of the primitive system at levels (logs): (3), (9), (12), (14), (6)."""
    s = jnp.exp(ls)
    W, R, N = jnp.exp(lW), jnp.exp(lR), jnp.exp(lN)
    lB = jnp.array([0.0, jnp.log(p.b), 0.0])
    lD = jnp.array([0.0, jnp.log(p.d), 0.0])
    dist = jnp.abs(jnp.arange(3)[:, None] - jnp.arange(3)[None, :])
    # (3): shares implied by the price levels
    V = p.eps * (lB[:, None] + lD[None, :] + lW[None, :] - dist * jnp.log(p.tau) - p.beta * lR[:, None])
    r3 = jnp.max(jnp.abs(jnp.exp(V - jax.nn.logsumexp(V)) - s))
    # (9) with household land demand H_i = β Σ_j s_ij W_j / R_i
    H = p.beta * (s @ W) / R
    r9 = jnp.max(jnp.abs(H + N - 1.0))
    # (12) cost minimisation, relative form
    r12 = jnp.max(jnp.abs((lW - lR) - (jnp.log(p.alpha / (1 - p.alpha)) + lN - lL)))
    # (14) zero profit: unit cost = 1
    lA = _log_A(p, lL)
    r14 = jnp.max(jnp.abs(-lA + p.alpha * (lW - jnp.log(p.alpha)) + (1 - p.alpha) * (lR - jnp.log(1 - p.alpha))))
    # (6): ρ, ω consistent with the price ratios
    r6 = jnp.maximum(jnp.abs(x - p.eps * (jnp.log(p.b) - p.beta * (lR[1] - lR[2]))),
                     jnp.abs(lw - p.eps * (jnp.log(p.d) + lW[1] - lW[2])))
    return dict(shares_3=r3, land_9=r9, costmin_12=r12, zeroprofit_14=r14, ratios_6=r6)


def full_residuals(params: Params, eq: Equilibrium) -> dict:
    """Residuals of the full (unreduced) equilibrium system at an interior equilibrium's levels:
    shares (3) recomputed from W, R; land clearing (9) with household demand; cost minimisation
    (12); zero profit (14) with TFP (11); definitions (6) of ρ, ω. (13) and (15) are the ratios
    of (12) and (14). Returns a dict name -> max abs residual."""
    if eq.kind != "interior":
        raise ParameterError("eq", "full_residuals applies to interior equilibria; corners have W_j = 0")
    out = _full_residuals_logs(params, _f64(eq.log_rho), _f64(eq.log_omega))
    return {k: float(v) for k, v in out.items()}


def _full_residuals_logs_impl(p, x, lw):
    lv = _levels(p, x, lw)
    return _full_from_logs(p, lv["ls"], lv["lW"], lv["lR"], lv["lN"], lv["lL"], x, lw)


_full_residuals_logs = jax.jit(_full_residuals_logs_impl)


def _converged_tol(log_omega: float) -> float:
    """Residual tolerance for an interior root: 1e-9 plus the rounding floor of log-space
    arithmetic at |log ω| (terms of size |log ω| cancel in the zero-profit residual)."""
    return 1e-9 + 1e-14 * abs(log_omega)


def _max_abs_diff(e: "Equilibrium", c: "Equilibrium") -> float:
    """Largest difference between two equilibria's s (absolute) and W, R (relative to the largest)."""
    sW = max(float(np.max(np.abs(c.W))), 1e-300)
    sR = max(float(np.max(np.abs(c.R))), 1e-300)
    return float(max(np.max(np.abs(e.s - c.s)), np.max(np.abs(e.W - c.W)) / sW, np.max(np.abs(e.R - c.R)) / sR))


def _same_equilibrium(e: "Equilibrium", c: "Equilibrium") -> bool:
    """True when ``e`` and ``c`` are the same equilibrium in float64 (rule in :func:`equilibria`)."""
    d = _max_abs_diff(e, c)
    return bool(np.isfinite(d) and d <= _SAME_ATOL)


def _interior_equilibrium(p, x, lw, z, st_sym, st_pair, st_all, margin, with_stab, root_code=0):
    lv = _levels_jit(p, _f64(x), _f64(lw))
    fr = max(float(v) for v in _full_residuals_logs(p, _f64(x), _f64(lw)).values())
    lell = lw + float(_log_Q(p, _f64(x)))
    arr = lambda k: np.asarray(jnp.exp(lv[k]))
    # a NaN margin means the autodiff gains are NaN (solve_root flags the conditional-price solve):
    # the verdict is unknown (None), not "unstable"
    untested = with_stab and not np.isfinite(float(margin)) and not float(margin) == math.inf
    known = lambda v: (None if untested else bool(v)) if with_stab else None
    return Equilibrium(
        kind="interior", rho=math.exp(x), omega=math.exp(lw) if lw < 709 else math.inf,
        ell=math.exp(lell) if lell < 709 else math.inf, log_rho=float(x), log_omega=float(lw),
        s=arr("ls"), L=arr("lL"), M=arr("lM"), N=arr("lN"), H=arr("lH"), W=arr("lW"), R=arr("lR"),
        stable=known(st_sym), stable_pair=known(st_pair), stable_all=known(st_all),
        stability_margin=float(margin) if with_stab else math.nan, residual=abs(float(z)),
        full_residual=fr, **_interior_status(fr, lw, root_code, untested))


def _interior_status(fr: float, lw: float, root_code: int = 0, untested: bool = False) -> dict:
    rs = SCALAR_STATUSES[root_code] if 0 <= root_code < len(SCALAR_STATUSES) else "nonfinite"
    if rs != "successful":
        detail = {"singular": "Z'(y) ≈ 0 at the root (a fold): derivatives there are undefined (NaN)",
                  "no_solution": "the bracket lost its sign change", "max_steps_reached": "bisection did not "
                  "narrow the bracket", "nonfinite": "non-finite zero-profit residual", "stalled": "residual too large"}
        return dict(status=rs, message=f"zero-profit root: {detail.get(rs, rs)} (full residual {fr:.3g})")
    if not np.isfinite(fr):
        return dict(status="nonfinite", message="non-finite residual of the primitive system")
    if fr >= _converged_tol(lw):
        return dict(status="max_steps_reached",
                    message=f"full residual {fr:.3g} above the tolerance {_converged_tol(lw):.3g}")
    if untested:
        return dict(status="successful", message="stability not determined: the Definition-3 gains are not finite "
                                                 "here (the conditional-price solve failed or is singular)")
    return dict(status="successful", message="")


def _corner_levels(p, which: str):
    """Corner equilibria of Proposition 6 (δ = 0): levels from Appendix N with β restored."""
    lrm, lrM = (float(v) for v in _log_rho_bounds_jit(p))
    a, beta, phi = float(p.alpha), float(p.beta), float(p.phi)
    if which == "agglomerated":           # L = (0, 1, 0), ω = ∞, ρ = ρ_m
        rho = math.exp(lrm)
        col = np.array([phi, rho, phi]) / (rho + 2 * phi)
        s = np.zeros((3, 3))
        s[:, 1] = col
        N0 = (1 - a) / (1 - a + a * beta * s[1, 1])
        W0 = a * float(p.c) * N0 ** (1 - a)
        R0 = (1 - a) * float(p.c) * N0 ** (-a)
        W = np.array([0.0, W0, 0.0])
        R = np.array([beta * s[0, 1] * W0, R0, beta * s[2, 1] * W0])
        N = np.array([0.0, N0, 0.0])
        return lrm, math.inf, s, W, R, N
    rho = math.exp(lrM)                    # L = (1/2, 0, 1/2), ω = 0, ρ = ρ_M
    s = np.array([[1.0, 0.0, phi ** 2], [phi * rho, 0.0, phi * rho], [phi ** 2, 0.0, 1.0]])
    s /= s.sum()
    L1 = 0.5
    A1 = L1 ** float(p.gamma)
    N1 = 1.0 / (1.0 + float(p.eta) * (s[2, 2] + s[2, 0]) / L1)
    W1 = a * A1 * (N1 / L1) ** (1 - a)
    R1 = (1 - a) * A1 * (L1 / N1) ** a
    R0 = 2 * beta * s[1, 2] * W1
    W = np.array([W1, 0.0, W1])
    R = np.array([R1, R0, R1])
    N = np.array([N1, 0.0, N1])
    return lrM, -math.inf, s, W, R, N


def _corner_unstable(p, s, which: str, Delta: float = 1e-6) -> tuple[bool, float]:
    """Appendix O, directly: move a mass Δ of households whose centre (periphery) jobs are worth
    zero to the empty workplace(s) and recompute the conditional prices. The movers' wage goes
    from 0 to W̄_l(s_Δ) > 0, so they are strictly better off: the corner is unstable iff the
    conditional wage at the newly occupied workplace is positive (and the prices solve)."""
    s2 = np.array(s, dtype=float)
    if which == "agglomerated":       # centre residents move half each to j = -1 and j = 1
        s2[1, 1] -= Delta
        s2[1, 0] += Delta / 2
        s2[1, 2] += Delta / 2
        target = 2
    else:                              # residents of 1 working at 1 move to the centre job (mirror too)
        s2[2, 2] -= Delta / 2
        s2[0, 0] -= Delta / 2
        s2[2, 1] += Delta / 2
        s2[0, 1] += Delta / 2
        target = 1
    cp = conditional_prices(p, s2)
    ok = cp["converged"] and np.all(np.isfinite(cp["W"]))
    return bool(ok and cp["W"][target] > 0), float(cp["W"][target])


def rho_bounds(params: Params) -> tuple[float, float]:
    """(ρ_m, ρ_M): the market-clearing locus f (24) runs from ∞ at ρ_m to 0 at ρ_M (Lemma 1).
    Raises ConvergenceError if a bracketed solve of (B.1) fails (status named)."""
    roots = jax.device_get(_log_rho_bounds_roots_jit(params))
    _check_root(roots[0], "rho_m: the solve of (B.1) at omega = inf")
    _check_root(roots[1], "rho_M: the solve of (B.1) at omega = 0")
    return math.exp(float(roots[0].value)), math.exp(float(roots[1].value))


def _check_root(r, what: str) -> float:
    """The value of a concrete :class:`~spatialjax.scalar.ScalarRoot`, or ConvergenceError
    naming its status."""
    status = SCALAR_STATUSES[int(r.code)]
    if status != "successful":
        raise ConvergenceError(f"{what} failed: status {status} (residual {float(r.residual):.3g}, "
                               f"bracket width {float(r.width):.3g} after {int(r.steps)} halvings)")
    return float(r.value)


_log_rho_bounds_roots_jit = jax.jit(_log_rho_bounds_roots)


def rho_L(params: Params) -> float:
    """ρ_L (Lemma 2): the unique root of ρ^{1/η} Q(ρ) = (d c^{1/α} b^{-1/η})^{-ε}; the step of the
    zero-profit locus g as γ → γ_m. Not necessarily in (0, 1)."""
    return math.exp(_check_root(jax.device_get(_log_rho_L_jit(params)), "rho_L (Lemma 2)"))


def _rho_L_fn(x, a):
    p, rhs = a
    return x / p.eta + _log_Q(p, x) - rhs      # strictly increasing in x


def _log_rho_L(p):
    rhs = -p.eps * (jnp.log(p.d) + jnp.log(p.c) / p.alpha - jnp.log(p.b) / p.eta)
    B = jax.lax.stop_gradient(50.0 + p.eta * (jnp.abs(rhs) + 5.0))
    return bracket_root(_rho_L_fn, -B, B, (p, rhs))


_log_rho_L_jit = jax.jit(_log_rho_L)


def f_curve(params: Params, rho):
    """Market-clearing locus (24): ``ω^{(1+ε)/ε} = f(ρ)``; nan outside (ρ_m, ρ_M)."""
    p = params
    rho = _f64(rho)
    k = 1.0 / (p.beta * p.eps)
    bb = p.b ** (1.0 / p.beta)
    num = p.phi * bb * rho - 2 * p.eta * p.phi * rho ** (1 + k) + (1 + p.phi ** 2) * (1 + p.eta) * bb
    den = (1 + p.eta) * rho ** (1 + k) + 2 * p.phi * rho ** k - p.eta * p.phi * bb
    f = p.d * num / den
    return jnp.where(f > 0, f, jnp.nan)


def g_curve(params: Params, rho):
    """Zero-profit locus (25) on an array of ρ (see ``_g_curve``)."""
    return _g_curve_jit(params, jnp.atleast_1d(_f64(rho))).reshape(jnp.shape(rho))


def _g_curve(params: Params, rho):
    """Zero-profit locus (25), δ = 0, with the corrected Q-exponent γ(1+ε)/(α-γε)::

        g(ρ) = [c^{(1+ε)/α} Ψ^{-(1+ε)/α} ρ^ψ Q(ρ)^{γ(1+ε)/α}]^{α/(α-γε)}.

    For δ > 0, g solves the fixed point in the second line of (25) (computed by bisection)."""
    p = params
    rho = _f64(rho)
    x = jnp.log(rho)
    k = 1.0 - p.gamma * p.eps / p.alpha

    def g0(xx):
        return ((1 + p.eps) / p.alpha * (jnp.log(p.c) + p.gamma * _log_Q(p, xx) - p.log_Psi) + p.psi * xx) / k

    def gd(xx):   # NaN where the fixed point is not bracketed in |log Ω| <= 2000
        return bracket_root(_g_fixed_point, -2000.0, 2000.0, (p, xx)).value

    ly = jnp.where(p.delta > 0, jax.vmap(gd)(x), g0(x))
    return jnp.exp(ly)


_g_curve_jit = jax.jit(_g_curve)


def gamma_of_rho(params: Params, rho):
    """Inverse equilibrium correspondence (δ = 0): the γ at which ρ on the market-clearing locus
    is an interior equilibrium (Section 7, γ(ρ); corrected form)::

        γ(ρ) = [α/(1+ε)·(log f - ψ log ρ) + log Ψ - log c] / log(Q(ρ) f^{ε/(1+ε)}).
    """
    p = params
    f = f_curve(p, rho)
    x = jnp.log(_f64(rho))
    lf = jnp.log(f)
    return (p.alpha / (1 + p.eps) * (lf - p.psi * x) + p.log_Psi - jnp.log(p.c)) / (
        p.eps / (1 + p.eps) * lf + _log_Q(p, x))


def _g_fixed_point(y, a):
    """Second line of (25) at fixed ρ = e^x, as a residual in y = log Ω (δ > 0)."""
    p, xx = a
    return y - p.psi * xx - (1 + p.eps) / p.alpha * (_log_a(p, p.eps / (1 + p.eps) * y + _log_Q(p, xx)) - p.log_Psi)


def _gamma_of_y(p, y, lrm, lrM):
    """γ(·) of Section 7 along the market-clearing locus, parametrised by y = log Ω (δ = 0)."""
    x = _log_rho_of_y(p, y, lrm, lrM)
    return (p.alpha / (1 + p.eps) * (y - p.psi * x) + p.log_Psi - jnp.log(p.c)) / (
        p.eps / (1 + p.eps) * y + _log_Q(p, x))


def _folds_impl(p):
    lrm, lrM = _log_rho_bounds(p)
    lrm, lrM = jax.lax.stop_gradient(lrm), jax.lax.stop_gradient(lrM)
    yg = jnp.log(p.d) + jnp.linspace(-_Y_CORE, _Y_CORE, 8001)
    dg = jax.vmap(jax.grad(lambda y: _gamma_of_y(p, y, lrm, lrM)))(yg)
    gg = jax.vmap(lambda y: _gamma_of_y(p, y, lrm, lrM))(yg)
    ok = jnp.isfinite(dg[1:]) & jnp.isfinite(dg[:-1]) & (jnp.abs(gg[1:] - gg[:-1]) < 1.0)   # skip the pole at ℓ = 1
    ch = ok & ((dg[1:] > 0) != (dg[:-1] > 0))
    idx = jnp.nonzero(ch, size=_K, fill_value=0)[0]
    valid = jnp.arange(_K) < jnp.sum(ch)
    dfun = jax.grad(lambda y: _gamma_of_y(p, y, lrm, lrM))
    # value only (a fold's location); the bracket is checked: dγ/dy changes sign on it (ch)
    yf = jax.vmap(lambda a, b: bisect(dfun, a, b, 100))(yg[idx], yg[idx + 1])
    gf = jax.vmap(lambda y: _gamma_of_y(p, y, lrm, lrM))(yf)
    xf = jax.vmap(lambda y: _log_rho_of_y(p, y, lrm, lrM))(yf)
    return gf, xf, valid


_folds_jit = jax.jit(_folds_impl, compiler_options=_FAST_COMPILE)


def folds(params: Params) -> list[tuple[float, float]]:
    """Folds of the equilibrium correspondence (δ = 0): the (γ, ρ) at which two interior branches
    merge, i.e. the local extrema of γ(ρ) (Section 7) along the market-clearing locus. Searched on
    |log Ω - log d| ≤ 80; sorted by γ."""
    p = params
    _require_scalar(p)
    if float(p.delta) != 0.0:
        raise ParameterError("delta", f"folds are computed from γ(ρ), which needs δ = 0; got {float(p.delta)}")
    gf, xf, valid = jax.device_get(_folds_jit(p))
    out = [(float(g), math.exp(float(x))) for g, x, v in zip(gf, xf, valid) if v and g > 0]
    return sorted(out)


def gamma_s(params: Params) -> float:
    """γ_s (Definition 2): the largest fold of the correspondence — above it the interior
    equilibrium is unique. In Figure 2(a) this is where the two lower branches (ρ < 1) merge, the
    paper's definition as the maximiser of γ(ρ) on [ρ_m, 1]; with b, d ≠ 1 the last pair to merge
    can be the upper one. γ_s = γ_m when there is no fold (footnote 10: the case ρ_m ≥ ρ_L)."""
    fs = [g for g, _ in folds(params)]
    return max(fs) if fs else float(params.gamma_m)


def equilibria(params: Params, *, stability: bool = True, corners: bool = True,
               throw: bool = True) -> Equilibria:
    """Every equilibrium: all interior roots of the zero-profit residual on the market-clearing
    locus (Proposition 2, robust form) and, for δ = 0 < γ, the two corner equilibria of
    Proposition 6. Ordered by ρ.

    Near-corner roots. Just above γ_m the extreme interior roots approach the corners (|log ω| in
    the hundreds or thousands, Proposition 8(i)). They are distinct equilibria as long as float64
    can tell them apart, e.g. at γ = 1.1 γ_m (ω ≈ 1e30) the interior root has L_{±1} = 1.5e-30 and
    W_{±1}/W_0 = 1e-5 where the corner has 0, and both are listed. The rule: an interior root *is*
    a corner when its commuting shares, wages and rents all agree with the corner's to
    ``1e-12`` (max abs difference, relative to the largest wage / rent for W, R; e.g. at
    γ = γ_m (1 + 1e-3), where the periphery's employment and wage underflow to 0). Such a pair
    is listed once, as the interior root (a finite root of (24)–(25)), with the corner's
    stability verdict (Appendix O; the autodiff test is not finite there) and a message; the
    corner is recorded in ``info["merged_corners"]``.

    stability: test Definition 3 directly (needs α > 1/2 for the conditional prices of
        Appendix N/P to be unique; raises ParameterError otherwise).
    throw: raise ConvergenceError if a root did not converge or the scan hit non-finite values
        (with ``throw=False`` such equilibria are returned with ``converged=False``).
    """
    p = params
    _require_scalar(p)
    if stability and not float(p.alpha) > 0.5:
        raise ParameterError("alpha", f"must be > 1/2 for the stability test (conditional prices of Appendix N/P "
                                      f"are unique only then); got {float(p.alpha)}; pass stability=False to skip it")
    core = jax.device_get(_interior_core_jit(p))
    n = int(core["n_roots"])
    problems = []
    if n > _K:
        problems.append(f"{n} roots bracketed but only {_K} are kept")
    if not bool(core["grid_finite"]):
        problems.append("non-finite zero-profit residual on the scan grid")
    out = []
    for k in range(min(n, _K)):
        e = _interior_equilibrium(p, float(core["log_rho"][k]), float(core["log_omega"][k]), float(core["Z"][k]),
                                  core["stable_sym"][k], core["stable_pair"][k], core["stable_all"][k],
                                  core["margin_sym"][k], stability, int(core["root_code"][k]))
        if not e.converged and e.status != "singular":   # a double root is found; only its derivative is undefined
            problems.append(f"interior root {k} is {e.status}: {e.message}")
        out.append(e)
    merged = []
    if corners and float(p.delta) == 0.0 and float(p.gamma) > 0.0:
        for which in ("agglomerated", "dispersed"):
            lr, lw, s, W, R, N = _corner_levels(p, which)
            L, M = s.sum(axis=0), s.sum(axis=1)
            unst, _ = _corner_unstable(p, s, which) if stability else (None, None)
            corner = Equilibrium(
                kind="corner", rho=math.exp(lr), omega=math.exp(lw), ell=math.inf if lw > 0 else 0.0,
                log_rho=lr, log_omega=lw, s=s, L=L, M=M, N=N, H=1.0 - N, W=W, R=R,
                stable=(not unst) if stability else None, stable_pair=(not unst) if stability else None,
                stable_all=(not unst) if stability else None,
                stability_margin=math.inf if (stability and unst) else math.nan, residual=0.0,
                full_residual=0.0, status="successful", message="Proposition 6 corner (closed form)")
            k = next((i for i, e in enumerate(out) if e.kind == "interior" and _same_equilibrium(e, corner)), None)
            if k is None:
                out.append(corner)
                continue
            # the interior root *is* the corner in float64: list it once (see the rule above)
            e = out[k]
            merged.append(dict(corner=which, log_omega=e.log_omega, max_abs_diff=_max_abs_diff(e, corner)))
            note = (f"coincides in float64 with the {which} corner of Proposition 6 (s, W, R equal to "
                    f"{_SAME_ATOL:g}), listed once; stability from the corner's test (Appendix O)")
            out[k] = dataclasses.replace(e, stable=corner.stable, stable_pair=corner.stable_pair,
                                         stable_all=corner.stable_all, stability_margin=corner.stability_margin,
                                         message="; ".join(m for m in (e.message, note)
                                                           if m and not m.startswith("stability not determined")))
    # ρ is strictly decreasing in ω along the market-clearing locus, so ordering by -log ω is the
    # ordering by ρ without ties at ρ_m / ρ_M (where extreme interior roots sit within rounding)
    out.sort(key=lambda e: -e.log_omega)
    info = dict(rho_m=math.exp(float(core["log_rho_m"])), rho_M=math.exp(float(core["log_rho_M"])),
                rho_L=rho_L(p), n_roots=n, n_fold_pairs=int(core["n_fold_pairs"]),
                y_bound=float(core["Y"]), merged_corners=merged, problems=problems)
    if problems and throw:
        raise ConvergenceError("; ".join(problems))
    status = "incomplete" if problems else "successful"
    return Equilibria(out, status=status, message="; ".join(problems), params=p, info=info,
                      title="Thisse-Turner-Ushchev: all equilibria", formatter=_summary_table)


def _sweep_point(p: Params) -> dict:
    """One scenario of :func:`sweep_gamma` (pure JAX; vmapped and sharded by spatialjax.sweep):
    the interior core plus a per-scenario ``converged`` flag (every kept root refined
    successfully or singular, the scan grid finite, no more than K roots)."""
    core = _interior_core(p)
    ok_root = (core["root_code"] == 0) | (core["root_code"] == SCALAR_STATUSES.index("singular"))
    converged = jnp.all(ok_root | ~core["valid"]) & core["grid_finite"] & (core["n_roots"] <= _K)
    keep = ("log_rho", "log_omega", "valid", "stable_sym", "stable_pair", "stable_all", "Z", "n_roots", "root_code")
    return dict({k: core[k] for k in keep}, converged=converged)






def sweep_gamma(params: Params, gammas, *, devices=None, batch_size: int | None = None) -> dict:
    """Every interior equilibrium for each γ in ``gammas`` (the Figure 2 correspondence), as one
    sweep through :func:`spatialjax.sweep.sweep` (vmapped, sharded over ``devices``, chunked by
    ``batch_size``). Returns numpy arrays of shape (n_gamma, K): log_rho, log_omega, valid,
    stable (Definition 3, Appendix-P moves, mirror-symmetric), stable_pair, stable_all, Z and
    root_status (names of :data:`spatialjax.results.STATUSES`, "" in unused slots); plus
    n_roots and ok (n_gamma,): ok is False where a root failed, the scan grid was not finite
    or more than K roots were bracketed — ``failed`` lists those γ indices — and the
    :class:`spatialjax.sweep.SweepResult` itself under ``"sweep"``."""
    from spatialjax.sweep import sweep

    g = np.asarray(gammas, dtype=float)
    check_finite("gammas", g)
    if g.ndim != 1 or g.size == 0 or np.any(g < 0):
        raise ParameterError("gammas", "must be a non-empty 1-D array of values >= 0")
    _require_scalar(params)
    batched = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, g.shape), params)
    batched = eqx.tree_at(lambda q: q.gamma, batched, jnp.asarray(g))
    res = sweep(_sweep_point, batched, devices=devices, batch_size=batch_size)
    out = jax.device_get(res.values)
    codes = np.asarray(out["root_code"])
    names = np.where(codes >= 0, np.asarray(SCALAR_STATUSES, dtype=object)[np.clip(codes, 0, None)], "")
    return dict(gamma=g, log_rho=out["log_rho"], log_omega=out["log_omega"], valid=out["valid"],
                stable=out["stable_sym"], stable_pair=out["stable_pair"],
                stable_all=out["stable_all"], Z=out["Z"], n_roots=out["n_roots"],
                root_status=names.astype(str), ok=np.asarray(res.ok), failed=np.asarray(res.failed), sweep=res)


# --------------------------------------------------------------------------------------
# Derivatives, thresholds, welfare
# --------------------------------------------------------------------------------------

def _Z_vec(y, a):
    return _Z_fn(y[0], a)[None]


def _root_quantities(p, y_fixed):
    """(log ρ, log ω, log ℓ) at the root near ``y_fixed`` with exact implicit derivatives, and
    the status code of the re-solve. The root is re-solved by :func:`spatialjax.solver.solve_root`
    from ``y_fixed`` (Newton converges at once) and differentiated by the implicit function
    theorem, dy*/dθ = -Z_θ/Z_y: NaN where the root is not regular (Z_y ≈ 0 at a fold) or the
    re-solve failed."""
    lrm, lrM = _log_rho_bounds(p)
    lrm, lrM = jax.lax.stop_gradient(lrm), jax.lax.stop_gradient(lrM)
    sol = solve_root(_Z_vec, jax.lax.stop_gradient(y_fixed)[None], (p, lrm, lrM), linear_solver="dense",
                     tol=_ROOT_TOL, max_steps=20)
    y = sol.value[0]
    x = _log_rho_of_y(p, y, lrm, lrM)
    lw = p.eps / (1 + p.eps) * y
    return jnp.stack([x, lw, lw + _log_Q(p, x)]), sol.result


_root_jac = jax.jit(jax.jacrev(_root_quantities, has_aux=True))


def sensitivities(params: Params, eq: Equilibrium) -> dict:
    """Comparative statics at an interior equilibrium by the implicit function theorem
    (dy*/dθ = -Z_θ/Z_y, autodiff): returns {param: {"rho", "omega", "ell"}} with the derivatives
    of the levels ρ*, ω*, ℓ* with respect to each parameter. Every derivative is NaN (never a
    plausible number) where the root is not regular (a fold: Z_y ≈ 0) or its re-solve did not
    converge; ``sensitivities(...)["status"]`` names the re-solve's status."""
    if eq.kind != "interior":
        raise ParameterError("eq", "sensitivities are defined at interior equilibria only")
    y = (1 + float(params.eps)) / float(params.eps) * eq.log_omega
    J, result = _root_jac(params, _f64(y))
    lvl = np.array([eq.rho, eq.omega, eq.ell])
    out = {}
    for k in PARAM_NAMES:
        dlog = np.asarray(getattr(J, k))
        out[k] = {name: float(lvl[i] * dlog[i]) for i, name in enumerate(("rho", "omega", "ell"))}
    out["status"] = _solver_status(result)
    return out


def expected_utility(params: Params, eq: Equilibrium) -> float:
    """Expected maximal utility E max_ij V_ij = Γ(1 - 1/ε) (Σ_ij (B_i D_j W_j/(τ_ij R_i^β))^ε)^{1/ε}
    (Fréchet; cf. (27)–(28)); needs ε > 1."""
    eps = float(params.eps)
    if not eps > 1:
        raise ParameterError("eps", f"must be > 1 for expected utility (Γ((ε-1)/ε) in (27)-(28)); got {eps}")
    B = np.array([1.0, float(params.b), 1.0])
    D = np.array([1.0, float(params.d), 1.0])
    dist = np.abs(np.arange(3)[:, None] - np.arange(3)[None, :])
    with np.errstate(divide="ignore"):
        V = B[:, None] * D[None, :] * eq.W[None, :] / (float(params.tau) ** dist * eq.R[:, None] ** float(params.beta))
    return float(math.gamma(1 - 1 / eps) * np.sum(V ** eps) ** (1 / eps))


def _ell_gamma0(p: Params) -> float:
    eqs = equilibria(p.replace(gamma=0.0, delta=0.0), stability=False, corners=False)
    if len(eqs) != 1:
        raise ConvergenceError(f"expected a unique equilibrium at gamma = delta = 0, found {len(eqs)}")
    return eqs[0].ell


def threshold_c_bar(params: Params) -> float:
    """c̄ = ĉ of Propositions 4 and 5(i): the first-nature advantage at which the γ = δ = 0
    equilibrium is flat (ℓ* = 1). Closed form: ℓ = 1 ⇒ ω = 1/Q(ρ) on f (24), then (25) gives
    c̄ = Ψ (Ω ρ^{-ψ})^{α/(1+ε)}."""
    lc, r = jax.device_get(_log_c_bar_jit(params.replace(gamma=0.0, delta=0.0)))
    _check_root(r, "threshold_c_bar: the solve of ell* = 1 on the market-clearing locus")
    return math.exp(float(lc))


def _lell_fn(y, a):
    p, lrm, lrM = a
    return p.eps / (1 + p.eps) * y + _log_Q(p, _log_rho_of_y(p, y, lrm, lrM))   # log ℓ on f: increasing in y


def _log_c_bar(p):
    lrm, lrM = jax.lax.stop_gradient(_log_rho_bounds(p))
    r = bracket_root(_lell_fn, -2000.0, 2000.0, (p, lrm, lrM))
    x = _log_rho_of_y(p, r.value, lrm, lrM)
    return p.log_Psi + p.alpha / (1 + p.eps) * (r.value - p.psi * x), r


_log_c_bar_jit = jax.jit(_log_c_bar)


def threshold_c_tilde(params: Params) -> float:
    """c̃ of Proposition 5(ii): the root of c·ℓ*(c) = 2 at γ = δ = 0 (da/dδ|_{δ=0} ∝ 2 - cℓ)."""
    from scipy.optimize import brentq

    base = params.replace(gamma=0.0, delta=0.0)
    h = lambda lc: math.log(math.exp(lc) * _ell_gamma0(base.replace(c=math.exp(lc))) / 2.0)
    lo, hi = -2.0, 2.0
    while h(lo) > 0:
        lo -= 2.0
    while h(hi) < 0:
        hi += 2.0
    return math.exp(brentq(h, lo, hi, xtol=1e-13))
