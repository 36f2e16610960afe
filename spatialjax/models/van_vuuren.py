"""van Vuuren (2016), "On-the-job search and city structure" (Gothenburg WP 662).

A linear monocentric city ``d in [0, 1]`` with unit mass of workers, distance-dependent
search efficiency ``s(d) = s0 - a d`` (eq. 1), Burdett--Mortensen wage posting with
on-the-job search (relative efficiency ``psi``), and endogenous land allocation.  The
unemployed occupy ``[du, du + u]``; employed workers earning less than the gap wage
``w~`` live in ``[0, du]``, those earning ``w~`` or more live in ``[du + u, 1]`` (Lemma 1:
wages increase with distance).  Configurations: *integrated* (``du = 0``), *interior*
(``0 < du < 1 - u``, the "donut" city) and *segregated* (``du = 1 - u``).

Implementation notes (what was followed where the paper is silent or garbled)
-----------------------------------------------------------------------------
* Equations (12)--(16) and Lemma 2 are lost from the source text.  We use the
  reconstruction in MODELS.md section 4, re-derived here from the Bellman equations (3)--(4):
  ``d(w) = (1-u) G(w)`` for ``w <= w~`` and ``(1-u) G(w) + u`` above, ``G(w~) = du/(1-u)``.
  The interior condition (15) is the indifference of the ``w~`` worker between ``du`` and
  ``du + u``:  ``tau - chi = a lam (1-psi) J_u + a lam psi int_phi^{w~} I(x) dx`` with
  ``I(x) = (1-F(x)) / (rho + delta + lam psi s(d(x)) (1-F(x)))`` and
  ``J_u = int_phi^{w+} I``.  Inside the wage gap ``(w1, w~)`` ``F`` is flat and a worker
  paid there would live at ``du`` (otherwise firms would post wages in the gap), so the gap
  contributes ``(w~ - w1) I(g~-)`` to ``J_u``.  Integrated requires
  ``tau - chi <= a lam (1-psi) J_u``, segregated (17) ``tau - chi >= a lam J_u``.
* Matching (2): ``mu = alpha [u s(du+u/2) + (1-u) psi s(de)]^nu v^xi`` where the arguments
  are the *average* distances of the unemployed (``du + u/2``) and employed (``de``, eq. 42);
  ``lam = alpha S^(nu-1) v^xi``.  With ``psi = 1`` ``S = s0 - a/2``.
* Everything is computed on the rank grid ``g = G(w)``: the flow condition (19) gives
  ``1 - F(g) = delta (1-g)(1-u) / (lam D(g))``, ``D(g) = u s(du+u/2) + (1-u) psi
  int_0^g s(d) dG`` (Appendix D), and equal profits (21) give the wage schedule
  ``w(g) = p - K Q(g)``, ``Q(g) = (rho+delta+lam psi s(d(g))(1-F(g))) (1-F(g))/(1-g)``, with
  ``K = (p - phi)/(rho + delta + lam psi s(d(phi)))`` the common profit per hire and free entry
  (22) ``(1-u) delta K / v = gamma``.  Integrals over wages use
  ``dw = -K Q'(g) dg`` (Gauss--Legendre on each side of ``g~``; ``Q'`` by autodiff).
* Reservation wage: (37) for ``du > 0`` and (38) for ``du = 0``, each with the rent subsidy
  term ``chi (1 - d)`` added to the unemployed's flow income (Section 5 policy).
* Planner (Section 5, Appendix H): steady state of the discounted control problem with
  current-value Hamiltonian; the ``v`` condition is (43) with ``xi`` instead of the
  misprinted ``(xi - 1)``; ``du`` enters linearly, so the optimum is bang-bang and we solve
  both corners and compare their flow welfare ``omega`` globally.  The segregated corner
  substitutes ``du = 1 - u`` after differentiating, as in the proof of Lemma 6.
* Welfare (24) with (42): ``omega = (1-u) p + u b - gamma v - tau [(1-u^2)/2 - du u]``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import spatialjax  # noqa: F401  (float64)
from spatialjax.errors import ConvergenceError, ParameterError
from spatialjax.results import Equilibria, Result
from spatialjax.scalar import bisect, bracket_root
from spatialjax.solver import solve_root
from spatialjax.sweep import sweep as _sweep
from spatialjax.tables import format_table
from spatialjax.validation import check_finite, check_interval, check_positive, is_traced

__all__ = [
    "Params", "MarketEquilibrium", "Equilibria", "PlannerResult", "solve_market", "solve_planner",
    "rents", "bid_rents", "sweep_a", "table1", "existence_condition", "welfare", "CONFIGS",
    "MarketEquilibriumHetero", "PlannerResultHetero", "solve_market_hetero", "solve_planner_hetero", "table2",
    "TABLE2_TAU",
]

CONFIGS = ("integrated", "interior", "segregated")
_FIELDS = ("a", "s0", "psi", "alpha", "nu", "xi", "delta", "rho", "tau", "b", "p", "gamma", "chi")

_NQ = 48  # Gauss-Legendre nodes per segment of the rank grid
_xg, _wg = np.polynomial.legendre.leggauss(_NQ)
_XG = (_xg + 1.0) / 2.0
_WG = _wg / 2.0


def _f(x):
    return jnp.asarray(x, dtype=jnp.float64)


class Params(eqx.Module):
    """Model parameters, with the paper's symbols (Sections 2 and 6).

    All fields are float64 scalars (or arrays of a common shape when vmapped).

    a      -- slope of search efficiency, s(d) = s0 - a d  (1); 0 <= a <= s0
    s0     -- search efficiency at the CBD (the tables imply s0 = 1)
    psi    -- relative search efficiency of the employed, 0 <= psi <= 1
    alpha  -- matching efficiency (2)
    nu, xi -- matching elasticities w.r.t. searchers and vacancies (2), in (0, 1]
    delta  -- job destruction rate;  rho -- discount rate
    tau    -- commuting cost per unit distance;  b -- home production;  p -- match output
    gamma  -- vacancy cost per period
    chi    -- rent subsidy to the unemployed per unit of distance to the edge (Section 5),
              an unemployed worker at d receives (1 - d) chi.  Default 0.
    Defaults: the paper's panel A baseline with a = 1 (Section 6).
    """

    a: jax.Array = eqx.field(converter=_f, default=1.0)
    s0: jax.Array = eqx.field(converter=_f, default=1.0)
    psi: jax.Array = eqx.field(converter=_f, default=1.0)
    alpha: jax.Array = eqx.field(converter=_f, default=1.0)
    nu: jax.Array = eqx.field(converter=_f, default=0.5)
    xi: jax.Array = eqx.field(converter=_f, default=0.5)
    delta: jax.Array = eqx.field(converter=_f, default=0.1)
    rho: jax.Array = eqx.field(converter=_f, default=0.05)
    tau: jax.Array = eqx.field(converter=_f, default=0.3)
    b: jax.Array = eqx.field(converter=_f, default=0.3)
    p: jax.Array = eqx.field(converter=_f, default=1.0)
    gamma: jax.Array = eqx.field(converter=_f, default=0.3)
    chi: jax.Array = eqx.field(converter=_f, default=0.0)

    def __check_init__(self):
        check_positive("s0", self.s0)
        check_interval("a", self.a, 0.0, None, lo_open=False)
        a, s0 = _concrete(self.a), _concrete(self.s0)
        if a is not None and s0 is not None and np.any(a > s0):
            raise ParameterError("a", f"must satisfy 0 <= a <= s0 (search efficiency s(d) = s0 - a d must stay >= 0 on [0,1]); got a={a}, s0={s0}")
        check_interval("psi", self.psi, 0.0, 1.0, lo_open=False, hi_open=False)
        check_positive("alpha", self.alpha)
        check_interval("nu", self.nu, 0.0, 1.0, hi_open=False)
        check_interval("xi", self.xi, 0.0, 1.0, hi_open=False)
        check_positive("delta", self.delta)
        check_positive("rho", self.rho, strict=False)
        check_positive("tau", self.tau, strict=False)
        check_finite("b", self.b)
        check_positive("gamma", self.gamma)
        check_positive("chi", self.chi, strict=False)
        p, b, tau = _concrete(self.p), _concrete(self.b), _concrete(self.tau)
        check_finite("p", self.p)
        if p is not None and b is not None and tau is not None and np.any(p - b <= tau):
            raise ParameterError("p", f"must satisfy p - b > tau (Section 2.1, so that the unemployed accept jobs); got p={p}, b={b}, tau={tau}")

    @classmethod
    def panel_a(cls, a: float = 1.0, **kw) -> "Params":
        """Table 1 panel A: delta=0.1, rho=0.05, tau=b=0.3, alpha=p=1, xi=nu=0.5, gamma=0.3, psi=1."""
        return cls(a=a, **kw)

    @classmethod
    def panel_b(cls, a: float = 1.0, **kw) -> "Params":
        """Table 1 panel B: as panel A but nu = xi = 1 and alpha = 8."""
        kw = {"alpha": 8.0, "nu": 1.0, "xi": 1.0, **kw}
        return cls(a=a, **kw)

    @classmethod
    def from_dict(cls, d: dict) -> "Params":
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise ParameterError(unknown[0], f"unknown parameter; allowed: {', '.join(_FIELDS)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in _FIELDS}

    def replace(self, **kw) -> "Params":
        return Params.from_dict({**self.to_dict(), **kw})


def _concrete(x):
    if is_traced(x):
        return None
    return np.asarray(x)


def existence_condition(params: Params) -> bool:
    """Theorem 3, (23): an equilibrium with v > 0 exists if p - b > 2 gamma (rho+delta) / (alpha (2 s0 - a)).

    (Derived in Appendix F for nu = xi = psi = 1: the left side of (39) at u = 1 is
    (s0 - a/2)(p - b) delta/(rho+delta), to be compared with gamma delta/alpha.)"""
    P = params
    return bool(P.p - P.b > 2 * P.gamma * (P.rho + P.delta) / (P.alpha * (2 * P.s0 - P.a)))


def welfare(params: Params, u, v, du):
    """Steady-state flow welfare omega_t, eq. (24) with the employed's mean distance (42)."""
    P = params
    return (1 - u) * P.p + u * P.b - P.gamma * v - P.tau * ((1 - u ** 2) / 2 - du * u)


