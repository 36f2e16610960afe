"""Counterfactuals, welfare and the welfare-gradient map for the calibrated Jiao-Tian economy.

Jiao & Tian (2024), Sections 5.3-5.4 and Appendices H-K (``shared/seeds/jiao_tian_2024_geographic_
fragmentation.txt``; cleaned equations in ``shared/MODELS.md`` §1). Everything starts from a
calibrated :class:`Baseline` (the estimation layer builds it with ``jiao_tian_calibration.
calibrated_baseline``; :func:`baseline_from_allocation` builds one by the inversions (35)-(36)).

Counterfactuals (each a :class:`CounterfactualResult`):

* :func:`no_internet` (Section 5.3, Tables 7-8): log tau~_nc = log tau_nc - delta^I q_n q_c, n != c
  (the printed ``exp(log(tau - delta q))`` is a misprint, MODELS.md). Reported as the *effect of the
  internet*, i.e. baseline (with internet) minus counterfactual (without), the paper's sign:
  the Table 7 analog is the OLS slope of that change in the high-skill share
  L^m_n / (L^m_n + L^p_n) on log baseline city size log(L^m_n + L^p_n) (the paper uses log 1980
  labour supply, which a one-period replica does not have), and the welfare changes of workers and
  managers, with the Table 8 decomposition (:func:`welfare_decomposition`).
* :func:`sensitivity_gamma` (Appendix H, Table 10): gamma changed, T_n re-inverted by (36) each time
  so that the baseline allocation stays the equilibrium; then the no-internet counterfactual.
* :func:`sensitivity_delta_I` (Appendix I, Table 11): the baseline tau_nc (data) is unchanged; only the
  internet term that the counterfactual removes, delta^I q_n q_c, uses the new delta^I.
* :func:`digital_divide` (Section 5.4, Figure 8): q_n of under-served cities (below a quantile)
  raised to a target; reported as counterfactual minus baseline.
* ``epsilon > 0`` (Appendix K, Table 12): elastic housing supply H_n = Hbar_n p_n^eps (66), so
  p_n = [(1-alpha) W_n / Hbar_n]^(1/(1+eps)) (67), with Hbar_n recalibrated so that the baseline
  stays the equilibrium (Hbar_n = (1-alpha) W_n / p_n^(1+eps), the level version of the paper's
  ratio formula). Residual :func:`elastic_residual`, solved by :func:`spatialjax.solver.solve_root`
  with the Jacobian :func:`elastic_jacobian` reassembled from ``jt.jacobian``; eps = 0 is the
  inelastic model exactly.

Continuation. A counterfactual with shock Delta log tau is followed along
log tau(s) = log tau + s Delta log tau, s = 0 -> 1, by warm-started solves on a grid of s (secant
predictor; a step that fails is halved, at most ``max_halvings`` times). At every step the
degeneracy diagnostic is checked: the solve must converge to a regular root (``status``
"successful", i.e. sigma_min(J) not negligible), move y by at most ``max_jump`` (default 1) in
max-norm (log units) from the previous point (a continuous branch passes this test once the step
is small enough; a jump to another equilibrium at a finite distance does not), and keep min_n L^m_n above ``degeneracy_rtol`` times its
baseline value (a cold solve of the shocked economy can land on the all-managers-in-one-city
equilibrium). A branch that folds, jumps or degenerates is reported with that status and the s it
reached, never replaced by a cold solve's other equilibrium. When the halvings run out on solver
failures, the branch is followed from the last accepted point by pseudo-arclength
(``continuation.pseudo_arclength``); if it turns back before the failed s, the status is "fold",
``fold_s`` the turning point and ``message`` "fold at s = ..." (the us722 replica's digital-divide
policy folds at s = 0.0033: one upgraded city's manager block, ``log L^m``, is the null direction).

Welfare: the common log real incomes log U_w = log w_n - (1-alpha) log p_n (16) and
log U_m = log E[pi_n] - (1-alpha) log p_n (14); changes are reported in percent,
(exp(Delta log U) - 1) * 100, and in log points, 100 Delta log U (the unit of the paper's Tables 8,
10, 11: "changes in log real consumption").

Welfare-gradient map (:func:`welfare_gradient`): d log U_w / d q_n and d log U_m / d q_n for all n
in one reverse pass (``jax.jacrev`` of the two outputs through a warm ``jt.solve`` at the baseline:
implicit differentiation), with log tau_nc(q) = log tau_nc + delta^I (q_n q_c - q0_n q0_c), i.e.
tau(q) = exp(lambda + delta^d log d + delta^I q q') when tau came from (29) with residual lambda.

Headline gradients (:func:`headline_gradients`): derivatives of a counterfactual's headline
numbers (slope, workers' and managers' welfare change) with respect to theta, gamma, delta^I through
the calibration map: the baseline allocation (w, L^m) is data and held fixed; the openness
tau_nc^(-theta) that the link counts identify by (33) is held fixed (so log tau scales as 1/theta);
T_n is re-inverted by (36) and H_n by (35); the counterfactual equilibrium is differentiated
implicitly at the root the continuation found (implicit function theorem, one LU of dF/dy). The delta-method standard error is sqrt(g' V g) with the estimates'
covariance V (ordered as ``param_names``; a parameter the number does not depend on, e.g. delta^d,
has g = 0).
"""

from __future__ import annotations

import math
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import spatialjax  # noqa: F401  (x64)
from spatialjax import atomic
from spatialjax.errors import ParameterError
from spatialjax.models import jiao_tian as jt
from spatialjax.solver import solve_root
from spatialjax.tables import format_table

__all__ = [
    "Baseline", "CounterfactualResult", "WelfareGradientResult", "CONFIG_KEYS", "PAPER", "DATA_LABEL",
    "baseline_from_allocation", "synthetic_baseline", "recalibrate", "no_internet", "sensitivity_gamma",
    "sensitivity_delta_I", "digital_divide", "run_counterfactual", "welfare_decomposition", "elastic_residual",
    "elastic_jacobian", "solve_elastic", "elastic_params", "welfare_gradient", "headline_gradients",
    "delta_method_se", "paper_comparison", "run_all", "validate_config", "ols_slope", "ols_slope_fe", "digital_divide_q",
]

F64 = jnp.float64
DATA_LABEL = "model-generated on real US geography"
HEADLINE_PARAMS = ("theta", "gamma", "delta_I")
HEADLINES = ("slope", "workers_pct", "managers_pct")

# The paper's printed numbers (US data, N = 722 commuting zones). Welfare in percent; the paper's
# Tables 8, 10, 11 say "changes in log real consumption", i.e. 100 * Delta log U.
PAPER = {
    "no_internet": dict(slope=0.0031, slope_state_fe=0.0030, workers=3.62, managers=3.39,
                        source="Table 7 col. (1) (slope); Section 5.3 text (welfare)"),
    "decomposition": dict(direct_workers=2.93, direct_managers=2.89, reorg_workers=0.69, reorg_managers=0.50,
                          source="Table 8"),
    "gamma": {0.005: (0.0030, 3.62, 3.39), 0.010: (0.0031, 3.62, 3.39), 0.015: (0.0032, 3.62, 3.39)},
    "delta_I": {-0.005: (0.0018, 2.03, 1.89), -0.010: (0.0031, 3.62, 3.39), -0.015: (0.0037, 4.60, 4.31)},
    "digital_divide": dict(slope=0.0085, workers=0.27, managers=0.27, source="Figure 8 notes; Section 5.4 text"),
    "elastic_housing": dict(slope=0.0039, slope_state_fe=0.0037, workers=3.67, managers=3.89, epsilon=0.135,
                            source="Table 12 col. (1); Appendix K text"),
}

# key -> (type, default, description). ``run_all`` rejects unknown keys and wrong types.
CONFIG_KEYS: dict[str, tuple[Any, Any, str]] = {
    "no_internet": (bool, True, "run the no-internet counterfactual (Section 5.3, Tables 7-8)"),
    "steps": (int, 4, "continuation steps along the shock s in [0, 1] (each halved on failure)"),
    "sensitivity_gamma": (list, [0.005, 0.010, 0.015], "gamma values of the Table 10 analog ([] to skip)"),
    "sensitivity_delta_I": (list, [-0.005, -0.010, -0.015], "delta^I values of the Table 11 analog ([] to skip)"),
    "digital_divide": (bool, True, "run the digital-divide policy (Section 5.4)"),
    "digital_divide_quantile": (float, 0.25, "cities with q_n below this quantile of q are under-served"),
    "digital_divide_target": ((float, type(None)), None,
                              "quality the under-served cities are raised to (None: the median of q)"),
    "elastic_housing_epsilon": ((float, type(None)), 0.135,
                                "housing supply elasticity of Appendix K for an extra no-internet row "
                                "(None or 0 to skip)"),
    "welfare_gradient": (bool, True, "compute the welfare-gradient map d log U / d q_n"),
    "fd_check_cities": (int, 3, "cities (largest gradients) whose map entries are checked by central "
                                "finite differences"),
    "fd_step": (float, 1e-4, "finite-difference step in q_n"),
    "headline_gradients": (bool, True, "gradients of headline numbers w.r.t. theta, gamma, delta_I "
                                       "(and delta-method SEs when cov is given)"),
    "plots": (bool, True, "write the PNG plots"),
    "data_label": (str, DATA_LABEL, "label of the data in titles and tables"),
}


# ---------------------------------------------------------------------------------------
# Baseline
# ---------------------------------------------------------------------------------------


def _a(x):
    return jnp.asarray(x, F64)


def _arr_params(p: jt.Params, **changes) -> jt.Params:
    """The same Params with every leaf a float64 array (so jit does not specialise on values)."""
    d = {f: getattr(p, f) for f in ("alpha", "beta", "theta", "gamma", "T", "tau", "H", "Lm_total", "Lp_total")}
    d.update(changes)
    return jt.Params(**{k: _a(v) for k, v in d.items()})


