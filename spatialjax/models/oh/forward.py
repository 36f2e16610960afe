"""Oh (2025), forward mode of the quantitative model and counterfactuals (Section 4.4, Appendix B.6).

The *inverse* problem (:func:`spatialjax.models.oh.quantitative.solve_inverse`) takes the
observed population densities and unemployment rates ``{L(l), u(l)}`` on equal-population
bins and backs out worker and firm productivity ``x(l), y(l)``.  The *forward* problem here
keeps the backed-out **types** fixed (the distributions ``Q_w`` of worker productivity and
``Q_f`` of firm productivity, and the land of every location) and lets workers and firms
**re-sort** across locations under new policies ``t_h(l)`` (housing regulation, (A.24)) and
``tau_w(l)`` (location income tax, (13)).

Locations, land and types
-------------------------
* A location is a fixed piece of land.  We label locations by ``l in [0, 1]``, their
  *baseline* population rank (the paper's re-indexing, footnote 27), so the baseline bin
  ``i`` is ``l in [(i-1)/n, i/n]`` and holds land ``a_i = p_i M_w / L_i`` (``p_i`` the
  baseline population share of the bin, ``M_w = 1``).  Land never moves; in a counterfactual
  the population of bin ``i`` is ``P_i M_w`` and its density ``L_i = M_w P_i / a_i``.
* Types: on bins the inverse problem's sorting conditions are the indifference of the
  midpoint type ``(x_i + x_{i+1})/2`` between adjacent bins (the trapezoid rule of the
  continuum initial-value problem).  We read this as a quantile function of worker types:
  ``x_i`` is the type at the population-centre quantile of bin ``i`` and the midpoint
  ``(x_i + x_{i+1})/2`` the type at the boundary quantile ``C_i = p_1 + ... + p_i``.  The
  quantile function ``x(c)``, ``c in [0, 1]``, interpolates these ``2n + 1`` knots with a
  monotone cubic (PCHIP, C^1) and linear extrapolation of the end half-bins.  Firms alike:
  ``y(d)`` on firm-mass quantiles ``d``, with the baseline firm masses ``a_i N_i``.
  By construction the quantile functions reproduce the baseline assignment exactly, so the
  forward solve at baseline policies returns the input ``L, u`` to solver tolerance
  (the round trip, tested).
* Unknowns of the forward problem (``m`` bins, any ``m``; refinement splits every baseline
  bin into ``k`` equal-land sub-bins): worker population shares ``P_1..P_m`` (in logs),
  firm shares ``F_1..F_m`` (in logs), rents ``r_1..r_m`` and market tightness
  ``theta_1..theta_m`` (in logs) and the lump sum ``Pi``: ``4m + 1`` unknowns against
  ``(m - 1)`` worker and ``(m - 1)`` firm indifference conditions, the two adding-up
  constraints ``sum P = sum F = 1``, ``m`` housing-market clearing conditions, ``m``
  flow-balance conditions ``theta u(theta) = N/L`` and the definition of ``Pi``.  Bin ``i``'s local types are
  ``x_i = x((C_{i-1}+C_i)/2)``, ``y_i = y((D_{i-1}+D_i)/2)``; the indifferent types are
  ``x(C_i)``, ``y(D_i)``.  PAM holds by construction (``P, F > 0``); *global* incentive
  compatibility of every bin's type against every other bin is checked and reported
  (``ic_violation``), since first-order indifference alone need not imply it.
  Normalisations fixed at the baseline: ``H_w`` and ``c_e`` (the counterfactual moves
  firms' average profit away from zero, which then flows into ``Pi``).

Equations (rho/(rho+delta_v) = 0 as in the paper, so ``1 - beta~ = 0`` and ``B_w = 0``):

* Flow balance (7) with ``V = N``: ``theta u = N / L``, ``u = delta / (delta + lambda)``,
  ``lambda = A theta^(1-alpha)``, ``q = lambda / theta``.
* Wage (10) (= (A.4) with ``1 - beta~ = 0``; under Stone-Geary and ``tau_w`` the Nash split of
  Appendix B.1 is unchanged): ``w = x [b + beta (rho~+lambda)(y - b)/(rho~ + beta lambda)]``.
* Worker value (13): ``rho V^u(x, l) = r^-omega [(1 - tau_w)(b + A_w) x - h_bar r + Pi + T_r]``,
  ``A_w = beta lambda (y(l) - b)/(rho~ + beta lambda)``.
* Firm value, the ``delta_v -> inf`` limit of (5): ``rho V(y, l) = (1-beta) q x(l) (y - b - B_f)/rho~ - c``,
  ``B_f = A_w`` (compare the one-sided formula of B.6).
* Housing (A.24): ``r(H) = (1+gamma+t_h)/(1+gamma) (H/H_w)^gamma (H/T)^t_h``, ``gamma = 1/eta_w``;
  clearing ``r H = L [(1-omega) r h_bar + omega I]`` (the printed B.1 drops the ``r`` on the
  ``h_bar`` term, MODELS.md section 2), ``I = (1-tau_w)(u b x + (1-u) w) + Pi + T_r``,
  ``T_r = ((H/T)^t_h - 1) C_r(H) / L`` (the housing tax, redistributed locally).
* Business services: ``c = C_v'(N) = (N/H_f)^(1/eta_f) + c_e``.
* ``Pi`` (Section 4.1): per worker, the sum over locations of firms' flow profits
  ``(1-u) L (x y - w) - c N``, income-tax revenue ``tau_w ((1-u) w + u b x) L``, landowners'
  profits ``r H - (H/T)^t_h C_r(H)`` and intermediaries' profits ``c N - C_v(N)``, minus the
  unemployment benefits ``u b x L``.

Outcomes: aggregate output ``sum a_i (1-u_i) L_i x_i y_i``; congestion costs
``sum a_i [C_r(H_i) + C_v(N_i)]`` (resource costs; the housing tax is a transfer); utilitarian
welfare = the unweighted average over all workers (each type once, exactly, by integrating the
linear-in-x value over the type quantiles of each bin) of the value rho V of employed and
unemployed workers in their steady-state proportions, in flow utility units.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import spatialjax  # noqa: F401  (float64)
from spatialjax.errors import ParameterError
from spatialjax.models.oh import quantitative as qm
from spatialjax.solver import SolveResult, solve_root
from spatialjax.tables import format_kv, format_table
from spatialjax.validation import check_finite, check_interval, check_positive

__all__ = [
    "ForwardTypes", "Policies", "ForwardResult", "backout_types", "refine_types", "one_sided_types", "solve_forward",
    "welfare",
]

# Section 4.4 and Appendix B.6 (printed numbers, in percent).
PAPER_COUNTERFACTUALS = {
    "deregulation": {"top_decile_density": 55.3, "output": -0.01, "congestion": 1.36, "welfare": -0.21,
                     "one_sided_output": 0.40, "one_sided_welfare": 0.37},
    "tax_reform": {"top_decile_density": 25.0, "output": 0.004, "congestion": float("nan"), "welfare": -0.228,
                   "one_sided_output": 0.388, "one_sided_welfare": 0.239},
}


# ---------------------------------------------------------------------------------------
# Monotone cubic (PCHIP) quantile functions of the fixed type distributions
# ---------------------------------------------------------------------------------------


def _pchip_slopes(c: np.ndarray, v: np.ndarray) -> np.ndarray:
    from scipy.interpolate import PchipInterpolator

    return np.asarray(PchipInterpolator(c, v, extrapolate=True).derivative()(c), dtype=float)


def _segments(c, knots_c):
    """One-hot segment membership ``(len(c), K-1)`` and local coordinates ``t`` (no gathers: a
    masked sum over all segments compiles much faster than ``searchsorted`` + indexing)."""
    c0, c1 = knots_c[:-1], knots_c[1:]
    lo = jnp.concatenate([jnp.full(1, -jnp.inf), c0[1:]])
    hi = jnp.concatenate([c1[:-1], jnp.full(1, jnp.inf)])
    cc = c[:, None]
    mask = ((cc >= lo[None, :]) & (cc < hi[None, :])).astype(c.dtype)
    h = (c1 - c0)[None, :]
    t = (cc - c0[None, :]) / h
    return mask, t, h


def _hermite(c, knots_c, knots_v, slopes):
    """Evaluate the cubic Hermite interpolant (C^1) at ``c`` (1-D), linear extrapolation outside."""
    mask, t, h = _segments(c, knots_c)
    inside = (t >= 0.0) & (t <= 1.0)
    tt = jnp.clip(t, 0.0, 1.0)
    v0, v1, m0, m1 = knots_v[:-1][None, :], knots_v[1:][None, :], slopes[:-1][None, :], slopes[1:][None, :]
    val = ((2 * tt**3 - 3 * tt**2 + 1) * v0 + (tt**3 - 2 * tt**2 + tt) * h * m0 + (-2 * tt**3 + 3 * tt**2) * v1
           + (tt**3 - tt**2) * h * m1)
    cc = c[:, None]
    ext = jnp.where(t < 0.0, v0 + m0 * (cc - knots_c[:-1][None, :]), v1 + m1 * (cc - knots_c[1:][None, :]))
    return jnp.sum(mask * jnp.where(inside, val, ext), axis=1)


def _hermite_integral(c, knots_c, knots_v, slopes):
    """``int_{knots_c[0]}^c`` of the Hermite interpolant, for ``c`` (1-D) inside the knot range."""
    h_all = jnp.diff(knots_c)
    seg = h_all * (0.5 * (knots_v[:-1] + knots_v[1:]) + h_all * (slopes[:-1] - slopes[1:]) / 12.0)
    cum = jnp.concatenate([jnp.zeros(1), jnp.cumsum(seg)[:-1]])
    mask, t, h = _segments(c, knots_c)
    t = jnp.clip(t, 0.0, 1.0)
    H00 = t - t**3 + t**4 / 2
    H10 = t**2 / 2 - 2 * t**3 / 3 + t**4 / 4
    H01 = t**3 - t**4 / 2
    H11 = -(t**3) / 3 + t**4 / 4
    v0, v1, m0, m1 = knots_v[:-1][None, :], knots_v[1:][None, :], slopes[:-1][None, :], slopes[1:][None, :]
    part = h * (v0 * H00 + h * m0 * H10 + v1 * H01 + h * m1 * H11)
    return jnp.sum(mask * (cum[None, :] + part), axis=1)


def _quantile_knots(shares: np.ndarray, centre_types: np.ndarray):
    """Knots (2n+1) of a type quantile function from bin shares and the bins' local types."""
    C = np.concatenate([[0.0], np.cumsum(shares)])
    C = C / C[-1]
    mid = 0.5 * (centre_types[:-1] + centre_types[1:])
    lo = centre_types[0] - (mid[0] - centre_types[0])
    hi = centre_types[-1] + (centre_types[-1] - mid[-1])
    bounds = np.concatenate([[lo], mid, [hi]])
    kc = np.empty(2 * len(shares) + 1)
    kv = np.empty_like(kc)
    kc[0::2], kv[0::2] = C, bounds
    kc[1::2], kv[1::2] = 0.5 * (C[:-1] + C[1:]), centre_types
    if not np.all(np.diff(kv) > 0):
        raise ParameterError("types", "the backed-out productivities are not strictly increasing in l "
                             "(no positive assortative matching at the baseline); the forward mode needs PAM")
    return kc, kv, _pchip_slopes(kc, kv)


