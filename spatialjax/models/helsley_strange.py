"""Helsley & Strange (2012), "Coagglomeration and the Scale and Composition of Clusters".

I industries, one worker type per industry. A cluster (city) is an employment vector
``n = (n_1, ..., n_I)`` (shape ``(I,)``). Wages are productivities (III.5),
``w_i = g_i(n)``, and a type-i worker's indirect utility is (III.6)

    V_i(n) = g_i(n) - c(N),   N = sum_s n_s,

with the residential cost ``c(N) = t N`` of (III.7) unless the user supplies another one.
The Appendix form (A.1) of productivity is built in:

    g_i(n) = sum_s [theta^i_s alpha n_s - (beta/2) n_s^2] + gamma prod_s n_s,

with ``theta[i, s] = theta^i_s`` (row = industry i, column = worker type s). Any other JAX
function ``g(params, n) -> (I,)`` can be passed as ``Params(g=...)``.

Objects computed here (paper's equation numbers):

* type-i optimal cluster n*^i, first-order conditions (IV.1), with a second-order check
  (``type_optimum`` / ``solve_type_optimum``);
* Pareto-efficient clusters, maximizers of W = sum_i lambda_i V_i (IV.4)-(IV.5), i.e. the
  contract surface as a function of the weights (``contract_curve`` / ``solve_contract_curve``);
* the constrained Pareto-efficient (CPE) allocation, the contract surface intersected with
  the ratio ray (V.1)/(V.2) (``constrained_pareto_efficient`` for the report object,
  ``cpe_allocation`` for the traceable / differentiable point);
* the set of symmetric Nash equilibria with free migration: the part of the ratio ray that is
  stable (dV_i/dn_i < 0 for all i, the sets S_i) and at least as good as autarky (the sets
  A_i), returned as an interval of city scale N^j together with the conditions binding at
  its ends (``nash_interval``);
* specialized-city equilibria, the Proposition 3 interval [n^S_i, n^A_i] and the point n^C_i
  of Figure 5 (``specialized_equilibria``);
* symmetric partitions of the industries into city types, their equilibrium status and
  welfare ranking (Section VII, Proposition 4) (``partition_equilibria``).

Known misprint (MODELS.md): (A.8) prints dg_i/dn_i - dg_k/dn_i = alpha (theta^i_i - theta^i_k);
differentiating (A.1) gives alpha (theta^i_i - theta^k_i). Assumption 2 is therefore checked as
``theta[i, i] > theta[k, i]`` (see ``check_assumptions``), not as the printed expression, which
is just (A.7) again.

Every inner solve runs on the generic engine: the first-order systems (type optima, contract
surface, CPE, n^S) by :func:`spatialjax.solver.solve_root` (Newton with Armijo line search, in
logs of the positive unknowns, float64, under ``jit``), every one-dimensional root (the ends of
the Nash interval, n^A, n^C) by :func:`spatialjax.scalar.bracket_root`. Every result carries its
residual, iteration count and a status from :data:`spatialjax.results.STATUSES`. Derivatives
through the type optima, the contract curve and the CPE are the implicit-function derivatives of
``solve_root`` (reverse mode: ``jax.grad`` / ``jax.jacrev``; forward mode is not defined) and are
NaN, never a plausible number, where the point is not a converged, regular maximum (a failed or
singular solve, or a failed second-order condition).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import spatialjax  # noqa: F401  (float64)
from spatialjax.errors import ConvergenceError, ParameterError
from spatialjax.results import SOLVER_STATUSES, StatusFromMessage
from spatialjax.scalar import SCALAR_STATUSES, bracket_root
from spatialjax.solver import RESULTS, solve_root
from spatialjax.tables import format_kv, format_table
from spatialjax.validation import check_finite, check_once, check_positive, check_shape, is_traced

Array = jax.Array

__all__ = [
    "Params", "default_params", "productivity", "cost", "utility", "utility_jacobian",
    "Optimum", "solve_type_optimum", "type_optimum", "type_optima", "solve_contract_curve",
    "contract_curve", "contract_curve_path", "type_optimal_loci_I2", "CPE",
    "constrained_pareto_efficient", "cpe_allocation", "NashSet", "nash_interval", "Specialized",
    "specialized_equilibria", "set_partitions", "PartitionResult", "PartitionTable",
    "partition_equilibria", "check_assumptions", "assumption4", "closed_form_I2", "sweep",
]


# ----------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------

def _is_concrete(x) -> bool:
    return not is_traced(x)


def _num(name: str, v):
    """``v`` as a float64 array (shape kept), or a ParameterError naming the field."""
    if is_traced(v):
        return v
    if isinstance(v, (str, bytes)):
        raise ParameterError(name, f"must be a number or an array of numbers; got the string {v!r}")
    try:
        return np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(name, f"must be a number or an array of numbers; got {type(v).__name__} {v!r}") from None


def _check_params(p: "Params") -> None:
    """The checks of :class:`Params`, on concrete values (skipped under tracing). Run by the
    constructor and again at the entry of every public solve, since ``eqx.tree_at`` (e.g. in a
    sweep) builds a ``Params`` without the constructor."""
    for name in ("alpha", "beta", "gamma", "t"):
        check_shape(name, getattr(p, name), ())
    check_positive("alpha", p.alpha)
    check_positive("beta", p.beta)
    check_positive("gamma", p.gamma, strict=False)
    check_positive("t", p.t)
    th = p.theta
    if np.ndim(th) != 2 or np.shape(th)[0] != np.shape(th)[1] or np.shape(th)[0] < 2:
        raise ParameterError("theta", f"must be a square (I, I) array with I >= 2 (row = industry i, column = worker type s); got shape {np.shape(th)}")
    check_finite("theta", th)
    I = np.shape(th)[0]
    check_shape("V0", p.V0, (I,))
    check_finite("V0", p.V0)
    check_shape("N", p.N, (I,))
    check_positive("N", p.N)
    if p.g is None and not any(is_traced(x) for x in (p.alpha, p.t, th)):
        # Appendix of the paper: theta^i_s > 1 and alpha > t, so alpha theta^i_s > t for all i, s.
        # Without it a type's optimal cluster has n_k = 0 for some k (a corner): the interior
        # objects of Sections IV-VII (type optima (IV.1), contract surface (IV.5), CPE) do not exist.
        gain = float(p.alpha) * np.asarray(th) - float(p.t)
        if np.any(gain <= 0):
            i, k = (int(x) for x in np.argwhere(gain <= 0)[0])
            raise ParameterError(
                "theta", f"breaks the Appendix assumption alpha theta^i_s > t (theta > 1 and alpha > t, (A.1)): "
                         f"alpha * theta[{i}, {k}] - t = {gain[i, k]:.6g} <= 0, so type-{i + 1} optimal clusters "
                         f"are corners (no interior solution of (IV.1)); "
                         f"need theta[i, s] > t / alpha = {float(p.t) / float(p.alpha):.6g} for all i, s")


class Params(eqx.Module):
    """Parameters of the Helsley-Strange economy (Appendix form (A.1) unless ``g`` is given).

    Fields (all float64 arrays):
      alpha, beta, gamma, t : scalars. alpha > 0, beta > 0, gamma >= 0, t > 0 (III.7), (A.1).
      theta : (I, I), ``theta[i, s] = theta^i_s``; row = industry i, column = worker type s.
      V0    : (I,), autarky utility V_i(0) (default 0 = utility in an empty city, since
              g_i(0) = c(0) = 0 in (A.1)/(III.7)).
      N     : (I,), aggregate numbers of workers of each type N_i (> 0); they fix the ratio
              ray (V.1) and the number of cities J = N_i / n_i (default 100 each).
      aux   : any pytree of extra parameters for a user-supplied ``g``/``c`` (differentiable).
      g     : optional ``g(params, n) -> (I,)`` productivity (static); default (A.1).
      c     : optional ``c(params, N) -> scalar`` residential cost (static); default t*N (III.7).

    With a user ``g``, ``theta`` may be omitted if ``N`` or ``V0`` gives I.

    Every field is checked (a :class:`~spatialjax.errors.ParameterError` names it; an unknown
    keyword is one too, listing the allowed ones). For (A.1) with c = tN, theta must satisfy the
    Appendix assumption alpha theta^i_s > t (implied by theta > 1, alpha > t): otherwise the
    type optima are corners and the interior objects of the paper do not exist. The other
    assumptions (1-4) are reported by :func:`check_assumptions`.
    """

    alpha: Array
    beta: Array
    gamma: Array
    t: Array
    theta: Array
    V0: Array
    N: Array
    aux: Any = None
    g: Optional[Callable] = eqx.field(static=True, default=None)
    c: Optional[Callable] = eqx.field(static=True, default=None)

    def __init__(self, alpha=1.0, beta=1.0, gamma=0.5, t=0.5, theta=None, V0=None, N=None, *,
                 g=None, c=None, aux=None, **unknown):
        if unknown:
            bad = sorted(unknown)[0]
            raise ParameterError(bad, "unknown parameter; allowed: alpha, beta, gamma, t, theta, V0, N, g, c, aux")
        if g is not None and not callable(g):
            raise ParameterError("g", f"must be a callable g(params, n) -> (I,) array; got {type(g).__name__}")
        if c is not None and not callable(c):
            raise ParameterError("c", f"must be a callable c(params, N) -> scalar; got {type(c).__name__}")
        if theta is None:
            if g is None:
                theta = [[2.0, 1.5], [1.2, 1.8]]
            else:
                I = None
                for name, v in (("N", N), ("V0", V0)):
                    if v is not None and np.ndim(v) == 1:
                        I = np.shape(v)[0]
                        break
                if I is None:
                    raise ParameterError("theta", "with a user-supplied g give theta (I, I), or N or V0 of shape (I,) so that I is known")
                theta = np.zeros((I, I))
        alpha, beta, gamma, t = (_num(k, v) for k, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("t", t)))
        theta = _num("theta", theta)
        if np.ndim(theta) != 2 or np.shape(theta)[0] != np.shape(theta)[1] or np.shape(theta)[0] < 2:
            raise ParameterError("theta", f"must be a square (I, I) array with I >= 2 (row = industry i, column = worker type s); got shape {np.shape(theta)}")
        I = np.shape(theta)[0]
        if V0 is None:
            V0 = np.zeros(I)
        V0 = _num("V0", V0)
        if np.ndim(V0) == 0:
            check_finite("V0", V0)
            V0 = jnp.full((I,), V0, dtype=jnp.float64)
        N = np.full(I, 100.0) if N is None else _num("N", N)
        f = lambda x: jnp.asarray(x, dtype=jnp.float64)  # noqa: E731
        self.alpha, self.beta, self.gamma, self.t = f(alpha), f(beta), f(gamma), f(t)
        self.theta, self.V0, self.N = f(theta), f(V0), f(N)
        self.aux, self.g, self.c = aux, g, c
        _check_params(self)

    def to_dict(self) -> dict:
        """The numeric parameters as plain lists / floats (a user ``g``/``c`` is named, not serialised)."""
        d = {k: np.asarray(getattr(self, k)).tolist() for k in ("alpha", "beta", "gamma", "t", "theta", "V0", "N")}
        d["g"] = None if self.g is None else getattr(self.g, "__name__", "user g")
        d["c"] = None if self.c is None else getattr(self.c, "__name__", "user c")
        return d

    @property
    def I(self) -> int:  # noqa: E743
        """Number of industries / worker types."""
        return self.theta.shape[0]

    @property
    def ratio(self) -> Array:
        """Direction of the ratio ray (V.1), normalised to sum 1: r = N / sum(N); shape (I,)."""
        return self.N / jnp.sum(self.N)


def default_params(**overrides) -> Params:
    """The default I = 2 economy used by the CLI and the figures:
    alpha = 1, beta = 1, gamma = 0.5, t = 0.5, theta = [[2, 1.5], [1.2, 1.8]], V0 = 0, N = (100, 100).
    It satisfies Assumptions 1 and 2, beta > gamma and alpha > t (interior type optima)."""
    return Params(**overrides)


# ----------------------------------------------------------------------------------------
# Primitives
# ----------------------------------------------------------------------------------------

def productivity(params: Params, n: Array) -> Array:
    """g(n), shape (I,): (A.1) or the user's ``g``. ``n`` has shape (I,)."""
    n = jnp.asarray(n, jnp.float64)
    if params.g is not None:
        return jnp.asarray(params.g(params, n), jnp.float64)
    # (A.1): g_i = sum_s [theta^i_s alpha n_s - beta/2 n_s^2] + gamma prod_s n_s
    common = -0.5 * params.beta * jnp.sum(n ** 2) + params.gamma * jnp.prod(n)
    return params.alpha * (params.theta @ n) + common


