"""Oh (2025), "Spatial Sorting of Workers and Firms": the theory model (Sections 2-3, Appendix A.1-A.4, A.6, A.8).

Continuum of ex-ante identical locations ell in [0, 1]; workers of productivity x ~ Q_w (mass M_w) and
firms of productivity y ~ Q_f (mass M_f) sort into locations (pure assignment x(ell), y(ell)); in each
location random search with Cobb-Douglas matching M = A U^alpha V^(1-alpha), so lambda(theta) =
A theta^(1-alpha), q(theta) = A theta^(-alpha), epsilon_lambda = 1 - alpha; Nash bargaining with worker
power beta; congestion in housing C_r(H) (H = h_bar L) and business services C_v(N).

Equations used (paper numbers; misprints from MODELS.md §2 are corrected, not copied):

* densities (1): L(ell) = M_w Q_w'(x(ell)) x'(ell), N(ell) = M_f Q_f'(y(ell)) y'(ell), equivalently
  int_0^ell L = M_w Q_w(x(ell)) (the form used here);
* flow balance (7): u = delta/(delta + lambda), V = N, and theta = V/(u L);
* worker value (4): rho V^u(x, ell) = b x + A_w (x - B_w) + Pi - h_bar r(ell), with
  A_w = beta lam (y(ell) - b)/(rho~ + beta lam), B_w = (1-beta~) q x(ell)/(rho~ + beta lam + (1-beta~) q),
  rho~ = rho + delta, 1 - beta~ = rho/(rho + delta_v) (1 - beta);
* firm value (5): rho Vbar(y, ell) = Abar_f (y - b - B_f) - c(ell) with Abar_f = (delta_v/rho) A_f
  = delta_v/(rho + delta_v) (1-beta) q x(ell)/(rho~ + (1-beta~) q) (finite as rho -> 0),
  B_f = beta lam (y(ell) - b)/(rho~ + beta lam + (1-beta~) q);
* prices (6): r = C_r'(h_bar L), c = C_v'(N);
* sorting conditions (8)/(9): d/d ell of the worker's (firm's) value at x = x(ell) (y = y(ell)) is zero.
  (8) prints the worker condition as d/dx; it is d/d ell (MODELS.md).
* wage (10): w = (b + beta (rho~ + lam)/(rho~ + beta lam + (1-beta~) q) (y - b)) x.

**Discretisation (collocation).** A grid ell_i = i/n, i = 0..n. Unknowns: log L_i and log theta_i
(2(n+1)); then u_i, lambda_i, q_i and N_i = theta_i u_i L_i follow from (7). The assignment follows
from (1) integrated by the trapezoid rule: P_i = int_0^{ell_i} L / int_0^1 L (so P_0 = 0, P_n = 1 and
the boundary conditions x(0) = x_min, x(1) = x_max hold exactly), x_i = Q_w^{-1}(P_i), likewise y_i.
Equations: the sorting conditions on each interval as indifference of the midpoint type
xbar = (x_i + x_{i+1})/2 (ybar) between ell_i and ell_{i+1}, i.e.
``[A_w]_i^{i+1} xbar - [A_w B_w]_i^{i+1} - h_bar [r]_i^{i+1} = 0`` (the trapezoid rule of (9)), the
same for firms, and market clearing int L = M_w, int N = M_f (6). That is 2n + 2 equations; the
solve is :func:`spatialjax.solver.solve_root` (Newton, implicit differentiation). The scheme is
second-order: ``grid_error`` is the difference to the solve on the grid refined twice (n -> 2n).

Because L > 0 is an unknown in logs, x and y are increasing by construction; PAM in the economic
sense (Proposition 1: increasing differences of the values in (x, ell) and (y, ell), i.e. A_w and
Abar_f increasing in ell, so that the first-order conditions pick the global maximum) is *checked*:
if it fails, or if some type on the grid strictly prefers another grid location
(:func:`incentive_check`), the result has ``status = "pam_violated"`` / ``"not_incentive_compatible"``
and ``converged = False``: it is never returned as an equilibrium.

**Planner (Section 3.2, rho -> 0).** :func:`solve_planner` maximises the same discretisation of net
output int[(1-u) L x y - C_r(h_bar L) - C_v(N)] d ell directly (KKT system for the two mass
constraints, Newton), and reports the residuals of the optimality conditions (A.12) -- condition (11)
with C_r'', C_v'' (the printed (11) has C'; MODELS.md) -- and the second condition (A.13) *without*
its spurious factor epsilon_lambda (MODELS.md; the printed version is also reported, and fails).

**Transfers (Corollary 1).** :func:`transfers` computes the location-specific flow transfers
t_w(ell), t_f(ell) that make the planner's allocation satisfy the (discrete) sorting conditions,
with t_w^0, t_f^0 chosen so that each side's transfers sum to zero (int t_w L = int t_f N = 0);
:func:`solve_with_transfers` re-solves the equilibrium with them; :func:`corollary1_transfers`
evaluates the paper's closed-form derivatives (Hosios epsilon_lambda = 1 - beta and b = 0).

**Neoclassical benchmark (Proposition 4, A.6)**: :func:`neoclassical_benchmark`.
**Observational equivalence (Proposition 5, A.8)**: :func:`one_sided_equivalent` builds the
one-sided sorting economy (homogeneous firms, local TFP Abar(ell) = y(ell)/y0, business-services
cost backed out from the cross-section) and solves it forward.

Values are flow values (rho V); Pi (a lump sum common to all workers) is omitted since it does not
affect any location choice.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri

import spatialjax  # noqa: F401  (float64)
from spatialjax.errors import ParameterError
from spatialjax.scalar import bisect
from spatialjax.solver import solve_root
from spatialjax.tables import format_kv, format_table
from spatialjax.validation import check_finite, check_interval, check_positive, is_traced

Array = jax.Array

__all__ = [
    "Uniform", "TruncatedLognormal", "Pareto", "CustomDistribution",
    "Isoelastic", "TabulatedMarginalCost",
    "TheoryParams", "TheoryResult", "PlannerResult", "NeoclassicalResult", "OneSidedResult",
    "equilibrium_state", "solve_equilibrium", "solve_planner", "transfers", "solve_with_transfers",
    "corollary1_transfers", "incentive_check", "neoclassical_benchmark", "one_sided_equivalent",
    "aggregate_output", "net_output", "congestion_costs", "concentration_terms",
    "planner_condition_residuals",
]


def _f64(x):
    return jnp.asarray(x, dtype=jnp.float64)


def _scalar(name, v):
    if np.ndim(v) != 0:
        raise ParameterError(name, f"must be a scalar; got shape {np.shape(v)}")
    check_finite(name, v)
    return _f64(v)


def _bounds(owner, lo, hi, *, positive=True):
    lo = _scalar(f"{owner}.lo", lo)
    hi = _scalar(f"{owner}.hi", hi)
    if not is_traced(lo) and not is_traced(hi):
        if positive and float(lo) <= 0:
            raise ParameterError(f"{owner}.lo", f"must be > 0 (productivities are positive); got {float(lo)}")
        if float(lo) >= float(hi):
            raise ParameterError(f"{owner}.lo", f"must be < hi; got lo = {float(lo)}, hi = {float(hi)}")
    return lo, hi


# ----------------------------------------------------------------------------------------
# Type distributions Q_w, Q_f
# ----------------------------------------------------------------------------------------


class Uniform(eqx.Module):
    """Uniform type distribution on [lo, hi] (lo > 0)."""

    lo: Array
    hi: Array

    def __init__(self, lo=1.0, hi=2.0):
        self.lo, self.hi = _bounds("Uniform", lo, hi)

    def cdf(self, x):
        return jnp.clip((x - self.lo) / (self.hi - self.lo), 0.0, 1.0)

    def pdf(self, x):
        return jnp.where((x >= self.lo) & (x <= self.hi), 1.0 / (self.hi - self.lo), 0.0)

    def icdf(self, p):
        return self.lo + p * (self.hi - self.lo)


class TruncatedLognormal(eqx.Module):
    """Lognormal(mu, sigma) truncated to [lo, hi] (0 < lo < hi)."""

    mu: Array
    sigma: Array
    lo: Array
    hi: Array

    def __init__(self, mu=0.0, sigma=0.5, lo=1.0, hi=3.0):
        self.mu = _scalar("TruncatedLognormal.mu", mu)
        check_positive("TruncatedLognormal.sigma", sigma)
        self.sigma = _scalar("TruncatedLognormal.sigma", sigma)
        self.lo, self.hi = _bounds("TruncatedLognormal", lo, hi)

    def _z(self, x):
        return (jnp.log(x) - self.mu) / self.sigma

    def cdf(self, x):
        a, b = ndtr(self._z(self.lo)), ndtr(self._z(self.hi))
        xc = jnp.clip(x, self.lo, self.hi)
        return (ndtr(self._z(xc)) - a) / (b - a)

    def pdf(self, x):
        a, b = ndtr(self._z(self.lo)), ndtr(self._z(self.hi))
        z = self._z(jnp.maximum(x, 1e-300))
        d = jnp.exp(-0.5 * z**2) / (jnp.sqrt(2 * jnp.pi) * self.sigma * x) / (b - a)
        return jnp.where((x >= self.lo) & (x <= self.hi), d, 0.0)

    def icdf(self, p):
        a, b = ndtr(self._z(self.lo)), ndtr(self._z(self.hi))
        x = jnp.exp(self.mu + self.sigma * ndtri(a + p * (b - a)))
        # exact end points (ndtri round-off would move the boundary conditions by ~1e-16 relative)
        return jnp.where(p <= 0.0, self.lo, jnp.where(p >= 1.0, self.hi, x))


class Pareto(eqx.Module):
    """Pareto with tail index ``shape`` and scale lo, truncated to [lo, hi]:
    Q(x) = (1 - (lo/x)^shape)/(1 - (lo/hi)^shape)."""

    shape: Array
    lo: Array
    hi: Array

    def __init__(self, shape=3.0, lo=1.0, hi=3.0):
        check_positive("Pareto.shape", shape)
        self.shape = _scalar("Pareto.shape", shape)
        self.lo, self.hi = _bounds("Pareto", lo, hi)

    def cdf(self, x):
        xc = jnp.clip(x, self.lo, self.hi)
        return (1 - (self.lo / xc) ** self.shape) / (1 - (self.lo / self.hi) ** self.shape)

    def pdf(self, x):
        k = self.shape
        d = k * self.lo**k * x ** (-k - 1) / (1 - (self.lo / self.hi) ** k)
        return jnp.where((x >= self.lo) & (x <= self.hi), d, 0.0)

    def icdf(self, p):
        k = self.shape
        return self.lo * (1 - p * (1 - (self.lo / self.hi) ** k)) ** (-1.0 / k)


class CustomDistribution(eqx.Module):
    """A user-supplied distribution on [lo, hi]: ``cdf(x)`` (increasing, cdf(lo) = 0, cdf(hi) = 1) and
    its density ``pdf(x)`` (> 0 on the support), both pure JAX functions of an array. ``icdf(p)`` is
    optional; without it the quantile function is found by bisection (60 halvings) and differentiated
    implicitly (dx/dp = 1/pdf(x))."""

    lo: Array
    hi: Array
    cdf_fn: Callable = eqx.field(static=True)
    pdf_fn: Callable = eqx.field(static=True)
    icdf_fn: Optional[Callable] = eqx.field(static=True, default=None)

    def __init__(self, cdf, pdf, lo, hi, icdf=None):
        if not callable(cdf):
            raise ParameterError("CustomDistribution.cdf", "must be a callable cdf(x) -> array")
        if not callable(pdf):
            raise ParameterError("CustomDistribution.pdf", "must be a callable pdf(x) -> array")
        if icdf is not None and not callable(icdf):
            raise ParameterError("CustomDistribution.icdf", "must be a callable icdf(p) -> array or None")
        self.lo, self.hi = _bounds("CustomDistribution", lo, hi)
        self.cdf_fn, self.pdf_fn, self.icdf_fn = cdf, pdf, icdf
        if not is_traced(self.lo):
            c0, c1 = float(cdf(self.lo)), float(cdf(self.hi))
            if abs(c0) > 1e-8 or abs(c1 - 1) > 1e-8:
                raise ParameterError("CustomDistribution.cdf", f"must satisfy cdf(lo) = 0 and cdf(hi) = 1; got {c0}, {c1}")
            grid = np.linspace(float(self.lo), float(self.hi), 101)
            d = np.asarray(pdf(jnp.asarray(grid)))
            if not np.all(np.isfinite(d)) or np.any(d <= 0):
                raise ParameterError("CustomDistribution.pdf", "must be finite and > 0 on [lo, hi]")

    def cdf(self, x):
        return self.cdf_fn(jnp.clip(x, self.lo, self.hi))

    def pdf(self, x):
        return jnp.where((x >= self.lo) & (x <= self.hi), self.pdf_fn(jnp.clip(x, self.lo, self.hi)), 0.0)

    def icdf(self, p):
        if self.icdf_fn is not None:
            return self.icdf_fn(p)
        lo, hi = jax.lax.stop_gradient(self.lo), jax.lax.stop_gradient(self.hi)
        p0 = jax.lax.stop_gradient(p)
        x0 = jax.vmap(lambda pi: bisect(lambda x: self.cdf_fn(x) - pi, lo, hi, iters=60))(jnp.ravel(p0)).reshape(jnp.shape(p))
        x0 = jax.lax.stop_gradient(x0)
        # one Newton step at the converged quantile carries the implicit derivative
        return x0 - (self.cdf_fn(x0) - p) / self.pdf_fn(x0)


_DISTS = (Uniform, TruncatedLognormal, Pareto, CustomDistribution)


# ----------------------------------------------------------------------------------------
# Congestion cost functions C_r, C_v
# ----------------------------------------------------------------------------------------


class Isoelastic(eqx.Module):
    """C(H) = scale^(-1/eta) H^(1+1/eta)/(1+1/eta): marginal cost C'(H) = (H/scale)^(1/eta) (supply
    elasticity eta), as in the paper's Appendix B.1 (scale = H_w or H_f)."""

    scale: Array
    eta: Array

    def __init__(self, scale=1.0, eta=1.0, *, name="Isoelastic"):
        check_positive(f"{name}.scale", scale)
        check_positive(f"{name}.eta", eta)
        self.scale = _scalar(f"{name}.scale", scale)
        self.eta = _scalar(f"{name}.eta", eta)

    def cost(self, H):
        g = 1.0 / self.eta
        return self.scale * (H / self.scale) ** (1 + g) / (1 + g)

    def marginal(self, H):
        return (H / self.scale) ** (1.0 / self.eta)

    def second(self, H):
        return (1.0 / self.eta) * (H / self.scale) ** (1.0 / self.eta) / H


