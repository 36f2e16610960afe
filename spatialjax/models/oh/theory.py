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

**Discretisation (collocation on cells).** Locations are n cells [ell_i, ell_{i+1}], ell_i = i/n.
Unknowns: log L_k and log theta_k per cell (2n); u_k, lambda_k, q_k and N_k = theta_k u_k L_k follow
from (7). The assignment follows from (1) integrated by the midpoint rule: P_i = int_0^{ell_i} L /
int_0^1 L at the nodes (P_0 = 0, P_n = 1, so x(0) = x_min, x(1) = x_max hold exactly), x(ell_i) =
Q_w^{-1}(P_i); the cell's own type is Q_w^{-1} at the centre's share; likewise y. Equations: at each
interior node the node type (the type on the boundary of two cells) is indifferent between the two
adjacent cells, ``[A_w] x(ell_i) - [A_w B_w] - h_bar [r] = 0`` (the discrete (9); [.] = difference
between the cells), the same for firms, and market clearing int L = M_w, int N = M_f (6): 2n
equations, solved by :func:`spatialjax.solver.solve_root` (Newton; implicit differentiation). The
scheme is second order: ``grid_error`` is the difference to the solve on 2n cells.

**Planner (Section 3.2, rho -> 0).** :func:`solve_planner` maximises the same discretisation of net
output int[(1-u) L x y - C_r(h_bar L) - C_v(N)] d ell directly (mass constraints built into the
unknowns; modified Newton ascent), and reports the residuals of the optimality conditions (A.12) -- condition (11)
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

**Checked against the paper (tests in tests/test_oh_theory.py).** (i) The bargaining wage (3)/(A.1)
at the local types reduces to (10). (ii) At the planner's optimum (A.12) -- (11) with C'' -- and the
second condition *without* the factor epsilon_lambda vanish at O(h^2) under refinement, while the
printed (A.13) keeps a residual of about 11 % of its left-hand side (the MODELS.md misprint,
confirmed). (iii) A.6 prints the nationwide wage as w(x_min) + int y(Q_w^{-1}(x)) dx; y is a function
of ell = Q_w(x), so it is y(Q_w(x)) (used here). (iv) Corollary 1's closed-form transfer slopes match
the transfers computed from the discrete sorting conditions at Hosios with b = 0; the location-only
transfers implement every first-order condition, but at the default economy they are *not* globally
incentive compatible, not even at Hosios: the lowest firm types would move to a cell where they do
not hire (negative surplus, the max{., 0} in (5)) and pay less overhead net of the transfer.
(v) Proposition 3 holds in aggregate (Phi > 0 everywhere in equilibrium, higher congestion, lower net
output); per type it holds at Hosios, but at beta = 0.1 the lowest ~4 % of worker types sit lower in
the equilibrium than in the optimum.

Values are flow values (rho V); Pi (a lump sum common to all workers) is omitted since it does not
affect any location choice.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri

import spatialjax  # noqa: F401  (float64)
from spatialjax.errors import ParameterError
from spatialjax.results import SOLVER_STATUSES, Result
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
    "planner_condition_residuals", "EqState", "IC_TOL", "compare_locations",
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
        if not is_traced(p):
            return _custom_icdf_jit(self, jnp.asarray(p, dtype=jnp.float64))
        return self._icdf_bisect(p)

    def _icdf_bisect(self, p):
        lo, hi = jax.lax.stop_gradient(self.lo), jax.lax.stop_gradient(self.hi)
        p0 = jax.lax.stop_gradient(p)
        x0 = jax.vmap(lambda pi: bisect(lambda x: self.cdf_fn(x) - pi, lo, hi, iters=60))(jnp.ravel(p0)).reshape(jnp.shape(p))
        x0 = jax.lax.stop_gradient(x0)
        # one Newton step at the converged quantile carries the implicit derivative
        return x0 - (self.cdf_fn(x0) - p) / self.pdf_fn(x0)


_custom_icdf_jit = eqx.filter_jit(lambda dist, p: dist._icdf_bisect(p))

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

    Defaults (an illustrative monthly economy, not the paper's calibration, which is of the quantitative
    model): rho = 0.004, delta = 0.028, A = 0.62 (Table 1), alpha = 0.5, beta = 0.1, b = 0, delta_v = 1
    (1 - beta~ = 0.0036), h_bar = 1, M_w = 1, M_f = 0.05 (unemployment 3-4 %), Q_w = U[1, 3],
    Q_f = U[1, 2], C_r, C_v isoelastic with H_w = 1, H_f = 0.05, eta_w = eta_f = 1. At these values the
    equilibrium is PAM and globally incentive compatible with density and wages rising in ell.

    A_bar (optional, array on the cells, shape (n,)) is local TFP Abar(ell) multiplying output
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

    def __init__(self, rho=0.004, delta=0.028, delta_v=1.0, A=0.62, alpha=0.5, beta=0.1, b=0.0,
                 h_bar=1.0, M_w=1.0, M_f=0.05, Q_w=None, Q_f=None, C_r=None, C_v=None, *,
                 H_w=1.0, eta_w=1.0, H_f=0.05, eta_f=1.0, A_bar=None, firms_homogeneous=False, **unknown):
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
        Q_w = Uniform(1.0, 3.0) if Q_w is None else Q_w
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


def _with_ends(v, lo, hi):
    """v with its first and last entries replaced by lo and hi (the boundary conditions, exactly)."""
    return jnp.concatenate([jnp.reshape(lo, (1,)).astype(v.dtype), v[1:-1], jnp.reshape(hi, (1,)).astype(v.dtype)])


def _local(p: TheoryParams, L, theta, h):
    """Everything on the grid of n cells (locations) given L_k > 0, theta_k > 0 (shape (n,)).

    Node types (shape (n+1,)): x_nodes = Q_w^{-1}(P_i), P_i = int_0^{ell_i} L / int_0^1 L (midpoint
    rule, so P_0 = 0, P_n = 1 and the boundary conditions hold exactly); cell types x = Q_w^{-1} at the
    cell centre's population share; likewise y."""
    lam = p.A * theta ** (1 - p.alpha)
    q = p.A * theta ** (-p.alpha)
    u = p.delta / (p.delta + lam)
    N = theta * u * L
    cumL = jnp.concatenate([jnp.zeros(1, L.dtype), jnp.cumsum(h * L)])
    cumN = jnp.concatenate([jnp.zeros(1, L.dtype), jnp.cumsum(h * N)])
    xn = _with_ends(p.Q_w.icdf(cumL / cumL[-1]), p.Q_w.lo, p.Q_w.hi)
    x = p.Q_w.icdf((cumL[:-1] + 0.5 * h * L) / cumL[-1])
    if p.firms_homogeneous:
        yn = jnp.full_like(xn, p.Q_f.lo)
        y = jnp.full_like(x, p.Q_f.lo)
    else:
        yn = _with_ends(p.Q_f.icdf(cumN / cumN[-1]), p.Q_f.lo, p.Q_f.hi)
        y = p.Q_f.icdf((cumN[:-1] + 0.5 * h * N) / cumN[-1])
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
    return dict(L=L, theta=theta, lam=lam, q=q, u=u, N=N, x=x, y=y, x_nodes=xn, y_nodes=yn, ye=ye, A_bar=Ab,
                A_w=A_w, B_w=B_w, Af_bar=Af_bar, B_f=B_f, r=r, c=c, wage=wage, cumL=cumL, cumN=cumN)