# ---------------------------------------------------------------------------------------
# Model objects
# ---------------------------------------------------------------------------------------


class Policies(eqx.Module):
    """Policy schedules on the forward grid (``m`` bins): housing regulation ``t_h(l)`` of (A.24)
    and location income tax ``tau_w(l)`` of (13), each shape ``(m,)``."""

    t_h: jax.Array
    tau_w: jax.Array


class ForwardTypes(eqx.Module):
    """What stays fixed in the forward mode: types, land, normalisations, the baseline.

    Build with :func:`backout_types` (from an inverse solve), :func:`refine_types` and
    :func:`one_sided_types`. Arrays are on the forward grid of ``m`` bins (``edges``, shape
    ``(m+1,)``, in ``l`` = baseline population rank).
    """

    land: jax.Array            # a_i, land of each bin (M_w = 1)
    M_f: jax.Array             # total firm mass
    kc_w: jax.Array            # worker quantile knots (cumulative population share)
    kv_w: jax.Array            # worker types at the knots
    ks_w: jax.Array            # PCHIP slopes
    kc_f: jax.Array            # firm quantile knots (cumulative firm share)
    kv_f: jax.Array
    ks_f: jax.Array
    H_w: jax.Array
    c_e: jax.Array
    edges: jax.Array           # bin edges in l (baseline population rank)
    base_P: jax.Array          # baseline worker shares on this grid (warm start)
    base_F: jax.Array
    base_r: jax.Array
    base_Pi: jax.Array
    base_log_theta: jax.Array
    base_t_h: jax.Array
    base_tau_w: jax.Array
    base_L: jax.Array          # baseline density of each forward bin (a location characteristic)
    scale_v: jax.Array         # residual scales (fixed at the baseline)
    scale_f: jax.Array
    scale_I: jax.Array
    Abar: jax.Array            # one-sided model: local TFP of each bin (B.6); unused two-sided
    one_logN: jax.Array        # one-sided model: knots of c^one(N) (log N, coarse baseline bins)
    one_c: jax.Array
    one_s: jax.Array
    one_prof: jax.Array        # one-sided: baseline intermediary profit per land of each forward bin
    one_N0: jax.Array          # one-sided: baseline N of each forward bin
    one_sided: bool = eqx.field(static=True, default=False)

    @property
    def m(self) -> int:
        return int(self.land.shape[0])

    @property
    def centers(self) -> np.ndarray:
        e = np.asarray(self.edges)
        return 0.5 * (e[:-1] + e[1:])

    @property
    def base_policies(self) -> Policies:
        return Policies(t_h=self.base_t_h, tau_w=self.base_tau_w)