class TabulatedMarginalCost(eqx.Module):
    """A convex cost with piecewise-linear marginal cost through the knots (H_k, m_k) (H increasing,
    m non-decreasing), extended linearly with the end slopes. Used to back out a business-services
    cost from a cross-section (Proposition 5, A.8)."""

    H: Array
    m: Array

    def __init__(self, H, m):
        H, m = np.asarray(H, float), np.asarray(m, float)
        if H.ndim != 1 or H.shape != m.shape or H.size < 2:
            raise ParameterError("TabulatedMarginalCost.H", "H and m must be 1-d arrays of the same length >= 2")
        check_finite("TabulatedMarginalCost.H", H)
        check_finite("TabulatedMarginalCost.m", m)
        if np.any(np.diff(H) <= 0):
            raise ParameterError("TabulatedMarginalCost.H", "knots must be strictly increasing")
        if np.any(np.diff(m) < 0):
            raise ParameterError("TabulatedMarginalCost.m", "marginal cost must be non-decreasing (convex cost)")
        self.H, self.m = _f64(H), _f64(m)

    def _seg(self, H):
        k = jnp.clip(jnp.searchsorted(self.H, H) - 1, 0, self.H.shape[0] - 2)
        slope = (self.m[k + 1] - self.m[k]) / (self.H[k + 1] - self.H[k])
        return k, slope

    def marginal(self, H):
        k, s = self._seg(H)
        return self.m[k] + s * (H - self.H[k])

    def second(self, H):
        return self._seg(H)[1]

    def cost(self, H):
        # integral of the marginal cost from H_0 (cost(H_0) = 0)
        seg = 0.5 * (self.m[1:] + self.m[:-1]) * jnp.diff(self.H)
        cum = jnp.concatenate([jnp.zeros(1), jnp.cumsum(seg)])
        k, s = self._seg(H)
        d = H - self.H[k]
        return cum[k] + self.m[k] * d + 0.5 * s * d**2