@dataclass
class Baseline:
    """A calibrated economy: what every counterfactual starts from.

    Attributes:
        params: calibrated :class:`jt.Params` (T, H inverted so that the data allocation is the
            equilibrium, or solved in full-solution mode).
        sol: the baseline equilibrium (a converged :class:`jt.Solution`).
        q: internet quality q_n, shape (N,).
        dist: distances d_nc >= 1, shape (N, N).
        log_lam: pair costs lambda_nc of (29) not explained by distance/internet, (N, N) or scalar.
        delta_d, delta_I: distance and internet elasticities of (29).
        names, lat, lon: optional city names and coordinates (degrees) for tables and the map.
        ids: optional city ids (default 0..N-1).
        states: optional state of each city (any labels): the slope with state fixed effects
            (Tables 7 and 12, column (2)) is computed when given, NaN otherwise.
    """

    params: jt.Params
    sol: jt.Solution
    q: jax.Array
    dist: jax.Array
    log_lam: jax.Array
    delta_d: float
    delta_I: float
    names: list[str] | None = None
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    ids: np.ndarray | None = None
    states: np.ndarray | None = None

    def __post_init__(self):
        N = self.params.N
        self.params = _arr_params(self.params)
        self.q = _a(self.q)
        self.dist = _a(self.dist)
        self.log_lam = _a(self.log_lam)
        if self.q.shape != (N,):
            raise ParameterError("q", f"must have shape ({N},) (one internet quality per city); got {self.q.shape}")
        if self.dist.shape != (N, N):
            raise ParameterError("dist", f"must have shape ({N}, {N}); got {self.dist.shape}")
        if not np.all(np.isfinite(np.asarray(self.q))):
            raise ParameterError("q", "must be finite")
        for name in ("delta_d", "delta_I"):
            v = getattr(self, name)
            if not (np.ndim(v) == 0 and np.isfinite(float(v))):
                raise ParameterError(name, f"must be a finite scalar; got {v!r}")
            setattr(self, name, float(v))
        if not isinstance(self.sol, jt.Solution) or self.sol.w.shape != (N,):
            raise ParameterError("sol", f"must be a jt.Solution of the same N = {N} cities")
        if not bool(self.sol.converged):
            raise ParameterError("sol", f"the baseline equilibrium must be converged and regular; its status is "
                                        f"{self.sol.status!r} (residual {float(self.sol.residual):.2e})")
        for name in ("names", "lat", "lon", "ids", "states"):
            v = getattr(self, name)
            if v is not None and len(v) != N:
                raise ParameterError(name, f"must have one entry per city ({N}); got {len(v)}")
        if self.lat is not None:
            self.lat = np.asarray(self.lat, dtype=float)
        if self.lon is not None:
            self.lon = np.asarray(self.lon, dtype=float)
        self.ids = np.arange(N) if self.ids is None else np.asarray(self.ids)
        if self.states is not None:
            self.states = np.asarray(self.states, dtype=object)
            if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in self.states):
                raise ParameterError("states", "has a missing entry; give every city a state label or pass None")

    @property
    def N(self) -> int:
        return self.params.N

    @property
    def size(self) -> np.ndarray:
        """Baseline city size L^m_n + L^p_n."""
        return np.asarray(self.sol.Lm + self.sol.Lp)

    @property
    def log_size(self) -> np.ndarray:
        return np.log(self.size)

    def city_names(self) -> list[str]:
        return list(self.names) if self.names is not None else [f"city {int(i)}" for i in self.ids]


def baseline_from_allocation(*, alpha, beta, theta, gamma, dist, q, delta_d, delta_I, w, Lm, log_lam=0.0,
                             tau=None, names=None, lat=None, lon=None, ids=None) -> Baseline:
    """Invert an observed allocation (w_n, L^m_n) into a calibrated :class:`Baseline`.

    tau_nc from (29)-(30) (``jt.fragmentation_costs``) unless given (e.g. from counts by (33)),
    T_n from (36) (``jt.invert_technology``), H_n from (35) (``jt.invert_housing``, with W_n the model's
    income at the allocation); L^p_n then follows from (19), so (w, L^m) is the equilibrium exactly.
    The baseline Solution is a warm ``jt.solve`` from the allocation.
    """
    w, Lm, dist, q = _a(w), _a(Lm), _a(dist), _a(q)
    if tau is None:
        tau = jt.fragmentation_costs(dist, q, delta_d, delta_I, lam=_a(log_lam))
    tau = _a(tau)
    T = jt.invert_technology(alpha, beta, theta, gamma, tau, w, Lm)
    p0 = jt.Params(alpha=_a(alpha), beta=_a(beta), theta=_a(theta), gamma=_a(gamma), T=T, tau=tau,
                   H=jnp.ones_like(w), Lm_total=jnp.sum(Lm), Lp_total=_a(1.0))
    o = jt.equilibrium_objects(p0, w, Lm)
    H = jt.invert_housing(alpha, o.W, w)
    params = _arr_params(p0, H=H, Lp_total=jnp.sum(o.Lp))
    sol = jt.solve_from_data(params, w, Lm)
    return Baseline(params=params, sol=sol, q=q, dist=dist, log_lam=_a(log_lam), delta_d=delta_d, delta_I=delta_I,
                    names=names, lat=lat, lon=lon, ids=ids)


def synthetic_baseline(N: int, seed: int = 0, *, lam: float = 0.5, q_mean: float = 3.5, q_sd: float = 0.5,
                       geography: pd.DataFrame | None = None, **params) -> Baseline:
    """A stand-in calibrated economy for tests and benchmarks (Table 5 parameters by default).

    Zipf sizes, skill shares and wages rising with size (as ``jt.synthetic_economy``), internet
    quality q_n ~ q_mean + 0.3 (log size - mean) + q_sd * noise (the log-Mbps scale of eq. (27)),
    pair costs (29) with common lambda = ``lam``; inverted by :func:`baseline_from_allocation`.
    Locations: ``geography`` (columns lat, lon, population, optional name; the N largest rows) with
    great-circle distances in units of 100 km plus 1, or a random square (side 30) otherwise.
    """
    rng = np.random.default_rng(seed)
    kw = dict(alpha=jt.TABLE5["alpha"], beta=jt.TABLE5["beta"], theta=jt.TABLE5["theta"], gamma=jt.TABLE5["gamma"],
              delta_d=jt.TABLE5["delta_d"], delta_I=jt.TABLE5["delta_I"])
    kw.update(params)
    names = lat = lon = None
    if geography is not None:
        g = geography.sort_values("population", ascending=False).head(N).reset_index(drop=True)
        if len(g) < N:
            raise ParameterError("geography", f"has {len(g)} rows; need N = {N}")
        size = g["population"].to_numpy(float) * np.exp(0.05 * rng.standard_normal(N))
        lat, lon = g["lat"].to_numpy(float), g["lon"].to_numpy(float)
        names = [str(v) for v in g["name"]] if "name" in g else None
        la, lo = np.radians(lat), np.radians(lon)
        c = (np.sin(la[:, None]) * np.sin(la[None, :]) + np.cos(la[:, None]) * np.cos(la[None, :])
             * np.cos(lo[:, None] - lo[None, :]))
        dist = 1.0 + 6371.0 * np.arccos(np.clip(c, -1, 1)) / 100.0
    else:
        size = np.arange(1, N + 1) ** -1.05 * np.exp(0.1 * rng.standard_normal(N))
        loc = rng.uniform(0, 30.0, size=(N, 2))
        dist = 1.0 + np.sqrt(((loc[:, None, :] - loc[None, :, :]) ** 2).sum(-1))
        lat, lon = 30.0 + loc[:, 1] * 0.6, -120.0 + loc[:, 0] * 1.6
    size = size / size.sum()
    ls = np.log(size) - np.log(size).mean()
    skill = 1 / (1 + np.exp(-(-1.0 + 0.08 * ls + 0.05 * rng.standard_normal(N))))
    Lm = skill * size
    w = np.exp(0.05 * ls + 0.03 * rng.standard_normal(N))
    q = np.clip(q_mean + 0.3 * ls + q_sd * rng.standard_normal(N), 0.5, None)
    np.fill_diagonal(dist, 1.0)
    return baseline_from_allocation(dist=dist, q=q, w=w, Lm=Lm, log_lam=lam, names=names, lat=lat, lon=lon, **kw)


def recalibrate(b: Baseline, theta=None, gamma=None, *, keep_openness: bool = True):
    """Re-invert the baseline at new (theta, gamma), holding the baseline allocation (w, L^m) fixed.

    T_n by (36) (then scaled so that total worker mass is the baseline's), H_n by (35) (scaled so that
    H_1 is the baseline's), tau_nc with tau^(-theta) held fixed (``keep_openness``: the openness the
    counts identify by (33)) or tau itself held fixed. At the baseline (theta, gamma) this returns
    the baseline parameters up to round-off. Traceable in theta and gamma (used under ``jax.grad``).

    Returns ``(params, y)`` with ``y`` the baseline allocation as the new equilibrium's unknowns.
    """
    return _recalibrate(b.params, b.sol.w, b.sol.Lm, jnp.sum(b.sol.Lp), theta, gamma, keep_openness)


def _recalibrate(p0: jt.Params, w, Lm, Lp_sum, theta=None, gamma=None, keep_openness: bool = True):
    theta = p0.theta if theta is None else _a(theta)
    gamma = p0.gamma if gamma is None else _a(gamma)
    w, Lm = jax.lax.stop_gradient(w), jax.lax.stop_gradient(Lm)
    N = w.shape[0]
    eye = jnp.eye(N, dtype=F64)
    logtau = jnp.log(p0.tau) * (p0.theta / theta if keep_openness else 1.0)
    tau = jnp.exp(logtau * (1 - eye))

    def mk(T, H, Lp_total):
        return jt.Params(alpha=p0.alpha, beta=p0.beta, theta=theta, gamma=gamma, T=T, tau=tau, H=H,
                         Lm_total=jnp.sum(Lm), Lp_total=Lp_total)

    T = jt.invert_technology(p0.alpha, p0.beta, theta, gamma, tau, w, Lm)
    o = jt.equilibrium_objects(mk(T, p0.H, p0.Lp_total), w, Lm)
    # L^p scales as T^(1/(theta(1-beta))) at a fixed allocation (19): pin the total worker mass.
    T = T * (Lp_sum / jnp.sum(o.Lp)) ** (theta * (1 - p0.beta))
    o = jt.equilibrium_objects(mk(T, p0.H, p0.Lp_total), w, Lm)
    H = jt.invert_housing(p0.alpha, o.W, w) * p0.H[0]
    params = mk(T, H, jnp.sum(o.Lp))
    o = jt.equilibrium_objects(params, w, Lm)
    y = jnp.concatenate([jnp.log(w), jnp.log(Lm), jnp.atleast_1d(jnp.mean(o.log_Uw)),
                         jnp.atleast_1d(jnp.mean(o.log_Um))])
    return params, y