def _labor_market(p, log_theta):
    """Matching rates from market tightness: ``lambda = A theta^(1-alpha)``, ``q = lambda/theta`` and
    flow balance (7) ``u = delta/(delta + lambda)``. ``theta`` is an unknown of the forward
    problem, pinned by ``theta u = N/L`` (``V = N``, (7))."""
    theta = jnp.exp(log_theta)
    lam = p.A * theta ** (1 - p.alpha)
    return theta, lam, lam / theta, p.delta / (p.delta + lam)


def _business_two_sided(p, types, N):
    """(6) with ``C_v(S) = H_f^{-1/eta_f} S^{1+1/eta_f}/(1+1/eta_f) + c_e S``: overhead cost,
    intermediaries' profit ``cN - C_v(N) = N (N/H_f)^{1/eta_f}/(1+eta_f)`` and resource cost, per land."""
    c_t = (N / p.H_f) ** (1.0 / p.eta_f)
    prof = N * c_t / (1.0 + p.eta_f)
    c = c_t + types.c_e
    return c, prof, c * N - prof


def _business_one_sided(p, types, N):
    """B.6: homogeneous firms face ``c^one(N)``, the marginal cost recovered from the baseline
    (monotone cubic in ``log N``); intermediaries' profit moves by ``int_{N0}^{N} s c'(s) ds``
    (8-point Gauss-Legendre), its baseline level matching the two-sided model's (so ``Pi`` is the same)."""
    c = _hermite(jnp.log(N), types.one_logN, types.one_c, types.one_s)
    t, w = (jnp.asarray(v) for v in np.polynomial.legendre.leggauss(8))
    N0 = types.one_N0
    s = 0.5 * (N + N0)[:, None] + 0.5 * (N - N0)[:, None] * t[None, :]
    cs = _hermite(jnp.log(s), types.one_logN, types.one_c, types.one_s)
    c0 = _hermite(jnp.log(N0), types.one_logN, types.one_c, types.one_s)
    prof = types.one_prof + (N * c - N0 * c0) - 0.5 * (N - N0) * jnp.sum(w[None, :] * cs, axis=1)
    return c, prof, c * N - prof