_COSTS = (Isoelastic, TabulatedMarginalCost)


# ----------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------


class TheoryParams(eqx.Module):
    """Parameters of the theory model (Section 2). All rates per unit of time.

    rho >= 0 discount rate (0 = the planner's limit of Section 3.2); delta > 0 separation rate;
    delta_v > 0 vacancy destruction rate (large delta_v: Propositions 1-2); A > 0 matching efficiency
    and alpha in (0, 1) the elasticity of M = A U^alpha V^(1-alpha) in U (epsilon_lambda = 1 - alpha);
    beta in (0, 1) worker bargaining power; b >= 0 unemployment benefit per unit of x (y_min > b);
    h_bar > 0 housing per worker; M_w, M_f > 0 masses of workers and firms; Q_w, Q_f type
    distributions (Uniform, TruncatedLognormal, Pareto, CustomDistribution); C_r, C_v congestion cost
    functions of housing H = h_bar L and business services N (Isoelastic(scale, eta) by default,
    scale = H_w, H_f and eta = eta_w, eta_f as in Appendix B.1).

    A_bar (optional, array on the solution grid, shape (n+1,)) is local TFP Abar(ell) multiplying output
    (Section 3.4); ``firms_homogeneous=True`` makes all firms type y0 = Q_f.lo (the one-sided sorting
    model). Both are only used by :func:`one_sided_equivalent`.
    """

    rho: Array
    delta: Array
    delta_v: Array
    A: Array
    alpha: Array
    beta: Array
    b: Array
    h_bar: Array
    M_w: Array
    M_f: Array
    Q_w: Any
    Q_f: Any
    C_r: Any
    C_v: Any
    A_bar: Any = None
    firms_homogeneous: bool = eqx.field(static=True, default=False)

    def __init__(self, rho=0.004, delta=0.028, delta_v=1.0, A=0.62, alpha=0.5, beta=0.5, b=0.0,
                 h_bar=1.0, M_w=1.0, M_f=1.0, Q_w=None, Q_f=None, C_r=None, C_v=None, *,
                 H_w=1.0, eta_w=1.0, H_f=1.0, eta_f=1.0, A_bar=None, firms_homogeneous=False, **unknown):
        if unknown:
            bad = sorted(unknown)[0]
            raise ParameterError(bad, "unknown parameter; allowed: rho, delta, delta_v, A, alpha, beta, b, h_bar, "
                                      "M_w, M_f, Q_w, Q_f, C_r, C_v, H_w, eta_w, H_f, eta_f, A_bar, firms_homogeneous")
        check_positive("rho", rho, strict=False)
        for name, v in (("delta", delta), ("delta_v", delta_v), ("A", A), ("h_bar", h_bar),
                        ("M_w", M_w), ("M_f", M_f)):
            check_positive(name, v)
        check_interval("alpha", alpha, 0.0, 1.0)
        check_interval("beta", beta, 0.0, 1.0)
        check_positive("b", b, strict=False)
        Q_w = Uniform(1.0, 2.0) if Q_w is None else Q_w
        Q_f = Uniform(1.0, 2.0) if Q_f is None else Q_f
        for name, Q in (("Q_w", Q_w), ("Q_f", Q_f)):
            if not isinstance(Q, _DISTS):
                raise ParameterError(name, f"must be Uniform, TruncatedLognormal, Pareto or CustomDistribution; got {type(Q).__name__}")
        C_r = Isoelastic(H_w, eta_w, name="C_r") if C_r is None else C_r
        C_v = Isoelastic(H_f, eta_f, name="C_v") if C_v is None else C_v
        for name, C in (("C_r", C_r), ("C_v", C_v)):
            if not isinstance(C, _COSTS):
                raise ParameterError(name, f"must be Isoelastic or TabulatedMarginalCost; got {type(C).__name__}")
        if not is_traced(b) and not is_traced(Q_f.lo) and float(Q_f.lo) <= float(b):
            raise ParameterError("b", f"the paper assumes y_min > b; got y_min = {float(Q_f.lo)}, b = {float(b)}")
        if A_bar is not None:
            check_positive("A_bar", A_bar)
            A_bar = _f64(A_bar)
        self.rho, self.delta, self.delta_v, self.A = (_scalar("rho", rho), _scalar("delta", delta),
                                                      _scalar("delta_v", delta_v), _scalar("A", A))
        self.alpha, self.beta, self.b = _scalar("alpha", alpha), _scalar("beta", beta), _scalar("b", b)
        self.h_bar, self.M_w, self.M_f = _scalar("h_bar", h_bar), _scalar("M_w", M_w), _scalar("M_f", M_f)
        self.Q_w, self.Q_f, self.C_r, self.C_v = Q_w, Q_f, C_r, C_v
        self.A_bar = A_bar
        self.firms_homogeneous = bool(firms_homogeneous)

    def replace(self, **kw) -> "TheoryParams":
        """A copy with some fields replaced (validated again)."""
        fields = dict(rho=self.rho, delta=self.delta, delta_v=self.delta_v, A=self.A, alpha=self.alpha,
                      beta=self.beta, b=self.b, h_bar=self.h_bar, M_w=self.M_w, M_f=self.M_f, Q_w=self.Q_w,
                      Q_f=self.Q_f, C_r=self.C_r, C_v=self.C_v, A_bar=self.A_bar,
                      firms_homogeneous=self.firms_homogeneous)
        fields.update(kw)
        return TheoryParams(**fields)

    @property
    def one_minus_beta_tilde(self):
        """1 - beta~ = rho/(rho + delta_v) (1 - beta) (A.2)."""
        return self.rho / (self.rho + self.delta_v) * (1 - self.beta)

    @property
    def eps_lambda(self):
        return 1.0 - self.alpha