def cost(params: Params, Ntot: Array) -> Array:
    """Residential cost c(N): t N (III.7) or the user's ``c``."""
    if params.c is not None:
        return jnp.asarray(params.c(params, Ntot), jnp.float64)
    return params.t * Ntot


def utility(params: Params, n: Array) -> Array:
    """V(n) = g(n) - c(sum n), shape (I,) (III.6)."""
    n = jnp.asarray(n, jnp.float64)
    return productivity(params, n) - cost(params, jnp.sum(n))


def utility_jacobian(params: Params, n: Array) -> Array:
    """D[i, k] = dV_i/dn_k at n, shape (I, I). D[i, i] < 0 for all i is stability (S_i)."""
    return jax.jacfwd(lambda m: utility(params, m))(jnp.asarray(n, jnp.float64))


# ----------------------------------------------------------------------------------------
# Solves on the generic engine (spatialjax.solver.solve_root, spatialjax.scalar.bracket_root)
# ----------------------------------------------------------------------------------------

_MAX_STEPS = 100
_TOL = 1e-11   # on the residual scaled by max(1, |F(x0)|): relative to the user's utility units


def _root(F, x0, args):
    """Newton with Armijo line search on F(x, args) = 0 by :func:`spatialjax.solver.solve_root`.

    The residual is divided by ``max(1, |F(x0)|)`` (passed in ``args``, so nothing traced is
    closed over; the root does not depend on it), so that the tolerance is relative to the
    units of the utilities. Derivatives of the value with respect to ``args`` are the implicit
    ones (reverse mode: ``jax.grad`` / ``jax.jacrev``) and NaN unless the status is
    ``successful`` (a converged, regular root)."""
    f0 = F(x0, args)
    scale = jax.lax.stop_gradient(jnp.maximum(1.0, jnp.max(jnp.abs(jnp.where(jnp.isfinite(f0), f0, 0.0)))))

    def G(x, a):
        inner, sc = a
        return F(x, inner) / sc

    return solve_root(G, x0, (args, scale), tol=_TOL, max_steps=_MAX_STEPS, linear_solver="dense")


def _solver_status(sol) -> Array:
    """Index into ``SOLVER_STATUSES`` of a (possibly batched, traced) solve result."""
    code = jnp.zeros(jnp.shape(sol.residual), jnp.int32)
    for k, name in enumerate(SOLVER_STATUSES):
        code = jnp.where(sol.result == getattr(RESULTS, name), k, code)
    return code


# ----------------------------------------------------------------------------------------
# Type optima (IV.1) and the contract surface (IV.4)-(IV.5)
# ----------------------------------------------------------------------------------------

def _weighted_x0(params: Params, w: Array) -> Array:
    if params.g is None:
        th = w @ params.theta
        n0 = (params.alpha * th - params.t) / params.beta  # gamma = 0 solution of (IV.5)
        n0 = jnp.where(n0 > 1e-3, n0, 1e-3 + 0.1 * jnp.abs(params.alpha / params.beta))
        return jnp.log(n0)
    return jnp.zeros(params.I)