def _bins(p, types, x, y, L, N, log_r, log_theta, Pi, t_h, tau_w):
    """Every per-bin object given local types, densities, rents and ``Pi`` (Section 4.1, B.1), with
    the building blocks of :mod:`spatialjax.models.oh.quantitative` (the inverse problem's)."""
    theta, lam, q, u = _labor_market(p, log_theta)
    prod = types.Abar if types.one_sided else y    # output shifter of a match: y, or Abar one-sided
    rt = p.rho + p.delta
    A_w = qm.job_opportunities(p, prod, lam)
    w = qm.wage(p, x, prod, lam)                    # (10)
    r = jnp.exp(log_r)
    H = qm.housing_supply(p, r, types.H_w, t_h)
    g = 1.0 / p.eta_w
    C_r = H * (H / types.H_w) ** g / (1.0 + g)
    tax_h = qm.housing_tax_revenue(p, r, H, types.H_w, t_h)     # per land
    T_r = tax_h / L
    labinc = (1 - u) * w + u * p.b * x
    I = (1 - tau_w) * labinc + Pi + T_r
    if types.one_sided:
        c, prof_int, C_v = _business_one_sided(p, types, N)
    else:
        c, prof_int, C_v = _business_two_sided(p, types, N)
    landowner = r * H * (g + t_h) / (1.0 + g + t_h)
    firm_profit = (1 - u) * L * (x * prod - w) - c * N
    flows = firm_profit + tau_w * labinc * L - u * p.b * x * L + landowner + prof_int
    Pi_def = jnp.sum(types.land * flows) / jnp.sum(types.land * L)
    housing = jnp.log(r * H) - jnp.log(L * qm.housing_spending(p, r, I))
    kw = r ** (-p.omega) * (1 - tau_w) * (p.b + A_w)          # slope of rho V^u in x, (13)
    k0 = r ** (-p.omega) * (Pi + T_r - p.h_bar * r)            # its intercept
    ke = p.rho * r ** (-p.omega) * (1 - tau_w) * p.beta * (prod - p.b) / (rt + p.beta * lam)  # rho(V^e-V^u)/x
    if types.one_sided:
        fslope = (1 - p.beta) * q * x / (rt + p.beta * lam)    # B.6: homogeneous firm value / (Abar - b)
    else:
        fslope = (1 - p.beta) * q * x / rt                     # (5), delta_v -> inf
    flow = log_theta + jnp.log(u) - jnp.log(N / L)            # (7) with V = N: theta u = N / L
    return dict(flow=flow, theta=theta, lam=lam, q=q, u=u, A_w=A_w, B_f=A_w, wage=w, r=r, H=H, C_r=C_r, T_r=T_r, I=I,
                c=c, C_v=C_v, landowner=landowner, intermediary=prof_int, firm_profit=firm_profit, flows=flows,
                Pi_def=Pi_def, housing=housing, kw=kw, k0=k0, ke=ke, fslope=fslope, labinc=labinc,
                output=(1 - u) * L * x * prod)


# ---------------------------------------------------------------------------------------
# Backing out the fixed objects from an inverse solve
# ---------------------------------------------------------------------------------------


def _np_bins(name, v, n):
    a = np.asarray(v, dtype=float)
    if a.ndim == 0:
        a = np.full(n, float(a))
    if a.shape != (n,):
        raise ParameterError(name, f"must be a scalar or an array of shape ({n},) (one value per bin); "
                             f"got shape {a.shape}")
    check_finite(name, a)
    return a