# ----------------------------------------------------------------------------------------
# Local labour markets given (L, theta) on the grid
# ----------------------------------------------------------------------------------------


def _trapz_cum(f, h):
    return jnp.concatenate([jnp.zeros(1, f.dtype), jnp.cumsum(0.5 * h * (f[1:] + f[:-1]))])


def _weights(n1, h):
    w = jnp.full((n1,), h)
    return w.at[0].set(0.5 * h).at[-1].set(0.5 * h)


def _local(p: TheoryParams, L, theta, h):
    """Everything on the grid given L_i > 0 and theta_i > 0 (arrays of shape (n+1,))."""
    lam = p.A * theta ** (1 - p.alpha)
    q = p.A * theta ** (-p.alpha)
    u = p.delta / (p.delta + lam)
    N = theta * u * L
    cumL, cumN = _trapz_cum(L, h), _trapz_cum(N, h)
    x = p.Q_w.icdf(cumL / cumL[-1])
    if p.firms_homogeneous:
        y = jnp.full_like(x, p.Q_f.lo)
    else:
        y = p.Q_f.icdf(cumN / cumN[-1])
    x = x.at[0].set(p.Q_w.lo).at[-1].set(p.Q_w.hi)
    if not p.firms_homogeneous:
        y = y.at[0].set(p.Q_f.lo).at[-1].set(p.Q_f.hi)
    Ab = jnp.ones_like(x) if p.A_bar is None else p.A_bar
    ye = Ab * y  # effective local firm productivity A(ell) y(ell)
    rt = p.rho + p.delta
    omb = p.one_minus_beta_tilde
    D = rt + p.beta * lam + omb * q
    A_w = p.beta * lam / (rt + p.beta * lam) * (ye - p.b)
    B_w = omb * q * x / D
    Af_bar = p.delta_v / (p.rho + p.delta_v) * (1 - p.beta) * q * x / (rt + omb * q)
    B_f = p.beta * lam * (ye - p.b) / D
    r = p.C_r.marginal(p.h_bar * L)
    c = p.C_v.marginal(N)
    wage = (p.b + p.beta * (rt + lam) / D * (ye - p.b)) * x
    return dict(L=L, theta=theta, lam=lam, q=q, u=u, N=N, x=x, y=y, ye=ye, A_bar=Ab, A_w=A_w, B_w=B_w,
                Af_bar=Af_bar, B_f=B_f, r=r, c=c, wage=wage, cumL=cumL, cumN=cumN)