# ---------------------------------------------------------------------------------------
# Elastic housing supply (Appendix K)
# ---------------------------------------------------------------------------------------


def elastic_residual(y, params: jt.Params, epsilon, logD=None):
    """Equilibrium residual with elastic housing supply H_n = Hbar_n p_n^eps (66), ``params.H`` = Hbar.

    Rent (67): log p_n = log[(1-alpha) W_n / Hbar_n] / (1 + eps); otherwise the rows of
    ``jt.residual``: worker (16) and manager (14) indifference, adding up (17)-(18). eps = 0 gives
    ``jt.residual`` exactly.
    """
    N = params.T.shape[-1]
    logw, logLm = y[:N], y[N:2 * N]
    o = jt.equilibrium_objects(params, jnp.exp(logw), jnp.exp(logLm), 1.0, logD)
    # (1-alpha) log p_inelastic - (1-alpha) log p_elastic, exactly 0 at eps = 0 (bitwise jt.residual)
    corr = (1.0 - params.alpha) * jnp.log(o.p) * (epsilon / (1.0 + epsilon))
    return jnp.concatenate([
        o.log_Uw + corr - y[2 * N],
        o.log_Um + corr - y[2 * N + 1],
        jnp.atleast_1d(jnp.log(jnp.sum(o.Lm)) - jnp.log(params.Lm_total)),
        jnp.atleast_1d(jnp.log(jnp.sum(o.Lp)) - jnp.log(params.Lp_total)),
    ])


def elastic_jacobian(y, params: jt.Params, epsilon, logD=None):
    """Analytic Jacobian of :func:`elastic_residual` from ``jt.jacobian``: the rent enters rows (16)
    and (14) as -(1-alpha) d log p, which (67) divides by (1 + eps); the blocks D_a, D_l of
    (1-alpha) d log p are read off the worker rows of the inelastic Jacobian (I - D_a, -D_l)."""
    N = params.T.shape[-1]
    J = jt.jacobian(y, params, 1.0, logD)
    Da = jnp.eye(N, dtype=J.dtype) - J[:N, :N]
    Dl = -J[:N, N:2 * N]
    c = epsilon / (1.0 + epsilon)
    add = c * jnp.concatenate([jnp.concatenate([Da, Dl], axis=1)] * 2, axis=0)
    return J.at[:2 * N, :2 * N].add(add)


@eqx.filter_jit
def _elastic_solve_jit(params, epsilon, y0, tol, max_steps):
    res = solve_root(lambda y, a: elastic_residual(y, a[0], a[1]), y0, (params, epsilon), tol=tol,
                     max_steps=max_steps, linear_solver="dense", jac=lambda y, a: elastic_jacobian(y, a[0], a[1]),
                     reuse_jacobian=True)
    return res


@dataclass
class _Eq:
    """A solved equilibrium (inelastic ``jt.Solution`` or elastic), the fields the paths need."""

    y: jax.Array
    Lm: jax.Array
    Lp: jax.Array
    converged: bool
    status: str
    residual: float
    sigma_min: float
    steps: int
    sol: Any = None

    @property
    def min_Lm(self) -> float:
        return float(jnp.min(self.Lm))

    @property
    def log_Uw(self):
        return self.y[-2]

    @property
    def log_Um(self):
        return self.y[-1]


def solve_elastic(params: jt.Params, epsilon, y0, *, tol: float = 1e-10, max_steps: int = 50) -> _Eq:
    """Warm-started solve of the elastic-housing equilibrium (``params.H`` is Hbar of (66))."""
    eps = _concrete_float(epsilon)
    if eps is not None and not (eps >= 0 and math.isfinite(eps)):
        raise ParameterError("epsilon", f"the housing supply elasticity must be a finite number >= 0; got {eps}")
    y0 = y0.y if isinstance(y0, (jt.Solution, _Eq)) else _a(y0)
    res = _elastic_solve_jit(_arr_params(params), _a(epsilon), y0, tol, max_steps)
    N = params.T.shape[-1]
    o = jt.equilibrium_objects(params, jnp.exp(res.value[:N]), jnp.exp(res.value[N:2 * N]))
    return _Eq(y=res.value, Lm=o.Lm, Lp=o.Lp, converged=bool(res.converged), status=res.status,
               residual=float(res.residual), sigma_min=float(res.sigma_min), steps=int(res.steps), sol=res)


def elastic_params(params: jt.Params, sol, epsilon) -> jt.Params:
    """Hbar_n = (1-alpha) W_n / p_n^(1+eps): the baseline ``sol`` stays the equilibrium with elastic
    housing (Appendix K's recalibration of Hbar_n, in levels)."""
    Hbar = (1.0 - params.alpha) * sol.W / sol.p ** (1.0 + epsilon)
    return eqx.tree_at(lambda p: p.H, params, Hbar)


def _concrete_float(x):
    try:
        return float(x)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------


def ols_slope(yv, xv):
    """OLS of ``yv`` on a constant and ``xv``: ``(slope, intercept, robust HC1 se, R^2)``. NumPy."""
    yv, xv = np.asarray(yv, float), np.asarray(xv, float)
    n = len(yv)
    xc = xv - xv.mean()
    sxx = float(np.sum(xc * xc))
    if n < 3 or sxx <= 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    b = float(np.sum(xc * (yv - yv.mean())) / sxx)
    a = float(yv.mean() - b * xv.mean())
    e = yv - a - b * xv
    se = math.sqrt(n / (n - 2) * float(np.sum(xc ** 2 * e ** 2)) / sxx ** 2)
    sst = float(np.sum((yv - yv.mean()) ** 2))
    r2 = 1.0 - float(np.sum(e * e)) / sst if sst > 0 else float("nan")
    return b, a, se, r2


def ols_slope_fe(yv, xv, groups):
    """OLS of ``yv`` on ``xv`` with group fixed effects (within estimator), standard error clustered
    by group (CR1: ``G/(G-1) * (n-1)/(n-k)``, k = 1 + number of groups), as in column (2) of the
    paper's Tables 7 and 12 (state fixed effects, SEs clustered by state). Returns
    ``(slope, se, within R^2)``; NaN when fewer than 2 groups have within-group variation in ``xv``.
    NumPy."""
    yv, xv = np.asarray(yv, float), np.asarray(xv, float)
    g = pd.factorize(pd.Series(list(groups), dtype=object))[0]
    n = len(yv)
    if len(xv) != n or len(g) != n:
        raise ParameterError("groups", f"must have one entry per observation ({n}); got {len(g)}")
    G = int(g.max()) + 1 if n else 0
    cnt = np.bincount(g, minlength=G)
    xd = xv - (np.bincount(g, xv, G) / cnt)[g]
    yd = yv - (np.bincount(g, yv, G) / cnt)[g]
    sxx = float(np.sum(xd * xd))
    varied = np.bincount(g, np.abs(xd) > 1e-14 * (1 + np.abs(xv)), G) > 0
    k = 1 + G
    if G < 2 or int(varied.sum()) < 2 or n <= k or sxx <= 0:
        return float("nan"), float("nan"), float("nan")
    b = float(np.sum(xd * yd) / sxx)
    e = yd - b * xd
    score = np.bincount(g, xd * e, G)
    se = math.sqrt(G / (G - 1) * (n - 1) / (n - k) * float(np.sum(score ** 2)) / sxx ** 2)
    sst = float(np.sum(yd * yd))
    r2 = 1.0 - float(np.sum(e * e)) / sst if sst > 0 else float("nan")
    return b, se, r2


def _slope_jnp(yv, xv):
    xc = xv - jnp.mean(xv)
    return jnp.sum(xc * (yv - jnp.mean(yv))) / jnp.sum(xc * xc)


def _pct(d):
    return (math.exp(d) - 1.0) * 100.0 if np.isfinite(d) else float("nan")


def delta_method_se(grad: dict, cov, param_names) -> float:
    """sqrt(g' V g) with g[i] = grad.get(param_names[i], 0) (parameters absent from ``grad`` do not
    move the number) and V = ``cov`` ordered as ``param_names``."""
    V = np.asarray(cov, dtype=float)
    k = len(param_names)
    if V.shape != (k, k):
        raise ParameterError("cov", f"must be a ({k}, {k}) matrix ordered as param_names {list(param_names)}; "
                                    f"got shape {V.shape}")
    g = np.array([float(grad.get(n, 0.0)) for n in param_names])
    v = float(g @ V @ g)
    return math.sqrt(v) if v >= 0 else float("nan")


# ---------------------------------------------------------------------------------------
# Welfare decomposition (Table 8)
# ---------------------------------------------------------------------------------------