def _lam_v(P: Params, u, du):
    """lam from the unemployment flow condition (18), and v from the matching function (2)."""
    s = lambda d: P.s0 - P.a * d
    sbar = s(du + u / 2)
    lam = (1 - u) * P.delta / (u * sbar)
    de = (1 + u) / 2 - du * u / (1 - u)  # (42)
    S = u * sbar + (1 - u) * P.psi * s(de)
    v = (lam / (P.alpha * S ** (P.nu - 1))) ** (1 / P.xi)
    return lam, v, sbar


def _core(P: Params, u, t, config):
    """All market objects given u and t = G(w~) = du/(1-u), for ``config``: a name of
    :data:`CONFIGS` or its index (0 integrated, 1 interior, 2 segregated; may be traced, so
    that one compiled program serves every configuration).

    Returns a dict of scalars (residuals r1: reservation wage (37)/(38); r2: location
    condition (15), zero for interior equilibria; ``slack``: the configuration's inequality,
    >= 0 when it holds) and the rank-grid arrays (``g``, ``F``, ``w``, ``d``) with 2*_NQ+2 points.
    """
    code = jnp.asarray(CONFIGS.index(config) if isinstance(config, str) else config)
    is_int = code == 0
    t = jnp.where(is_int, 0.0, jnp.where(code == 2, 1.0, t))
    du = (1 - u) * t
    s = lambda d: P.s0 - P.a * d
    lam, v, sbar = _lam_v(P, u, du)
    K = P.gamma * v / ((1 - u) * P.delta)  # free entry (22)
    psi = P.psi

    def Ibar(g, upper):  # Appendix D: int_phi^w s(d(x)) dG(x)
        lo = g * P.s0 - (1 - u) * P.a * g ** 2 / 2
        hi = g * (P.s0 - P.a * u) - (1 - u) * P.a * g ** 2 / 2 + P.a * u * t
        return jnp.where(upper, hi, lo)

    def dloc(g, upper):
        return (1 - u) * g + jnp.where(upper, u, 0.0)

    def one_m_F(g, upper):  # (19) solved for F on the rank grid
        D = u * sbar + (1 - u) * psi * Ibar(g, upper)
        return P.delta * (1 - g) * (1 - u) / (lam * D)

    def Q(g, upper):  # w(g) = p - K Q(g), from equal profits (21)
        D = u * sbar + (1 - u) * psi * Ibar(g, upper)
        return (P.rho + P.delta + lam * psi * s(dloc(g, upper)) * one_m_F(g, upper)) * P.delta * (1 - u) / (lam * D)

    def I(g, upper):
        f = one_m_F(g, upper)
        return f / (P.rho + P.delta + lam * psi * s(dloc(g, upper)) * f)

    def dQ(g, upper):  # Q'(g) in closed form (differentiating (19) and (21) along the rank grid)
        D = u * sbar + (1 - u) * psi * Ibar(g, upper)
        c = P.delta * (1 - u) / lam
        sd = s(dloc(g, upper))
        Dp = (1 - u) * psi * sd
        return (-(P.rho + P.delta) * c * Dp / D ** 2
                + lam * psi * c ** 2 * (-P.a * (1 - u) * (1 - g) / D ** 2 - sd / D ** 2
                                        - 2 * sd * (1 - g) * Dp / D ** 3))
    xg, wq = jnp.asarray(_XG), jnp.asarray(_WG)
    glo, wlo = t * xg, t * wq
    ghi, whi = t + (1 - t) * xg, (1 - t) * wq
    Jlo = K * jnp.sum(wlo * I(glo, False) * (-dQ(glo, False)))
    Jhi = K * jnp.sum(whi * I(ghi, True) * (-dQ(ghi, True)))
    Jgap = jnp.where(is_int, 0.0, K * (Q(t, False) - Q(t, True)) * I(t, False))
    Ju = Jlo + Jgap + Jhi
    M = K * jnp.sum(wlo * I(glo, False) * (du - (1 - u) * glo) * (-dQ(glo, False)))
    a, tau, chi = P.a, P.tau, P.chi
    phi = P.p - K * Q(jnp.zeros_like(u), is_int)
    r1 = phi - jnp.where(is_int, P.b + tau * u + chi * (1 - u) + lam * (1 - psi) * s(u) * Ju,  # (38)
                         P.b + tau * du + chi * (1 - du) + lam * (1 - psi) * s(du) * Ju - a * lam * psi * M)  # (37)
    r2 = jnp.where(is_int, tau - chi - a * lam * (1 - psi) * Ju,
                   tau - chi - a * lam * (1 - psi) * Ju - a * lam * psi * (Jlo + Jgap))  # (15)
    slack = jnp.where(is_int, -r2, r2)  # segregated (17): tau - chi >= a lam J_u (equals r2 at t = 1)
    w1 = P.p - K * Q(t, False)
    wt = P.p - K * Q(t, True)
    wplus = P.p - K * Q(jnp.ones_like(u), True)
    omega = welfare(P, u, v, du)
    t1 = jnp.atleast_1d(t)
    g = jnp.concatenate([jnp.zeros(1), glo, t1, t1, ghi, jnp.ones(1)])
    upper = jnp.concatenate([jnp.zeros(_NQ + 2, bool), jnp.ones(_NQ + 2, bool)]) | is_int
    Fg = 1 - one_m_F(g, upper)
    wg = P.p - K * Q(g, upper)
    dg = dloc(g, upper)
    return dict(r1=r1, r2=r2, slack=slack, u=u, t=t, du=du, v=v, lam=lam, phi=phi, K=K, Ju=Ju,
                Jlo=Jlo, Jgap=Jgap, Jhi=Jhi, w1=w1, w_tilde=wt, w_plus=wplus, omega=omega,
                s_u=sbar, g=g, F=Fg, w=wg, d=dg, upper=upper)


# ----------------------------------------------------------------------------------------
# Fixed-shape solve kernel (jit + vmap friendly)
# ----------------------------------------------------------------------------------------
_NU = 48     # u grid for bracketing (logit spaced)
_NT = 20     # t grid for interior seeds
_NB = 2      # brackets kept per t
_U_LO, _U_HI = 2e-3, 0.97
_sig = jax.nn.sigmoid


def _logit(p):
    return np.log(p / (1 - p))


_XU = jnp.linspace(_logit(_U_LO), _logit(_U_HI), _NU)
_TG = jnp.linspace(0.03, 0.97, _NT)


def _brackets(r, args):
    """Sign changes of ``r(x, args)`` on the logit u grid: a bool mask of shape (_NU - 1,)."""
    rg = jax.vmap(lambda x: r(x, args))(_XU)
    return (jnp.sign(rg[:-1]) != jnp.sign(rg[1:])) & jnp.isfinite(rg[:-1]) & jnp.isfinite(rg[1:])


def _roots_on_grid(r, args, lo, hi, **kw):
    """:func:`spatialjax.scalar.bracket_root` of ``r(x, args)`` on each bracket ``[lo_i, hi_i]``
    (vmapped): a batched :class:`~spatialjax.scalar.ScalarRoot` (status, residual, implicit
    derivative in ``args``, NaN where no root was found)."""
    return jax.vmap(lambda a, b: bracket_root(r, a, b, args, **kw))(lo, hi)


def _r1_corner(x, Pc):
    """Reservation-wage residual along a corner line; ``Pc = (P, code)``, code traced."""
    P, code = Pc
    return _core(P, _sig(x), jnp.zeros(()), code)["r1"]


def _r1_interior(x, Pt):
    P, t = Pt
    return _core(P, _sig(x), t, "interior")["r1"]


def _corner_roots(P, config):
    """All roots of r1(u) for a corner config (a name, or its index in :data:`CONFIGS`, may be
    traced): bracket on the u grid, then the shared bracketing root finder on each bracket.
    Returns (logit u, bracket found, root status code)."""
    code = jnp.asarray(CONFIGS.index(config) if isinstance(config, str) else config)
    ok = _brackets(_r1_corner, (P, code))
    root = _roots_on_grid(_r1_corner, (P, code), _XU[:-1], _XU[1:])
    return root.value, ok & root.converged, root.code


def _interior_F(z, P):
    """Interior system (37), (15) in (logit u, logit t)."""
    o = _core(P, _sig(z[0]), _sig(z[1]), "interior")
    return jnp.stack([o["r1"], o["r2"]])


def _newton2(P, z0, iters=40):
    """Interior system (r1, r2) = 0 by the generic engine (:func:`spatialjax.solver.solve_root`:
    Newton with Armijo line search, status enum, checked implicit derivatives that are NaN
    at a failed or singular root). Returns the :class:`~spatialjax.solver.SolveResult`."""
    return solve_root(_interior_F, z0, P, tol=1e-12, max_steps=iters, linear_solver="dense")


_KEEP = ("r1", "r2", "slack", "u", "du", "v", "phi", "omega", "w1", "w_tilde", "w_plus", "t")


def _corner_kernel(P: Params):
    """Fixed-shape candidates of the two corner configurations (pure, jit/vmap-able): both
    corners in one program, vmapped over the configuration code (integrated 0, segregated 2)."""
    codes = jnp.asarray([0, 2])
    xc, okc, cc = jax.vmap(lambda c: _corner_roots(P, c))(codes)
    corner = jax.vmap(jax.vmap(lambda x, c: _core(P, _sig(x), jnp.zeros(()), c), in_axes=(0, None)))(xc, codes)
    out = {cfg: ({k: corner[k][i] for k in _KEEP}, okc[i]) for i, cfg in enumerate(("integrated", "segregated"))}
    out["corner_codes"] = {"integrated": cc[0], "segregated": cc[1]}   # bracket_root status codes per bracket
    out["converged"] = jnp.any(okc)
    return out


