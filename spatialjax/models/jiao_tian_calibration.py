"""Calibration of Jiao & Tian (2024) as one stacked GMM: inversions, moments, full-solution mode.

The paper (Section 5.2, Table 5) calibrates sequentially and reports no standard errors:
gravity (34) for delta^d, delta^I; the manager-income regression (31) for theta (1 - beta);
gamma from the wage-size elasticity; H_n from (35) and T_n from (36). Here the same pieces
are stacked into one just- or over-identified GMM problem estimated by :mod:`spatialjax.gmm`,
with parameters ``theta, gamma, delta_d, delta_I`` (``alpha``, ``beta`` fixed at Table 5:
``1 - alpha = 0.24``, ``beta = 0.53`` from the literature), so standard errors, the J test and
the names flow into every table.

**Observation unit: the city.** The micro GMM has N observations. Row n of the moment matrix
holds (i) the gravity score contributions of all pairs whose headquarters city is n (so the
gravity inference is clustered by headquarters city), (ii) the manager-income moment of the
managers sampled in n, divided by the mean sample size per city (so the stacked moment is a
proper average over cities), and (iii) the instrument moments of city n. Because all moment
blocks of a city sit in one row, the estimated S = (1/N) sum_n g_n g_n' captures their
correlation (e.g. Poisson noise in city n's links and sampling noise in its managers' incomes
both move its inverted T_n).

**Gravity, eqs. (9), (29)-(30), (32).** X_nc = L^m_n x_nc (32), so for n != c
log E[X_nc] = o_n + d_c - theta delta^d log d_nc - theta delta^I q_n q_c, with origin effect
o_n = log L^m_n T_n / Phi_n and destination effect d_c = -beta theta log w_c - theta lambda_c (the
pair cost lambda_nc of (29) may vary by origin and by destination; the replica's is a
destination cost lambda_c). Estimated by Poisson pseudo maximum likelihood on the cross-city
pairs (zeros in X_nc are data; own-city pairs, tau_nn = 1, carry no slope information once
each has its own effect). The 2N fixed effects are profiled out (:func:`ppml_fixed_effects`:
alternating closed-form updates, then a Newton polish whose derivative is the
implicit-function one), and the GMM moments are the FWL-partialled slope scores
sum_c (X_nc - mu_nc) x~_nc (the regressors with their mu-weighted projection on the fixed
effects removed, as ``ppmlhdfe`` does), so the sandwich standard errors of the slopes are
those of the joint estimator with all fixed effects (tested against statsmodels' Poisson GLM
with dummies). The destination pair costs follow from the own-city counts,
theta lambda_c = log X_cc - o_c - d_c (:func:`destination_pair_cost`), used for tau in the
full-solution mode and the calibrated baseline. The paper's log-linear (34) on positive
counts is the documented alternative (``gravity = "loglinear"``: OLS of log X_nc on the same
design; biased under Poisson noise by Jensen's inequality, E log X != log E X).

**theta (1 - beta) from manager incomes, eq. (31).** Within city n manager income is Fréchet
with shape kappa = theta (1 - beta) and a city scale (L^m_n)^(gamma theta) Phi_n (12), which the
paper absorbs by city fixed effects in the regression (31). Here: the Fréchet likelihood with
the city scale concentrated out. With u_i = pi_i^(-kappa) (exponential within a city), the
profile score of m_n managers is m_n/kappa - sum log pi_i + m_n sum u_i log pi_i / sum u_i; its
expectation is exactly 1/kappa whatever m_n (Beta-Dirichlet algebra: u_i / sum u ~ Beta(1, m-1)
independent of sum u ~ Gamma(m)). The moment uses (m_n - 1)/kappa instead of m_n/kappa, so it
has mean zero exactly at the truth (the incidental-parameter correction, as for a within
variance), and cities with one sampled manager contribute nothing.

**gamma from the technology equation.** With T_n inverted exactly from (36), the model
reproduces the observed wages and allocation for *any* gamma, so the wage-city-size elasticity
that the paper targets carries no information about gamma: changing gamma is undone by the
re-inverted T_n (which is why the paper's Table 10 is flat). Identification comes from a
restriction on the fundamentals instead: log T_n = x_n' pi + xi_n with E[z_n xi_n] = 0 for
the instruments z_n. By (36), log T_n(gamma) = a_n - gamma theta log L^m_n, where a_n collects the
observed wages and the fragmentation potential, so xi_n(gamma) is linear in gamma; gamma is the
coefficient on the endogenous log L^m_n in a linear IV regression of a_n on x_n, and it is
identified by instruments excluded from the T equation that shift where managers live (in
the replica: the housing-supply shifters, which move L^m_n through (11), (14) but not T_n).
A gamma that is too high leaves xi_n(gamma) negatively correlated with those shifters. The
nuisance coefficients pi are concentrated out (OLS on x_n, exact because xi is linear in pi),
and the moments are z~_n xi_n with z~ the excluded instruments partialled on x (FWL), so their
sandwich accounts for the estimated pi. T_n comes from (33) substituted into (36):
sum_k (tau_nk w_k^beta)^(-theta) = w_n^(-beta theta) / s_nn with the own-link share
s_nn = X_nn / sum_c X_nc, so log T_n = theta (log w_n - gamma log L^m_n) + log s_nn + const
(:func:`log_technology_from_counts`; zero counts contribute zero and need no tau, alpha and
beta drop out). Poisson noise in s_nn enters xi_n; it is independent of the instruments.

**Full-solution mode** (``mode = "full-solution"``): fundamentals parametric,
log T_n = x_n' pi and log H_n = x^H_n' rho (pi, rho estimated as nuisance GMM parameters named
``pi_<shifter>``, ``rho_<shifter>``), and every objective evaluation *solves* the N-city
equilibrium with :func:`spatialjax.models.jiao_tian.solve`, warm-started from the observed
allocation. Moments: gravity and income as above plus E[z_n (log y^data_n - log y_n(params))] = 0
for y = L^m, L^p, w (z with a constant). Gradients come by implicit differentiation through
the solve (:func:`spatialjax.solver.solve_root`'s checked adjoint); an evaluation whose
solve fails returns ``ok = False`` (the GMM layer rejects it as +inf and counts it). Because the
data were generated with xi_n != 0 and the allocation is a non-linear function of xi, these
moments hold only up to O(var xi) terms (with the stiff manager block, L^m_n responds to T_n with
elasticity ~ (1-beta)/(gamma theta) ~ 11): the mode is consistent only as var xi -> 0; the
inversion mode is exact.

Inversions (differentiable, pure JAX): :func:`tau_from_counts` (33), :func:`invert_housing` (35),
:func:`invert_technology` (36).
"""

from __future__ import annotations

import functools
import hashlib
import math
import pathlib
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import spatialjax  # noqa: F401  (x64)
from spatialjax.calibrate import Problem
from spatialjax.errors import ParameterError
from spatialjax.models import jiao_tian as jt

__all__ = [
    "PARAM_NAMES", "tau_from_counts", "invert_housing", "invert_technology", "log_technology", "gravity_design",
    "ppml_fixed_effects", "gravity_moments", "income_moments", "technology_iv_moments", "prepare",
    "inversion_moments", "inversion_variance_moments", "gravity_variance_contributions", "full_solution_moments",
    "build_problem", "calibrated_baseline", "report",
    "CONFIG_SCHEMA", "standin_replica",
]

PARAM_NAMES = ("theta", "gamma", "delta_d", "delta_I")
LABEL = "model-generated on real US geography"


# ---------------------------------------------------------------------------------------
# Inversions (33), (35), (36)
# ---------------------------------------------------------------------------------------


def tau_from_counts(X, w, beta, theta):
    """Fragmentation costs from link counts, eq. (33): tau_nc = (w_c^(beta theta) X_nc / (w_n^(beta theta) X_nn))^(-1/theta).

    Args: X (N, N) counts (HQ city n, subsidiary city c), w (N,) wages, beta, theta.
    Returns (N, N) with tau_nn = 1. Where X_nc = 0 (or X_nn = 0) tau_nc is undefined (infinite
    cost is not identified from a zero count with finite data): those entries are NaN. The
    estimation never uses (33); it uses the PPML gravity scores, for which zeros are data.
    """
    X = jnp.asarray(X, jnp.float64)
    logw = jnp.log(jnp.asarray(w))
    diag = jnp.diagonal(X)
    pos = (X > 0) & (diag[:, None] > 0)
    logX = jnp.log(jnp.where(pos, X, 1.0))
    logratio = beta * theta * (logw[None, :] - logw[:, None]) + logX - jnp.log(jnp.where(diag > 0, diag, 1.0))[:, None]
    tau = jnp.where(pos, jnp.exp(-logratio / theta), jnp.nan)
    N = X.shape[0]
    return jnp.where(jnp.eye(N, dtype=bool), 1.0, tau)


def invert_housing(alpha, W, w, normalize: int = 0):
    """Housing supply from (35): H_n / H_n' = (W_n / w_n^(1/(1-alpha))) / (W_n' / w_n'^(1/(1-alpha))); H[normalize] = 1."""
    return jt.invert_housing(alpha, W, w, normalize)


def log_technology(alpha, beta, theta, gamma, log_tau, w, Lm, normalize: int = 0):
    """log T_n backed out from manager indifference (36) given log tau_nc (N, N), w_n, L^m_n; log T[normalize] = 0.

    (1/(theta(1-beta))) log T_n = log w_n - gamma/(1-beta) log L^m_n - (1/(theta(1-beta))) log sum_k (tau_nk w_k^beta)^(-theta) + const.
    """
    del alpha
    k = 1.0 / (theta * (1 - beta))
    N = log_tau.shape[0]
    log_tau = jnp.where(jnp.eye(N, dtype=bool), 0.0, log_tau)
    S = jax.nn.logsumexp(-theta * (log_tau + beta * jnp.log(w)[None, :]), axis=1)
    logT = (jnp.log(w) - gamma / (1 - beta) * jnp.log(Lm)) / k - S
    return logT - logT[normalize]