def _sorting_gaps(p: TheoryParams, s, t_w=0.0, t_f=0.0):
    """Discrete sorting conditions on each interval [ell_i, ell_{i+1}] (shape (n,)): gain of the midpoint
    worker (firm) type from moving from ell_i to ell_{i+1}, in flow units (trapezoid rule of (9))."""
    d = lambda v: v[1:] - v[:-1]  # noqa: E731
    xbar = 0.5 * (s["x"][1:] + s["x"][:-1])
    gw = d(s["A_w"]) * xbar - d(s["A_w"] * s["B_w"]) - p.h_bar * d(s["r"]) + d(jnp.broadcast_to(t_w, s["x"].shape))
    if p.firms_homogeneous:
        # homogeneous firms (y = y0): indifference across locations, A(ell) y0 in the value
        vf = s["Af_bar"] * (s["A_bar"] * s["y"] - p.b - s["B_f"]) - s["c"]
        gf = d(vf) + d(jnp.broadcast_to(t_f, s["x"].shape))
    else:
        ybar = 0.5 * (s["y"][1:] + s["y"][:-1])
        gf = (d(s["Af_bar"] * s["A_bar"]) * ybar - d(s["Af_bar"]) * p.b
              - d(s["Af_bar"] * s["B_f"]) - d(s["c"]) + d(jnp.broadcast_to(t_f, s["x"].shape)))
    return gw, gf


def _eq_residual(z, args):
    p, t_w, t_f, n = args
    n1 = z.shape[0] // 2
    h = 1.0 / (n1 - 1)
    L, theta = jnp.exp(z[:n1]), jnp.exp(z[n1:])
    s = _local(p, L, theta, h)
    gw, gf = _sorting_gaps(p, s, t_w, t_f)
    return jnp.concatenate([gw / h, gf / h, jnp.stack([s["cumL"][-1] / p.M_w - 1.0, s["cumN"][-1] / p.M_f - 1.0])])