_corner_kernel_jit = jax.jit(_corner_kernel)


def _kernel(P: Params):
    """Fixed-shape candidates for all three configurations (pure, jit/vmap-able)."""
    out = _corner_kernel(P)

    def seeds_for_t(t):
        ok = _brackets(_r1_interior, (P, t))
        idx = jnp.argsort(~ok)[:_NB]  # first _NB brackets
        # a starting point only (the Newton solve below decides and reports): the bare
        # fixed-step bisection of spatialjax.scalar, no status or derivative needed here
        x = jax.vmap(lambda lo, hi: bisect(lambda xx: _r1_interior(xx, (P, t)), lo, hi, 40))(_XU[:-1][idx], _XU[1:][idx])
        return x, ok[idx]

    xseed, okseed = jax.vmap(seeds_for_t)(_TG)
    z0 = jnp.stack([xseed.ravel(), jnp.repeat(jnp.log(_TG / (1 - _TG)), _NB)], axis=1)
    # lax.map, not vmap: each seed's Newton loop stops on its own (cheaper to compile, and on
    # CPU faster to run, as for the Section 7 system)
    sol = jax.lax.map(lambda z: _newton2(P, z), z0)
    z = sol.value
    res = jnp.where(sol.converged, sol.residual, jnp.inf)

    inter = jax.vmap(lambda z: _core(P, _sig(z[0]), _sig(z[1]), 1))(z)
    okseed = okseed.ravel()
    out["interior"] = ({k: inter[k] for k in _KEEP}, okseed, res)
    # sweep protocol: a scenario "succeeded" when every candidate search ran to a status
    # (the bracketing root finder converged on every bracket it was given, and the
    # Newton solves ended with a status); which candidates are equilibria is decided later
    out["converged"] = out["converged"] | jnp.any(okseed & sol.converged)
    return out


_CHUNK = 1  # scenarios per sweep chunk: solve_market (one scenario) and sweep_a then share one compilation


def _run_kernel(P: Params, a_values=None):
    """Run the kernel over a batch of ``a`` values with :func:`spatialjax.sweep.sweep`
    (chunks of ``_CHUNK`` scenarios: one compilation shared by solve_market and sweep_a).
    Returns NumPy candidates with a leading batch axis."""
    if a_values is None:
        a_values = np.asarray([float(P.a)])
    n = a_values.size
    Pb = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,)), P)
    Pb = eqx.tree_at(lambda q: q.a, Pb, jnp.asarray(a_values, dtype=jnp.float64))
    res = _sweep(_kernel, Pb, batch_size=_CHUNK)
    return jax.tree.map(np.asarray, res.values)


_core_jit = jax.jit(_core)   # config as its index in CONFIGS (traced: one program for all three)


# ----------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MarketEquilibrium(Result):
    """One market equilibrium (Section 4).

    Scalars: ``u`` unemployment, ``v`` vacancies, ``du`` inner edge of the unemployed
    zone, ``phi`` reservation wage (lowest wage), ``w1`` < ``w_tilde`` the wage gap,
    ``w_plus`` highest wage, ``lam`` contact rate, ``K`` profit per hire, ``omega`` flow
    welfare (24), ``s_u`` = s(du + u/2) (the table's "s(du)" column).  ``config`` is
    "integrated", "interior" or "segregated"; ``slack`` >= 0 is the margin of the
    configuration's inequality ((15)--(17)); ``residual`` the max abs residual of the
    equilibrium equations; ``status`` "successful", or "rejected" with the failed sanity
    conditions in ``message`` (protocol of :mod:`spatialjax.results`).
    Arrays on the rank grid (shape (2*48+4,)): ``g`` = G(w), ``F`` = F(w(g)), ``w``, ``d``.
    """

    u: float
    v: float
    du: float
    phi: float
    config: str
    omega: float
    lam: float
    K: float
    w1: float
    w_tilde: float
    w_plus: float
    s_u: float
    slack: float
    residual: float
    status: str
    g: np.ndarray
    F: np.ndarray
    w: np.ndarray
    d: np.ndarray
    params: Params
    message: str = ""
    _dict_exclude = ("params",)   # reported once by the Equilibria collection

    def summary(self) -> str:
        rows = [("configuration", self.config), ("u", self.u), ("v", self.v), ("du", self.du),
                ("s(du+u/2)", self.s_u), ("lambda", self.lam), ("phi (reservation wage)", self.phi),
                ("w1 (top of low segment)", self.w1), ("w~ (gap wage)", self.w_tilde), ("w+", self.w_plus),
                ("omega_t", self.omega), ("configuration slack", self.slack),
                ("residual (max abs)", self.residual), ("status", self.status)]
        return format_table(["quantity", "value"], rows, title="van Vuuren (2016) market equilibrium",
                            notes=[self.message] if self.message else ())


def _market_table(eqs: Equilibria) -> str:
    """Table of :func:`solve_market` / :func:`solve_market_hetero` (one row per equilibrium)."""
    rows = [(e.config, e.u, e.v, e.du, e.s_u, e.phi, e.omega, e.residual) for e in eqs]
    return format_table(["config", "u", "v", "du", "s(du)", "phi", "omega_t", "residual"], rows,
                        title=eqs.title,
                        notes=[f"status: {eqs.status} ({eqs.message})", "s(du) = s(du + u/2); phi: reservation wage; "
                               "omega_t: flow welfare (24)"] + [f"rejected: {r}" for r in eqs.rejected])


def _make_eq(P: Params, u: float, t: float, config: str, residual: float) -> MarketEquilibrium:
    o = _core_jit(P, jnp.asarray(u), jnp.asarray(t), jnp.asarray(CONFIGS.index(config)))
    o = {k: np.asarray(v) for k, v in o.items()}
    problems = []
    if not np.all(np.isfinite([o["u"], o["v"], o["phi"], o["omega"]])):
        problems.append("non-finite values")
    if o["v"] <= 0:
        problems.append("v <= 0")
    if not (o["phi"] < P.p):
        problems.append("phi >= p")
    wl = o["w"][o["g"] < t - 1e-12] if config != "integrated" else np.array([])
    wu = o["w"][(o["g"] > t + 1e-12)]
    if (wl.size > 1 and np.any(np.diff(wl) <= 0)) or (wu.size > 1 and np.any(np.diff(wu) <= 0)):
        problems.append("wage schedule not increasing in rank")
    if config == "interior" and not (o["w_tilde"] > o["w1"]):
        problems.append("no wage gap (w~ <= w1)")
    return MarketEquilibrium(
        u=float(o["u"]), v=float(o["v"]), du=float(o["du"]), phi=float(o["phi"]), config=config,
        omega=float(o["omega"]), lam=float(o["lam"]), K=float(o["K"]), w1=float(o["w1"]),
        w_tilde=float(o["w_tilde"]), w_plus=float(o["w_plus"]), s_u=float(o["s_u"]),
        slack=float(o["slack"]), residual=float(residual), status="rejected" if problems else "successful",
        g=o["g"], F=o["F"], w=o["w"], d=o["d"], params=P, message="; ".join(problems))


def _select(P: Params, out, tol: float, configs=CONFIGS):
    """Turn the kernel's fixed-shape candidates into accepted equilibria (NumPy side)."""
    out = jax.tree.map(np.asarray, out)
    found, rejected = [], []
    for config in [c for c in CONFIGS if c in configs]:
        if config == "interior":
            c, ok, res = out[config]
        else:
            c, ok = out[config]
            res = np.abs(c["r1"])
        for i in np.flatnonzero(ok):
            u, t = float(c["u"][i]), float(c["t"][i])
            if not np.isfinite(res[i]) or res[i] > tol:
                continue
            if config == "interior" and not (1e-7 < t < 1 - 1e-7):
                continue
            if any(abs(u - e[1]) < 1e-6 and abs(t - e[2]) < 1e-6 and e[0] == config for e in found):
                continue
            if any(abs(u - r[1]) < 1e-6 and r[0] == config for r in rejected):
                continue
            if c["slack"][i] < -1e-12:
                rejected.append((config, u, t, f"{config} candidate u={u:.4f} violates its location "
                                 f"inequality (slack {c['slack'][i]:.3g})"))
                continue
            found.append((config, u, t, float(res[i])))
    eqs = [_make_eq(P, u, t, cfg, r) for cfg, u, t, r in found]
    good = [e for e in eqs if e.converged]
    for e in eqs:
        if not e.converged:
            rejected.append((e.config, e.u, 0.0, f"{e.config} candidate u={e.u:.4f} rejected: {e.message}"))
    return good, [r[3] for r in rejected]


def solve_market(params: Params, *, tol: float = 1e-9, throw: bool = False, configs: Sequence[str] = CONFIGS
                 ) -> Equilibria:
    """All market equilibria (Section 4) for ``params``.

    Each configuration is solved separately: integrated (du = 0; (38) in u), segregated
    (du = 1-u; (37) in u) by bracketing on a logit-spaced u grid and bisection, and interior
    ((37) and (15) in (u, du)) by damped Newton from seeds on a (du/(1-u)) x u grid.  A
    candidate is kept when its residual is below ``tol`` and its configuration's inequality
    holds; more than one equilibrium can be returned.  If none is found the list is empty and
    ``status`` says so (a warning is issued; ``throw=True`` raises ConvergenceError instead).

    ``configs`` restricts the search to some configurations (names of :data:`CONFIGS`).
    Without "interior" only the corner program runs (the bracketing root finder on both corner
    lines; a smaller program, about half the full kernel's compile time), and an interior
    equilibrium is not looked for: "no_solution" then means none *of these configurations*.
    """
    if not isinstance(params, Params):
        raise ParameterError("params", f"must be a van_vuuren.Params; got {type(params).__name__}")
    configs = (configs,) if isinstance(configs, str) else tuple(configs)
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        raise ParameterError("configs", f"must be a non-empty subset of {CONFIGS}; got {configs!r}")
    if "interior" in configs:
        out = jax.tree.map(lambda x: x[0], _run_kernel(params))
    else:
        out = _corner_kernel_jit(params)
    good, rejected = _select(params, out, tol, configs)
    status, message = _collection_status(good)
    if not good:
        if throw:
            raise ConvergenceError(f"van_vuuren.solve_market: {message}; rejected: {rejected}")
        warnings.warn(f"van_vuuren.solve_market: {message}", RuntimeWarning, stacklevel=2)
    good.sort(key=lambda e: e.du)
    return Equilibria(good, status=status, message=message, rejected=rejected, params=params,
                      title="van Vuuren (2016) market equilibria", formatter=_market_table)