def log_technology_from_counts(theta, gamma, w, Lm, log_s, normalize: int = 0):
    """log T_n from (36) with tau from the counts (33): log T_n = theta (log w_n - gamma log L^m_n) + log s_nn + const.

    Substituting (33) into (36), sum_k (tau_nk w_k^beta)^(-theta) = w_n^(-beta theta) X_n. / X_nn, so
    (1/(theta(1-beta))) log T_n = log w_n - gamma/(1-beta) log L^m_n - (1/(theta(1-beta))) (-beta theta log w_n - log s_nn)
    with s_nn = X_nn / sum_c X_nc (:func:`log_own_share`); zero counts X_nc contribute zero and
    need no tau. Neither alpha nor beta enters. log T[normalize] = 0.
    """
    logT = theta * (jnp.log(w) - gamma * jnp.log(Lm)) + log_s
    return logT - logT[normalize]


def invert_technology(alpha, beta, theta, gamma, tau, w, Lm, normalize: int = 0):
    """T_n from (36) (:func:`spatialjax.models.jiao_tian.invert_technology`); T[normalize] = 1."""
    return jt.invert_technology(alpha, beta, theta, gamma, tau, w, Lm, normalize)


# ---------------------------------------------------------------------------------------
# Gravity: PPML on cross-city pairs with profiled origin and destination effects
# ---------------------------------------------------------------------------------------


def gravity_design(dist, q):
    """Slope regressors of log E[X_nc], shape (2, N, N): log d_nc and q_n q_c off the diagonal (0 on it)."""
    dist = jnp.asarray(dist)
    N = dist.shape[0]
    off = 1.0 - jnp.eye(N)
    logd = jnp.log(jnp.where(off > 0, dist, 1.0)) * off
    qq = jnp.outer(q, q) * off
    return jnp.stack([logd, qq])


def gravity_mask(X):
    """Pairs that enter the gravity estimation, (N, N) float: n != c, with origin n and destination
    c each having at least one cross-city link (otherwise their fixed effect is -inf and the
    pairs carry no information about the slopes)."""
    X = np.asarray(X, float)
    off = X * (1 - np.eye(X.shape[0]))
    r, c = off.sum(1) > 0, off.sum(0) > 0
    return (1 - np.eye(X.shape[0])) * r[:, None] * c[None, :]


def _fe_factor(mu, A, e_ref):
    """Factor the PPML fixed-effect Hessian D' diag(mu) D on the active pairs ``A`` for origin
    effects o (N) and destination effects d (N) with d_ref = 0 (``e_ref`` one-hot): the origin
    block is diagonal and eliminated, leaving an N x N Schur complement (one LU). Inactive
    origins/destinations (no cross-city links) are pinned at 0."""
    mu = mu * A
    r = jnp.sum(mu, axis=1)
    c = jnp.sum(mu, axis=0)
    ra = jnp.where(r > 0, r, 1.0)
    ca = jnp.where(c > 0, c, 1.0)
    keep = (1 - e_ref) * (c > 0)
    S = jnp.diag(ca) - mu.T @ (mu / ra[:, None])
    S = keep[:, None] * keep[None, :] * S + jnp.diag(1 - keep)
    return dict(mu=mu, r=r, ra=ra, keep=keep, lu=jax.scipy.linalg.lu_factor(S))


def _fe_apply(fac, f_o, f_d):
    """Solve (D' diag(mu) D) (eta_o, eta_d) = (f_o, f_d) with a factorisation from :func:`_fe_factor`; shapes (N, m)."""
    mu, ra = fac["mu"], fac["ra"]
    rhs = fac["keep"][:, None] * (f_d - mu.T @ (f_o / ra[:, None]))
    y_d = jax.scipy.linalg.lu_solve(fac["lu"], rhs)
    y_o = jnp.where(fac["r"][:, None] > 0, (f_o - mu @ y_d) / ra[:, None], 0.0)
    return y_o, y_d


def _fe_solve(mu, A, e_ref, f_o, f_d):
    """One solve of the fixed-effect Hessian system (:func:`_fe_factor`, :func:`_fe_apply`)."""
    return _fe_apply(_fe_factor(mu, A, e_ref), f_o, f_d)


def ppml_fixed_effects(X, xb, A, e_ref, *, tol: float = 1e-11, max_iter: int = 20000):
    """Profile the PPML fixed effects (origin o_n, destination d_c, d_ref = 0) for a given slope
    index ``xb`` (N, N) = sum_k b_k x_k on the active pairs ``A`` (:func:`gravity_mask`).

    log mu_nc = o_n + d_c + xb_nc. Alternating closed-form updates of the score equations
    (o_n = log sum_c X_nc - log sum_c exp(d_c + xb_nc), the same for d_c) until the scores are
    below ``tol`` relative to the margins, then one Newton step ``eta* + (D'MD)^-1 F(eta*, b)`` with
    ``eta*`` held constant: its value is ``eta*`` to rounding and its derivative in ``b`` is the
    implicit-function derivative ``-(D'MD)^-1 D'M x``. Returns ``(o, d, mu, max_score, sweeps, factor)``
    (``factor``: the factorised fixed-effect Hessian at ``eta*``, reused for the FWL partialling).
    """
    X = jnp.asarray(X) * A
    R = jnp.sum(X, axis=1)
    C = jnp.sum(X, axis=0)
    rok, cok = R > 0, C > 0
    xb0 = jax.lax.stop_gradient(xb)
    # multiplicative form of the updates: u = exp(o), v = exp(d), V = A exp(xb - max):
    # u_n = R_n / (V v)_n, v_c = C_c / (V'u)_c (matrix-vector products, no exponentials)
    shift0 = jnp.max(jnp.where(A > 0, xb0, -jnp.inf))
    V = A * jnp.exp(xb0 - shift0)

    def sweep(uv):
        u, v = uv
        u = jnp.where(rok, R / jnp.where(rok, V @ v, 1.0), 0.0)
        v = jnp.where(cok, C / jnp.where(cok, V.T @ u, 1.0), 0.0)
        vr = jnp.sum(v * e_ref)
        return (u * vr, v / vr)

    def score_max(uv):
        u, v = uv
        er = R - u * (V @ v)
        ec = C - v * (V.T @ u)
        return jnp.maximum(jnp.max(jnp.abs(er) / jnp.where(rok, R, 1.0)), jnp.max(jnp.abs(ec) / jnp.where(cok, C, 1.0)))

    def cond(c):
        return (c[2] > tol) & (c[1] < max_iter)

    def body(c):
        uv = sweep(sweep(c[0]))
        return uv, c[1] + 2, score_max(uv)

    uv0 = (jnp.where(rok, R, 0.0) / X.shape[0], jnp.where(cok, 1.0, 0.0))
    uv, it, err = jax.lax.while_loop(cond, body, (uv0, 0, jnp.asarray(jnp.inf, X.dtype)))
    uv = jax.lax.stop_gradient(uv)
    o = jnp.where(rok, jnp.log(jnp.where(rok, uv[0], 1.0)) - shift0, 0.0)
    d = jnp.where(cok, jnp.log(jnp.where(cok, uv[1], 1.0)), 0.0)
    # Newton polish (value: eta* to rounding; derivative: the implicit-function one)
    mu_s = jax.lax.stop_gradient(A * jnp.exp(o[:, None] + d[None, :] + xb0))
    fac = _fe_factor(mu_s, A, e_ref)
    E = X - A * jnp.exp(o[:, None] + d[None, :] + xb)
    s_o, s_d = _fe_apply(fac, jnp.sum(E, axis=1)[:, None], jnp.sum(E, axis=0)[:, None])
    o, d = o + s_o[:, 0], d + s_d[:, 0]
    mu = A * jnp.exp(o[:, None] + d[None, :] + xb)
    return o, d, mu, err, it, fac


_ppml_jit = jax.jit(ppml_fixed_effects, static_argnames=("tol", "max_iter"))


def _partial_fe(w, A, e_ref, xs, fac=None):
    """Weighted (``w``, on the active pairs) FWL partialling of the regressors ``xs`` (K, N, N) on
    the origin and destination dummies (``fac``: a factorisation of the same weights, if at hand)."""
    wx = (w * A)[None] * xs
    fac = _fe_factor(w, A, e_ref) if fac is None else fac
    p_o, p_d = _fe_apply(fac, jnp.sum(wx, axis=2).T, jnp.sum(wx, axis=1).T)
    return (xs - p_o.T[:, :, None] - p_d.T[:, None, :]) * A[None]


def _gravity_fit(b, X, xs, A, e_ref, method, tol):
    """The gravity fit at slopes ``b``: residuals ``e`` on the active pairs, the regressors ``xt``
    partialled on the fixed effects, the fit's weights ``w`` (mu for PPML, the positive-pair
    indicator for the log-linear (34)), the effects ``o``, ``d`` and the PPML score error."""
    xb = jnp.tensordot(b, xs, axes=1)
    if method == "ppml":
        o, d, mu, err, _, fac = ppml_fixed_effects(X, xb, A, e_ref, tol=tol)
        # the weights of the partialling: mu at eta* (equal to mu to rounding), factorised once
        xt = _partial_fe(fac["mu"], A, e_ref, xs, fac)
        return A * X - mu, xt, fac["mu"], o, d, err
    if method == "loglinear":
        P = A * (X > 0)
        y = jnp.log(jnp.where(X > 0, X, 1.0))
        r = P * (y - xb)
        e_o, e_d = _fe_solve(P, P, e_ref, jnp.sum(r, axis=1)[:, None], jnp.sum(r, axis=0)[:, None])
        o, d = e_o[:, 0], e_d[:, 0]
        resid = P * (y - o[:, None] - d[None, :] - xb)
        return resid, _partial_fe(P, P, e_ref, xs), P, o, d, jnp.asarray(0.0)
    raise ParameterError("gravity", f"must be 'ppml' or 'loglinear'; got {method!r}")