@eqx.filter_jit
def _solve_weighted(params: Params, w: Array, n0: Optional[Array]):
    """Maximize W = w . V(n) over n > 0 in logs (IV.4); w = e_i gives (IV.1)."""
    x0 = _weighted_x0(params, w) if n0 is None else jnp.log(n0)

    def F(x, args):
        p, ww = args
        n = jnp.exp(x)
        return jax.grad(lambda m: ww @ utility(p, m))(n)   # (IV.5) / (IV.1)

    sol = _root(F, x0, (params, w))
    n = jnp.exp(sol.value)
    W = lambda m: w @ utility(params, m)  # noqa: E731
    foc = jax.grad(W)(n)
    H = jax.hessian(W)(n)
    eig = jnp.linalg.eigvalsh(0.5 * (H + H.T))
    resid = jnp.max(jnp.abs(jax.lax.stop_gradient(foc)))
    return Optimum(n=n, V=utility(params, n), weights=jnp.asarray(w, jnp.float64), foc_residual=resid,
                   iterations=sol.steps, solve_code=_solver_status(sol), sigma_min=sol.sigma_min,
                   hessian_max_eig=jnp.max(eig))


class Optimum(StatusFromMessage, eqx.Module):
    """A maximizer of W = sum_i w_i V_i(n): a type optimum (w = e_i, (IV.1)) or a Pareto
    efficient cluster (w = lambda, (IV.5)).

    n: (I,) cluster; V: (I,) utilities there; weights: (I,); foc_residual: max |dW/dn_k|
    (also ``residual``); iterations: Newton steps; solve_code: index into
    :data:`spatialjax.results.SOLVER_STATUSES` of the FOC solve (``solve_root``);
    sigma_min: smallest singular value of the FOC Jacobian (in logs) at the solution;
    foc_converged: the FOC solve's status is ``successful``; hessian_max_eig: largest eigenvalue
    of the Hessian of W in n (second-order condition: < 0);
    is_max = converged = foc_converged and hessian_max_eig < 0 (an array under jit / vmap).
    status (:mod:`spatialjax.results`): "successful" (a local maximum), the FOC solve's status
    when it failed ("max_steps_reached", "stalled", "nonfinite", "singular"), or
    "not_a_maximum"; ``message`` says why.
    """

    n: Array
    V: Array
    weights: Array
    foc_residual: Array
    iterations: Array
    solve_code: Array
    sigma_min: Array
    hessian_max_eig: Array

    @property
    def foc_converged(self):
        return self.solve_code == 0

    @property
    def is_max(self):
        return self.foc_converged & (self.hessian_max_eig < 0)

    @property
    def converged(self):
        """Same as ``is_max`` (status "successful"); an array when the result is traced or batched."""
        return self.is_max

    @property
    def residual(self):
        return self.foc_residual

    def _status_message(self) -> tuple[str, str]:
        if not bool(self.foc_converged):
            why = (f"FOC solve {SOLVER_STATUSES[int(self.solve_code)]}: residual {float(self.foc_residual):.3e} "
                   f"after {int(self.iterations)} iterations; no interior maximum found: for (A.1) with I = 2 "
                   "this needs beta > gamma and alpha theta > t")
            return SOLVER_STATUSES[int(self.solve_code)], why
        if not bool(self.hessian_max_eig < 0):
            return "not_a_maximum", (f"FOC solved but Hessian max eigenvalue {float(self.hessian_max_eig):.3e} >= 0 "
                                     "(for (A.1), I = 2 needs beta > gamma)")
        return "successful", "local maximum"

    def _dict_fields(self) -> dict:
        return {k: getattr(self, k) for k in ("n", "V", "weights", "foc_residual", "iterations", "sigma_min",
                                              "hessian_max_eig")} | {"foc_converged": self.foc_converged}

    def summary(self, title: str = "Optimum") -> str:
        I = self.n.shape[0]
        rows = [(f"n_{k + 1}", float(self.n[k]), float(self.V[k])) for k in range(I)]
        notes = [f"weights = {np.round(np.asarray(self.weights), 6).tolist()}",
                 f"N = {float(jnp.sum(self.n)):.6g}; FOC residual {float(self.foc_residual):.2e}; "
                 f"iterations {int(self.iterations)}; Hessian max eig {float(self.hessian_max_eig):.4g}",
                 f"status: {self.status} ({self.message})"]
        return format_table(["type k", "n_k", "V_k(n)"], rows, title=title, notes=notes)


def _check_index(params: Params, i) -> int:
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise ParameterError("i", f"must be an integer industry index in [0, {params.I - 1}]; got {i!r}")
    if not 0 <= int(i) < params.I:
        raise ParameterError("i", f"must be in [0, {params.I - 1}] (0-based industry index); got {i}")
    return int(i)


def _check_n0(params, n0):
    if n0 is None:
        return None
    check_shape("n0", n0, (params.I,))
    check_positive("n0", n0)
    return jnp.asarray(n0, jnp.float64)


def _optimum(params, w, n0):
    check_once(params, _check_params)
    return _solve_weighted(params, w, _check_n0(params, n0))


def _poison(x: Array, ok) -> Array:
    """``x`` where ``ok``, else NaN -- in value and in derivative. ``jnp.where(ok, x, nan)``
    would give a zero (plausible, wrong) derivative where ``ok`` is False; multiplying by a
    factor that is 1 or NaN carries NaN into every derivative of a failed point."""
    return x * jnp.where(jax.lax.stop_gradient(ok), 1.0, jnp.nan)


def _raise_or_nan(opt: Optimum, what: str) -> Array:
    if _is_concrete(opt.foc_converged) and _is_concrete(opt.hessian_max_eig):
        if not bool(opt.is_max):
            raise ConvergenceError(f"{what}: {opt.status}: {opt.message}")
        return opt.n
    return _poison(opt.n, opt.is_max)


def solve_type_optimum(params: Params, i: int, *, n0=None) -> Optimum:
    """Type-i optimal cluster: maximizes V_i(n) (FOC (IV.1), closed form (A.18)/(A.19) for I = 2).
    Never raises on failure; see ``Optimum.status``."""
    i = _check_index(params, i)
    return _optimum(params, np.eye(params.I)[i], n0)


def type_optimum(params: Params, i: int, *, n0=None) -> Array:
    """n*^i, shape (I,): the type-i optimal cluster (IV.1).

    Raises ConvergenceError if Newton did not converge or the second-order condition fails
    (no interior maximum). Under jit/vmap/grad it returns NaNs instead of raising."""
    return _raise_or_nan(solve_type_optimum(params, i, n0=n0), f"type-{i} optimum")


def type_optima(params: Params) -> Array:
    """All type optima stacked, shape (I, I): row i is n*^i."""
    return jnp.stack([type_optimum(params, i) for i in range(params.I)])


def _check_lam(params: Params, lam) -> Array:
    I = params.I
    if np.ndim(lam) == 0 and I == 2:
        if _is_concrete(lam):
            lam = np.array([float(lam), 1.0 - float(lam)])
        else:
            lam = jnp.stack([jnp.asarray(lam, jnp.float64), 1.0 - jnp.asarray(lam, jnp.float64)])
    check_shape("lam", lam, (I,))
    check_finite("lam", lam)
    if _is_concrete(lam):
        a = np.asarray(lam, float)
        if np.any(a < 0) or np.any(a > 1) or abs(a.sum() - 1.0) > 1e-9:
            raise ParameterError("lam", f"Pareto weights must lie in [0, 1] and sum to 1 (IV.4); got {a.tolist()}")
        return a
    return jnp.asarray(lam, jnp.float64)


def solve_contract_curve(params: Params, lam, *, n0=None) -> Optimum:
    """Pareto-efficient cluster for weights ``lam`` (shape (I,), or a scalar lambda for I = 2,
    meaning (lambda, 1 - lambda)): maximizer of (IV.4), FOC (IV.5); (A.20)-(A.21) for I = 2."""
    return _optimum(params, _check_lam(params, lam), n0)


