"""Oh (2025), quantitative model (Section 4.1, Appendix B.1) and its inverse problem (Section 4.2).

Paper: ``shared/seeds/oh_2025_spatial_sorting.txt``; cleaned equations in ``shared/MODELS.md`` §2.

Model (monthly, ``ρ/(ρ+δ_v) = 0`` as the paper sets it, so ``1 − β̃ = 0`` and ``B_w = 0``)
------------------------------------------------------------------------------------------
Locations are ranked by population density; ``ℓ`` is the population rank (footnote 27), and
the data come on ``n`` equal-population bins (the paper: 20). Per bin ``i``:

* flow balance (7) and matching ``M = A U^α V^{1−α}`` give, in closed form,
  ``λ_i = δ(1 − u_i)/u_i``, ``θ_i = (λ_i/A)^{1/(1−α)}``, ``q_i = λ_i/θ_i``, ``N_i = V_i = θ_i u_i L_i``;
* the wage. Re-derived from the Rubinstein/Nash split of Appendix B.1 with Stone–Geary
  preferences ``g^{1−ω}(h − h̄)^ω`` and the location income tax: the indirect utility of income
  ``I`` is ``r^{−ω}(I − h̄ r)`` (up to a constant), so worker values are money-metric with the
  common factor ``r^{−ω}(1 − τ_w)``; the bargaining splits the money-metric surplus
  ``S = r^ω(1−τ_w)^{−1}(V^e − V^u) + V^p − V^v`` and the factor cancels. With ``V^v → 0`` and
  ``δ_v V^v → q V^p``: ``(w − bx)/(ρ̃ + λ) = βS``, ``(xy − w)/ρ̃ = (1 − β)S``, so
  ``S = x(y − b)/(ρ̃ + βλ)`` and

      w(x, y, ℓ) = x [b + β(ρ̃ + λ)(y − b)/(ρ̃ + βλ)]            (the pre-tax wage)

  which is exactly (10) with ``1 − β̃ = 0``: the wage **does** reduce to (10) under
  Stone–Geary and taxes, and that is the form used here (:func:`wage`).
* worker value (13) with ``B_w = 0``:
  ``ρV^u(x, ℓ) = r^{−ω}[(1 − τ_w)(b + A_w) x − h̄ r + Π + T_r]``, ``A_w = βλ(y(ℓ) − b)/(ρ̃ + βλ)``;
* firm value (5) in the ``δ_v → ∞`` limit (``(δ_v/ρ)(1 − β̃) → 1 − β``):
  ``ρV̄(y, ℓ) = (1 − β) q x(ℓ)(y − b − B_f)/ρ̃ − c(ℓ)``, ``B_f = βλ(y(ℓ) − b)/(ρ̃ + βλ) = A_w``;
* overhead costs (6): ``c = C_v'(N) = (N/H_f)^{1/η_f} + c_e``;
* housing (A.24): ``r(H, ℓ) = ((1+γ+t_h)/(1+γ)) (H/H_w)^γ (H/T)^{t_h}``, ``γ = 1/η_w``. Market
  clearing (B.1, **corrected**): ``r H = L[(1 − ω) r h̄ + ω I]`` — the printed version has
  ``(1 − ω) h̄ L``, dropping the ``r`` on the subsistence term (housing spending per worker is
  ``r h = (1 − ω) r h̄ + ω I`` from Stone–Geary; :func:`housing_spending`).
  Worker income ``I = (1 − τ_w)((1 − u) w + u b x) + Π + T_r``.
* local redistribution ``T_r = [rH/(1+γ+t_h) − C_r(H)]/L`` (the tax on housing production,
  ``τ C_r`` with ``(1+τ)C_r = rH/(1+γ+t_h)``); landowners earn ``rH(γ+t_h)/(1+γ+t_h)``,
  intermediaries ``cN − C_v(N) = N (N/H_f)^{1/η_f}/(1+η_f)`` (``c_e`` cancels);
* lump sum ``Π`` (per worker): income-tax revenue − unemployment benefits + landowners' and
  intermediaries' profits + firms' flow profits (the last is zero by the ``c_e`` normalisation).

Inverse problem (Section 4.2)
-----------------------------
Given ``{L_i, u_i}``, the structural parameters and the policies ``t_h``, ``τ_w``, solve for
``x_1..x_n``, ``y_2..y_n``, ``r_2..r_n``, ``H_w``, ``Π``, ``c_e`` (``3n + 1`` unknowns; 61 at
``n = 20``) with the normalisations ``y_1 = 1``, ``r_1 = 1``, against ``3n + 1`` equations:

* ``n − 1`` worker sorting conditions (8)/(9): the *midpoint* type ``x̄_i = (x_i + x_{i+1})/2``
  is indifferent between bins ``i`` and ``i + 1`` (the trapezoid rule of the continuum
  initial-value problem; ``sorting="lower"``/``"upper"`` use ``x_i`` or ``x_{i+1}`` instead);
* ``n − 1`` firm sorting conditions (8): ``ȳ_i = (y_i + y_{i+1})/2`` indifferent, likewise;
* ``n`` housing-market clearing conditions (bin 1 pins ``H_w``);
* the lowest-bin wage ``w(x_1, y_1, ℓ_1) = w1`` (pins ``x_1``);
* the definition of ``Π``;
* zero average *flow (cash)* profit of firms (pins ``c_e``):
  ``Σ_i (pop share)_i [(1 − u_i)(x_i y_i − w_i) − θ_i u_i c_i] = 0``.

It is one :func:`spatialjax.solver.solve_root` system (dense Newton, checked implicit
differentiation), in logs of the positive unknowns.

Units and the normalisation of ``L``: ``L_i`` is the population density of bin ``i`` (workers
per unit of land) in the data's units (the shipped stand-in: persons per square mile-like
levels, 10²–10³, so that ``H/T`` is of order one as (A.24)'s ``T = 1028.35`` needs). Bins
hold equal population, so bin ``i`` occupies land ``(M_w/n)/L_i`` and ``∫ L dland = M_w``; the
model normalises ``M_w = 1`` (each bin holds population ``1/n``), so every aggregate is a
population-weighted mean over bins with weights ``1/n``. ``w1`` and all money values are in
the units of the data's wages (monthly), with ``r_1 = 1``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from spatialjax.errors import ParameterError
from spatialjax.results import Result
from spatialjax.solver import SolveResult, solve_root
from spatialjax.tables import format_kv, format_table
from spatialjax.validation import check_finite, check_interval, check_positive, is_traced

__all__ = [
    "Params", "InverseResult", "solve_inverse", "moments", "MOMENT_KEYS",
    "matching_rates", "wage", "worker_value", "firm_value", "housing_spending", "housing_supply",
    "rent_of_housing", "housing_tax_revenue", "quartile_weights", "StandIn", "standin_profile",
    "income_tax_schedule", "regulation_schedule",
]

MOMENT_KEYS = ("wage_q2", "wage_q3", "wage_q4", "housing_mean", "housing_q4_q1", "replacement_rate",
               "labor_share", "rent_q2", "rent_q3", "rent_q4")


def _f(v):
    return jnp.asarray(v, dtype=jnp.result_type(float))


class Params(eqx.Module):
    """Parameters of the quantitative model (Table 1; field names as in the paper).

    ``rho`` discount rate, ``alpha`` matching elasticity, ``delta`` separation rate, ``A``
    matching efficiency, ``h_bar``/``omega`` Stone–Geary housing demand, ``eta_w`` housing
    supply elasticity, ``b`` unemployment benefit (per unit of x), ``beta`` worker bargaining
    power, ``H_f``/``eta_f`` business-services supply, ``T`` housing-tax scale (A.24).
    All monthly. Fields are float64 JAX scalars, so ``jax.grad`` passes through.
    """

    rho: jax.Array = eqx.field(converter=_f)
    alpha: jax.Array = eqx.field(converter=_f)
    delta: jax.Array = eqx.field(converter=_f)
    A: jax.Array = eqx.field(converter=_f)
    h_bar: jax.Array = eqx.field(converter=_f)
    omega: jax.Array = eqx.field(converter=_f)
    eta_w: jax.Array = eqx.field(converter=_f)
    b: jax.Array = eqx.field(converter=_f)
    beta: jax.Array = eqx.field(converter=_f)
    H_f: jax.Array = eqx.field(converter=_f)
    eta_f: jax.Array = eqx.field(converter=_f)
    T: jax.Array = eqx.field(converter=_f)

    FIELDS = ("rho", "alpha", "delta", "A", "h_bar", "omega", "eta_w", "b", "beta", "H_f", "eta_f", "T")

    @classmethod
    def table1(cls) -> "Params":
        """Table 1 (US, ACS 2017), p. 26 of the paper (``data_moments/oh/table1_us2017.csv``)."""
        return cls(rho=0.004, alpha=0.5, delta=0.028, A=0.62, h_bar=10.10, omega=0.11, eta_w=11.31, b=0.28,
                   beta=0.04, H_f=3.62, eta_f=14.68, T=1028.35)

    @classmethod
    def tableA1(cls) -> "Params":
        """Table A.1 (Germany, 2017), Appendix B.5. The table prints no ``T`` (the German
        estimation has no regulation schedule): ``T`` is set to Table 1's value, which is
        inert when ``t_h ≡ 0``."""
        return cls(rho=0.004, alpha=0.5, delta=0.0178, A=0.49, h_bar=0.80, omega=0.01, eta_w=9.13, b=0.35,
                   beta=0.05, H_f=6.16, eta_f=12.36, T=1028.35)

    def replace(self, **kw) -> "Params":
        """A copy with the named fields replaced."""
        unknown = sorted(set(kw) - set(self.FIELDS))
        if unknown:
            raise ParameterError(unknown[0], f"not a field of oh.Params; fields: {list(self.FIELDS)}")
        d = {k: getattr(self, k) for k in self.FIELDS}
        d.update(kw)
        return Params(**d)

    def to_dict(self) -> dict:
        return {k: float(getattr(self, k)) for k in self.FIELDS}

    def check(self) -> None:
        """Raise :class:`ParameterError` naming the first invalid field (eager values only)."""
        for k in ("rho", "delta", "A", "h_bar", "eta_w", "H_f", "eta_f", "T"):
            check_positive(f"params.{k}", getattr(self, k))
        check_interval("params.alpha", self.alpha, 0.0, 1.0)
        check_interval("params.omega", self.omega, 0.0, 1.0)
        check_interval("params.beta", self.beta, 0.0, 1.0)
        check_positive("params.b", self.b)


# ---------------------------------------------------------------------------------------
# Building blocks (also used by the forward mode, spatialjax.models.oh.forward)
# ---------------------------------------------------------------------------------------


def matching_rates(p: Params, u):
    """Flow balance (7) and Cobb–Douglas matching: ``(λ, θ, q)`` from unemployment rates ``u``."""
    lam = p.delta * (1.0 - u) / u
    theta = (lam / p.A) ** (1.0 / (1.0 - p.alpha))
    q = lam / theta
    return lam, theta, q


def wage(p: Params, x, y, lam):
    """Equilibrium wage (10) with ``1 − β̃ = 0``: ``w = x[b + β(ρ̃+λ)(y − b)/(ρ̃+βλ)]`` (pre-tax;
    re-derived under Stone–Geary and τ_w, module docstring). Also the wage of an off-path
    worker ``x`` matched with the local firm ``y = y(ℓ)``."""
    rt = p.rho + p.delta
    return x * (p.b + p.beta * (rt + lam) * (y - p.b) / (rt + p.beta * lam))


def job_opportunities(p: Params, y, lam):
    """``A_w(y(ℓ), λ(ℓ)) = βλ(y − b)/(ρ̃ + βλ)`` (4); with ``1 − β̃ = 0`` also ``B_f`` (5)."""
    rt = p.rho + p.delta
    return p.beta * lam * (y - p.b) / (rt + p.beta * lam)


def worker_value(p: Params, x, r, y, lam, tau_w, Pi, T_r):
    """``ρV^u(x, ℓ)`` of (13) with ``B_w = 0``: ``r^{−ω}[(1−τ_w)(b + A_w)x − h̄ r + Π + T_r]``."""
    A_w = job_opportunities(p, y, lam)
    return r ** (-p.omega) * ((1.0 - tau_w) * (p.b + A_w) * x - p.h_bar * r + Pi + T_r)


def firm_value(p: Params, y, x_loc, y_loc, lam, q, c):
    """``ρV̄(y, ℓ)`` of (5) in the limit ``ρ/(ρ+δ_v) = 0``:
    ``(1 − β) q x(ℓ)(y − b − B_f)/ρ̃ − c(ℓ)``, ``B_f = βλ(y(ℓ) − b)/(ρ̃ + βλ)``."""
    rt = p.rho + p.delta
    B_f = job_opportunities(p, y_loc, lam)
    return (1.0 - p.beta) * q * x_loc * (y - p.b - B_f) / rt - c


def housing_spending(p: Params, r, income):
    """Stone–Geary housing spending per worker ``r h = (1 − ω) r h̄ + ω I`` (B.3)."""
    return (1.0 - p.omega) * r * p.h_bar + p.omega * income


def rent_of_housing(p: Params, H, H_w, t_h):
    """(A.24): ``r(H, ℓ) = ((1+γ+t_h)/(1+γ)) (H/H_w)^γ (H/T)^{t_h}``, ``γ = 1/η_w``."""
    g = 1.0 / p.eta_w
    return (1.0 + g + t_h) / (1.0 + g) * (H / H_w) ** g * (H / p.T) ** t_h


def housing_supply(p: Params, r, H_w, t_h):
    """Inverse of (A.24): ``H(r; ℓ) = H_w(ℓ) r^{1/(γ+t_h)}`` (B.1), computed in logs."""
    g = 1.0 / p.eta_w
    logH = (jnp.log(r) - jnp.log((1.0 + g + t_h) / (1.0 + g)) + g * jnp.log(H_w) + t_h * jnp.log(p.T)) / (g + t_h)
    return jnp.exp(logH)


def housing_tax_revenue(p: Params, r, H, H_w, t_h):
    """Housing-tax revenue per unit of land, ``τ C_r(H) = rH/(1+γ+t_h) − C_r(H)`` (B.1); zero at ``t_h = 0``."""
    g = 1.0 / p.eta_w
    C_r = H * (H / H_w) ** g / (1.0 + g)
    return r * H / (1.0 + g + t_h) - C_r


def quartile_weights(n: int, groups: int = 4) -> np.ndarray:
    """``(groups, n)`` population weights: row ``k`` averages the bins over population ranks
    ``[k/groups, (k+1)/groups)`` (bins of equal population; for ``n = 20`` and 4 groups: bins
    1–5, 6–10, 11–15, 16–20 with equal weights). Rows sum to 1."""
    edges = np.linspace(0.0, 1.0, n + 1)
    W = np.zeros((groups, n))
    for k in range(groups):
        a, b = k / groups, (k + 1) / groups
        W[k] = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0.0, None)
    return W / W.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------
# Inverse problem
# ---------------------------------------------------------------------------------------

_SORTING = {"midpoint": 0.5, "lower": 0.0, "upper": 1.0}
EQUATION_BLOCKS = ("wage_normalisation", "worker_sorting", "firm_sorting", "housing_clearing", "lump_sum",
                   "zero_profit")


class _Data(eqx.Module):
    p: Params
    L: jax.Array
    u: jax.Array
    w1: jax.Array
    t_h: jax.Array
    tau_w: jax.Array
    mix: float = eqx.field(static=True)


def _unpack(z, n):
    logx = z[:n]
    logy = jnp.concatenate([jnp.zeros(1, z.dtype), z[n:2 * n - 1]])
    logr = jnp.concatenate([jnp.zeros(1, z.dtype), z[2 * n - 1:3 * n - 2]])
    return jnp.exp(logx), jnp.exp(logy), jnp.exp(logr), jnp.exp(z[3 * n - 2]), z[3 * n - 1], z[3 * n]


def _economy(z, d: _Data):
    """Every equilibrium object implied by the unknowns ``z`` (no equation imposed yet)."""
    p, L, u, t_h, tau_w = d.p, d.L, d.u, d.t_h, d.tau_w
    n = L.shape[0]
    x, y, r, H_w, Pi_s, ce_s = _unpack(z, n)
    Pi, c_e = Pi_s * d.w1, ce_s * d.w1
    lam, theta, q = matching_rates(p, u)
    N = theta * u * L
    w = wage(p, x, y, lam)
    c_tilde = (N / p.H_f) ** (1.0 / p.eta_f)
    c = c_tilde + c_e
    H = housing_supply(p, r, H_w, t_h)
    T_r = housing_tax_revenue(p, r, H, H_w, t_h) / L
    labour = (1.0 - tau_w) * ((1.0 - u) * w + u * p.b * x)
    income = labour + Pi + T_r
    g = 1.0 / p.eta_w
    landowners = r * H * (g + t_h) / (1.0 + g + t_h) / L          # per worker
    intermediaries = N * c_tilde / (1.0 + p.eta_f) / L               # per worker (c_e cancels)
    firm_profit = (1.0 - u) * (x * y - w) - theta * u * c          # per worker of the bin
    return dict(x=x, y=y, r=r, H_w=H_w, Pi=Pi, c_e=c_e, lam=lam, theta=theta, q=q, N=N, wage=w, c=c,
                c_tilde=c_tilde, H=H, T_r=T_r, income=income, labour_income=labour, landowners=landowners,
                intermediaries=intermediaries, firm_profit=firm_profit)


def _residual_blocks(z, d: _Data):
    p, L, u, t_h, tau_w = d.p, d.L, d.u, d.t_h, d.tau_w
    e = _economy(z, d)
    x, y, r, lam, q, c = e["x"], e["y"], e["r"], e["lam"], e["q"], e["c"]
    s = d.mix
    pop = 1.0 / L.shape[0]
    # Sorting conditions (8)/(9) on bins: the type between bins i, i+1 is indifferent.
    xm = (1.0 - s) * x[:-1] + s * x[1:]
    V_lo = worker_value(p, xm, r[:-1], y[:-1], lam[:-1], tau_w[:-1], e["Pi"], e["T_r"][:-1])
    V_hi = worker_value(p, xm, r[1:], y[1:], lam[1:], tau_w[1:], e["Pi"], e["T_r"][1:])
    R_w = (V_lo - V_hi) / d.w1
    ym = (1.0 - s) * y[:-1] + s * y[1:]
    F_lo = firm_value(p, ym, x[:-1], y[:-1], lam[:-1], q[:-1], c[:-1])
    F_hi = firm_value(p, ym, x[1:], y[1:], lam[1:], q[1:], c[1:])
    scale_f = (1.0 - p.beta) * jnp.mean(q) * d.w1 / (p.rho + p.delta)
    R_f = (F_lo - F_hi) / scale_f
    # Housing market clearing (B.1, corrected): r H = L[(1-ω) r h̄ + ω I].
    R_h = jnp.log(r * e["H"]) - jnp.log(L * housing_spending(p, r, e["income"]))
    # x_1 from the lowest-bin wage.
    R_x = jnp.reshape((e["wage"][0] - d.w1) / d.w1, (1,))
    # Π: income taxes − benefits + landowners + intermediaries + firms' flow profits (per worker).
    tax = tau_w * ((1.0 - u) * e["wage"] + u * p.b * x)
    Pi_def = pop * jnp.sum(tax - u * p.b * x + e["landowners"] + e["intermediaries"] + e["firm_profit"])
    R_Pi = jnp.reshape((e["Pi"] - Pi_def) / d.w1, (1,))
    R_ce = jnp.reshape(pop * jnp.sum(e["firm_profit"]) / d.w1, (1,))
    return dict(wage_normalisation=R_x, worker_sorting=R_w, firm_sorting=R_f, housing_clearing=R_h,
                lump_sum=R_Pi, zero_profit=R_ce)


def _residual(z, d: _Data):
    B = _residual_blocks(z, d)
    return jnp.concatenate([B[k] for k in EQUATION_BLOCKS])


def _initial_guess(d: _Data):
    """Start: flat types at the lowest-bin level, r = 1, Π = 0, c_e from zero profit."""
    p, L, u = d.p, d.L, d.u
    n = L.shape[0]
    lam, theta, q = matching_rates(p, u)
    x1 = d.w1 / wage(p, 1.0, 1.0, lam[0])
    logx = jnp.log(x1) + 0.1 * jnp.log(L / L[0]) * 0.5
    logy = 0.1 * jnp.log(L[1:] / L[0]) * 0.5
    logr = 0.1 * jnp.log(L[1:] / L[0])
    income1 = d.w1
    H_w = L[0] * housing_spending(p, 1.0, income1)
    z = jnp.concatenate([logx, logy, logr, jnp.reshape(jnp.log(H_w), (1,)), jnp.zeros(1), jnp.zeros(1)])
    # c_e from zero average profit at the start.
    e = _economy(z, d)
    ce = jnp.mean((1.0 - u) * (e["x"] * e["y"] - e["wage"]) - theta * u * e["c_tilde"]) / jnp.mean(theta * u)
    return z.at[3 * n].set(ce / d.w1)


@eqx.filter_jit
def _solve_core(d: _Data, z0, tol, max_steps):
    z0 = jnp.where(jnp.all(jnp.isfinite(z0)), z0, _initial_guess(d)) if z0 is not None else _initial_guess(d)
    sol = solve_root(_residual, z0, d, tol=tol, max_steps=max_steps, linear_solver="dense")
    e = _economy(sol.value, d)
    B = _residual_blocks(sol.value, d)
    return sol, e, B


def _checked_status(solve: SolveResult, ok) -> str | list[str]:
    """The solve's status name (a list of names for a batched result), with ``"rejected"`` where the
    solve succeeded but the model's check ``ok`` (PAM, global incentive compatibility) fails."""
    st = solve.status
    okv = np.asarray(ok, dtype=bool).reshape(-1)
    if isinstance(st, str):
        return "rejected" if st == "successful" and not bool(okv[0]) else st
    okv = np.broadcast_to(okv, (len(st),))
    return ["rejected" if s == "successful" and not o else s for s, o in zip(st, okv)]