def gravity_moments(b, X, xs, A, e_ref, *, method: str = "ppml", tol: float = 1e-11):
    """Per-origin-city gravity moments, shape (N, K), and the fitted fixed effects.

    ``b`` (K,): slopes of log E[X_nc] on ``xs`` (K, N, N), b = (-theta delta^d, -theta delta^I).
    ``method="ppml"``: the FWL-partialled PPML scores sum_c A_nc (X_nc - mu_nc) x~_nc (x~: the
    regressors with their mu-weighted projection on the fixed effects removed).
    ``method="loglinear"``: the paper's (34) on positive cross-city counts, the OLS normal
    equations sum_c 1[X_nc > 0] (log X_nc - fitted) x~_nc (x~ partialled, unweighted).
    Returns ``(g, o, d, max_score)``.
    """
    e, xt, _, o, d, err = _gravity_fit(b, X, xs, A, e_ref, method, tol)
    return jnp.sum(e[None] * xt, axis=2).T, o, d, err


def gravity_variance_contributions(b, X, xs, A, e_ref, *, method: str = "ppml", tol: float = 1e-11):
    """Per-origin-city gravity contributions for the variance S, shape (N, K): the scores of
    :func:`gravity_moments` with each pair's residual divided by sqrt(1 - h_nc), h_nc = w_nc / sum_n' w_n'c
    (w = mu for PPML, the positive-pair indicator for the log-linear (34)): the leverage of the
    destination fixed effect d_c on the pair.

    Why (first order in the fixed-effect estimation, Var e_nc proportional to w_nc): the fitted residual
    is e_nc - w_nc E_c / C_c (E_c = sum_n e_nc, C_c = sum_n w_nc) plus an origin term that cancels in
    the score because the partialled regressor is w-orthogonal to the origin dummies. The origin-n score
    is then sum_c e_nc x~_nc (1 - h_nc) minus other origins' noise, so E[sum_n g_n^2] = sum w x~^2 (1 - h)
    while the variance of the summed score is sum w x~^2: the clustered S of the plain scores is too
    small by the weighted mean of 1 - h (10-20 % on the 60-city replicas, where a few large origins
    dominate the links into small destinations, h up to 0.85). With e / sqrt(1 - h) it is unbiased to
    first order (HC2-type; checked by redrawing the links of fixed economies, ``benchmarks/mc_jiao_tian_coverage.py
    redraw``).
    """
    e, xt, w, _, _, _ = _gravity_fit(b, X, xs, A, e_ref, method, tol)
    C = jnp.sum(w, axis=0)
    h = jax.lax.stop_gradient(w / jnp.where(C > 0, C, 1.0)[None, :])
    # h = 1 only for a destination reached from a single origin, whose pair the d_c fits exactly (e = 0)
    e = jnp.where(h < 1.0, e / jnp.sqrt(jnp.where(h < 1.0, 1.0 - h, 1.0)), 0.0)
    return jnp.sum(e[None] * xt, axis=2).T


def destination_pair_cost(X, o, d, theta):
    """Destination pair costs lambda_c of (29) (log tau_nc = lambda_c + delta^d log d_nc + delta^I q_n q_c, n != c)
    from the own-city counts: log E[X_cc] = o_c + d_c + theta lambda_c, since tau_cc = 1 while the
    destination effect d_c of the cross-city pairs contains -theta lambda_c. Shape (N,)."""
    return (jnp.log(jnp.diagonal(X)) - o - d) / theta


def log_own_share(X):
    """log s_nn = log(X_nn / sum_c X_nc): with tau from (33), sum_k (tau_nk w_k^beta)^(-theta) = w_n^(-beta theta) / s_nn
    (zero counts contribute zero), so (36) needs only the own-link shares."""
    X = jnp.asarray(X)
    return jnp.log(jnp.diagonal(X)) - jnp.log(jnp.sum(X, axis=1))


# ---------------------------------------------------------------------------------------
# Manager incomes (31) and the technology restriction (gamma)
# ---------------------------------------------------------------------------------------


def income_moments(kappa, log_income, city, N: int):
    """Per-city Fréchet shape moment for kappa = theta (1 - beta) (eq. (31), city scale concentrated out).

    g_n = [(m_n - 1)/kappa - sum_i log pi_i + m_n sum_i u_i log pi_i / sum_i u_i] / mean(m), u_i = pi_i^(-kappa);
    E g_n = 0 exactly at the true kappa for every m_n (see the module docstring); 0 for m_n <= 1.
    """
    m = jax.ops.segment_sum(jnp.ones_like(log_income), city, num_segments=N)
    s_log = jax.ops.segment_sum(log_income, city, num_segments=N)
    a = -kappa * log_income
    amax = jax.lax.stop_gradient(jax.ops.segment_max(a, city, num_segments=N))
    amax = jnp.where(jnp.isfinite(amax), amax, 0.0)
    e = jnp.exp(a - amax[city])
    se = jax.ops.segment_sum(e, city, num_segments=N)
    sel = jax.ops.segment_sum(e * log_income, city, num_segments=N)
    ratio = sel / jnp.where(se > 0, se, 1.0)
    g = (m - 1) / kappa - s_log + m * ratio
    g = jnp.where(m > 1, g, 0.0)
    return g / jnp.mean(m)


def technology_iv_moments(logT, Mx, Zt):
    """IV moments z~_n xi_n, shape (N, k_ex): xi = M_x log T (pi concentrated out by OLS on x), z~ = M_x z_excluded."""
    xi = Mx @ logT
    return Zt * xi[:, None], xi


# ---------------------------------------------------------------------------------------
# Data preparation and the stacked moment functions
# ---------------------------------------------------------------------------------------


def _annihilator(x):
    q, _ = np.linalg.qr(x)
    return np.eye(x.shape[0]) - q @ q.T


def as_data(ds):
    """A uniform view of a data set: a ``jiao_tian_data.Dataset`` (the loader's) or any object with the
    fields ``ids, Lm, Lp, w, W, q, X, dist, Z, instrument_names, income_city, income`` (e.g.
    :func:`standin_replica`). Returns a ``SimpleNamespace`` with those fields plus ``lat``,
    ``lon``, ``names`` and ``meta`` (``meta["truth"]``: the replica's truth, if any)."""
    if isinstance(ds, types.SimpleNamespace) and hasattr(ds, "ids"):
        return ds
    ids = np.asarray(ds.city if hasattr(ds, "city") else ds.ids)
    dist = ds.distances() if hasattr(ds, "distances") else np.asarray(ds.dist)
    names = None
    cities = getattr(ds, "cities", None)
    if cities is not None and "name" in cities.columns:
        names = [str(v) for v in cities["name"].tolist()]
    states = getattr(ds, "states", None)
    if cities is not None and "state" in cities.columns and not cities["state"].isna().all():
        states = cities["state"].to_numpy(object)
    truth = getattr(ds, "truth", None)
    return types.SimpleNamespace(
        ids=ids, Lm=np.asarray(ds.Lm, float), Lp=np.asarray(ds.Lp, float), w=np.asarray(ds.w, float),
        W=np.asarray(ds.W, float), q=np.asarray(ds.q, float), X=np.asarray(ds.X, float), dist=np.asarray(dist, float),
        Z=np.asarray(ds.Z, float), instrument_names=tuple(ds.instrument_names),
        income_city=np.asarray(ds.income_city, int), income=np.asarray(ds.income, float),
        lat=np.asarray(getattr(ds, "lat", np.full(len(ids), np.nan)), float),
        lon=np.asarray(getattr(ds, "lon", np.full(len(ids), np.nan)), float), names=names,
        states=None if states is None else np.asarray(states, dtype=object),
        meta={"truth": truth, "label": (truth or {}).get("label", LABEL), "source": getattr(ds, "paths", None)})


def true_values(data) -> dict:
    """theta, gamma, delta_d, delta_I (and alpha, beta) of a replica's truth (``truth.json`` layout
    of ``jiao_tian_data`` or :func:`standin_replica`'s), or {} when the data carry none."""
    tr = (as_data(data).meta or {}).get("truth")
    if not tr:
        return {}
    src = tr.get("parameters", tr)
    return {k: float(src[k]) for k in ("theta", "gamma", "delta_d", "delta_I", "alpha", "beta") if k in src}