def _sorting_gaps(p: TheoryParams, s, t_w=0.0, t_f=0.0):
    """Sorting conditions at the interior nodes ell_i, i = 1..n-1 (shape (n-1,)): the gain of the node
    worker type x(ell_i) (firm type y(ell_i)), the type on the boundary between cells i-1 and i, from
    moving from cell i-1 to cell i, in flow units -- zero when it is indifferent (the discrete (9))."""
    d = lambda v: v[1:] - v[:-1]  # noqa: E731
    tw = jnp.broadcast_to(t_w, s["x"].shape)
    tf = jnp.broadcast_to(t_f, s["x"].shape)
    xi = s["x_nodes"][1:-1]
    gw = d(s["A_w"]) * xi - d(s["A_w"] * s["B_w"]) - p.h_bar * d(s["r"]) + d(tw)
    if p.firms_homogeneous:
        # homogeneous firms (y = y0): indifference across locations, A(ell) y0 in the value
        vf = s["Af_bar"] * (s["A_bar"] * s["y"] - p.b - s["B_f"]) - s["c"]
        gf = d(vf) + d(tf)
    else:
        yi = s["y_nodes"][1:-1]
        gf = (d(s["Af_bar"] * s["A_bar"]) * yi - d(s["Af_bar"]) * p.b - d(s["Af_bar"] * s["B_f"]) - d(s["c"]) + d(tf))
    return gw, gf


def _eq_residual(z, args):
    p, t_w, t_f = args
    n = z.shape[0] // 2
    h = 1.0 / n
    L, theta = jnp.exp(z[:n]), jnp.exp(z[n:])
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


def _initial_guess(p, n):
    L0 = jnp.full((n,), p.M_w)
    th0 = _theta_from_ratio(p, jnp.full((n,), p.M_f / p.M_w))
    return jnp.concatenate([jnp.log(L0), jnp.log(th0)])


class EqState(eqx.Module):
    """Traceable equilibrium state (for gradients): ``z`` = (log L, log theta) on the n cells and the solve's
    residual, status code (0 = converged; :class:`spatialjax.solver.RESULTS` order), steps, sigma_min."""

    z: Array
    residual: Array
    code: Array
    steps: Array
    sigma_min: Array


def equilibrium_state(params: TheoryParams, n_grid: int = 100, *, t_w=0.0, t_f=0.0, z0=None,
                      tol: float = 1e-11, max_steps: int = 100) -> EqState:
    """Solve the collocation system on ``n_grid`` cells (traceable; derivatives w.r.t. ``params`` by
    implicit differentiation through :func:`spatialjax.solver.solve_root`, NaN when the solve failed).
    Use :func:`solve_equilibrium` for the checked report object."""
    n = int(n_grid)
    if z0 is None:
        z0 = _initial_guess(params, n)
    t_w = jnp.broadcast_to(_f64(t_w), (n,))
    t_f = jnp.broadcast_to(_f64(t_f), (n,))
    res = solve_root(_eq_residual, z0, (params, t_w, t_f), tol=tol, max_steps=max_steps, linear_solver="dense")
    return EqState(z=res.value, residual=res.residual, code=res.result._value, steps=res.steps,
                   sigma_min=res.sigma_min)


_eq_state_jit = eqx.filter_jit(equilibrium_state)


def _state_dict(p, z):
    n = z.shape[0] // 2
    h = 1.0 / n
    return _local(p, jnp.exp(z[:n]), jnp.exp(z[n:]), h), h


@eqx.filter_jit
def _report_arrays(p, z):
    """Everything a report needs, in one compiled call (eager op-by-op evaluation compiles each op)."""
    s, h = _state_dict(p, z)
    s = dict(s)
    s["output"] = h * jnp.sum((1 - s["u"]) * s["L"] * s["x"] * s["ye"])
    s["congestion"] = h * jnp.sum(p.C_r.cost(p.h_bar * s["L"]) + p.C_v.cost(s["N"]))
    return s


def aggregate_output(params: TheoryParams, state) -> Array:
    """Y = int (1 - u) L x A(ell) y d ell (midpoint rule) at an :class:`EqState` or a result."""
    s, h = _state_dict(params, state.z)
    return h * jnp.sum((1 - s["u"]) * s["L"] * s["x"] * s["ye"])


def congestion_costs(params: TheoryParams, state) -> Array:
    """C = int [C_r(h_bar L) + C_v(N)] d ell (midpoint rule)."""
    s, h = _state_dict(params, state.z)
    return h * jnp.sum(params.C_r.cost(params.h_bar * s["L"]) + params.C_v.cost(s["N"]))


def net_output(params: TheoryParams, state) -> Array:
    """Net output Y - C, the planner's objective (Section 3.2)."""
    return aggregate_output(params, state) - congestion_costs(params, state)


def concentration_terms(params: TheoryParams, state) -> Array:
    """Phi(ell) = h_bar^2 C_r''(h_bar L) L' L + C_v''(N) N' N = h_bar r' L + c' N at the interior nodes
    (shape (n-1,)): the "changes in congestion costs" of Section 3.2. Zero at the optimum ((A.12); the
    printed (11) has C' for C''), positive in equilibrium ((A.16), Proposition 3)."""
    s, h = _state_dict(params, state.z)
    mid = lambda v: 0.5 * (v[1:] + v[:-1])  # noqa: E731
    d = lambda v: (v[1:] - v[:-1]) / h  # noqa: E731
    return params.h_bar * d(s["r"]) * mid(s["L"]) + d(s["c"]) * mid(s["N"])


# ----------------------------------------------------------------------------------------
# Result objects
# ----------------------------------------------------------------------------------------


def _status_name(code: int) -> str:
    """Name of a :class:`spatialjax.solver.RESULTS` code (the order of ``results.SOLVER_STATUSES``)."""
    code = int(code)
    return SOLVER_STATUSES[code] if 0 <= code < len(SOLVER_STATUSES) else "nonfinite"