def welfare_decomposition(params_with: jt.Params, sol_with, params_no: jt.Params, sol_no, r=None) -> dict:
    """Table 8: the welfare effect of the internet split into a direct effect and spatial reorganisation.

    Derivation (Section 5.3, eqs. (37)-(39), Appendix J). Freeze the production teams of the
    no-internet equilibrium: L^m_nc = x_nc L^m_n managers of n producing in c with L^p_nc workers of
    c (19). Appendix J: a team's output net of the iceberg cost is S_nc / tau_nc with
    S_nc = (L^m_n)^gamma (Phi_n tau_nc^theta w_c^(beta theta))^(1/theta) (L^p_nc)^beta (L^m_nc)^(1-beta)
    (the printed S_nc(x, y) = ... x^beta y^(1-beta) swaps the arguments; with L^m_nc from (9) and
    L^p_nc from (19) the exponents on L^m_n and Phi_n reduce to those of (19), so) up to one
    constant S_nc / tau_nc = Y_nc = w_c L^p_nc / beta = E[pi_n] L^m_nc / (1 - beta), the team output
    that pays managers their share 1 - beta and workers beta (the identity of MODELS.md). With
    the internet, the same team produces Y_nc r_nc, r_nc = tau^no_nc / tau^with_nc. Then
      (37) p^x_n = [(1-beta) sum_c Y_nc r^x_nc + beta sum_c Y_cn r^x_cn] / H_n (r^no = 1; this is
           W_n / H_n, the model's rent up to the factor 1 - alpha, which cancels below),
      (38) managers: log sum_nc (1-beta) Y_nc r_nc / (p^with_n)^(1-alpha)
                     - log sum_nc (1-beta) Y_nc / (p^no_n)^(1-alpha),
      (39) workers:  log sum_nc beta Y_cn r_cn / (p^with_n)^(1-alpha) - log sum_nc beta Y_cn / (p^no_n)^(1-alpha)
    (managers pay rent where they live, n; workers of c-teams live in n = the team's city).
    The total is the equilibrium change log U^with - log U^no; reorganisation = total - direct.
    ``r`` overrides tau^no / tau^with (e.g. a uniform productivity factor, for which nothing
    reorganises and direct = total exactly).

    Returns log changes (not percent): ``total_workers``, ``total_managers``, ``direct_*``, ``reorg_*``.
    """
    a1 = 1.0 - params_no.alpha
    be = params_no.beta
    if r is None:
        r = params_no.tau / params_with.tau
    r = jnp.broadcast_to(_a(r), params_no.tau.shape)
    Y = sol_no.w[None, :] * sol_no.Lp_nc / be  # (n, c): teams of n's managers with c's workers
    H = params_no.H

    def rent(rr):
        return ((1 - be) * jnp.sum(Y * rr, axis=1) + be * jnp.sum(Y * rr, axis=0)) / H

    p_no, p_with = rent(jnp.ones_like(r)), rent(r)
    # managers of n pay p_n; workers employed in c live in c
    m_with = jnp.log(jnp.sum((1 - be) * Y * r / p_with[:, None] ** a1))
    m_no = jnp.log(jnp.sum((1 - be) * Y / p_no[:, None] ** a1))
    w_with = jnp.log(jnp.sum(be * Y * r / p_with[None, :] ** a1))
    w_no = jnp.log(jnp.sum(be * Y / p_no[None, :] ** a1))
    dm, dw = float(m_with - m_no), float(w_with - w_no)
    tw = float(sol_with.log_Uw - sol_no.log_Uw)
    tm = float(sol_with.log_Um - sol_no.log_Um)
    return dict(total_workers=tw, total_managers=tm, direct_workers=dw, direct_managers=dm,
                reorg_workers=tw - dw, reorg_managers=tm - dm)


# ---------------------------------------------------------------------------------------
# Continuation along the shock and the result object
# ---------------------------------------------------------------------------------------


def _offdiag(M):
    N = M.shape[0]
    return M * (1 - jnp.eye(N, dtype=F64))


@dataclass
class CounterfactualResult:
    """One counterfactual, followed from the baseline along s in [0, 1] (house result protocol).

    ``effect_sign`` = -1 means the reported changes are baseline minus counterfactual (the effect of
    what the counterfactual removes, e.g. the internet); +1 means counterfactual minus baseline.
    ``d_skill_share`` (N,) and ``d_log_Uw``/``d_log_Um`` are in that direction; ``slope`` is the
    OLS slope of ``d_skill_share`` on ``log_size`` (baseline log(L^m + L^p)), ``slope_se`` its
    robust (HC1) standard error. ``status``: "successful", or why the branch was not followed to
    s = 1 ("fold", "degenerate", "branch_jump", or the solver's status); numbers are then NaN.
    For "fold", ``fold_s`` is where the branch turns back (located by pseudo-arclength) and
    ``message`` says so ("fold at s = ...").
    """

    name: str
    description: str
    status: str
    s_reached: float
    effect_sign: int
    log_size: np.ndarray
    d_skill_share: np.ndarray
    d_log_Uw: float
    d_log_Um: float
    slope: float
    slope_se: float
    intercept: float
    r2: float
    path: list = field(default_factory=list)
    n_solves: int = 0
    settings: dict = field(default_factory=dict)
    decomposition: dict | None = None
    gradients: dict = field(default_factory=dict)  # headline -> {param: d headline / d param}
    delta_se: dict = field(default_factory=dict)  # headline -> delta-method SE
    paper: dict = field(default_factory=dict)  # printed values: slope, workers, managers (percent)
    y: np.ndarray | None = None  # the counterfactual equilibrium's unknowns (2N+2,)
    seconds: float = float("nan")
    fold_s: float = float("nan")  # status "fold": the s where the branch through the baseline turns back
    slope_state_fe: float = float("nan")  # Tables 7/12 col. (2): within-state slope (NaN without states)
    slope_state_fe_se: float = float("nan")  # its SE clustered by state
    message: str = ""  # why the branch was not followed to s = 1 (e.g. "fold at s = ..."), "" if it was

    @property
    def converged(self) -> bool:
        return self.status == "successful"

    @property
    def workers_pct(self) -> float:
        return _pct(self.d_log_Uw)

    @property
    def managers_pct(self) -> float:
        return _pct(self.d_log_Um)

    def headline(self) -> dict:
        return dict(slope=self.slope, workers_pct=self.workers_pct, managers_pct=self.managers_pct)

    def to_dict(self) -> dict:
        d = dict(name=self.name, description=self.description, status=self.status, converged=self.converged,
                 s_reached=self.s_reached, fold_s=self.fold_s, message=self.message,
                 effect_sign=self.effect_sign, slope=self.slope, slope_se=self.slope_se,
                 slope_state_fe=self.slope_state_fe, slope_state_fe_se=self.slope_state_fe_se,
                 intercept=self.intercept, r2=self.r2, d_log_Uw=self.d_log_Uw, d_log_Um=self.d_log_Um,
                 workers_pct=self.workers_pct, managers_pct=self.managers_pct, n_solves=self.n_solves,
                 seconds=self.seconds, settings={k: v for k, v in self.settings.items() if k != "A_eff"},
                 decomposition=self.decomposition,
                 gradients=self.gradients, delta_se=self.delta_se, paper=self.paper, path=self.path)
        return d

    def to_json(self) -> str:
        import json

        return json.dumps(atomic._json_safe(self.to_dict()), indent=2)

    def row(self) -> dict:
        """One flat row of ``counterfactuals.csv``."""
        d = dict(name=self.name, status=self.status, converged=self.converged, s_reached=self.s_reached,
                 fold_s=self.fold_s, message=self.message, effect=("baseline minus counterfactual" if self.effect_sign < 0 else "counterfactual minus baseline"),
                 slope=self.slope, slope_se=self.slope_se, r2=self.r2,
                 slope_state_fe=self.slope_state_fe, slope_state_fe_se=self.slope_state_fe_se,
                 workers_pct=self.workers_pct, managers_pct=self.managers_pct,
                 workers_logpts=100 * self.d_log_Uw, managers_logpts=100 * self.d_log_Um,
                 paper_slope=self.paper.get("slope", np.nan),
                 paper_slope_state_fe=self.paper.get("slope_state_fe", np.nan), paper_workers=self.paper.get("workers", np.nan),
                 paper_managers=self.paper.get("managers", np.nan))
        for k in ("gamma", "delta_I", "epsilon"):
            d[k] = self.settings.get(k, np.nan)
        dec = self.decomposition or {}
        for k in ("direct_workers", "direct_managers", "reorg_workers", "reorg_managers"):
            d[f"{k}_logpts"] = 100 * dec[k] if k in dec else np.nan
        for h in HEADLINES:
            for p in HEADLINE_PARAMS:
                d[f"d_{h}_d_{p}"] = self.gradients.get(h, {}).get(p, np.nan)
            d[f"{h}_se_delta"] = self.delta_se.get(h, np.nan)
        d["n_solves"] = self.n_solves
        d["seconds"] = self.seconds
        d["description"] = self.description
        return d

    def summary(self) -> str:
        sg = "baseline - counterfactual" if self.effect_sign < 0 else "counterfactual - baseline"
        rows = [("slope of d skill share on log size", self.slope, self.slope_se, self.paper.get("slope", "")),
                ("  the same with state fixed effects", self.slope_state_fe, self.slope_state_fe_se,
                 self.paper.get("slope_state_fe", "")),
                ("workers' welfare, %", self.workers_pct, self.delta_se.get("workers_pct", float("nan")),
                 self.paper.get("workers", "")),
                ("managers' welfare, %", self.managers_pct, self.delta_se.get("managers_pct", float("nan")),
                 self.paper.get("managers", ""))]
        notes = [f"status: {self.status}; s reached {self.s_reached:.4g}; {self.n_solves} equilibrium solves; "
                 f"changes are {sg}"] + ([self.message] if self.message else []) + [
                 "se: robust (HC1) for the slope, clustered by state with state fixed effects (nan without "
                 "states); delta method from the estimates' covariance for welfare "
                 "(nan if not computed); paper: printed values on US data"]
        if self.decomposition:
            d = self.decomposition
            notes.append(f"Table 8 analog (log points): direct workers {100 * d['direct_workers']:.3f}, managers "
                         f"{100 * d['direct_managers']:.3f}; reorganisation workers {100 * d['reorg_workers']:.3f}, "
                         f"managers {100 * d['reorg_managers']:.3f}")
        return format_table(["quantity", "ours", "se", "paper"], rows,
                            title=f"Counterfactual {self.name}: {self.description}", notes=notes)

    def __str__(self) -> str:
        return self.summary()


def _solver_for(epsilon: float) -> Callable:
    """``solve(params, y0) -> _Eq``: inelastic ``jt.solve`` (eps = 0) or the elastic solve."""
    if epsilon:
        return lambda p, y0: solve_elastic(p, epsilon, y0)

    def solve(p, y0):
        s = jt.solve(p, y0=y0)
        return _Eq(y=s.y, Lm=s.Lm, Lp=s.Lp, converged=bool(s.converged), status=s.status,
                   residual=float(s.residual), sigma_min=float(s.sigma_min), steps=int(s.steps), sol=s)

    return solve


def _shock_res(y, s, a):
    """Residual of the shocked economy at log tau(s) = log tau_0 + s dlogtau (elastic form; eps = 0 is
    ``jt.residual``), for the pseudo-arclength fold locator. ``a = (params0, logtau0, dlogtau, eps)``."""
    p0, lt0, dl, eps = a
    return elastic_residual(y, eqx.tree_at(lambda p: p.tau, p0, jnp.exp(_offdiag(lt0 + s * dl))), eps)