def _checked_converged(solve: SolveResult, ok):
    """``solve.converged & ok``: True exactly when :func:`_checked_status` is "successful"; a Python
    bool for a concrete unbatched result, an array under tracing or batching (so that a jitted
    moment function can return it)."""
    c = solve.converged & ok
    return c if is_traced(c) or jnp.ndim(c) else bool(c)


class InverseResult(Result, eqx.Module):
    """Solution of the inverse problem (Section 4.2) on ``n`` bins.

    Arrays of shape ``(n,)`` ordered from ``ℓ = 0`` upwards: ``x``, ``y`` (productivity
    schedules), ``r`` (rents), ``c`` (overhead costs ``C_v'(N)``), ``wage`` (bin wage (10)),
    ``lam``, ``theta``, ``q``, ``N``, ``H`` (housing per unit of land), ``T_r``, ``income``
    (worker income ``(1−τ_w)((1−u)w + ubx) + Π + T_r``), ``L``, ``u``, ``t_h``, ``tau_w``;
    scalars ``H_w``, ``Pi``, ``c_e``, ``w1``. ``residuals``: max-norm residual per equation
    block (``EQUATION_BLOCKS``); ``equation_residuals``: every equation's residual;
    ``solve``: the :class:`~spatialjax.solver.SolveResult`; ``z``: the unknown vector (a warm start).

    Protocol (:mod:`spatialjax.results`): ``status`` the solver's status name, or ``"rejected"``
    (``message`` says why) when it converged to a root on which ``x`` or ``y`` is not increasing;
    ``converged`` is True exactly when ``status`` is "successful" (an array under ``jit``/``vmap``);
    ``residual``; ``summary()``; ``to_dict()``/``to_json()`` (strict JSON, NaN -> null).
    """

    params: Params
    x: jax.Array
    y: jax.Array
    r: jax.Array
    c: jax.Array
    wage: jax.Array
    lam: jax.Array
    theta: jax.Array
    q: jax.Array
    N: jax.Array
    H: jax.Array
    T_r: jax.Array
    income: jax.Array
    L: jax.Array
    u: jax.Array
    t_h: jax.Array
    tau_w: jax.Array
    H_w: jax.Array
    Pi: jax.Array
    c_e: jax.Array
    w1: jax.Array
    equation_residuals: dict
    solve: SolveResult
    z: jax.Array
    sorting: str = eqx.field(static=True, default="midpoint")

    @property
    def n(self) -> int:
        return int(self.L.shape[0])

    @property
    def pam(self):
        """Positive assortative matching across bins: ``x`` and ``y`` strictly increasing (the
        pure-assignment equilibrium of Proposition 1 is PAM; a root with a decreasing schedule
        satisfies the discrete first-order conditions but is not an equilibrium)."""
        # per element of a batched (vmapped) result: over the last (bin) axis only
        return jnp.all(jnp.diff(self.x, axis=-1) > 0, axis=-1) & jnp.all(jnp.diff(self.y, axis=-1) > 0, axis=-1)

    @property
    def converged(self):
        """The root-finding converged to a regular root *and* the schedules satisfy PAM."""
        return _checked_converged(self.solve, self.pam)

    @property
    def status(self) -> str | list[str]:
        """The solver's status name, or ``"rejected"`` when it converged to a root on which ``x`` or
        ``y`` is not increasing (flagged, not returned as an equilibrium; see ``message``)."""
        return _checked_status(self.solve, self.pam)

    @property
    def message(self) -> str:
        st = self.status
        if "rejected" in ([st] if isinstance(st, str) else st):
            return ("PAM violated: the root of the inverse problem has a decreasing x or y schedule (it solves "
                    "the discrete first-order conditions but is not a pure-assignment equilibrium, Proposition 1)")
        return ""

    @property
    def residual(self):
        """Max-norm residual over all ``3n + 1`` equations."""
        return self.solve.residual

    @property
    def residuals(self) -> dict:
        return {k: jnp.max(jnp.abs(v)) for k, v in self.equation_residuals.items()}

    @property
    def housing_share(self):
        """Housing spending over total income (labour income + Π + T_r), per bin."""
        return housing_spending(self.params, self.r, self.income) / self.income

    def summary(self) -> str:
        n = self.n
        head = format_kv(
            [("status", self.status), *([("message", self.message)] if self.message else []),
             ("PAM (x, y increasing)", bool(self.pam)), ("bins", n), ("unknowns = equations", 3 * n + 1),
             ("max-norm residual", float(self.residual)), ("Newton iterations", int(self.solve.steps)),
             ("sigma_min(J)", float(self.solve.sigma_min)), ("sorting convention", self.sorting),
             ("H_w", float(self.H_w)), ("Pi", float(self.Pi)), ("c_e", float(self.c_e)),
             ("x(0), x(1)", f"{float(self.x[0]):.4f}, {float(self.x[-1]):.4f}"),
             ("y(0), y(1)", f"{float(self.y[0]):.4f}, {float(self.y[-1]):.4f}"),
             ("r(1)", float(self.r[-1]))],
            title="Oh (2025) inverse problem (Section 4.2)")
        res = format_table(["equation block", "count", "max |residual|"],
                           [(k, int(np.size(self.equation_residuals[k])), float(self.residuals[k]))
                            for k in EQUATION_BLOCKS], title="Residuals (scaled)")
        m = moments(self.params, self)
        mom = format_table(list(MOMENT_KEYS), [[float(m[k]) for k in MOMENT_KEYS]], title="Table 2 moments",
                           digits=3)
        return "\n".join([head, res, mom])

    def _dict_fields(self) -> dict:
        out = {"pam": self.pam, "steps": self.solve.steps, "sorting": self.sorting,
               "residuals": self.residuals, "params": self.params.to_dict()}
        for k in ("x", "y", "r", "c", "wage", "lam", "theta", "q", "N", "H", "T_r", "income", "L", "u", "t_h",
                  "tau_w", "H_w", "Pi", "c_e", "w1"):
            out[k] = getattr(self, k)
        out["moments"] = moments(self.params, self)
        return out