class _Report(Result):
    """Shared report behaviour (:class:`spatialjax.results.Result`): ``status`` a vocabulary name,
    ``converged`` derived from it, ``summary()`` returns, ``str == summary()``, strict
    ``to_dict()``/``to_json()`` of ``_scalar_fields`` and ``_array_fields`` (NaN -> null)."""

    _array_fields: tuple = ()
    _scalar_fields: tuple = ()

    def _dict_fields(self) -> dict:
        return {k: getattr(self, k) for k in (*self._scalar_fields, *self._array_fields)}

    def _status_rows(self) -> list:
        rows = [("status", self.status), ("converged", self.converged)]
        return rows + ([("message", self.message)] if self.message else [])


# Incentive-compatibility tolerance (relative to the mean |value|): on the grid the cell types strictly
# prefer their own cell by O(h^2) A_w' x'; a gain above this is a genuine violation.
IC_TOL = 1e-9


class TheoryResult(_Report):
    """Equilibrium of the theory model on n cells (locations) [ell_i, ell_{i+1}], ell_i = i/n.

    Cell arrays (shape (n,), at the cell centres ``ell``): x, y (types), L, N, theta, u, lam, q,
    wage (10), r, c, A_w, B_w, Af_bar, B_f, V_w = rho V^u(x, ell) - Pi (4), V_f = rho Vbar(y, ell) (5),
    t_w, t_f (transfers). Node arrays (shape (n+1,), at ``ell_nodes``): x_nodes, y_nodes (the types
    indifferent between adjacent cells; x_nodes[0] = x_min, x_nodes[-1] = x_max, likewise y).
    Scalars (:mod:`spatialjax.results` protocol): status ("successful"; "rejected" when the collocation
    equations are solved but the assignment is not PAM or some cell type gains from another cell, with
    ``message`` saying which; or the solver's failure name), converged (derived from status), residual
    (max-norm of the collocation equations), steps, sigma_min,
    grid_error (max relative difference of x_nodes, y_nodes, L, N to the solve on the grid refined to
    2n; NaN if not computed), pam_ok, ic_gain_w, ic_gain_f (largest gain of any cell type from moving to
    another cell, relative to the mean |value|; <= 0 in an equilibrium), output Y, congestion C.
    """

    _array_fields = ("ell", "ell_nodes", "x", "y", "x_nodes", "y_nodes", "L", "N", "theta", "u", "lam", "q",
                     "wage", "r", "c", "A_w", "B_w", "Af_bar", "B_f", "V_w", "V_f", "t_w", "t_f")
    _scalar_fields = ("residual", "steps", "sigma_min", "grid_error", "pam_ok",
                      "ic_gain_w", "ic_gain_f", "output", "congestion", "n_grid")

    def __init__(self, params, state, n_grid, grid_error=float("nan"), t_w=0.0, t_f=0.0, what="Equilibrium"):
        self.params, self.state, self.n_grid, self.what = params, state, int(n_grid), what
        s = jax.tree.map(np.asarray, _report_arrays(params, state.z))
        self.ell_nodes = np.linspace(0.0, 1.0, self.n_grid + 1)
        self.ell = 0.5 * (self.ell_nodes[1:] + self.ell_nodes[:-1])
        for k in ("x", "y", "x_nodes", "y_nodes", "L", "N", "theta", "u", "lam", "q", "wage", "r", "c", "A_w",
                  "B_w", "Af_bar", "B_f", "A_bar", "ye"):
            setattr(self, k, np.asarray(s[k]))
        self.t_w = np.array(np.broadcast_to(np.asarray(t_w, float), self.ell.shape))
        self.t_f = np.array(np.broadcast_to(np.asarray(t_f, float), self.ell.shape))
        p = params
        b, hb = float(p.b), float(p.h_bar)
        self.V_w = b * self.x + self.A_w * (self.x - self.B_w) - hb * self.r + self.t_w
        self.V_f = self.Af_bar * (self.ye - b - self.B_f) - self.c + self.t_f
        self.residual = float(state.residual)
        self.steps = int(state.steps)
        self.sigma_min = float(state.sigma_min)
        self.grid_error = float(grid_error)
        code = int(state.code)
        finite = all(np.all(np.isfinite(getattr(self, k))) for k in ("x", "y", "L", "N", "r", "c"))
        hom = p.firms_homogeneous
        self.pam_ok = bool(finite and np.all(np.diff(self.x_nodes) > 0) and (hom or np.all(np.diff(self.y_nodes) > 0))
                           and np.all(np.diff(self.A_w) > 0) and (hom or np.all(np.diff(self.Af_bar * self.A_bar) > 0)))
        ic = incentive_check(params, self)
        self.ic_gain_w, self.ic_gain_f = ic["gain_w"], ic["gain_f"]
        self.ic_worst_w, self.ic_worst_f = ic["worst_w"], ic["worst_f"]
        ic_ok = self.ic_gain_w <= IC_TOL and (hom or self.ic_gain_f <= IC_TOL)
        if code != 0 or not finite:
            self.status = _status_name(code) if finite else "nonfinite"
            self.message = "" if finite else "non-finite values in the allocation (x, y, L, N, r or c)"
        elif not self.pam_ok:
            self.status = "rejected"
            self.message = ("PAM violated: x, y, A_w or A_f is not increasing in ell (the values lack increasing "
                            "differences, Proposition 1): a root of the first-order conditions, not an equilibrium")
        elif not ic_ok:
            self.status = "rejected"
            who = ("workers", self.ic_gain_w, self.ic_worst_w) if self.ic_gain_w > IC_TOL else \
                ("firms", self.ic_gain_f, self.ic_worst_f)
            self.message = (f"not incentive compatible: {who[0]} of cell {who[2][0]} gain {who[1]:.3g} (relative) "
                            f"by moving to cell {who[2][1]}; the first-order conditions hold but the location "
                            "choice is not globally optimal")
        else:
            self.status, self.message = "successful", ""
        self.output = float(s["output"])
        self.congestion = float(s["congestion"])

    @property
    def net_output(self):
        return self.output - self.congestion

    def wage_schedule(self, x):
        """Wage w(x, y(ell), ell) of a worker of type x matched with the local firm type in each cell, from
        the bargaining solution (3)/(A.1): (1-beta) b x + beta x y + (1-beta) A_w (x - B_w)
        - beta A_f (y - b - B_f), A_f = (rho/delta_v) Abar_f. ``x`` scalar or shape (n,); returns (n,).
        At x = x(ell) it is (10), ``self.wage``."""
        p = self.params
        beta, b = float(p.beta), float(p.b)
        A_f = float(p.rho) / float(p.delta_v) * self.Af_bar
        y = self.ye
        return ((1 - beta) * b * x + beta * x * y + (1 - beta) * self.A_w * (x - self.B_w)
                - beta * A_f * (y - b - self.B_f))

    @property
    def urban_wage_premium(self):
        """Elasticity of the wage w.r.t. population density across locations: the OLS slope of
        log w(ell) on log L(ell) (cells weighted by population). Positive: denser places pay more."""
        lw, lL, wgt = np.log(self.wage), np.log(self.L), self.L / self.L.sum()
        mL, mw = np.sum(wgt * lL), np.sum(wgt * lw)
        return float(np.sum(wgt * (lL - mL) * (lw - mw)) / np.sum(wgt * (lL - mL) ** 2))

    def summary(self) -> str:
        p = self.params
        head = format_kv(self._status_rows() + [
            ("cells n", self.n_grid),
            ("max-norm residual", self.residual), ("Newton steps", self.steps),
            ("sigma_min(J)", self.sigma_min), ("grid error (n vs 2n)", self.grid_error),
            ("PAM (x', y', A_w', A_f' > 0)", self.pam_ok),
            ("max IC gain workers / firms", f"{self.ic_gain_w:.2e} / {self.ic_gain_f:.2e}"),
            ("worst deviation worker / firm (cell -> cell)",
             f"{self.ic_worst_w[0]} -> {self.ic_worst_w[1]} / {self.ic_worst_f[0]} -> {self.ic_worst_f[1]}"),
            ("output Y", self.output), ("congestion C", self.congestion), ("net output Y - C", self.net_output),
            ("1 - beta~", float(p.one_minus_beta_tilde)),
            ("log w(top) - log w(bottom)", float(np.log(self.wage[-1] / self.wage[0]))),
            ("urban wage premium d log w / d log L", self.urban_wage_premium),
        ], title=f"Oh (2025) theory model: {self.what}")
        idx = np.unique(np.linspace(0, self.n_grid - 1, 6).round().astype(int))
        rows = [[self.ell[i], self.x[i], self.y[i], self.L[i], self.N[i], self.u[i], self.wage[i], self.r[i], self.c[i]]
                for i in idx]
        tab = format_table(["ell", "x", "y", "L", "N", "u", "wage", "r", "c"], rows)
        return head + "\n" + tab