def _collection_status(found) -> tuple[str, str]:
    if found:
        return "successful", f"{len(found)} equilibri{'um' if len(found) == 1 else 'a'} found"
    return "no_solution", ("no equilibrium found (no candidate satisfied the equations and its configuration "
                           "inequality)")


# ----------------------------------------------------------------------------------------
# Planner (Section 5, Appendix H)
# ----------------------------------------------------------------------------------------
def _planner_resid(P: Params, u, corner: str):
    """Steady state of the planner's optimal control for a du corner, residual in u.

    Current-value Hamiltonian H = omega(u, v, du) + zeta [delta (1-u) - lam(u,v,du) u s(du+u/2)].
    dH/dv = 0 gives zeta (43 with xi, not xi - 1); the costate's steady state rho zeta = dH/du
    (44)/(46).  v(u) follows from (18) and the matching function, so one equation in u remains.
    """
    du = jnp.zeros_like(u) if corner == "integrated" else 1 - u

    def lam_fn(uu, vv, dd):
        s = lambda d: P.s0 - P.a * d
        de = (1 + uu) / 2 - dd * uu / (1 - uu)
        S = uu * s(dd + uu / 2) + (1 - uu) * P.psi * s(de)
        return P.alpha * S ** (P.nu - 1) * vv ** P.xi

    def flow(uu, vv, dd):
        return P.delta * (1 - uu) - lam_fn(uu, vv, dd) * uu * (P.s0 - P.a * (dd + uu / 2))

    _, v, _ = _lam_v(P, u, du)
    om = lambda uu, vv: welfare(P, uu, vv, du)
    fv = jax.grad(flow, 1)(u, v, du)
    zeta = P.gamma / fv  # from -gamma + zeta * f_v = 0
    Hu = jax.grad(om, 0)(u, v) + zeta * jax.grad(flow, 0)(u, v, du)
    return P.rho * zeta - Hu


@dataclasses.dataclass(frozen=True)
class PlannerResult(Result):
    """Planner optimum (Section 5): the better of the two du corners (bang-bang).

    ``u, v, du, omega`` at the chosen corner, ``config`` ("integrated"/"segregated"),
    ``corners`` = {corner: dict(u, v, du, omega, residual)} for both corners,
    ``local_choice_26`` the corner that condition (26) evaluated at the chosen corner's lambda
    would pick (it can disagree with the global comparison), ``residual``, ``status``
    ("successful", also when only one corner has an optimum (then ``message`` says which),
    or "no_solution") and ``message``."""

    u: float
    v: float
    du: float
    omega: float
    config: str
    corners: dict
    local_choice_26: str
    residual: float
    status: str
    message: str = ""

    def summary(self) -> str:
        rows = [(k, c["u"], c["v"], c["du"], c["omega"], c["residual"]) for k, c in self.corners.items()]
        return format_table(["corner", "u", "v", "du", "omega_t", "residual"], rows,
                            title="van Vuuren (2016) planner (Section 5)",
                            notes=[f"chosen: {self.config} (omega* = {self.omega:.4f}); "
                                   f"local condition (26) at that corner picks: {self.local_choice_26}",
                                   f"status: {self.status}" + (f" ({self.message})" if self.message else "")])


def _planner_kernel(P: Params):
    out = {}
    for corner in ("integrated", "segregated"):
        r = (lambda c: (lambda x, PP: _planner_resid(PP, _sig(x), c)))(corner)
        ok = _brackets(r, P)
        root = _roots_on_grid(r, P, _XU[:-1], _XU[1:])
        x = root.value
        u = _sig(x)
        du = jnp.zeros_like(u) if corner == "integrated" else 1 - u
        lam, v, _ = jax.vmap(lambda uu, dd: _lam_v(P, uu, dd))(u, du)
        om = welfare(P, u, v, du)
        res = jnp.where(root.converged, root.residual, jnp.inf)
        out[corner] = dict(u=u, v=v, du=du, omega=om, lam=lam, ok=ok & root.converged, residual=res)
    return out


_planner_jit = jax.jit(_planner_kernel)


def _corner_omega(P: Params, u, corner: str):
    du = jnp.zeros_like(u) if corner == "integrated" else 1 - u
    _, v, _ = _lam_v(P, u, du)
    return welfare(P, u, v, du)


_corner_omega_jit = jax.jit(_corner_omega, static_argnums=(2,))
_corner_omega_grid = jax.jit(jax.vmap(_corner_omega, in_axes=(None, 0, None)), static_argnums=(2,))


def _corner_domega(u, a):
    """d omega/du along a corner line; ``a = (P, seg)``, seg 0.0 (integrated, du = 0) or 1.0
    (segregated, du = 1 - u) as a number, so that both corners share one program."""
    P, seg = a

    def om(uu):
        _, v, _ = _lam_v(P, uu, seg * (1 - uu))
        return welfare(P, uu, v, seg * (1 - uu))

    return jax.grad(om)(u)


@jax.jit
def _corner_max(P, lo, hi):
    """Root of d omega/du on [lo[i], hi[i]] for both corners i (the shared bracketing root
    finder, vmapped over the corners: one compiled copy instead of two)."""
    roots = jax.vmap(lambda l, h, seg: bracket_root(_corner_domega, l, h, (P, seg)))(lo, hi, jnp.asarray([0.0, 1.0]))
    return {c: jax.tree.map(lambda x, i=i: x[i], roots) for i, c in enumerate(("integrated", "segregated"))}


def _steady_state_corners(P: Params):
    """Max of the steady-state flow welfare omega(u) along each corner line (du = 0, du = 1-u),
    v(u) from (18) and (2): grid search on the u grid, then the root of d omega/du between the
    grid neighbours of the best grid point (:func:`spatialjax.scalar.bracket_root`; a maximum
    at the edge of the grid has no bracket and is reported with residual inf)."""
    out = {}
    xs = np.asarray(_XU)
    us = 1 / (1 + np.exp(-xs))
    lo, hi, best = [], [], []
    for corner in ("integrated", "segregated"):
        om = np.asarray(_corner_omega_grid(P, jnp.asarray(us), corner))
        i = int(np.nanargmax(om))
        best.append(us[i])
        lo.append(us[max(i - 1, 0)])
        hi.append(us[min(i + 1, us.size - 1)])
    roots = _corner_max(P, jnp.asarray(lo), jnp.asarray(hi))
    for k, corner in enumerate(("integrated", "segregated")):
        root = roots[corner]
        if bool(root.converged):
            u, res = float(root.value), float(root.residual)
        else:  # no interior maximum between the grid neighbours (edge of the grid): report, do not pretend
            u, res = best[k], float("inf")
        du = 0.0 if corner == "integrated" else 1 - u
        lam, v, _ = (float(x) for x in _lam_v(P, jnp.asarray(u), jnp.asarray(du)))
        out[corner] = dict(u=float(u), v=v, du=float(du), omega=float(_corner_omega_jit(P, jnp.asarray(u), corner)),
                           lam=lam, residual=float(res))
    return out


def solve_planner(params: Params, *, objective: str = "steady_state", tol: float = 1e-9,
                  throw: bool = False) -> PlannerResult:
    """Planner (Section 5): both du corners (bang-bang), compared globally by omega_t.

    objective="steady_state" (default) maximises the steady-state flow welfare omega_t (24)
    along each corner (v and u tied by (18) and (2)); this is the "per period optimal
    welfare" of Table 1 and reproduces its omega*_t column best (all rows within 0.001).
    objective="discounted" solves the steady state of the discounted control problem
    (Appendix H: (43) with xi, (46)); with rho > 0 its omega_t can fall slightly below the
    market's (panel B, a = 0.25: 0.76436 vs 0.76439), since it does not maximise omega_t.
    ``residual`` is |d omega/du| (steady_state) or the costate-equation residual (discounted).
    """
    if not isinstance(params, Params):
        raise ParameterError("params", f"must be a van_vuuren.Params; got {type(params).__name__}")
    if objective not in ("steady_state", "discounted"):
        raise ParameterError("objective", f"must be 'steady_state' or 'discounted'; got {objective!r}")
    corners = {}
    if objective == "discounted":
        out = jax.tree.map(np.asarray, _planner_jit(params))
        for corner, c in out.items():
            idx = [i for i in np.flatnonzero(c["ok"]) if c["residual"][i] < tol and c["v"][i] > 0]
            if not idx:
                continue
            i = max(idx, key=lambda j: c["omega"][j])  # several stationary points: keep the best
            corners[corner] = {k: float(c[k][i]) for k in ("u", "v", "du", "omega", "lam", "residual")}
    else:
        for corner, c in _steady_state_corners(params).items():
            if c["residual"] < 1e-6 and np.isfinite(c["omega"]):
                corners[corner] = c
    if not corners:
        msg = "planner: no optimum found at either corner"
        if throw:
            raise ConvergenceError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        nan = float("nan")
        return PlannerResult(nan, nan, nan, nan, "none", {}, "none", nan, "no_solution", msg)
    best = max(corners, key=lambda k: corners[k]["omega"])
    c = corners[best]
    P = params
    crit = float(P.a * c["lam"] * (P.p - P.b) / (P.rho + P.delta + c["lam"] * P.s0))  # (26)
    local = "segregated" if float(P.tau) > crit else "integrated"
    message = "" if len(corners) == 2 else f"only the {best} corner has an optimum"
    return PlannerResult(c["u"], c["v"], c["du"], c["omega"], best, corners, local, c["residual"], "successful",
                         message)