def _as_bins(name, v, n):
    a = jnp.asarray(v, dtype=jnp.result_type(float))
    if a.ndim == 0:
        return jnp.full((n,), a)
    if a.shape != (n,):
        raise ParameterError(name, f"must be a scalar or an array of shape ({n},) (one value per bin); "
                                   f"got shape {tuple(a.shape)}")
    return a


def solve_inverse(params: Params, L, u, *, w1, t_h=0.0, tau_w=0.0, sorting: str = "midpoint", z0=None,
                  tol: float = 1e-12, max_steps: int = 60) -> InverseResult:
    """Solve the inverse problem of Section 4.2 (module docstring) on ``n`` equal-population bins.

    Args:
        params: :class:`Params`.
        L: ``(n,)`` population densities per bin (> 0), ordered from ``ℓ = 0`` upwards (each bin
            holds population ``1/n``; see the module docstring for the normalisation).
        u: ``(n,)`` unemployment rates in (0, 1).
        w1: observed average wage of the lowest bin (> 0): pins ``x(0)`` via (10).
        t_h: housing regulation (A.24), scalar or ``(n,)``, ≥ 0.
        tau_w: location income tax, scalar or ``(n,)``, in [0, 1).
        sorting: ``"midpoint"`` (default, trapezoid rule), ``"lower"`` or ``"upper"``: which type
            between adjacent bins is indifferent in the discrete sorting conditions.
        z0: optional warm start (``result.z`` of an earlier solve).
        tol: max-norm tolerance on the scaled residuals.

    Returns:
        :class:`InverseResult`; differentiable in ``params``, ``L``, ``u``, ``w1``, ``t_h``,
        ``tau_w`` by implicit differentiation (NaN gradients when the solve failed).
        ``converged`` is False (status ``"pam_violated"``) when the root has a decreasing
        ``x`` or ``y``: not an equilibrium, flagged rather than returned as one.
    """
    if sorting not in _SORTING:
        raise ParameterError("sorting", f"must be one of {sorted(_SORTING)}; got {sorting!r}")
    if not isinstance(params, Params):
        raise ParameterError("params", f"must be an oh.Params; got {type(params).__name__}")
    L = jnp.asarray(L, dtype=jnp.result_type(float))
    u = jnp.asarray(u, dtype=jnp.result_type(float))
    if L.ndim != 1 or L.shape[0] < 2:
        raise ParameterError("L", f"must be a 1-D array of at least 2 bin values; got shape {tuple(L.shape)}")
    n = L.shape[0]
    if u.shape != (n,):
        raise ParameterError("u", f"must have the shape of L, ({n},); got {tuple(u.shape)}")
    check_positive("L", L)
    check_interval("u", u, 0.0, 1.0)
    w1 = jnp.asarray(w1, dtype=jnp.result_type(float))
    if w1.ndim != 0:
        raise ParameterError("w1", f"must be a scalar; got shape {tuple(w1.shape)}")
    check_positive("w1", w1)
    t_h = _as_bins("t_h", t_h, n)
    tau_w = _as_bins("tau_w", tau_w, n)
    check_positive("t_h", t_h, strict=False)
    check_interval("tau_w", tau_w, 0.0, 1.0, lo_open=False)
    params.check()
    d = _Data(p=params, L=L, u=u, w1=w1, t_h=t_h, tau_w=tau_w, mix=_SORTING[sorting])
    if z0 is not None:
        z0 = jnp.asarray(z0, dtype=jnp.result_type(float))
        if z0.shape != (3 * n + 1,):
            raise ParameterError("z0", f"must have shape ({3 * n + 1},); got {tuple(z0.shape)}")
    sol, e, B = _solve_core(d, z0, tol, max_steps)
    return InverseResult(params=params, x=e["x"], y=e["y"], r=e["r"], c=e["c"], wage=e["wage"], lam=e["lam"],
                         theta=e["theta"], q=e["q"], N=e["N"], H=e["H"], T_r=e["T_r"], income=e["income"], L=L,
                         u=u, t_h=t_h, tau_w=tau_w, H_w=e["H_w"], Pi=e["Pi"], c_e=e["c_e"], w1=w1,
                         equation_residuals=B, solve=sol, z=sol.value, sorting=sorting)