def _check_n(n_grid):
    if isinstance(n_grid, bool) or not isinstance(n_grid, (int, np.integer)) or n_grid < 4:
        raise ParameterError("n_grid", f"must be an integer >= 4; got {n_grid!r}")


def _check_params(params):
    if not isinstance(params, TheoryParams):
        raise ParameterError("params", f"must be a TheoryParams; got {type(params).__name__}")


def _grid_array(name, t, n):
    if callable(t):
        t = t((np.arange(n) + 0.5) / n)
    if not is_traced(t):
        t = np.asarray(t, float)
    if np.ndim(t) not in (0, 1) or (np.ndim(t) == 1 and np.shape(t)[0] != n):
        raise ParameterError(name, f"must be a scalar, a callable of ell, or an array of shape ({n},) on the cells; got shape {np.shape(t)}")
    check_finite(name, t)
    return jnp.broadcast_to(_f64(t), (n,))


def _compare_refined(p, z1, z2):
    """Max relative difference between a solve on n cells and one on 2n cells: node types at the common
    nodes, cell densities against the mean of the two fine cells (both O(h^2))."""
    s1 = _report_arrays(p, jnp.asarray(z1))
    s2 = _report_arrays(p, jnp.asarray(z2))
    err = 0.0
    for k in ("x_nodes", "y_nodes"):
        a, bb = np.asarray(s1[k]), np.asarray(s2[k])[::2]
        err = max(err, float(np.max(np.abs(a - bb) / np.abs(bb))))
    for k in ("L", "N"):
        a, f = np.asarray(s1[k]), np.asarray(s2[k])
        bb = 0.5 * (f[::2] + f[1::2])
        err = max(err, float(np.max(np.abs(a - bb) / np.abs(bb))))
    return err


def _refine_z(z, n):
    z = np.asarray(z)
    return jnp.asarray(np.concatenate([np.repeat(z[:n], 2), np.repeat(z[n:], 2)]))


def solve_equilibrium(params: TheoryParams, *, n_grid: int = 100, method: str = "collocation",
                      refine: bool = True, t_w=0.0, t_f=0.0, z0=None, tol: float = 1e-11) -> TheoryResult:
    """Pure-assignment equilibrium of Section 2.2 as a two-point BVP in (x(ell), y(ell)), by collocation.

    Args:
        params: :class:`TheoryParams`.
        n_grid: number of cells n (locations [i/n, (i+1)/n]).
        method: only ``"collocation"`` (module docstring).
        refine: also solve on 2n cells and report ``grid_error`` (second order: about 4x smaller per doubling).
        t_w, t_f: location transfers to workers and firms (flow units added to rho V^u and rho Vbar;
            scalars, callables of ell, or arrays of shape (n,) on the cells). See :func:`solve_with_transfers`.
        z0: optional warm start (log L, log theta), shape (2n,).

    Returns:
        :class:`TheoryResult`; ``converged`` is False unless the solve converged, the assignment is PAM
        and every cell type's location is globally optimal among all cells.
    """
    _check_params(params)
    _check_n(n_grid)
    if method != "collocation":
        raise ParameterError("method", f"must be 'collocation'; got {method!r}")
    t_w = _grid_array("t_w", t_w, n_grid)
    t_f = _grid_array("t_f", t_f, n_grid)
    if z0 is not None:
        z0 = jnp.asarray(z0)
        if z0.shape != (2 * n_grid,):
            raise ParameterError("z0", f"must have shape ({2 * n_grid},); got {z0.shape}")
    st = _eq_state_jit(params, n_grid, t_w=t_w, t_f=t_f, z0=z0, tol=tol)
    gerr = float("nan")
    if refine and int(st.code) == 0:
        tw2 = jnp.repeat(t_w, 2) if np.ndim(t_w) else t_w
        tf2 = jnp.repeat(t_f, 2) if np.ndim(t_f) else t_f
        # piecewise-constant transfers are refined as such; smooth ones should be passed as callables
        st2 = _eq_state_jit(params, 2 * n_grid, t_w=tw2, t_f=tf2, z0=_refine_z(st.z, n_grid), tol=tol)
        if int(st2.code) == 0:
            gerr = _compare_refined(params, st.z, st2.z)
    return TheoryResult(params, st, n_grid, gerr, t_w=t_w, t_f=t_f)