def prepare(data, *, technology_shifters, housing_shifters=(), alpha=jt.TABLE5["alpha"], beta=jt.TABLE5["beta"],
            gravity: str = "ppml", mode: str = "inversion") -> dict:
    """Arrays the moment functions need (a dict of jnp arrays plus static entries).

    ``data``: a :class:`spatialjax.models.jiao_tian_data.JTData` (or any object with its fields).
    ``technology_shifters``: instrument columns x_n that enter log T_n (with a constant); the
    other instrument columns are the excluded instruments of the gamma moments.
    ``housing_shifters``: columns that enter log H_n (full-solution mode only).
    """
    data = as_data(data)
    names = tuple(data.instrument_names)
    for s in list(technology_shifters) + list(housing_shifters):
        if s not in names:
            raise ParameterError("model.technology_shifters" if s in technology_shifters else "model.housing_shifters",
                                 f"unknown instrument {s!r}; instruments.csv has {list(names)}")
    excluded = [s for s in names if s not in technology_shifters]
    if mode == "inversion" and not excluded:
        raise ParameterError("model.technology_shifters",
                             "every instrument enters the T equation, so no instrument is excluded and gamma is not "
                             "identified; leave at least one instrument (e.g. a housing shifter) out")
    N = len(data.ids)
    Z = np.asarray(data.Z, float)
    col = {s: Z[:, i] for i, s in enumerate(names)}
    x = np.column_stack([np.ones(N)] + [col[s] for s in technology_shifters])
    Mx = _annihilator(x)
    Zex = np.column_stack([col[s] for s in excluded]) if excluded else np.zeros((N, 0))
    Zt = Mx @ Zex
    Zt = Zt / np.maximum(Zt.std(axis=0), 1e-300)
    X = np.asarray(data.X, float)
    Zall = np.column_stack([np.ones(N), Z])
    zs = Zall.std(axis=0)
    zs[0] = 1.0
    xH = np.column_stack([col[s] for s in housing_shifters]) if housing_shifters else np.zeros((N, 0))
    if np.any(np.diagonal(X) <= 0):
        i = int(np.flatnonzero(np.diagonal(X) <= 0)[0])
        raise ParameterError("links.csv:count", f"own-city pair of city {data.ids[i]} is zero; (33) and (36) "
                                                "normalise by X_nn, which must be > 0")
    A = gravity_mask(X)
    ref = int(np.argmax((A * X).sum(axis=0)))
    out = dict(
        X=jnp.asarray(X), A=jnp.asarray(A), e_ref=jnp.asarray(np.eye(N)[ref]), log_s=log_own_share(jnp.asarray(X)),
        xs=gravity_design(jnp.asarray(data.dist), jnp.asarray(data.q)),
        w=jnp.asarray(data.w, float), Lm=jnp.asarray(data.Lm, float), Lp=jnp.asarray(data.Lp, float),
        W=jnp.asarray(data.W, float), q=jnp.asarray(data.q, float), dist=jnp.asarray(data.dist, float),
        log_income=jnp.log(jnp.asarray(data.income, float)), income_city=jnp.asarray(data.income_city, jnp.int32),
        Mx=jnp.asarray(Mx), Zt=jnp.asarray(Zt), x=jnp.asarray(x), xH=jnp.asarray(xH),
        Zall=jnp.asarray(Zall / zs), alpha=float(alpha), beta=float(beta),
        # identifies the data set in the full-solution warm-start cache (a float: it travels through jit)
        cache_key=jnp.asarray(float(int(hashlib.sha256(X.tobytes() + np.asarray(data.w, float).tobytes())
                                        .hexdigest()[:12], 16))),
    )
    meta = dict(N=N, gravity=gravity, mode=mode, excluded=tuple(excluded), technology_shifters=tuple(technology_shifters),
                housing_shifters=tuple(housing_shifters))
    return out, meta


def _fitted_log_tau(p, o, dd, d):
    """log tau_nc of (29) at the estimates, with the destination pair costs lambda_c from the own-city counts."""
    N = d["X"].shape[0]
    off = 1.0 - jnp.eye(N)
    lam = destination_pair_cost(d["X"], o, dd, p["theta"])
    return (lam[None, :] + p["delta_d"] * d["xs"][0] + p["delta_I"] * d["xs"][1]) * off, lam


def _gravity_block(p, d, gravity):
    b = jnp.stack([-p["theta"] * p["delta_d"], -p["theta"] * p["delta_I"]])
    g, o, dd, _ = gravity_moments(b, d["X"], d["xs"], d["A"], d["e_ref"], method=gravity)
    return g, o, dd


def _inversion_rows(p: dict, d: dict, gravity: str, hc2: bool):
    N = d["X"].shape[0]
    b = jnp.stack([-p["theta"] * p["delta_d"], -p["theta"] * p["delta_I"]])
    if hc2:
        g_grav = gravity_variance_contributions(b, d["X"], d["xs"], d["A"], d["e_ref"], method=gravity)
    else:
        g_grav, _, _, _ = gravity_moments(b, d["X"], d["xs"], d["A"], d["e_ref"], method=gravity)
    kappa = p["theta"] * (1 - d["beta"])
    g_inc = income_moments(kappa, d["log_income"], d["income_city"], N)
    logT = log_technology_from_counts(p["theta"], p["gamma"], d["w"], d["Lm"], d["log_s"])
    g_iv, _ = technology_iv_moments(logT, d["Mx"], d["Zt"])
    if hc2:  # xi_n / sqrt(1 - h^x_n), with 1 - h^x_n = (M_x)_nn
        g_iv = g_iv / jnp.sqrt(jnp.clip(jnp.diagonal(d["Mx"]), 1e-12))[:, None]
    return jnp.concatenate([g_grav, g_inc[:, None], g_iv], axis=1)


def inversion_moments(p: dict, d: dict, *, gravity: str = "ppml"):
    """Stacked moments of the inversion mode, shape (N, 2 + 1 + k_excluded), at parameters ``p``
    (dict with theta, gamma, delta_d, delta_I): gravity (2), income (1), technology IV (k_ex)."""
    return _inversion_rows(p, d, gravity, hc2=False)


def inversion_variance_moments(p: dict, d: dict, *, gravity: str = "ppml"):
    """The rows the GMM variance S is computed from in the inversion mode (``options["variance_moments"]``
    of :func:`spatialjax.gmm.estimate`), shape and order as :func:`inversion_moments`, with the leverage of
    the concentrated nuisance parameters corrected HC2-style:

    * gravity: each pair's residual over sqrt(1 - h_nc), h the destination fixed effect's leverage
      (:func:`gravity_variance_contributions`);
    * income: unchanged (the city scale is concentrated out exactly and (m_n - 1)/kappa makes the
      moment mean-zero; its S is unbiased at the truth);
    * technology IV: xi_n over sqrt(1 - h^x_n), h^x_n = 1 - (M_x)_nn the leverage of the OLS on the T
      shifters x_n that concentrates out pi.

    Measured (``benchmarks/mc_jiao_tian_coverage.py``, 200 replica seeds at N = 60): the Monte Carlo
    variance of the moments at the truth is 1.03-1.21 times the mean plain S; these rows raise the SEs
    by 0-3 % and the coverage of the 95 % intervals from 0.912 to 0.914. The rest of the shortfall is
    small-sample: at N = 200 the plain intervals cover 0.948 (``benchmarks/README.md``)."""
    return _inversion_rows(p, d, gravity, hc2=True)


# ---------------------------------------------------------------------------------------
# Full-solution mode: homotopy from the data-inverted economy, host-side warm-start cache
# ---------------------------------------------------------------------------------------

#: Host-side warm-start cache of the full-solution mode: ``cache_key -> y`` (the last converged
#: solution of each data set) and counters of how each evaluation was solved.
_WARM_CACHE: dict = {}
_WARM_STATS = {"warm": 0, "homotopy": 0, "failed": 0}
WARM_JUMP = 0.5  # branch guard: a warm solve that moves any log unknown by more than this is not trusted


def clear_warm_cache() -> None:
    """Empty the full-solution warm-start cache and reset its counters."""
    _WARM_CACHE.clear()
    for k in _WARM_STATS:
        _WARM_STATS[k] = 0


def warm_cache_stats() -> dict:
    """Counters of the full-solution inner solves since :func:`clear_warm_cache`: ``warm`` (solved
    from the previous evaluation's solution), ``homotopy`` (followed the path from the
    data-inverted economy), ``failed`` (no equilibrium on the data's branch: the evaluation
    returned ``ok = False``)."""
    return dict(_WARM_STATS)


def _cache_fetch(key, n):
    y = _WARM_CACHE.get(float(np.asarray(key)))
    if y is None or y.shape != (n,):
        return np.zeros(n), np.asarray(False)
    return y.copy(), np.asarray(True)


def _cache_store(key, y, ok, warm_ok):
    y, ok, warm_ok = np.asarray(y), np.asarray(ok), np.asarray(warm_ok)
    if y.ndim > 1:  # vmapped (finite differences): keep the first converged point, count each
        for i in range(y.shape[0]):
            _cache_store(key, y[i], ok.reshape(-1)[i], warm_ok.reshape(-1)[i])
        return
    if bool(ok):
        _WARM_CACHE[float(key)] = y.copy()
        _WARM_STATS["warm" if bool(warm_ok) else "homotopy"] += 1
    else:
        _WARM_STATS["failed"] += 1


def _fs_params(d, p, logT, logH, Lp_total):
    return jt.Params(alpha=jnp.asarray(d["alpha"]), beta=jnp.asarray(d["beta"]), theta=p["theta"], gamma=p["gamma"],
                     T=jnp.exp(logT), tau=jnp.exp(p["_log_tau"]), H=jnp.exp(logH), Lm_total=jnp.sum(d["Lm"]),
                     Lp_total=Lp_total)


def full_solution_economy(p: dict, d: dict, *, gravity: str = "ppml", pi_names=(), rho_names=()):
    """The two economies of the full-solution mode at parameters ``p``.

    Returns ``(start, target, y_data, g_grav, g_inc)``: ``start`` is the *data-inverted* economy
    (tau_nc fitted (29), T_n from (36), H_n from (35) with the model's incomes at the observed
    allocation, L^p total the model's at the data) of which the observed allocation ``y_data`` is an
    exact equilibrium; ``target`` has the same tau and the parametric fundamentals
    log T_n = x_n' pi (and log H_n = x^H_n' rho when ``rho_names``; else H_n as in ``start``), with the
    observed L^p total. Both as dicts of log T, log H, L^p total (plus the shared ``p``).
    """
    N = d["X"].shape[0]
    g_grav, o, dd = _gravity_block(p, d, gravity)
    kappa = p["theta"] * (1 - d["beta"])
    g_inc = income_moments(kappa, d["log_income"], d["income_city"], N)
    log_tau, _ = _fitted_log_tau(p, o, dd, d)
    p = {**p, "_log_tau": log_tau}
    logT_inv = log_technology(d["alpha"], d["beta"], p["theta"], p["gamma"], log_tau, d["w"], d["Lm"])
    P0 = _fs_params(d, p, logT_inv, jnp.zeros(N), jnp.asarray(1.0))
    out = jt.equilibrium_objects(P0, d["w"], d["Lm"])
    logH_inv = jnp.log(invert_housing(d["alpha"], out.W, d["w"]))
    start = dict(logT=logT_inv, logH=logH_inv, Lp_total=jnp.sum(out.Lp))
    logT = d["x"] @ jnp.stack([p[k] for k in pi_names])
    logH = d["xH"] @ jnp.stack([p[k] for k in rho_names]) if rho_names else logH_inv
    target = dict(logT=logT, logH=logH, Lp_total=jnp.sum(d["Lp"]))
    y_data = jt._y_from_data(_fs_params(d, p, logT_inv, logH_inv, start["Lp_total"]), d["w"], d["Lm"])
    return p, start, target, y_data, g_grav, g_inc