# ---------------------------------------------------------------------------------------
# Table 2 moments
# ---------------------------------------------------------------------------------------


def moments(params: Params, result, *, housing_groups: int = 4) -> dict:
    """Table 2's ten moments (notes to Table 2), from a solved economy (any object with
    ``x, y, r, wage, u, income``). ``housing_groups=2`` gives Table A.2's (Germany) housing
    difference, top 50% minus bottom 50%, under the same key ``housing_q4_q1``.

    * ``wage_q{2,3,4}``: ``avg_k/avg_1 − 1`` with ``avg_k`` the mean bin wage (10) of quartile
      group ``k`` (bins 1–5, 6–10, 11–15, 16–20 at n = 20; equal population weights);
    * ``rent_q{2,3,4}``: the same for rents ``r``;
    * ``housing_mean``: population-weighted mean over bins of the housing spending share
      (housing spending ``(1−ω) r h̄ + ω I`` over total income ``I``);
    * ``housing_q4_q1``: the share's quartile-4 mean minus its quartile-1 mean (with
      ``housing_groups=2``: top half minus bottom half);
    * ``replacement_rate``: ``b E[x] / E[w]`` (B.3: income of the unemployed ``b E[x]`` over
      the average wage; ``E[x]`` over all workers, ``E[w]`` over the employed);
    * ``labor_share``: total wages over total output ``Σ(1−u)w / Σ(1−u)xy``.
    """
    p = params
    x, y, r, w, u = result.x, result.y, result.r, result.wage, result.u
    n = x.shape[0]
    Q = jnp.asarray(quartile_weights(n, 4))
    share = housing_spending(p, r, result.income) / result.income
    wq = Q @ w
    rq = Q @ r
    sq = jnp.asarray(quartile_weights(n, housing_groups)) @ share
    emp = 1.0 - u
    return {
        "wage_q2": wq[1] / wq[0] - 1.0, "wage_q3": wq[2] / wq[0] - 1.0, "wage_q4": wq[3] / wq[0] - 1.0,
        "housing_mean": jnp.mean(share), "housing_q4_q1": sq[-1] - sq[0],
        "replacement_rate": p.b * jnp.mean(x) / (jnp.sum(emp * w) / jnp.sum(emp)),
        "labor_share": jnp.sum(emp * w) / jnp.sum(emp * x * y),
        "rent_q2": rq[1] / rq[0] - 1.0, "rent_q3": rq[2] / rq[0] - 1.0, "rent_q4": rq[3] / rq[0] - 1.0,
    }