def backout_types(params, inverse) -> ForwardTypes:
    """The fixed objects of the forward mode from a solved inverse problem.

    Args:
        params: the ``oh.Params`` of the inverse solve.
        inverse: an ``oh.InverseResult`` (``oh.solve_inverse(params, L, u, w1=..., t_h=..., tau_w=...)``)
            on ``n`` equal-population bins; it must have converged.

    Returns:
        :class:`ForwardTypes` on the inverse problem's grid (``m = n``): the worker type
        quantile function through ``x_i`` (bin centres) and ``(x_i + x_{i+1})/2`` (bin
        boundaries), the firm one through ``y_i`` and ``(y_i + y_{i+1})/2`` on the firm-mass
        quantiles ``a_i N_i / M_f``, the land ``a_i = (1/n)/L_i`` of each bin, and ``H_w``,
        ``c_e`` (fixed from now on) and the baseline policies.
    """
    if not bool(inverse.converged):
        raise ParameterError("inverse", f"the inverse solve did not converge ({inverse.status}); "
                             "the forward mode needs a solved baseline")
    if hasattr(params, "check"):
        params.check()
    x, y, L, u, r = (np.asarray(getattr(inverse, k), dtype=float) for k in ("x", "y", "L", "u", "r"))
    n = L.shape[0]
    if np.any(y <= float(params.b)):
        raise ParameterError("inverse.y", "firm productivity must exceed b in every bin (the paper's y_min > b)")
    t_h = _np_bins("inverse.t_h", inverse.t_h, n)
    tau_w = _np_bins("inverse.tau_w", inverse.tau_w, n)
    pshare = np.full(n, 1.0 / n)                           # equal-population bins, M_w = 1
    land = pshare / L
    N = np.asarray(inverse.N, dtype=float)
    M_f = float(np.sum(land * N))
    F = land * N / M_f
    kc_w, kv_w, ks_w = _quantile_knots(pshare, x)
    kc_f, kv_f, ks_f = _quantile_knots(F, y)
    j = lambda v: jnp.asarray(v, dtype=jnp.float64)  # noqa: E731
    types = ForwardTypes(
        land=j(land), M_f=j(M_f), kc_w=j(kc_w), kv_w=j(kv_w), ks_w=j(ks_w), kc_f=j(kc_f), kv_f=j(kv_f), ks_f=j(ks_f),
        H_w=j(inverse.H_w), c_e=j(inverse.c_e), edges=j(np.linspace(0.0, 1.0, n + 1)), base_P=j(pshare),
        base_F=j(F), base_r=j(r), base_Pi=j(inverse.Pi), base_log_theta=jnp.log(inverse.theta), base_t_h=j(t_h), base_tau_w=j(tau_w), base_L=j(L),
        scale_v=j(1.0), scale_f=j(1.0), scale_I=j(1.0), Abar=j(np.zeros(n)), one_logN=j(np.log(N)),
        one_c=j(np.zeros(n)), one_s=j(np.zeros(n)), one_prof=j(np.zeros(n)), one_N0=j(N), one_sided=False)
    o = _bins(params, types, j(x), j(y), j(L), j(N), j(np.log(r)), jnp.log(inverse.theta), j(inverse.Pi), j(t_h),
              j(tau_w))
    scale_v = float(jnp.mean(jnp.abs(o["kw"] * x) + jnp.abs(o["k0"])))
    scale_f = float(jnp.mean(jnp.abs(o["fslope"] * (y - float(params.b) - o["B_f"]))))
    scale_I = float(jnp.mean(o["I"]))
    return dataclasses.replace(types, scale_v=j(scale_v), scale_f=j(scale_f), scale_I=j(scale_I))


def refine_types(types: ForwardTypes, k: int) -> ForwardTypes:
    """Split every bin into ``k`` sub-bins of equal land (``m -> k m``). Types, the land of every
    baseline bin, normalisations, policies and (one-sided) local TFP are piecewise constant per
    baseline bin: refinement changes only the discretisation."""
    if int(k) != k or k < 1:
        raise ParameterError("k", f"refinement factor must be a positive integer; got {k}")
    k = int(k)
    if k == 1:
        return types
    rep = lambda v: jnp.repeat(v, k)  # noqa: E731
    e = np.asarray(types.edges)
    edges = np.concatenate([np.linspace(e[i], e[i + 1], k + 1)[:-1] for i in range(len(e) - 1)] + [[e[-1]]])
    return dataclasses.replace(
        types, land=rep(types.land) / k, edges=jnp.asarray(edges), base_P=rep(types.base_P) / k,
        base_F=rep(types.base_F) / k, base_r=rep(types.base_r), base_log_theta=rep(types.base_log_theta), base_t_h=rep(types.base_t_h),
        base_tau_w=rep(types.base_tau_w), base_L=rep(types.base_L), Abar=rep(types.Abar),
        one_prof=rep(types.one_prof), one_N0=rep(types.one_N0))