def _along(d, p, start, target, t):
    """The economy at t in [0, 1] on the homotopy path: log T, log H and log L^p total linear in t."""
    lin = lambda a, b: a + t * (b - a)  # noqa: E731
    return _fs_params(d, p, lin(start["logT"], target["logT"]), lin(start["logH"], target["logH"]),
                      jnp.exp(lin(jnp.log(start["Lp_total"]), jnp.log(target["Lp_total"]))))


def full_solution_solve(p, d, start, target, y_data, *, tol=1e-10, max_steps=30, warm=None):
    """Solve the target economy on the branch through the observed allocation.

    ``warm``: ``(y_prev, has_prev)`` (the previous evaluation's solution): first a warm Newton
    solve from it, trusted when it converges regularly and moves no log unknown by more than
    :data:`WARM_JUMP`; otherwise (or without ``warm``) natural continuation
    (:func:`spatialjax.continuation.homotopy`, secant predictor, step halving) in t from the
    data-inverted economy (t = 0, where ``y_data`` is exact) to the parametric one (t = 1), then a
    Newton polish at t = 1. The returned solution is differentiable (implicit function theorem at
    the root, :func:`jiao_tian.solve`), whichever path found it. Returns ``(sol, warm_used, t_reached)``.
    """
    from spatialjax.continuation import homotopy

    params = _along(d, p, start, target, 1.0)
    sg = jax.lax.stop_gradient

    def path():
        a = sg((p, start, target))

        def fn(y, t, a):
            return jt.residual(y, _along(d, a[0], a[1], a[2], t))

        def jac(y, t, a):
            return jt.jacobian(y, _along(d, a[0], a[1], a[2], t))

        h = homotopy(fn, sg(y_data), a, 0.0, 1.0, h0=0.25, h_max=0.5, h_min=1e-4, tol=max(tol, 1e-9),
                     max_corrector=15, jac=jac, reuse_jacobian=True, max_correction=0.3)
        sol = jt.solve(params, sg(h.value), tol=tol, max_steps=max_steps)
        return sol, jnp.asarray(False), h.lam_reached

    if warm is None:
        return path()
    y_prev, has_prev = warm
    sol_w = jt.solve(params, sg(jnp.where(has_prev, y_prev, y_data)), tol=tol, max_steps=max_steps)
    good = has_prev & sol_w.converged & jnp.all(jnp.isfinite(sol_w.y)) & \
        (jnp.max(jnp.abs(sol_w.y - y_prev)) <= WARM_JUMP)
    return jax.lax.cond(good, lambda: (sol_w, jnp.asarray(True), jnp.asarray(1.0, sol_w.y.dtype)), path)


def full_solution_moments(p: dict, d: dict, *, gravity: str = "ppml", pi_names=(), rho_names=(),
                          tol: float = 1e-10, max_steps: int = 30, warm_cache: bool = True,
                          return_solution: bool = False):
    """Moments of the full-solution mode and ``ok`` (False when no equilibrium on the data's branch was found).

    ``p`` holds theta, gamma, delta_d, delta_I and the technology coefficients ``pi_<name>``
    (log T_n = x_n' pi, ``pi_const`` first) and, with parametric housing, ``rho_<name>``
    (log H_n = x^H_n' rho, no constant: the level of H does not move the allocation).
    The inner solve is :func:`full_solution_solve` (homotopy from the data-inverted economy;
    with ``warm_cache`` first a warm start from the previous evaluation's solution, kept in a
    host-side cache keyed by the data set, ``d["cache_key"]``). Columns: gravity (2), income (1),
    then z_n (log y^data_n - log y_n) for y = L^m, L^p, w with z = (1, instruments).
    A failed solve gives NaN moments and ``ok = False`` (the estimator counts it and treats it as
    +inf), never a plausible number.
    """
    N = d["X"].shape[0]
    p, start, target, y_data, g_grav, g_inc = full_solution_economy(p, d, gravity=gravity, pi_names=pi_names,
                                                                    rho_names=rho_names)
    n = 2 * N + 2
    warm = None
    if warm_cache:
        key = d["cache_key"]
        warm = jax.pure_callback(_cache_fetch, (jax.ShapeDtypeStruct((n,), jnp.float64),
                                                jax.ShapeDtypeStruct((), jnp.bool_)), key, n,
                                 vmap_method="broadcast_all")
        warm = jax.lax.stop_gradient(warm[0]), warm[1]
    sol, warm_used, _ = full_solution_solve(p, d, start, target, y_data, tol=tol, max_steps=max_steps, warm=warm)
    ok = sol.converged & jnp.all(jnp.isfinite(sol.y))
    if warm_cache:
        jax.debug.callback(_cache_store, key, jax.lax.stop_gradient(sol.y), ok, warm_used)
    e = jnp.stack([jnp.log(d["Lm"]) - jnp.log(sol.Lm), jnp.log(d["Lp"]) - jnp.log(sol.Lp),
                   jnp.log(d["w"]) - jnp.log(sol.w)], axis=1)  # (N, 3)
    g_fit = (d["Zall"][:, :, None] * e[:, None, :]).reshape(N, -1)
    g = jnp.concatenate([g_grav, g_inc[:, None], g_fit], axis=1)
    g = jnp.where(ok, g, jnp.nan)
    if return_solution:
        return g, ok, sol
    return g, ok


# ---------------------------------------------------------------------------------------
# A stand-in replica (tests and benchmarks; the embedded data come from jiao_tian_data)
# ---------------------------------------------------------------------------------------


def standin_replica(N: int = 60, seed: int = 0, *, xi_sd: float = 0.05, links_per_city: float = 400.0,
                    managers_per_city: float = 40.0, lam: float = 1.0, side: float | None = None,
                    params: dict | None = None):
    """A small economy drawn from the model, with the fields of ``JTData`` (``ids``, ``Lm``, ``Lp``,
    ``w``, ``W``, ``q``, ``X``, ``dist``, ``Z``, ``instrument_names``, ``income_city``, ``income``,
    ``meta``): a self-contained stand-in for ``jiao_tian_data.generate_replica`` (random
    locations in a square instead of the US geography).

    Instruments z1, z2 enter log T_n = 0.3 z1 + 0.2 z2 + xi_n (xi ~ N(0, xi_sd^2)); h1, h2 enter
    log H_n = 0.4 h1 + 0.2 h2 only (excluded from T). q_n rises with log H_n, with noise.
    The equilibrium is solved by the cold-start homotopy; links are Poisson with mean
    proportional to L^m_n x_nc (32); manager incomes are Fréchet draws (12) with shape
    theta (1 - beta) and mean E[pi_n] (13). Returns ``(data, truth)``.
    """
    tp = dict(jt.TABLE5) if params is None else {**jt.TABLE5, **params}
    rng = np.random.default_rng(seed)
    if side is None:
        side = 30.0 * math.sqrt(N / 722)
    loc = rng.uniform(0, side, size=(N, 2))
    dist = 1.0 + np.sqrt(((loc[:, None, :] - loc[None, :, :]) ** 2).sum(-1))
    Z = rng.standard_normal((N, 4))
    pi = np.array([0.3, 0.2])
    rho = np.array([0.4, 0.2])
    xi = xi_sd * rng.standard_normal(N)
    logT = Z[:, :2] @ pi + xi
    logH = Z[:, 2:] @ rho
    q = np.clip(1.0 + 0.3 * (logH - logH.mean()) + 0.3 * rng.standard_normal(N), 0.0, None)
    tau = np.asarray(jt.fragmentation_costs(dist, q, tp["delta_d"], tp["delta_I"], lam=lam))
    if np.any(tau < 1):
        raise ParameterError("lam", "the drawn economy has tau_nc < 1; raise lam")
    P = jt.Params(alpha=tp["alpha"], beta=tp["beta"], theta=tp["theta"], gamma=tp["gamma"], T=jnp.exp(logT),
                  tau=jnp.asarray(tau), H=jnp.exp(logH), Lm_total=1.0, Lp_total=2.0)
    sol = jt.solve(P)
    if not bool(sol.converged):
        raise RuntimeError(f"stand-in replica: equilibrium solve failed ({sol.status})")
    Lm, Lp, w, W = (np.asarray(v) for v in (sol.Lm, sol.Lp, sol.w, sol.W))
    mean_links = links_per_city * N / Lm.sum() * Lm[:, None] * np.asarray(sol.x)
    X = rng.poisson(mean_links).astype(float)
    m = 2 + rng.poisson(managers_per_city * N * Lm / Lm.sum())
    kappa = tp["theta"] * (1 - tp["beta"])
    scale = np.asarray(sol.Epi) / math.gamma(1 - 1 / kappa)
    city = np.repeat(np.arange(N), m)
    U = rng.uniform(size=city.size)
    income = scale[city] * (-np.log(U)) ** (-1 / kappa)
    ids = np.arange(1, N + 1)
    data = types.SimpleNamespace(
        ids=ids, Lm=Lm, Lp=Lp, w=w, W=W, q=q, X=X, dist=dist, Z=Z, instrument_names=("z1", "z2", "h1", "h2"),
        income_city=city, income=income, lat=loc[:, 1], lon=loc[:, 0], names=[f"city {i}" for i in ids],
        meta=dict(label="model-generated stand-in (random geography)", truth=None))
    truth = dict(theta=tp["theta"], gamma=tp["gamma"], beta=tp["beta"], alpha=tp["alpha"], delta_d=tp["delta_d"],
                 delta_I=tp["delta_I"], lam=lam, pi=dict(const=0.0, z1=pi[0], z2=pi[1]), rho=dict(h1=rho[0], h2=rho[1]),
                 T=np.exp(logT), H=np.exp(logH), xi=xi)
    data.meta["truth"] = truth
    return data, truth