def contract_curve(params: Params, lam, *, n0=None) -> Array:
    """n^PE(lam), shape (I,): the point of the contract surface (IV.5) for weights ``lam``.
    Raises ConvergenceError on failure (NaNs under tracing)."""
    return _raise_or_nan(solve_contract_curve(params, lam, n0=n0), "contract curve")


def contract_curve_path(params: Params, lams: Array) -> Array:
    """The contract surface along a batch of weights, one vmapped solve: ``lams`` (K, I)
    (or (K,) scalars for I = 2) -> (K, I). Failed points are NaN."""
    lams = jnp.asarray(lams, jnp.float64)
    if lams.ndim == 1 and params.I == 2:
        lams = jnp.stack([lams, 1.0 - lams], axis=1)
    check_shape("lams", lams, (lams.shape[0], params.I))
    return jax.vmap(lambda l: contract_curve(params, l))(lams)


def type_optimal_loci_I2(params: Params, i: int, k: int, n_other: Array) -> Array:
    """For (A.1), I = 2, c = tN: the locus n*^i_k(n_other) where dV_i/dn_k = 0, (A.22)-(A.25):
    n*^i_k = (theta^i_k alpha - t)/beta + (gamma/beta) n_other."""
    return (params.theta[i, k] * params.alpha - params.t) / params.beta + params.gamma / params.beta * jnp.asarray(n_other)


def closed_form_I2(params: Params) -> dict:
    """Appendix closed forms for I = 2: type optima (A.18)/(A.19) and the contract curve
    (A.20)-(A.21) as a function of lambda."""
    a, b, g, t, th = params.alpha, params.beta, params.gamma, params.t, params.theta
    d = b ** 2 - g ** 2

    def opt(th1, th2):  # th1 = theta^i_1, th2 = theta^i_2
        return jnp.stack([(a * (b * th1 + g * th2) - t * (b + g)) / d, (a * (g * th1 + b * th2) - t * (b + g)) / d])

    def pe(lam):
        m1 = lam * th[0, 0] + (1 - lam) * th[1, 0]
        m2 = lam * th[0, 1] + (1 - lam) * th[1, 1]
        return opt(m1, m2)

    return {"type1": opt(th[0, 0], th[0, 1]), "type2": opt(th[1, 0], th[1, 1]), "contract": pe}


# ----------------------------------------------------------------------------------------
# Constrained Pareto-efficient allocation: contract surface ∩ ratio ray (V.1)
# ----------------------------------------------------------------------------------------

@eqx.filter_jit
def _solve_cpe(params: Params, y0: Array):
    def F(y, p):
        S = jnp.exp(y[0])
        lam = y[1:]
        D = utility_jacobian(p, S * p.ratio)
        return jnp.concatenate([D.T @ lam, jnp.array([jnp.sum(lam) - 1.0])])   # (IV.5) on (V.1)

    sol = _root(F, y0, params)
    y = sol.value
    resid = jnp.max(jnp.abs(jax.lax.stop_gradient(F(y, params))))
    S = jnp.exp(y[0])
    n = S * params.ratio
    return n, S, y[1:], resid, sol.steps, _solver_status(sol), utility_jacobian(params, n), utility(params, n)


@dataclass
class CPE(StatusFromMessage):
    """Symmetric constrained Pareto-efficient allocation (contract surface (IV.5) ∩ ratio ray (V.1)).

    n: (I,) cluster; S: city scale sum(n); lam: (I,) Pareto weights of the contract point;
    J: number of cities sum(N)/S; V: (I,) utilities; own_marginal: (I,) dV_i/dn_i (all > 0 under
    Assumption 2, so the CPE is unstable: Proposition 2); residual, iterations; solve_status:
    the status of the Newton solve (``solve_root``); solve_converged: it is ``successful``;
    exists: solve_converged with all lam in (0, 1) (footnote 14: the ray meets the contract
    surface between the type optima).
    status: "successful", "empty" (solved, but the ray misses the contract surface: no CPE;
    ``converged`` is True, ``exists`` False) or the solve's failure status ("max_steps_reached",
    "stalled", "nonfinite", "singular"); ``message`` the detail."""

    n: Array
    S: float
    lam: Array
    J: float
    V: Array
    own_marginal: Array
    residual: float
    iterations: int
    solve_status: str
    exists: bool

    @property
    def solve_converged(self) -> bool:
        return self.solve_status == "successful"

    def _status_message(self) -> tuple[str, str]:
        if not self.solve_converged:
            return self.solve_status, (f"CPE solve {self.solve_status}: residual {self.residual:.3e} after "
                                       f"{self.iterations} iterations")
        if not self.exists:
            return "empty", (f"ratio ray misses the contract surface: weights "
                             f"{np.round(np.asarray(self.lam), 4).tolist()} not in (0, 1) (footnote 14)")
        return "successful", ""

    @property
    def is_nash(self) -> bool:
        """Stable for every type? (Proposition 2 says no.)"""
        return bool(np.all(np.asarray(self.own_marginal) < 0))

    def summary(self) -> str:
        I = len(self.n)
        rows = [(f"type {k + 1}", float(self.n[k]), float(self.lam[k]), float(self.V[k]), float(self.own_marginal[k])) for k in range(I)]
        return format_table(["", "n_k", "lambda_k", "V_k", "dV_k/dn_k"], rows,
                            title="Constrained Pareto-efficient allocation (IV.5) ∩ (V.1)",
                            notes=[f"city scale N^j = {self.S:.6g}, number of cities J = {self.J:.6g}",
                                   f"stable for all types (Nash)? {'yes' if self.is_nash else 'no (Proposition 2)'}",
                                   f"residual {self.residual:.2e}; iterations {self.iterations}; status: {self.status}"
                                   + (f" ({self.message})" if self.message else "")])


def constrained_pareto_efficient(params: Params) -> CPE:
    """Intersection of the contract surface (IV.5) with the ratio ray (V.1): solves
    sum_i lam_i dV_i/dn_k (S r) = 0 (k = 1..I), sum lam = 1 for (log S, lam) by Newton."""
    check_once(params, _check_params)
    lam0 = np.asarray(params.N) / np.sum(np.asarray(params.N))
    pe = solve_contract_curve(params, lam0)
    S0 = float(np.sum(np.asarray(pe.n))) if bool(pe.foc_converged) else 1.0
    y0 = np.concatenate([[math.log(S0)], lam0])
    n, S, lam, r, it, code, D, V = _solve_cpe(params, y0)
    lam_np = np.asarray(lam)
    st = SOLVER_STATUSES[int(code)]
    exists = st == "successful" and bool(np.all((lam_np > 0) & (lam_np < 1)))
    S = float(S)
    J = float(np.sum(np.asarray(params.N))) / S if S > 0 and math.isfinite(S) else float("nan")
    return CPE(n=np.asarray(n), S=S, lam=lam_np, J=J, V=np.asarray(V), own_marginal=np.diag(np.asarray(D)),
               residual=float(r), iterations=int(it), solve_status=st, exists=exists)


def cpe_allocation(params: Params) -> Array:
    """The CPE cluster n^CPE, shape (I,), as a traceable function (jit / vmap / grad; the
    derivative is the implicit one). Raises ConvergenceError when concrete and the solve failed
    or the ratio ray misses the contract surface (footnote 14); NaNs under tracing."""
    check_once(params, _check_params)
    lam0 = params.ratio
    pe = solve_contract_curve(params, jax.lax.stop_gradient(lam0))
    S0 = jnp.where(pe.foc_converged, jnp.sum(pe.n), 1.0)
    y0 = jax.lax.stop_gradient(jnp.concatenate([jnp.log(S0)[None], lam0]))
    n, S, lam, r, it, code, D, V = _solve_cpe(params, y0)
    ok = (code == 0) & jnp.all((lam > 0) & (lam < 1))
    if _is_concrete(ok):
        if not bool(ok):
            raise ConvergenceError(f"CPE: no interior intersection of the contract surface with the ratio ray "
                                   f"(solve {SOLVER_STATUSES[int(code)]}, residual {float(r):.3e}, "
                                   f"weights {np.asarray(lam).tolist()})")
        return n
    return _poison(n, ok)