# ----------------------------------------------------------------------------------------
# Rents (Appendix C) and bid rents
# ----------------------------------------------------------------------------------------
def _slopes(eq: MarketEquilibrium, n: int = 2001):
    """Fine rank grid with wage and the tail integral T(g) = int_{w(g)}^{w+} I(x) dx."""
    P = eq.params
    u, du, lam, K = eq.u, eq.du, eq.lam, eq.K
    t = du / (1 - u)
    s = lambda d: float(P.s0) - float(P.a) * d
    psi, rho, delta = float(P.psi), float(P.rho), float(P.delta)
    sbar = s(du + u / 2)

    def seg(g, upper):
        Ib = np.where(upper, g * (float(P.s0) - float(P.a) * u) - (1 - u) * float(P.a) * g ** 2 / 2 + float(P.a) * u * t,
                      g * float(P.s0) - (1 - u) * float(P.a) * g ** 2 / 2)
        D = u * sbar + (1 - u) * psi * Ib
        f = delta * (1 - g) * (1 - u) / (lam * D)
        d = (1 - u) * g + np.where(upper, u, 0.0)
        qrate = rho + delta + lam * psi * s(d) * f
        w = float(P.p) - K * qrate * delta * (1 - u) / (lam * D)
        return w, f / qrate, d

    glo = np.linspace(0, t, n) if t > 0 else np.zeros(0)
    ghi = np.linspace(t, 1, n) if t < 1 else np.zeros(0)
    wl, Il, dl = seg(glo, False)
    wh, Ih, dh = seg(ghi, True)
    w = np.concatenate([wl, wh])
    # integral of I over wages, piecewise: lower segment, the gap (F flat, I = I(g~-) since the
    # gap worker lives at du), upper segment
    lo_int = 0.5 * (Il[1:] + Il[:-1]) * np.diff(wl)
    hi_int = 0.5 * (Ih[1:] + Ih[:-1]) * np.diff(wh)
    parts = [lo_int]
    if wl.size and wh.size:
        parts.append(np.array([Il[-1] * (wh[0] - wl[-1])]))
    parts.append(hi_int)
    seg_int = np.concatenate(parts)
    tail = np.concatenate([np.cumsum(seg_int[::-1])[::-1], [0.0]])
    d = np.concatenate([dl, dh])
    return d, w, tail, float(tail[0])


def rents(eq: MarketEquilibrium, d, RA: float = 0.0):
    """Land rent R(d) (Appendix C, (32)--(36)), shape of ``d``; R(1) = RA.

    R'(d) = dPsi_e/dd(d, w(d)) = -tau - a lam psi T(w(d)) where employed live (11), and the
    unemployed's slope -(a lam J_u + chi) on [du, du+u] (10), (34).  Integrated numerically from
    d = 1 inwards on a fine rank grid (trapezoid), which reproduces the closed forms."""
    P = eq.params
    d = np.asarray(d, float)
    if np.any((d < 0) | (d > 1)) or not np.all(np.isfinite(d)):
        raise ParameterError("d", "distances must lie in [0, 1]")
    dd, _, tail, Ju = _slopes(eq)
    a, lam, psi, tau, chi = float(P.a), eq.lam, float(P.psi), float(P.tau), float(P.chi)
    du, u = eq.du, eq.u
    x = np.linspace(0, 1, 4001)
    # slope magnitude -R'(x)
    emp_slope = tau + a * lam * psi * np.interp(x, dd, tail) if dd.size else np.zeros_like(x)
    # the interp over dd: dd jumps from du to du+u; points inside the unemployed zone are overwritten
    unemp = (x > du) & (x < du + u)
    slope = np.where(unemp, a * lam * Ju + chi, emp_slope)
    integ = np.concatenate([[0.0], np.cumsum(0.5 * (slope[1:] + slope[:-1]) * np.diff(x))])
    R = RA + (integ[-1] - integ)
    return np.interp(d, x, R)


def bid_rents(eq: MarketEquilibrium, d, ranks: Sequence[float] = (0.1, 0.5, 0.9), RA: float = 0.0):
    """Bid-rent lines (Section 3.1): Psi_u(d) through R on the unemployed zone (slope (10) - chi)
    and Psi_e(d, w(g)) for each rank g through R(d(w)) (slope (11)).  Returns dict name -> array."""
    P = eq.params
    d = np.asarray(d, float)
    dd, ww, tail, Ju = _slopes(eq)
    a, lam, psi, tau, chi = float(P.a), eq.lam, float(P.psi), float(P.tau), float(P.chi)
    out = {}
    dmid = eq.du + eq.u / 2
    out["unemployed"] = rents(eq, [dmid], RA)[0] - (a * lam * Ju + chi) * (d - dmid)
    for gr in ranks:
        dg = (1 - eq.u) * gr + (eq.u if gr >= eq.du / (1 - eq.u) else 0.0)
        Tg = np.interp(dg, dd, tail)
        out[f"employed g={gr:g}"] = rents(eq, [dg], RA)[0] - (tau + a * lam * psi * Tg) * (d - dg)
    return out


# ----------------------------------------------------------------------------------------
# Sweeps and the Table 1 reproduction
# ----------------------------------------------------------------------------------------
def sweep_a(params: Params, a_values, *, tol: float = 1e-9) -> dict:
    """u, v, du against a, computed as one vmapped sweep of the jitted solve kernel.

    Returns NumPy arrays of shape (len(a_values),) for each configuration:
    ``{config: {"u", "v", "du", "omega", "valid"}}`` (the first valid candidate of that
    configuration at each a; NaN where none), plus ``"a"``."""
    a = np.asarray(a_values, float)
    check_interval("a_values", a, 0.0, float(params.s0), lo_open=False, hi_open=False)
    if a.ndim != 1 or a.size == 0:
        raise ParameterError("a_values", f"must be a non-empty 1-D sequence; got shape {a.shape}")
    out = _run_kernel(params, a)
    res = {"a": a}
    for config in CONFIGS:
        tup = out[config]
        c, ok = tup[0], tup[1]
        r = tup[2] if config == "interior" else np.abs(c["r1"])
        valid = ok & (r < tol) & (c["slack"] >= -1e-12) & (c["v"] > 0) & (c["phi"] < float(params.p))
        if config == "interior":
            valid &= (c["t"] > 1e-7) & (c["t"] < 1 - 1e-7)
        arr = {}
        first = np.argmax(valid, axis=1)
        anyv = valid.any(axis=1)
        for k in ("u", "v", "du", "omega"):
            vals = np.take_along_axis(c[k], first[:, None], axis=1)[:, 0]
            arr[k] = np.where(anyv, vals, np.nan)
        arr["valid"] = anyv
        res[config] = arr
    return res


# Rows whose printed numbers fail the paper's own equations (see data_moments/van_vuuren_table1.md)
PAPER_INCONSISTENT = {
    ("A", 0.5): "v = 0.299 violates (18)+(2): with u=0.236, du=0.759, lam=(1-u)delta/(u s(du+u/2)) = 0.577 "
                "and v = lam^2 (s0 - a/2) = 0.249; du + u = 0.995 != 1 although the text says a < 0.6 is segregated",
    ("B", 0.5): "v = 0.137 violates (18)+(2): with u=0.1057, du=0.543, lam = 1.205 and v = lam/alpha = 0.151",
}


def table1(panel: str = "A", a_values=(1.0, 0.75, 0.6, 0.55, 0.5, 0.25, 0.1)):
    """Reproduce Table 1 (on-the-job-search columns) for panel "A" or "B".

    Returns a pandas DataFrame with one row per (a, equilibrium): a, config, u, v, du,
    s_du (= s(du + u/2)), omega, omega_star (planner), planner_config, residual."""
    import pandas as pd

    if panel not in ("A", "B"):
        raise ParameterError("panel", f"must be 'A' or 'B'; got {panel!r}")
    rows = []
    for a in a_values:
        P = Params.panel_a(a) if panel == "A" else Params.panel_b(a)
        eqs = solve_market(P)
        pl = solve_planner(P)
        if not eqs:
            rows.append(dict(a=a, config="none", u=np.nan, v=np.nan, du=np.nan, s_du=np.nan, omega=np.nan,
                             omega_star=pl.omega, planner_config=pl.config, planner_local_26=pl.local_choice_26,
                             residual=np.nan))
        for e in eqs:
            rows.append(dict(a=a, config=e.config, u=e.u, v=e.v, du=e.du, s_du=e.s_u, omega=e.omega,
                             omega_star=pl.omega, planner_config=pl.config, planner_local_26=pl.local_choice_26,
                             residual=e.residual))
    return pd.DataFrame(rows, columns=["a", "config", "u", "v", "du", "s_du", "omega", "omega_star", "planner_config",
                                       "planner_local_26", "residual"])


# ----------------------------------------------------------------------------------------
# Section 7: heterogeneous firms (Table 2)
# ----------------------------------------------------------------------------------------
_NH = 40  # Gauss-Legendre nodes per rank segment (and per nested profit integral)
_xh, _wh = np.polynomial.legendre.leggauss(_NH)
_XH = (_xh + 1.0) / 2.0
_WH = _wh / 2.0