# ---------------------------------------------------------------------------------------
# Policies and the stand-in bin profile
# ---------------------------------------------------------------------------------------


def income_tax_schedule(L, *, intercept: float = -0.072, slope: float = -0.0061):
    """Location income tax from B.2's regression: ``log(1 − τ_w) = intercept + slope · log L``
    (2017: −0.072, −0.0061; the 2019 reform: −0.071, −0.0026). ``L`` in the data's density units."""
    return 1.0 - jnp.exp(intercept + slope * jnp.log(jnp.asarray(L, dtype=jnp.result_type(float))))


def regulation_schedule(n: int, eta_w: float, *, mean_elasticity: float = 7.95) -> np.ndarray:
    """Stand-in housing regulation ``t_h(ℓ)`` (A.23/A.24): linear in the bin midpoint ``ℓ``,
    ``t_h(0) = 0`` (the normalisation ``min t_h = 0``), slope chosen so that the mean over bins
    of the effective supply elasticity ``1/(γ + t_h)`` equals ``mean_elasticity`` (Section 4.3:
    7.95 at ``η_w = 11.31``). The paper does not print ``t_h(ℓ)``; this is a documented stand-in."""
    g = 1.0 / float(eta_w)
    ell = (np.arange(n) + 0.5) / n
    ell = ell - ell[0]
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.mean(1.0 / (g + mid * ell)) > mean_elasticity:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi) * ell


