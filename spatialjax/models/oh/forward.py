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

Counterfactuals
---------------
* Housing deregulation (Section 4.4): ``t_h`` in ``l >= 0.9`` lowered to its level at
  ``l = 0.5`` (:func:`deregulation_policies`); federal tax reform (B.6):
  ``log(1 - tau_w) = a + s log L`` from (-0.072, -0.0061) to (-0.071, -0.0026), ``L`` the
  location's baseline density (:func:`tax_reform_policies`).
* One-sided benchmark (B.6, :func:`one_sided_types`): homogeneous firms, ``Abar(l) = y(l)``,
  ``c^one(N)`` recovered from the baseline so homogeneous firms are indifferent.
* Figure 6 decomposition (:func:`welfare_decomposition`) and welfare gradients with respect
  to ``t_h(l)``, ``tau_w(l)`` bin by bin (:func:`welfare_gradient`, checked against central
  finite differences in the tests).

Printed vs ours (stand-in profile ``quantitative.standin_profile`` at Table 1, 20 bins; changes
in percent)::

                                    paper     ours
    deregulation  top-decile density +55.3    +66.8
                  aggregate output    -0.01    +0.002
                  congestion costs    +1.36    +0.31
                  welfare             -0.21    -0.24
                  one-sided output    +0.40    +0.39
                  one-sided welfare   +0.37    -0.01
    tax reform    top-decile density +25      +22.7
                  aggregate output    +0.004   +0.004
                  welfare             -0.228   -0.305
                  one-sided output    +0.388   +0.357
                  one-sided welfare   +0.239   -0.03

Signs and orders of magnitude agree except the one-sided welfare change, which is about zero
in ours: the one-sided output gain (+0.39%, as printed) is offset by higher congestion costs
(+0.79%), whose size depends on the recovered ``c^one(N)`` and on ``t_h(l)``, neither of which
the paper prints (our ``t_h`` is the quantitative helper's linear stand-in, not Saiz's WRI
schedule). The two-sided congestion increase is smaller than printed for the same reason. The
Figure 6 pattern holds: the housing market accounts for most of the two-sided welfare loss
(-0.23 of -0.25 points), firm productivity for -0.02 (the top types) and tightness for < 0.001;
in the one-sided model local TFP contributes +0.32 points, offset by the other transfers.

Numerics: at the baseline the round trip is exact (residual ~1e-15); under refinement
(``refine_types``, m = 40, 80, 200) the aggregated densities converge to a limit 1.2% (worst
bin) from the 20-bin input, with self-convergence differences 2.0e-4 (m = 40 vs 80) and 5.7e-5
(80 vs 200). Plain Newton from the baseline does not reach the deregulation equilibrium; the
policy homotopy of :func:`solve_forward` (4 steps) does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import spatialjax  # noqa: F401  (float64)
from spatialjax.errors import ParameterError
from spatialjax.models.oh import quantitative as qm
from spatialjax.results import Result, check_status
from spatialjax.solver import SolveResult, solve_root
from spatialjax.tables import format_kv, format_table
from spatialjax.validation import check_finite, check_interval, check_positive

