"""Jiao & Tian (2024), "Geographic Fragmentation in a Knowledge Economy".

N cities; managers (total mass ``Lm_total``) and production workers (``Lp_total``). A manager
living in n draws Fréchet productivities (shape theta, scale T_n) for producing in every
city c and pays an iceberg fragmentation cost tau_nc (tau_nn = 1). Equation numbers refer
to the paper (``shared/seeds/jiao_tian_2024_geographic_fragmentation.txt``); the cleaned
equations and misprints are in ``shared/MODELS.md`` §1.

Equilibrium system (levels, Section 3.1). Unknowns ``y = (log w, log L^m, log U_w, log U_m)``,
shape ``(2N + 2,)``:

* Phi_n = T_n sum_k (tau_nk w_k^beta)^(-theta)                                     (8)
* x_nc = T_n (tau_nc w_c^beta)^(-theta) / Phi_n                                   (9)
* E[pi_n] = zeta ((L^m_n)^(gamma theta) Phi_n)^(1/(theta(1-beta))),
  zeta = beta^(beta/(1-beta)) (1-beta) Gamma(1 - 1/(theta(1-beta)))               (13)
* L^p_nc = eta w_c^-1 x_nc Phi_n^(1/(theta(1-beta))) (L^m_n)^(1+gamma/(1-beta)),
  eta = beta^(1/(1-beta)) Gamma(1 - 1/(theta(1-beta)))                            (19)
* W_n = E[pi_n] L^m_n + w_n L^p_n,   p_n = (1-alpha) W_n / H_n                     (11)
* worker indifference  log w_n - (1-alpha) log p_n = log U_w                      (16)
* manager indifference log E[pi_n] - (1-alpha) log p_n = log U_m                  (14)-(15)
* adding up  sum_n L^m_n = L^m,  sum_c L^p_c = L^p                                 (17)-(18)

The paper's remark "sum_n Phi_n = 1" under (8) is wrong and is not used (MODELS.md).

Cold start. The default :func:`solve` continues the equilibrium from fragmentation autarky
(Proposition 3, closed form :func:`autarky`) along the homotopy
Delta_nc(s) = s * tau_nc^(-theta) (n != c), s: 0 -> 1, with step-size control, then polishes
at s = 1 with the differentiable :func:`spatialjax.solver.solve_root`. A damped fixed point
on wages, or the paper's Appendix G iteration, converge from a uniform start to a
degenerate equilibrium with (almost) all managers in one city at the Table 5 parameters;
the homotopy selects the interior equilibrium connected to autarky. Every solution reports
``min_Lm`` / ``min_Lp`` as a degeneracy diagnostic.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln

import spatialjax  # noqa: F401  (x64)
from spatialjax.continuation import homotopy
from spatialjax.errors import ParameterError
from spatialjax.results import Result
from spatialjax.solver import DENSE_MAX, Linearization, LUFactor, SolveResult, lu_factor, lu_solve, raise_if_failed, solve_root
from spatialjax.tables import format_table
from spatialjax.validation import check_finite, check_once, check_positive, check_shape, _concrete, is_traced

__all__ = [
    "Params", "Solution", "solve", "welfare", "residual", "autarky", "equilibrium_objects", "jacobian",
    "schur_jacobian", "SchurLinearization", "schur_operator", "SchurKrylovLinearization", "log_Lm_from_wages",
    "fragmentation_costs", "invert_technology", "KRYLOV_MIN_N", "invert_housing", "synthetic_economy",
    "eight_city_params", "two_city_params", "table5_params", "moments",
]

# Table 5 calibrated values: 1 - alpha = 0.24, beta = 0.53, gamma = 0.010, theta(1-beta) = 1.93
TABLE5 = dict(alpha=0.76, beta=0.53, gamma=0.010, theta=1.93 / (1 - 0.53), delta_d=0.230, delta_I=-0.010)


def _numeric(name: str):
    """Field converter: lists/tuples become float arrays; strings and other non-numbers are a
    ParameterError naming the field (instead of a NumPy TypeError deep inside a solve).
    Arrays, tracers and Python numbers pass through unchanged."""

    def conv(x):
        if isinstance(x, (str, bytes)) or x is None:
            raise ParameterError(name, f"must be a number or an array of numbers; got {type(x).__name__} {x!r}")
        if isinstance(x, (list, tuple)):
            try:
                return jnp.asarray(np.asarray(x, dtype=float))
            except (TypeError, ValueError):
                raise ParameterError(name, f"must be a number or an array of numbers; got {x!r:.60}") from None
        return x

    return conv


class Params(eqx.Module):
    """Parameters of the Jiao-Tian economy (an ``eqx.Module``: jit/vmap/grad pass through).

    Attributes:
        alpha: Cobb-Douglas share of the tradable good (1 - alpha is the housing share), in (0, 1).
        beta: span of control, in (0, 1).
        theta: Fréchet shape of manager productivity; needs theta (1 - beta) > 1.
        gamma: agglomeration elasticity, f(L) = L^gamma, >= 0.
        T: technology T_n, shape (N,), > 0.
        tau: fragmentation costs tau_nc >= 1, shape (N, N), unit diagonal.
        H: housing supply H_n, shape (N,), > 0.
        Lm_total: total mass of managers L^m > 0.
        Lp_total: total mass of production workers L^p > 0.
    """

    alpha: Any = eqx.field(converter=_numeric("alpha"))
    beta: Any = eqx.field(converter=_numeric("beta"))
    theta: Any = eqx.field(converter=_numeric("theta"))
    gamma: Any = eqx.field(converter=_numeric("gamma"))
    T: jax.Array = eqx.field(converter=_numeric("T"))
    tau: jax.Array = eqx.field(converter=_numeric("tau"))
    H: jax.Array = eqx.field(converter=_numeric("H"))
    Lm_total: Any = eqx.field(default=1.0, converter=_numeric("Lm_total"))
    Lp_total: Any = eqx.field(default=2.0, converter=_numeric("Lp_total"))

    def __check_init__(self):
        validate(self)

    @property
    def N(self) -> int:
        return int(jnp.shape(self.T)[-1])


def validate(p: Params) -> None:
    """Raise :class:`ParameterError` naming the first invalid field (skipped under tracing)."""
    T = _concrete(p.T)
    if T is not None and T.ndim != 1:
        raise ParameterError("T", f"must have shape (N,); got {T.shape}")
    if T is None:
        return
    N = T.shape[0]
    if N < 1:
        raise ParameterError("T", "must have at least one city")
    check_shape("tau", p.tau, (N, N))
    check_shape("H", p.H, (N,))
    for name in ("alpha", "beta", "theta", "gamma", "Lm_total", "Lp_total"):
        v = _concrete(getattr(p, name))
        if v is not None and np.ndim(v) != 0:
            raise ParameterError(name, f"must be a scalar; got shape {np.shape(v)}")
        check_finite(name, getattr(p, name))
    for name in ("alpha", "beta"):
        v = _concrete(getattr(p, name))
        if v is not None and not (0 < float(v) < 1):
            raise ParameterError(name, f"must lie in (0, 1); got {float(v)}")
    g = _concrete(p.gamma)
    if g is not None and float(g) < 0:
        raise ParameterError("gamma", f"must be >= 0; got {float(g)}")
    check_positive("theta", p.theta)
    th, be = _concrete(p.theta), _concrete(p.beta)
    if th is not None and be is not None and not float(th) * (1 - float(be)) > 1:
        raise ParameterError("theta", f"theta*(1-beta) must be > 1 so that expected manager income (13) is finite; "
                                      f"got theta*(1-beta) = {float(th) * (1 - float(be)):.4g}")
    check_positive("T", p.T)
    check_positive("H", p.H)
    check_positive("Lm_total", p.Lm_total)
    check_positive("Lp_total", p.Lp_total)
    check_finite("tau", p.tau)
    tau = _concrete(p.tau)
    if tau is not None:
        d = np.diag(tau)
        if not np.allclose(d, 1.0, rtol=0, atol=1e-12):
            i = int(np.argmax(np.abs(d - 1)))
            raise ParameterError("tau", f"must have a unit diagonal (tau_nn = 1, no cost of producing at home); "
                                        f"got tau[{i},{i}] = {d[i]}")
        if np.any(tau < 1.0 - 1e-12):
            idx = np.argwhere(tau < 1.0 - 1e-12)[0].tolist()
            raise ParameterError("tau", f"iceberg costs must be >= 1; got tau{idx} = {tau[tuple(idx)]}")
    a, gm = _concrete(p.alpha), _concrete(p.gamma)
    if a is not None and g is not None and not (float(gm) + 1 > float(gm) / (1 - float(a))):
        raise ParameterError("gamma", f"regularity condition gamma + 1 > gamma/(1-alpha) of Proposition 3 fails "
                                      f"(gamma={float(gm)}, alpha={float(a)}): cities would be unbounded")


# ---------------------------------------------------------------------------------------
# Constants and equilibrium objects
# ---------------------------------------------------------------------------------------


def _consts(p: Params):
    k = 1.0 / (p.theta * (1.0 - p.beta))
    lg = gammaln(1.0 - k)
    log_zeta = (p.beta / (1 - p.beta)) * jnp.log(p.beta) + jnp.log(1 - p.beta) + lg  # (13)
    log_eta = (1.0 / (1 - p.beta)) * jnp.log(p.beta) + lg  # (19)
    return k, log_zeta, log_eta


def _openness(p: Params, s=1.0):
    """Delta_nc(s) = tau_nc^(-theta) for n != c scaled by s; Delta_nn = 1."""
    N = p.T.shape[-1]
    eye = jnp.eye(N, dtype=p.tau.dtype)
    D = jnp.exp(-p.theta * jnp.log(p.tau))
    return eye + s * (D * (1 - eye))


def _log_openness(p: Params, s=1.0):
    """log Delta_nc(s). At s = 1 (a Python number) this is -theta log tau_nc off the diagonal
    and 0 on it, without the exp/log round trip."""
    if isinstance(s, (int, float)) and s == 1.0:
        N = p.tau.shape[-1]
        return (-p.theta * jnp.log(p.tau)) * (1 - jnp.eye(N, dtype=p.tau.dtype))  # tau_nn does not enter
    return jnp.log(_openness(p, s))


def _log_kernel(p: Params, logw, s=1.0, logD=None):
    """log K_nc = log T_n + log Delta_nc(s) - beta theta log w_c, shape (N, N): the terms of (8)-(9)."""
    logD = _log_openness(p, s) if logD is None else logD
    return jnp.log(p.T)[:, None] + logD - (p.beta * p.theta) * logw[None, :]


class Outcomes(eqx.Module):
    """All equilibrium objects at given (w, L^m). Shapes (N,) unless stated."""

    w: jax.Array
    Lm: jax.Array
    Phi: jax.Array  # (8)
    x: jax.Array  # (N, N) (9)
    Epi: jax.Array  # (13)
    Lp: jax.Array  # workers living and working in c
    W: jax.Array  # (11) total income
    p: jax.Array  # (11) housing rent
    log_Uw: jax.Array  # (N,) log w_n / p_n^(1-alpha)
    log_Um: jax.Array  # (N,) log E[pi_n] / p_n^(1-alpha)
    m: jax.Array  # (N,) eta Phi_n^k (L^m_n)^(1 + gamma/(1-beta)): L^p_nc = m_n x_nc / w_c (19)

    @property
    def Lp_nc(self):
        """(N, N) (19): workers in c hired by managers of n (derived, see :func:`_hires`)."""
        return _hires(self.m, self.x, self.w)


def _hires(m, x, w):
    """L^p_nc = m_n x_nc / w_c (19), shape (..., N, N): derived from the shares x (9) and the
    vector m wherever it is needed, never stored (at N = 10,000 an N x N array is 0.8 GB)."""
    return m[..., :, None] * x / w[..., None, :]


def equilibrium_objects(params: Params, w, Lm, s=1.0, logD=None) -> Outcomes:
    """Evaluate eqs. (8), (9), (11), (13), (19) at wages ``w`` and managers ``Lm`` (shapes (N,))."""
    p = params
    k, log_zeta, log_eta = _consts(p)
    logw, logLm = jnp.log(w), jnp.log(Lm)
    logD = _log_openness(p, s) if logD is None else logD
    btw = (p.beta * p.theta) * logw
    # One exponential pass gives both Phi (8) (a log-sum-exp) and x (9) (a softmax). Any shift
    # of the exponents is exact; c = min_c beta theta log w_c makes every exponent
    # log Delta_nc - beta theta log w_c + c <= 0 (log Delta_nc <= 0: tau >= 1 is validated,
    # Delta_nn = 1) without a reduction over the N x N kernel, and the own-city term
    # >= exp(-beta theta range(log w)) keeps each row's sum away from underflow. log T_n
    # cancels from the shares. On CPU every reduction over an N x N expression materialises
    # it: this form writes one N x N array (the exponentials) where the row max of log K_nc
    # wrote two more (N = 10,000: 0.8 GB each).
    c = jax.lax.stop_gradient(jnp.min(btw))
    e = jnp.exp(logD - (btw - c)[None, :])
    S = jnp.sum(e, axis=1)
    x = e / S[:, None]
    logPhi = jnp.log(p.T) - c + jnp.log(S)  # log Phi_n = log sum_c K_nc, K_nc = T_n Delta_nc w_c^(-beta theta)
    logEpi = log_zeta + (p.gamma / (1 - p.beta)) * logLm + k * logPhi
    log_coef = log_eta + k * logPhi + (1 + p.gamma / (1 - p.beta)) * logLm  # eta Phi^k Lm^(1+g/(1-b))
    coef = jnp.exp(log_coef)
    Lp = ((coef / S) @ e) / w  # = sum_n Lp_nc, as one vector-matrix product (no N x N temporary)
    Epi = jnp.exp(logEpi)
    W = Epi * Lm + w * Lp
    price = (1 - p.alpha) * W / p.H
    log_Uw = logw - (1 - p.alpha) * jnp.log(price)
    log_Um = logEpi - (1 - p.alpha) * jnp.log(price)
    return Outcomes(w=w, Lm=Lm, Phi=jnp.exp(logPhi), x=x, Epi=Epi, Lp=Lp, W=W, p=price,
                    log_Uw=log_Uw, log_Um=log_Um, m=coef)


def residual(y, params: Params, s=1.0, logD=None):
    """Equilibrium residual, shape (2N+2,), at ``y = (log w, log L^m, log U_w, log U_m)``.

    Rows: worker indifference (16) [N], manager indifference (14) [N], adding up of
    managers (17) and of workers (18) (in logs). ``s`` scales cross-city openness (homotopy).
    """
    N = params.T.shape[-1]
    logw, logLm, lUw, lUm = y[:N], y[N:2 * N], y[2 * N], y[2 * N + 1]
    o = equilibrium_objects(params, jnp.exp(logw), jnp.exp(logLm), s, logD)
    return jnp.concatenate([
        o.log_Uw - lUw,
        o.log_Um - lUm,
        jnp.atleast_1d(jnp.log(jnp.sum(o.Lm)) - jnp.log(params.Lm_total)),
        jnp.atleast_1d(jnp.log(jnp.sum(o.Lp)) - jnp.log(params.Lp_total)),
    ])


def _blocks(y, params: Params, s=1.0, logD=None):
    """Blocks of the analytic Jacobian of :func:`residual` (one N x N GEMM, ``M^T X``)."""
    p = params
    N = p.T.shape[-1]
    a, l = y[:N], y[N:2 * N]
    o = equilibrium_objects(p, jnp.exp(a), jnp.exp(l), s, logD)
    k, _, _ = _consts(p)
    bt = p.beta * p.theta
    g = p.gamma / (1 - p.beta)
    X, M = o.x, o.Lp_nc
    I = jnp.eye(N, dtype=y.dtype)
    MT = M.T
    MTX = MT @ X
    dLp_da = (1 - k) * bt * MTX - (1 + bt) * jnp.diag(o.Lp)
    dLp_dl = (1 + g) * MT
    A = o.Epi * o.Lm
    B = o.w * o.Lp
    dW_da = -(k * bt) * A[:, None] * X + jnp.diag(B) + o.w[:, None] * dLp_da
    dW_dl = jnp.diag(A * (1 + g)) + o.w[:, None] * dLp_dl
    c = (1 - p.alpha) / o.W
    return dict(N=N, o=o, k=k, bt=bt, g=g, X=X, MT=MT, MTX=MTX, I=I, A=A, c=c, dLp_da=dLp_da, dLp_dl=dLp_dl,
                dlp_da=c[:, None] * dW_da, dlp_dl=c[:, None] * dW_dl, sLp=jnp.sum(o.Lp), sh=o.Lm / jnp.sum(o.Lm))


def _assemble(b, dtype):
    N, X, I = b["N"], b["X"], b["I"]
    col = jnp.zeros((N, 1), dtype)
    one = -jnp.ones((N, 1), dtype)
    row1 = jnp.concatenate([I - b["dlp_da"], -b["dlp_dl"], one, col], axis=1)
    row2 = jnp.concatenate([-(b["k"] * b["bt"]) * X - b["dlp_da"], b["g"] * I - b["dlp_dl"], col, one], axis=1)
    row3 = jnp.concatenate([jnp.zeros(N, dtype), b["sh"], jnp.zeros(2, dtype)])[None, :]
    row4 = jnp.concatenate([jnp.sum(b["dLp_da"], axis=0) / b["sLp"], jnp.sum(b["dLp_dl"], axis=0) / b["sLp"],
                            jnp.zeros(2, dtype)])[None, :]
    return jnp.concatenate([row1, row2, row3, row4], axis=0)


def jacobian(y, params: Params, s=1.0, logD=None):
    """Analytic Jacobian dF/dy of :func:`residual`, shape (2N+2, 2N+2).

    Built from the structure of (8), (9), (13), (19): with X = [x_nc] and M = [L^p_nc],
    d log Phi / d log w = -beta theta X and d L^p / d log w = (1-k) beta theta M^T X - (1+beta theta) diag(L^p),
    k = 1/(theta(1-beta)). One N x N matrix product (BLAS) instead of 2N+2 forward-mode
    passes; checked against ``jax.jacfwd`` in the tests.
    """
    return _assemble(_blocks(y, params, s, logD), y.dtype)


# ---------------------------------------------------------------------------------------
# Schur-complement linear algebra for Newton: manager locations eliminated by (53)
# ---------------------------------------------------------------------------------------
#
# Manager indifference (14) minus worker indifference (16) removes the rent p_n:
#     log E[pi_n] - log w_n = log U_m - log U_w,
# and by (13) log E[pi_n] = log zeta + g log L^m_n + k log Phi_n, g = gamma/(1-beta), so
#     log L^m_n = (log U_m - log U_w + log w_n - log zeta - k log Phi_n) / g          (53)
# (the exponent 1/g = (1-beta)/gamma is ~47 at Table 5). In the Jacobian, these N
# "difference" rows have the block g I in the L^m columns. Eliminating that block leaves an
# (N+2) x (N+2) Schur complement S in (log w, log U_w, log U_m): each Newton step of the
# full 2N+2 system is solved exactly with an LU of S (8x cheaper than the full LU), and S
# costs no extra matrix product (it reuses M^T X). The Newton iterates are those of the
# full system, so the equilibrium found from a warm start is the same. det J = g^N det S up
# to sign, so J is singular exactly where S is (folds are preserved). Needs gamma > 0.


def log_Lm_from_wages(params: Params, logw, lUw, lUm):
    """log L^m_n implied by wages and the two utility levels, eq. (53) (needs gamma > 0)."""
    p = params
    k, log_zeta, _ = _consts(p)
    logPhi = jax.nn.logsumexp(_log_kernel(p, logw), axis=1)  # (8)
    return (lUm - lUw + logw - log_zeta - k * logPhi) * ((1 - p.beta) / p.gamma)


class SchurLinearization(Linearization):
    """The Jacobian of :func:`residual` with its Schur-complement factorisation.

    Equations reordered as d = (manager - worker) rows (N) and e = (worker rows, (17), (18));
    unknowns as l = log L^m (N) and u = (log w, log U_w, log U_m). Then
    J' = [[g I, H], [K, L]] with H = [-(I + k beta theta X), 1, -1], S = L - K H / g, and a
    solve costs one (N+2) LU solve and a few N x N products. The full matrix is never
    assembled: products use its blocks (``Da`` = d log p / d log w, ``Dl`` = d log p / d log L^m).
    """

    Da: jax.Array  # (N, N)
    Dl: jax.Array  # (N, N)
    X: jax.Array  # (N, N) fragmentation shares x_nc
    sh: jax.Array  # (N,) L^m_n / L^m: row (17) in the l columns
    rP_a: jax.Array  # (N,) row (18) in the log w columns
    rP_l: jax.Array  # (N,) row (18) in the l columns
    kbt: jax.Array
    g: jax.Array
    S: LUFactor

    def _H(self, v):
        N = self.X.shape[0]
        return -(v[:N] + self.kbt * (self.X @ v[:N])) + v[N] - v[N + 1]

    def _HT(self, w):
        return jnp.concatenate([-(w + self.kbt * (w @ self.X)), jnp.stack([jnp.sum(w), -jnp.sum(w)])])

    def _K(self, v):
        return jnp.concatenate([-(self.Dl @ v), jnp.stack([self.sh @ v, self.rP_l @ v])])

    def _KT(self, w):
        N = self.X.shape[0]
        return -(w[:N] @ self.Dl) + w[N] * self.sh + w[N + 1] * self.rP_l

    def solve(self, b, trans: bool = False):
        N = self.X.shape[0]
        if not trans:
            r_d = b[N:2 * N] - b[:N]
            r_e = jnp.concatenate([b[:N], b[2 * N:]])
            x_u = lu_solve(self.S, r_e - self._K(r_d) / self.g)
            x_l = (r_d - self._H(x_u)) / self.g
            return jnp.concatenate([x_u[:N], x_l, x_u[N:]])
        b_l = b[N:2 * N]
        b_u = jnp.concatenate([b[:N], b[2 * N:]])
        lam_e = lu_solve(self.S, b_u - self._HT(b_l) / self.g, trans=True)
        lam_d = (b_l - self._KT(lam_e)) / self.g
        # back from the reordered rows: r' = (r_w, r_L, r_P; r_m - r_w)
        return jnp.concatenate([lam_e[:N] - lam_d, lam_d, lam_e[N:]])

    def mv(self, v, trans: bool = False):
        N = self.X.shape[0]
        if not trans:
            va, vl = v[:N], v[N:2 * N]
            base = self.Da @ va + self.Dl @ vl
            r1 = va - base - v[2 * N]
            r2 = -self.kbt * (self.X @ va) - base + self.g * vl - v[2 * N + 1]
            return jnp.concatenate([r1, r2, jnp.stack([self.sh @ vl, self.rP_a @ va + self.rP_l @ vl])])
        u1, u2, u3, u4 = v[:N], v[N:2 * N], v[2 * N], v[2 * N + 1]
        s12 = u1 + u2
        ta = u1 - s12 @ self.Da - self.kbt * (u2 @ self.X) + u4 * self.rP_a
        tl = -(s12 @ self.Dl) + self.g * u2 + u3 * self.sh + u4 * self.rP_l
        return jnp.concatenate([ta, tl, jnp.stack([-jnp.sum(u1), -jnp.sum(u2)])])

    def norm_inf(self):
        N = self.X.shape[0]
        I = jnp.eye(N, dtype=self.X.dtype)
        r1 = jnp.sum(jnp.abs(I - self.Da), axis=1) + jnp.sum(jnp.abs(self.Dl), axis=1) + 1.0
        r2 = jnp.sum(jnp.abs(self.kbt * self.X + self.Da), axis=1) + jnp.sum(jnp.abs(self.g * I - self.Dl), axis=1) + 1.0
        r3 = jnp.sum(jnp.abs(self.sh))
        r4 = jnp.sum(jnp.abs(self.rP_a)) + jnp.sum(jnp.abs(self.rP_l))
        return jnp.maximum(jnp.maximum(jnp.max(r1), jnp.max(r2)), jnp.maximum(r3, r4))


def schur_jacobian(y, params: Params, s=1.0, logD=None) -> SchurLinearization:
    """The factorised Jacobian of :func:`residual` at ``y`` (Schur complement; needs gamma > 0)."""
    b = _blocks(y, params, s, logD)
    X, I, g, kbt = b["X"], b["I"], b["g"], b["k"] * b["bt"]
    o, A, c = b["o"], b["A"], b["c"]
    dtype = y.dtype
    # S = L - K H / g, written out so that it needs no product beyond M^T X
    dlp_dl_H = c[:, None] * ((1 + g) * (A[:, None] * (I + kbt * X) + o.w[:, None] * (b["MT"] + kbt * b["MTX"])))
    rows_dlp_dl = jnp.sum(b["dlp_dl"], axis=1)
    top = jnp.concatenate([I - b["dlp_da"] - dlp_dl_H / g, (-1.0 + rows_dlp_dl / g)[:, None],
                           (-rows_dlp_dl / g)[:, None]], axis=1)
    sh = b["sh"]
    rowL = jnp.concatenate([(sh + kbt * (sh @ X)) / g, jnp.stack([-1.0 / g, 1.0 / g])])[None, :]
    dLp_dl_H = ((1 + g) / g) * (b["MT"] + kbt * b["MTX"])
    rowP = jnp.concatenate([jnp.sum(b["dLp_da"] + dLp_dl_H, axis=0) / b["sLp"],
                            jnp.stack([-(1 + g) / g, (1 + g) / g])])[None, :]
    S = jnp.concatenate([top, rowL.astype(dtype), rowP.astype(dtype)], axis=0)
    return SchurLinearization(Da=b["dlp_da"], Dl=b["dlp_dl"], X=X, sh=sh,
                              rP_a=jnp.sum(b["dLp_da"], axis=0) / b["sLp"],
                              rP_l=jnp.sum(b["dLp_dl"], axis=0) / b["sLp"], kbt=kbt, g=g, S=lu_factor(S))


class SchurKrylovLinearization(Linearization):
    """Matrix-free Jacobian of :func:`residual` for Newton-Krylov at large N (no N^3 work).

    ``mv`` applies the exact Jacobian from its blocks (two N x N matrix-vector products with
    the shares X = [x_nc] of (9); the hires of (19) are M = diag(m) X diag(1/w), with
    m_n = eta Phi_n^k (L^m_n)^(1 + gamma/(1-beta)), so only X is stored (at N = 10,000 that
    saves 0.8 GB); the product M^T X of :func:`schur_jacobian` is never formed). ``solve`` is
    only an approximate inverse, a preconditioner for GMRES: the manager block is eliminated
    exactly by (53) (the g I
    pivot), and the (N+2) x (N+2) Schur complement S is replaced by its diagonal bordered
    with its exact last two rows and columns (adding up (17)-(18) and the two utility
    levels), a 2 x 2 solve. Building it costs a few passes over X (O(N^2)); every
    apply two N x N products.
    """

    exact = False

    X: jax.Array  # (N, N) fragmentation shares x_nc (9)
    m: jax.Array  # (N,) hires L^p_nc (19) = m_n x_nc / w_c
    c: jax.Array  # (1 - alpha) / W_n
    w: jax.Array
    A: jax.Array  # E[pi_n] L^m_n
    B: jax.Array  # w_n L^p_n
    Lp: jax.Array
    sh: jax.Array  # L^m_n / L^m
    rP_a: jax.Array
    rP_l: jax.Array
    dT: jax.Array  # diagonal of the top-left block of S
    Ccols: jax.Array  # (N, 2) last two columns of S (top rows)
    Rrows: jax.Array  # (2, N) last two rows of S (w columns)
    E: jax.Array  # (2, 2)
    k: jax.Array
    bt: jax.Array
    g: jax.Array

    @property
    def kbt(self):
        return self.k * self.bt

    # implicit blocks: Da = d log p / d log w, Dl = d log p / d log L^m. Transposed products
    # are written v @ A: on CPU, XLA copies A before A.T @ v (about 15x slower at N = 3000).
    def _Dl(self, v):
        return self.c * (1 + self.g) * (self.A * v + (v * self.m) @ self.X)  # w * (v @ M)

    def _DlT(self, u):
        uc = self.c * u
        return (1 + self.g) * (self.A * uc + self.m * (self.X @ uc))  # M @ (w * uc)

    def _H(self, v):
        N = self.X.shape[0]
        return -(v[:N] + self.kbt * (self.X @ v[:N])) + v[N] - v[N + 1]

    def _HT(self, w):
        return jnp.concatenate([-(w + self.kbt * (w @ self.X)), jnp.stack([jnp.sum(w), -jnp.sum(w)])])

    def _K(self, v):
        return jnp.concatenate([-self._Dl(v), jnp.stack([self.sh @ v, self.rP_l @ v])])

    def _KT(self, w):
        N = self.X.shape[0]
        return -self._DlT(w[:N]) + w[N] * self.sh + w[N + 1] * self.rP_l

    def _S_solve(self, r, trans=False):
        N = self.dT.shape[0]
        r1, r2 = r[:N], r[N:]
        if not trans:
            C, R, E = self.Ccols, self.Rrows, self.E
        else:
            C, R, E = self.Rrows.T, self.Ccols.T, self.E.T
        DC = C / self.dT[:, None]
        x2 = jnp.linalg.solve(E - R @ DC, r2 - R @ (r1 / self.dT))
        return jnp.concatenate([(r1 - C @ x2) / self.dT, x2])

    def solve(self, b, trans: bool = False):
        N = self.X.shape[0]
        if not trans:
            r_d = b[N:2 * N] - b[:N]
            r_e = jnp.concatenate([b[:N], b[2 * N:]])
            x_u = self._S_solve(r_e - self._K(r_d) / self.g)
            x_l = (r_d - self._H(x_u)) / self.g
            return jnp.concatenate([x_u[:N], x_l, x_u[N:]])
        b_l = b[N:2 * N]
        b_u = jnp.concatenate([b[:N], b[2 * N:]])
        lam_e = self._S_solve(b_u - self._HT(b_l) / self.g, trans=True)
        lam_d = (b_l - self._KT(lam_e)) / self.g
        return jnp.concatenate([lam_e[:N] - lam_d, lam_d, lam_e[N:]])

    def mv(self, v, trans: bool = False):
        N = self.X.shape[0]
        k, bt, g, kbt, c, A, B, w, Lp = self.k, self.bt, self.g, self.kbt, self.c, self.A, self.B, self.w, self.Lp
        if not trans:
            va, vl = v[:N], v[N:2 * N]
            Xva = self.X @ va
            base = c * (-kbt * A * Xva + (B - (1 + bt) * w * Lp) * va + (1 + g) * A * vl
                        + (((1 - k) * bt * Xva + (1 + g) * vl) * self.m) @ self.X)  # w * (. @ M)
            r1 = va - base - v[2 * N]
            r2 = -kbt * Xva - base + g * vl - v[2 * N + 1]
            return jnp.concatenate([r1, r2, jnp.stack([self.sh @ vl, self.rP_a @ va + self.rP_l @ vl])])
        u1, u2, u3, u4 = v[:N], v[N:2 * N], v[2 * N], v[2 * N + 1]
        sc = c * (u1 + u2)
        Mws = self.m * (self.X @ sc)  # M @ (w * sc)
        ta = (u1 - (-kbt * A * sc + (1 - k) * bt * Mws + kbt * u2) @ self.X - (B - (1 + bt) * Lp * w) * sc
              + u4 * self.rP_a)
        tl = -(1 + g) * (A * sc + Mws) + g * u2 + u3 * self.sh + u4 * self.rP_l
        return jnp.concatenate([ta, tl, jnp.stack([-jnp.sum(u1), -jnp.sum(u2)])])

    def norm_inf(self):
        """An upper bound on ``||J||_inf`` (row sums of X are 1 and of M^T X are L^p, all >= 0)."""
        k, bt, g, kbt, c, A, B, w, Lp = self.k, self.bt, self.g, self.kbt, self.c, self.A, self.B, self.w, self.Lp
        da = c * (kbt * A + B + w * Lp * (jnp.abs(1 - k) * bt + 1 + bt))
        dl = c * (1 + g) * (A + w * Lp)
        r1 = 1.0 + da + dl + 1.0
        r2 = kbt + da + g + dl + 1.0
        r3 = jnp.sum(jnp.abs(self.sh))
        r4 = jnp.sum(jnp.abs(self.rP_a)) + jnp.sum(jnp.abs(self.rP_l))
        return jnp.maximum(jnp.maximum(jnp.max(r1), jnp.max(r2)), jnp.maximum(r3, r4))


def schur_operator(y, params: Params, s=1.0, logD=None) -> SchurKrylovLinearization:
    """The matrix-free Jacobian of :func:`residual` at ``y`` with its bordered-diagonal Schur
    preconditioner (:class:`SchurKrylovLinearization`; O(N^2), needs gamma > 0)."""
    p = params
    N = p.T.shape[-1]
    o = equilibrium_objects(p, jnp.exp(y[:N]), jnp.exp(y[N:2 * N]), s, logD)
    k, _, _ = _consts(p)
    bt = p.beta * p.theta
    g = p.gamma / (1 - p.beta)
    kbt = k * bt
    X = o.x
    m = o.m  # L^p_nc = m_n x_nc / w_c (19): M is never stored
    A = o.Epi * o.Lm
    B = o.w * o.Lp
    c = (1 - p.alpha) / o.W
    w, Lp = o.w, o.Lp
    sh = o.Lm / jnp.sum(o.Lm)
    sLp = jnp.sum(Lp)
    m_row = m * (X @ (1.0 / w))  # row sums of M
    XTm = m_row @ X
    rP_a = ((1 - k) * bt * XTm - (1 + bt) * Lp) / sLp
    rP_l = (1 + g) * m_row / sLp
    xd = jnp.diagonal(X)
    md = m * xd / w  # diagonal of M
    dMTX = jnp.sum(m[:, None] * X * X, axis=0) / w  # diag(M^T X): a fused reduction, no N x N temporary
    diag_Da = c * (-kbt * A * xd + B + w * ((1 - k) * bt * dMTX - (1 + bt) * Lp))
    diag_DlH = c * (1 + g) * (A * (1 + kbt * xd) + w * (md + kbt * dMTX))
    dT = 1.0 - diag_Da - diag_DlH / g
    rows_dl = c * (1 + g) * (A + w * Lp)  # row sums of Dl (columns of M^T sum to L^p)
    Ccols = jnp.stack([-1.0 + rows_dl / g, -rows_dl / g], axis=1)
    rowL = (sh + kbt * (sh @ X)) / g
    rowP = ((1 - k) * bt * XTm - (1 + bt) * Lp + ((1 + g) / g) * (m_row + kbt * XTm)) / sLp
    Rrows = jnp.stack([rowL, rowP])
    E = jnp.stack([jnp.stack([-1.0 / g, 1.0 / g]), jnp.stack([-(1 + g) / g, (1 + g) / g])]).astype(y.dtype)
    return SchurKrylovLinearization(X=X, m=m, c=c, w=w, A=A, B=B, Lp=Lp, sh=sh, rP_a=rP_a, rP_l=rP_l, dT=dT,
                                    Ccols=Ccols, Rrows=Rrows, E=E, k=jnp.asarray(k, y.dtype),
                                    bt=jnp.asarray(bt, y.dtype), g=jnp.asarray(g, y.dtype))


def autarky(params: Params):
    """Closed-form equilibrium under fragmentation autarky (tau_nc -> inf, n != c), Prop. 3.

    log L^m_n = [(alpha/theta) log T_n + (1-alpha) log H_n] / (1 - alpha - alpha gamma) + const,
    w_n = (eta L^m / L^p)^(1-beta) T_n^(1/theta) (L^m_n)^gamma, L^p_n / L^m_n = L^p / L^m.
    With equal H these are eqs. (24)-(25). Returns ``y`` of shape (2N+2,).
    """
    p = params
    a, g, th = p.alpha, p.gamma, p.theta
    _, _, log_eta = _consts(p)
    z = ((a / th) * jnp.log(p.T) + (1 - a) * jnp.log(p.H)) / (1 - a - a * g)
    logLm = z - jax.scipy.special.logsumexp(z) + jnp.log(p.Lm_total)
    logw = (1 - p.beta) * (log_eta + jnp.log(p.Lm_total) - jnp.log(p.Lp_total)) + jnp.log(p.T) / th + g * logLm
    o = equilibrium_objects(p, jnp.exp(logw), jnp.exp(logLm), 0.0)
    return jnp.concatenate([logw, logLm, jnp.atleast_1d(jnp.mean(o.log_Uw)), jnp.atleast_1d(jnp.mean(o.log_Um))])


# ---------------------------------------------------------------------------------------
# Solve
# ---------------------------------------------------------------------------------------


class Solution(Result, eqx.Module):
    """An equilibrium of the Jiao-Tian model (all arrays shape (N,) unless stated).

    ``converged`` is True only for a converged, regular (non-singular Jacobian) root (an
    array, batched under ``vmap``, as :class:`spatialjax.solver.SolveResult`'s).
    ``min_Lm``/``min_Lp`` flag degenerate equilibria (a city with ~no managers).
    The result protocol of :mod:`spatialjax.results`: ``status``, ``residual``,
    ``summary()``, ``to_dict()``/``to_json()`` (per-city arrays, not the N x N matrices).
    """

    w: jax.Array
    Lm: jax.Array
    Lp: jax.Array
    p: jax.Array
    Phi: jax.Array
    Epi: jax.Array
    W: jax.Array
    x: jax.Array  # (N, N) fragmentation shares x_nc (9)
    m: jax.Array  # (N,) hires per unit share: L^p_nc = m_n x_nc / w_c (19); see ``Lp_nc``
    log_Uw: jax.Array  # scalar: common log real income of workers
    log_Um: jax.Array  # scalar: common log real expected income of managers
    y: jax.Array  # (2N+2,) the solver's unknowns
    solve: SolveResult
    homotopy_reached: jax.Array  # s reached by the cold-start homotopy (1.0 on success; nan if warm)

    @property
    def converged(self):
        return self.solve.converged

    @property
    def residual(self):
        return self.solve.residual

    @property
    def steps(self):
        return self.solve.steps

    @property
    def status(self):
        return self.solve.status

    @property
    def sigma_min(self):
        return self.solve.sigma_min

    @property
    def Lp_nc(self):
        """(N, N) workers in c hired by managers of n, L^p_nc (19), from ``x`` and ``m``
        (:func:`_hires`; not stored)."""
        return _hires(self.m, self.x, self.w)

    @property
    def min_Lm(self):
        return jnp.min(self.Lm, axis=-1)

    @property
    def min_Lp(self):
        return jnp.min(self.Lp, axis=-1)

    @property
    def skill_share(self):
        """High-skill employment share L^m_n / (L^m_n + L^p_n)."""
        return self.Lm / (self.Lm + self.Lp)

    @property
    def fragmentation_share(self):
        """Share of n's managers producing outside n: 1 - x_nn."""
        return 1.0 - jnp.diagonal(self.x, axis1=-2, axis2=-1)

    def _dict_fields(self) -> dict:
        return {"steps": self.steps, "sigma_min": self.sigma_min, "homotopy_reached": self.homotopy_reached,
                "log_Uw": self.log_Uw, "log_Um": self.log_Um, "w": self.w, "Lm": self.Lm, "Lp": self.Lp,
                "p": self.p, "Epi": self.Epi, "W": self.W, "skill_share": self.skill_share,
                "fragmentation_share": self.fragmentation_share}

    def summary(self, max_rows: int = 12) -> str:
        """City table (largest cities first) plus solver diagnostics."""
        N = self.w.shape[-1]
        order = np.argsort(-np.asarray(self.Lm + self.Lp))[:max_rows]
        rows = [(int(i) + 1, self.Lm[i], self.Lp[i], self.skill_share[i], self.w[i], self.Epi[i], self.p[i],
                 self.fragmentation_share[i]) for i in order]
        notes = [
            f"status: {self.status}; max-norm residual {float(self.residual):.2e}; Newton iterations "
            f"{int(self.steps)}; sigma_min(J) {float(self.sigma_min):.2e}; "
            + ("warm start" if not np.isfinite(float(self.homotopy_reached)) else
               f"cold start: homotopy from autarky reached s = {float(self.homotopy_reached):.4g}"),
            f"log real income: workers {float(self.log_Uw):.6f}, managers {float(self.log_Um):.6f}; "
            f"degeneracy check: min L^m = {float(self.min_Lm):.3e}, min L^p = {float(self.min_Lp):.3e}",
        ]
        if N > max_rows:
            notes.insert(0, f"({N - max_rows} smaller cities not shown)")
        return format_table(["city", "L^m", "L^p", "skill sh.", "w", "E[pi]", "p", "frag. sh."], rows,
                            title=f"Jiao-Tian equilibrium, N = {N}", notes=notes)


def _pack(params: Params, y, res: SolveResult, s_reached) -> Solution:
    N = params.T.shape[-1]
    o = equilibrium_objects(params, jnp.exp(y[:N]), jnp.exp(y[N:2 * N]))
    return Solution(w=o.w, Lm=o.Lm, Lp=o.Lp, p=o.p, Phi=o.Phi, Epi=o.Epi, W=o.W, x=o.x, m=o.m,
                    log_Uw=y[2 * N], log_Um=y[2 * N + 1], y=y, solve=res,
                    homotopy_reached=jnp.asarray(s_reached, y.dtype))


def _y_from_warm(params: Params, warm):
    N = params.T.shape[-1]
    if isinstance(warm, Solution):
        return warm.y
    warm = jnp.asarray(warm)
    if warm.shape == (2 * N + 2,):
        return warm
    raise ParameterError("y0", f"warm start must be a Solution or an array of shape ({2 * N + 2},); got {warm.shape}")


def _y_from_data(params: Params, w, Lm):
    N = params.T.shape[-1]
    for name, v in (("w", w), ("Lm", Lm)):
        check_shape(name, v, (N,))
        check_positive(name, v)
    o = equilibrium_objects(params, jnp.asarray(w), jnp.asarray(Lm))
    return jnp.concatenate([jnp.log(jnp.asarray(w)), jnp.log(jnp.asarray(Lm)),
                            jnp.atleast_1d(jnp.mean(o.log_Uw)), jnp.atleast_1d(jnp.mean(o.log_Um))])


_LEAN_GENERATOR_N = 3000  # synthetic_economy builds tau in place above this N (memory)

SCHUR_MIN_G = 1e-3  # below this pivot gamma/(1-beta), "auto" uses the dense LU (Schur growth ~ 1/g)


def _res_s(y, s, p):
    return residual(y, p, s)


def _jac_s(y, s, p):
    return jacobian(y, p, s)


def _schur_s(y, s, p):
    return schur_jacobian(y, p, s)


# The Jacobian Newton uses, by ``system``: Schur-complement factorisation (gamma > 0) or dense.
_JACOBIANS = {"schur": _schur_s, "dense": _jac_s}


def _schur_op_s(y, s, p):
    return schur_operator(y, p, s)


def _cold_homotopy(params: Params, tol, system, linear_solver="dense"):
    """Continue the equilibrium from the autarky closed form (Prop. 3) along s: 0 -> 1."""
    jac = _schur_op_s if (linear_solver == "gmres" and system == "schur") else _JACOBIANS[system]
    return homotopy(_res_s, autarky(params), params, 0.0, 1.0, h0=0.1, h_max=0.25, h_min=1e-6,
                    tol=max(tol, 1e-9), max_corrector=15, linear_solver=linear_solver, jac=jac,
                    reuse_jacobian=True)


# ``linear_solver="auto"`` with the Schur system: factorised Newton (one (N+2) x (N+2) LU,
# O(N^3)) below this N, Newton-Krylov on the matrix-free Jacobian with the bordered-diagonal
# Schur preconditioner (:func:`schur_operator`, O(N^2) per iteration) from it on. Measured
# (benchmarks/bench_jiao_tian_scale.py, 2 CPU cores, 2026-12-04, warm solves from y* + 1e-3
# noise, conditioning diagnostic on): N = 200 and 400 both paths equal (6 / 25-28 ms); N = 722
# Krylov 0.045-0.049 s vs factorised 0.124-0.136 s (the synthetic economy and the us722
# replica, sigma_min equal to 5e-4 relative); N = 1000 next to a fold (sigma_min 1e-4) Krylov
# 0.32 s vs 0.27 s; N = 3000 Krylov about 2x faster (2026-12-02). (1500 until 2026-12-04, from
# an older measurement at N = 722 that the Krylov path's cheaper diagnostic has overtaken.)
# The full 2N+2 system (``system="dense"``) has no Krylov preconditioner and keeps the generic
# threshold :data:`spatialjax.solver.DENSE_MAX` on its size.
KRYLOV_MIN_N = 700


def _linear_solver_for(N, system, linear_solver):
    if linear_solver != "auto":
        return linear_solver
    if system == "schur":
        return "dense" if N < KRYLOV_MIN_N else "gmres"
    return "dense" if 2 * N + 2 <= DENSE_MAX else "gmres"


def _solve_impl(params: Params, y0, tol, max_steps, linear_solver, method, cold, system="schur"):
    N = params.T.shape[-1]
    ls = _linear_solver_for(N, system, linear_solver)
    if cold:
        # the cold start keeps its factorised corrector up to the generic size limit (as before)
        n = N + 2 if system == "schur" else 2 * N + 2
        ls_h = linear_solver if linear_solver != "auto" else ("dense" if n <= DENSE_MAX else "gmres")
        h = _cold_homotopy(params, tol, system, ls_h)
        y0, s_reached = h.value, h.lam_reached
    else:
        s_reached = jnp.nan
    # log Delta_nc is loop-invariant: computed once (N^2 logarithms) and passed with the
    # parameters, so that derivatives still reach tau through it.
    if ls == "gmres" and system == "schur":
        jac1 = schur_operator  # matrix-free, bordered-diagonal Schur preconditioner: no N^3 work
    else:
        jac1 = schur_jacobian if system == "schur" else jacobian
    res = solve_root(lambda y, a: residual(y, a[0], 1.0, a[1]), y0, (params, _log_openness(params)), tol=tol,
                     max_steps=max_steps, linear_solver=ls, method=method,
                     jac=lambda y, a: jac1(y, a[0], 1.0, a[1]), reuse_jacobian=True)
    return _pack(params, res.value, res, s_reached)


_solve_jit = eqx.filter_jit(_solve_impl)
_homotopy_jit = eqx.filter_jit(_cold_homotopy)



def _arclength_fallback(params, sol, tol, max_steps, linear_solver, method, system, n_steps=200):
    """The homotopy stopped at a fold before s = 1: follow the branch around it by
    pseudo-arclength (eager, dense). If the branch comes back to s = 1, polish there with a
    warm solve; otherwise return the original (failed) solution, whose status says so."""
    from spatialjax.continuation import arclength_to

    # The same homotopy as the cold start (same Jacobian, same steps), so it stops where that did.
    h = _homotopy_jit(params, tol, system)
    y0, _ = arclength_to(_res_s, h.value, params, float(h.lam_reached), 1.0, ds=0.02, n_steps=n_steps,
                         lam_bounds=(0.0, 1.0), jac=_jac_s)
    if y0 is None:
        return sol
    new = _solve_jit(params, jnp.asarray(y0), tol, max_steps, linear_solver, method, False, system)
    if not bool(new.converged):
        return sol
    return eqx.tree_at(lambda q: q.homotopy_reached, new, jnp.asarray(1.0, new.y.dtype))


def solve(params: Params, y0=None, *, tol: float = 1e-10, max_steps: int = 50, linear_solver: str = "auto",
          method: str = "newton", throw: bool = False, fold_fallback: bool = True,
          system: str = "auto") -> Solution:
    """Solve the Jiao-Tian equilibrium.

    Args:
        params: :class:`Params`.
        y0: warm start: a previous :class:`Solution` (e.g. the baseline of a counterfactual)
            or an array ``(log w, log L^m, log U_w, log U_m)`` of shape (2N+2,). ``None``
            (default) is a cold start by homotopy from the autarky closed form.
        tol: max-norm tolerance on the residual (logs, so relative).
        linear_solver: ``"auto"`` (with ``system="schur"``: factorised Newton steps for
            N < :data:`KRYLOV_MIN_N`, Newton-Krylov on the matrix-free Jacobian with the
            bordered-diagonal Schur preconditioner from it on; with ``"dense"``: factorised
            while 2N+2 <= ``solver.DENSE_MAX``), ``"dense"`` or ``"gmres"``. At N = 3000 a
            Schur factorisation costs about 2-3 s on 2 CPU cores (one N^3 product, one LU),
            a preconditioned Krylov iteration about 20 ms (four N x N matrix-vector products).
        method: ``"newton"`` or ``"lm"`` (Levenberg-Marquardt globalisation).
        throw: raise on failure (outside jit/vmap only).
        system: linear algebra of the Newton steps (the iterates are the same): ``"schur"``
            (manager locations eliminated by (53), an (N+2) x (N+2) LU per Jacobian: 8x cheaper),
            ``"dense"`` (LU of the full 2N+2 Jacobian) or ``"auto"`` (schur unless the pivot
            gamma/(1-beta) < 1e-3, e.g. gamma = 0, where (53) does not determine L^m).
        fold_fallback: when the cold-start homotopy stops at a fold before s = 1, follow
            the branch around it by pseudo-arclength continuation (eager only: not inside
            jit/vmap/grad, where the failed status is returned instead).

    Works under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (derivatives by the implicit
    function theorem at the final root; NaN if the root is not regular).
    """
    if not isinstance(params, Params):
        raise ParameterError("params", f"must be a jiao_tian.Params; got {type(params).__name__}")
    # Validate again here: eqx.tree_at (used for counterfactuals) builds a Params without
    # running __check_init__, so e.g. a tau with a non-unit diagonal would otherwise "solve".
    # (Once per parameter object: see validation.check_once.)
    check_once(params, validate)
    if system not in ("auto", "schur", "dense"):
        raise ParameterError("system", f"must be 'auto', 'schur' or 'dense'; got {system!r}")
    g, b = _concrete(params.gamma), _concrete(params.beta)
    small = g is not None and b is not None and float(g) / (1 - float(b)) < SCHUR_MIN_G
    if system == "auto":
        system = "dense" if small else "schur"
    elif system == "schur" and small:
        raise ParameterError("system", f"'schur' eliminates L^m by (53) with pivot gamma/(1-beta), which must be "
                                       f">= {SCHUR_MIN_G} (got {float(g) / (1 - float(b)):.3g}); use 'dense'")
    cold = y0 is None
    y_start = jnp.zeros(2 * params.T.shape[-1] + 2) if cold else _y_from_warm(params, y0)
    sol = _solve_jit(params, y_start, tol, max_steps, linear_solver, method, cold, system)
    if cold and fold_fallback and not is_traced(sol.y) and not bool(sol.converged):
        sol = _arclength_fallback(params, sol, tol, max_steps, linear_solver, method, system)
    if throw:
        raise_if_failed(sol.solve, "Jiao-Tian equilibrium solve")
    return sol


def solve_from_data(params: Params, w, Lm, **kw) -> Solution:
    """Solve with a warm start from observed wages ``w`` and manager counts ``Lm`` (shape (N,))."""
    return solve(params, _y_from_data(params, w, Lm), **kw)


def welfare(params: Params, sol: Solution):
    """Common log real income ``(log U_w, log U_m)`` of workers and managers, eqs. (10), (14), (16).

    ``U_w = w_n / p_n^(1-alpha)`` and ``U_m = E[pi_n] / p_n^(1-alpha)`` are equal across cities in
    equilibrium. Returns a pair of scalars; differentiable with ``jax.grad``.
    """
    del params
    if not isinstance(sol, Solution):
        raise ParameterError("sol", f"must be the jiao_tian.Solution returned by solve(); got {type(sol).__name__} "
                                    f"(welfare is read from the solved equilibrium, not recomputed from an array)")
    return sol.log_Uw, sol.log_Um


def moments(params: Params, sol: Solution) -> dict:
    """Model moments used for calibration: wage-size elasticity (gamma target), the slope of
    the high-skill share on log city size, and the mean fragmentation share."""
    size = jnp.log(sol.Lm + sol.Lp)
    logw = jnp.log(sol.w)

    def slope(yv, xv):
        xc = xv - jnp.mean(xv)
        return jnp.sum(xc * (yv - jnp.mean(yv))) / jnp.sum(xc * xc)

    return {
        "wage_size_elasticity": slope(logw, size),
        "skill_share_size_slope": slope(sol.skill_share, size),
        "mean_fragmentation_share": jnp.mean(sol.fragmentation_share),
    }


# ---------------------------------------------------------------------------------------
# Fragmentation costs and calibration inversions (Section 5.2)
# ---------------------------------------------------------------------------------------


def fragmentation_costs(dist, q, delta_d, delta_I, lam=0.0):
    """tau_nc from eqs. (29)-(30): log tau_nc = lam_nc + delta_d log d_nc + delta_I q_n q_c, tau_nn = 1.

    Args:
        dist: distances d_nc, shape (N, N), > 0 off the diagonal (diagonal ignored).
        q: internet quality q_n, shape (N,).
        delta_d, delta_I: distance and internet elasticities (Table 5: 0.230, -0.010).
        lam: other pair costs lambda_nc, scalar or (N, N).
    Note: iceberg costs below 1 are not clipped: with delta_d log d < 0 they would be < 1,
    which :class:`Params` rejects, so measure distances in units where d_nc >= 1.
    """
    dist = jnp.asarray(dist)
    N = dist.shape[0]
    check_shape("q", q, (N,))
    eye = jnp.eye(N, dtype=dist.dtype)
    safe_d = jnp.where(eye > 0, 1.0, dist)
    logtau = lam + delta_d * jnp.log(safe_d) + delta_I * jnp.outer(q, q)
    return jnp.exp(logtau * (1 - eye))


def counterfactual_no_internet(tau, q, delta_I):
    """Section 5.3: log tau~_nc = log tau_nc - delta_I q_n q_c (n != c); the printed
    ``exp(log(tau - delta q))`` is a misprint (MODELS.md)."""
    N = tau.shape[0]
    eye = jnp.eye(N, dtype=tau.dtype)
    return jnp.exp((jnp.log(tau) - delta_I * jnp.outer(q, q)) * (1 - eye))


def invert_technology(alpha, beta, theta, gamma, tau, w, Lm, normalize: int = 0):
    """Back out T_n from manager indifference (36) given L^m_n, tau_nc, w_n; T[normalize] = 1.

    (1/(theta(1-beta))) log T_n = log w_n - gamma/(1-beta) log L^m_n
                                  - (1/(theta(1-beta))) log sum_k (tau_nk w_k^beta)^(-theta) + const.
    """
    k = 1.0 / (theta * (1 - beta))
    S = jax.scipy.special.logsumexp(-theta * (jnp.log(tau) + beta * jnp.log(w)[None, :]), axis=1)
    logT = (jnp.log(w) - gamma / (1 - beta) * jnp.log(Lm)) / k - S
    return jnp.exp(logT - logT[normalize])


def invert_housing(alpha, W, w, normalize: int = 0):
    """Housing supply from (35): H_n proportional to W_n / w_n^(1/(1-alpha)); H[normalize] = 1."""
    logH = jnp.log(W) - jnp.log(w) / (1 - alpha)
    return jnp.exp(logH - logH[normalize])


def synthetic_economy(N: int, seed: int = 0, *, alpha=TABLE5["alpha"], beta=TABLE5["beta"], theta=TABLE5["theta"],
                      gamma=TABLE5["gamma"], delta_d=TABLE5["delta_d"], delta_I=TABLE5["delta_I"], lam=1.0,
                      side: float | None = None):
    """An N-city economy with a known interior equilibrium (for tests and benchmarks).

    Draws realistic targets (Zipf city sizes, skill shares and wages rising with size,
    random locations and internet quality), tau from (29)-(30), backs out T_n from (36)
    and H_n from (35); L^p_n follows from (19), so that (w, L^m) is an equilibrium.
    ``lam`` is the common pair cost lambda_nc of (29): it sets how fragmented the economy is
    (mean share of managers producing outside their city about 0.03 / 0.32 / 0.54 at
    N = 100 / 300 / 722 with lam = 1; lam = 0.5 gives a far more integrated economy whose
    inverted equilibrium sits very close to a fold). Cities sit uniformly in a square of side
    ``side`` (distance units of (29), d_nc = 1 + Euclidean distance); the default is 30 up to
    N = 722 and grows as 30 sqrt(N / 722) beyond, so that larger N adds territory at the same
    city density instead of packing ever more cities into the same square (which makes the
    economy ever more integrated: mean fragmentation share 0.83 at N = 3000 in a 30 x 30
    square, with the inverted equilibrium near a fold). Returns ``(params, y_true)``.

    Several interior equilibria can coexist (small cities' manager counts respond with
    elasticity (1-beta)/gamma ~ 47): at N = 722, lam = 1 the cold start from autarky finds
    an interior equilibrium that differs from ``y_true`` in two small cities.
    """
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ParameterError("N", f"the number of cities must be an integer >= 1; got {N!r}")
    rng = np.random.default_rng(seed)
    rank = np.arange(1, N + 1)
    size = rank ** -1.05 * np.exp(0.1 * rng.standard_normal(N))
    size = size / size.sum()
    logsize = np.log(size)
    skill = 1 / (1 + np.exp(-(-1.0 + 0.08 * (logsize - logsize.mean()) + 0.05 * rng.standard_normal(N))))
    Lm = skill * size
    w = np.exp(0.05 * (logsize - logsize.mean()) + 0.03 * rng.standard_normal(N))
    if side is None:
        side = 30.0 * np.sqrt(max(N, 722) / 722)
    elif not (np.isfinite(side) and side > 0):
        raise ParameterError("side", f"the side of the square territory must be a positive number; got {side!r}")
    loc = rng.uniform(0, float(side), size=(N, 2))
    q = np.clip(1.0 + 0.2 * (logsize - logsize.mean()) + 0.3 * rng.standard_normal(N), 0.0, None)
    if N <= _LEAN_GENERATOR_N:
        dist = 1.0 + np.sqrt(((loc[:, None, :] - loc[None, :, :]) ** 2).sum(-1))
        tau = np.asarray(fragmentation_costs(dist, q, delta_d, delta_I, lam=lam))
        del dist
    else:
        # the same (29)-(30), in place: a few N x N float64 arrays instead of a dozen (N = 10,000:
        # 0.8 GB each)
        tau = np.subtract.outer(loc[:, 0], loc[:, 0])
        tau *= tau
        dy = np.subtract.outer(loc[:, 1], loc[:, 1])
        dy *= dy
        tau += dy
        del dy
        np.sqrt(tau, out=tau)
        tau += 1.0
        np.log(tau, out=tau)
        tau *= delta_d
        tau += lam
        tau += delta_I * np.outer(q, q)
        np.exp(tau, out=tau)
        np.maximum(tau, 1.0, out=tau)
    if N <= _LEAN_GENERATOR_N:
        tau = np.maximum(tau, 1.0)
    np.fill_diagonal(tau, 1.0)
    tau = jnp.asarray(tau)  # one device copy, shared by both Params
    T = np.asarray(invert_technology(alpha, beta, theta, gamma, tau, jnp.asarray(w), jnp.asarray(Lm)))
    H0 = np.ones(N)
    p0 = Params(alpha=alpha, beta=beta, theta=theta, gamma=gamma, T=jnp.asarray(T), tau=tau,
                H=jnp.asarray(H0), Lm_total=float(Lm.sum()), Lp_total=1.0)
    o = equilibrium_objects(p0, jnp.asarray(w), jnp.asarray(Lm))
    W0, Lp0 = o.W, o.Lp
    del o, p0  # the N x N objects
    H = np.asarray(invert_housing(alpha, W0, jnp.asarray(w)))
    params = Params(alpha=alpha, beta=beta, theta=theta, gamma=gamma, T=jnp.asarray(T), tau=tau,
                    H=jnp.asarray(H), Lm_total=float(Lm.sum()), Lp_total=float(np.asarray(Lp0).sum()))
    y_true = _y_from_data(params, jnp.asarray(w), jnp.asarray(Lm))
    return params, y_true


# ---------------------------------------------------------------------------------------
# The paper's example economies
# ---------------------------------------------------------------------------------------


def two_city_params(Delta: float = 0.0, *, theta=5.0, gamma=0.1, alpha=0.4, beta=0.4) -> Params:
    """Figure 2 economy: theta=5, T_1^(1/theta)=1.5, T_2^(1/theta)=1, L^m=1, L^p=2, gamma=0.1,
    alpha=beta=0.4, H=1; ICT openness Delta = tau^(-theta) (Delta = 0: autarky, use tau = 1e30)."""
    tau12 = Delta ** (-1.0 / theta) if Delta > 0 else 1e30
    tau = jnp.array([[1.0, tau12], [tau12, 1.0]])
    return Params(alpha=alpha, beta=beta, theta=theta, gamma=gamma, T=jnp.array([1.5 ** theta, 1.0]), tau=tau,
                  H=jnp.ones(2), Lm_total=1.0, Lp_total=2.0)


def tau_from_openness(N: int, theta, Delta, upgraded: int | None = None, Delta_base=1e-12):
    """tau_nc = Delta_nc^(-1/theta) with ICT openness Delta (n != c), tau_nn = 1. Traceable in Delta.

    ``upgraded=None``: every pair has openness ``Delta``. ``upgraded=c`` (0-based): only pairs
    involving city c; the others have ``Delta_base`` (default 1e-12, i.e. autarky).
    """
    D_c = _concrete(Delta)
    if D_c is not None and (not np.all(np.isfinite(D_c)) or np.any(D_c < 0)):
        raise ParameterError("Delta", f"ICT openness Delta = tau^(-theta) must lie in [0, inf); got {np.ravel(D_c)[:3].tolist()}")
    eye = jnp.eye(N)
    if upgraded is None:
        M = jnp.ones((N, N))
    else:
        M = jnp.zeros((N, N)).at[upgraded, :].set(1.0).at[:, upgraded].set(1.0)
    D = M * jnp.maximum(Delta, 1e-300) + (1 - M) * Delta_base
    return jnp.where(eye > 0, 1.0, D ** (-1.0 / theta))


def load_example(name: str) -> tuple[Params, dict]:
    """Load an embedded example economy (``"two-city"`` or ``"eight-city"``) at autarky.

    Scalars come from ``spatialjax/data/jiao_tian_examples.toml``, city columns from the CSV
    it names (schema: ``city`` int, ``T_root`` = T_n^(1/theta) > 0, ``H`` > 0), read with pandas.
    Returns ``(params, meta)``; set the openness with :func:`tau_from_openness`.
    """
    from spatialjax.io import data_path, read_table, read_toml

    cfg = read_toml(data_path("jiao_tian_examples.toml"))
    if name not in cfg:
        raise ParameterError("example", f"unknown example {name!r}; available: {sorted(cfg)}")
    meta = dict(cfg[name])
    df = read_table(data_path(meta["cities"]), {"city": "int", "T_root": "positive", "H": "positive"})
    df = df.sort_values("city")
    th = float(meta["theta"])
    N = len(df)
    params = Params(alpha=float(meta["alpha"]), beta=float(meta["beta"]), theta=th, gamma=float(meta["gamma"]),
                    T=jnp.asarray(df["T_root"].to_numpy() ** th), tau=tau_from_openness(N, th, 0.0),
                    H=jnp.asarray(df["H"].to_numpy()), Lm_total=float(meta["Lm_total"]),
                    Lp_total=float(meta["Lp_total"]))
    return params, meta


def eight_city_params(Delta: float = 0.0, upgraded: int | None = None, *, theta=5.0, gamma=0.1, alpha=0.4,
                      beta=0.4, Delta_base: float | None = None) -> Params:
    """Figure 3 economy: four big cities (T^(1/theta) = 1.5) and four small (1.0), H = 1, L^m = 1,
    L^p = 2, theta = 5, gamma = 0.1, alpha = beta = 0.4.

    ``upgraded=None``: all pairs have openness Delta. ``upgraded=c`` (0-based; the paper's
    City 8 is 7, City 4 is 3): only the pairs involving city c have openness Delta, the
    others ``Delta_base`` (default: autarky-like 1e-12).
    """
    T = jnp.array([1.5 ** theta] * 4 + [1.0] * 4)
    N = 8
    if upgraded is None:
        D = np.full((N, N), Delta)
    else:
        base = 1e-12 if Delta_base is None else Delta_base
        D = np.full((N, N), base)
        D[upgraded, :] = Delta
        D[:, upgraded] = Delta
    D = np.maximum(D, 1e-300)
    tau = D ** (-1.0 / theta)
    np.fill_diagonal(tau, 1.0)
    return Params(alpha=alpha, beta=beta, theta=theta, gamma=gamma, T=T, tau=jnp.asarray(tau), H=jnp.ones(N),
                  Lm_total=1.0, Lp_total=2.0)


def table5_params(T, tau, H, Lm_total, Lp_total) -> Params:
    """Params at the Table 5 calibration (1-alpha = 0.24, beta = 0.53, gamma = 0.010, theta = 1.93/(1-0.53))."""
    return Params(alpha=TABLE5["alpha"], beta=TABLE5["beta"], theta=TABLE5["theta"], gamma=TABLE5["gamma"],
                  T=T, tau=tau, H=H, Lm_total=Lm_total, Lp_total=Lp_total)