def _shock_jac(y, s, a):
    p0, lt0, dl, eps = a
    return elastic_jacobian(y, eqx.tree_at(lambda p: p.tau, p0, jnp.exp(_offdiag(lt0 + s * dl))), eps)


def _locate_fold(params0: jt.Params, dlogtau, y0, s0: float, s_fail: float, epsilon: float = 0.0,
                 n_steps: int = 60):
    """Is there a fold of the branch through ``(y0, s0)`` before ``s_fail``? Pseudo-arclength in
    z = (y, s) (``continuation.pseudo_arclength``): a fold is where the s-component of the branch's
    tangent changes sign (the branch turns back; det dF/dy changes sign), so no equilibrium on this
    branch exists just beyond it. Returns ``(s_fold or None, n_points)``."""
    from spatialjax.continuation import pseudo_arclength

    span = float(s_fail - s0)
    if not span > 0:
        return None, 0
    args = (params0, jnp.log(params0.tau), _a(dlogtau), _a(epsilon))
    try:
        br = pseudo_arclength(_shock_res, _a(y0), args, float(s0), ds=span / 4, ds_max=0.5, ds_min=span * 1e-6,
                              n_steps=n_steps, lam_min=s0 - span, lam_max=s_fail, direction=1.0, jac=_shock_jac)
    except Exception:  # noqa: BLE001 - the locator is a diagnostic; its failure leaves the status as it was
        return None, 0
    folds = [float(f[0]) for f in br.folds if s0 - 1e-12 <= f[0] <= s_fail + 1e-12 and np.isfinite(f[0])]
    return (folds[0] if folds else None), len(br.lam)


def _follow(params0: jt.Params, dlogtau, y_base, solve, *, steps: int, max_halvings: int = 4, max_jump: float = 1.0,
            degeneracy_rtol: float = 1e-3, epsilon: float = 0.0, locate_folds: bool = True):
    """Follow the equilibrium along log tau(s) = log tau_0 + s dlogtau, s: 0 -> 1 (warm starts, secant
    predictor, step halving). Returns ``(eq at the last accepted s, s_reached, status, path, n_solves,
    fold)``. When the halvings are exhausted by solver failures (not by a degenerate or jumping
    root), :func:`_locate_fold` follows the branch from the last accepted point by
    pseudo-arclength: if it turns back at s_fold before the failed s, the status is "fold" and
    ``fold = dict(s=s_fold, message=...)`` (the branch through the baseline ends there: past s_fold
    the equilibrium must jump to another branch, which is never substituted); otherwise the
    solver's status stands and ``fold`` is None."""
    logtau0 = jnp.log(params0.tau)
    min_base = float(jnp.min(jnp.exp(y_base[params0.N:2 * params0.N])))
    h0 = 1.0 / steps
    h, s, y_prev, s_prev, y_prev2, s_prev2 = h0, 0.0, y_base, 0.0, None, None
    eq_acc, path, n_solves, status, fold = None, [], 0, "successful", None
    if not bool(jnp.any(dlogtau != 0)):
        eq = solve(eqx.tree_at(lambda p: p.tau, params0, jnp.exp(logtau0)), y_base)
        n_solves += 1
        path.append(dict(s=1.0, status=eq.status, residual=eq.residual, sigma_min=eq.sigma_min, min_Lm=eq.min_Lm,
                         jump=0.0))
        return eq, 1.0, ("successful" if eq.converged else eq.status), path, n_solves, None
    while s < 1.0 - 1e-12:
        s_new = min(1.0, s + h)
        p_s = eqx.tree_at(lambda p: p.tau, params0, jnp.exp(_offdiag(logtau0 + s_new * dlogtau)))
        starts = [y_prev]
        if y_prev2 is not None:
            starts.insert(0, y_prev + (y_prev - y_prev2) * ((s_new - s) / (s - s_prev2)))
        ok, why, eq = False, "", None
        for y0 in starts:
            eq = solve(p_s, y0)
            n_solves += 1
            jump = float(jnp.max(jnp.abs(eq.y - y_prev)))
            if not eq.converged or not np.all(np.isfinite(np.asarray(eq.y))):
                why = "fold" if eq.status == "singular" else eq.status
            elif eq.min_Lm < degeneracy_rtol * min_base:
                why = "degenerate"
            elif jump > max_jump:
                why = "branch_jump"
            else:
                ok = True
                break
        path.append(dict(s=s_new, status=eq.status if ok else why, residual=eq.residual, sigma_min=eq.sigma_min,
                         min_Lm=eq.min_Lm, jump=jump))
        if ok:
            y_prev2, s_prev2 = y_prev, s
            y_prev, s, eq_acc = eq.y, s_new, eq
            h = min(h0, 2 * h)
        else:
            h = h / 2
            if h < h0 / 2 ** max_halvings:
                status = why
                if locate_folds and why not in ("degenerate", "branch_jump"):
                    s_fold, npts = _locate_fold(params0, dlogtau, y_prev, s, s_new, epsilon)
                    if s_fold is not None:
                        status = "fold"
                        fold = dict(s=s_fold, arclength_points=npts,
                                    message=(f"fold at s = {s_fold:.6g}: the equilibrium branch through the "
                                             f"baseline turns back (pseudo-arclength; det dF/dy changes sign) "
                                             f"after s = {s:.6g}, before the failed step s = {s_new:.6g} "
                                             f"(solver status there: {why})"))
                break
    return eq_acc, s, status, path, n_solves, fold


def run_counterfactual(b: Baseline, dlogtau, *, name: str, description: str, effect_sign: int = 1,
                       params0: jt.Params | None = None, y_base=None, epsilon: float = 0.0, steps: int = 4,
                       decompose: bool = False, paper: dict | None = None, settings: dict | None = None,
                       **follow_kw) -> CounterfactualResult:
    """Follow a shock ``dlogtau`` (N, N) to log tau from the baseline (or ``params0``/``y_base``, e.g. a
    re-inverted one) by continuation; see the module docstring for the diagnostics."""
    t0 = time.perf_counter()
    _check_steps(steps)
    params0 = b.params if params0 is None else params0
    y_base = b.sol.y if y_base is None else _a(y_base)
    if epsilon:
        base_sol = jt.solve(params0, y0=y_base) if params0 is not b.params else b.sol
        params0 = elastic_params(params0, base_sol, epsilon)
    N = b.N
    dlogtau = _offdiag(_a(dlogtau))
    if dlogtau.shape != (N, N):
        raise ParameterError("dlogtau", f"must have shape ({N}, {N}); got {dlogtau.shape}")
    eq, s_reached, status, path, n_solves, fold = _follow(params0, dlogtau, y_base, _solver_for(epsilon),
                                                          steps=steps, epsilon=epsilon, **follow_kw)
    Lm0 = jnp.exp(y_base[N:2 * N])
    o0 = jt.equilibrium_objects(params0, jnp.exp(y_base[:N]), Lm0)
    sk0 = np.asarray(o0.Lm / (o0.Lm + o0.Lp))
    log_size = np.asarray(jnp.log(o0.Lm + o0.Lp))
    nan = float("nan")
    res = CounterfactualResult(name=name, description=description, status=status, s_reached=float(s_reached),
                               effect_sign=effect_sign, log_size=log_size, d_skill_share=np.full(N, nan),
                               d_log_Uw=nan, d_log_Um=nan, slope=nan, slope_se=nan, intercept=nan, r2=nan, path=path,
                               n_solves=n_solves, settings=dict(settings or {}, epsilon=epsilon),
                               paper=dict(paper or {}))
    if fold is not None:
        res.fold_s = fold["s"]
        res.message = fold["message"]
    if status == "successful":
        sk1 = np.asarray(eq.Lm / (eq.Lm + eq.Lp))
        res.d_skill_share = effect_sign * (sk1 - sk0)
        res.d_log_Uw = effect_sign * float(eq.log_Uw - y_base[2 * N])
        res.d_log_Um = effect_sign * float(eq.log_Um - y_base[2 * N + 1])
        res.slope, res.intercept, res.slope_se, res.r2 = ols_slope(res.d_skill_share, log_size)
        if b.states is not None:
            res.slope_state_fe, res.slope_state_fe_se, _ = ols_slope_fe(res.d_skill_share, log_size, b.states)
        res.y = np.asarray(eq.y)
        if decompose and not epsilon:
            p_cf = eqx.tree_at(lambda p: p.tau, params0, jnp.exp(_offdiag(jnp.log(params0.tau) + dlogtau)))
            base = b.sol if params0 is b.params else jt.solve(params0, y0=y_base)
            if effect_sign < 0:  # baseline = with, counterfactual = without
                res.decomposition = welfare_decomposition(params0, base, p_cf, eq.sol)
            else:
                res.decomposition = welfare_decomposition(p_cf, eq.sol, params0, base)
    res.seconds = time.perf_counter() - t0
    return res


def _check_steps(steps):
    if not (isinstance(steps, (int, np.integer)) and not isinstance(steps, bool) and steps >= 1):
        raise ParameterError("steps", f"the number of continuation steps must be an integer >= 1; got {steps!r}")


def _no_internet_shock(q, delta_I):
    """Delta log tau of Section 5.3: remove delta^I q_n q_c (n != c)."""
    return _offdiag(-_a(delta_I) * jnp.outer(q, q))


def _bounded_shock(params: jt.Params, dl):
    """The shock ``dl`` to log tau with iceberg costs kept >= 1 (tau_nc = 1 is a bound, e.g. pairs the
    calibration clipped): log tau_1 = max(log tau_0 + dl, 0). Returns ``(dl_eff, n_bounded)``, the
    number of pairs where the bound binds (log tau(s) stays >= 0 along the path: a convex combination)."""
    logtau0 = _offdiag(jnp.log(params.tau))
    dl = _offdiag(_a(dl))
    binds = (logtau0 + dl) < 0
    eff = jnp.where(binds, -logtau0, dl)
    return _offdiag(eff), int(jnp.sum(_offdiag(binds.astype(F64))))