def _hetero_core(P: Params, u, t, plow, config):
    """Section 7 objects for given u, t = H(p~) = du/(1-u) and the lowest accepted
    productivity ``plow``, for ``config``: a name of :data:`CONFIGS` or its index (0
    integrated, 1 interior, 2 segregated; may be traced, so one compiled program serves all
    three configurations).  Corners are the two-segment (interior) layout with t fixed at 0
    or 1 (the empty segment has zero quadrature weights) and their own formulas where the
    paper's differ ((38) vs (37); the inequality's sign).

    Reconstruction (see the module section docstring of :func:`solve_market_hetero`):
    contacts draw p ~ U[0, 1]; F(K(p)) = p, G(K(p)) = H(p).  On the rank grid g = H(p),

    * (18) with acceptance:  delta (1-u) = lam u s(du+u/2) (1 - plow);
    * (59) integrated:       1 - p(g) = delta (1-g)(1-u) / (lam D(g)),  D as in (19);
    * firm with productivity p maximises (p - w) Phi(w), Phi = D / (rho+delta+lam psi s(d)(1-F));
      envelope: pi(p) = int_plow^p Phi, K(p) = p - pi(p)/Phi(p), K(plow) = phi = plow;
    * free entry:            gamma v = lam int_plow^1 pi(p) dp = lam int_0^1 (1-p) Phi p' dg;
    * location (27) and reservation wage (37)/(38) as in the homogeneous model, with wage
      integrals int I(w) dw = int I(g) K'(g) dg, K' = pi Phi' / Phi^2, and the wage gap
      (K(p~-), K(p~+)) weighted by I(p~-).
    Returns a dict of scalars (residuals r1 reservation wage, r2 location, r3 free entry; slack)."""
    code = jnp.asarray(CONFIGS.index(config) if isinstance(config, str) else config)
    is_int, is_seg = code == 0, code == 2
    t = jnp.where(is_int, 0.0, jnp.where(is_seg, 1.0, t))
    du = (1 - u) * t
    s = lambda d: P.s0 - P.a * d
    psi, rho, delta, a = P.psi, P.rho, P.delta, P.a
    sbar = s(du + u / 2)
    lam_hat = (1 - u) * delta / (u * sbar)  # accepted-offer rate per unit search efficiency
    lam = lam_hat / (1 - plow)
    de = (1 + u) / 2 - du * u / (1 - u)
    S = u * sbar + (1 - u) * psi * s(de)
    v = (lam / (P.alpha * S ** (P.nu - 1))) ** (1 / P.xi)
    c = delta * (1 - u) / lam

    def seg(g, upper):
        if upper:
            Ib = g * (P.s0 - a * u) - (1 - u) * a * g ** 2 / 2 + a * u * t
            d = (1 - u) * g + u
        else:
            Ib = g * P.s0 - (1 - u) * a * g ** 2 / 2
            d = (1 - u) * g
        D = u * sbar + (1 - u) * psi * Ib
        Dp = (1 - u) * psi * s(d)
        one_m_p = c * (1 - g) / D
        pp = c / D + c * (1 - g) * Dp / D ** 2          # p'(g)
        B = rho + delta + lam * psi * s(d) * one_m_p
        Bp = lam * psi * (-a * (1 - u) * one_m_p - s(d) * pp)
        Phi = D / B
        Phip = (Dp * B - D * Bp) / B ** 2
        I = one_m_p / B
        return dict(p=1 - one_m_p, pp=pp, Phi=Phi, Phip=Phip, I=I, d=d)

    xg, wq = jnp.asarray(_XH), jnp.asarray(_WH)

    def segment(g0, g1, upper, pi0):
        """Quantities at the GL nodes of [g0, g1] with pi(g) = pi0 + int_g0^g Phi p' (nested GL)."""
        L = g1 - g0
        g = g0 + L * xg
        q = seg(g, upper)
        # nested: pi(g_i) = pi0 + (g_i - g0) sum_j w_j (Phi p')(g0 + (g_i - g0) x_j)
        gg = g0 + (g - g0)[:, None] * xg[None, :]
        qq = seg(gg, upper)
        pi = pi0 + (g - g0) * jnp.sum(wq[None, :] * qq["Phi"] * qq["pp"], axis=1)
        qe = seg(jnp.atleast_1d(g1), upper)
        pi1 = pi0 + L * jnp.sum(wq * q["Phi"] * q["pp"])
        K = q["p"] - pi / q["Phi"]
        Kp = pi * q["Phip"] / q["Phi"] ** 2
        return dict(w=L * wq, g=g, q=q, pi=pi, K=K, Kp=Kp, pi1=pi1,
                    K1=qe["p"][0] - pi1 / qe["Phi"][0], I1=qe["I"][0])

    zero = jnp.zeros_like(u)
    lo = segment(zero, t, False, zero)          # [0, t]: empty (zero weights) when integrated
    hi = segment(t, zero + 1, True, lo["pi1"])  # [t, 1]: empty when segregated
    segs = (lo, hi)
    # wage integrals over each segment
    Jlo, Jhi = (jnp.sum(sg["w"] * sg["q"]["I"] * sg["Kp"]) for sg in segs)
    E = sum(jnp.sum(sg["w"] * sg["q"]["p"]) for sg in segs)                    # E_H p
    fe = sum(jnp.sum(sg["w"] * (1 - sg["q"]["p"]) * sg["q"]["Phi"] * sg["q"]["pp"]) for sg in segs)
    ht = seg(jnp.atleast_1d(t), True)
    Kt_hi = ht["p"][0] - lo["pi1"] / ht["Phi"][0]  # K(p~+): same pi, larger Phi
    w1 = lo["K1"]                                  # integrated: K(plow) = p(0) (empty lower segment)
    wt = jnp.where(is_seg, w1, Kt_hi)
    Jgap = jnp.where(is_int | is_seg, zero, (Kt_hi - w1) * lo["I1"])  # the wage gap, weighted by I(p~-)
    M = jnp.sum(lo["w"] * lo["q"]["I"] * (du - lo["q"]["d"]) * lo["Kp"])
    Ju = Jlo + Jgap + Jhi
    tau, chi = P.tau, P.chi
    phi38 = P.b + tau * u + chi * (1 - u) + lam * (1 - psi) * s(u) * Ju  # (38), integrated
    phi37 = P.b + tau * du + chi * (1 - du) + lam * (1 - psi) * s(du) * Ju - a * lam * psi * M  # (37)
    phi = jnp.where(is_int, phi38, phi37)
    r2 = jnp.where(is_int, tau - chi - a * lam * (1 - psi) * Ju,
                   tau - chi - a * lam * (1 - psi) * Ju - a * lam * psi * (Jlo + Jgap))  # (15)/(27)
    slack = jnp.where(is_int, -r2, r2)
    w_plus = jnp.where(is_seg, lo["K1"], hi["K1"])
    r1 = plow - phi               # the lowest active firm pays the reservation wage: K(plow) = plow = phi
    r3 = fe - P.gamma * v / lam   # free entry, per unit of lam
    omega = (1 - u) * E + u * P.b - P.gamma * v - tau * ((1 - u ** 2) / 2 - du * u)
    return dict(r1=r1, r2=r2, r3=r3, slack=slack, u=u, t=t, du=du, v=v, lam=lam, plow=plow, phi=phi,
                Ju=Ju, M=M, w1=w1, w_tilde=wt, w_plus=w_plus, E_p=E, omega=omega, s_u=sbar)


_sigmoid = jax.nn.sigmoid
TABLE2_TAU = 0.15  # Table 2: panel B parameters with tau = 0.15 (Section 7, p. 28)


def _hetero_F(z, args):
    """Section 7 market system in logit coordinates, one form for every configuration
    (``args = (P, code)``, code the index in :data:`CONFIGS`, traced): unknowns (u, t, plow),
    equations (r1, r2, r3) for the interior city; for a corner t is fixed by ``code`` and
    the location equation is replaced by ``z[1] = 0`` (a dummy unknown, seeded at 0: the
    Newton steps in (u, plow) are those of the corner's 2 x 2 system (r1, r3))."""
    P, code = args
    o = _hetero_core(P, _sigmoid(z[0]), _sigmoid(z[1]), _sigmoid(z[2]), code)
    return jnp.stack([o["r1"], jnp.where(code == 1, o["r2"], z[1]), o["r3"]])


_HETERO_KEEP = ("u", "t", "du", "v", "lam", "plow", "phi", "omega", "E_p", "w1", "w_tilde", "w_plus", "s_u",
                "slack")


def _hetero_solve_one(P, z0, code):
    sol = solve_root(_hetero_F, z0, (P, code), tol=1e-12, max_steps=80, linear_solver="dense")
    z = sol.value
    o = _hetero_core(P, _sigmoid(z[0]), _sigmoid(z[1]), _sigmoid(z[2]), code)
    return sol, {k: o[k] for k in _HETERO_KEEP}


@jax.jit
def _hetero_newton(P: Params, z0, codes):
    """The Section 7 market system solved by the generic engine
    (:func:`spatialjax.solver.solve_root`: Newton with Armijo line search, status enum,
    NaN-on-failure implicit derivatives) from every seed ``z0[k]`` (shape (k, 3)) for
    configuration ``codes[k]``: one compiled program for all three configurations.
    Returns ``(SolveResult, outputs)`` batched over the seeds (outputs: the model's objects
    at each solution, :data:`_HETERO_KEEP`).

    lax.map, not vmap, over the seeds: each seed's Newton loop and line search stop on their
    own (under vmap every seed would run as long as the slowest); measured 2x faster to run
    and 40 % cheaper to compile than vmap on CPU for this 3 x 3 system."""
    return jax.lax.map(lambda zc: _hetero_solve_one(P, zc[0], zc[1]), (z0, codes))