def incentive_check(params: TheoryParams, res, t_w=None, t_f=None) -> dict:
    """Global incentive compatibility on the grid: the largest gain of a cell's worker type x_k (firm
    type y_k) from choosing another cell j instead of k, with the full values (4)/(5) (including the
    max{., 0} of a negative surplus) plus transfers. Returned relative to the mean |value|:
    ``gain_w``, ``gain_f`` (<= 0: every type's location is optimal), and ``worst_w``, ``worst_f``
    (the (k, j) of the largest gain)."""
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
    Ab = np.asarray(res.A_bar)
    Af, Bf, c = np.asarray(res.Af_bar), np.asarray(res.B_f), np.asarray(res.c)
    Vf = Af[None, :] * np.maximum(Ab[None, :] * y[:, None] - b - Bf[None, :], 0.0) - c[None, :] + tf[None, :]
    gf = Vf - np.diag(Vf)[:, None]
    scale_f = np.mean(np.abs(np.diag(Vf))) + 1e-300
    jf = np.unravel_index(np.argmax(gf), gf.shape)
    return dict(gain_w=float(gw[iw] / scale_w), gain_f=float(gf[jf] / scale_f),
                worst_w=(int(iw[0]), int(iw[1])), worst_f=(int(jf[0]), int(jf[1])))


# ----------------------------------------------------------------------------------------
# Planner (Section 3.2, Appendix A.4)
# ----------------------------------------------------------------------------------------


def _planner_z(v, p):
    """Map the unconstrained planner unknowns v = (a_1..a_{n-1}, c_1..c_{n-1}) to z = (log L, log theta):
    L = M_w e^a / int e^a and N = M_f e^c / int e^c (a_0 = c_0 = 0 fix the gauge), so that both mass
    constraints hold identically; theta from N/L by (7)."""
    n = v.shape[0] // 2 + 1
    h = 1.0 / n
    a = jnp.concatenate([jnp.zeros(1), v[:n - 1]])
    c = jnp.concatenate([jnp.zeros(1), v[n - 1:]])
    logL = a + jnp.log(p.M_w) - jnp.log(h * jnp.sum(jnp.exp(a)))
    logN = c + jnp.log(p.M_f) - jnp.log(h * jnp.sum(jnp.exp(c)))
    theta = _theta_from_ratio(p, jnp.exp(logN - logL))
    return jnp.concatenate([logL, jnp.log(theta)])


def _planner_objective(v, p):
    """Net output int[(1-u) L x y - C_r(h_bar L) - C_v(N)] (midpoint rule) at the planner unknowns v."""
    s, h = _state_dict(p, _planner_z(v, p))
    integrand = (1 - s["u"]) * s["L"] * s["x"] * s["ye"] - p.C_r.cost(p.h_bar * s["L"]) - p.C_v.cost(s["N"])
    return h * jnp.sum(integrand)


def _planner_foc(v, p):
    """Gradient of net output times n (the first-order conditions of the discretised planner)."""
    n = v.shape[0] // 2 + 1
    return jax.grad(_planner_objective)(v, p) * n


def _planner_v0(p, z):
    n = z.shape[0] // 2
    L = jnp.exp(z[:n])
    th = jnp.exp(z[n:])
    N = th * p.delta / (p.delta + p.A * th ** (1 - p.alpha)) * L
    return jnp.concatenate([jnp.log(L[1:] / L[0]), jnp.log(N[1:] / N[0])])


@eqx.filter_jit
def _planner_solve(p, v0, tol, max_steps=100):
    """Modified Newton ascent on net output: the Hessian's eigenvalues are replaced by -|lambda| (so each
    step is an ascent direction even away from the optimum), backtracking (Armijo) line search on the
    objective; converged when max |n grad| <= tol. Returns (EqState, max eigenvalue of n x Hessian at the
    last Newton iterate -- the point before the final, converged step)."""
    n = v0.shape[0] // 2 + 1
    f = lambda v: _planner_objective(v, p)  # noqa: E731
    grad = lambda v: jax.grad(f)(v) * n  # noqa: E731
    hess = lambda v: jax.jacfwd(grad)(v)  # noqa: E731

    def step(v):
        g, H = grad(v), hess(v)
        lam, V = jnp.linalg.eigh(0.5 * (H + H.T))
        lam_m = -jnp.maximum(jnp.abs(lam), 1e-10 * jnp.max(jnp.abs(lam)))
        d = -(V @ ((V.T @ g) / lam_m))
        f0, slope = f(v), jnp.dot(g, d) / n

        def ls_cond(c):
            s_, k = c
            # Armijo, with a round-off allowance: near the optimum the objective cannot resolve the gain
            return (f(v + s_ * d) < f0 + 1e-4 * s_ * slope - 64 * jnp.finfo(f0.dtype).eps * jnp.abs(f0)) & (k < 40)

        s_, _ = jax.lax.while_loop(ls_cond, lambda c: (0.5 * c[0], c[1] + 1), (jnp.asarray(1.0), 0))
        return v + s_ * d, jnp.stack([jnp.max(lam), jnp.min(jnp.abs(lam))])

    def cond(c):
        v, k, res, _ = c
        # at least one step, so that the Hessian (second-order check) is evaluated at the last iterate
        return ((res > tol) | (k == 0)) & (k < max_steps) & jnp.isfinite(res)

    def body(c):
        v, k, _, _ = c
        v, eig = step(v)
        return v, k + 1, jnp.max(jnp.abs(grad(v))), eig

    v, k, res, eig = jax.lax.while_loop(cond, body, (v0, 0, jnp.max(jnp.abs(grad(v0))), jnp.full((2,), jnp.nan)))
    code = jnp.where(~jnp.isfinite(res), 3, jnp.where(res <= tol, 0, 1))
    return (EqState(z=_planner_z(v, p), residual=res, code=code, steps=k, sigma_min=eig[1]), eig[0])


class PlannerResult(TheoryResult):
    """The planner's optimal assignment (Section 3.2) on the grid; same arrays as :class:`TheoryResult`
    (prices r, c and values are those the allocation would have as an equilibrium). Extra:
    ``hessian_max_eig`` (largest eigenvalue of the Hessian of n x net output in the unconstrained
    unknowns: < 0 for a strict local maximum) and ``conditions`` (:func:`planner_condition_residuals`).
    ``status`` is "successful" when the first-order conditions converged and the second-order condition
    holds ("not_a_maximum" otherwise); the planner's allocation need not be an equilibrium, so the
    incentive checks are reported (``ic_gain_w``/``ic_gain_f``) but not part of the status."""

    _scalar_fields = TheoryResult._scalar_fields + ("hessian_max_eig",)

    def __init__(self, params, state, n_grid, grid_error, hess):
        super().__init__(params, state, n_grid, grid_error, what="Planner's optimum (Section 3.2)")
        self.hessian_max_eig = float(hess)
        code = int(state.code)
        if code != 0:
            self.status, self.message = _status_name(code), ""
        elif not (self.hessian_max_eig < 0):
            self.status = "not_a_maximum"
            self.message = f"first-order conditions solved but the Hessian's max eigenvalue is {self.hessian_max_eig:.3g} >= 0"
        else:
            self.status, self.message = "successful", ""
        self.conditions = planner_condition_residuals(params, self)

    def summary(self) -> str:
        c = self.conditions
        extra = format_kv([
            ("Hessian max eigenvalue", self.hessian_max_eig),
            ("(A.12) max |Phi| / scale", c["A12"]),
            ("(A.13) corrected, max rel. residual", c["A13"]),
            ("(A.13) as printed (spurious eps_lambda)", c["A13_printed"]),
        ], title="Optimality conditions")
        return super().summary() + "\n" + extra