# ----------------------------------------------------------------------------------------
# Symmetric Nash equilibria on a ray: stable (S_i) and at least as good as autarky (A_i)
# ----------------------------------------------------------------------------------------

@eqx.filter_jit
def _ray_margins(params: Params, r: Array, m: Array, S: Array):
    """Margins along the ray n = S r for the members m (bool (I,)); columns 0..I-1 are
    stability margins -dV_i/dn_i (need > 0), I..2I-1 autarky margins V_i - V_i(0) (need >= 0).
    Non-members get +inf. Also returns the block welfare sum_{i in m} N_i V_i."""
    def one(s):
        n = s * r
        D = utility_jacobian(params, n)
        V = utility(params, n)
        stab = jnp.where(m, -jnp.diag(D), jnp.inf)
        aut = jnp.where(m, V - params.V0, jnp.inf)
        return jnp.concatenate([stab, aut]), jnp.sum(jnp.where(m, params.N * V, 0.0))
    return jax.vmap(one)(S)


def _margin_col(s, args):
    params, r, m, e = args
    row = _ray_margins(params, r, m, s[None])[0][0]
    return jnp.sum(jnp.where(e > 0, row, 0.0))


@eqx.filter_jit
def _bisect_margins(params: Params, r, m, a, b):
    """Roots of every margin column between a and b (``bracket_root``, vmapped over the
    columns); returns (roots, status codes into ``SCALAR_STATUSES``)."""
    I = params.I
    cols = jnp.eye(2 * I)
    res = jax.vmap(lambda e: bracket_root(_margin_col, a, b, (params, r, m, e)))(cols)
    return res.value, res.code


@eqx.filter_jit
def _golden_max(params: Params, r, m, a, b):
    """Golden-section maximum of the block welfare on [a, b]."""
    phi = (math.sqrt(5.0) - 1.0) / 2.0
    W = lambda s: _ray_margins(params, r, m, s[None])[1][0]  # noqa: E731

    def body(_, st):
        lo, hi = st
        x1 = hi - phi * (hi - lo)
        x2 = lo + phi * (hi - lo)
        up = W(x1) < W(x2)
        return jnp.where(up, x1, lo), jnp.where(up, hi, x2)

    lo, hi = jax.lax.fori_loop(0, 100, body, (a, b))
    return 0.5 * (lo + hi)


@dataclass
class NashSet(StatusFromMessage):
    """The symmetric Nash equilibria on a ratio ray, as an interval of city scale N^j = sum(n).

    S_lo, S_hi: ends of the (first) interval where dV_i/dn_i < 0 (stability, S_i) and
    V_i >= V_i(0) (autarky, A_i) for every member type i; n_lo, n_hi: (I,) clusters there;
    J_range: numbers of cities (sum N / S_hi, sum N / S_lo); lower_bound, upper_bound: the
    conditions binding at the ends; exists; components: number of disjoint feasible pieces on
    the grid (1 for (A.1) with I = 2); S_max: grid end; S_eff: scale that maximizes the
    members' welfare sum N_i V_i on the ray (unconstrained by stability); members: the types.
    status: "successful" (non-empty), "empty" (``reason`` in ``message``) or, when the bracketing
    root finder (:func:`spatialjax.scalar.bracket_root`) failed to locate an end, its status
    (``refine_status``; ``reason`` says which end); the ends are found by a grid scan and
    bracketing, so ``residual`` is nan (no equation system is solved)."""

    members: tuple
    exists: bool
    S_lo: float = float("nan")
    S_hi: float = float("nan")
    n_lo: Any = None
    n_hi: Any = None
    J_range: tuple = (float("nan"), float("nan"))
    lower_bound: str = ""
    upper_bound: str = ""
    components: int = 0
    S_max: float = float("nan")
    S_eff: float = float("nan")
    V_lo: Any = None
    V_hi: Any = None
    reason: str = ""

    refine_status: str = "successful"

    def _status_message(self) -> tuple[str, str]:
        if not self.exists:
            return "empty", f"no symmetric Nash equilibrium on the ray: {self.reason}"
        if self.refine_status != "successful":
            return self.refine_status, f"an end of the interval is not located: {self.reason}"
        return "successful", ""

    def summary(self) -> str:
        if not self.exists:
            return format_kv([("members", str([k + 1 for k in self.members])), ("status", self.status),
                              ("message", self.message)],
                             title="Symmetric Nash equilibria (empty)")
        I = len(self.n_lo)
        rows = [("lower end", self.S_lo, self.J_range[1], *[float(x) for x in self.n_lo], self.lower_bound),
                ("upper end", self.S_hi, self.J_range[0], *[float(x) for x in self.n_hi], self.upper_bound)]
        return format_table(["", "N^j", "J", *[f"n_{k + 1}" for k in range(I)], "binding condition"], rows,
                            title=f"Symmetric Nash equilibria on the ratio ray, types {[k + 1 for k in self.members]}",
                            notes=[f"efficient scale on the ray (max sum N_i V_i): {self.S_eff:.6g}; "
                                   f"Nash clusters too large: {'yes' if self.S_lo > self.S_eff else 'no'}",
                                   f"feasible pieces on the grid: {self.components}; status: {self.status}"])


def _labels(I):
    return [f"stability of type {k + 1} (dV_{k + 1}/dn_{k + 1} = 0)" for k in range(I)] + \
           [f"autarky of type {k + 1} (V_{k + 1} = V_{k + 1}(0))" for k in range(I)]


def _default_smax(params: Params, members) -> float:
    best = 0.0
    for i in members:
        o = solve_type_optimum(params, i)
        if bool(o.is_max):
            best = max(best, float(np.sum(np.asarray(o.n))))
    return 4.0 * best if best > 0 else 100.0