__all__ = [
    "ForwardTypes", "Policies", "ForwardResult", "backout_types", "refine_types", "one_sided_types", "solve_forward",
    "welfare", "welfare_gradient", "welfare_decomposition", "deregulation_policies", "tax_reform_policies",
    "CounterfactualResult", "run_counterfactual", "recover_productivity", "ReducedFormRecovery",
    "PAPER_COUNTERFACTUALS",
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
    tt = t   # no clip: evaluation points sit exactly on knots at the baseline, where clip's derivative is 1/2
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
    cs = _hermite(jnp.log(s).reshape(-1), types.one_logN, types.one_c, types.one_s).reshape(s.shape)
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
    baseline bin (piecewise constant) and the normalisations are unchanged; the location
    characteristics (policies ``t_h``, ``tau_w``, the baseline density used by the tax schedule,
    one-sided local TFP) are interpolated linearly in ``l`` between the baseline bin centres
    (constant beyond the outer centres). At ``k = 1`` nothing changes."""
    if int(k) != k or k < 1:
        raise ParameterError("k", f"refinement factor must be a positive integer; got {k}")
    k = int(k)
    if k == 1:
        return types
    rep = lambda v: jnp.repeat(v, k)  # noqa: E731
    e = np.asarray(types.edges)
    edges = np.concatenate([np.linspace(e[i], e[i + 1], k + 1)[:-1] for i in range(len(e) - 1)] + [[e[-1]]])
    ctr0 = 0.5 * (e[:-1] + e[1:])
    ctr = 0.5 * (edges[:-1] + edges[1:])
    # location characteristics (policies, baseline density, one-sided TFP): linear between the
    # coarse bin centres. Piecewise-constant steps would make the slope of the worker value in x
    # jump down where tau_w jumps up, breaking single crossing (global IC) at the step.
    lin = lambda v: jnp.asarray(np.interp(ctr, ctr0, np.asarray(v)))  # noqa: E731
    return dataclasses.replace(
        types, land=rep(types.land) / k, edges=jnp.asarray(edges), base_P=rep(types.base_P) / k,
        base_F=rep(types.base_F) / k, base_r=rep(types.base_r), base_log_theta=rep(types.base_log_theta),
        base_t_h=lin(types.base_t_h), base_tau_w=lin(types.base_tau_w),
        base_L=jnp.exp(lin(np.log(np.asarray(types.base_L)))), Abar=lin(types.Abar),
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


#: global incentive-compatibility tolerance (relative gain of a bin's type from another bin)
IC_TOL = 1e-9


class ForwardResult(Result, eqx.Module):
    """Result of :func:`solve_forward` on the forward grid of ``m`` bins.

    Per bin (shape ``(m,)``, ordered from ``l = 0`` up): ``L`` (density), ``u``, ``x``, ``y`` (local
    types; one-sided: ``y`` is local TFP ``Abar``), ``r``, ``c``, ``N``, ``theta``, ``lam``,
    ``wage``, ``T_r``, ``P``/``F`` (the bins' worker/firm shares). Scalars: ``Pi``, ``output``,
    ``congestion``, ``welfare``. Diagnostics: ``converged``, ``status``, ``residual`` (max-norm
    over all ``4m + 1`` equations), ``residuals`` (by block), ``steps``, ``sigma_min``,
    ``ic_violation`` (largest relative gain of any bin's local type from moving to another
    bin; > :data:`IC_TOL` flags a first-order solution that is not a global equilibrium: status
    ``"rejected"``, ``message`` says why). ``converged`` is True exactly when ``status`` is
    "successful" (:mod:`spatialjax.results` protocol; strict ``to_json``, NaN -> null).
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
        return qm._checked_converged(self.solve, self.ic_violation <= IC_TOL)

    @property
    def status(self) -> str | list[str]:
        return qm._checked_status(self.solve, self.ic_violation <= IC_TOL)

    @property
    def message(self) -> str:
        st = self.status
        if "rejected" in ([st] if isinstance(st, str) else st):
            return (f"not incentive compatible: a bin's type gains {float(jnp.max(self.ic_violation)):.3g} (relative) "
                    "from another bin; the first-order conditions hold but this is not a global equilibrium")
        return ""

    def summary(self) -> str:
        rows = [("status", self.status), *([("message", self.message)] if self.message else []),
                ("bins m", int(self.L.shape[0])), ("unknowns = equations", 4 * int(self.L.shape[0]) + 1),
                ("max-norm residual", float(self.residual)), ("Newton steps", int(self.steps)),
                ("sigma_min(J)", float(self.sigma_min)), ("global IC violation", float(self.ic_violation)),
                ("Pi", float(self.Pi)), ("aggregate output", float(self.output)),
                ("congestion costs", float(self.congestion)), ("utilitarian welfare", float(self.welfare)),
                ("L bottom / top bin", f"{float(self.L[0]):.5g} / {float(self.L[-1]):.5g}"),
                ("u bottom / top bin", f"{float(self.u[0]):.5g} / {float(self.u[-1]):.5g}")]
        rows += [(f"residual: {k}", float(v)) for k, v in self.residuals.items()]
        return format_kv(rows, title="Oh (2025) forward solve (types fixed, locations re-sorted)")

    def _dict_fields(self) -> dict:
        return {k: getattr(self, k) for k in
                ("L", "u", "x", "y", "r", "c", "N", "theta", "lam", "wage", "P", "F", "T_r", "edges", "t_h", "tau_w",
                 "Pi", "output", "congestion", "welfare", "ic_violation", "sigma_min", "steps", "residuals")}


@eqx.filter_jit
def _forward_core(params, types, pol, z0, tol, max_steps):
    args = (params, types, pol)
    sol = solve_root(_residual, z0, args, tol=tol, max_steps=max_steps, linear_solver="dense")
    z = sol.value
    o = _state(z, params, types, pol)
    Fz = _residual(z, args)
    return sol, o, Fz, _welfare_from_state(o, types), _ic_violation(o, params, types)


def solve_forward(params, types: ForwardTypes, policies=None, *, z0=None, tol: float = 1e-11,
                  max_steps: int = 60, continuation: bool = True) -> ForwardResult:
    """Forward equilibrium of the quantitative model with types fixed (module docstring).

    Args:
        params: ``oh.Params`` (the baseline inverse solve's).
        types: :class:`ForwardTypes` from :func:`backout_types` (optionally :func:`refine_types`,
            or :func:`one_sided_types` for the B.6 benchmark).
        policies: :class:`Policies` or ``{"t_h": ..., "tau_w": ...}`` on the forward grid
            (scalars broadcast); ``None`` means the baseline policies.
        z0: warm start (a previous ``ForwardResult.z``); default the baseline allocation.
        tol: max-norm tolerance on the scaled residuals.
        continuation: if Newton from ``z0`` fails, follow the policy homotopy from the baseline
            policies (4, 16, then 64 steps) before reporting failure (outside ``jax.grad`` only).

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
    if continuation and not bool(sol.converged):
        # Homotopy in the policy: t = s * new + (1 - s) * baseline, warm-starting each step from the
        # last; the step count doubles (up to 64) until every step converges.
        base = types.base_policies
        for steps in (4, 16, 64):
            z, ok = jnp.asarray(z0), True
            for k in range(1, steps + 1):
                s = k / steps
                pk = Policies(t_h=s * pol.t_h + (1 - s) * base.t_h, tau_w=s * pol.tau_w + (1 - s) * base.tau_w)
                sk, *_ = _forward_core(params, types, pk, z, tol, max_steps)
                if not bool(sk.converged):
                    ok = False
                    break
                z = sk.value
            if ok:
                sol, o, Fz, W, ic = _forward_core(params, types, pol, z, tol, max_steps)
                break
    blocks = {"worker indifference": Fz[:m - 1], "worker adding-up": Fz[m - 1:m], "firm indifference": Fz[m:2 * m - 1],
              "firm adding-up": Fz[2 * m - 1:2 * m], "housing clearing": Fz[2 * m:3 * m], "flow balance": Fz[3 * m:4 * m],
              "Pi definition": Fz[4 * m:]}
    return ForwardResult(
        z=sol.value, L=o["L"], u=o["u"], x=o["x"], y=o["y"], r=o["r"], c=o["c"], N=o["N"], theta=o["theta"],
        lam=o["lam"], wage=o["wage"], P=o["P"], F=o["F"], T_r=o["T_r"], Pi=o["Pi"],
        output=jnp.sum(types.land * o["output"]), congestion=jnp.sum(types.land * (o["C_r"] + o["C_v"])), welfare=W,
        residual=sol.residual, residuals={k: jnp.max(jnp.abs(v)) for k, v in blocks.items()}, steps=sol.steps,
        sigma_min=sol.sigma_min, ic_violation=ic, edges=types.edges, solve=sol, t_h=pol.t_h, tau_w=pol.tau_w)


def welfare(params, types: ForwardTypes, policies=None, *, what: str = "welfare", max_steps: int = 60) -> jax.Array:
    """A scalar outcome of the forward equilibrium: ``"welfare"`` (utilitarian), ``"output"`` or
    ``"congestion"``; differentiable in ``policies``/``params`` through the solve (implicit
    differentiation). Newton from the baseline allocation, no continuation (it must trace under
    ``jax.grad``): NaN value and gradient where that solve does not converge."""
    if what not in ("welfare", "output", "congestion"):
        raise ParameterError("what", f"must be 'welfare', 'output' or 'congestion'; got {what!r}")
    pol = _policies(types, policies)
    m = types.m
    z0 = _z_base(types)
    sol, o, _, W, _ = _forward_core(params, types, pol, z0, 1e-11, max_steps)
    del m
    if what == "welfare":
        v = W
    elif what == "output":
        v = jnp.sum(types.land * o["output"])
    else:
        v = jnp.sum(types.land * (o["C_r"] + o["C_v"]))
    # no silent failure: a solve that did not converge gives NaN (and, by solve_root, NaN gradients)
    return jnp.where(sol.converged, v, jnp.nan)


# ---------------------------------------------------------------------------------------
# Counterfactual policies (Section 4.4, Appendix B.6)
# ---------------------------------------------------------------------------------------


def deregulation_policies(types: ForwardTypes, *, lo: float = 0.9, ref: float = 0.5) -> Policies:
    """Housing deregulation of Section 4.4: in the densest locations ``l in [lo, 1]`` the
    regulation ``t_h(l)`` is set to its level at ``l = ref`` (the median location; linear
    interpolation of the baseline schedule between bin centres); ``tau_w`` unchanged."""
    if not (0.0 <= ref <= 1.0 and 0.0 <= lo < 1.0):
        raise ParameterError("lo", f"need 0 <= lo < 1 and 0 <= ref <= 1; got lo={lo}, ref={ref}")
    ctr = types.centers
    t_h = np.asarray(types.base_t_h)
    level = float(np.interp(ref, ctr, t_h))
    new = np.where(ctr >= lo, np.minimum(t_h, level), t_h)
    return Policies(t_h=jnp.asarray(new), tau_w=types.base_tau_w)


def tax_reform_policies(types: ForwardTypes, *, intercept: float = -0.071, slope: float = -0.0026) -> Policies:
    """Federal income tax reform of Appendix B.6 (TCJA): ``log(1 - tau_w) = intercept + slope log L``
    with the 2019 estimates (B.2: -0.071, -0.0026; the 2017 baseline is -0.072, -0.0061), where
    ``L`` is each location's *baseline* density (the rate is a fixed location characteristic);
    ``t_h`` unchanged."""
    tau = qm.income_tax_schedule(types.base_L, intercept=intercept, slope=slope)
    return Policies(t_h=types.base_t_h, tau_w=jnp.asarray(tau))


def _top_share(res: ForwardResult, what: str, lo: float = 0.9):
    ctr = 0.5 * (np.asarray(res.edges)[:-1] + np.asarray(res.edges)[1:])
    return float(np.sum(np.asarray(getattr(res, what))[ctr >= lo]))


def welfare_decomposition(params, types: ForwardTypes, base: ForwardResult, new: ForwardResult,
                          n_types: int = 400) -> dict:
    """Figure 6: the change in each worker's value ``rho V^u`` of (13) between two steady states,
    decomposed by the outcomes that moved, per worker type (types fixed; quantile ``c`` on a grid
    of ``n_types`` midpoints; ``c`` equals the worker's baseline location ``l``).

    The outcomes a worker of quantile ``c`` faces are the bins' local values interpolated
    linearly in the population-centre quantiles of the bins (the continuum pure assignment).
    Components (each varies one group of outcomes to the value faced in the new steady state
    with everything else at the baseline values she faced):

    * ``firm_productivity``: the local firm type ``y`` (one-sided: local TFP ``Abar``);
    * ``tightness``: ``theta`` (through ``lambda`` in ``A_w``);
    * ``housing``: rents ``r``, the local housing-tax rebate ``T_r`` and the change in ``Pi``
      due to landowners' and intermediaries' profits (the transfers tied to the two
      congestion markets, Section 4.4's "reduction in transfers due to lower landowner profits");
    * ``other``: the rest (the remaining change in ``Pi`` — firms' profits, income-tax
      revenue, benefits —, the income tax schedule itself, and interactions), so that the
      components add up to the total exactly.

    Returns arrays (shape ``(n_types,)``, in percent of the population-mean baseline value) and
    their means.
    """
    p = params
    c = (np.arange(n_types) + 0.5) / n_types
    x = np.asarray(_hermite(jnp.asarray(c), types.kc_w, types.kv_w, types.ks_w))
    def g(res, k):
        # the outcome faced by the worker of quantile c: the bins' local values placed at the bins'
        # population-centre quantiles and interpolated linearly (the continuum pure assignment; a
        # bin lookup would make the partial components jump wherever a type changes bins)
        C = np.concatenate([[0.0], np.cumsum(np.asarray(res.P))])
        C = C / C[-1]
        return np.interp(c, 0.5 * (C[:-1] + C[1:]), np.asarray(getattr(res, k)))

    pieces = {}
    for tag, res in (("0", base), ("1", new)):
        pieces[tag] = dict(y=g(res, "y"), lam=g(res, "lam"), r=g(res, "r"), T_r=g(res, "T_r"),
                           tau=g(res, "tau_w"), Pi=float(res.Pi))

    def transfers(res):
        o = _state(res.z, p, types, Policies(t_h=res.t_h, tau_w=res.tau_w))
        return float(jnp.sum(types.land * (o["landowner"] + o["intermediary"])))   # per worker (M_w = 1)

    dPi_h = transfers(new) - transfers(base)

    def v(y, lam, r, T_r, tau, Pi):
        A_w = np.asarray(qm.job_opportunities(p, jnp.asarray(y), jnp.asarray(lam)))
        return r ** (-float(p.omega)) * ((1 - tau) * (float(p.b) + A_w) * x - float(p.h_bar) * r + Pi + T_r)

    b0, b1 = pieces["0"], pieces["1"]
    v0 = v(**b0)
    scale = float(np.mean(v0)) / 100.0
    total = (v(**b1) - v0) / scale
    comp = {
        "firm_productivity": (v(**{**b0, "y": b1["y"]}) - v0) / scale,
        "tightness": (v(**{**b0, "lam": b1["lam"]}) - v0) / scale,
        "housing": (v(**{**b0, "r": b1["r"], "T_r": b1["T_r"], "Pi": b0["Pi"] + dPi_h}) - v0) / scale,
    }
    comp["other"] = total - sum(comp.values())
    out = {"c": c, "x": x, "total": total, **comp}
    out["mean"] = {k: float(np.mean(out[k])) for k in ("total", *comp)}
    return out


@dataclasses.dataclass
class CounterfactualResult(Result):
    """A counterfactual steady state against the baseline (both forward solves on the same grid),
    optionally with the one-sided sorting benchmark (B.6).

    ``metrics``: percent changes ``top_decile_density`` (workers in ``l in [0.9, 1]``: land is
    fixed, so population and density change alike), ``top_decile_firms``, ``output``,
    ``congestion``, ``welfare`` (utilitarian, all workers, employed and unemployed);
    ``decomposition``: :func:`welfare_decomposition`; ``one_sided``: the same metrics for the
    one-sided model (or ``None``); ``paper``: the printed numbers.

    Protocol (:mod:`spatialjax.results`): ``status`` "successful" when every forward solve
    converged, else the status of the first that did not (baseline, counterfactual, one-sided
    baseline, one-sided counterfactual; ``message`` lists them all); ``converged`` derived from it;
    ``residual`` the largest residual of the solves.
    """

    name: str
    base: ForwardResult
    new: ForwardResult
    metrics: dict
    decomposition: dict
    one_sided: dict | None = None
    one_sided_decomposition: dict | None = None
    paper: dict | None = None

    def _solves(self) -> list[tuple[str, ForwardResult]]:
        out = [("baseline", self.base), ("counterfactual", self.new)]
        if self.one_sided is not None:
            out += [("one-sided baseline", self.one_sided["base"]), ("one-sided counterfactual", self.one_sided["new"])]
        return out

    @property
    def status(self) -> str:
        bad = [r.status for _, r in self._solves() if not r.converged]
        return bad[0] if bad else "successful"

    @property
    def message(self) -> str:
        return "; ".join(f"{k}: {r.status}" + (f" ({r.message})" if r.message else "")
                         for k, r in self._solves() if not r.converged)

    @property
    def residual(self) -> float:
        return float(np.max([float(r.residual) for _, r in self._solves()]))   # NaN if any is NaN

    def table(self) -> list[tuple]:
        P = self.paper or {}
        rows = []
        for key, label in (("top_decile_density", "top-decile density"), ("output", "aggregate output"),
                           ("congestion", "congestion costs"), ("welfare", "utilitarian welfare")):
            rows.append((label, P.get(key, float("nan")), self.metrics[key]))
        if self.one_sided is not None:
            rows.append(("one-sided: output", P.get("one_sided_output", float("nan")), self.one_sided["output"]))
            rows.append(("one-sided: welfare", P.get("one_sided_welfare", float("nan")), self.one_sided["welfare"]))
        return rows

    def summary(self) -> str:
        notes = ["ours: stand-in bin data and policy schedules (the paper prints neither); "
                 "paper: Section 4.4 / Appendix B.6"] + ([f"not converged: {self.message}"] if self.message else [])
        t = format_table(["change (%)", "paper", "ours"], self.table(), digits=3,
                         title=f"Oh (2025) counterfactual: {self.name} (status {self.status})", notes=notes)
        d = self.decomposition["mean"]
        dec = format_table(["component", "mean change in rho V^u (%)"],
                           [(k, d[k]) for k in ("firm_productivity", "housing", "tightness", "other", "total")],
                           digits=4, title="Figure 6 decomposition (two-sided, unemployed workers' values)")
        return t + "\n" + dec

    def _dict_fields(self) -> dict:
        d = {"name": self.name, "metrics": self.metrics, "paper": self.paper,
             "decomposition_mean": self.decomposition["mean"], "base": self.base, "new": self.new}
        if self.one_sided is not None:
            d["one_sided"] = {k: v for k, v in self.one_sided.items() if k not in ("base", "new")}
        return d


def _metrics(base: ForwardResult, new: ForwardResult) -> dict:
    pct = lambda a, b: 100.0 * (float(a) / float(b) - 1.0)  # noqa: E731
    return {"top_decile_density": pct(_top_share(new, "P"), _top_share(base, "P")),
            "top_decile_firms": pct(_top_share(new, "F"), _top_share(base, "F")),
            "output": pct(new.output, base.output), "congestion": pct(new.congestion, base.congestion),
            "welfare": 100.0 * (float(new.welfare) - float(base.welfare)) / abs(float(base.welfare))}


def run_counterfactual(params, types: ForwardTypes, policies, *, name: str = "counterfactual",
                       one_sided: ForwardTypes | None = None, paper: dict | None = None) -> CounterfactualResult:
    """Solve the baseline and the counterfactual steady state (types fixed) and report the changes.

    Args:
        params: ``oh.Params``.
        types: :class:`ForwardTypes` (two-sided).
        policies: the counterfactual :class:`Policies` (e.g. :func:`deregulation_policies`).
        one_sided: optional :func:`one_sided_types` on the same grid: the B.6 comparison under
            the same policy change.
        paper: printed numbers for the summary table (default by ``name`` from
            :data:`PAPER_COUNTERFACTUALS`).
    """
    base = solve_forward(params, types)
    new = solve_forward(params, types, policies, z0=base.z)
    out = CounterfactualResult(name=name, base=base, new=new, metrics=_metrics(base, new),
                               decomposition=welfare_decomposition(params, types, base, new),
                               paper=paper if paper is not None else PAPER_COUNTERFACTUALS.get(name))
    if one_sided is not None:
        if not one_sided.one_sided or one_sided.m != types.m:
            raise ParameterError("one_sided", "must be one_sided_types(...) on the same grid as types")
        b1 = solve_forward(params, one_sided)
        n1 = solve_forward(params, one_sided, policies, z0=b1.z)
        out.one_sided = {**_metrics(b1, n1), "converged": b1.converged and n1.converged,
                         "status": b1.status if not b1.converged else n1.status, "base": b1, "new": n1}
        out.one_sided_decomposition = welfare_decomposition(params, one_sided, b1, n1)
    return out


# ---------------------------------------------------------------------------------------
# Welfare gradients with respect to the policy schedules
# ---------------------------------------------------------------------------------------


def welfare_gradient(params, types: ForwardTypes, policies=None, *, what: str = "welfare",
                     max_steps: int = 60) -> dict:
    """Gradient of a forward-equilibrium outcome with respect to the policy schedules, bin by bin.

    Returns ``{"t_h": dW/dt_h (m,), "tau_w": dW/dtau_w (m,), "value": W}`` by reverse-mode
    automatic differentiation through the forward solve (implicit function theorem, checked
    adjoint: NaN when the solve failed or the Jacobian is singular). A negative ``t_h`` entry
    means that *deregulating* that location (lowering ``t_h``) raises ``what``.
    """
    pol = _policies(types, policies)

    def f(th, tw):
        return welfare(params, types, Policies(t_h=th, tau_w=tw), what=what, max_steps=max_steps)

    val, (g_th, g_tw) = jax.value_and_grad(f, argnums=(0, 1))(pol.t_h, pol.tau_w)
    return {"t_h": g_th, "tau_w": g_tw, "value": val}


# ---------------------------------------------------------------------------------------
# Section 5 / Appendix C.1: productivity from worker and firm fixed effects
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class ReducedFormRecovery(Result):
    """Worker and firm productivity recovered from two-way fixed effects (Appendix C.1).

    ``x`` = ``exp(log_x_fe)``; ``y`` the firm productivity implied by inverting
    ``log y_fe = log(b + beta (rho~+lambda)(y - b)/(rho~ + beta lambda))``; both in the units of the
    fixed effects (averages of the log fixed effects normalised to zero, footnote 42, so ``b``
    is in the same units). ``b``, ``beta`` as given or calibrated to ``replacement_rate`` /
    ``labor_share``; ``replacement_rate``, ``labor_share`` as implied at the result.

    Protocol (:mod:`spatialjax.results`): ``status`` "successful", or "no_solution" when no
    ``beta`` in (1e-8, 1) gives the target labour share (``message`` gives the attainable range;
    ``y``, ``beta`` are NaN); ``residual`` ``|labor share - target|`` when ``beta`` is calibrated
    (0 when it is given: the inversion is closed-form).
    """

    x: np.ndarray
    y: np.ndarray
    b: float
    beta: float
    replacement_rate: float
    labor_share: float
    status: str = "successful"
    message: str = ""
    residual: float = 0.0

    def __post_init__(self):
        check_status(self.status)

    def summary(self) -> str:
        return format_kv([("status", self.status), *([("message", self.message)] if self.message else []),
                          ("|labor share - target|", self.residual), ("b (fixed-effect units)", self.b), ("beta", self.beta),
                          ("replacement rate", self.replacement_rate), ("labor share", self.labor_share),
                          ("sd log x", float(np.std(np.log(self.x)))), ("sd log y", float(np.std(np.log(self.y))))],
                         title="Productivity from fixed effects (Oh 2025, Appendix C.1)")


def recover_productivity(log_x_fe, log_y_fe, lam, *, rho: float, delta: float, u=None, weights=None,
                         b: float | None = None, beta: float | None = None, replacement_rate: float | None = None,
                         labor_share: float | None = None) -> ReducedFormRecovery:
    """Section 5's reduced-form recovery of ``x(l), y(l)`` from worker and firm fixed effects (C.1).

    With ``rho/(rho+delta_v) = 0`` the wage (10) is ``w = x * yhat`` with
    ``yhat = b + beta (rho~ + lambda)(y - b)/(rho~ + beta lambda)``, so worker fixed effects are
    ``log x`` and the fixed effects of new jobs are ``log yhat`` (each up to a constant: the
    paper normalises their averages to zero, footnote 42; the model is scale-invariant in
    ``(y, b)`` jointly). Hence ``y = b + (yhat - b)(rho~ + beta lambda)/(beta (rho~ + lambda))``.

    * ``b`` (in fixed-effect units) from the replacement rate
      ``b E[x] / E[x yhat | employed]`` when ``replacement_rate`` is given (C.1);
    * ``beta`` from the labour share ``E[x yhat | emp] / E[x y | emp]`` when ``labor_share``
      is given (monotone in ``beta``: bisection in ``log beta`` on (1e-8, 1)).

    Args:
        log_x_fe, log_y_fe: ``(n,)`` location averages of worker / new-job fixed effects.
        lam: ``(n,)`` job-arrival rates ``lambda(l) = delta (1-u)/u`` (observable).
        rho, delta: discount and separation rates (``rho~ = rho + delta``).
        u: ``(n,)`` unemployment rates for the employed weights (default ``delta/(delta+lam)``).
        weights: ``(n,)`` population weights of the locations (default equal).
        b, beta: given values; or pass ``replacement_rate`` / ``labor_share`` to calibrate them.
    """
    lx, ly, lam = (np.asarray(v, dtype=float) for v in (log_x_fe, log_y_fe, lam))
    n = lx.shape[0]
    for name, v in (("log_y_fe", ly), ("lam", lam)):
        if v.shape != (n,):
            raise ParameterError(name, f"must have shape ({n},) like log_x_fe; got {v.shape}")
    check_finite("log_x_fe", lx)
    check_finite("log_y_fe", ly)
    check_positive("lam", lam)
    check_positive("rho", rho)
    check_positive("delta", delta)
    if (b is None) == (replacement_rate is None):
        raise ParameterError("b", "give exactly one of b and replacement_rate")
    if (beta is None) == (labor_share is None):
        raise ParameterError("beta", "give exactly one of beta and labor_share")
    u = delta / (delta + lam) if u is None else np.asarray(u, dtype=float)
    wts = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=float)
    check_positive("weights", wts)
    wts = wts / wts.sum()
    x, yhat = np.exp(lx), np.exp(ly)
    emp = wts * (1 - u)
    mean_wage = np.sum(emp * x * yhat) / np.sum(emp)
    if b is None:
        check_interval("replacement_rate", replacement_rate, 0.0, None)
        b = replacement_rate * mean_wage / np.sum(wts * x)
    rt = rho + delta

    def y_of(bt):
        return b + (yhat - b) * (rt + bt * lam) / (bt * (rt + lam))

    def ls_of(bt):
        return np.sum(emp * x * yhat) / np.sum(emp * x * y_of(bt))

    status, message = "successful", ""
    if beta is None:
        check_interval("labor_share", labor_share, 0.0, 1.0)
        if np.any(yhat <= b):
            raise ParameterError("log_y_fe", "new-job fixed effects must exceed b (yhat > b) for the inversion")
        lo, hi = np.log(1e-8), 0.0
        ls_lo, ls_hi = ls_of(np.exp(lo)), ls_of(1.0)
        if not (ls_lo < labor_share < ls_hi):
            status = "no_solution"
            message = (f"labor_share {labor_share:.6g} is outside the range ({ls_lo:.6g}, {ls_hi:.6g}) attained by "
                       "beta in (1e-8, 1): beta cannot be calibrated")
        else:
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                if ls_of(np.exp(mid)) < labor_share:
                    lo = mid
                else:
                    hi = mid
            beta = float(np.exp(0.5 * (lo + hi)))
    if beta is None:
        return ReducedFormRecovery(x=x, y=np.full(n, np.nan), b=float(b), beta=float("nan"),
                                   replacement_rate=float(b * np.sum(wts * x) / mean_wage),
                                   labor_share=float("nan"), status=status, message=message,
                                   residual=float("nan"))
    y = y_of(beta)
    ls = float(ls_of(beta))
    return ReducedFormRecovery(x=x, y=y, b=float(b), beta=float(beta),
                               replacement_rate=float(b * np.sum(wts * x) / mean_wage),
                               labor_share=ls, status=status,
                               residual=abs(ls - labor_share) if labor_share is not None else 0.0)