def _hetero_seeds(config: str) -> np.ndarray:
    """Newton seeds (logit u, logit t, logit plow) for ``config``; corners have t's column at 0
    (the dummy unknown of :func:`_hetero_F`)."""
    lg = _logit
    us, ts, ps = (0.04, 0.08, 0.15, 0.3), (0.05, 0.2, 0.5, 0.8, 0.95), (0.3, 0.4)
    if config == "interior":
        return np.array([[lg(u), lg(t), lg(p)] for u in us for t in ts for p in ps])
    return np.array([[lg(u), 0.0, lg(p)] for u in us + (0.5,) for p in ps + (0.5,)])


def _hetero_all_seeds() -> tuple[np.ndarray, np.ndarray]:
    """Seeds of every configuration stacked, and their configuration codes."""
    z = [_hetero_seeds(c) for c in CONFIGS]
    return np.concatenate(z), np.concatenate([np.full(len(zi), i) for i, zi in enumerate(z)])


@dataclasses.dataclass(frozen=True)
class MarketEquilibriumHetero(Result):
    """One market equilibrium of the heterogeneous-firm model (Section 7, Table 2).

    ``u, v, du, config, omega`` as in :class:`MarketEquilibrium`; ``plow`` the lowest
    productivity accepted by the unemployed (Table 2's "p" column; in this reconstruction
    equal to the reservation wage ``phi``); ``lam`` the contact rate per unit of search
    efficiency (offers are drawn from p ~ U[0,1], a share ``plow`` is rejected); ``E_p``
    mean productivity of the employed E_H[p]; ``w1 < w_tilde`` the wage gap at p~,
    ``w_plus`` = K(1); ``s_u`` = s(du + u/2); ``slack`` >= 0 the configuration inequality;
    ``residual`` max abs of (reservation wage, location, free entry) residuals; ``status``
    "successful" (rejected candidates are not returned, see ``Equilibria.rejected``)."""

    u: float
    v: float
    du: float
    plow: float
    phi: float
    config: str
    omega: float
    lam: float
    E_p: float
    w1: float
    w_tilde: float
    w_plus: float
    s_u: float
    slack: float
    residual: float
    status: str
    params: Params
    message: str = ""
    _dict_exclude = ("params",)   # reported once by the Equilibria collection

    def summary(self) -> str:
        rows = [("configuration", self.config), ("u", self.u), ("v", self.v), ("du", self.du),
                ("s(du+u/2)", self.s_u), ("p_low (lowest accepted productivity)", self.plow),
                ("lambda", self.lam), ("E_H[p]", self.E_p), ("w1 / w~ (wage gap)", f"{self.w1:.4f} / {self.w_tilde:.4f}"),
                ("w+ = K(1)", self.w_plus), ("omega_t", self.omega), ("configuration slack", self.slack),
                ("residual (max abs)", self.residual), ("status", self.status)]
        return format_table(["quantity", "value"], rows,
                            title="van Vuuren (2016) Section 7 market equilibrium (heterogeneous firms)")


def solve_market_hetero(params: Params, *, tol: float = 1e-10, throw: bool = False) -> Equilibria:
    """Market equilibria of the heterogeneous-firm model (Section 7, (27); Table 2).

    Reconstruction (the paper gives only (27)--(30); everything else is re-derived, see
    ``data_moments/van_vuuren_table2.md``):

    * Each contact draws a productivity p ~ U[0, 1] (the paper's "standard uniform"); the
      firm pays K(p), increasing, so F(K(p)) = p and G(K(p)) = H(p) (Section 7).  Offers with
      p < plow are rejected, so the accepted-offer rate is lam s (1 - plow) and (18) becomes
      ``delta (1-u) = lam u s(du+u/2) (1 - plow)``.  lam = alpha S^(nu-1) v^xi as in (2).
    * Employed distribution H from the steady-state flows (59):
      ``1 - p(g) = delta (1-g)(1-u) / (lam D(g))`` on the rank grid g = H(p), D as in (19).
    * Wages (the "monopsony" of Section 7): a firm with productivity p posts
      ``K(p) = argmax_w (p - w) Phi(w)``, ``Phi = D / (rho + delta + lam psi s(d)(1-F))`` (hires
      per contact times discounted duration), as in Bontemps, Robin and van den Berg (2000).
      Envelope: ``pi(p) = int_plow^p Phi``; ``K = p - pi/Phi``; the least productive active
      firm pays the reservation wage, ``K(plow) = plow = phi``.  K jumps at p~ = H^-1(t)
      (the wage gap, as in the homogeneous model).
    * Free entry: ``gamma v = lam int_plow^1 pi(p) dp``.
    * Location (27) (== (15) with wages K(p)) and reservation wage (37)/(38) as in the
      homogeneous model, wage integrals taken along K.  With psi = 1 (Table 2) the
      integrated configuration is never an equilibrium: its inequality needs
      tau <= a lam (1 - psi) J_u.
    * omega_t = (1-u) E_H[p] + u b - gamma v - tau [(1-u^2)/2 - du u]  (the Section 7 Omega
      integrand).

    Unknowns (u, t = du/(1-u), plow); each configuration is solved by damped Newton from a
    grid of seeds; a candidate is kept when its residual is below ``tol`` and its
    configuration inequality holds.  Returns :class:`Equilibria` of
    :class:`MarketEquilibriumHetero` (empty with a warning, or ConvergenceError with
    ``throw=True``, if none)."""
    if not isinstance(params, Params):
        raise ParameterError("params", f"must be a van_vuuren.Params; got {type(params).__name__}")
    found, rejected = [], []
    z0, codes = _hetero_all_seeds()
    sol, outs = _hetero_newton(params, jnp.asarray(z0), jnp.asarray(codes))
    z_all, res_all, conv_all = np.asarray(sol.value), np.asarray(sol.residual), np.asarray(sol.converged)
    outs = {k: np.asarray(v) for k, v in outs.items()}
    for code, config in enumerate(CONFIGS):
        seen = []
        for i in np.flatnonzero(codes == code):
            zi, ri, ci = z_all[i], res_all[i], conv_all[i]
            if not (ci and np.isfinite(ri) and ri < tol):
                continue
            x = 1 / (1 + np.exp(-zi))
            u, t = (x[0], x[1]) if config == "interior" else (x[0], 0.0)
            if config == "interior" and not (1e-7 < t < 1 - 1e-7):
                continue
            if any(abs(u - s_[0]) < 1e-7 and abs(t - s_[1]) < 1e-7 for s_ in seen):
                continue
            seen.append((u, t))
            o = {k: float(outs[k][i]) for k in _HETERO_KEEP}
            problems = []
            if o["slack"] < -1e-12:
                problems.append(f"violates its location inequality (slack {o['slack']:.3g})")
            if not (0 < o["plow"] < 1) or not (o["v"] > 0):
                problems.append("plow outside (0,1) or v <= 0")
            if config == "interior" and not (o["w_tilde"] > o["w1"]):
                problems.append("no wage gap (w~ <= w1)")
            if problems:
                rejected.append(f"{config} candidate u={u:.4f}: " + "; ".join(problems))
                continue
            found.append(MarketEquilibriumHetero(
                u=o["u"], v=o["v"], du=o["du"], plow=o["plow"], phi=o["phi"], config=config, omega=o["omega"],
                lam=o["lam"], E_p=o["E_p"], w1=o["w1"], w_tilde=o["w_tilde"], w_plus=o["w_plus"], s_u=o["s_u"],
                slack=o["slack"], residual=float(ri), status="successful", params=params))
    status, message = _collection_status(found)
    if not found:
        if throw:
            raise ConvergenceError(f"van_vuuren.solve_market_hetero: {message}; rejected: {rejected}")
        warnings.warn(f"van_vuuren.solve_market_hetero: {message}", RuntimeWarning, stacklevel=2)
    found.sort(key=lambda e: e.du)
    return Equilibria(found, status=status, message=message, rejected=rejected, params=params,
                      title="van Vuuren (2016) Section 7 market equilibria (heterogeneous firms)",
                      formatter=_market_table)


def _hetero_planner_omega(P: Params, u, t, plow):
    """Steady-state flow welfare of the Section 7 planner, as a function of its choices.

    The planner picks v, du and plow; in steady state (18) with acceptance ties u to them, so
    we parametrise by (u, t = du/(1-u), plow): lam from (18), v from (2), H from (59) and
    omega = (1-u) E_H[p] + u b - gamma v - tau [(1-u^2)/2 - du u].  Employed keep the market's
    location order (low productivity in [0, du], high beyond du + u)."""
    du = (1 - u) * t
    a, psi, delta = P.a, P.psi, P.delta
    s = lambda d: P.s0 - a * d
    sbar = s(du + u / 2)
    lam = (1 - u) * delta / (u * sbar) / (1 - plow)
    de = (1 + u) / 2 - du * u / (1 - u)
    S = u * sbar + (1 - u) * psi * s(de)
    v = (lam / (P.alpha * S ** (P.nu - 1))) ** (1 / P.xi)
    c = delta * (1 - u) / lam
    xg, wq = jnp.asarray(_XH), jnp.asarray(_WH)

    def p_of(g, upper):
        Ib = jnp.where(upper, g * (P.s0 - a * u) - (1 - u) * a * g ** 2 / 2 + a * u * t, g * P.s0 - (1 - u) * a * g ** 2 / 2)
        return 1 - c * (1 - g) / (u * sbar + (1 - u) * psi * Ib)

    E = t * jnp.sum(wq * p_of(t * xg, False)) + (1 - t) * jnp.sum(wq * p_of(t + (1 - t) * xg, True))
    omega = (1 - u) * E + u * P.b - P.gamma * v - P.tau * ((1 - u ** 2) / 2 - du * u)
    return omega, v, E, lam


def _hp_neg(P, x):
    return -_hetero_planner_omega(P, x[0], x[1], x[2])[0]


_hp_val_grad = jax.jit(jax.value_and_grad(_hp_neg, 1))   # one pass for value and gradient
_hp_all = jax.jit(lambda P, x: _hetero_planner_omega(P, x[0], x[1], x[2]))