def _theta_from_ratio(p, ratio):
    """theta with theta u(theta) = N/L (7), by Newton in log theta (elementwise)."""
    lt0 = jnp.log(ratio) + jnp.log1p(p.A / p.delta * ratio ** (1 - p.alpha))

    def body(_, lt):
        lam = p.A * jnp.exp(lt * (1 - p.alpha))
        f = lt + jnp.log(p.delta) - jnp.log(p.delta + lam) - jnp.log(ratio)
        return lt - f / (1 - (1 - p.alpha) * lam / (p.delta + lam))

    return jnp.exp(jax.lax.fori_loop(0, 40, body, lt0))


def _initial_guess(p, n1):
    L0 = jnp.full((n1,), p.M_w)
    th0 = _theta_from_ratio(p, jnp.full((n1,), p.M_f / p.M_w))
    return jnp.concatenate([jnp.log(L0), jnp.log(th0)])


class EqState(eqx.Module):
    """Traceable equilibrium state on the grid (for gradients): ``z`` = (log L, log theta) and the solve."""

    z: Array
    residual: Array
    code: Array
    steps: Array
    sigma_min: Array


def equilibrium_state(params: TheoryParams, n_grid: int = 100, *, t_w=0.0, t_f=0.0, z0=None,
                      tol: float = 1e-11, max_steps: int = 100) -> EqState:
    """Solve the collocation system (traceable; derivatives w.r.t. ``params`` by implicit differentiation).

    Returns an :class:`EqState`; ``code`` is the solver status (0 = converged; see
    :class:`spatialjax.solver.RESULTS`). Use :func:`solve_equilibrium` for the checked report object.
    """
    n1 = int(n_grid) + 1
    if z0 is None:
        z0 = _initial_guess(params, n1)
    t_w = jnp.broadcast_to(_f64(t_w), (n1,))
    t_f = jnp.broadcast_to(_f64(t_f), (n1,))
    res = solve_root(_eq_residual, z0, (params, t_w, t_f, None), tol=tol, max_steps=max_steps,
                     linear_solver="dense")
    return EqState(z=res.value, residual=res.residual, code=res.result._value, steps=res.steps,
                   sigma_min=res.sigma_min)


_eq_state_jit = eqx.filter_jit(equilibrium_state)


def _state_dict(p, z):
    n1 = z.shape[0] // 2
    h = 1.0 / (n1 - 1)
    return _local(p, jnp.exp(z[:n1]), jnp.exp(z[n1:]), h), h


def aggregate_output(params: TheoryParams, state) -> Array:
    """Y = int (1 - u) L x A(ell) y d ell (trapezoid) at an :class:`EqState` or a result."""
    s, h = _state_dict(params, state.z)
    return jnp.sum(_weights(s["L"].shape[0], h) * (1 - s["u"]) * s["L"] * s["x"] * s["ye"])


def congestion_costs(params: TheoryParams, state) -> Array:
    """C = int [C_r(h_bar L) + C_v(N)] d ell (trapezoid)."""
    s, h = _state_dict(params, state.z)
    return jnp.sum(_weights(s["L"].shape[0], h) * (params.C_r.cost(params.h_bar * s["L"]) + params.C_v.cost(s["N"])))


def net_output(params: TheoryParams, state) -> Array:
    """Net output Y - C, the planner's objective (Section 3.2)."""
    return aggregate_output(params, state) - congestion_costs(params, state)


def concentration_terms(params: TheoryParams, state) -> Array:
    """Phi(ell) = h_bar^2 C_r''(h_bar L) L' L + C_v''(N) N' N = h_bar r' L + c' N on the interval midpoints
    (shape (n,)): the "changes in congestion costs" of Section 3.2. Zero at the optimum ((A.12); the
    printed (11) has C' for C''), positive in equilibrium ((A.16), Proposition 3)."""
    s, h = _state_dict(params, state.z)
    mid = lambda v: 0.5 * (v[1:] + v[:-1])  # noqa: E731
    d = lambda v: (v[1:] - v[:-1]) / h  # noqa: E731
    return params.h_bar * d(s["r"]) * mid(s["L"]) + d(s["c"]) * mid(s["N"])


# ----------------------------------------------------------------------------------------
# Result objects
# ----------------------------------------------------------------------------------------


def _status_name(code: int) -> str:
    return {0: "successful", 1: "max_steps_reached", 2: "stalled", 3: "nonfinite", 4: "singular"}.get(int(code), f"unknown({code})")


class _Report:
    """Shared report behaviour: summary() (returns), __str__, to_dict(), to_json()."""

    _array_fields: tuple = ()
    _scalar_fields: tuple = ()

    def __str__(self):
        return self.summary()

    def to_dict(self) -> dict:
        out = {}
        for k in self._scalar_fields:
            v = getattr(self, k)
            out[k] = v if isinstance(v, (str, bool, int)) or v is None else float(v)
        for k in self._array_fields:
            out[k] = np.asarray(getattr(self, k)).tolist()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