def no_internet(b: Baseline, *, steps: int = 4, delta_I: float | None = None, epsilon: float = 0.0,
                params0=None, y_base=None, name: str | None = None, **kw) -> CounterfactualResult:
    """Section 5.3 (Tables 7-8; Table 12 with ``epsilon`` > 0): the economy without the internet term
    of (29), log tau~_nc = log tau_nc - delta^I q_n q_c. Reported as the effect of the internet
    (baseline minus no-internet), with the Table 8 decomposition (inelastic only)."""
    dI = b.delta_I if delta_I is None else float(delta_I)
    if epsilon:
        paper = {k: PAPER["elastic_housing"][k] for k in ("slope", "slope_state_fe", "workers", "managers")}
    else:
        paper = {k: PAPER["no_internet"][k] for k in ("slope", "slope_state_fe", "workers", "managers")}
    name = name or ("no_internet" if not epsilon else "no_internet_elastic_housing")
    desc = "no internet, log tau~ = log tau - delta^I q_n q_c" + (f" (elastic housing, eps = {epsilon:g})"
                                                                  if epsilon else "")
    dl, nb = _bounded_shock(b.params if params0 is None else params0, _no_internet_shock(b.q, dI))
    kw.setdefault("settings", {})
    return run_counterfactual(b, dl, name=name, description=desc, effect_sign=-1,
                              steps=steps, epsilon=epsilon, decompose=not epsilon, params0=params0, y_base=y_base,
                              paper=paper, settings=dict(gamma=float(b.params.gamma if params0 is None
                                                                     else params0.gamma), delta_I=dI,
                                                         shock=("no_internet" if params0 is None else "other"),
                                                         n_bounded=nb, A_eff=(np.asarray(dl) / dI if (dI and nb) else None),
                                                         **kw.pop("settings")),
                              **kw)


def sensitivity_gamma(b: Baseline, gammas=(0.005, 0.010, 0.015), *, steps: int = 4, **kw) -> list[CounterfactualResult]:
    """Table 10 analog: for each gamma, T_n re-inverted by (36) (:func:`recalibrate`, so the baseline
    allocation is unchanged), then the no-internet counterfactual."""
    out = []
    for g in gammas:
        g = float(g)
        if not (g > 0 and math.isfinite(g)):
            raise ParameterError("sensitivity_gamma", f"gamma values must be finite and > 0; got {g}")
        p, y = recalibrate(b, gamma=g, keep_openness=False)
        pp = _paper_lookup(PAPER["gamma"], g)
        r = no_internet(b, steps=steps, params0=_arr_params(p), y_base=y, name=f"no_internet_gamma={g:g}", **kw)
        r.paper = pp
        r.settings["gamma"] = g
        out.append(r)
    return out


def sensitivity_delta_I(b: Baseline, deltas=(-0.005, -0.010, -0.015), *, steps: int = 4,
                        **kw) -> list[CounterfactualResult]:
    """Table 11 analog: the baseline (tau from the data) is unchanged; the no-internet counterfactual
    removes delta^I q_n q_c with each delta^I."""
    out = []
    for d in deltas:
        d = float(d)
        if not math.isfinite(d):
            raise ParameterError("sensitivity_delta_I", f"delta^I values must be finite; got {d}")
        r = no_internet(b, steps=steps, delta_I=d, name=f"no_internet_delta_I={d:g}", **kw)
        r.paper = _paper_lookup(PAPER["delta_I"], d)
        out.append(r)
    return out


def _paper_lookup(table: dict, key: float) -> dict:
    for k, v in table.items():
        if abs(k - key) < 1e-12:
            return dict(slope=v[0], workers=v[1], managers=v[2])
    return {}


def digital_divide_q(q, quantile: float = 0.25, target: float | None = None) -> np.ndarray:
    """Policy internet quality: q_n below the ``quantile`` of q raised to ``target`` (default: median)."""
    q = np.asarray(q, float)
    if not (0 < quantile < 1):
        raise ParameterError("digital_divide_quantile", f"must lie in (0, 1); got {quantile}")
    cut = float(np.quantile(q, quantile))
    tgt = float(np.median(q)) if target is None else float(target)
    if not math.isfinite(tgt):
        raise ParameterError("digital_divide_target", f"must be a finite quality; got {target}")
    q1 = q.copy()
    under = q < cut
    q1[under] = np.maximum(q[under], tgt)
    return q1


def digital_divide(b: Baseline, *, quantile: float = 0.25, target: float | None = None, steps: int = 4,
                   **kw) -> CounterfactualResult:
    """Section 5.4 (Figure 8): raise q_n of cities below the ``quantile`` of q to ``target`` (default: the
    median q), log tau_nc -> log tau_nc + delta^I (q1_n q1_c - q_n q_c); counterfactual minus baseline."""
    q1 = _a(digital_divide_q(b.q, quantile, target))
    dl, nb = _bounded_shock(b.params, b.delta_I * (jnp.outer(q1, q1) - jnp.outer(b.q, b.q)))
    r = run_counterfactual(b, dl, name="digital_divide", effect_sign=+1, steps=steps,
                           description=f"q_n below the {quantile:g} quantile raised to "
                                       f"{'the median' if target is None else f'{target:g}'}",
                           paper={k: PAPER["digital_divide"][k] for k in ("slope", "workers", "managers")},
                           settings=dict(gamma=float(b.params.gamma), delta_I=b.delta_I, quantile=quantile,
                                         shock="digital_divide", n_bounded=nb,
                                         A_eff=(np.asarray(dl) / b.delta_I if (b.delta_I and nb) else None),
                                         target=float(np.max(np.asarray(q1)[np.asarray(q1) != np.asarray(b.q)]))
                                         if bool(np.any(np.asarray(q1) != np.asarray(b.q))) else float("nan"),
                                         n_upgraded=int(np.sum(np.asarray(q1) != np.asarray(b.q)))), **kw)
    r.settings["q_policy"] = np.asarray(q1)
    return r


# ---------------------------------------------------------------------------------------
# Welfare-gradient map
# ---------------------------------------------------------------------------------------


@dataclass
class WelfareGradientResult:
    """d log U_w / d q_n and d log U_m / d q_n for every city (one reverse pass), with a central
    finite-difference check on a subset. ``d_logU_dq`` is the population-weighted mean
    (L^p d log U_w + L^m d log U_m) / (L^p + L^m) (totals), by which cities are ranked (1 = the upgrade
    that raises national welfare most)."""

    d_logUw_dq: np.ndarray
    d_logUm_dq: np.ndarray
    d_logU_dq: np.ndarray
    status: str
    fd_check: list = field(default_factory=list)  # dicts: city, ad_w, fd_w, ad_m, fd_m, rel_err
    seconds: float = float("nan")
    fd_seconds_per_city: float = float("nan")

    @property
    def converged(self) -> bool:
        return self.status == "successful"

    @property
    def max_rel_err(self) -> float:
        return max((c["rel_err"] for c in self.fd_check), default=float("nan"))

    def frame(self, b: Baseline) -> pd.DataFrame:
        df = pd.DataFrame(dict(city=b.ids, name=b.city_names(),
                               lat=b.lat if b.lat is not None else np.nan, lon=b.lon if b.lon is not None else np.nan,
                               population=b.size, q=np.asarray(b.q), d_logUw_dq=self.d_logUw_dq,
                               d_logUm_dq=self.d_logUm_dq, d_logU_dq=self.d_logU_dq))
        order = np.argsort(-self.d_logU_dq, kind="stable")
        rank = np.empty(len(df), int)
        rank[order] = np.arange(1, len(df) + 1)
        df["rank"] = rank
        return df.sort_values("rank").reset_index(drop=True)

    def to_dict(self) -> dict:
        return dict(status=self.status, converged=self.converged, d_logUw_dq=self.d_logUw_dq,
                    d_logUm_dq=self.d_logUm_dq, d_logU_dq=self.d_logU_dq, fd_check=self.fd_check,
                    max_rel_err=self.max_rel_err, seconds=self.seconds,
                    fd_seconds_per_city=self.fd_seconds_per_city)

    def summary(self, max_rows: int = 10) -> str:
        order = np.argsort(-self.d_logU_dq)[:max_rows]
        rows = [(int(i), self.d_logUw_dq[i], self.d_logUm_dq[i], self.d_logU_dq[i]) for i in order]
        notes = [f"status: {self.status}; one reverse pass in {self.seconds:.3g} s",
                 f"finite-difference check on {len(self.fd_check)} cities: max relative error "
                 f"{self.max_rel_err:.2e}"]
        return format_table(["city index", "d log U_w/dq", "d log U_m/dq", "weighted"], rows,
                            title="Welfare-gradient map (largest first)", notes=notes)

    def __str__(self) -> str:
        return self.summary()


def _tau_of_q(logtau0, q0, delta_I, q):
    """tau(q): log tau_nc + delta^I (q_n q_c - q0_n q0_c) for pairs above the bound tau = 1; pairs at
    the bound (tau_nc = 1, e.g. clipped by the calibration) stay there (their derivative is 0)."""
    free = (logtau0 > 0).astype(logtau0.dtype)
    return jnp.exp(_offdiag(logtau0 + free * delta_I * (jnp.outer(q, q) - jnp.outer(q0, q0))))


def _welfare_of_q(q, params, q0, delta_I, y0):
    p = eqx.tree_at(lambda pp: pp.tau, params, _tau_of_q(jnp.log(params.tau), q0, delta_I, q))
    s = jt.solve(p, y0=y0)
    return jnp.stack([s.log_Uw, s.log_Um]), s.solve.result


@eqx.filter_jit
def _welfare_jac(q, params, q0, delta_I, y0):
    return jax.jacrev(lambda qq: _welfare_of_q(qq, params, q0, delta_I, y0)[0])(q)