#: coarse grid of the planner's box for choosing the L-BFGS-B starts (evaluated in one jitted,
#: vmapped call): u log-spaced, t = du/(1-u) with both corners, p_low
_HP_GRID_U = np.geomspace(0.01, 0.5, 12)
_HP_GRID_T = np.array([0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95, 0.98, 1.0])
_HP_GRID_P = np.linspace(0.0, 0.9, 10)
_HP_GRID = np.stack(np.meshgrid(_HP_GRID_U, _HP_GRID_T, _HP_GRID_P, indexing="ij"), axis=-1).reshape(-1, 3)
_hp_grid_val = jax.jit(jax.vmap(_hp_neg, in_axes=(None, 0)))


def _hp_starts(P: Params) -> list[np.ndarray]:
    """Starting points for the planner: the best point of the coarse grid in each
    configuration class of t (t = 0 integrated, 0 < t < 1 interior, t = 1 segregated), so that
    every kind of local optimum is tried from its own basin (replaces 18 fixed starts: on
    Table 2 all of them reached the same optimum, to 1e-15 in omega)."""
    f = np.asarray(_hp_grid_val(P, jnp.asarray(_HP_GRID)))
    f = np.where(np.isfinite(f), f, np.inf)
    t = _HP_GRID[:, 1]
    starts = []
    for cls in (t == 0.0, (t > 0.0) & (t < 1.0), t == 1.0):
        i = np.flatnonzero(cls)
        j = i[np.argmin(f[i])]
        if np.isfinite(f[j]):
            starts.append(_HP_GRID[j].copy())
    return starts


@dataclasses.dataclass(frozen=True)
class PlannerResultHetero(Result):
    """Planner optimum of the heterogeneous-firm model (Section 7, Table 2).

    ``u, v, du, plow, omega`` at the optimum; ``config`` "integrated" (du = 0),
    "interior" or "segregated" (du = 1 - u); ``E_p`` = E_H[p]; ``lam``; ``residual`` the
    projected-gradient norm of omega at the optimum (bound-constrained in t = du/(1-u));
    ``status`` "successful", "on_bound" (the optimum sits on an artificial bound of the search
    box) or "stalled" (projected gradient above ``tol``), detail in ``message``."""

    u: float
    v: float
    du: float
    plow: float
    omega: float
    config: str
    E_p: float
    lam: float
    residual: float
    status: str
    message: str = ""

    @property
    def s_u(self) -> float:
        """s(du + u/2), Table 2's "s(du)" column (not stored: needs a and s0)."""
        return self._s_u

    _s_u: float = float("nan")

    def _dict_fields(self) -> dict:
        d = super()._dict_fields()
        d["s_u"] = self.s_u
        return d

    def summary(self) -> str:
        rows = [("configuration", self.config), ("u", self.u), ("v", self.v), ("du", self.du),
                ("s(du+u/2)", self.s_u), ("p_low (lowest accepted productivity)", self.plow),
                ("lambda", self.lam), ("E_H[p]", self.E_p), ("omega_t", self.omega),
                ("projected gradient (residual)", self.residual), ("status", self.status)]
        return format_table(["quantity", "value"], rows,
                            title="van Vuuren (2016) Section 7 planner (heterogeneous firms)",
                            notes=[self.message] if self.message else ())


def solve_planner_hetero(params: Params, *, tol: float = 1e-7, throw: bool = False) -> PlannerResultHetero:
    """Section 7 planner: maximise steady-state flow welfare omega_t over (v, du, plow).

    The paper maximises Omega(v, du, p) (Section 7) and characterises it with rho/delta -> 0
    ((28)--(30)); in that limit the objective is the steady-state flow welfare, which is what
    we maximise (as ``solve_planner(objective="steady_state")`` does for Table 1).  Unlike the
    homogeneous model, du can be interior (on-the-job search now has social value: (30)).
    Bound-constrained quasi-Newton (L-BFGS-B, value and exact gradient by autodiff in one
    pass) in (u, t, plow), started from the best point of a coarse grid of the box in each
    configuration class (t = 0, interior t, t = 1); the best local optimum is returned.  ``residual`` is the projected
    gradient norm; status "successful" when it is below ``tol`` and no artificial bound binds."""
    from scipy.optimize import minimize

    if not isinstance(params, Params):
        raise ParameterError("params", f"must be a van_vuuren.Params; got {type(params).__name__}")
    best = None
    bounds = [(1e-3, 0.95), (0.0, 1.0), (0.0, 0.95)]

    def fun(x):
        f, g = _hp_val_grad(params, jnp.asarray(x))
        return float(f), np.asarray(g)

    for x0 in _hp_starts(params):
        r = minimize(fun, np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds]), jac=True,
                     method="L-BFGS-B", bounds=bounds, options=dict(ftol=1e-15, gtol=1e-12, maxiter=2000))
        if np.isfinite(r.fun) and (best is None or r.fun < best.fun):
            best = r
    if best is None:
        nan = float("nan")
        msg = "no finite value of omega at any start"
        if throw:
            raise ConvergenceError(f"van_vuuren.solve_planner_hetero: nonfinite: {msg}")
        warnings.warn(f"van_vuuren.solve_planner_hetero: nonfinite: {msg}", RuntimeWarning, stacklevel=2)
        return PlannerResultHetero(u=nan, v=nan, du=nan, plow=nan, omega=nan, config="none", E_p=nan, lam=nan,
                                   residual=nan, status="nonfinite", message=msg)
    x = best.x
    gr = np.asarray(_hp_val_grad(params, jnp.asarray(x))[1])  # gradient of -omega
    proj = gr.copy()
    for i, (lo, hi) in enumerate(bounds):
        if x[i] <= lo + 1e-12 and gr[i] > 0:   # at the lower bound, -omega increasing inward is fine
            proj[i] = 0.0
        if x[i] >= hi - 1e-12 and gr[i] < 0:
            proj[i] = 0.0
    res = float(np.max(np.abs(proj)))
    om, v, E, lam = (float(q) for q in _hp_all(params, jnp.asarray(x)))
    u, t, pl = (float(q) for q in x)
    config = "integrated" if t <= 1e-9 else ("segregated" if t >= 1 - 1e-9 else "interior")
    if not (pl < bounds[2][1] - 1e-9 and u < bounds[0][1] - 1e-9):
        status, message = "on_bound", (f"optimum on an artificial bound (u <= {bounds[0][1]}, p_low <= "
                                       f"{bounds[2][1]}); projected gradient {res:.3g}")
    elif not res < tol:
        status, message = "stalled", f"projected gradient {res:.3g} >= tol {tol:.3g}"
    else:
        status, message = "successful", ""
    if status != "successful":
        if throw:
            raise ConvergenceError(f"van_vuuren.solve_planner_hetero: {status}: {message}")
        warnings.warn(f"van_vuuren.solve_planner_hetero: {status}: {message}", RuntimeWarning, stacklevel=2)
    du = (1 - u) * t
    return PlannerResultHetero(u=u, v=v, du=du, plow=pl, omega=om, config=config, E_p=E, lam=lam,
                               residual=res, status=status, message=message,
                               _s_u=float(params.s0) - float(params.a) * (du + u / 2))


def table2(a_values=(1.0, 0.75, 0.6, 0.55, 0.5, 0.25, 0.1), *, paper: bool = True):
    """Reproduce Table 2 (Section 7, heterogeneous firms): panel B parameters with tau = 0.15.

    Returns a pandas DataFrame with one row per (a, side), side in ("planner", "market"; one
    market row per equilibrium found, config "none" if none): a, side, config, u, v, du,
    s_du (= s(du + u/2)), omega, p_low, residual and, with ``paper=True``, the printed
    values ``paper_*`` (from the package data file ``spatialjax/data/van_vuuren_table2.csv``,
    where the a value is printed; a missing file is an error, never a silently shorter table) and relative gaps ``gap_*`` = ours / printed - 1 (for du and p_low the absolute
    difference).  See ``data_moments/van_vuuren_table2.md`` for the row-by-row discussion."""
    import pandas as pd

    ref = None
    if paper:
        from spatialjax.io import data_path

        path = data_path("van_vuuren_table2.csv")
        if not path.exists():
            raise FileNotFoundError(f"{path}: the printed Table 2 values are missing from the installed package; "
                                    f"reinstall spatialjax or call table2(paper=False)")
        ref = pd.read_csv(path, comment="#")
    rows = []
    for a in a_values:
        P = Params.panel_b(a, tau=TABLE2_TAU)
        pl = solve_planner_hetero(P)
        rows.append(dict(a=a, side="planner", config=pl.config, u=pl.u, v=pl.v, du=pl.du, s_du=pl.s_u,
                         omega=pl.omega, p_low=pl.plow, residual=pl.residual))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            eqs = solve_market_hetero(P)
        if not eqs:
            rows.append(dict(a=a, side="market", config="none", u=np.nan, v=np.nan, du=np.nan, s_du=np.nan,
                             omega=np.nan, p_low=np.nan, residual=np.nan))
        for e in eqs:
            rows.append(dict(a=a, side="market", config=e.config, u=e.u, v=e.v, du=e.du, s_du=e.s_u,
                             omega=e.omega, p_low=e.plow, residual=e.residual))
    df = pd.DataFrame(rows, columns=["a", "side", "config", "u", "v", "du", "s_du", "omega", "p_low", "residual"])
    if ref is not None:
        for k in ("u", "v", "du", "s_du", "omega", "p_low"):
            vals = []
            for r in df.itertuples():
                m = ref[np.isclose(ref.a, r.a)]
                vals.append(float(m[f"{r.side}_{k}"].iloc[0]) if len(m) else np.nan)
            df[f"paper_{k}"] = vals
        for k in ("u", "v", "s_du", "omega"):
            df[f"gap_{k}"] = df[k] / df[f"paper_{k}"] - 1
        for k in ("du", "p_low"):
            df[f"gap_{k}"] = df[k] - df[f"paper_{k}"]
    return df