class TheoryResult(_Report):
    """Equilibrium of the theory model on the grid ell_i = i/n.

    Arrays (shape (n+1,)): ell, x, y, L, N, theta, u, lam, q, wage (10), r, c, A_w, B_w, Af_bar, B_f,
    V_w = rho V^u(x(ell), ell) - Pi (4), V_f = rho Vbar(y(ell), ell) (5).
    Scalars: converged, status ("successful", "pam_violated", "not_incentive_compatible", or the
    solver's failure name), residual (max-norm of the collocation equations), steps, sigma_min,
    grid_error (max relative difference of x, y, L, N to the solve on the grid refined to 2n; NaN if
    not computed), pam_ok, ic_gain_w, ic_gain_f (largest gain of any grid type from moving to another
    grid location, relative to the value scale; <= 0 for an equilibrium), output Y, congestion C.
    """

    _array_fields = ("ell", "x", "y", "L", "N", "theta", "u", "lam", "q", "wage", "r", "c", "A_w", "B_w",
                     "Af_bar", "B_f", "V_w", "V_f")
    _scalar_fields = ("converged", "status", "residual", "steps", "sigma_min", "grid_error", "pam_ok",
                      "ic_gain_w", "ic_gain_f", "output", "congestion", "n_grid")

    def __init__(self, params, state, n_grid, grid_error=float("nan"), t_w=0.0, t_f=0.0, what="Equilibrium"):
        self.params, self.state, self.n_grid, self.what = params, state, int(n_grid), what
        s, h = _state_dict(params, state.z)
        self.ell = np.linspace(0.0, 1.0, self.n_grid + 1)
        for k in ("x", "y", "L", "N", "theta", "u", "lam", "q", "wage", "r", "c", "A_w", "B_w", "Af_bar", "B_f"):
            setattr(self, k, np.asarray(s[k]))
        self.t_w = np.broadcast_to(np.asarray(t_w, float), self.ell.shape)
        self.t_f = np.broadcast_to(np.asarray(t_f, float), self.ell.shape)
        p = params
        self.V_w = np.asarray(p.b * s["x"] + s["A_w"] * (s["x"] - s["B_w"]) - p.h_bar * s["r"]) + self.t_w
        self.V_f = np.asarray(s["Af_bar"] * (s["ye"] - p.b - s["B_f"]) - s["c"]) + self.t_f
        self.residual = float(state.residual)
        self.steps = int(state.steps)
        self.sigma_min = float(state.sigma_min)
        self.grid_error = float(grid_error)
        code = int(state.code)
        finite = all(np.all(np.isfinite(getattr(self, k))) for k in ("x", "y", "L", "N"))
        self.pam_ok = bool(finite and np.all(np.diff(self.x) > 0) and (p.firms_homogeneous or np.all(np.diff(self.y) > 0))
                           and np.all(np.diff(self.A_w) > 0) and (p.firms_homogeneous or np.all(np.diff(self.Af_bar * np.asarray(s["A_bar"])) > 0)))
        ic = incentive_check(params, self)
        self.ic_gain_w, self.ic_gain_f = ic["gain_w"], ic["gain_f"]
        self.ic_worst_w, self.ic_worst_f = ic["worst_w"], ic["worst_f"]
        # discrete midpoint indifference implies a strict preference of node types of order h^2 * |A_w'| x';
        # a gain above 1e-9 relative is a genuine violation
        ic_ok = self.ic_gain_w <= 1e-9 and (p.firms_homogeneous or self.ic_gain_f <= 1e-9)
        if code != 0 or not finite:
            self.status = _status_name(code) if finite else "nonfinite"
        elif not self.pam_ok:
            self.status = "pam_violated"
        elif not ic_ok:
            self.status = "not_incentive_compatible"
        else:
            self.status = "successful"
        self.converged = self.status == "successful"
        self.output = float(aggregate_output(params, state))
        self.congestion = float(congestion_costs(params, state))

    @property
    def net_output(self):
        return self.output - self.congestion

    @property
    def urban_wage_premium(self):
        """log w(1) - log w(0): wage of the top location relative to the bottom one."""
        return float(np.log(self.wage[-1] / self.wage[0]))

    def summary(self) -> str:
        p = self.params
        head = format_kv([
            ("status", self.status), ("converged", self.converged), ("grid points n+1", self.n_grid + 1),
            ("max-norm residual", self.residual), ("Newton steps", self.steps),
            ("sigma_min(J)", self.sigma_min), ("grid error (n vs 2n)", self.grid_error),
            ("PAM (x', y', A_w', A_f' > 0)", self.pam_ok),
            ("max IC gain workers / firms", f"{self.ic_gain_w:.2e} / {self.ic_gain_f:.2e}"),
            ("output Y", self.output), ("congestion C", self.congestion), ("net output Y - C", self.net_output),
            ("1 - beta~", float(p.one_minus_beta_tilde)),
            ("urban wage premium log w(1)/w(0)", self.urban_wage_premium),
        ], title=f"Oh (2025) theory model: {self.what}")
        idx = np.unique(np.linspace(0, self.n_grid, 6).round().astype(int))
        rows = [[self.ell[i], self.x[i], self.y[i], self.L[i], self.N[i], self.u[i], self.wage[i], self.r[i], self.c[i]]
                for i in idx]
        tab = format_table(["ell", "x", "y", "L", "N", "u", "wage", "r", "c"], rows)
        return head + "\n" + tab


def _check_n(n_grid):
    if not isinstance(n_grid, (int, np.integer)) or n_grid < 4:
        raise ParameterError("n_grid", f"must be an integer >= 4; got {n_grid!r}")


def _check_params(params):
    if not isinstance(params, TheoryParams):
        raise ParameterError("params", f"must be a TheoryParams; got {type(params).__name__}")


def _grid_array(name, t, n1):
    if callable(t):
        t = t(jnp.linspace(0.0, 1.0, n1))
    t = np.asarray(t, float) if not is_traced(t) else t
    if np.ndim(t) not in (0, 1) or (np.ndim(t) == 1 and np.shape(t)[0] != n1):
        raise ParameterError(name, f"must be a scalar, a callable of ell, or an array of shape ({n1},) on the grid; got shape {np.shape(t)}")
    check_finite(name, t)
    return jnp.broadcast_to(_f64(t), (n1,))