# ---------------------------------------------------------------------------------------
# The problem module for ``spatialjax calibrate`` (protocol: spatialjax.calibrate)
# ---------------------------------------------------------------------------------------


def _spec(*a, **k):
    from spatialjax.calibrate import Spec

    return Spec(*a, **k)


CONFIG_SCHEMA = {
    "data": {
        "cities": _spec("path", required=True, description="cities.csv: city, lat, lon, managers, workers, wage, "
                                                            "income, internet (+ name, state)"),
        "links": _spec("path", required=True, description="links.csv: origin (HQ city), destination, count"),
        "manager_incomes": _spec("path", required=True, description="manager_incomes.csv: city, income"),
        "instruments": _spec("path", required=True, description="instruments.csv: city, one column per instrument"),
    },
    "model": {
        "mode": _spec("str", default="inversion", allowed=("inversion", "full-solution"),
                      description="inversion: T, H inverted exactly, gamma from E[z xi] = 0; full-solution: "
                                  "parametric T, H and the solved equilibrium matched to the data"),
        "gravity": _spec("str", default="ppml", allowed=("ppml", "loglinear"),
                         description="gravity moments: PPML scores with profiled fixed effects, or the paper's "
                                     "log-linear (34) on positive counts"),
        "technology_shifters": _spec("list[str]", required=True,
                                     description="instrument columns that enter log T_n (the others are excluded "
                                                 "instruments for gamma)"),
        "housing_shifters": _spec("list[str]", default=[],
                                  description="instrument columns that enter log H_n (full-solution mode)"),
        "housing": _spec("str", default="inverted", allowed=("inverted", "parametric"),
                         description="full-solution mode: H_n from (35) at the observed allocation (inverted), or "
                                     "log H_n = housing_shifters' rho (parametric; folds on the replicas, see the "
                                     "module docstring)"),
        "solve_tol": _spec("float", default=1e-10, range=(0, None), open=True,
                           description="max-norm residual tolerance of the inner equilibrium solves"),
        "max_newton_steps": _spec("int", default=30, range=(1, None),
                                  description="Newton iterations of each warm-started inner solve (full-solution)"),
        "variance": _spec("str", default="hc2", allowed=("hc2", "plain"),
                          description="inversion mode: S from leverage-corrected (HC2-type) residuals of the gravity "
                                      "and technology moments, or from the moments themselves"),
    },
    "counterfactuals": {
        "no_internet": _spec("bool", description="no-internet counterfactual (Section 5.3, Tables 7-8)"),
        "steps": _spec("int", range=(1, None), description="continuation steps along the shock"),
        "sensitivity_gamma": _spec("list[float]", range=(0, None), description="gamma values of the Table 10 analog"),
        "sensitivity_delta_I": _spec("list[float]", description="delta^I values of the Table 11 analog"),
        "digital_divide": _spec("bool", description="digital-divide policy (Section 5.4)"),
        "digital_divide_quantile": _spec("float", range=(0, 1), open=True,
                                         description="under-served: q_n below this quantile"),
        "digital_divide_target": _spec("float", description="target quality (default: the median of q)"),
        "elastic_housing_epsilon": _spec("float", range=(0, None),
                                         description="housing supply elasticity of Appendix K (0 to skip)"),
        "welfare_gradient": _spec("bool", description="welfare-gradient map d log U / d q_n"),
        "fd_check_cities": _spec("int", range=(0, None), description="cities checked by finite differences"),
        "fd_step": _spec("float", range=(0, None), open=True, description="finite-difference step in q_n"),
        "headline_gradients": _spec("bool", description="gradients and delta-method SEs of headline numbers"),
        "plots": _spec("bool", description="write the counterfactual plots"),
        "data_label": _spec("str", description="label of the data in titles and tables"),
    },
}

PARAMETERS = {
    "theta": "Fréchet shape of manager productivity theta (Table 5: 4.11)",
    "gamma": "agglomeration elasticity gamma (Table 5: 0.010)",
    "delta_d": "distance elasticity of fragmentation costs delta^d, eq. (29) (Table 5: 0.230)",
    "delta_I": "internet elasticity of fragmentation costs delta^I, eq. (29) (Table 5: -0.010)",
    "alpha": "tradable share alpha (1 - alpha = 0.24 housing share; fixed)",
    "beta": "span of control beta (0.53; fixed)",
}


def check_config(cfg: dict, file: str) -> None:
    """alpha and beta are fixed (the moments do not identify them); shifter lists are consistent."""
    for name in ("alpha", "beta"):
        if cfg["parameters"][name]["estimate"]:
            raise ParameterError(f"{file}: parameters.{name}.estimate",
                                 f"must be false: {name} is taken from the literature (Table 5) and no moment "
                                 f"identifies it; set value = ...")
    m = cfg["model"]
    if m["mode"] == "full-solution" and m["gravity"] != "ppml":
        raise ParameterError(f"{file}: model.gravity", "full-solution mode uses the PPML gravity moments")


def moment_names(meta: dict) -> list[str]:
    names = ["gravity: log d (PPML score)" if meta["gravity"] == "ppml" else "gravity: log d (OLS, eq. 34)",
             "gravity: q_n q_c (PPML score)" if meta["gravity"] == "ppml" else "gravity: q_n q_c (OLS, eq. 34)",
             "manager income: Fréchet shape (31)"]
    if meta["mode"] == "inversion":
        names += [f"E[{z} xi] = 0 (T eq.)" for z in meta["excluded"]]
    else:
        zs = ["1"] + list(meta["instruments"])
        names += [f"E[{z} (log {y} data - model)]" for z in zs for y in ("Lm", "Lp", "w")]
    return names


def _ols(x, y):
    return np.linalg.lstsq(x, y, rcond=None)[0]