def planner_condition_residuals(params: TheoryParams, res) -> dict:
    """Residuals of the planner's conditions at an allocation (interior nodes, central differences
    of the cell values, so they vanish at O(h^2) at the optimum):

    * ``A12``: max |h_bar^2 C_r'' L' L + C_v'' N' N| / max(|h_bar^2 C_r'' L' L|, |C_v'' N' N|)
      ((A.12), i.e. (11) with C'' -- the printed (11) has C');
    * ``A13``: the second condition, (A.13) without the spurious factor epsilon_lambda (MODELS.md):
      (1-u)/(1-e(1-u)) ((1-e) y'/y - e u x'/x) x y
      = [C_r'' h_bar^2 L + u(1-u)/(1-e(1-u))^3 E x y (1 + C_r'' h_bar^2 L^2/(C_v'' N^2))] L'/L,
      E = e(1-e) - lambda'' theta/lambda' + e - 1 = e(1-e) for Cobb-Douglas; max |LHS - RHS| / max |LHS|;
    * ``A13_printed``: the same with the printed e u (1-u) in place of u (1-u).
    Valid for A_bar = 1 (no local TFP)."""
    p = params
    h = 1.0 / len(res.x)
    mid = lambda v: 0.5 * (np.asarray(v)[1:] + np.asarray(v)[:-1])  # noqa: E731
    d = lambda v: np.diff(np.asarray(v)) / h  # noqa: E731
    L, N, u = mid(res.L), mid(res.N), mid(res.u)
    x, y = np.asarray(res.x_nodes)[1:-1], np.asarray(res.y_nodes)[1:-1]
    hb = float(p.h_bar)
    Crpp = np.asarray(p.C_r.second(hb * jnp.asarray(L)))
    Cvpp = np.asarray(p.C_v.second(jnp.asarray(N)))
    tw = hb**2 * Crpp * d(res.L) * L
    tf = Cvpp * d(res.N) * N
    A12 = float(np.max(np.abs(tw + tf)) / max(np.max(np.abs(tw)), np.max(np.abs(tf)), 1e-300))
    e = float(p.eps_lambda)
    E = e * (1 - e)
    den = 1 - e * (1 - u)
    lhs = (1 - u) / den * ((1 - e) * d(res.y) / y - e * u * d(res.x) / x) * x * y
    corr = 1 + Crpp * hb**2 * L**2 / (Cvpp * N**2)
    rhs = (Crpp * hb**2 * L + u * (1 - u) / den**3 * E * x * y * corr) * d(res.L) / L
    rhs_p = (Crpp * hb**2 * L + e * u * (1 - u) / den**3 * E * x * y * corr) * d(res.L) / L
    scale = max(np.max(np.abs(lhs)), 1e-300)
    return dict(A12=A12, A13=float(np.max(np.abs(lhs - rhs)) / scale),
                A13_printed=float(np.max(np.abs(lhs - rhs_p)) / scale))


def solve_planner(params: TheoryParams, *, n_grid: int = 100, refine: bool = True, start=None,
                  tol: float = 1e-10) -> PlannerResult:
    """The planner's optimal assignment (Section 3.2, the rho -> 0 limit): maximise net output
    int [(1-u) L x y - C_r(h_bar L) - C_v(N)] d ell over increasing x(ell), y(ell) subject to (1), (7) and
    the boundary conditions, on the same cells and quadrature as :func:`solve_equilibrium` (direct
    maximisation: the mass constraints are built into the unknowns; modified Newton ascent with a
    line search on net output, converged when the gradient's max-norm is below ``tol``). Conditions (A.12) and the corrected (A.13)
    are reported in ``result.conditions`` (they hold up to O(h^2)).

    Args:
        start: optional :class:`TheoryResult` on the same grid to start from (e.g. the equilibrium).
    """
    _check_params(params)
    _check_n(n_grid)
    if params.A_bar is not None or params.firms_homogeneous:
        raise ParameterError("params", "solve_planner covers the two-sided model of Section 3.2 (A_bar = None, heterogeneous firms)")
    z0 = _initial_guess(params, n_grid) if start is None else jnp.asarray(start.state.z)
    st, hess = _planner_solve(params, _planner_v0(params, z0), tol)
    gerr = float("nan")
    if refine and int(st.code) == 0:
        st2, _ = _planner_solve(params, _planner_v0(params, _refine_z(st.z, n_grid)), tol)
        if int(st2.code) == 0:
            gerr = _compare_refined(params, st.z, st2.z)
    return PlannerResult(params, st, n_grid, gerr, hess)


# ----------------------------------------------------------------------------------------
# Spatial transfers (Proposition 3, Corollary 1)
# ----------------------------------------------------------------------------------------


def transfers(params: TheoryParams, planner: TheoryResult) -> dict:
    """Location transfers t_w(ell), t_f(ell) (flow units, added to rho V^u and rho Vbar; one value per
    cell) that make the planner's allocation satisfy the workers' and firms' sorting conditions:
    t_w(cell i) - t_w(cell i-1) = -(gain of the node type x(ell_i) from moving from cell i-1 to cell i at
    the planner's allocation), likewise t_f; the constants t_w^0, t_f^0 make each side's transfers sum
    to zero (int t_w L = 0, int t_f N = 0: the budget balances side by side).

    Returns dict(ell, t_w, t_f) (shape (n,)); decreasing in ell when Proposition 3 holds."""
    tw, tf = _transfer_arrays(params, jnp.asarray(planner.state.z))
    return dict(ell=np.asarray(planner.ell), t_w=np.asarray(tw), t_f=np.asarray(tf))


@eqx.filter_jit
def _transfer_arrays(p, z):
    s, h = _state_dict(p, z)
    gw, gf = _sorting_gaps(p, s)
    tw = jnp.concatenate([jnp.zeros(1), jnp.cumsum(-gw)])
    tf = jnp.concatenate([jnp.zeros(1), jnp.cumsum(-gf)])
    tw = tw - jnp.sum(tw * s["L"]) / jnp.sum(s["L"])
    tf = tf - jnp.sum(tf * s["N"]) / jnp.sum(s["N"])
    return tw, tf