def nash_interval(params: Params, members: Optional[Sequence[int]] = None, *, S_max: Optional[float] = None,
                  grid: int = 4001) -> NashSet:
    """Symmetric Nash equilibria with free migration on the ratio ray (Section V.B).

    With ``members=None`` the ray is (V.1), n = S N / sum(N). With a subset of types, the ray
    of a city that holds only those types (a block of a partition, Section VII; a single type
    gives the specialized city of Section VI). Feasibility is evaluated on a grid of ``grid``
    scales in (0, S_max] (one vmapped jitted call) and each end of the first feasible piece is
    refined by bisection on the condition that changes there. ``S_max`` defaults to 4 times the
    largest type-optimum scale and is doubled (up to 6 times) while the top of the grid is feasible.
    """
    check_once(params, _check_params)
    I = params.I
    members = tuple(range(I)) if members is None else tuple(sorted(set(int(k) for k in members)))
    if not members or any(k < 0 or k >= I for k in members):
        raise ParameterError("members", f"must be a non-empty subset of 0..{I - 1}; got {members}")
    if grid < 10:
        raise ParameterError("grid", f"must be >= 10; got {grid}")
    m = np.zeros(I, bool)
    m[list(members)] = True
    Nm = np.where(m, np.asarray(params.N), 0.0)
    r = Nm / np.sum(Nm)
    smax = float(S_max) if S_max is not None else _default_smax(params, members)
    if not (smax > 0 and math.isfinite(smax)):
        raise ParameterError("S_max", f"must be a finite number > 0; got {S_max}")
    for _ in range(7):
        S = np.linspace(smax / grid, smax, grid)
        M, W = _ray_margins(params, r, m, S)
        M = np.asarray(M)
        feas = np.all(M[:, :I] > 0, axis=1) & np.all(M[:, I:] >= 0, axis=1)
        if not feas[-1] or S_max is not None:
            break
        smax *= 2.0
    S_np = np.asarray(S)
    Wn = np.asarray(W)
    k_eff = int(np.nanargmax(np.where(np.isfinite(Wn), Wn, -np.inf)))
    a = S_np[max(k_eff - 1, 0)]
    b = S_np[min(k_eff + 1, grid - 1)]
    S_eff = float(_golden_max(params, r, m, a, b))
    if not np.any(feas):
        stab_ok = np.all(M[:, :I] > 0, axis=1)
        aut_ok = np.all(M[:, I:] >= 0, axis=1)
        if not stab_ok.any():
            why = "no scale in the grid is stable for all member types"
        elif not aut_ok.any():
            why = "no scale is at least as good as autarky for all member types"
        else:
            why = "the stable scales are all worse than autarky for some member type"
        return NashSet(members=members, exists=False, S_max=smax, S_eff=S_eff, reason=why)
    edges = np.diff(feas.astype(int))
    components = int(np.sum(edges == 1) + (1 if feas[0] else 0))
    k0 = int(np.argmax(feas))
    k1 = k0 + int(np.argmin(feas[k0:])) - 1 if not feas[k0:].all() else grid - 1
    labels = _labels(I)

    def ok_cols(row):
        return np.concatenate([row[:I] > 0, row[I:] >= 0])

    failures = []

    def refine(ka, kb, lower):
        """ka infeasible, kb feasible neighbour."""
        flip = ~ok_cols(M[ka]) & ok_cols(M[kb])
        # all 2I columns are bracketed (fixed shape: one compilation), only flipping ones are used
        roots, codes = (np.asarray(x) for x in _bisect_margins(params, r, m, S_np[ka], S_np[kb]))
        roots = np.where(flip, roots, -np.inf if lower else np.inf)
        j = int(np.argmax(roots)) if lower else int(np.argmin(roots))
        if SCALAR_STATUSES[int(codes[j])] != "successful":
            failures.append((SCALAR_STATUSES[int(codes[j])], f"{'lower' if lower else 'upper'} end ({labels[j]}): "
                             f"bracketing root finder {SCALAR_STATUSES[int(codes[j])]} on "
                             f"[{S_np[min(ka, kb)]:.6g}, {S_np[max(ka, kb)]:.6g}]"))
        return float(roots[j]), labels[j]

    if k0 == 0:
        S_lo, lo_lab = float(S_np[0]), "grid start (feasible down to the smallest scale tried)"
    else:
        S_lo, lo_lab = refine(k0 - 1, k0, True)
    if k1 == grid - 1:
        S_hi, hi_lab = float(S_np[-1]), "grid end S_max (feasible up to the largest scale tried; raise S_max)"
    else:
        S_hi, hi_lab = refine(k1 + 1, k1, False)
    n_lo, n_hi = S_lo * r, S_hi * r
    tot = float(np.sum(Nm))
    return NashSet(members=members, exists=True, S_lo=S_lo, S_hi=S_hi, n_lo=n_lo, n_hi=n_hi,
                   J_range=(tot / S_hi, tot / S_lo), lower_bound=lo_lab, upper_bound=hi_lab,
                   components=components, S_max=smax, S_eff=S_eff,
                   V_lo=np.asarray(_U(params, n_lo)), V_hi=np.asarray(_U(params, n_hi)),
                   refine_status=failures[0][0] if failures else "successful",
                   reason="; ".join(f[1] for f in failures))


# ----------------------------------------------------------------------------------------
# Specialized cities (Section VI, Proposition 3, Figure 5)
# ----------------------------------------------------------------------------------------

def _Vii(params, e, n):
    """V_i^i(n): a type-i worker's utility in a type-i specialized city of size n (e = e_i)."""
    return utility(params, n * e) @ e


def _dVii_log(x, args):
    """dV_i^i/dn at n = exp(x[0]) (the FOC of n^S), shape (1,)."""
    params, e = args
    return jax.grad(lambda n: _Vii(params, e, n))(jnp.exp(x[0]))[None]


def _Vii_minus(n, args):
    params, e, target = args
    return _Vii(params, e, n) - target


@eqx.filter_jit
def _specialized(params: Params):
    I = params.I
    eye = jnp.eye(I)

    def nS_of(e):
        if params.g is None and params.c is None:
            x0 = jnp.log(jnp.maximum((e @ jnp.diag(params.theta) * params.alpha - params.t) / params.beta, 1e-3))
        else:
            x0 = jnp.zeros(())
        sol = _root(_dVii_log, x0[None], (params, e))
        n = jnp.exp(sol.value[0])
        d2 = jax.grad(jax.grad(lambda s: _Vii(params, e, s)))(n)
        return n, _solver_status(sol), d2

    nS, code, d2 = jax.vmap(nS_of)(eye)
    VS = jax.vmap(lambda e, n: _Vii(params, e, n))(eye, nS)
    # Vcross[i, k] = V_i^k(n_k^S): a type-i worker in a type-k specialized city of optimal size
    Vcross = jax.vmap(lambda k: utility(params, nS[k] * eye[k]))(jnp.arange(I)).T
    offd = jnp.where(eye.astype(bool), -jnp.inf, Vcross)
    targetC = jnp.max(offd, axis=1)

    def root_above(e, lo, target):
        """Smallest n > lo = n^S with V_i^i(n) = target: bracket by doubling, then
        ``bracket_root``. NaN if V_i^i(n^S) < target, inf if V_i^i stays above the target up to
        2^80 n^S; otherwise the root and its status code."""
        args = (params, e, target)
        f = lambda n: _Vii_minus(n, args)  # noqa: E731

        def c(st):
            hi, k = st
            return (f(hi) > 0) & (k < 80)

        hi, _ = jax.lax.while_loop(c, lambda st: (st[0] * 2.0, st[1] + 1), (2.0 * lo, 0))
        ok = (f(lo) >= 0) & (f(hi) <= 0)
        res = bracket_root(_Vii_minus, lo, hi, args)
        val = jnp.where(ok, res.value, jnp.where(f(lo) < 0, jnp.nan, jnp.inf))
        return val, jnp.where(ok, res.code, 0)

    nA, codeA = jax.vmap(root_above)(eye, nS, params.V0)
    nC, codeC = jax.vmap(root_above)(eye, nS, targetC)
    return nS, code, d2, VS, Vcross, nA, nC, codeA, codeC


@dataclass
class Specialized(StatusFromMessage):
    """Specialized-city equilibria (Section VI), per type i (arrays of shape (I,)):

    n_S: type-i optimum specialized city argmax V_i^i; V_S = V_i^i(n_S);
    n_A: the size above n_S with V_i^i(n_A) = V_i(0) (inf if never reached);
    n_C: the size above n_S with V_i^i(n_C) = max_{k != i} V_i^k(n_k^S) (Figure 5; NaN if even
         n_S is worse than the best other-type specialized city);
    V_cross: (I, I), V_cross[i, k] = V_i^k(n_k^S);
    assumption3: (I, I) bool, V_i(0) = V_i^i(n_A) >= V_i^k(n_k^S) for k != i (VI.2);
    lo, hi: the equilibrium interval [n_S, min(n_A, n_C)] (= Proposition 3's [n_S, n_A]
    when Assumption 3 holds); exists: V_S >= V_i(0) and lo <= hi for every i;
    nS_status: worst status of the n^S solves (``solve_root``; nS_converged: "successful");
    roots_status: worst status of the n^A / n^C bracketing (``bracket_root``);
    second_order: n^S maximises V_i^i.
    status: "successful", "empty" (some type has no specialized-city equilibrium), "not_a_maximum",
    or the failing solve's status (n^S: "max_steps_reached", "stalled", "nonfinite", "singular";
    n^A / n^C: also "no_solution"); ``message`` the detail."""

    n_S: Array
    V_S: Array
    n_A: Array
    n_C: Array
    V_cross: Array
    assumption3: Array
    lo: Array
    hi: Array
    nS_status: str
    roots_status: str
    second_order: bool

    @property
    def nS_converged(self) -> bool:
        return self.nS_status == "successful"

    @property
    def exists(self) -> bool:
        return bool(np.all(np.isfinite(np.asarray(self.lo))) and np.all(np.asarray(self.lo) <= np.asarray(self.hi)))

    def _status_message(self) -> tuple[str, str]:
        if not self.nS_converged:
            return self.nS_status, f"the solve for n^S did not converge ({self.nS_status})"
        if not self.second_order:
            return "not_a_maximum", "n^S is not a maximum of V_i^i (second derivative >= 0)"
        if self.roots_status != "successful":
            return self.roots_status, f"locating n^A or n^C failed (bracketing root finder: {self.roots_status})"
        if self.exists:
            return "successful", ""
        return "empty", "empty for some type (specialized city worse than autarky or than another type's city)"

    def summary(self) -> str:
        I = len(self.n_S)
        rows = [(f"type {i + 1}", float(self.n_S[i]), float(self.V_S[i]), float(self.n_A[i]), float(self.n_C[i]),
                 float(self.lo[i]), float(self.hi[i]), bool(np.all(np.asarray(self.assumption3)[i])))
                for i in range(I)]
        return format_table(["", "n^S", "V_i^i(n^S)", "n^A", "n^C", "eq. lo", "eq. hi", "Assumption 3"], rows,
                            title="Specialized-city equilibria (Proposition 3, Figure 5)",
                            notes=[f"status: {self.status}" + (f" ({self.message})" if self.message else "")])