def problem_from_data(data, *, mode="inversion", gravity="ppml", technology_shifters=(), housing_shifters=(),
                      theta0: dict | None = None, fixed: dict | None = None, bounds: dict | None = None,
                      solve_tol: float = 1e-10, max_newton_steps: int = 30, true_params: dict | None = None,
                      start_from_inversion: bool = True, housing: str = "inverted",
                      warm_cache: bool = True, variance: str = "hc2") -> Problem:
    """The :class:`~spatialjax.calibrate.Problem` for a loaded data set (``JTData`` or a stand-in).

    ``theta0``: start values of the estimated parameters among theta, gamma, delta_d, delta_I;
    ``fixed``: the others (and alpha, beta). Full-solution mode adds the nuisance coefficients
    ``pi_const``, ``pi_<x>`` (log T) and, with ``housing="parametric"``, ``rho_<h>`` (log H) to
    the estimated parameters, with starts from OLS of the inverted log T_n (36) and log H_n (35)
    at the start values. ``housing="inverted"`` (default): H_n from (35) at the observed
    allocation (``housing_shifters`` unused); see the module docstring for why.
    ``warm_cache``: warm-start each inner solve from the previous evaluation's solution.
    ``variance``: the rows S (weighting and sandwich) is computed from in the inversion mode:
    ``"hc2"`` (default) the leverage-corrected :func:`inversion_variance_moments`, ``"plain"`` the
    moments themselves. The full-solution mode always uses its moments.
    """
    if variance not in ("hc2", "plain"):
        raise ParameterError("model.variance", f"must be 'hc2' or 'plain'; got {variance!r}")
    if housing not in ("inverted", "parametric"):
        raise ParameterError("model.housing", f"must be 'inverted' or 'parametric'; got {housing!r}")
    if mode not in ("inversion", "full-solution"):
        raise ParameterError("model.mode", f"must be 'inversion' or 'full-solution'; got {mode!r}")
    if mode == "full-solution" and gravity != "ppml":
        raise ParameterError("model.gravity", "full-solution mode uses the PPML gravity moments (the fitted tau "
                                              "needs the PPML fixed effects)")
    data = as_data(data)
    fixed = dict(fixed or {})
    alpha = float(fixed.pop("alpha", jt.TABLE5["alpha"]))
    beta = float(fixed.pop("beta", jt.TABLE5["beta"]))
    theta0 = {k: float(v) for k, v in (theta0 or {k: jt.TABLE5[k] for k in PARAM_NAMES}).items()}
    for k in PARAM_NAMES:
        if k not in theta0 and k not in fixed:
            raise ParameterError(f"parameters.{k}", "needs a start value (estimated) or a value (fixed)")
    if housing == "inverted":
        housing_shifters = ()
    d, meta = prepare(data, technology_shifters=technology_shifters, housing_shifters=housing_shifters,
                      alpha=alpha, beta=beta, gravity=gravity, mode=mode)
    meta["instruments"] = tuple(data.instrument_names)
    fixed_j = {k: float(v) for k, v in fixed.items()}
    pi_names = ("pi_const",) + tuple(f"pi_{s}" for s in technology_shifters)
    rho_names = tuple(f"rho_{s}" for s in housing_shifters)
    th0 = dict(theta0)
    bnds = dict(bounds or {})
    if mode == "full-solution":
        if start_from_inversion:
            # Far from the data the parametric economy's equilibrium is far from the observed
            # allocation and the warm-started inner solve fails; the inversion-mode estimates
            # are a consistent first step (the same gravity and income moments).
            inv = problem_from_data(data, mode="inversion", gravity=gravity, technology_shifters=technology_shifters,
                                    theta0=theta0, fixed={"alpha": alpha, "beta": beta, **fixed_j}, bounds=bounds)
            from spatialjax import gmm

            r0 = gmm.estimate(inv.moments, inv.theta0, inv.data, weighting="two-step", bounds=inv.bounds)
            if not r0.converged:
                raise RuntimeError(f"full-solution start: the inversion-mode first step did not converge "
                                   f"({r0.status}: {r0.message})")
            theta0 = {k: float(r0.params[k]) for k in theta0}
            th0 = dict(theta0)
        p0 = {**fixed_j, **theta0}
        p0j = {k: jnp.asarray(v) for k, v in p0.items()}
        _, o, dd = _gravity_block(p0j, d, gravity)
        log_tau, _ = _fitted_log_tau(p0j, o, dd, d)
        logT = np.asarray(log_technology(alpha, beta, p0["theta"], p0["gamma"], log_tau, d["w"], d["Lm"]))
        pi0 = _ols(np.asarray(d["x"]), logT)
        th0.update({n: float(v) for n, v in zip(pi_names, pi0)})
        if rho_names:
            P = jt.Params(alpha=alpha, beta=beta, theta=p0["theta"], gamma=p0["gamma"], T=jnp.exp(logT),
                          tau=jnp.exp(log_tau), H=jnp.ones(meta["N"]), Lm_total=float(np.sum(data.Lm)), Lp_total=1.0)
            o = jt.equilibrium_objects(P, d["w"], d["Lm"])
            logH = np.log(np.asarray(invert_housing(alpha, o.W, d["w"])))
            xH = np.column_stack([np.ones(meta["N"]), np.asarray(d["xH"])])
            rho0 = _ols(xH, logH)[1:]
            th0.update({n: float(v) for n, v in zip(rho_names, rho0)})

    moments = _moment_fn(mode, gravity, tuple(sorted(fixed_j.items())), pi_names, rho_names, float(solve_tol),
                         int(max_newton_steps), bool(warm_cache))
    if mode == "full-solution" and "gamma" in th0:
        # Feasible start: at the inversion-mode gamma the parametric economy can lie past a fold
        # of the data's branch (60-city stand-in: gamma 0.0143 -> continuation stops at t = 0.55;
        # gamma 0.01 solves). Agglomeration is what creates the fold, so shrink gamma0 until the
        # inner solve succeeds; the number of shrinks is in meta["start_gamma_shrinks"].
        g_nc = _moment_fn(mode, gravity, tuple(sorted(fixed_j.items())), pi_names, rho_names, float(solve_tol),
                          int(max_newton_steps), False)
        chk = jax.jit(lambda th: g_nc(th, d)[1])
        shrinks = 0
        while not bool(chk({k: jnp.asarray(float(v)) for k, v in th0.items()})) and shrinks < 8:
            th0["gamma"] = 0.7 * th0["gamma"]
            shrinks += 1
        meta["start_gamma_shrinks"] = shrinks
        meta["start_feasible"] = bool(chk({k: jnp.asarray(float(v)) for k, v in th0.items()}))
    if mode == "full-solution":
        clear_warm_cache()  # warm_cache_stats() then counts this problem's inner solves
    meta.update(alpha=alpha, beta=beta, fixed=fixed_j, pi_names=pi_names, rho_names=rho_names, data=data,
                prepared=d, housing=housing)
    names = moment_names(meta)
    options = {"gtol": 1e-6, "xtol": 1e-10, "gn_tol": 1e-8}
    # Small-sample inference (gmm's df_correction): cov x N/(N - p - K), t(N - p - K) intervals, N
    # cities. In the inversion mode the K = 1 + len(technology_shifters) coefficients pi of
    # log T_n = x_n' pi + xi_n are concentrated out inside the moments; in the full-solution mode
    # they are estimated parameters (in p). Coverage study (benchmarks/README.md): at N = 60 the
    # asymptotic intervals cover 0.91 overall, these 0.94; at N = 200 0.95 -> 0.96; the main job
    # (N = 722) moves its SEs by 0.5 %. `[estimation] small_sample = false` turns it off.
    options["df_correction"] = len(pi_names) if mode == "inversion" else 0
    meta["variance"] = variance if mode == "inversion" else "plain"
    if meta["variance"] == "hc2":
        options["variance_moments"] = _variance_fn(gravity, tuple(sorted(fixed_j.items())))
    return Problem(kind="micro", moments=moments, theta0=th0, data=d,
                   bounds=bnds or None,
                   # gtol 1e-6 (relative to max(1, Q)): parameter error ~1e-9, far below the SEs. The gradient is exact only to the tolerance of the profiled PPML
                   # fixed effects and the inner solves (~1e-11 relative): a criterion of 1e-10 can sit
                   # at that noise floor at N = 722 (line-search stop at |g| = 2e-10). At that floor the
                   # line search stops; the stop counts as converged when the Gauss-Newton step is below
                   # gn_tol (1 + max|u|): 1e-8, where the 60-city full-solution optimum measured 6.2e-9
                   # (XLA -O0 round-off, 2026-12-03; SEs ~1e-2, so ~1e-6 SE), above the generic 1e-9.
                   estimator=dict(weighting="two-step", cov="robust", options=options), moment_names=names,
                   true_params=true_params, fixed={"alpha": alpha, "beta": beta, **fixed_j}, meta=meta,
                   n_obs=meta["N"])


@functools.lru_cache(maxsize=32)
def _moment_fn(mode, gravity, fixed_items, pi_names, rho_names, solve_tol, max_newton_steps, warm_cache=True):
    """The moment function ``g(theta, data)`` for a mode and fixed values: one function object per
    setting, so that the estimator's compiled functions are reused across data sets of the same
    shape (Monte Carlo)."""
    fixed_j = dict(fixed_items)

    def g_inv(theta, dd):
        return inversion_moments({**{k: jnp.asarray(v) for k, v in fixed_j.items()}, **theta}, dd, gravity=gravity)

    def g_full(theta, dd):
        return full_solution_moments({**{k: jnp.asarray(v) for k, v in fixed_j.items()}, **theta}, dd,
                                     gravity=gravity, pi_names=pi_names, rho_names=rho_names, tol=solve_tol,
                                     max_steps=max_newton_steps, warm_cache=warm_cache)

    return g_inv if mode == "inversion" else g_full


@functools.lru_cache(maxsize=32)
def _variance_fn(gravity, fixed_items):
    """The inversion mode's variance rows ``h(theta, data)`` (:func:`inversion_variance_moments`), one
    function object per setting (the estimator's compiled functions are keyed on it)."""
    fixed_j = dict(fixed_items)

    def h_inv(theta, dd):
        return inversion_variance_moments({**{k: jnp.asarray(v) for k, v in fixed_j.items()}, **theta}, dd,
                                          gravity=gravity)

    return h_inv


def _load_data(cfg: dict, base_dir: pathlib.Path):
    from spatialjax.models import jiao_tian_data as jd

    dc = cfg["data"]

    def p(k):
        v = pathlib.Path(dc[k])
        return (v if v.is_absolute() else pathlib.Path(base_dir) / v).resolve()

    cities = p("cities")
    # truth.json beside cities.csv (replicas) is read by the loader when present
    return jd.load(cities.parent, cities=cities, links=p("links"), manager_incomes=p("manager_incomes"),
                   instruments=p("instruments"))


def build_problem(cfg: dict, base_dir) -> Problem:
    """Problem-module entry point: read the four data files the config names and build the GMM problem."""
    from spatialjax.calibrate import parameter_setup

    setup = parameter_setup(cfg)
    data = _load_data(cfg, pathlib.Path(base_dir))
    m = cfg["model"]
    tv = true_values(data)
    true_params = {k: tv[k] for k in PARAM_NAMES if k in tv and k in setup.estimated} or None
    pr = problem_from_data(data, mode=m["mode"], gravity=m["gravity"],
                             technology_shifters=tuple(m["technology_shifters"]),
                             housing_shifters=tuple(m["housing_shifters"]), theta0=setup.theta0, fixed=setup.fixed,
                             bounds=setup.bounds, solve_tol=m["solve_tol"], max_newton_steps=m["max_newton_steps"],
                             true_params=true_params, housing=m["housing"], variance=m["variance"])
    pr.meta["counterfactuals"] = {k: v for k, v in (cfg.get("counterfactuals") or {}).items() if v is not None}
    return pr


# ---------------------------------------------------------------------------------------
# Calibrated baseline, report
# ---------------------------------------------------------------------------------------


def _value(v):
    if isinstance(v, dict):
        v = v["estimate"]
    return float(np.asarray(v))