def solve_with_transfers(params: TheoryParams, t_w, t_f, *, n_grid: int | None = None, start=None,
                         refine: bool = False) -> TheoryResult:
    """Equilibrium with location transfers t_w(ell) to workers and t_f(ell) to firms (arrays on the cells,
    shape (n,), or callables of ell). Solved from the uniform cold start (or ``start``); the result's
    ``ic_gain_w``/``ic_gain_f`` report global incentive compatibility *with* the transfers."""
    _check_params(params)
    if n_grid is None:
        if np.ndim(t_w) == 1:
            n_grid = len(t_w)
        else:
            raise ParameterError("n_grid", "give n_grid when t_w is not an array on the cells")
    z0 = None if start is None else jnp.asarray(start.state.z)
    r = solve_equilibrium(params, n_grid=n_grid, t_w=t_w, t_f=t_f, z0=z0, refine=refine)
    r.what = "Equilibrium with spatial transfers (Corollary 1)"
    return r


def corollary1_transfers(params: TheoryParams, planner: TheoryResult) -> dict:
    """Corollary 1's closed-form transfer slopes at the planner's allocation (Hosios condition
    epsilon_lambda = 1 - beta and b = 0; rho -> 0), at the interior nodes:
    t_w'(ell) = -(1-beta)(1-u)u/(1-(1-beta)(1-u)) y x',  t_f'(ell) = -beta (1-u) (L/V) x y',
    next to the slopes of :func:`transfers` (keys ``tw_slope``, ``tf_slope``, ``tw_slope_paper``,
    ``tf_slope_paper``; ``hosios`` says whether the corollary's assumptions hold)."""
    p = params
    h = 1.0 / len(planner.x)
    mid = lambda v: 0.5 * (np.asarray(v)[1:] + np.asarray(v)[:-1])  # noqa: E731
    d = lambda v: np.diff(np.asarray(v)) / h  # noqa: E731
    t = transfers(p, planner)
    beta = float(p.beta)
    u, L, N = mid(planner.u), mid(planner.L), mid(planner.N)
    x, y = planner.x_nodes[1:-1], planner.y_nodes[1:-1]
    tw_p = -(1 - beta) * (1 - u) * u / (1 - (1 - beta) * (1 - u)) * y * d(planner.x)
    tf_p = -beta * (1 - u) * (L / N) * x * d(planner.y)
    return dict(tw_slope=d(t["t_w"]), tf_slope=d(t["t_f"]), tw_slope_paper=tw_p, tf_slope_paper=tf_p,
                hosios=bool(abs(float(p.eps_lambda) - (1 - beta)) < 1e-12 and float(p.b) == 0.0))


# ----------------------------------------------------------------------------------------
# Neoclassical local labour markets (Proposition 4, Appendix A.6)
# ----------------------------------------------------------------------------------------


class NeoclassicalResult(_Report):
    """Neoclassical benchmark on the cells: ell, x, y, L, N, wage (of the cell's type), r, c, the
    nationwide (Becker) wage w_becker at x, and status (the Newton solve's)/converged/residual/steps,
    density_spread (max L / min L - 1) and wage_gap (max |w - w_becker| / max w)."""

    _array_fields = ("ell", "x", "y", "L", "N", "wage", "w_becker", "r", "c")
    _scalar_fields = ("residual", "steps", "density_spread", "wage_gap")

    def summary(self) -> str:
        return format_kv(self._status_rows() + [("max-norm residual", self.residual),
                          ("Newton steps", self.steps),
                          ("density spread max L / min L - 1", self.density_spread),
                          ("max |w - w_Becker| / max w", self.wage_gap)],
                         title="Oh (2025) neoclassical local labour markets (Proposition 4)")


def _neo_residual(v, p):
    n = v.shape[0] // 3
    h = 1.0 / n
    L, N, W = jnp.exp(v[:n]), jnp.exp(v[n:2 * n]), v[2 * n:]
    cumL = jnp.concatenate([jnp.zeros(1), jnp.cumsum(h * L)])
    cumN = jnp.concatenate([jnp.zeros(1), jnp.cumsum(h * N)])
    x = p.Q_w.icdf((cumL[:-1] + 0.5 * h * L) / cumL[-1])
    y = p.Q_f.icdf((cumN[:-1] + 0.5 * h * N) / cumN[-1])
    r = p.C_r.marginal(p.h_bar * L)
    c = p.C_v.marginal(N)
    xbar, ybar = 0.5 * (x[1:] + x[:-1]), 0.5 * (y[1:] + y[:-1])
    # local wage schedule supporting firms' choice of x in each cell (A.20): w(x, k) = W_k + y_k (x - x_k)
    wk = (W[1:] + y[1:] * (xbar - x[1:])) - (W[:-1] + y[:-1] * (xbar - x[:-1])) - p.h_bar * jnp.diff(r)
    fm = jnp.diff(x) * ybar - jnp.diff(W) - jnp.diff(c)
    w_min = W[0] + y[0] * (p.Q_w.lo - x[0])
    return jnp.concatenate([wk / h, fm / h, jnp.log(L) - jnp.log(N),
                            jnp.stack([cumL[-1] / p.M_w - 1.0, w_min - p.b * p.Q_w.lo])])


_neo_solve = eqx.filter_jit(lambda p, v: solve_root(_neo_residual, v, p, tol=1e-11, linear_solver="dense"))