def one_sided_types(params, inverse) -> ForwardTypes:
    """The one-sided sorting benchmark of Section 3.4 / Appendix B.6 calibrated to the same baseline.

    Workers are heterogeneous and sort as before; firms are homogeneous; local TFP
    ``Abar(l)`` is set equal to the two-sided model's ``y(l)`` (fixed to locations), so both
    models give identical cross-sectional wages (Proposition 5). Overhead costs are
    re-calibrated so that homogeneous firms are indifferent across locations,
    ``rho V^one = (1-beta) q x(l) (Abar(l) - b)/(rho~ + beta lambda) - c^one(l)`` (B.6), with the
    level set by zero average firm profit; the marginal cost function ``c^one(N)`` is recovered
    from ``c^one(l) = C_v'(N(l))`` (monotone cubic in ``log N`` through the baseline bins) and
    ``C_v(0)`` is chosen so intermediaries' total profit equals the two-sided model's (same ``Pi``).
    """
    two = backout_types(params, inverse)
    p = params
    x, y, L, u = (np.asarray(getattr(inverse, k), dtype=float) for k in ("x", "y", "L", "u"))
    lam, theta, q = (np.asarray(v) for v in qm.matching_rates(p, jnp.asarray(u)))
    N = theta * u * L
    rt = float(p.rho + p.delta)
    gross = (1 - float(p.beta)) * q * x * (y - float(p.b)) / (rt + float(p.beta) * lam)
    w = np.asarray(qm.wage(p, jnp.asarray(x), jnp.asarray(y), jnp.asarray(lam)))
    # c^one = gross - v̄; zero average flow profit: mean_i[(1-u)(xy - w) - theta u c^one] = 0
    fp0 = (1 - u) * (x * y - w) - theta * u * gross
    vbar = -np.mean(fp0) / np.mean(theta * u)
    c_one = gross - vbar
    if not np.all(np.diff(c_one) > 0):
        raise ParameterError("inverse", "the one-sided overhead costs c^one(l) are not increasing in firm density; "
                             "no increasing marginal cost function C_v' rationalises them")
    logN = np.log(N)
    s = _pchip_slopes(logN, c_one)
    c_t = (N / float(p.H_f)) ** (1.0 / float(p.eta_f))
    prof = N * c_t / (1.0 + float(p.eta_f))                 # two-sided intermediaries' profit per land
    j = lambda v: jnp.asarray(v, dtype=jnp.float64)  # noqa: E731
    types = dataclasses.replace(two, Abar=j(y), one_logN=j(logN), one_c=j(c_one), one_s=j(s), one_prof=j(prof),
                                one_N0=j(N), one_sided=True)
    o = _bins(p, types, j(x), j(y), j(L), j(N), jnp.log(jnp.asarray(inverse.r)), jnp.log(inverse.theta), j(inverse.Pi),
              two.base_t_h, two.base_tau_w)
    scale_f = float(jnp.mean(jnp.abs(o["fslope"] * (y - float(p.b)))))
    return dataclasses.replace(types, scale_f=j(scale_f))


# ---------------------------------------------------------------------------------------
# The forward solve
# ---------------------------------------------------------------------------------------


def _unpack(z, m):
    """``z = [log P (m), log F (m), log r (m), log theta (m), Pi]``."""
    return jnp.exp(z[:m]), jnp.exp(z[m:2 * m]), z[2 * m:3 * m], z[3 * m:4 * m], z[4 * m]


def _z_base(types):
    return jnp.concatenate([jnp.log(types.base_P), jnp.log(types.base_F), jnp.log(types.base_r),
                            types.base_log_theta, types.base_Pi[None]])


def _state(z, params, types, policies):
    m = types.m
    P, F, log_r, log_theta, Pi = _unpack(z, m)
    C = jnp.concatenate([jnp.zeros(1), jnp.cumsum(P)])
    D = jnp.concatenate([jnp.zeros(1), jnp.cumsum(F)])
    C, D = C / C[-1], D / D[-1]
    x = _hermite(0.5 * (C[:-1] + C[1:]), types.kc_w, types.kv_w, types.ks_w)
    Xb = _hermite(C[1:-1], types.kc_w, types.kv_w, types.ks_w)
    if types.one_sided:
        y, Yb = types.Abar, None
    else:
        y = _hermite(0.5 * (D[:-1] + D[1:]), types.kc_f, types.kv_f, types.ks_f)
        Yb = _hermite(D[1:-1], types.kc_f, types.kv_f, types.ks_f)
    L = P / types.land
    N = types.M_f * F / types.land
    o = _bins(params, types, x, y, L, N, log_r, log_theta, Pi, policies.t_h, policies.tau_w)
    o.update(P=P, F=F, C=C, D=D, x=x, y=y, L=L, N=N, Xb=Xb, Yb=Yb, Pi=Pi)
    return o


def _firm_values(o, params, types, y_eval=None):
    """Firm value in every bin: two-sided (5) for a firm of type ``y_eval`` (default the local
    type); one-sided (B.6) for the homogeneous firm."""
    b = params.b
    if types.one_sided:
        return o["fslope"] * (types.Abar - b) - o["c"]
    yy = o["y"] if y_eval is None else y_eval
    return o["fslope"] * (yy - b - o["B_f"]) - o["c"]


def _residual(z, args):
    params, types, policies = args
    o = _state(z, params, types, policies)
    Xb = o["Xb"]
    res_w = ((o["kw"][:-1] - o["kw"][1:]) * Xb + o["k0"][:-1] - o["k0"][1:]) / types.scale_v
    if types.one_sided:
        fv = _firm_values(o, params, types)
        res_f = (fv[:-1] - fv[1:]) / types.scale_f
    else:
        Yb, b = o["Yb"], params.b
        fv_lo = o["fslope"][:-1] * (Yb - b - o["B_f"][:-1]) - o["c"][:-1]
        fv_hi = o["fslope"][1:] * (Yb - b - o["B_f"][1:]) - o["c"][1:]
        res_f = (fv_lo - fv_hi) / types.scale_f
    return jnp.concatenate([res_w, (jnp.sum(o["P"]) - 1.0)[None], res_f, (jnp.sum(o["F"]) - 1.0)[None],
                            o["housing"], o["flow"], ((o["Pi"] - o["Pi_def"]) / types.scale_I)[None]])