class StandIn(eqx.Module):
    """A bin profile ``{L_i, u_i}`` with its policies ``t_h``, ``τ_w`` and the lowest-bin wage ``w1``."""

    L: jax.Array
    u: jax.Array
    t_h: jax.Array
    tau_w: jax.Array
    w1: jax.Array

    def solve(self, params: Params, **kw) -> InverseResult:
        return solve_inverse(params, self.L, self.u, w1=self.w1, t_h=self.t_h, tau_w=self.tau_w, **kw)


def standin_profile(params: Params | None = None, n: int = 20, *, log_L0: float = 5.107646487312846,
                    log_L_slope: float = 3.081813061832728, w1: float = 44.16619290884477, u: float | None = None, regulation: bool = True,
                    income_tax: bool = True) -> StandIn:
    """The documented stand-in for the unpublished bin data (issue 11 §2).

    ``log L_i = log_L0 + log_L_slope · ℓ_i`` at bin midpoints ``ℓ_i = (i − 1/2)/n`` (a smooth
    increasing density profile; log-linear), flat ``u_i = δ/(δ + A)`` — the rate at which
    market tightness ``θ = 1`` with Table 1's ``A`` and ``δ`` (``A`` is calibrated to the
    vacancy/unemployment ratio, about one in 2017) — unless ``u`` is given; ``t_h`` from
    :func:`regulation_schedule` (at Table 1's ``η_w = 11.31``: the schedule is policy data,
    held fixed when ``η_w`` is estimated), ``τ_w`` from :func:`income_tax_schedule` (2017), and ``w1``
    the lowest-bin wage. The default shape parameters are those fitted by
    :func:`spatialjax.models.oh.estimation.fit_standin` (``data_moments/oh/standin_profile.csv``).
    """
    params = Params.table1() if params is None else params
    ell = (np.arange(n) + 0.5) / n
    L = jnp.exp(log_L0 + log_L_slope * jnp.asarray(ell))
    uu = params.delta / (params.delta + params.A) if u is None else jnp.asarray(u, dtype=float)
    t_h = jnp.asarray(regulation_schedule(n, 11.31)) if regulation else jnp.zeros(n)
    tau_w = income_tax_schedule(L) if income_tax else jnp.zeros(n)
    return StandIn(L=L, u=jnp.full((n,), uu), t_h=t_h, tau_w=tau_w, w1=jnp.asarray(w1, dtype=float))


del math