def _worst(codes, names) -> str:
    """The first non-successful status name among ``codes`` (indices into ``names``)."""
    bad = [names[int(c)] for c in np.ravel(np.asarray(codes)) if names[int(c)] != "successful"]
    return bad[0] if bad else "successful"


def specialized_equilibria(params: Params) -> Specialized:
    """Specialized-city equilibria (Section VI): n^S, n^A, n^C and the Proposition 3 interval.

    n^S solves dV_i^i/dn = 0 (``solve_root``, in logs); n^A and n^C are bracketed by doubling
    above n^S and found by :func:`spatialjax.scalar.bracket_root`. The city-size condition
    (VI.1) is checked against each other type's optimum specialized city n_k^S, as in Figure 5.
    For (A.1) with Assumption 2 this is the binding case, since V_i^k is decreasing on
    [n_k^S, n_k^A] (theta^k_k > theta^i_k); for a user g it is the paper's definition, not a proof."""
    check_once(params, _check_params)
    nS, code, d2, VS, Vc, nA, nC, codeA, codeC = _specialized(params)
    I = params.I
    offd = ~np.eye(I, dtype=bool)
    a3 = (np.asarray(params.V0)[:, None] >= np.asarray(Vc)) | ~offd
    nS, VS, nA, nC, Vc = (np.asarray(x) for x in (nS, VS, nA, nC, Vc))
    hi = np.minimum(nA, nC)
    lo = np.where(VS >= np.asarray(params.V0), nS, np.nan)
    return Specialized(n_S=nS, V_S=VS, n_A=nA, n_C=nC, V_cross=Vc, assumption3=a3, lo=lo, hi=hi,
                       nS_status=_worst(code, SOLVER_STATUSES),
                       roots_status=_worst(np.concatenate([np.ravel(codeA), np.ravel(codeC)]), SCALAR_STATUSES),
                       second_order=bool(np.all(np.asarray(d2) < 0)))


# ----------------------------------------------------------------------------------------
# Partitions (Section VII, Proposition 4)
# ----------------------------------------------------------------------------------------

def set_partitions(items: Sequence[int]) -> list:
    """All partitions of ``items`` into non-empty blocks (Bell(I) of them), as tuples of tuples."""
    items = list(items)
    if not items:
        return [()]
    first, rest = items[0], items[1:]
    out = []
    for p in set_partitions(rest):
        out.append(((first,),) + p)
        for j in range(len(p)):
            out.append(p[:j] + ((first,) + p[j],) + p[j + 1:])
    return [tuple(sorted(tuple(sorted(b)) for b in p)) for p in out]


@dataclass
class PartitionResult:
    """One symmetric partition of the industries into city types (Section VII).

    blocks: the city types (0-based types); blocks_ok: every block has a stable,
    at-least-autarky scale; scales: per block, the chosen equilibrium scale (the member-welfare
    maximizing point of its Nash interval); W_nash: aggregate welfare sum_i N_i V_i there;
    W_eff: aggregate welfare with every block at its welfare-maximizing scale on its ray
    (no stability or autarky constraint); deviation_ok: no worker gains by moving to a
    city of another block at the chosen scales; is_equilibrium = blocks_ok and deviation_ok;
    prop4: Assumption 4 holds, so Proposition 4 guarantees the equilibrium whenever blocks_ok."""

    blocks: tuple
    blocks_ok: bool
    deviation_ok: bool
    scales: tuple
    W_nash: float
    W_eff: float
    prop4: Optional[bool]
    nash: tuple = field(default=(), repr=False)
    worst_deviation: float = float("nan")

    @property
    def is_equilibrium(self) -> bool:
        return self.blocks_ok and self.deviation_ok

    @property
    def label(self) -> str:
        return " | ".join("{" + ",".join(str(k + 1) for k in b) + "}" for b in self.blocks)


@dataclass
class PartitionTable(StatusFromMessage):
    """All partitions (``rows``, :class:`PartitionResult`); ``ranking()`` sorts them by welfare.

    status: "successful" when at least one partition is an equilibrium, else "empty" (the
    enumeration is complete, so an empty answer is an answer); ``message`` counts them;
    ``residual`` is nan (the blocks' scales come from grid scans, see :func:`nash_interval`)."""

    rows: list
    assumption4: Optional[bool]

    def _status_message(self) -> tuple[str, str]:
        k = sum(r.is_equilibrium for r in self.rows)
        return ("successful" if k else "empty"), f"{k} of {len(self.rows)} partitions are equilibria"

    def _dict_fields(self) -> dict:
        return {"assumption4": self.assumption4,
                "rows": [dict(rank=k + 1, partition=r.label, blocks=[list(b) for b in r.blocks],
                              equilibrium=r.is_equilibrium, blocks_ok=r.blocks_ok, deviation_ok=r.deviation_ok,
                              W_nash=r.W_nash, W_eff=r.W_eff, scales=list(r.scales), prop4=r.prop4,
                              worst_deviation=r.worst_deviation)
                         for k, r in enumerate(self.ranking())]}

    def ranking(self, by: str = "W_eff") -> list:
        if by not in ("W_eff", "W_nash"):
            raise ParameterError("by", f"must be 'W_eff' or 'W_nash'; got {by!r}")
        key = lambda r: (-getattr(r, by) if np.isfinite(getattr(r, by)) else np.inf)  # noqa: E731
        return sorted(self.rows, key=key)

    def summary(self) -> str:
        rows = [(str(k + 1), r.label, r.is_equilibrium, r.W_nash if r.blocks_ok else "-", r.W_eff,
                 ", ".join(f"{s:.4g}" for s in r.scales) if r.blocks_ok else "-")
                for k, r in enumerate(self.ranking())]
        a4 = {None: "unknown (user g/c)", True: "holds", False: "fails"}[self.assumption4]
        return format_table(["rank", "partition", "Nash eq.", "W at Nash", "W efficient", "city scales"], rows,
                            title="Symmetric partitions into city types (Section VII)",
                            notes=[f"status: {self.status} ({self.message})",
                                   f"Assumption 4 (own type essential): {a4}",
                                   "W = sum_i N_i V_i; 'W at Nash' uses the best scale in each block's Nash interval."])