def _refined_error(params, n_grid, state, t_w, t_f):
    """Max relative difference of (x, y, L, N) at the common nodes to the solve on the 2n grid."""
    n1 = n_grid + 1
    # warm start on the fine grid: interpolate (log L, log theta)
    z = np.asarray(state.z)
    fine = np.linspace(0, 1, 2 * n_grid + 1)
    coarse = np.linspace(0, 1, n1)
    z0 = jnp.concatenate([jnp.asarray(np.interp(fine, coarse, z[:n1])), jnp.asarray(np.interp(fine, coarse, z[n1:]))])
    twf = np.interp(fine, coarse, np.asarray(t_w)) if np.ndim(t_w) else t_w
    tff = np.interp(fine, coarse, np.asarray(t_f)) if np.ndim(t_f) else t_f
    st2 = _eq_state_jit(params, 2 * n_grid, t_w=twf, t_f=tff, z0=z0)
    if int(st2.code) != 0:
        return float("nan"), st2
    s1, _ = _state_dict(params, state.z)
    s2, _ = _state_dict(params, st2.z)
    err = 0.0
    for k in ("x", "y", "L", "N"):
        a, bb = np.asarray(s1[k]), np.asarray(s2[k])[::2]
        err = max(err, float(np.max(np.abs(a - bb) / np.maximum(np.abs(bb), 1e-300))))
    return err, st2


def solve_equilibrium(params: TheoryParams, *, n_grid: int = 100, method: str = "collocation",
                      refine: bool = True, t_w=0.0, t_f=0.0, z0=None, tol: float = 1e-11) -> TheoryResult:
    """Pure-assignment equilibrium of Section 2.2 as a two-point BVP in (x(ell), y(ell)), by collocation.

    Args:
        params: :class:`TheoryParams`.
        n_grid: number of intervals n (grid ell_i = i/n, i = 0..n).
        method: only ``"collocation"`` (trapezoid/midpoint-type scheme, module docstring).
        refine: also solve on the 2n grid and report ``grid_error``.
        t_w, t_f: location transfers to workers and firms (flow units; scalars, callables of ell or
            arrays of shape (n+1,)); default none. See :func:`solve_with_transfers`.
        z0: optional warm start (log L, log theta), shape (2(n+1),).

    Returns:
        :class:`TheoryResult` (``converged`` is False unless the solve converged, the assignment is
        PAM and every grid type's location is globally optimal on the grid).
    """
    _check_params(params)
    _check_n(n_grid)
    if method != "collocation":
        raise ParameterError("method", f"must be 'collocation'; got {method!r}")
    n1 = n_grid + 1
    t_w = _grid_array("t_w", t_w, n1)
    t_f = _grid_array("t_f", t_f, n1)
    st = _eq_state_jit(params, n_grid, t_w=t_w, t_f=t_f, z0=z0, tol=tol)
    gerr = float("nan")
    if refine and int(st.code) == 0:
        gerr, _ = _refined_error(params, n_grid, st, t_w, t_f)
    return TheoryResult(params, st, n_grid, gerr, t_w=t_w, t_f=t_f)


def incentive_check(params: TheoryParams, res, t_w=None, t_f=None) -> dict:
    """Global incentive compatibility on the grid: the largest gain of a grid worker type x_i (firm type
    y_i) from choosing another grid location ell_j instead of ell_i, using the full values (4)/(5) with
    the max{., 0} of a negative surplus, plus transfers. Returned relative to the mean |value|:
    ``gain_w``, ``gain_f`` (<= 0: every type's location is optimal), and ``worst_w``, ``worst_f``
    (the (i, j) of the largest gain)."""
    p = params
    tw = res.t_w if t_w is None else np.broadcast_to(np.asarray(t_w, float), res.x.shape)
    tf = res.t_f if t_f is None else np.broadcast_to(np.asarray(t_f, float), res.x.shape)
    x, y = np.asarray(res.x), np.asarray(res.y)
    A_w, B_w, r = np.asarray(res.A_w), np.asarray(res.B_w), np.asarray(res.r)
    b, hb = float(p.b), float(p.h_bar)
    Vw = b * x[:, None] + np.maximum(A_w[None, :] * (x[:, None] - B_w[None, :]), 0.0) - hb * r[None, :] + tw[None, :]
    gw = Vw - np.diag(Vw)[:, None]
    scale_w = np.mean(np.abs(np.diag(Vw))) + 1e-300
    iw = np.unravel_index(np.argmax(gw), gw.shape)
    Ab = np.ones_like(x) if p.A_bar is None else np.asarray(p.A_bar)
    Af, Bf, c = np.asarray(res.Af_bar), np.asarray(res.B_f), np.asarray(res.c)
    Vf = Af[None, :] * np.maximum(Ab[None, :] * y[:, None] - b - Bf[None, :], 0.0) - c[None, :] + tf[None, :]
    gf = Vf - np.diag(Vf)[:, None]
    scale_f = np.mean(np.abs(np.diag(Vf))) + 1e-300
    jf = np.unravel_index(np.argmax(gf), gf.shape)
    return dict(gain_w=float(gw[iw] / scale_w), gain_f=float(gf[jf] / scale_f),
                worst_w=(int(iw[0]), int(iw[1])), worst_f=(int(jf[0]), int(jf[1])))