def _welfare_from_state(o, types):
    """Utilitarian welfare: the average over all workers of ``rho V`` (employed and unemployed in
    their steady-state shares, B.1), integrating the linear-in-x value exactly over each bin's
    type quantiles (cubic Hermite antiderivative)."""
    G = _hermite_integral(o["C"], types.kc_w, types.kv_w, types.ks_w)
    xsum = jnp.diff(G)                        # int_{C_{i-1}}^{C_i} x(c) dc
    return jnp.sum((o["kw"] + (1 - o["u"]) * o["ke"]) * xsum + o["k0"] * o["P"])


def _ic_violation(o, params, types):
    """Largest relative gain of a bin's local type from moving to another bin (global IC check)."""
    v = o["kw"][None, :] * o["x"][:, None] + o["k0"][None, :]       # v[i, j]: the type of bin i in bin j
    gain = jnp.max((v - jnp.diag(v)[:, None]) / types.scale_v)
    if types.one_sided:
        return gain
    f = o["fslope"][None, :] * (o["y"][:, None] - params.b - o["B_f"][None, :]) - o["c"][None, :]
    return jnp.maximum(gain, jnp.max((f - jnp.diag(f)[:, None]) / types.scale_f))


def _policies(types, policies):
    if policies is None:
        return types.base_policies
    if isinstance(policies, dict):
        unknown = set(policies) - {"t_h", "tau_w"}
        if unknown:
            raise ParameterError("policies", f"unknown keys {sorted(unknown)}; allowed: t_h, tau_w")
        policies = Policies(t_h=policies.get("t_h", types.base_t_h), tau_w=policies.get("tau_w", types.base_tau_w))
    if not isinstance(policies, Policies):
        raise ParameterError("policies", "must be an oh.forward.Policies, a dict with keys t_h / tau_w, or None")
    m = types.m
    out = []
    for name in ("t_h", "tau_w"):
        v = jnp.asarray(getattr(policies, name), dtype=jnp.float64)
        if v.ndim == 0:
            v = jnp.full(m, v)
        if v.shape != (m,):
            raise ParameterError(f"policies.{name}", f"must be a scalar or shape ({m},) (one value per forward "
                                 f"bin); got {tuple(v.shape)}")
        check_finite(f"policies.{name}", v)
        out.append(v)
    check_positive("policies.t_h", out[0], strict=False)
    check_interval("policies.tau_w", out[1], None, 1.0)
    return Policies(t_h=out[0], tau_w=out[1])


class ForwardResult(eqx.Module):
    """Result of :func:`solve_forward` on the forward grid of ``m`` bins.

    Per bin (shape ``(m,)``, ordered from ``l = 0`` up): ``L`` (density), ``u``, ``x``, ``y`` (local
    types; one-sided: ``y`` is local TFP ``Abar``), ``r``, ``c``, ``N``, ``theta``, ``lam``,
    ``wage``, ``T_r``, ``P``/``F`` (the bins' worker/firm shares). Scalars: ``Pi``, ``output``,
    ``congestion``, ``welfare``. Diagnostics: ``converged``, ``status``, ``residual`` (max-norm
    over all ``4m + 1`` equations), ``residuals`` (by block), ``steps``, ``sigma_min``,
    ``ic_violation`` (largest relative gain of any bin's local type from moving to another
    bin; > 1e-9 flags a first-order solution that is not a global equilibrium, status
    ``not_incentive_compatible``).
    """

    z: jax.Array
    L: jax.Array
    u: jax.Array
    x: jax.Array
    y: jax.Array
    r: jax.Array
    c: jax.Array
    N: jax.Array
    theta: jax.Array
    lam: jax.Array
    wage: jax.Array
    P: jax.Array
    F: jax.Array
    T_r: jax.Array
    Pi: jax.Array
    output: jax.Array
    congestion: jax.Array
    welfare: jax.Array
    residual: jax.Array
    residuals: dict
    steps: jax.Array
    sigma_min: jax.Array
    ic_violation: jax.Array
    edges: jax.Array
    solve: SolveResult
    t_h: jax.Array
    tau_w: jax.Array

    @property
    def converged(self) -> bool:
        return bool(self.solve.converged) and float(self.ic_violation) <= 1e-9

    @property
    def status(self) -> str:
        s = self.solve.status
        if s == "successful" and float(self.ic_violation) > 1e-9:
            return "not_incentive_compatible"
        return s

    def summary(self) -> str:
        rows = [("status", self.status), ("bins m", int(self.L.shape[0])), ("unknowns = equations", 4 * int(self.L.shape[0]) + 1),
                ("max-norm residual", float(self.residual)), ("Newton steps", int(self.steps)),
                ("sigma_min(J)", float(self.sigma_min)), ("global IC violation", float(self.ic_violation)),
                ("Pi", float(self.Pi)), ("aggregate output", float(self.output)),
                ("congestion costs", float(self.congestion)), ("utilitarian welfare", float(self.welfare)),
                ("L bottom / top bin", f"{float(self.L[0]):.5g} / {float(self.L[-1]):.5g}"),
                ("u bottom / top bin", f"{float(self.u[0]):.5g} / {float(self.u[-1]):.5g}")]
        rows += [(f"residual: {k}", float(v)) for k, v in self.residuals.items()]
        return format_kv(rows, title="Oh (2025) forward solve (types fixed, locations re-sorted)")

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        d = {k: np.asarray(getattr(self, k)).tolist() for k in
             ("L", "u", "x", "y", "r", "c", "N", "theta", "lam", "wage", "P", "F", "T_r", "edges", "t_h", "tau_w")}
        d.update({k: float(getattr(self, k)) for k in ("Pi", "output", "congestion", "welfare", "residual",
                                                         "ic_violation", "sigma_min")})
        d.update(status=self.status, converged=self.converged, steps=int(self.steps),
                 residuals={k: float(v) for k, v in self.residuals.items()})
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)


