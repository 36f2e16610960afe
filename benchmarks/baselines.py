"""NumPy/SciPy baselines for the Jiao-Tian equilibrium (benchmarks of issue 2, section 5).

Three methods an applied economist would use without spatialjax, written independently of
``spatialjax.models.jiao_tian`` (plain NumPy; only the parameter values are read from a
``jt.Params``) so that the tests can check them against ``jt.residual``:

* :func:`damped_fixed_point` -- the usual method of the field: wages from worker
  indifference + labour-market clearing, managers from manager indifference, fixed damping.
* :func:`appendix_g` -- the paper's own iteration, Appendix G, on eq. (60) with the auxiliary
  exponent ``aux`` (then managers from (53)/(58), wage level from (18)-(19)).
* :func:`scipy_root` -- ``scipy.optimize.root`` (MINPACK ``hybr`` or ``lm``) with a
  finite-difference Jacobian on a residual function (NumPy-wrapped ``jt.residual``).

All return a :class:`BaselineResult` with the unknowns in the solver's layout
``y = (log w, log L^m, log U_w, log U_m)`` (shape (2N+2,)), a status string, the max-norm
equilibrium residual (:func:`np_residual`, the same rows as ``jt.residual``), the iteration
count and the wall time. Equation numbers are the paper's
(``shared/seeds/jiao_tian_2024_geographic_fragmentation.txt``, MODELS.md §1).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np
from scipy.special import gammaln, logsumexp

__all__ = ["NPParams", "BaselineResult", "np_params", "np_objects", "np_residual", "y_from_w_Lm",
           "damped_step", "damped_fixed_point", "appendix_g_map", "appendix_g", "scipy_root"]


@dataclasses.dataclass(frozen=True)
class NPParams:
    """Parameters as float64 NumPy values (T, H shape (N,), tau shape (N, N))."""

    alpha: float
    beta: float
    theta: float
    gamma: float
    T: np.ndarray
    tau: np.ndarray
    H: np.ndarray
    Lm_total: float
    Lp_total: float

    @property
    def N(self) -> int:
        return self.T.shape[0]

    @property
    def k(self) -> float:
        """k = 1 / (theta (1 - beta)); expected income (13) needs k < 1."""
        return 1.0 / (self.theta * (1.0 - self.beta))

    @property
    def log_zeta(self) -> float:
        """log zeta, zeta = beta^(beta/(1-beta)) (1-beta) Gamma(1 - k)  (13)."""
        b = self.beta
        return b / (1 - b) * np.log(b) + np.log(1 - b) + gammaln(1 - self.k)

    @property
    def log_eta(self) -> float:
        """log eta, eta = beta^(1/(1-beta)) Gamma(1 - k)  (19)."""
        return np.log(self.beta) / (1 - self.beta) + gammaln(1 - self.k)


def np_params(p) -> NPParams:
    """Convert a ``jt.Params`` (or anything with the same attributes) to :class:`NPParams`."""
    f = lambda v: float(np.asarray(v))  # noqa: E731
    a = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    return NPParams(alpha=f(p.alpha), beta=f(p.beta), theta=f(p.theta), gamma=f(p.gamma), T=a(p.T),
                    tau=a(p.tau), H=a(p.H), Lm_total=f(p.Lm_total), Lp_total=f(p.Lp_total))


def _log_delta_T(p: NPParams) -> np.ndarray:
    """log(T_n Delta_nc) with Delta_nc = tau_nc^(-theta); shape (N, N), rows n (home), cols c."""
    return np.log(p.T)[:, None] - p.theta * np.log(p.tau)


def np_objects(p: NPParams, logw: np.ndarray, logLm: np.ndarray, logTD: np.ndarray | None = None) -> dict:
    """Equilibrium objects at (log w, log L^m), shapes (N,): eqs. (8), (9), (11), (13), (19)."""
    if logTD is None:
        logTD = _log_delta_T(p)
    k = p.k
    logK = logTD - (p.beta * p.theta) * logw[None, :]  # log T_n (tau_nc w_c^beta)^(-theta)
    logPhi = logsumexp(logK, axis=1)  # (8)
    x = np.exp(logK - logPhi[:, None])  # (9)
    g = p.gamma / (1 - p.beta)
    logEpi = p.log_zeta + g * logLm + k * logPhi  # (13)
    coef = np.exp(p.log_eta + k * logPhi + (1 + g) * logLm)  # eta Phi^k (L^m)^(1+gamma/(1-beta))
    w = np.exp(logw)
    Lp_nc = coef[:, None] * x / w[None, :]  # (19)
    Lp = Lp_nc.sum(axis=0)
    W = np.exp(logEpi + logLm) + w * Lp  # (11)
    logp = np.log((1 - p.alpha) * W / p.H)  # (11)
    return dict(logPhi=logPhi, x=x, logEpi=logEpi, Lp_nc=Lp_nc, Lp=Lp, W=W, logp=logp,
                log_Uw=logw - (1 - p.alpha) * logp, log_Um=logEpi - (1 - p.alpha) * logp)


def _residual_from_objects(p: NPParams, o: dict, logLm, lUw, lUm) -> np.ndarray:
    return np.concatenate([o["log_Uw"] - lUw, o["log_Um"] - lUm,
                           [logsumexp(logLm) - np.log(p.Lm_total)],
                           [np.log(o["Lp"].sum()) - np.log(p.Lp_total)]])


def np_residual(y: np.ndarray, p: NPParams) -> np.ndarray:
    """Residual of (16), (14), (17), (18) at ``y = (log w, log L^m, log U_w, log U_m)``, shape (2N+2,).

    Same rows and scaling as ``jt.residual`` (logs, so relative errors)."""
    N = p.N
    o = np_objects(p, y[:N], y[N:2 * N])
    return _residual_from_objects(p, o, y[N:2 * N], y[2 * N], y[2 * N + 1])


def y_from_w_Lm(p: NPParams, logw, logLm, o: dict | None = None) -> np.ndarray:
    """Stack (log w, log L^m) with the utility levels that minimise the max-norm residual."""
    if o is None:
        o = np_objects(p, logw, logLm)
    mid = lambda v: 0.5 * (v.max() + v.min())  # noqa: E731
    return np.concatenate([logw, logLm, [mid(o["log_Uw"])], [mid(o["log_Um"])]])


def _max_resid(p, o, logw, logLm) -> tuple[float, np.ndarray]:
    y = y_from_w_Lm(p, logw, logLm, o)
    r = _residual_from_objects(p, o, logLm, y[2 * p.N], y[2 * p.N + 1])
    return float(np.max(np.abs(r))), y


@dataclasses.dataclass
class BaselineResult:
    """Outcome of a baseline solve.

    status: "converged" (max-norm residual <= tol), "max_iter", "timeout", "nonfinite",
    "stalled" or a solver message. ``y`` has shape (2N+2,)."""

    method: str
    y: np.ndarray
    status: str
    residual: float
    iterations: int
    seconds: float
    settings: dict

    @property
    def converged(self) -> bool:
        return self.status == "converged"


def _level_wages(p: NPParams, logw, logLm, logTD):
    """Scale wages so that production-worker demand (19) adds up to L^p (18).

    Demand is homogeneous of degree -1/(1-beta) in the wage level at fixed L^m, so the
    scale is exact in one step: log w += (1-beta) log(sum_c L^p_c / L^p)."""
    o = np_objects(p, logw, logLm, logTD)
    return logw + (1 - p.beta) * (np.log(o["Lp"].sum()) - np.log(p.Lp_total))


def damped_step(p: NPParams, logw, logLm, damping: float, *, o: dict | None = None, logTD=None):
    """One damped update of the fixed-point loop (see :func:`damped_fixed_point`); shapes (N,).

    An equilibrium (w, L^m) is a fixed point for any damping."""
    if logTD is None:
        logTD = _log_delta_T(p)
    if o is None:
        o = np_objects(p, logw, logLm, logTD)
    g = p.gamma / (1 - p.beta)
    w_t = (1 - p.alpha) * o["logp"]  # (16): log w_n = (1-alpha) log p_n + log U_w
    w_t = w_t - w_t.mean() + logw.mean()
    Lm_t = (w_t - p.k * o["logPhi"]) / g  # (14) with (16), i.e. (58)
    Lm_t = Lm_t - logsumexp(Lm_t) + np.log(p.Lm_total)  # (17)
    logw_new = (1 - damping) * logw + damping * w_t
    logLm = (1 - damping) * logLm + damping * Lm_t
    logLm = logLm - logsumexp(logLm) + np.log(p.Lm_total)
    return _level_wages(p, logw_new, logLm, logTD), logLm


def damped_fixed_point(p: NPParams, y0: np.ndarray, *, damping: float = 0.1, tol: float = 1e-10,
                       max_iter: int = 20000, time_budget: float | None = None) -> BaselineResult:
    """Damped fixed-point loop on (log w, log L^m), the field's usual method.

    One iteration, at the current (w, L^m):

    * evaluate (8), (9), (11), (13), (19); stop if the max-norm residual of (14), (16),
      (17), (18) is <= ``tol``;
    * wages from worker indifference (16): log w_n <- (1-alpha) log p_n + const, the
      constant from labour-market clearing (18) (exact rescaling, see ``_level_wages``);
    * managers from manager indifference (14), i.e. eq. (58):
      (gamma/(1-beta)) log L^m_n = log w_n - log Phi_n / (theta (1-beta)) + const, the constant
      from (17);
    * x <- (1 - damping) x + damping x_target (both blocks, in logs).

    ``y0`` has shape (2N+2,) (only the first 2N entries are used).
    """
    t0 = time.perf_counter()
    N = p.N
    logTD = _log_delta_T(p)
    logw, logLm = np.array(y0[:N], float), np.array(y0[N:2 * N], float)
    logLm = logLm - logsumexp(logLm) + np.log(p.Lm_total)
    status, it, res, y = "max_iter", 0, np.inf, None
    for it in range(max_iter + 1):
        o = np_objects(p, logw, logLm, logTD)
        res, y = _max_resid(p, o, logw, logLm)
        status = _stop(res, tol, it, max_iter, t0, time_budget)
        if status != "running":
            break
        logw, logLm = damped_step(p, logw, logLm, damping, o=o, logTD=logTD)
    return BaselineResult("damped_fixed_point", y, status, res, it, time.perf_counter() - t0,
                          dict(damping=damping, tol=tol, max_iter=max_iter))


def _stop(res, tol, it, max_iter, t0, time_budget) -> str:
    """Status of a fixed-point iteration after evaluating the residual at iteration ``it``:
    "nonfinite", "converged", "max_iter", "timeout", or "running" (go on)."""
    if not np.isfinite(res):
        return "nonfinite"
    if res <= tol:
        return "converged"
    if it == max_iter:
        return "max_iter"
    if time_budget is not None and time.perf_counter() - t0 > time_budget:
        return "timeout"
    return "running"


def _managers_from_wages(p: NPParams, logw, logPhi):
    """(58): L^m_n proportional to (w_n Phi_n^(-1/(theta(1-beta))))^((1-beta)/gamma), summing to L^m."""
    z = (1 - p.beta) / p.gamma * (logw - p.k * logPhi)
    return z - logsumexp(z) + np.log(p.Lm_total)


def appendix_g_map(p: NPParams, logw, aux: float, *, logTD=None, logPhi=None):
    """The undamped map of eq. (60): current log w (N,) on the left, new log w (N,) read off the right.

    Returns x_n / (1/(1-alpha) + aux) with x_n = log(LHS_n / H_n), shifted to keep the mean of
    log w (the level is set later by (18)). Equilibrium wages are a fixed point for every aux."""
    if logTD is None:
        logTD = _log_delta_T(p)
    k, bt = p.k, p.beta * p.theta
    if logPhi is None:
        logPhi = logsumexp(logTD - bt * logw[None, :], axis=1)  # (8)
    a1 = 1.0 / (1 - p.alpha) + aux
    logv = ((1 - p.beta) / p.gamma + 1) * logw + (-k - 1.0 / (p.theta * p.gamma)) * logPhi
    own = p.log_zeta + k * logPhi + aux * logw + logv  # zeta Phi_n^k w_n^aux v_n
    # log sum_j eta T_j Delta_jn Phi_j^(k-1) v_j + (aux - beta theta) log w_n
    cross = p.log_eta + logsumexp(logTD + ((k - 1) * logPhi + logv)[:, None], axis=0) + (aux - bt) * logw
    logw_new = (np.logaddexp(own, cross) - np.log(p.H)) / a1
    return logw_new - logw_new.mean() + logw.mean()


def appendix_g(p: NPParams, y0: np.ndarray, *, aux: float = 0.0, damping: float = 1.0, tol: float = 1e-10,
               max_iter: int = 20000, time_budget: float | None = None) -> BaselineResult:
    """The paper's Appendix G iteration on eq. (60), with damping.

    (59) is, row n (derived from (11), (13), (16), (19) and (58); the printed (54) is garbled):
        zeta Phi_n^k v_n + sum_j eta T_j Delta_jn w_n^(-beta theta) Phi_j^(k-1) v_j = C H_n w_n^(1/(1-alpha)),
        v_j = w_j^((1-beta)/gamma + 1) Phi_j^(-k - 1/(theta gamma)),  k = 1/(theta(1-beta)).
    (60) multiplies by w_n^aux; the iteration puts the current w on the left and reads the new
    x_n = (1/(1-alpha) + aux) log w_n off the right (steps 3-5 of Appendix G). Steps 6-8: managers from
    (53)/(58), workers from (19), wage level from (18). Convergence is checked on the full
    equilibrium residual (max-norm <= ``tol``), not on the change of relative wages.
    ``y0`` has shape (2N+2,); only log w (the first N entries) is used, as in the paper.
    """
    t0 = time.perf_counter()
    N = p.N
    logTD = _log_delta_T(p)
    bt = p.beta * p.theta
    if 1.0 / (1 - p.alpha) + aux == 0:
        raise ValueError("aux must differ from -1/(1-alpha)")
    logw = np.array(y0[:N], float)
    status, it, res, y = "max_iter", 0, np.inf, None
    for it in range(max_iter + 1):
        logK = logTD - bt * logw[None, :]
        logPhi = logsumexp(logK, axis=1)
        logLm = _managers_from_wages(p, logw, logPhi)
        lw = _level_wages(p, logw, logLm, logTD)
        o = np_objects(p, lw, logLm, logTD)
        res, y = _max_resid(p, o, lw, logLm)
        status = _stop(res, tol, it, max_iter, t0, time_budget)
        if status != "running":
            break
        logw = (1 - damping) * logw + damping * appendix_g_map(p, logw, aux, logTD=logTD, logPhi=logPhi)
    return BaselineResult("appendix_g", y, status, res, it, time.perf_counter() - t0,
                          dict(aux=aux, damping=damping, tol=tol, max_iter=max_iter))


def scipy_root(residual_fn: Callable[[np.ndarray], np.ndarray], y0: np.ndarray, *, method: str = "hybr",
               tol: float = 1e-10, check: Callable[[np.ndarray], np.ndarray] | None = None,
               maxfev: int | None = None) -> BaselineResult:
    """``scipy.optimize.root`` with a finite-difference Jacobian (no ``jac`` passed).

    ``residual_fn`` maps y (2N+2,) to the residual (2N+2,) (e.g. a NumPy-wrapped, jitted
    ``jt.residual``). The status is "converged" only if the max-norm residual (by ``check``,
    default ``residual_fn``) is <= ``tol``, whatever scipy's own flag says.
    """
    from scipy.optimize import root

    t0 = time.perf_counter()
    opts = {"xtol": 1e-13}
    if maxfev is not None:
        opts["maxfev" if method == "hybr" else "maxiter"] = maxfev
    sol = root(residual_fn, np.asarray(y0, float), method=method, options=opts)
    dt = time.perf_counter() - t0
    r = (check or residual_fn)(sol.x)
    res = float(np.max(np.abs(r)))
    if not np.isfinite(res):
        status = "nonfinite"
    elif res <= tol:
        status = "converged"
    else:
        status = f"not converged ({'scipy success' if sol.success else sol.message.strip()[:60]})"
    nfev = int(getattr(sol, "nfev", -1))
    return BaselineResult(f"scipy_root_{method}", sol.x, status, res, nfev, dt,
                          dict(method=method, tol=tol, nfev=nfev))