def welfare_gradient(b: Baseline, *, fd_cities=3, fd_step: float = 1e-4) -> WelfareGradientResult:
    """The welfare-gradient map: ``jax.jacrev`` of (log U_w, log U_m) with respect to q (N,) through a
    warm ``jt.solve`` at the baseline (implicit differentiation; NaN if the baseline root is not
    regular). ``fd_cities``: an int (that many cities with the largest |gradient|) or a list of
    city indices, checked by central differences of warm re-solves with step ``fd_step``."""
    t0 = time.perf_counter()
    q0 = b.q
    dI = _a(b.delta_I)
    J = np.asarray(_welfare_jac(q0, b.params, q0, dI, b.sol.y))
    secs = time.perf_counter() - t0
    gw, gm = J[0], J[1]
    Lp, Lm = float(b.params.Lp_total), float(b.params.Lm_total)
    g = (Lp * gw + Lm * gm) / (Lp + Lm)
    status = "successful" if np.all(np.isfinite(J)) else "nonfinite (baseline root not regular)"
    res = WelfareGradientResult(d_logUw_dq=gw, d_logUm_dq=gm, d_logU_dq=g, status=status, seconds=secs)
    if isinstance(fd_cities, (int, np.integer)):
        cities = list(np.argsort(-np.abs(g))[: int(fd_cities)])
    else:
        cities = list(fd_cities)
    t1 = time.perf_counter()
    for c in cities:
        c = int(c)
        if not (0 <= c < b.N):
            raise ParameterError("fd_cities", f"city index {c} out of range 0..{b.N - 1}")
        vals = []
        for sgn in (1.0, -1.0):
            qq = q0.at[c].add(sgn * fd_step)
            v, code = _welfare_of_q(qq, b.params, q0, dI, b.sol.y)
            vals.append(np.asarray(v))
        fd = (vals[0] - vals[1]) / (2 * fd_step)
        ad = J[:, c]
        rel = float(np.max(np.abs(ad - fd) / np.maximum(np.abs(fd), 1e-300)))
        res.fd_check.append(dict(city=c, ad_w=float(ad[0]), fd_w=float(fd[0]), ad_m=float(ad[1]),
                                 fd_m=float(fd[1]), rel_err=rel))
    if cities:
        res.fd_seconds_per_city = (time.perf_counter() - t1) / len(cities)
    return res


# ---------------------------------------------------------------------------------------
# Gradients of headline numbers and the delta method
# ---------------------------------------------------------------------------------------


def _headline_parts(phi, y, d):
    """The counterfactual's equilibrium residual F(y, phi) and headline numbers H(y, phi) (slope,
    workers %, managers %) through the calibration map (module docstring), phi = (theta, gamma,
    delta_I). The shock is delta_I * A (A = -q q' for no internet, q1 q1' - q q' for the digital
    divide), ``sign`` the reporting direction, ``eps`` the housing supply elasticity (0: inelastic;
    the elastic residual at eps = 0 is ``jt.residual`` bitwise)."""
    p0, w, Lm, Lp_sum, A, sign, eps, log_size = d
    theta, gamma, dI = phi[0], phi[1], phi[2]
    params_b, y_b = _recalibrate(p0, w, Lm, Lp_sum, theta, gamma)
    N = w.shape[0]
    o_b = jt.equilibrium_objects(params_b, jnp.exp(y_b[:N]), jnp.exp(y_b[N:2 * N]))
    Hbar = (1.0 - params_b.alpha) * o_b.W / o_b.p ** (1.0 + eps)  # = H at eps = 0 (Appendix K recalibration)
    params_b = eqx.tree_at(lambda p: p.H, params_b, Hbar)
    p_cf = eqx.tree_at(lambda p: p.tau, params_b, jnp.exp(_offdiag(jnp.log(params_b.tau) + dI * A)))
    F = elastic_residual(y, p_cf, eps)
    o = jt.equilibrium_objects(p_cf, jnp.exp(y[:N]), jnp.exp(y[N:2 * N]))
    dsk = sign * (o.Lm / (o.Lm + o.Lp) - o_b.Lm / (o_b.Lm + o_b.Lp))
    dUw = sign * (y[2 * N] - y_b[2 * N])
    dUm = sign * (y[2 * N + 1] - y_b[2 * N + 1])
    H = jnp.stack([_slope_jnp(dsk, log_size), (jnp.exp(dUw) - 1) * 100, (jnp.exp(dUm) - 1) * 100])
    return F, H, p_cf


@eqx.filter_jit
def _headline_jac(phi, y, d):
    """Implicit function theorem at the counterfactual root y*: dH/dphi = H_phi - H_y J^(-1) F_phi with
    J = dF/dy (:func:`elastic_jacobian`, one LU). Returns (dH/dphi (3, 3), H, max|F|)."""
    F, H, p_cf = _headline_parts(phi, y, d)
    F_phi = jax.jacfwd(lambda ph: _headline_parts(ph, y, d)[0])(phi)  # (n, 3)
    H_y = jax.jacrev(lambda yy: _headline_parts(phi, yy, d)[1])(y)  # (3, n)
    H_phi = jax.jacfwd(lambda ph: _headline_parts(ph, y, d)[1])(phi)  # (3, 3)
    J = elastic_jacobian(y, p_cf, d[6])
    dy = jnp.linalg.solve(J, F_phi)  # -dy*/dphi
    return H_phi - H_y @ dy, H, jnp.max(jnp.abs(F)), jnp.max(jnp.abs(J @ dy - F_phi)) / (
        1.0 + jnp.max(jnp.abs(F_phi)))


def headline_gradients(b: Baseline, res: CounterfactualResult, *, cov=None, param_names=None) -> CounterfactualResult:
    """Fill ``res.gradients`` (d headline / d theta, gamma, delta_I) and, with ``cov``, ``res.delta_se``
    (delta method, :func:`delta_method_se`).

    The derivative is the implicit one at the counterfactual equilibrium y* found by the
    continuation (the formula :func:`spatialjax.solver.solve_root`'s checked custom VJP applies,
    written out so that no second solver is compiled): dH/dphi = H_phi - H_y J^(-1) F_phi, with F
    the equilibrium residual of the re-calibrated, shocked economy, H the headline numbers, J = dF/dy.
    NaN when the counterfactual did not converge, y* is not a root of F at the estimates
    (max|F| > 1e-8), or the linear solve fails.

    Supported: results of :func:`no_internet` (any epsilon) and :func:`digital_divide` from the
    baseline ``b``. Also records ``res.settings['headline_check']``: the headline numbers recomputed
    by the differentiated map at the estimates (equal to the continuation's: same equilibrium).
    """
    nan3 = {h: {p: float("nan") for p in HEADLINE_PARAMS} for h in HEADLINES}
    if not res.converged or res.y is None or res.settings.get("shock") not in ("no_internet", "digital_divide"):
        res.gradients = nan3
        return res
    eps = float(res.settings.get("epsilon", 0.0) or 0.0)
    dI = float(res.settings.get("delta_I", b.delta_I))
    # the shock is delta_I * A; where the bound tau >= 1 binds, A_eff holds the binding pairs' shift
    # fixed (a kink: the derivative is the one-sided one with the bound's pairs held)
    if res.settings.get("A_eff") is not None:
        A = _a(res.settings["A_eff"])
    elif res.settings["shock"] == "digital_divide":
        q1 = _a(res.settings["q_policy"])
        A = jnp.outer(q1, q1) - jnp.outer(b.q, b.q)
    else:
        A = -jnp.outer(b.q, b.q)
    phi = jnp.stack([b.params.theta, b.params.gamma, _a(dI)])
    data = (b.params, b.sol.w, b.sol.Lm, jnp.sum(b.sol.Lp), _offdiag(A), _a(res.effect_sign), _a(eps),
            _a(res.log_size))
    J, val, fres, lres = (np.asarray(v) for v in _headline_jac(phi, _a(res.y), data))
    ok = bool(fres <= 1e-8 and lres <= 1e-8 and np.all(np.isfinite(J)))
    res.settings["headline_check"] = dict(zip(HEADLINES, val.tolist()), residual=float(fres),
                                          adjoint_residual=float(lres))
    if not ok:
        res.gradients = nan3
        res.settings["headline_gradient_status"] = "failed: not a regular root at the estimates"
        return res
    res.settings["headline_gradient_status"] = "successful"
    res.gradients = {h: {p: float(J[i, j]) for j, p in enumerate(HEADLINE_PARAMS)} for i, h in enumerate(HEADLINES)}
    if cov is not None:
        names = list(param_names) if param_names is not None else list(HEADLINE_PARAMS)
        res.delta_se = {h: delta_method_se(res.gradients[h], cov, names) for h in HEADLINES}
    return res


# ---------------------------------------------------------------------------------------
# Printed-vs-ours comparison
# ---------------------------------------------------------------------------------------

_NOTES = {
    "no_internet": ("replica on model-generated data: the size of the effect scales with delta^I q_n q_c, i.e. "
                    "with the replica's internet qualities and fragmentation shares, not the US data's; "
                    "the paper's slope regresses on log 1980 labour supply, ours on log baseline size; "
                    "Table 7 col. (2) (state FE) prints 0.0030, and the text's 0.0031 'with state fixed effects' "
                    "contradicts the table"),
    "decomposition": "Table 8 in log points; direct effect by (37)-(39) with teams frozen at the no-internet "
                     "equilibrium (S_nc of Appendix J)",
    "gamma": ("T_n re-inverted by (36) at each gamma (the paper's footnote 27); the paper's text says the slope "
              "'becomes slightly smaller when gamma increases' but its Table 10 rises 0.0030 -> 0.0032"),
    "delta_I": "baseline tau unchanged (from the data); only the removed internet term uses the new delta^I",
    "digital_divide": ("our policy raises q_n below a quantile to a target on the replica; the paper's BEAD "
                       "upgrade (300/300 Mbps for under-served business locations, $20bn) cannot be replicated"),
    "elastic_housing": ("Appendix K, eps = 0.135, Hbar_n recalibrated; Table 12's notes describe 'a more uniform "
                        "internet quality improvement program' (copied notes), the text calls it no-internet"),
}