@eqx.filter_jit
def _forward_core(params, types, pol, z0, tol, max_steps):
    args = (params, types, pol)
    sol = solve_root(_residual, z0, args, tol=tol, max_steps=max_steps, linear_solver="dense")
    z = sol.value
    o = _state(z, params, types, pol)
    Fz = _residual(z, args)
    return sol, o, Fz, _welfare_from_state(o, types), _ic_violation(o, params, types)


def solve_forward(params, types: ForwardTypes, policies=None, *, z0=None, tol: float = 1e-11,
                  max_steps: int = 60) -> ForwardResult:
    """Forward equilibrium of the quantitative model with types fixed (module docstring).

    Args:
        params: ``oh.Params`` (the baseline inverse solve's).
        types: :class:`ForwardTypes` from :func:`backout_types` (optionally :func:`refine_types`,
            or :func:`one_sided_types` for the B.6 benchmark).
        policies: :class:`Policies` or ``{"t_h": ..., "tau_w": ...}`` on the forward grid
            (scalars broadcast); ``None`` means the baseline policies.
        z0: warm start (a previous ``ForwardResult.z``); default the baseline allocation.
        tol: max-norm tolerance on the scaled residuals.

    Returns:
        :class:`ForwardResult`, differentiable in ``params`` and ``policies`` by implicit
        differentiation (NaN derivatives where the solve failed or the Jacobian is singular).
    """
    if not isinstance(types, ForwardTypes):
        raise ParameterError("types", "must be a ForwardTypes (oh.forward.backout_types(params, inverse_result))")
    pol = _policies(types, policies)
    m = types.m
    if z0 is None:
        z0 = _z_base(types)
    z0 = jnp.asarray(z0, dtype=jnp.float64)
    if z0.shape != (4 * m + 1,):
        raise ParameterError("z0", f"must have shape ({4 * m + 1},); got {tuple(z0.shape)}")
    sol, o, Fz, W, ic = _forward_core(params, types, pol, z0, tol, max_steps)
    blocks = {"worker indifference": Fz[:m - 1], "worker adding-up": Fz[m - 1:m], "firm indifference": Fz[m:2 * m - 1],
              "firm adding-up": Fz[2 * m - 1:2 * m], "housing clearing": Fz[2 * m:3 * m], "flow balance": Fz[3 * m:4 * m],
              "Pi definition": Fz[4 * m:]}
    return ForwardResult(
        z=sol.value, L=o["L"], u=o["u"], x=o["x"], y=o["y"], r=o["r"], c=o["c"], N=o["N"], theta=o["theta"],
        lam=o["lam"], wage=o["wage"], P=o["P"], F=o["F"], T_r=o["T_r"], Pi=o["Pi"],
        output=jnp.sum(types.land * o["output"]), congestion=jnp.sum(types.land * (o["C_r"] + o["C_v"])), welfare=W,
        residual=sol.residual, residuals={k: jnp.max(jnp.abs(v)) for k, v in blocks.items()}, steps=sol.steps,
        sigma_min=sol.sigma_min, ic_violation=ic, edges=types.edges, solve=sol, t_h=pol.t_h, tau_w=pol.tau_w)


def welfare(params, types: ForwardTypes, policies=None, *, what: str = "welfare") -> jax.Array:
    """A scalar outcome of the forward equilibrium: ``"welfare"`` (utilitarian), ``"output"`` or
    ``"congestion"``; differentiable in ``policies``/``params`` through the solve (implicit
    differentiation; NaN where the solve failed)."""
    if what not in ("welfare", "output", "congestion"):
        raise ParameterError("what", f"must be 'welfare', 'output' or 'congestion'; got {what!r}")
    pol = _policies(types, policies)
    m = types.m
    z0 = _z_base(types)
    sol, o, _, W, _ = _forward_core(params, types, pol, z0, 1e-11, 60)
    del m
    if what == "welfare":
        return W
    if what == "output":
        return jnp.sum(types.land * o["output"])
    return jnp.sum(types.land * (o["C_r"] + o["C_v"]))