def neoclassical_benchmark(params: TheoryParams, *, n_grid: int = 100, seed_tilt: float = 0.5) -> NeoclassicalResult:
    """Pure-assignment equilibrium with frictionless local labour markets (Section 3.3, A.6): firms of
    y(ell) hire x(ell) at the local wage schedule w(x, ell) with w_x = y(ell) (A.20); workers maximise
    w(x, ell) - h_bar r(ell), firms x(ell) y - w(x(ell), ell) - c(ell); every worker is employed, so local
    labour-market clearing is L = N (requires M_w = M_f). The lowest wage is normalised to
    w(x_min) = b x_min. On the cells, the sorting conditions hold for the average type of two adjacent
    cells (so that summing them gives h_bar [r] + [c] = 0 exactly).

    Solved by Newton from a *tilted* start (L(ell) proportional to 1 + seed_tilt (ell - 1/2)), so that the
    flat density of Proposition 4 (2) is found, not assumed. ``w_becker`` is the wage of a single
    nationwide market, w(x) = w(x_min) + int_{x_min}^x y(Q_w(s)) ds with firms matched by rank (A.6
    prints y(Q_w^{-1}(x)); y is a function of ell = Q_w(x)), by 4000-point quadrature."""
    _check_params(params)
    _check_n(n_grid)
    if not is_traced(params.M_w) and abs(float(params.M_w) - float(params.M_f)) > 1e-12 * float(params.M_w):
        raise ParameterError("M_f", f"Proposition 4 is stated for M_w = M_f; got M_w = {float(params.M_w)}, M_f = {float(params.M_f)}")
    n = n_grid
    ell = (np.arange(n) + 0.5) / n
    L0 = float(params.M_w) * (1 + seed_tilt * (ell - 0.5))
    W0 = float(params.b) * float(params.Q_w.lo) + ell
    v0 = jnp.concatenate([jnp.log(jnp.asarray(L0)), jnp.log(jnp.asarray(L0)), jnp.asarray(W0)])
    res = _neo_solve(params, v0)
    v = res.value
    out = NeoclassicalResult()
    p = params
    L, N, W = np.exp(np.asarray(v[:n])), np.exp(np.asarray(v[n:2 * n])), np.asarray(v[2 * n:])
    h = 1.0 / n
    cumL = np.concatenate([[0.0], np.cumsum(h * L)])
    cumN = np.concatenate([[0.0], np.cumsum(h * N)])
    out.ell, out.L, out.N, out.wage = ell, L, N, W
    out.x = np.asarray(p.Q_w.icdf(jnp.asarray((cumL[:-1] + 0.5 * h * L) / cumL[-1])))
    out.y = np.asarray(p.Q_f.icdf(jnp.asarray((cumN[:-1] + 0.5 * h * N) / cumN[-1])))
    out.r = np.asarray(p.C_r.marginal(p.h_bar * jnp.asarray(L)))
    out.c = np.asarray(p.C_v.marginal(jnp.asarray(N)))
    xs = np.linspace(float(p.Q_w.lo), float(p.Q_w.hi), 4001)
    ys = np.asarray(p.Q_f.icdf(p.Q_w.cdf(jnp.asarray(xs))))
    wb = float(p.b) * float(p.Q_w.lo) + np.concatenate([[0.0], np.cumsum(0.5 * (ys[1:] + ys[:-1]) * np.diff(xs))])
    out.w_becker = np.interp(out.x, xs, wb)
    out.residual, out.steps = float(res.residual), int(res.steps)
    out.status = res.status
    out.density_spread = float(L.max() / L.min() - 1)
    out.wage_gap = float(np.max(np.abs(W - out.w_becker)) / np.max(np.abs(W)))
    return out


# ----------------------------------------------------------------------------------------
# Observational equivalence (Proposition 5, Appendix A.8)
# ----------------------------------------------------------------------------------------


class OneSidedResult(_Report):
    """The one-sided sorting economy built from a two-sided equilibrium (Proposition 5): ``params``
    (homogeneous firms y0 = Q_f.lo, local TFP A_bar(ell) = y(ell)/y0, business-services marginal cost
    tabulated from the cross-section), its forward equilibrium ``equilibrium`` (a :class:`TheoryResult`),
    and the largest relative gaps of the cross-sectional observables (wages w(ell), densities L(ell),
    unemployment u(ell)) to the two-sided economy: ``gap_wage``, ``gap_L``, ``gap_u``. ``status``,
    ``message`` and ``residual`` are those of the one-sided forward equilibrium."""

    _scalar_fields = ("gap_wage", "gap_L", "gap_u")

    @property
    def status(self) -> str:
        return self.equilibrium.status

    @property
    def message(self) -> str:
        return self.equilibrium.message

    @property
    def residual(self) -> float:
        return self.equilibrium.residual

    def summary(self) -> str:
        return format_kv(self._status_rows() + [("max-norm residual", self.residual), ("max rel. gap wage", self.gap_wage),
                          ("max rel. gap L", self.gap_L), ("max rel. gap u", self.gap_u)],
                         title="Proposition 5: one-sided sorting economy with the same cross-section")


def one_sided_equivalent(params: TheoryParams, eq: TheoryResult) -> OneSidedResult:
    """Build the one-sided sorting model (Section 3.4: heterogeneous workers, homogeneous firms of type
    y0 = y_min, exogenous location productivity A_bar(ell)) that fits the two-sided equilibrium ``eq``'s
    cross-section, as in A.8: A_bar(ell) = y(ell)/y0 so that the wage (12) is unchanged; the same worker
    distribution and housing cost (so worker sorting is unchanged); and the business-services cost
    backed out so that homogeneous firms are indifferent across locations at the observed firm
    densities: C_v'(N(ell)) = Abar_f (A_bar y0 - b - B_f) - kappa, kappa such that C_v'(N(0)) = c(0).
    This needs N(ell) strictly increasing (so that the marginal cost is a function of N) and the
    backed-out marginal cost non-decreasing (convex C_v); otherwise ParameterError.

    The one-sided economy is then solved *forward* from a cold start (:func:`solve_equilibrium`), and
    the cross-sections compared."""
    if not eq.converged:
        raise ParameterError("eq", f"must be a converged equilibrium; got status {eq.status}")
    y0 = float(params.Q_f.lo)
    Ab = np.asarray(eq.y) / y0
    vf = np.asarray(eq.Af_bar) * (Ab * y0 - float(params.b) - np.asarray(eq.B_f))
    c_os = vf - vf[0] + np.asarray(eq.c)[0]
    if np.any(np.diff(eq.N) <= 0):
        raise ParameterError("eq", "firm density N(ell) must be strictly increasing to back out a business-services cost C_v(N)")
    Cv = TabulatedMarginalCost(np.asarray(eq.N), c_os)
    p1 = params.replace(A_bar=Ab, firms_homogeneous=True, C_v=Cv)
    r = solve_equilibrium(p1, n_grid=eq.n_grid, refine=False)
    r.what = "one-sided sorting economy (Proposition 5)"
    out = OneSidedResult()
    out.params, out.equilibrium = p1, r
    out.gap_wage = float(np.max(np.abs(r.wage / eq.wage - 1)))
    out.gap_L = float(np.max(np.abs(r.L / eq.L - 1)))
    out.gap_u = float(np.max(np.abs(r.u / eq.u - 1)))
    return out


def compare_locations(eq: TheoryResult, planner: TheoryResult, n_types: int = 201) -> dict:
    """Where each type locates in the equilibrium vs the planner's allocation (Proposition 3's per-type
    claim, "each worker and each firm chooses a higher-ell location than the planner would designate").
    Type x sits at ell(x) with int_0^ell L = M_w Q_w(x) (piecewise-linear in ell on the cells); returns
    the shares of worker and firm types (on ``n_types`` equally spaced population ranks in (0, 1)) whose
    equilibrium location is strictly higher: ``share_w``, ``share_f``, and the rank vectors ``gap_w``,
    ``gap_f`` = ell_eq - ell_planner."""
    ranks = np.linspace(0, 1, n_types)[1:-1]

    def loc(res, dens):
        h = 1.0 / len(dens)
        cum = np.concatenate([[0.0], np.cumsum(h * dens)])
        return np.interp(ranks, cum / cum[-1], np.asarray(res.ell_nodes))

    gw = loc(eq, eq.L) - loc(planner, planner.L)
    gf = loc(eq, eq.N) - loc(planner, planner.N)
    return dict(share_w=float(np.mean(gw > 0)), share_f=float(np.mean(gf > 0)), gap_w=gw, gap_f=gf, ranks=ranks)