def partition_equilibria(params: Params, *, grid: int = 4001) -> PartitionTable:
    """Enumerate all symmetric partitions (Section VII) with equilibrium status and welfare.

    For each block the Nash interval on its ray is computed (``nash_interval`` with
    ``members``); the block's scale is the member-welfare maximizing point of that interval.
    The partition is an equilibrium if every block has such a scale and no worker of any type
    gains by moving into a city of another block at the chosen scales (the first worker of
    its type there). ``prop4`` says whether Assumption 4 holds, in which case the deviation
    check is implied (Proposition 4)."""
    check_once(params, _check_params)
    I = params.I
    if I > 7:
        raise ParameterError("theta", f"partition enumeration is limited to I <= 7 (Bell(I) partitions); got I = {I}")
    a4 = assumption4(params)
    cache = {}
    out = []
    for P in set_partitions(range(I)):
        sets = []
        for b in P:
            if b not in cache:
                cache[b] = nash_interval(params, b, grid=grid)
            sets.append(cache[b])
        blocks_ok = all(s.exists for s in sets)
        W_eff = 0.0
        for b, s in zip(P, sets):
            W_eff += _block_W(params, b, s.S_eff)
        if not blocks_ok:
            out.append(PartitionResult(P, False, False, (), float("nan"), W_eff, a4, tuple(sets)))
            continue
        scales = []
        for b, s in zip(P, sets):
            cands = np.array([s.S_lo, s.S_hi, min(max(s.S_eff, s.S_lo), s.S_hi)])
            Ws = [float(_block_W(params, b, x)) for x in cands]
            scales.append(float(cands[int(np.argmax(Ws))]))
        cities = [_block_n(params, b, x) for b, x in zip(P, scales)]
        W_nash = 0.0
        worst = -np.inf
        for p_idx, b in enumerate(P):
            Vown = np.asarray(_U(params, cities[p_idx]))
            W_nash += float(np.sum(np.where(_mask(params, b), np.asarray(params.N) * Vown, 0.0)))
            for q_idx in range(len(P)):
                if q_idx == p_idx:
                    continue
                Vdev = np.asarray(_U(params, cities[q_idx]))
                for i in b:
                    worst = max(worst, float(Vdev[i] - Vown[i]))
        dev_ok = bool(worst <= 1e-12 * max(1.0, abs(W_nash)))
        out.append(PartitionResult(P, True, dev_ok, tuple(scales), W_nash, W_eff, a4, tuple(sets), worst))
    return PartitionTable(rows=out, assumption4=a4)


def _mask(params, b):
    m = np.zeros(params.I, bool)
    m[list(b)] = True
    return m


def _block_n(params, b, S):
    Nm = np.where(_mask(params, b), np.asarray(params.N), 0.0)
    return S * Nm / np.sum(Nm)


def _block_W(params, b, S):
    V = np.asarray(_U(params, _block_n(params, b, S)))
    return float(np.sum(np.where(_mask(params, b), np.asarray(params.N) * V, 0.0)))


# ----------------------------------------------------------------------------------------
# Assumptions
# ----------------------------------------------------------------------------------------

@eqx.filter_jit
def _jac_g_batch(params, pts):
    return jax.vmap(jax.jacfwd(lambda m: productivity(params, m)))(pts)


_U = eqx.filter_jit(utility)


def check_assumptions(params: Params, *, n_samples: int = 64, seed: int = 0) -> dict:
    """Which of the paper's assumptions hold (dict of name -> bool or None if unknown).

    A1 (III.2) and A2 (III.3) are checked by autodiff at sample points (equal numbers for A1,
    random positive vectors for A2); for (A.1) they reduce to theta[i, i] > theta[i, k] (A.7) and
    theta[i, i] > theta[k, i] (corrected (A.8); the printed (A.8) repeats (A.7)).
    A3 (VI.2) from ``specialized_equilibria``. A4: for (A.1) with c = tN, the best a type-i worker
    can do with no own type is sum_{s != i} max(alpha theta^i_s - t, 0)^2 / (2 beta) (the gamma
    term vanishes); A4 holds iff that is < V_i(0). Unknown (None) for a user g or c."""
    I = params.I
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0.1, 3.0, (n_samples, I))
    levels = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    Deq = np.asarray(_jac_g_batch(params, levels[:, None] * np.ones(I)))     # (L, I, I), [i, k] = dg_i/dn_k
    Dr = np.asarray(_jac_g_batch(params, pts))
    offd = ~np.eye(I, dtype=bool)
    diag_eq = np.einsum("lii->li", Deq)
    a1 = bool(np.all((diag_eq[:, :, None] > Deq)[:, offd]))                     # dg_i/dn_i > dg_i/dn_k
    diag_r = np.einsum("lii->li", Dr)
    a2 = bool(np.all((diag_r[:, None, :] > Dr)[:, offd]))                       # dg_i/dn_i > dg_k/dn_i
    res = {"A1 (III.2)": a1, "A2 (III.3)": a2}
    if params.g is None:
        th = np.asarray(params.theta)
        d = np.diag(th)
        res["A1 closed form theta^i_i > theta^i_k (A.7)"] = bool(np.all((d[:, None] > th)[offd]))
        res["A2 closed form theta^i_i > theta^k_i (corrected A.8)"] = bool(np.all((d[None, :] > th)[offd]))
        res["theta > 1 (Appendix)"] = bool(np.all(th > 1))
        res["beta > gamma (concavity for I = 2)"] = bool(params.beta > params.gamma)
        res["alpha > t (interior optima, Appendix)"] = bool(params.alpha > params.t)
    sp = specialized_equilibria(params)
    res["A3 weak complementarities (VI.2)"] = bool(np.all(np.asarray(sp.assumption3)))
    res["A4 own type essential (VII)"] = assumption4(params)
    return res


def assumption4(params: Params) -> Optional[bool]:
    """Assumption 4 (own type essential, Section VII): V_i(n with n_i = 0) < V_i(0) for all n >= 0.
    For (A.1) with c = tN the best a type-i worker can do without own type is
    sum_{s != i} max(alpha theta^i_s - t, 0)^2 / (2 beta) (the gamma term vanishes, costs are
    separable). None (unknown) for a user-supplied g or c."""
    if params.g is not None or params.c is not None:
        return None
    th = np.asarray(params.theta)
    offd = ~np.eye(params.I, dtype=bool)
    gain = np.maximum(float(params.alpha) * th - float(params.t), 0.0) ** 2 / (2 * float(params.beta))
    best = np.where(offd, gain, 0.0).sum(axis=1)
    return bool(np.all(best < np.asarray(params.V0)))


# ----------------------------------------------------------------------------------------
# Sweeps
# ----------------------------------------------------------------------------------------

_SWEEPABLE = ("alpha", "beta", "gamma", "t", "theta", "V0", "N")


def sweep(fn: Callable[[Params], Any], params: Params, field_name: str, values, **sweep_options):
    """Evaluate ``fn(params with field_name = v)`` for every v in ``values`` as one vmapped,
    device-sharded computation: a thin wrapper over :func:`spatialjax.sweep.sweep`.

    Every scenario is built by the :class:`Params` constructor, so a value that breaks a
    parameter's condition is a ParameterError naming ``field_name`` (before any work).
    ``fn`` must be traceable, e.g. ``lambda p: hs.solve_type_optimum(p, 0)`` (an
    :class:`Optimum`, whose ``converged`` flag marks the failed scenarios) or
    ``lambda p: hs.type_optimum(p, 0)`` (NaN where the solve failed). ``sweep_options`` go to
    :func:`spatialjax.sweep.sweep` (``devices``, ``batch_size``, ``progress``, ``inner``).

    Returns:
        :class:`spatialjax.sweep.SweepResult`: ``values`` (outputs stacked along a leading
        axis of length ``len(values)``), ``ok`` / ``failed`` (the failed scenarios) and
        ``summary()``.
    """
    from spatialjax import sweep as _sweep

    if field_name not in _SWEEPABLE:
        raise ParameterError("field", f"must be one of {_SWEEPABLE}; got {field_name!r}")
    check_once(params, _check_params)
    values = _num("values", values)
    shape = np.shape(getattr(params, field_name))
    if values.ndim != len(shape) + 1 or values.shape[1:] != shape or values.shape[0] < 1:
        raise ParameterError("values", f"must have shape (B, {', '.join(map(str, shape))}) with B >= 1 (one "
                                       f"value of {field_name} per scenario); got {values.shape}")
    base = {k: getattr(params, k) for k in _SWEEPABLE}
    scenarios = [Params(**{**base, field_name: v}, g=params.g, c=params.c, aux=params.aux) for v in values]
    return _sweep.sweep(fn, _sweep.stack(scenarios), **sweep_options)