def paper_comparison(results: list[CounterfactualResult], data_label: str = DATA_LABEL) -> pd.DataFrame:
    """One row per printed number: ours (replica) vs printed (US data), same sign, log10 ratio, note."""
    rows = []

    def add(name, quantity, table, ours, paper, note):
        same = bool(np.sign(ours) == np.sign(paper)) if np.isfinite(ours) and paper != 0 else False
        lr = math.log10(abs(ours) / abs(paper)) if (np.isfinite(ours) and ours != 0 and paper != 0) else float("nan")
        rows.append(dict(counterfactual=name, quantity=quantity, table=table, ours=ours, paper=paper,
                         same_sign=same, log10_ratio=lr,
                         same_order_of_magnitude=bool(np.isfinite(lr) and abs(lr) < 1.0),
                         ours_on=data_label, paper_on="US data (722 CZs)", note=note))

    for r in results:
        if r.name == "no_internet":
            grp, tab = "no_internet", "Table 7 / Section 5.3"
        elif r.name.startswith("no_internet_gamma"):
            grp, tab = "gamma", "Table 10"
        elif r.name.startswith("no_internet_delta_I"):
            grp, tab = "delta_I", "Table 11"
        elif r.name == "digital_divide":
            grp, tab = "digital_divide", "Figure 8 / Section 5.4"
        elif r.name.startswith("no_internet_elastic"):
            grp, tab = "elastic_housing", "Table 12 / Appendix K"
        else:
            continue
        note = _NOTES[grp] + ("" if r.converged else f"; OURS FAILED: status {r.status}"
                                                    + (f" ({r.message})" if r.message else ""))
        if "slope" in r.paper:
            add(r.name, "slope of d high-skill share on log size", tab, r.slope, r.paper["slope"], note)
        if "slope_state_fe" in r.paper and np.isfinite(r.slope_state_fe):
            add(r.name, "slope with state fixed effects", tab + " col. (2)", r.slope_state_fe,
                r.paper["slope_state_fe"], note)
        if "workers" in r.paper:
            add(r.name, "workers' welfare change (100 d log U_w)", tab, 100 * r.d_log_Uw, r.paper["workers"], note)
        if "managers" in r.paper:
            add(r.name, "managers' welfare change (100 d log U_m)", tab, 100 * r.d_log_Um, r.paper["managers"], note)
        if r.decomposition and grp == "no_internet":
            P = PAPER["decomposition"]
            for k in ("direct_workers", "direct_managers", "reorg_workers", "reorg_managers"):
                add(r.name, f"{k.replace('_', ' ')} (log points)", "Table 8", 100 * r.decomposition[k], P[k],
                    _NOTES["decomposition"])
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# run_all
# ---------------------------------------------------------------------------------------


def validate_config(config: dict | None) -> dict:
    """Merge ``config`` with the defaults of :data:`CONFIG_KEYS`; unknown keys or wrong types raise
    :class:`ParameterError` naming the key."""
    cfg = {k: v[1] for k, v in CONFIG_KEYS.items()}
    for k, v in (config or {}).items():
        if k not in CONFIG_KEYS:
            raise ParameterError(f"counterfactuals.{k}", f"unknown key; allowed: {sorted(CONFIG_KEYS)}")
        typ = CONFIG_KEYS[k][0]
        ok = isinstance(v, typ) and not (typ in (int, float) and isinstance(v, bool))
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if isinstance(typ, tuple) and float in typ and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            raise ParameterError(f"counterfactuals.{k}", f"must be of type {typ}; got {v!r}")
        if typ is list and not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ParameterError(f"counterfactuals.{k}", f"must be a list of numbers; got {v!r}")
        cfg[k] = v
    if cfg["steps"] < 1:
        raise ParameterError("counterfactuals.steps", f"must be >= 1; got {cfg['steps']}")
    if not (0 < cfg["digital_divide_quantile"] < 1):
        raise ParameterError("counterfactuals.digital_divide_quantile",
                             f"must lie in (0, 1); got {cfg['digital_divide_quantile']}")
    e = cfg["elastic_housing_epsilon"]
    if e is not None and not (e >= 0 and math.isfinite(e)):
        raise ParameterError("counterfactuals.elastic_housing_epsilon", f"must be >= 0 or None; got {e}")
    if cfg["fd_check_cities"] < 0:
        raise ParameterError("counterfactuals.fd_check_cities", f"must be >= 0; got {cfg['fd_check_cities']}")
    if not (cfg["fd_step"] > 0):
        raise ParameterError("counterfactuals.fd_step", f"must be > 0; got {cfg['fd_step']}")
    for g in cfg["sensitivity_gamma"]:
        if not g > 0:
            raise ParameterError("counterfactuals.sensitivity_gamma", f"gamma values must be > 0; got {g}")
    return cfg


def run_all(b: Baseline, outdir: pathlib.Path, *, cov: np.ndarray | None = None, param_names: list[str] | None = None,
            config: dict | None = None, progress: bool = True) -> dict[str, pathlib.Path]:
    """Run every counterfactual from the calibrated baseline and write the outputs (atomically).

    Config keys (:data:`CONFIG_KEYS`: key -> (type, default, description)): ``no_internet``,
    ``steps``, ``sensitivity_gamma``, ``sensitivity_delta_I``, ``digital_divide``,
    ``digital_divide_quantile``, ``digital_divide_target``, ``elastic_housing_epsilon``,
    ``welfare_gradient``, ``fd_check_cities``, ``fd_step``, ``headline_gradients``, ``plots``,
    ``data_label``. ``cov`` (k x k, ordered as ``param_names``) gives delta-method SEs.

    Writes to ``outdir``: ``counterfactuals.csv`` (one row per counterfactual), ``counterfactuals.json``,
    ``paper_comparison.csv`` and ``paper_comparison.txt`` (ours vs printed), ``welfare_gradient.csv``
    (city, name, lat, lon, d_logUw_dq, d_logUm_dq, rank, ...), ``counterfactual_slopes.png`` and
    ``welfare_gradient_map.png``. Returns ``{label: path}``. Bad input raises before any work.
    """
    cfg = validate_config(config)
    if not isinstance(b, Baseline):
        raise ParameterError("b", f"must be a Baseline; got {type(b).__name__}")
    if cov is not None:
        names = list(param_names) if param_names is not None else list(HEADLINE_PARAMS)
        V = np.asarray(cov, dtype=float)
        if V.shape != (len(names), len(names)) or not np.all(np.isfinite(V)):
            raise ParameterError("cov", f"must be a finite ({len(names)}, {len(names)}) matrix ordered as "
                                        f"param_names {names}; got shape {V.shape}")
    outdir = pathlib.Path(outdir)
    label = cfg["data_label"]
    steps = cfg["steps"]
    tasks: list[tuple[str, Callable]] = []
    if cfg["no_internet"]:
        tasks.append(("no internet (Tables 7-8)", lambda: [no_internet(b, steps=steps)]))
    if cfg["sensitivity_gamma"]:
        tasks.append(("gamma sensitivity (Table 10)", lambda: sensitivity_gamma(b, cfg["sensitivity_gamma"],
                                                                                steps=steps)))
    if cfg["sensitivity_delta_I"]:
        tasks.append(("delta_I sensitivity (Table 11)",
                      lambda: sensitivity_delta_I(b, cfg["sensitivity_delta_I"], steps=steps)))
    if cfg["digital_divide"]:
        tasks.append(("digital divide (Section 5.4)",
                      lambda: [digital_divide(b, quantile=cfg["digital_divide_quantile"],
                                              target=cfg["digital_divide_target"], steps=steps)]))
    eps = cfg["elastic_housing_epsilon"]
    if eps:
        tasks.append((f"elastic housing eps={eps:g} (Table 12)", lambda: [no_internet(b, steps=steps, epsilon=eps)]))
    results: list[CounterfactualResult] = []
    wg = None
    n_total = len(tasks) + int(cfg["welfare_gradient"]) + int(cfg["headline_gradients"])
    bar = _progress(n_total, progress)
    try:
        for lab, fn in tasks:
            bar.set_description(lab)
            results.extend(fn())
            bar.update(1)
        if cfg["headline_gradients"]:
            bar.set_description("headline gradients (theta, gamma, delta_I)")
            for r in results:
                if r.name in ("no_internet", "digital_divide", "no_internet_elastic_housing"):
                    headline_gradients(b, r, cov=cov, param_names=param_names)
            bar.update(1)
        if cfg["welfare_gradient"]:
            bar.set_description("welfare-gradient map")
            wg = welfare_gradient(b, fd_cities=cfg["fd_check_cities"], fd_step=cfg["fd_step"])
            bar.update(1)
    finally:
        bar.close()
    out: dict[str, pathlib.Path] = {}
    if results:
        out["counterfactuals"] = atomic.write_frame(outdir / "counterfactuals.csv",
                                                    pd.DataFrame([r.row() for r in results]))
        out["counterfactuals_json"] = atomic.write_json(
            outdir / "counterfactuals.json",
            {"data": label, "results": [{k: v for k, v in r.to_dict().items()} for r in results],
             "welfare_gradient": None if wg is None else
             {k: v for k, v in wg.to_dict().items() if k not in ("d_logUw_dq", "d_logUm_dq", "d_logU_dq")}})
        cmp_df = paper_comparison(results, label)
        out["paper_comparison"] = atomic.write_frame(outdir / "paper_comparison.csv", cmp_df)
        out["paper_comparison_txt"] = atomic.write_text(outdir / "paper_comparison.txt",
                                                        _comparison_text(cmp_df, results, label) + "\n")
    if wg is not None:
        out["welfare_gradient"] = atomic.write_frame(outdir / "welfare_gradient.csv", wg.frame(b))
    if cfg["plots"]:
        from spatialjax.plots import jiao_tian_calibration as pl

        slope_res = [r for r in results if r.name in ("no_internet", "digital_divide", "no_internet_elastic_housing")]
        if slope_res:
            out["counterfactual_slopes_png"] = pl.plot_counterfactual_slopes(
                slope_res, outdir / "counterfactual_slopes.png", data_label=label)
        if wg is not None:
            out["welfare_gradient_map_png"] = pl.plot_welfare_gradient_map(
                wg.frame(b), outdir / "welfare_gradient_map.png", data_label=label)
    return out


def _comparison_text(cmp_df: pd.DataFrame, results, label) -> str:
    rows = [(r["counterfactual"], r["quantity"], r["table"], r["ours"], r["paper"], r["same_sign"],
             r["log10_ratio"]) for _, r in cmp_df.iterrows()]
    notes = [f"ours: {label}; paper: printed values on US data. Notes per row in paper_comparison.csv."]
    notes += [f"{r.name}: status {r.status}" + (f" ({r.message})" if r.message else "")
              for r in results if not r.converged]
    return format_table(["counterfactual", "quantity", "table", "ours", "paper", "same sign", "log10 ratio"], rows,
                        title="Jiao-Tian counterfactuals: ours vs the paper's printed numbers", notes=notes)


class _NoBar:
    def set_description(self, *_):
        pass

    def update(self, *_):
        pass

    def close(self):
        pass


def _progress(total, enabled):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="counterfactuals", unit="task")