def calibrated_baseline(estimates: dict, data, *, check_tol: float = 1e-8):
    """The calibrated economy every counterfactual starts from (``jiao_tian_counterfactuals.Baseline``).

    ``estimates``: ``name -> value`` (or ``name -> {"estimate": value, ...}``, the layout of
    ``estimates.json``) for theta, gamma, delta_d, delta_I, and alpha, beta (default Table 5).
    tau_nc is the fitted (29): log tau_nc = lambda_c + delta^d log d_nc + delta^I q_n q_c (n != c) with
    the destination pair costs lambda_c from the own-city counts at the estimates
    (:func:`destination_pair_cost`); ``log_lam`` is lambda_c broadcast over origins, 0 on the
    diagonal. Pairs where the fitted log tau_nc < 0 (possible for close pairs when lambda_c is
    estimated with noise) are set to tau_nc = 1 and counted in ``baseline.meta["tau_clipped"]``;
    log_lam absorbs the clip, so (29) with log_lam reproduces the tau used. T_n is inverted by (36)
    and H_n by (35) (W_n the model's income at the observed allocation), so the observed (w, L^m)
    is an equilibrium: the residual there is checked (``check_tol``) and the baseline solution
    is a warm solve from it. L^p_n then follows from (19) (not targeted: compare with the data
    as the paper's Figure 13 does).
    """
    data = as_data(data)
    e = {k: _value(v) for k, v in estimates.items()}
    alpha, beta = e.get("alpha", jt.TABLE5["alpha"]), e.get("beta", jt.TABLE5["beta"])
    missing = [k for k in PARAM_NAMES if k not in e]
    if missing:
        raise ParameterError("estimates", f"missing {missing}; needs theta, gamma, delta_d, delta_I")
    N = len(data.ids)
    X = jnp.asarray(data.X)
    A = gravity_mask(np.asarray(data.X))
    ref = int(np.argmax((A * np.asarray(data.X)).sum(axis=0)))
    xs = gravity_design(jnp.asarray(data.dist), jnp.asarray(data.q))
    b = jnp.asarray([-e["theta"] * e["delta_d"], -e["theta"] * e["delta_I"]])
    o, dd, _, err, _, _ = _ppml_jit(X, jnp.tensordot(b, xs, axes=1), jnp.asarray(A), jnp.asarray(np.eye(N)[ref]))
    lam = np.asarray(destination_pair_cost(X, o, dd, e["theta"]))
    off = 1 - np.eye(N)
    base = e["delta_d"] * np.asarray(xs[0]) + e["delta_I"] * np.asarray(xs[1])
    log_tau = (lam[None, :] + base) * off
    clipped = int(np.sum(log_tau < 0))
    log_tau = np.maximum(log_tau, 0.0)
    log_lam = (log_tau - base) * off
    tau = np.exp(log_tau)
    w, Lm = jnp.asarray(data.w), jnp.asarray(data.Lm)
    a = jnp.asarray  # 0-d arrays, not Python floats: jit does not specialise (recompile) on values
    T = jt.invert_technology(alpha, beta, e["theta"], e["gamma"], jnp.asarray(tau), w, Lm)
    p0 = jt.Params(alpha=a(alpha), beta=a(beta), theta=a(e["theta"]), gamma=a(e["gamma"]), T=T, tau=jnp.asarray(tau),
                   H=jnp.ones(N), Lm_total=a(float(np.sum(data.Lm))), Lp_total=a(1.0))
    out = jt.equilibrium_objects(p0, w, Lm)
    H = invert_housing(alpha, out.W, w)
    params = jt.Params(alpha=a(alpha), beta=a(beta), theta=a(e["theta"]), gamma=a(e["gamma"]), T=T,
                       tau=jnp.asarray(tau), H=H, Lm_total=a(float(np.sum(data.Lm))),
                       Lp_total=a(float(np.sum(np.asarray(out.Lp)))))
    y_data = jt._y_from_data(params, w, Lm)
    res = float(jnp.max(jnp.abs(jt.residual(y_data, params))))
    if not res < check_tol:
        raise RuntimeError(f"calibrated_baseline: the observed allocation is not an equilibrium of the inverted "
                           f"economy (max-norm residual {res:.2e} >= {check_tol:g})")
    sol = jt.solve(params, y_data)
    dev = float(jnp.max(jnp.abs(jnp.log(sol.Lm) - jnp.log(Lm))))
    meta = dict(residual_at_data=res, tau_clipped=clipped, ppml_score=float(err), lambda_c=lam,
                max_log_dev_Lm=dev, Lp_model=np.asarray(out.Lp), W_model=np.asarray(out.W))
    try:
        from spatialjax.models import jiao_tian_counterfactuals as jcf
    except ImportError:  # pragma: no cover - the counterfactual module ships with the package
        jcf = None
    kw = dict(params=params, sol=sol, q=jnp.asarray(data.q), dist=jnp.asarray(data.dist), log_lam=jnp.asarray(log_lam),
              delta_d=e["delta_d"], delta_I=e["delta_I"], names=data.names, lat=data.lat, lon=data.lon, ids=data.ids)
    if getattr(data, "states", None) is not None:  # cities.csv's optional state column: slope_state_fe reported
        kw["states"] = data.states
    if jcf is None:
        b = types.SimpleNamespace(**kw)
    else:
        b = jcf.Baseline(**kw)
    b.meta = meta
    return b


def _plot_model_fit(data, baseline, path, *, full_solution=None, label=LABEL):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spatialjax import atomic

    size = np.log(data.Lm + data.Lp)
    series = [("workers L^p_n (not targeted, cf. Figure 13)", np.log(data.Lp), np.log(baseline.meta["Lp_model"])),
              ("total income W_n", np.log(data.W), np.log(baseline.meta["W_model"]))]
    if full_solution is not None:
        series += [(f"{n} (full-solution model)", np.log(getattr(data, k)), np.log(v))
                   for n, k, v in (("managers L^m_n", "Lm", full_solution["Lm"]), ("wage w_n", "w", full_solution["w"]))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for i, (name, yd, ym) in enumerate(series):
        axes[0].scatter(yd, ym, s=8, alpha=0.7, color=f"C{i}", label=name)
        axes[1].scatter(size, ym - yd, s=8, alpha=0.7, color=f"C{i}", label=name)
    lo = min(np.min(s[1]) for s in series)
    hi = max(np.max(s[1]) for s in series)
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[0].set_xlabel("log data value (persons; model units of the numeraire for W)")
    axes[0].set_ylabel("log model value (calibrated baseline)")
    axes[1].axhline(0, color="k", lw=0.8)
    axes[1].set_xlabel("log city size L^m_n + L^p_n (persons)")
    axes[1].set_ylabel("log model - log data")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Jiao-Tian model fit by city size — {label}", fontsize=10)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)


def _plot_estimates_vs_truth(rows, path, *, label=LABEL):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spatialjax import atomic

    fig, axes = plt.subplots(1, len(rows), figsize=(3.0 * len(rows), 3.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        ax.errorbar([0], [r["estimate"]], yerr=[[2 * r["se"]]] if np.isfinite(r["se"]) else None, fmt="o",
                    capsize=5, color="C0", label="estimate ± 2 SE")
        ax.axhline(r["true"], color="C3", ls="--", label="truth (data-generating)")
        ax.set_xticks([])
        ax.set_title(r["parameter"])
        ax.set_ylabel(f"{r['parameter']} (parameter units)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Estimates vs truth — replica {label}", fontsize=10)
    fig.tight_layout()
    atomic.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)


def report(problem: Problem, result, outdir, *, progress: bool = True) -> dict:
    """Problem-module report: the calibrated baseline, model-fit and estimates-vs-truth plots,
    ``baseline_fit.csv``, then the counterfactuals (``jiao_tian_counterfactuals.run_all``)."""
    import pandas as pd

    from spatialjax import atomic

    outdir = pathlib.Path(outdir)
    data = problem.meta["data"]
    label = (data.meta or {}).get("label", LABEL)
    written: dict[str, pathlib.Path] = {}
    est = {**problem.fixed, **{k: float(result.params[k]) for k in result.param_names if k in result.params}}
    se = dict(zip(result.param_names, np.asarray(result.se_flat, float)))
    if not result.converged:
        print(f"jiao_tian: the estimation did not converge ({result.status}); no baseline or counterfactuals",
              flush=True)
        return written
    b = calibrated_baseline(est, data)
    full = None
    if problem.meta["mode"] == "full-solution":
        # the inner solves of the estimation (counted since the problem was built), before the
        # report's own solve at the estimates
        c = result.convergence or {}
        solves = dict(warm_cache_stats(), objective_evals=c.get("n_objective_evals"),
                      failed_evals=c.get("n_failed_evals"), start_gamma_shrinks=problem.meta.get("start_gamma_shrinks"),
                      note="warm: solved from the previous evaluation's solution; homotopy: followed the path from "
                           "the data-inverted economy; failed: no equilibrium on the data's branch (the evaluation "
                           "returned ok = False and the estimator treated it as +inf). Counted since the problem "
                           "was built (jiao_tian_calibration.warm_cache_stats).")
        written["inner_solves.json"] = atomic.write_json(outdir / "inner_solves.json", solves)
        print(f"jiao_tian: inner solves warm {solves['warm']}, homotopy {solves['homotopy']}, failed "
              f"{solves['failed']} ({solves['failed_evals']} of {solves['objective_evals']} evaluations failed)",
              flush=True)
        full = _solved_allocation(problem, result)
    fit = pd.DataFrame({"city": data.ids, "name": data.names if data.names is not None else [""] * len(data.ids),
                        "workers_data": data.Lp, "workers_model": b.meta["Lp_model"], "income_data": data.W,
                        "income_model": b.meta["W_model"], "lambda_c": b.meta["lambda_c"]})
    written["baseline_fit.csv"] = atomic.write_frame(outdir / "baseline_fit.csv", fit)
    written["model_fit.png"] = _plot_model_fit(data, b, outdir / "model_fit.png", full_solution=full, label=label)
    truth = true_values(data)
    rows = [dict(parameter=k, estimate=est[k], se=se.get(k, np.nan), true=truth[k]) for k in PARAM_NAMES
            if k in truth and k in result.param_names]
    if rows:
        written["estimates_vs_truth.png"] = _plot_estimates_vs_truth(rows, outdir / "estimates_vs_truth.png",
                                                                     label=label)
    try:
        from spatialjax.models import jiao_tian_counterfactuals as jcf
    except ImportError:
        print("jiao_tian: spatialjax.models.jiao_tian_counterfactuals not available; counterfactuals skipped", flush=True)
        return written
    cf = dict(problem.meta.get("counterfactuals") or {})
    cf.setdefault("data_label", label)
    names = list(result.param_names)
    cov = np.asarray(result.cov, float)
    ok_cov = cov.shape == (len(names), len(names)) and np.all(np.isfinite(cov))
    written.update(jcf.run_all(b, outdir, cov=cov if ok_cov else None, param_names=names if ok_cov else None,
                               config=cf, progress=progress))
    return written


def _solved_allocation(problem: Problem, result) -> dict:
    """Full-solution mode: the solved equilibrium allocation at the estimates (for the fit plot)."""
    d = problem.data
    m = problem.meta
    p = {**{k: jnp.asarray(v) for k, v in m["fixed"].items()},
         **{k: jnp.asarray(float(result.params[k])) for k in result.param_names}}
    _, ok, sol = full_solution_moments(p, d, gravity=m["gravity"], pi_names=m["pi_names"], rho_names=m["rho_names"],
                                       return_solution=True)
    return {"Lm": np.asarray(sol.Lm), "Lp": np.asarray(sol.Lp), "w": np.asarray(sol.w), "converged": bool(ok)}
