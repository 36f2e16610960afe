"""Generic GMM and minimum-distance estimation with exact (autodiff / implicit) gradients.

Two estimators, one result type (:class:`Result`):

* :func:`estimate` — *micro GMM* (Hansen 1982). The user gives per-observation moment
  contributions ``g(theta, data) -> (n_obs, k)`` (pure JAX) and the estimator minimises

      Q(theta) = gbar(theta)' W gbar(theta),     gbar(theta) = (1/n) sum_i g_i(theta).

* :func:`minimum_distance` — *minimum distance / simulated moments*. The user gives model
  moments ``m(theta) -> (k,)`` and data targets ``m_hat``; the estimator minimises
  ``e' W e`` with ``e(theta) = m(theta) - m_hat``.

``theta`` is any PyTree (a dict of named scalars/arrays, an ``eqx.Module``); it is flattened
with :func:`jax.flatten_util.ravel_pytree` and every table is labelled with names built from
the PyTree paths (``theta``, ``gamma``, ``pi[2]``, ``outer.inner``).

Conventions (stated once, used everywhere)
------------------------------------------
* **S is not centred**: ``S(theta) = (1/n) sum_i g_i g_i'`` (robust), clustered
  ``S = (1/n) sum_c (sum_{i in c} g_i)(sum_{i in c} g_i)'``, HAC (Newey-West, Bartlett
  kernel) ``S = Gamma_0 + sum_{l=1}^{L} (1 - l/(L+1)) (Gamma_l + Gamma_l')`` with
  ``Gamma_l = (1/n) sum_{t>l} g_t g_{t-l}'`` (data assumed ordered). ``options["center"]=True``
  subtracts ``gbar`` from each ``g_i`` first (the same choice is used inside CUE).
* **Variance contributions**: ``options["variance_moments"] = h`` (same signature and shape as
  ``g``) computes every S above from ``h_i`` instead of ``g_i``; ``gbar``, G and the objective
  still come from ``g``. For moment functions whose rows contain fitted nuisance quantities
  (fixed effects, concentrated coefficients), ``h`` can rescale residuals by their leverage
  (HC2: ``e_i / sqrt(1 - h_ii)``), so that ``E[S]`` is the variance of ``sqrt(n) gbar`` in
  samples where the leverages are not negligible.
* **Degrees of freedom**: no small-sample correction by default (divisor ``n``, not ``n - p``);
  clustered S takes ``options["cluster_correction"] = "G/(G-1)"`` to multiply by ``G/(G-1)``
  (``G`` = number of clusters). ``options["df_correction"] = K`` (an integer >= 0: the number of
  nuisance parameters estimated *inside* ``g``, e.g. concentrated-out coefficients) makes the
  inference small-sample: the parameter covariance is multiplied by ``n / (n - p - K)`` and the
  intervals use Student's t with ``n - p - K`` degrees of freedom, ``n`` being the number of
  clusters with ``cov="cluster"`` and of observations otherwise (the ``debiased`` convention of
  linearmodels, Stata's ``small``). Estimates, W and J are unchanged; ``Result.small_sample``
  records the factor and the degrees of freedom.
* **Two-step**: first step with ``options["W1"]`` (default identity), second step with
  ``W = S(theta_1)^{-1}``. **Iterated**: ``W_r = S(theta_{r-1})^{-1}`` until
  ``max|theta_r - theta_{r-1}| <= iter_tol * (1 + max|theta_r|)``. **CUE** (Hansen, Heaton and
  Yaron 1996): ``Q(theta) = gbar' S(theta)^{-1} gbar`` with the same (uncentred, by default) S,
  started from the first-step estimate. **Diagonal**: a second step with
  ``W = diag(S(theta_1))^{-1}``.
* **J** (Hansen): ``J = n gbar(theta_hat)' W gbar(theta_hat)`` with the W of the last step,
  ``df = k - p``; its chi2 p-value is reported only when W is efficient (two-step, iterated,
  CUE; minimum distance with ``W = cov_m_hat^{-1}``), since with another W it is not chi2.
* **Parameter covariance** (sandwich): with ``Omega`` the covariance of ``gbar``
  (``S(theta_hat)/n`` for micro GMM with S at the final estimates; ``cov_m_hat`` for minimum
  distance)

      V = (G'WG)^{-1} G'W Omega W G (G'WG)^{-1},   G = d gbar / d theta  (k x p)

  i.e. ``(G'WG)^{-1} G'W S W G (G'WG)^{-1} / n``. G is computed by autodiff of the mean
  moment with respect to the *natural* parameters (reverse mode, ``jax.jacrev``, so that it
  passes through ``custom_vjp`` solves: through :func:`spatialjax.solver.solve_root` it is the
  exact implicit derivative); finite differences only with
  ``options["jacobian"] = "fd"``.
* **Bounds / transforms**: internally the optimiser works on an unconstrained ``u``:
  ``theta = lo + exp(u)`` on ``(lo, inf)``, ``hi - exp(u)`` on ``(-inf, hi)``,
  ``lo + (hi - lo) sigmoid(u)`` on ``(lo, hi)``. Estimates and covariance are reported on the
  natural scale; since G is taken with respect to the natural parameters, V is exactly the
  delta-method covariance ``D V_u D'`` with ``D = d theta / d u`` (also in ``Result.transform_jacobian``).
* **Weak identification**: on the equilibrated matrix ``A = D^{-1/2} G'WG D^{-1/2}``
  (``D = diag(G'WG)``, so units of parameters do not matter) the ratio of the smallest to the
  largest eigenvalue below ``options["weak_rtol"]`` (default 1e-10), or a zero column of G,
  sets status ``"weakly_identified"``: SEs are NaN and ``Result.weak_identification`` names the
  direction (the eigenvector, mapped back to parameter units and normalised), e.g.
  ``"0.707*beta - 0.707*H_f"``.

Optimisation
------------
The optimisers are small host-side (NumPy) loops around one jitted objective-and-gradient
function so that every iteration can be displayed, checkpointed, and failed evaluations rejected:

* ``"bfgs"`` (default): BFGS on the inverse Hessian with a backtracking Armijo line search
  (our own, not optimistix: optimistix 0.1's BFGS line search cannot be told that an
  evaluation failed). An evaluation with ``ok`` False (the moment function may return
  ``(values, ok)``; ``ok`` False when an inner equilibrium solve failed) or with any non-finite
  value or gradient is treated as ``+inf``: the step is rejected and shortened, and the
  rejection is counted (``Result.convergence["n_failed_evals"]``).
* ``"lm"``: Levenberg-Marquardt (Gauss-Newton) on the stacked weighted moments
  ``r = L' gbar`` with ``W = L L'`` (for CUE ``r = chol(S(theta))^{-1} gbar``), Jacobian by
  ``jax.jacrev``; the same rejection rule.
* ``"adam"``: optax Adam (``options["learning_rate"]``) for large parameter vectors; a failed
  evaluation reverts the step and halves the learning rate.

Stopping (whichever fires first is reported in ``convergence["stop_reason"]``):
``"gradient"``: ``max|dQ/du| <= gtol * max(1, Q)``; ``"step"``: ``max|du| <= xtol (1 + max|u|)`` for
an unshortened step (BFGS step length 1; LM damping <= 1);
``"objective"``: ``|Q_k - Q_{k+1}| <= ftol max(|Q_k|, 1e-300)`` (off by default, ``ftol = 0``:
near the minimum Q is flat to rounding long before the estimates are accurate); otherwise ``"max_iter"`` or
``"line_search"`` (no acceptable step, or only negligible shortened steps: stalled). When the
objective's own noise floor is reached (an inner solve with tolerance 1e-12 makes Q noisy at
that level, finite differences more so) the gradient cannot reach ``gtol``; when the line search
finds no acceptable step, or after five negligible shortened steps in a row, the Gauss-Newton
step ``(2 G_u'W G_u)^{-1} dQ/du`` is computed: below ``gn_tol (1 + max|u|)`` the stop is
``"step"`` (converged; the predicted distance to the minimum is negligible), else
``"line_search"`` (not converged). Its size is reported as ``gauss_newton_step``.

Long runs: ``options["progress"]`` shows a tqdm bar; ``options["checkpoint"]`` (a path) is
rewritten atomically (:mod:`spatialjax.atomic`, JSON) after every optimiser iteration with the
full optimiser state, estimation stage, W, counters and paths; ``options["resume"]=True``
continues from it (same iterations, hence the same estimates as an uninterrupted run). The
checkpoint carries a fingerprint (parameter names, number of moments, weighting, covariance
type, optimiser, n_obs) and a different problem is refused with :class:`ParameterError`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from spatialjax import atomic
from spatialjax.errors import ParameterError
from spatialjax.tables import format_kv, format_table

__all__ = ["estimate", "minimum_distance", "bootstrap", "Result", "WaldTest", "DeltaResult", "BootstrapResult",
           "WEIGHTINGS", "COV_TYPES", "OPTIMIZERS", "OPTIONS"]

WEIGHTINGS = ("identity", "diagonal", "fixed", "two-step", "iterated", "cue")
COV_TYPES = ("robust", "cluster", "hac")
OPTIMIZERS = ("bfgs", "lm", "adam")
EFFICIENT = ("two-step", "iterated", "cue")

#: Allowed ``options`` keys and their defaults (None: not set).
OPTIONS: dict[str, Any] = {
    "W1": None,  # first-step weighting matrix (micro GMM), default identity
    "W": None,  # weighting="fixed": the matrix
    "optimizer": "bfgs",
    "gtol": None,  # default 1e-10 (1e-8 with jacobian="fd": central differences are noisier)
    "xtol": 1e-14,
    "ftol": 0.0,  # 0 disables the relative-objective criterion
    "max_iter": 500,
    "max_ls": 40,  # line-search trials per iteration
    "gn_tol": 1e-9,  # a stalled or failed line search counts as converged if the Gauss-Newton step is below this
    "multistart": 1,  # number of starts (the first is theta0)
    "start_box": None,  # {name: (lo, hi)} on the natural scale
    "seed": 0,
    "transforms": None,  # {name: "log" | "logit" | "identity"}
    "progress": False,
    "checkpoint": None,
    "resume": False,
    "hac_lags": None,  # default floor(4 (n/100)^(2/9))
    "cluster_correction": None,  # None or "G/(G-1)"
    "center": False,
    "max_rounds": 100,  # iterated GMM
    "iter_tol": 1e-11,  # iterated GMM
    "jacobian": "autodiff",  # or "fd"
    "fd_step": None,  # default eps^(1/3) (1 + |theta|)
    "weak_rtol": 1e-10,
    "s_rcond": 1e-13,  # reciprocal condition below which S (or a W) counts as singular
    "learning_rate": 1e-2,  # adam
    "level": 0.95,  # confidence level of the intervals
    "param_names": None,  # override the names built from the PyTree paths
    "moment_names": None,
    "true_params": None,  # same PyTree as theta0 or {name: value}: a column in the tables
    "callback": None,  # called on the host after every optimiser iteration with a dict
    # micro GMM: h(theta, data) -> (n_obs, k) [or (values, ok)], the contributions S is computed from
    # (weighting, CUE, sandwich) instead of g's rows, e.g. residuals with a leverage (HC2-type) correction
    "variance_moments": None,
    # micro GMM: K >= 0 nuisance parameters estimated inside g -> cov * n/(n-p-K), t(n-p-K) intervals
    "df_correction": None,
}

_EPS = np.finfo(np.float64).eps


# ---------------------------------------------------------------------------------------
# Parameters: names, flattening, transforms
# ---------------------------------------------------------------------------------------


def _key_name(k) -> str:
    tu = jax.tree_util
    if isinstance(k, tu.DictKey):
        return str(k.key)
    if isinstance(k, tu.GetAttrKey):
        return str(k.name)
    if isinstance(k, tu.SequenceKey):
        return f"[{k.idx}]"
    if isinstance(k, tu.FlattenedIndexKey):
        return f"[{k.key}]"
    return str(k)


def _leaf_names(tree) -> tuple[list[str], list[tuple]]:
    """Names of every flattened element (ravel_pytree order) and the leaf names/shapes."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    names, leafinfo = [], []
    for path, leaf in leaves:
        base = ""
        for k in path:
            s = _key_name(k)
            base = base + s if (s.startswith("[") or not base) else base + "." + s
        base = base or "theta"
        shape = np.shape(leaf)
        leafinfo.append((base, shape))
        if shape == ():
            names.append(base)
        else:
            for idx in np.ndindex(*shape):
                names.append(f"{base}[{','.join(map(str, idx))}]")
    return names, leafinfo


class _Transform:
    """Elementwise map ``u -> theta`` (kind codes 0 identity, 1 lower, 2 upper, 3 interval)."""

    def __init__(self, kinds, lo, hi):
        self.kinds = np.asarray(kinds, int)
        self.lo = np.asarray(lo, float)
        self.hi = np.asarray(hi, float)

    def to_natural(self, u):
        k, lo, hi = self.kinds, self.lo, self.hi
        lo_ = jnp.where(np.isfinite(lo), lo, 0.0)
        hi_ = jnp.where(np.isfinite(hi), hi, 0.0)
        out = u
        out = jnp.where(k == 1, lo_ + jnp.exp(u), out)
        out = jnp.where(k == 2, hi_ - jnp.exp(u), out)
        out = jnp.where(k == 3, lo_ + (hi_ - lo_) * jax.nn.sigmoid(u), out)
        return out

    def to_unconstrained(self, theta):
        theta = np.asarray(theta, float)
        k, lo, hi = self.kinds, self.lo, self.hi
        out = theta.copy()
        with np.errstate(all="ignore"):
            out = np.where(k == 1, np.log(theta - np.where(np.isfinite(lo), lo, 0.0)), out)
            out = np.where(k == 2, np.log(np.where(np.isfinite(hi), hi, 0.0) - theta), out)
            z = (theta - np.where(np.isfinite(lo), lo, 0.0)) / np.where(k == 3, hi - lo, 1.0)
            out = np.where(k == 3, np.log(z) - np.log1p(-z), out)
        return out

    def jacobian_diag(self, u):
        """``d theta / d u`` elementwise."""
        u = np.asarray(u, float)
        s = 1.0 / (1.0 + np.exp(-u))
        k = self.kinds
        return np.where(k == 1, np.exp(u), np.where(k == 2, -np.exp(u),
                        np.where(k == 3, (self.hi - self.lo) * s * (1 - s), 1.0)))


def _parse_bounds(bounds, transforms, theta0_flat, names, leafinfo, theta0_tree):
    p = len(names)
    lo = np.full(p, -np.inf)
    hi = np.full(p, np.inf)
    # leaf name -> flat index range
    ranges, off = {}, 0
    for base, shape in leafinfo:
        size = int(np.prod(shape)) if shape else 1
        ranges[base] = list(range(off, off + size))
        off += size
    elem = {n: [i] for i, n in enumerate(names)}

    def idx_of(field_, name):
        if name in elem:
            return elem[name]
        if name in ranges:
            return ranges[name]
        raise ParameterError(f"{field_}.{name}", f"unknown parameter name; allowed: {sorted(set(names) | set(ranges))}")

    if bounds is not None:
        items = None
        is_pair = lambda x: isinstance(x, tuple) and len(x) == 2  # noqa: E731
        if isinstance(bounds, dict) and all(isinstance(k, str) and (k in elem or k in ranges) for k in bounds):
            items = list(bounds.items())
        else:
            try:
                bl, btd = jax.tree_util.tree_flatten(bounds, is_leaf=lambda x: is_pair(x) or x is None)
                td = jax.tree_util.tree_structure(theta0_tree)
                same = btd == td
            except Exception:  # noqa: BLE001
                same = False
            if same:
                items = [(leafinfo[i][0], b) for i, b in enumerate(bl) if b is not None]
            elif isinstance(bounds, dict):
                bad = [k for k in bounds if not (isinstance(k, str) and (k in elem or k in ranges))]
                raise ParameterError(f"bounds.{bad[0]}", f"unknown parameter name; allowed: {names}")
            else:
                raise ParameterError("bounds", "must be a dict name -> (lo, hi) or a PyTree of (lo, hi) pairs "
                                     "with the structure of theta0")
        for name, b in items:
            if b is None:
                continue
            if not (isinstance(b, (tuple, list)) and len(b) == 2):
                raise ParameterError(f"bounds.{name}", f"must be a pair (lo, hi), either may be None; got {b!r}")
            blo = -np.inf if b[0] is None else float(b[0])
            bhi = np.inf if b[1] is None else float(b[1])
            if math.isnan(blo) or math.isnan(bhi):
                raise ParameterError(f"bounds.{name}", "must not be NaN")
            if not blo < bhi:
                raise ParameterError(f"bounds.{name}", f"needs lo < hi; got ({blo}, {bhi})")
            for i in idx_of("bounds", name):
                lo[i], hi[i] = blo, bhi
    kinds = np.where(np.isfinite(lo) & np.isfinite(hi), 3, np.where(np.isfinite(lo), 1, np.where(np.isfinite(hi), 2, 0)))
    if transforms is not None:
        if not isinstance(transforms, dict):
            raise ParameterError("options.transforms", "must be a dict name -> 'log' | 'logit' | 'identity'")
        for name, t in transforms.items():
            for i in idx_of("options.transforms", name):
                if t == "identity":
                    kinds[i] = 0
                    lo[i], hi[i] = -np.inf, np.inf
                elif t == "log":
                    kinds[i] = 1
                    lo[i] = lo[i] if np.isfinite(lo[i]) else 0.0
                    hi[i] = np.inf
                elif t == "logit":
                    kinds[i] = 3
                    lo[i] = lo[i] if np.isfinite(lo[i]) else 0.0
                    hi[i] = hi[i] if np.isfinite(hi[i]) else 1.0
                else:
                    raise ParameterError(f"options.transforms.{name}", f"must be 'log', 'logit' or 'identity'; got {t!r}")
    bad = ((kinds > 0) & ~((theta0_flat > lo) & (theta0_flat < hi)))
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ParameterError(f"theta0.{names[i]}", f"= {theta0_flat[i]} lies outside its bounds ({lo[i]}, {hi[i]}) "
                             "(must be strictly inside)")
    return _Transform(kinds, lo, hi)


# ---------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------


def _check_options(options, allowed):
    options = dict(options or {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ParameterError(f"options.{unknown[0]}", f"unknown option; allowed keys: {sorted(allowed)}")
    out = {k: OPTIONS[k] for k in allowed}
    out.update(options)
    if out["optimizer"] not in OPTIMIZERS:
        raise ParameterError("options.optimizer", f"must be one of {OPTIMIZERS}; got {out['optimizer']!r}")
    if out["jacobian"] not in ("autodiff", "fd"):
        raise ParameterError("options.jacobian", f"must be 'autodiff' or 'fd'; got {out['jacobian']!r}")
    if out.get("gtol", 0) is None:
        out["gtol"] = 1e-8 if out["jacobian"] == "fd" else 1e-10
    for key in ("gtol", "xtol", "ftol", "gn_tol", "iter_tol", "weak_rtol", "s_rcond", "learning_rate"):
        if key not in out:
            continue
        v = out[key]
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
            raise ParameterError(f"options.{key}", f"must be a finite number >= 0; got {v!r}")
    for key in ("max_iter", "max_ls", "multistart", "max_rounds"):
        if key not in out:
            continue
        v = out[key]
        if not (isinstance(v, (int, np.integer)) and v >= 1):
            raise ParameterError(f"options.{key}", f"must be an integer >= 1; got {v!r}")
    if not 0 < out["level"] < 1:
        raise ParameterError("options.level", f"must lie in (0, 1); got {out['level']!r}")
    if out.get("cluster_correction") not in (None, "G/(G-1)"):
        raise ParameterError("options.cluster_correction", f"must be None or 'G/(G-1)'; got {out['cluster_correction']!r}")
    if out["callback"] is not None and not callable(out["callback"]):
        raise ParameterError("options.callback", "must be callable")
    if out.get("variance_moments") is not None and not callable(out["variance_moments"]):
        raise ParameterError("options.variance_moments", "must be callable h(theta, data) -> (n_obs, k), like g")
    if out["resume"] and not out["checkpoint"]:
        raise ParameterError("options.resume", "needs options['checkpoint'] (the file to resume from)")
    return out


def _check_weight(field_, W, k, rcond):
    W = np.asarray(W, float)
    if W.shape != (k, k):
        raise ParameterError(field_, f"must have shape ({k}, {k}) (k = number of moments); got {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ParameterError(field_, "must be finite")
    scale = np.max(np.abs(W))
    if np.max(np.abs(W - W.T)) > 1e-10 * max(scale, 1e-300):
        raise ParameterError(field_, "must be symmetric")
    ev = np.linalg.eigvalsh(W)
    if ev[-1] <= 0 or ev[0] <= rcond * ev[-1]:
        raise ParameterError(field_, f"must be symmetric positive definite and well conditioned; eigenvalues in "
                             f"[{ev[0]:.3e}, {ev[-1]:.3e}] (ratio below {rcond:g}): a singular W is not pseudo-inverted")
    return 0.5 * (W + W.T)


def _check_finite_tree(field_, tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        try:
            a = np.asarray(leaf)
        except Exception:
            continue
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            where = np.argwhere(~np.isfinite(a))[:3].tolist()
            raise ParameterError(field_ + jax.tree_util.keystr(path), f"must be finite; non-finite values at {where}")


def _split_ok(out):
    """A moment function returns ``values`` or ``(values, ok)``."""
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ParameterError("g", "must return an array or a pair (values, ok)")
        return out[0], out[1]
    return out, None


def _inv_spd(A, rcond):
    """Inverse of a symmetric positive definite matrix, or None when (near-)singular."""
    A = 0.5 * (A + A.T)
    if not np.all(np.isfinite(A)):
        return None
    ev = np.linalg.eigvalsh(A)
    if ev[-1] <= 0 or ev[0] <= rcond * ev[-1]:
        return None
    return np.linalg.inv(A)


def _chi2_sf(x, df):
    from scipy import stats

    if df <= 0 or not np.isfinite(x):
        return float("nan")
    return float(stats.chi2.sf(x, df))


# ---------------------------------------------------------------------------------------
# JSON (checkpoint) encoding of arrays: exact float round trip
# ---------------------------------------------------------------------------------------


def _enc(obj):
    if isinstance(obj, dict):
        return {k: _enc(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_enc(v) for v in obj]
    if isinstance(obj, np.ndarray) or type(obj).__module__.startswith("jax"):
        a = np.asarray(obj)
        return {"__nd__": a.ravel().tolist(), "shape": list(a.shape), "dtype": str(a.dtype)}
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _dec(obj):
    if isinstance(obj, dict):
        if "__nd__" in obj:
            return np.asarray(obj["__nd__"], dtype=obj["dtype"]).reshape(obj["shape"])
        return {k: _dec(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_dec(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------
# The estimation problem: jitted moment functions
# ---------------------------------------------------------------------------------------


_JIT_CACHE: dict = {}


class _Problem:
    """Everything the driver needs: the jitted objective/gradient/residual functions."""

    def __init__(self, *, kind, fn, data, unravel, transform, p, k, n, cov, clusters, n_clusters, options, tree_key,
                 m_hat=None):
        self.kind, self.fn, self.data, self.unravel, self.tr = kind, fn, data, unravel, transform
        self.p, self.k, self.n, self.cov, self.options = p, k, n, cov, options
        self.clusters, self.n_clusters = clusters, n_clusters
        self.m_hat = m_hat
        self.hac_lags = None
        if kind == "micro" and cov == "hac":
            L = options["hac_lags"]
            self.hac_lags = int(math.floor(4 * (n / 100) ** (2 / 9))) if L is None else int(L)
        self.fd = options["jacobian"] == "fd"
        self.n_evals = {"objective": 0, "gradient": 0, "failed": 0}
        # Compiled functions are cached across calls (Monte Carlo, bootstrap, multistart): the
        # key holds everything the traced code depends on apart from its array arguments.
        cl = None if clusters is None else np.asarray(clusters).tobytes()
        key = (fn, options.get("variance_moments"), kind, cov, options["center"], options["cluster_correction"],
               self.hac_lags, n_clusters, cl, self.fd, options["fd_step"], tree_key, transform.kinds.tobytes(), transform.lo.tobytes(),
               transform.hi.tobytes())
        try:
            fns = _JIT_CACHE.pop(key)
        except (KeyError, TypeError):
            fns = None
        if fns is None:
            self._build()
            fns = {a: getattr(self, a) for a in ("_vg_W", "_rj_W", "_vg_cue", "_rj_cue", "_natural_stats")
                   if hasattr(self, a)}
        else:
            for a, f in fns.items():
                setattr(self, a, f)
        try:
            _JIT_CACHE[key] = fns
            while len(_JIT_CACHE) > 16:
                _JIT_CACHE.pop(next(iter(_JIT_CACHE)))
        except TypeError:  # an unhashable moment function: no caching
            pass

    # -- moments as functions of the natural flat parameter vector -------------------
    def _gi(self, th, data):
        vals, ok = _split_ok(self.fn(self.unravel(th), data))
        vals = jnp.asarray(vals)
        ok = jnp.asarray(True) if ok is None else jnp.asarray(ok).reshape(())
        return vals, ok

    def _gbar_ok(self, th, data):
        if self.kind == "micro":
            gi, ok = self._gi(th, data)
            return jnp.mean(gi, axis=0), ok
        vals, ok = _split_ok(self.fn(self.unravel(th)))
        ok = jnp.asarray(True) if ok is None else jnp.asarray(ok).reshape(())
        return jnp.asarray(vals) - data, ok

    def _gi_S(self, th, data, gi):
        """The rows S is computed from: ``options["variance_moments"]`` if given, else g's rows ``gi``."""
        h = self.options.get("variance_moments")
        if h is None:
            return gi
        vals, _ = _split_ok(h(self.unravel(th), data))
        return jnp.asarray(vals)

    def _S_of_gi(self, gi):
        n = gi.shape[0]
        if self.options["center"]:
            gi = gi - jnp.mean(gi, axis=0)
        if self.cov == "robust":
            return gi.T @ gi / n
        if self.cov == "cluster":
            sums = jax.ops.segment_sum(gi, self.clusters, num_segments=self.n_clusters)
            S = sums.T @ sums / n
            if self.options["cluster_correction"] == "G/(G-1)":
                S = S * self.n_clusters / (self.n_clusters - 1)
            return S
        # hac
        S = gi.T @ gi / n
        for lag in range(1, self.hac_lags + 1):
            w = 1.0 - lag / (self.hac_lags + 1.0)
            Gam = gi[lag:].T @ gi[:-lag] / n
            S = S + w * (Gam + Gam.T)
        return S

    def _build(self):
        tr = self.tr
        fd = self.fd
        h_opt = self.options["fd_step"]

        def gbar_u(u, data):
            return self._gbar_ok(tr.to_natural(u), data)

        def Q_W(u, W, data):
            gb, ok = gbar_u(u, data)
            return gb @ W @ gb, ok

        def Q_cue(u, data):
            th = tr.to_natural(u)
            gi, ok = self._gi(th, data)
            gb = jnp.mean(gi, axis=0)
            S = self._S_of_gi(self._gi_S(th, data, gi))
            c = jnp.linalg.cholesky(S)
            z = jax.scipy.linalg.solve_triangular(c, gb, lower=True)
            return z @ z, ok

        def r_W(u, L, data):
            gb, ok = gbar_u(u, data)
            return L.T @ gb, ok

        def r_cue(u, data):
            th = tr.to_natural(u)
            gi, ok = self._gi(th, data)
            gb = jnp.mean(gi, axis=0)
            c = jnp.linalg.cholesky(self._S_of_gi(self._gi_S(th, data, gi)))
            return jax.scipy.linalg.solve_triangular(c, gb, lower=True), ok

        def fd_step(u):
            return (_EPS ** (1 / 3)) * (1.0 + jnp.abs(u)) if h_opt is None else jnp.full_like(u, h_opt)

        def fd_jac(f, u):
            """Central differences of a vector function f(u) -> (m,), vmapped over 2p points."""
            h = fd_step(u)
            E = jnp.diag(h)
            Up = jax.vmap(f)(u + E)
            Um = jax.vmap(f)(u - E)
            return ((Up[0] - Um[0]) / (2 * h[:, None])).T, jnp.all(Up[1]) & jnp.all(Um[1])

        def with_grad(Qf):
            def vg(u, *a):
                if fd:
                    q, ok = Qf(u, *a)
                    jq, ok2 = fd_jac(lambda v: (lambda qo: (jnp.atleast_1d(qo[0]), qo[1]))(Qf(v, *a)), u)
                    gr = jq[0]
                    ok = ok & ok2
                else:
                    (q, ok), gr = jax.value_and_grad(Qf, has_aux=True)(u, *a)
                good = ok & jnp.isfinite(q) & jnp.all(jnp.isfinite(gr))
                return q, gr, good
            return jax.jit(vg)

        def with_jac(rf):
            def rj(u, *a):
                r, ok = rf(u, *a)
                if fd:
                    J, ok2 = fd_jac(lambda v: rf(v, *a), u)
                    ok = ok & ok2
                else:
                    J = jax.jacrev(lambda v: rf(v, *a)[0])(u)
                good = ok & jnp.all(jnp.isfinite(r)) & jnp.all(jnp.isfinite(J))
                return r, J, good
            return jax.jit(rj)

        self._vg_W = with_grad(Q_W)
        self._rj_W = with_jac(r_W)
        if self.kind == "micro":
            self._vg_cue = with_grad(Q_cue)
            self._rj_cue = with_jac(r_cue)

        def natural_stats(th, data):
            """gbar, G (d gbar / d theta natural), S, ok at natural theta."""
            gb, ok = self._gbar_ok(th, data)
            if fd:
                h = (_EPS ** (1 / 3)) * (1.0 + jnp.abs(th)) if h_opt is None else jnp.full_like(th, h_opt)
                E = jnp.diag(h)
                gp, okp = jax.vmap(lambda t: self._gbar_ok(t, data))(th + E)
                gm, okm = jax.vmap(lambda t: self._gbar_ok(t, data))(th - E)
                G = ((gp - gm) / (2 * h[:, None])).T
                ok = ok & jnp.all(okp) & jnp.all(okm)
            else:
                G = jax.jacrev(lambda t: self._gbar_ok(t, data)[0])(th)
            if self.kind == "micro":
                gi, _ = self._gi(th, data)
                S = self._S_of_gi(self._gi_S(th, data, gi))
            else:
                S = jnp.zeros((gb.shape[0], gb.shape[0]))
            return gb, G, S, ok

        self._natural_stats = jax.jit(natural_stats)

    # -- host-side calls (counted) ---------------------------------------------------
    def value_grad(self, u, W):
        if W is None:
            q, g, ok = self._vg_cue(jnp.asarray(u), self.data)
        else:
            q, g, ok = self._vg_W(jnp.asarray(u), jnp.asarray(W), self.data)
        self.n_evals["objective"] += 1
        self.n_evals["gradient"] += 1
        ok = bool(ok)
        if not ok:
            self.n_evals["failed"] += 1
            return math.inf, None, False
        return float(q), np.asarray(g), True

    def residual_jac(self, u, L):
        if L is None:
            r, J, ok = self._rj_cue(jnp.asarray(u), self.data)
        else:
            r, J, ok = self._rj_W(jnp.asarray(u), jnp.asarray(L), self.data)
        self.n_evals["objective"] += 1
        self.n_evals["gradient"] += 1
        ok = bool(ok)
        if not ok:
            self.n_evals["failed"] += 1
            return None, None, False
        return np.asarray(r), np.asarray(J), True

    def gauss_newton_step(self, u, W, grad):
        """``(2 G_u' W G_u)^{-1} grad`` at ``u`` (``W = S(theta)^{-1}`` for CUE): the distance to the
        minimum predicted by the Gauss-Newton curvature, used when the line search stalls."""
        gb, G, S, ok = self.stats(u)
        self.n_evals["gradient"] += 1
        if not ok or grad is None:
            return np.full(len(u), np.nan)
        Gu = G * self.tr.jacobian_diag(u)[None, :]
        Wm = _inv_spd(S, 1e-300) if W is None else np.asarray(W)
        if Wm is None:
            return np.full(len(u), np.nan)
        try:
            return np.linalg.solve(2 * Gu.T @ Wm @ Gu, grad)
        except np.linalg.LinAlgError:
            return np.full(len(u), np.nan)

    def stats(self, u):
        th = self.tr.to_natural(jnp.asarray(u))
        gb, G, S, ok = self._natural_stats(th, self.data)
        return np.asarray(gb), np.asarray(G), np.asarray(S), bool(ok)


# ---------------------------------------------------------------------------------------
# Optimisers: host-side state machines (state = dict of NumPy arrays / floats; JSON-able)
# ---------------------------------------------------------------------------------------


def _criteria(opt, f_old, f_new, g_new, s, u_new, full=True):
    """Which stopping criterion holds after an accepted step ``s`` (None if none). The step
    criterion counts only for a full (unshortened) step: a step shortened by the line search
    after rejected evaluations is small without the iteration having converged."""
    if g_new is not None and np.max(np.abs(g_new)) <= opt["gtol"] * max(1.0, abs(f_new)):
        return "gradient"
    if full and np.max(np.abs(s)) <= opt["xtol"] * (1.0 + np.max(np.abs(u_new))):
        return "step"
    if opt["ftol"] > 0 and abs(f_old - f_new) <= opt["ftol"] * max(abs(f_old), 1e-300):
        return "objective"
    return None


def _gn_reason(prob, st, u, W, g, opt):
    """Stop reason when the line search cannot go on at ``u``: ``"step"`` (converged) if the
    Gauss-Newton step ``(2 G_u'W G_u)^{-1} dQ/du`` there is below ``gn_tol (1 + max|u|)`` (the
    predicted distance to the minimum is negligible), else ``"line_search"`` (not converged).
    The step's size is recorded in ``st["gauss_newton_step"]``."""
    return _gn_verdict(st, prob.gauss_newton_step(u, W, g), u, opt)


def _gn_verdict(st, d_gn, u, opt):
    """``"step"`` if the Gauss-Newton step ``d_gn`` is finite and below ``gn_tol (1 + max|u|)``,
    else ``"line_search"``; records its size in ``st["gauss_newton_step"]``."""
    st["gauss_newton_step"] = float(np.max(np.abs(d_gn)))
    small = bool(np.all(np.isfinite(d_gn))) and st["gauss_newton_step"] <= opt["gn_tol"] * (1 + np.max(np.abs(u)))
    return "step" if small else "line_search"


def _bfgs_init(prob, u0, W, opt):
    f, g, ok = prob.value_grad(u0, W)
    st = {"method": "bfgs", "u": np.asarray(u0, float), "f": f, "g": g, "ok": ok, "it": 0,
          "H": np.eye(len(u0)), "scaled": False, "done": False, "reason": None}
    if not ok:
        st.update(done=True, reason="start_failed")
    elif np.max(np.abs(g)) <= opt["gtol"] * max(1.0, abs(f)):
        st.update(done=True, reason="gradient")
    return st


def _bfgs_step(prob, st, W, opt):
    u, f, g, H = st["u"], st["f"], st["g"], st["H"]
    d = -H @ g
    slope = float(g @ d)
    if not slope < 0:
        H = np.eye(len(u))
        d, slope = -g, -float(g @ g)
    t = 1.0
    if not st["scaled"]:
        t = min(1.0, 1.0 / max(np.max(np.abs(d)), 1e-300))
    accepted = False
    for _ in range(opt["max_ls"]):
        un = u + t * d
        fn, gn, ok = prob.value_grad(un, W)
        # Armijo; near the minimum Q is flat to rounding (|dQ| ~ eps Q while the gradient is
        # still accurate), so a step that keeps Q within rounding and shrinks the gradient is
        # accepted too (as in Hager-Zhang's approximate Wolfe condition).
        if ok and (fn <= f + 1e-4 * t * slope or
                   (fn <= f + 8 * _EPS * abs(f) and np.max(np.abs(gn)) < np.max(np.abs(g)))):
            accepted = True
            break
        t *= 0.5 if ok else 0.1
    st["it"] += 1
    if not accepted:
        # No acceptable step: at the noise floor of Q (the gradient is exact only to the inner
        # tolerances) or stalled. Converged if the Gauss-Newton step here is negligible.
        st.update(done=True, reason=_gn_reason(prob, st, u, W, g, opt))
        return st
    s, y = un - u, gn - g
    sy = float(s @ y)
    if sy > 1e-12 * np.linalg.norm(s) * np.linalg.norm(y):
        if not st["scaled"]:
            H = np.eye(len(u)) * sy / float(y @ y)
            st["scaled"] = True
        rho = 1.0 / sy
        Hy = H @ y
        H = H - rho * (np.outer(s, Hy) + np.outer(Hy, s)) + (rho * rho * float(y @ Hy) + rho) * np.outer(s, s)
    reason = _criteria(opt, f, fn, gn, s, un, full=t == 1.0)
    # Negligible shortened steps: restart from a scaled identity; five in a row is a stall (e.g.
    # the noise floor of finite-difference gradients), reported as not converged.
    st["stall"] = st.get("stall", 0) + 1 if (
        reason is None and t < 1.0 and np.max(np.abs(s)) <= opt["xtol"] * (1.0 + np.max(np.abs(un)))) else 0
    if st["stall"]:
        H = np.eye(len(u)) * (sy / float(y @ y) if sy > 0 and float(y @ y) > 0 else 1.0)
        if st["stall"] >= 5:
            # At the noise floor of Q (inner-solve tolerance, FD noise) the gradient cannot shrink
            # further. Converged if the Gauss-Newton step is negligible, else stalled.
            reason = _gn_reason(prob, st, un, W, gn, opt)
    st.update(u=un, f=fn, g=gn, H=H)
    if reason:
        st.update(done=True, reason=reason)
    elif st["it"] >= opt["max_iter"]:
        st.update(done=True, reason="max_iter")
    return st


def _lm_gn_reason(st, J, r, u, opt):
    """As :func:`_gn_reason` for LM: the undamped Gauss-Newton step ``(J'J)^{-1} J'r``."""
    try:
        d_gn = np.linalg.solve(J.T @ J, J.T @ r)
    except np.linalg.LinAlgError:
        d_gn = np.full(len(u), np.nan)
    return _gn_verdict(st, d_gn, u, opt)


def _lm_init(prob, u0, L, opt):
    r, J, ok = prob.residual_jac(u0, L)
    st = {"method": "lm", "u": np.asarray(u0, float), "r": r, "J": J, "ok": ok, "it": 0, "lam": 1e-3,
          "done": False, "reason": None}
    if not ok:
        st.update(done=True, reason="start_failed", f=math.inf, g=None)
        return st
    st["f"], st["g"] = float(r @ r), 2 * J.T @ r
    if np.max(np.abs(st["g"])) <= opt["gtol"] * max(1.0, st["f"]):
        st.update(done=True, reason="gradient")
    return st


def _lm_step(prob, st, L, opt):
    u, r, J, f, lam = st["u"], st["r"], st["J"], st["f"], st["lam"]
    A, b = J.T @ J, J.T @ r
    dA = np.maximum(np.diag(A), 1e-12 * max(np.max(np.diag(A)), 1e-300))
    accepted = False
    for _ in range(opt["max_ls"]):
        try:
            d = np.linalg.solve(A + lam * np.diag(dA), -b)
        except np.linalg.LinAlgError:
            lam *= 10
            continue
        un = u + d
        rn, Jn, ok = prob.residual_jac(un, L)
        fn = float(rn @ rn) if ok else math.inf
        if ok and fn <= f:
            accepted = True
            lam = max(lam / 3, 1e-15)
            break
        lam *= 4 if ok else 10
    st["it"] += 1
    st["lam"] = lam
    if not accepted:
        st.update(done=True, reason=_lm_gn_reason(st, J, r, u, opt))
        return st
    gn = 2 * Jn.T @ rn
    reason = _criteria(opt, f, fn, gn, un - u, un, full=lam <= 1.0)
    st["stall"] = st.get("stall", 0) + 1 if (
        reason is None and lam > 1.0 and np.max(np.abs(un - u)) <= opt["xtol"] * (1.0 + np.max(np.abs(un)))) else 0
    if st["stall"] >= 5:
        # heavily damped negligible steps only: converged if the undamped Gauss-Newton step is negligible
        reason = _lm_gn_reason(st, Jn, rn, un, opt)
    st.update(u=un, r=rn, J=Jn, f=fn, g=gn)
    if reason:
        st.update(done=True, reason=reason)
    elif st["it"] >= opt["max_iter"]:
        st.update(done=True, reason="max_iter")
    return st


_ADAM_CACHE: dict = {}


def _adam_fns(lr, p):
    """optax Adam with jitted init/update (cached per learning rate and size)."""
    key = (float(lr), int(p))
    if key not in _ADAM_CACHE:
        import optax

        tx = optax.adam(lr)
        init = jax.jit(tx.init)
        td = jax.tree_util.tree_structure(init(jnp.zeros(p)))
        _ADAM_CACHE[key] = (init, jax.jit(tx.update), td)
    return _ADAM_CACHE[key]


def _adam_init(prob, u0, W, opt):
    f, g, ok = prob.value_grad(u0, W)
    init, _, _ = _adam_fns(opt["learning_rate"], len(u0))
    ostate = init(jnp.asarray(u0))
    st = {"method": "adam", "u": np.asarray(u0, float), "f": f, "g": g, "ok": ok, "it": 0, "lr_scale": 1.0,
          "adam": [np.asarray(x) for x in jax.tree_util.tree_leaves(ostate)], "done": False, "reason": None}
    if not ok:
        st.update(done=True, reason="start_failed")
    return st


def _adam_step(prob, st, W, opt):
    u = jnp.asarray(st["u"])
    _, update, td = _adam_fns(opt["learning_rate"], len(st["u"]))
    ostate = jax.tree_util.tree_unflatten(td, [jnp.asarray(x) for x in st["adam"]])
    for _ in range(opt["max_ls"]):
        upd, new_state = update(jnp.asarray(st["g"]), ostate, u)
        un = np.asarray(u + st["lr_scale"] * upd)
        fn, gn, ok = prob.value_grad(un, W)
        if ok:
            break
        st["lr_scale"] *= 0.5
    st["it"] += 1
    if not ok:
        st.update(done=True, reason="line_search")
        return st
    s = un - st["u"]
    f_old = st["f"]
    st.update(u=un, f=fn, g=gn, adam=[np.asarray(x) for x in jax.tree_util.tree_leaves(new_state)])
    reason = None
    if np.max(np.abs(gn)) <= opt["gtol"] * max(1.0, abs(fn)):
        reason = "gradient"
    elif np.max(np.abs(s)) <= opt["xtol"] * (1.0 + np.max(np.abs(un))):
        reason = "step"
    elif opt["ftol"] > 0 and fn <= f_old and abs(f_old - fn) <= opt["ftol"] * max(abs(f_old), 1e-300):
        reason = "objective"
    if reason:
        st.update(done=True, reason=reason)
    elif st["it"] >= opt["max_iter"]:
        st.update(done=True, reason="max_iter")
    return st


_OPT_FUNS = {"bfgs": (_bfgs_init, _bfgs_step), "lm": (_lm_init, _lm_step), "adam": (_adam_init, _adam_step)}


# ---------------------------------------------------------------------------------------
# The driver: stages (first step, second step, iterated rounds, CUE) x multistart x iterations
# ---------------------------------------------------------------------------------------


def _stage_plan(weighting):
    """First stage name and W source."""
    return {"identity": ["one-step"], "fixed": ["one-step"], "two-step": ["first", "second"],
            "diagonal": ["first", "diagonal"], "iterated": ["first", "round"], "cue": ["first", "cue"],
            "md": ["one-step"]}[weighting]


class _Driver:
    def __init__(self, prob: _Problem, weighting, W_first, u0, starts, opt, fingerprint):
        self.prob, self.weighting, self.opt = prob, weighting, opt
        self.fingerprint = fingerprint
        self.state = {
            "fingerprint": fingerprint,
            "stage": 0,  # index into the stage sequence
            "stage_name": _stage_plan(weighting)[0],
            "W": W_first,
            "starts": [np.asarray(s, float) for s in starts],
            "start": 0,
            "start_results": [],
            "opt": None,
            "stages": [],
            "counters": dict(prob.n_evals),
            "path": [],
            "done": False,
            "status": None,
            "wall_s": 0.0,
        }
        self._bar = None
        self._t0 = time.perf_counter()

    # -- checkpoint ------------------------------------------------------------------
    def save(self):
        path = self.opt["checkpoint"]
        if not path:
            return
        self.state["counters"] = dict(self.prob.n_evals)
        text = json.dumps({"format": "spatialjax.gmm.checkpoint/1", "state": _enc(self.state)}, allow_nan=True)
        atomic.write_text(path, text)

    def load(self):
        path = Path(self.opt["checkpoint"])
        if not path.exists():
            return False
        try:
            raw = json.loads(path.read_text())
            st = _dec(raw["state"])
        except Exception as e:  # noqa: BLE001
            raise ParameterError("options.checkpoint", f"{path} is not a readable gmm checkpoint ({e})") from None
        fp = st.get("fingerprint")
        if fp != _dec(_enc(self.fingerprint)):
            diff = [k for k in self.fingerprint if (fp or {}).get(k) != self.fingerprint[k]]
            raise ParameterError("options.resume", f"checkpoint {path} belongs to a different problem (fields "
                                 f"{diff} differ: checkpoint {[(fp or {}).get(k) for k in diff]} vs now "
                                 f"{[self.fingerprint[k] for k in diff]}); use another checkpoint path or resume=False")
        self.state = st
        self.prob.n_evals.update(st["counters"])
        return True

    # -- stage logic -----------------------------------------------------------------
    def _W_arg(self):
        st = self.state
        if st["stage_name"] == "cue":
            return None
        W = np.asarray(st["W"])
        if self.opt["optimizer"] == "lm":
            return np.linalg.cholesky(W)
        return W

    def _finish_stage(self):
        st = self.state
        res = st["start_results"]
        best = min(range(len(res)), key=lambda i: (res[i]["f"] if np.isfinite(res[i]["f"]) else math.inf))
        rec = {"name": st["stage_name"], "u": res[best]["u"], "f": res[best]["f"], "reason": res[best]["reason"],
               "iterations": res[best]["iterations"], "W": st["W"], "ok": res[best]["ok"],
               "gn_step": res[best].get("gn_step"),
               "starts": [{"f": r["f"], "reason": r["reason"], "iterations": r["iterations"], "u0": r["u0"]}
                          for r in res]}
        st["stages"].append(rec)
        u_hat = rec["u"]
        nxt = None
        if not rec["ok"]:
            st.update(done=True, status="failed")
            return
        plan = _stage_plan(self.weighting)
        name = st["stage_name"]
        if name in ("one-step", "second", "diagonal", "cue"):
            st["done"] = True
            return
        # a stage that needs S(theta_hat)
        _, _, S, ok = self.prob.stats(u_hat)
        if name == "round" and len(st["stages"]) >= 2:
            prev = st["stages"][-2]["u"]
            tn, tp = np.asarray(self.prob.tr.to_natural(u_hat)), np.asarray(self.prob.tr.to_natural(prev))
            if np.max(np.abs(tn - tp)) <= self.opt["iter_tol"] * (1 + np.max(np.abs(tn))):
                st["done"] = True
                return
            if len([s for s in st["stages"] if s["name"] == "round"]) >= self.opt["max_rounds"]:
                st.update(done=True, status="max_rounds_reached")
                return
        if plan[1] == "cue":
            nxt, Wn = "cue", None
        else:
            if not ok:
                st.update(done=True, status="failed")
                return
            if plan[1] == "diagonal":
                dS = np.diag(S)
                Wn = np.diag(1.0 / dS) if np.all(dS > 0) else None
            else:
                Wn = _inv_spd(S, self.opt["s_rcond"])
            if Wn is None:
                st.update(done=True, status="singular_S")
                return
            nxt = plan[1]
        st.update(stage=st["stage"] + 1, stage_name=nxt, W=Wn, starts=[np.asarray(u_hat)], start=0,
                  start_results=[], opt=None)

    def run(self):
        opt = self.opt
        init, step = _OPT_FUNS[opt["optimizer"]]
        if opt["progress"]:
            from tqdm import tqdm

            self._bar = tqdm(total=None, desc="gmm", unit="it", leave=False)
        t_start = time.perf_counter()
        wall0 = self.state.get("wall_s", 0.0)
        try:
            while not self.state["done"]:
                st = self.state
                Warg = self._W_arg()
                if st["opt"] is None:
                    st["opt"] = init(self.prob, st["starts"][st["start"]], Warg, opt)
                    st["path"].append([st["stage_name"], st["start"], 0, st["opt"]["f"]])
                else:
                    n0 = self.prob.n_evals["objective"]
                    t0 = time.perf_counter()
                    st["opt"] = step(self.prob, st["opt"], Warg, opt)
                    dt = (time.perf_counter() - t0) / max(self.prob.n_evals["objective"] - n0, 1)
                    o = st["opt"]
                    st["path"].append([st["stage_name"], st["start"], o["it"], o["f"]])
                    gn = float(np.max(np.abs(o["g"]))) if o.get("g") is not None else float("nan")
                    if self._bar is not None:
                        self._bar.update(1)
                        self._bar.set_postfix_str(f"{st['stage_name']} Q={o['f']:.6e} |g|={gn:.2e} "
                                                  f"{dt * 1e3:.1f} ms/eval fail={self.prob.n_evals['failed']}")
                    if opt["callback"] is not None:
                        opt["callback"]({"stage": st["stage_name"], "start": st["start"], "iteration": o["it"],
                                         "objective": o["f"], "grad_norm": gn, "time_per_eval": dt,
                                         "n_failed_evals": self.prob.n_evals["failed"]})
                o = st["opt"]
                if o["done"]:
                    st["start_results"].append({"u": o["u"], "f": o["f"] if o["ok"] or o["reason"] != "start_failed"
                                                else math.inf, "reason": o["reason"], "iterations": o["it"],
                                                "ok": o["reason"] != "start_failed", "u0": st["starts"][st["start"]],
                                                "gn_step": o.get("gauss_newton_step")})
                    st["start"] += 1
                    st["opt"] = None
                    if st["start"] >= len(st["starts"]):
                        self._finish_stage()
                st["wall_s"] = wall0 + time.perf_counter() - t_start
                self.save()
        finally:
            if self._bar is not None:
                self._bar.close()
        return self.state


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass
class WaldTest:
    """Wald test of ``R theta = r``: ``stat = (R th - r)' (R V R')^{-1} (R th - r) ~ chi2(q)``."""

    statistic: float
    df: int
    pvalue: float

    def summary(self) -> str:
        return format_kv([("Wald statistic", self.statistic), ("df", self.df), ("p-value", self.pvalue)],
                         title="Wald test of R theta = r")

    __str__ = summary


@dataclass
class DeltaResult:
    """Delta-method inference for ``f(params)``: value, covariance ``J V J'``, SEs."""

    value: np.ndarray
    se: np.ndarray
    cov: np.ndarray
    jacobian: np.ndarray


@dataclass
class BootstrapResult:
    """Parametric bootstrap: ``draws`` (B x p, natural scale), SEs, percentile intervals."""

    draws: np.ndarray
    se: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    param_names: list
    n_failed: int
    statuses: list

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"parameter": self.param_names, "boot_se": self.se, "ci_low": self.ci_low,
                             "ci_high": self.ci_high})

    def summary(self) -> str:
        rows = [(n, s, lo, hi) for n, s, lo, hi in zip(self.param_names, self.se, self.ci_low, self.ci_high)]
        return format_table(["parameter", "boot SE", "CI low", "CI high"], rows,
                            title=f"Parametric bootstrap ({len(self.draws)} draws, {self.n_failed} failed)")

    __str__ = summary


@dataclass
class Result:
    """Result of :func:`estimate` / :func:`minimum_distance`.

    Attributes (flattened arrays use the order of ``param_names`` / ``moment_names``):
        params, se: PyTrees like ``theta0`` (natural scale); ``theta``, ``se_flat`` flat arrays.
        cov: ``(p, p)`` sandwich covariance (NaN when not available; see ``status``).
        tstat, ci_low, ci_high: t statistics and ``level`` confidence intervals.
        J, J_df, J_pvalue: Hansen's J (see module docstring; p-value NaN unless W is efficient).
        objective: ``Q = gbar' W gbar`` at the estimate.
        W, S, G: weighting matrix of the last step, ``S(theta_hat)`` (micro; ``None`` for minimum
            distance), ``d gbar / d theta`` (k x p).
        Omega: covariance of ``gbar`` (``S/n``, or ``cov_m_hat``), or None.
        sensitivity: Andrews-Gentzkow-Shapiro (2017) ``Lambda = -(G'WG)^{-1} G'W`` (p x k);
            :meth:`sensitivity_frame` labels it.
        hjdp: Honore-Jorgensen-de Paula (2020) measures (see :meth:`hjdp_frame`).
        weak_identification: dict with ``flag``, ``eig_ratio``, ``direction`` (loadings) and ``text``.
        convergence: iterations, ``stop_reason`` (gradient / step / objective / max_iter /
            line_search), objective path, evaluations, failed evaluations, stages, multistart.
        status: ``"converged"``, ``"converged_no_se"`` (fixed W, no covariance of the targets),
            ``"weakly_identified"``, ``"at_bound"`` (a bounded parameter on its bound: no SEs),
            ``"singular_S"``, ``"not_converged"``, ``"max_rounds_reached"``, ``"failed"``; ``message`` explains it. ``converged``: the optimiser stopped on a
            gradient/step/objective criterion at an evaluation with ok True.
    """

    params: Any
    se: Any
    theta: np.ndarray
    se_flat: np.ndarray
    cov: np.ndarray
    tstat: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    J: float
    J_df: int
    J_pvalue: float
    objective: float
    W: np.ndarray
    S: np.ndarray | None
    G: np.ndarray
    Omega: np.ndarray | None
    sensitivity: np.ndarray
    hjdp: dict
    weak_identification: dict
    convergence: dict
    status: str
    message: str
    converged: bool
    param_names: list
    moment_names: list
    n_obs: int | None
    kind: str
    weighting: str
    cov_type: str | None
    gbar: np.ndarray
    moments: dict
    transform_jacobian: np.ndarray
    level: float = 0.95
    true_params: np.ndarray | None = None
    small_sample: dict | None = None
    _unravel: Callable | None = field(default=None, repr=False)
    _refit: Callable | None = field(default=None, repr=False)

    # -- inference -------------------------------------------------------------------
    def wald(self, R, r=None) -> WaldTest:
        """Wald test of the linear restrictions ``R theta = r`` (``R``: (q, p); ``r``: (q,), default 0)."""
        R = np.atleast_2d(np.asarray(R, float))
        p = len(self.theta)
        if R.shape[1] != p:
            raise ParameterError("R", f"must have {p} columns (one per parameter); got shape {R.shape}")
        r = np.zeros(R.shape[0]) if r is None else np.atleast_1d(np.asarray(r, float))
        if r.shape != (R.shape[0],):
            raise ParameterError("r", f"must have shape ({R.shape[0]},); got {r.shape}")
        d = R @ self.theta - r
        try:
            stat = float(d @ np.linalg.solve(R @ self.cov @ R.T, d))
        except np.linalg.LinAlgError:
            stat = float("nan")
        return WaldTest(stat, int(R.shape[0]), _chi2_sf(stat, R.shape[0]))

    def delta_method(self, f: Callable) -> DeltaResult:
        """SEs of ``f(params)`` (any JAX function of the parameter PyTree): ``cov = J V J'``."""
        fl = lambda th: jnp.atleast_1d(jnp.asarray(f(self._unravel(th))))  # noqa: E731
        th = jnp.asarray(self.theta)
        val = np.asarray(fl(th))
        Jf = np.asarray(jax.jacrev(fl)(th))
        C = Jf @ self.cov @ Jf.T
        return DeltaResult(value=val, se=np.sqrt(np.clip(np.diag(C), 0, None)) if np.all(np.isfinite(C))
                           else np.full(len(val), np.nan), cov=C, jacobian=Jf)

    def bootstrap(self, simulate: Callable, n_draws: int, key) -> BootstrapResult:
        """Parametric bootstrap: ``simulate(params, key) -> data`` (micro) or ``-> m_hat``
        (minimum distance) redraws at the estimates; each draw is re-estimated with the same
        settings, warm-started at ``theta_hat``. Percentile intervals at ``level``."""
        if self._refit is None:
            raise ParameterError("bootstrap", "this result has no estimator attached")
        if not (isinstance(n_draws, (int, np.integer)) and n_draws >= 2):
            raise ParameterError("n_draws", f"must be an integer >= 2; got {n_draws!r}")
        keys = jax.random.split(key, n_draws)
        draws, statuses = [], []
        for kk in keys:
            data_b = simulate(self.params, kk)
            rb = self._refit(data_b, self.params)
            statuses.append(rb.status)
            draws.append(rb.theta if rb.convergence["final_ok"] else np.full(len(self.theta), np.nan))
        D = np.asarray(draws)
        good = np.all(np.isfinite(D), axis=1)
        Dg = D[good]
        a = (1 - self.level) / 2
        if len(Dg) >= 2:
            se = Dg.std(axis=0, ddof=1)
            lo, hi = np.quantile(Dg, a, axis=0), np.quantile(Dg, 1 - a, axis=0)
        else:
            se = lo = hi = np.full(len(self.theta), np.nan)
        return BootstrapResult(D, se, lo, hi, list(self.param_names), int((~good).sum()), statuses)

    # -- tables ----------------------------------------------------------------------
    def to_frame(self):
        """One row per parameter: estimate, se, t, CI (and the true value when given)."""
        import pandas as pd

        d = {"parameter": self.param_names, "estimate": self.theta, "se": self.se_flat, "t": self.tstat,
             "ci_low": self.ci_low, "ci_high": self.ci_high}
        if self.true_params is not None:
            d["true"] = self.true_params
        return pd.DataFrame(d)

    def moments_frame(self):
        """One row per moment: data target, model value, their difference, SE of the target
        (``sqrt(diag(Omega))``), SE of the model moment at the estimate (``sqrt(diag(G V G'))``)."""
        import pandas as pd

        return pd.DataFrame({"moment": self.moment_names, **self.moments})

    def sensitivity_frame(self):
        """``Lambda`` (p x k) with parameter rows and moment columns."""
        import pandas as pd

        return pd.DataFrame(self.sensitivity, index=self.param_names, columns=self.moment_names)

    def hjdp_frame(self, which: str = "remove"):
        """Honore-Jorgensen-de Paula measures, parameters x moments: ``which="remove"`` (relative
        change of var(theta_i) when moment j is dropped; inf when theta is then not identified)
        or ``"noise"`` (elasticity of var(theta_i) with respect to the variance of moment j)."""
        import pandas as pd

        if which not in ("remove", "noise"):
            raise ParameterError("which", f"must be 'remove' or 'noise'; got {which!r}")
        return pd.DataFrame(self.hjdp[which], index=self.param_names, columns=self.moment_names)

    def to_dict(self) -> dict:
        c = dict(self.convergence)
        return {
            "status": self.status, "message": self.message, "converged": bool(self.converged),
            "kind": self.kind, "weighting": self.weighting, "cov_type": self.cov_type, "n_obs": self.n_obs,
            "level": self.level,
            "parameters": [{"name": n, "estimate": float(t), "se": float(s), "t": float(z), "ci_low": float(lo),
                            "ci_high": float(hi), **({"true": float(self.true_params[i])}
                                                     if self.true_params is not None else {})}
                           for i, (n, t, s, z, lo, hi) in enumerate(zip(self.param_names, self.theta, self.se_flat,
                                                                        self.tstat, self.ci_low, self.ci_high))],
            "cov": self.cov, "J": self.J, "J_df": self.J_df, "J_pvalue": self.J_pvalue, "objective": self.objective,
            "W": self.W, "S": self.S, "G": self.G, "Omega": self.Omega, "param_names": self.param_names,
            "moment_names": self.moment_names, "sensitivity": self.sensitivity,
            "hjdp": self.hjdp, "weak_identification": self.weak_identification, "convergence": c,
            "moments": {"moment": self.moment_names, **self.moments},
            "small_sample": self.small_sample,
        }

    def to_json(self, path=None, *, indent: int = 2) -> str:
        """JSON text (NaN/inf -> null); written atomically to ``path`` when given."""
        text = json.dumps(atomic._json_safe(self.to_dict()), indent=indent, allow_nan=False)
        if path is not None:
            atomic.write_text(path, text + "\n")
        return text

    def summary(self) -> str:
        head = ["parameter", "estimate", "SE", "t", f"{int(round(self.level * 100))}% CI low", "CI high"]
        if self.true_params is not None:
            head.append("true")
        rows = []
        for i, n in enumerate(self.param_names):
            row = [n, self.theta[i], self.se_flat[i], self.tstat[i], self.ci_low[i], self.ci_high[i]]
            if self.true_params is not None:
                row.append(self.true_params[i])
            rows.append(row)
        title = ("GMM estimates" if self.kind == "micro" else "Minimum-distance estimates") + f" ({self.weighting})"
        out = [format_table(head, rows, title=title)]
        c = self.convergence
        kv = [("status", self.status), ("J", self.J), ("J df", self.J_df), ("J p-value", self.J_pvalue),
              ("objective Q", self.objective), ("weighting", self.weighting), ("covariance", self.cov_type or "-"),
              ("n_obs", self.n_obs if self.n_obs is not None else "-"), ("optimizer", c["optimizer"]),
              ("iterations", c["iterations"]), ("stop reason", c["stop_reason"]),
              ("objective evaluations", c["n_objective_evals"]), ("failed evaluations", c["n_failed_evals"]),
              ("stages", " -> ".join(s["name"] for s in c["stages"]))]
        if self.small_sample is not None:
            ss = self.small_sample
            kv.append(("small-sample inference", f"cov x n/(n-p-K) = {ss['n']}/({ss['n']}-{ss['p']}-{ss['K']}) = "
                                                 f"{ss['scale']:.4f}, t({ss['df']}) intervals"))
        if c.get("multistart"):
            kv.append(("multistart objectives", ", ".join(f"{f:.4g}" for f in c["multistart"])))
        out.append(format_kv(kv))
        if self.message:
            out.append("note: " + self.message)
        if self.weak_identification.get("flag"):
            out.append("weakly identified direction: " + self.weak_identification["text"])
        mrows = [(n, self.moments["data"][j], self.moments["model"][j], self.moments["difference"][j],
                  self.moments["se_data"][j], self.moments["se_model"][j]) for j, n in enumerate(self.moment_names)]
        out.append(format_table(["moment", "data", "model", "difference", "SE data", "SE model"], mrows,
                                title="Moments"))
        return "\n".join(out)

    __str__ = summary


# ---------------------------------------------------------------------------------------
# Post-estimation inference
# ---------------------------------------------------------------------------------------


def _weak_id(A, G, names, rtol):
    p = A.shape[0]
    d = np.diag(A).copy()
    info = {"flag": False, "eig_ratio": float("nan"), "direction": None, "text": "", "rank_G": None}
    if not np.all(np.isfinite(A)):
        info.update(flag=True, text="G'WG is not finite")
        return info
    info["rank_G"] = int(np.linalg.matrix_rank(G, tol=np.sqrt(rtol) * max(np.linalg.norm(G, 2), 1e-300)))
    zero = d <= 1e-300 * max(np.max(np.abs(d)), 1e-300)
    if np.any(zero):
        v = np.zeros(p)
        v[int(np.argmax(zero))] = 1.0
        info.update(flag=True, eig_ratio=0.0)
    else:
        s = 1 / np.sqrt(d)
        As = A * s[:, None] * s[None, :]
        ev, V = np.linalg.eigh(0.5 * (As + As.T))
        ratio = ev[0] / ev[-1] if ev[-1] > 0 else 0.0
        info["eig_ratio"] = float(ratio)
        v = V[:, 0] * s
        v = v / np.linalg.norm(v)
        info["flag"] = bool(ratio < rtol or info["rank_G"] < p)
    if info["flag"]:
        if v[np.argmax(np.abs(v))] < 0:
            v = -v
        info["direction"] = {n: float(x) for n, x in zip(names, v)}
        terms = [(x, n) for x, n in zip(v, names) if abs(x) >= 1e-3]
        txt = ""
        for j, (x, n) in enumerate(terms):
            sign = "-" if x < 0 else ("+" if j else "")
            txt += (f" {sign} " if j else sign) + f"{abs(x):.3f}*{n}"
        info["text"] = txt.strip()
    return info


def _sandwich(G, W, Omega):
    A = G.T @ W @ G
    B = np.linalg.inv(A)
    Lam = -B @ G.T @ W
    V = Lam @ Omega @ Lam.T if Omega is not None else np.full_like(A, np.nan)
    return V, Lam


def _hjdp(G, W, Omega, efficient, rcond):
    """Honore, Jorgensen and de Paula (2020) measures (p x k each).

    ``remove[i, j] = (V_{-j, ii} - V_ii) / V_ii``: the relative change of the asymptotic
    variance of theta_i when moment j is dropped. Efficient GMM re-optimises the weighting
    (``V_{-j} = (G_{-j}' Omega_{-j}^{-1} G_{-j})^{-1}``, baseline ``(G' Omega^{-1} G)^{-1}``);
    with a fixed W the row and column j of W are dropped and the sandwich is used. ``inf``
    when the remaining moments do not identify theta (fewer than p, or singular).

    ``noise[i, j] = (dV_ii / dOmega_jj) Omega_jj / V_ii = Lambda_ij^2 Omega_jj / V_ii``: the
    elasticity of var(theta_i) with respect to the variance of moment j (both for fixed W and,
    by the envelope argument, for efficient W).
    """
    k, p = G.shape
    remove = np.full((p, k), np.nan)
    noise = np.full((p, k), np.nan)
    if Omega is None or not np.all(np.isfinite(Omega)):
        return {"remove": remove, "noise": noise, "not_identified_without": []}
    Oi = _inv_spd(Omega, rcond) if efficient else None
    if efficient and Oi is None:
        return {"remove": remove, "noise": noise, "not_identified_without": []}

    def var(Gs, Ws, Os, eff):
        A = Gs.T @ Ws @ Gs
        if Gs.shape[0] < p or _inv_spd(A, rcond) is None:
            return None
        if eff:
            return np.linalg.inv(A)
        B = np.linalg.inv(A)
        return B @ Gs.T @ Ws @ Os @ Ws @ Gs @ B

    V0 = var(G, Oi if efficient else W, Omega, efficient)
    if V0 is None:
        return {"remove": remove, "noise": noise, "not_identified_without": []}
    Lam = -np.linalg.inv(G.T @ (Oi if efficient else W) @ G) @ G.T @ (Oi if efficient else W)
    noise = Lam ** 2 * np.diag(Omega)[None, :] / np.diag(V0)[:, None]
    flagged = []
    for j in range(k):
        keep = [i for i in range(k) if i != j]
        Gs, Os = G[keep], Omega[np.ix_(keep, keep)]
        Ws = _inv_spd(Os, rcond) if efficient else W[np.ix_(keep, keep)]
        Vj = None if Ws is None else var(Gs, Ws, Os, efficient)
        if Vj is None:
            remove[:, j] = np.inf
            flagged.append(j)
        else:
            remove[:, j] = (np.diag(Vj) - np.diag(V0)) / np.diag(V0)
    return {"remove": remove, "noise": noise, "not_identified_without": flagged}


def _flat_true(true_params, names, leafinfo, theta0):
    if true_params is None:
        return None
    bases = {b for b, _ in leafinfo}
    if isinstance(true_params, dict) and all(isinstance(k, str) and (k in names or k in bases) for k in true_params):
        out = np.full(len(names), np.nan)
        for k, v in true_params.items():
            if k in names:
                out[names.index(k)] = float(v)
            else:
                idx = [i for i, n in enumerate(names) if n == k or n.startswith(k + "[")]
                out[idx] = np.ravel(np.asarray(v, float))
        return out
    try:
        flat, _ = ravel_pytree(jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), true_params))
    except Exception:
        raise ParameterError("options.true_params", "must be a PyTree like theta0 or a dict name -> value") from None
    if flat.shape[0] != len(names):
        raise ParameterError("options.true_params", f"must have {len(names)} values; got {flat.shape[0]}")
    return np.asarray(flat)


def _assemble(prob: _Problem, drv_state, *, kind, weighting, cov_type, names, mnames, opt, unravel, Omega_fixed,
              efficient, m_hat, true_flat, refit, leafinfo, se_reason=None):
    st = drv_state
    stages = st["stages"]
    p, k = prob.p, prob.k
    nan_p = np.full(p, np.nan)
    last = stages[-1] if stages else None
    u_hat = np.asarray(last["u"]) if last is not None else np.asarray(st["starts"][0])
    theta = np.asarray(prob.tr.to_natural(jnp.asarray(u_hat)))
    gb, G, S, ok_stats = prob.stats(u_hat)
    final_ok = bool(last is not None and last["ok"] and ok_stats and np.all(np.isfinite(gb)) and np.all(np.isfinite(G)))
    W = None if last is None else (np.asarray(last["W"]) if last["W"] is not None else None)
    status = st.get("status")
    message = ""
    if last is not None and last["name"] == "cue":
        W = _inv_spd(S, opt["s_rcond"])
        if W is None:
            status = status or "singular_S"
    if W is None:
        W = np.full((k, k), np.nan)
    # convergence of the last stage
    reason = last["reason"] if last is not None else "start_failed"
    opt_conv = reason in ("gradient", "step", "objective")
    n = prob.n
    if kind == "micro":
        Omega = S / n
    else:
        Omega = Omega_fixed
    if not final_ok:
        status = "failed"
        message = ("no evaluation with ok=True and finite moments/Jacobian at the final point (every start failed or "
                   "the inner solve failed at the estimate); no estimates are reported")
    cov = np.full((p, p), np.nan)
    Lam = np.full((p, k), np.nan)
    wi = {"flag": False, "eig_ratio": float("nan"), "direction": None, "text": "", "rank_G": None}
    hj = {"remove": np.full((p, k), np.nan), "noise": np.full((p, k), np.nan), "not_identified_without": []}
    if final_ok and np.all(np.isfinite(W)):
        A = G.T @ W @ G
        wi = _weak_id(A, G, names, opt["weak_rtol"])
        if wi["flag"]:
            status = "weakly_identified"
            message = (f"G'WG is (near-)singular (equilibrated eigenvalue ratio {wi['eig_ratio']:.2e} < "
                       f"{opt['weak_rtol']:g} or rank(G) = {wi['rank_G']} < p = {p}); SEs are not reported. "
                       f"Weakly identified direction: {wi['text']}")
        else:
            Om = Omega
            if kind == "micro" and _inv_spd(S, opt["s_rcond"]) is None:
                status = status or "singular_S"
                Om = None
            if status == "singular_S":
                message = "S(theta_hat) is singular or ill-conditioned: no efficient weighting / SEs (not pseudo-inverted)"
            V, Lam = _sandwich(G, W, Om)
            cov = V
            if Om is None and kind == "md":
                status = status or "converged_no_se"
                message = se_reason or "fixed W without a covariance of m_hat: standard errors are not available"
            hj = _hjdp(G, W, Om, efficient, opt["s_rcond"])
    # a bounded parameter at (numerically on) its bound: the estimate is constrained and the usual
    # asymptotics do not apply, so no SEs
    tr = prob.tr
    width = np.where(np.isfinite(tr.hi - tr.lo), tr.hi - tr.lo, 1.0 + np.abs(theta))
    near = (tr.kinds > 0) & ((np.abs(theta - tr.lo) <= 1e-8 * width) | (np.abs(tr.hi - theta) <= 1e-8 * width))
    at_bound = [names[i] for i in np.flatnonzero(near)]
    if final_ok and at_bound and status in (None, "converged_no_se"):
        status = "at_bound"
        message = (f"parameter(s) {at_bound} at a bound: the estimate is constrained; standard errors are not "
                   "reported (the asymptotic distribution at a boundary is not normal)")
        cov = np.full((p, p), np.nan)
    if status is None:
        status = "converged" if opt_conv else "not_converged"
        if not opt_conv:
            message = f"the optimiser stopped on '{reason}' without meeting a gradient/step/objective criterion"
    elif status in ("converged_no_se",) and not opt_conv:
        status = "not_converged"
    from scipy import stats as sst

    small = None
    if opt.get("df_correction") is not None:
        n_eff = int(prob.n_clusters) if prob.cov == "cluster" else int(n)
        K = int(opt["df_correction"])
        df = n_eff - p - K
        small = {"n": n_eff, "p": int(p), "K": K, "df": int(df), "scale": n_eff / df}
        cov = cov * small["scale"]
    se_flat = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else nan_p.copy()
    if not final_ok:
        theta = nan_p.copy()
    tstat = theta / se_flat
    if small is None:
        zc = float(sst.norm.ppf(0.5 + opt["level"] / 2))
    else:
        zc = float(sst.t.ppf(0.5 + opt["level"] / 2, small["df"]))
    ci_low, ci_high = theta - zc * se_flat, theta + zc * se_flat
    # J
    Q = float(gb @ W @ gb) if final_ok and np.all(np.isfinite(W)) else float("nan")
    if kind == "micro":
        J = n * Q
        j_valid = efficient
    else:
        J = Q if efficient else float("nan")
        j_valid = efficient
    J_df = k - p
    J_p = _chi2_sf(J, J_df) if (j_valid and final_ok and status != "singular_S") else float("nan")
    # moments table
    if kind == "micro":
        data_m = np.zeros(k)
        model_m = gb
    else:
        data_m = np.asarray(m_hat)
        model_m = gb + data_m
    se_data = np.sqrt(np.clip(np.diag(Omega), 0, None)) if Omega is not None and np.all(np.isfinite(Omega)) \
        else np.full(k, np.nan)
    se_model = np.sqrt(np.clip(np.diag(G @ cov @ G.T), 0, None)) if np.all(np.isfinite(cov)) else np.full(k, np.nan)
    moments = {"data": data_m, "model": model_m, "difference": model_m - data_m, "se_data": se_data,
               "se_model": se_model}
    conv = {
        "optimizer": opt["optimizer"],
        "iterations": int(sum(s["iterations"] for s in stages)),
        "stop_reason": reason,
        "final_ok": final_ok,
        "objective_path": [(s, int(i), int(it), float(f)) for s, i, it, f in st["path"]],
        "n_objective_evals": int(prob.n_evals["objective"]),
        "n_gradient_evals": int(prob.n_evals["gradient"]),
        "n_failed_evals": int(prob.n_evals["failed"]),
        "stages": [{"name": s["name"], "objective": float(s["f"]), "iterations": int(s["iterations"]),
                    "stop_reason": s["reason"], "gauss_newton_step": s.get("gn_step")} for s in stages],
        "multistart": [float(r["f"]) for r in stages[0]["starts"]] if stages and len(stages[0]["starts"]) > 1 else [],
        "multistart_starts": [np.asarray(prob.tr.to_natural(jnp.asarray(r["u0"]))).tolist() for r in stages[0]["starts"]]
        if stages else [],
        "wall_s": float(st.get("wall_s", 0.0)),
        "hac_lags": prob.hac_lags,
        "at_bound": at_bound,
    }
    to_tree = lambda v: jax.tree.map(np.asarray, unravel(jnp.asarray(v)))  # noqa: E731
    return Result(
        params=to_tree(theta), se=to_tree(se_flat), theta=theta, se_flat=se_flat, cov=cov, tstat=tstat,
        ci_low=ci_low, ci_high=ci_high, J=float(J), J_df=int(J_df), J_pvalue=float(J_p), objective=Q, W=W,
        S=S if kind == "micro" else None, G=G, Omega=Omega, sensitivity=Lam, hjdp=hj, weak_identification=wi,
        convergence=conv, status=status, message=message,
        converged=bool(final_ok and opt_conv and status not in ("failed", "max_rounds_reached", "not_converged",
                                                                "singular_S")),
        param_names=list(names), moment_names=list(mnames), n_obs=n if kind == "micro" else prob.n, kind=kind,
        weighting=weighting, cov_type=cov_type, gbar=gb, moments=moments,
        transform_jacobian=prob.tr.jacobian_diag(u_hat), level=opt["level"], true_params=true_flat,
        small_sample=small,
        _unravel=unravel, _refit=refit)


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


def _prep_theta(theta0, opt):
    try:
        theta0 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), theta0)
        flat0, unravel = ravel_pytree(theta0)
    except Exception as e:  # noqa: BLE001
        raise ParameterError("theta0", f"must be a PyTree of numeric scalars/arrays ({e})") from None
    flat0 = np.asarray(flat0)
    names, leafinfo = _leaf_names(theta0)
    if opt["param_names"] is not None:
        if len(opt["param_names"]) != len(names):
            raise ParameterError("options.param_names", f"must have {len(names)} names; got {len(opt['param_names'])}")
        names = [str(x) for x in opt["param_names"]]
    if len(flat0) == 0:
        raise ParameterError("theta0", "has no parameters")
    opt["_tree_key"] = (jax.tree_util.tree_structure(theta0), tuple(s for _, s in leafinfo))
    if not np.all(np.isfinite(flat0)):
        i = int(np.argmax(~np.isfinite(flat0)))
        raise ParameterError(f"theta0.{names[i]}", f"must be finite; got {flat0[i]}")
    return theta0, flat0, unravel, names, leafinfo


def _starts(u0, tr, names, opt):
    K = int(opt["multistart"])
    starts = [np.asarray(u0, float)]
    if K > 1:
        box = opt["start_box"]
        if not isinstance(box, dict) or not box:
            raise ParameterError("options.start_box", "multistart > 1 needs start_box = {name: (lo, hi)}")
        rng = np.random.default_rng(opt["seed"])
        th0 = np.asarray(tr.to_natural(jnp.asarray(u0)))
        for name in box:
            if name not in names:
                raise ParameterError(f"options.start_box.{name}", f"unknown parameter; allowed: {names}")
            lo, hi = box[name]
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ParameterError(f"options.start_box.{name}", f"needs finite lo < hi; got ({lo}, {hi})")
            i = names.index(name)
            if tr.kinds[i] and not (lo >= tr.lo[i] and hi <= tr.hi[i]):
                raise ParameterError(f"options.start_box.{name}", f"must lie within the bounds ({tr.lo[i]}, {tr.hi[i]})")
        for _ in range(K - 1):
            th = th0.copy()
            for name, (lo, hi) in box.items():
                th[names.index(name)] = rng.uniform(lo, hi)
            u = tr.to_unconstrained(th)
            if not np.all(np.isfinite(u)):  # a draw exactly on a bound: nudge inside
                u = np.where(np.isfinite(u), u, 0.0)
            starts.append(u)
    return starts


def _run(prob, weighting, W_first, starts, opt, fingerprint):
    drv = _Driver(prob, weighting, W_first, starts[0], starts, opt, fingerprint)
    if opt["checkpoint"]:
        if opt["resume"]:
            drv.load()
        else:
            drv.save()
    return drv.run()


def estimate(g: Callable, theta0, data, *, weighting: str = "two-step", cov: str = "robust", clusters=None,
             bounds=None, options: dict | None = None) -> Result:
    """Micro GMM: minimise ``gbar(theta)' W gbar(theta)`` (Hansen 1982).

    Args:
        g: ``g(theta, data) -> (n_obs, k)`` per-observation moment contributions (pure JAX), or a
            pair ``(values, ok)`` with ``ok`` a boolean scalar (False when an inner equilibrium
            solve failed: that evaluation is rejected, never used as a number).
        theta0: start values, any PyTree of floats (dict, ``eqx.Module``, ...).
        data: any PyTree of arrays passed to ``g`` (must be finite).
        weighting: ``"identity"``, ``"diagonal"``, ``"fixed"`` (``options["W"]``), ``"two-step"``,
            ``"iterated"`` or ``"cue"`` (module docstring).
        cov: ``"robust"``, ``"cluster"`` (needs ``clusters``: ids of length n_obs) or ``"hac"``
            (Newey-West, ``options["hac_lags"]``). It defines S for the weighting and the sandwich.
        bounds: dict ``name -> (lo, hi)`` (either None) or a PyTree of pairs like ``theta0``.
        options: see :data:`OPTIONS` (unknown keys are an error that lists the allowed ones).

    Returns:
        :class:`Result`.
    """
    opt = _check_options(options, OPTIONS.keys())
    if weighting not in WEIGHTINGS:
        raise ParameterError("weighting", f"must be one of {WEIGHTINGS}; got {weighting!r}")
    if cov not in COV_TYPES:
        raise ParameterError("cov", f"must be one of {COV_TYPES}; got {cov!r}")
    if not callable(g):
        raise ParameterError("g", "must be a callable g(theta, data) -> (n_obs, k)")
    theta0, flat0, unravel, names, leafinfo = _prep_theta(theta0, opt)
    _check_finite_tree("data", data)
    try:
        out = jax.eval_shape(g, theta0, data)
    except ParameterError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ParameterError("g", f"could not be evaluated at theta0 ({type(e).__name__}: {e})") from None
    vals, ok = _split_ok(out)
    if len(getattr(vals, "shape", ())) != 2:
        raise ParameterError("g", f"must return shape (n_obs, k); got shape {getattr(vals, 'shape', None)}")
    if ok is not None and tuple(ok.shape) not in ((), (1,)):
        raise ParameterError("g", f"the ok flag must be a boolean scalar; got shape {ok.shape}")
    n, k = int(vals.shape[0]), int(vals.shape[1])
    if opt["variance_moments"] is not None:
        try:
            hv, _ = _split_ok(jax.eval_shape(opt["variance_moments"], theta0, data))
        except Exception as e:  # noqa: BLE001
            raise ParameterError("options.variance_moments",
                                 f"could not be evaluated at theta0 ({type(e).__name__}: {e})") from None
        if tuple(getattr(hv, "shape", ())) != (n, k):
            raise ParameterError("options.variance_moments",
                                 f"must return the shape of g, ({n}, {k}); got {getattr(hv, 'shape', None)}")
    p = len(flat0)
    if n < 2:
        raise ParameterError("g", f"must return n_obs >= 2 rows; got {n}")
    if k < p:
        raise ParameterError("g", f"has k = {k} moments for p = {p} parameters: the model is under-identified (k >= p needed)")
    cl, ncl = None, None
    if cov == "cluster":
        if clusters is None:
            raise ParameterError("clusters", "cov='cluster' needs clusters (an array of n_obs cluster ids)")
        c = np.asarray(clusters)
        if c.shape != (n,):
            raise ParameterError("clusters", f"must have shape ({n},) (one id per observation); got {c.shape}")
        _, cl = np.unique(c, return_inverse=True)
        ncl = int(cl.max()) + 1
        if ncl < 2:
            raise ParameterError("clusters", "needs at least 2 clusters")
        cl = jnp.asarray(cl.ravel())
    elif clusters is not None:
        raise ParameterError("clusters", f"only used with cov='cluster'; got cov={cov!r}")
    K = opt["df_correction"]
    if K is not None:
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 0:
            raise ParameterError("options.df_correction", f"must be None or an integer >= 0 (the number of nuisance "
                                                          f"parameters estimated inside g); got {K!r}")
        n_eff = ncl if cov == "cluster" else n  # the same n as the correction in _assemble
        if n_eff - p - int(K) < 1:
            raise ParameterError("options.df_correction", f"leaves no degrees of freedom: n = {n_eff} "
                                                          f"{'clusters' if cov == 'cluster' else 'observations'}, "
                                                          f"p = {p} parameters, K = {int(K)}")
    if cov == "hac" and opt["hac_lags"] is not None and not (isinstance(opt["hac_lags"], (int, np.integer))
                                                             and 0 <= opt["hac_lags"] < n):
        raise ParameterError("options.hac_lags", f"must be an integer in [0, {n}); got {opt['hac_lags']!r}")
    if opt["center"] not in (True, False):
        raise ParameterError("options.center", "must be True or False")
    W1 = np.eye(k) if opt["W1"] is None else _check_weight("options.W1", opt["W1"], k, opt["s_rcond"])
    if weighting == "fixed":
        if opt["W"] is None:
            raise ParameterError("options.W", "weighting='fixed' needs options['W'] (a (k, k) matrix)")
        W1 = _check_weight("options.W", opt["W"], k, opt["s_rcond"])
    elif opt["W"] is not None:
        raise ParameterError("options.W", f"only used with weighting='fixed'; got weighting={weighting!r}")
    mnames = _moment_names(opt, k)
    tr = _parse_bounds(bounds, opt["transforms"], flat0, names, leafinfo, theta0)
    true_flat = _flat_true(opt["true_params"], names, leafinfo, theta0)
    prob = _Problem(kind="micro", fn=g, data=data, unravel=unravel, transform=tr, p=p, k=k, n=n, cov=cov,
                    clusters=cl, n_clusters=ncl, options=opt, tree_key=opt["_tree_key"])
    u0 = tr.to_unconstrained(flat0)
    starts = _starts(u0, tr, names, opt)
    fingerprint = {"kind": "micro", "param_names": list(names), "k": k, "n_obs": n, "weighting": weighting,
                   "cov": cov, "optimizer": opt["optimizer"]}
    state = _run(prob, weighting, W1, starts, opt, fingerprint)

    def refit(data_b, start):
        o = dict(options or {})
        o.update(progress=False, checkpoint=None, resume=False, multistart=1, callback=None)
        o.pop("start_box", None)
        return estimate(g, start, data_b, weighting=weighting, cov=cov, clusters=clusters, bounds=bounds, options=o)

    return _assemble(prob, state, kind="micro", weighting=weighting, cov_type=cov, names=names, mnames=mnames,
                     opt=opt, unravel=unravel, Omega_fixed=None, efficient=weighting in EFFICIENT, m_hat=None,
                     true_flat=true_flat, refit=refit, leafinfo=leafinfo)


def _moment_names(opt, k):
    if opt["moment_names"] is None:
        return [f"m{j}" for j in range(k)]
    if len(opt["moment_names"]) != k:
        raise ParameterError("options.moment_names", f"must have {k} names (one per moment); got {len(opt['moment_names'])}")
    return [str(x) for x in opt["moment_names"]]


_MD_OPTIONS = [k for k in OPTIONS if k not in ("W1", "W", "hac_lags", "cluster_correction", "center", "max_rounds",
                                               "iter_tol", "variance_moments", "df_correction")]


def minimum_distance(m: Callable, theta0, m_hat, *, W=None, cov_m_hat=None, bounds=None,
                     options: dict | None = None) -> Result:
    """Minimum distance: minimise ``e' W e`` with ``e(theta) = m(theta) - m_hat``.

    Args:
        m: ``m(theta) -> (k,)`` model moments (pure JAX; may return ``(values, ok)``).
        theta0: start values (any PyTree).
        m_hat: data moments, shape ``(k,)`` (finite).
        W: fixed ``(k, k)`` weighting matrix (symmetric positive definite), e.g.
            ``diag(1 / m_hat**2)``. Default: ``cov_m_hat^{-1}`` (efficient) when the covariance is
            given, else the identity.
        cov_m_hat: covariance of ``m_hat`` as an estimator, one of: a ``(k, k)`` matrix;
            ``{"data": (n, k) array}`` per-observation data whose column means are the targets
            (``cov = np.cov(data, ddof=1) / n``); ``{"draws": (B, k) array}`` bootstrap draws of
            ``m_hat`` (``cov = np.cov(draws, ddof=1)``).
        bounds, options: as in :func:`estimate` (``W1``, ``W``, HAC/cluster/iterated options do
            not apply).

    With W fixed and ``cov_m_hat`` given the SEs are the sandwich
    ``(G'WG)^{-1} G'W cov W G (G'WG)^{-1}``; with W fixed and no covariance no SEs are
    reported (NaN, status ``"converged_no_se"``). J (``= e' cov^{-1} e``, df ``k - p``) is
    reported only with the efficient W.
    """
    opt = _check_options(options, _MD_OPTIONS)
    if not callable(m):
        raise ParameterError("m", "must be a callable m(theta) -> (k,)")
    theta0, flat0, unravel, names, leafinfo = _prep_theta(theta0, opt)
    mh = np.asarray(m_hat, float)
    if mh.ndim != 1:
        raise ParameterError("m_hat", f"must have shape (k,); got {mh.shape}")
    if not np.all(np.isfinite(mh)):
        raise ParameterError("m_hat", f"must be finite; non-finite at {np.argwhere(~np.isfinite(mh)).ravel()[:3].tolist()}")
    k, p = mh.shape[0], len(flat0)
    try:
        out = jax.eval_shape(m, theta0)
    except Exception as e:  # noqa: BLE001
        raise ParameterError("m", f"could not be evaluated at theta0 ({type(e).__name__}: {e})") from None
    vals, ok = _split_ok(out)
    if tuple(getattr(vals, "shape", ())) != (k,):
        raise ParameterError("m", f"must return shape ({k},) (like m_hat); got {getattr(vals, 'shape', None)}")
    if k < p:
        raise ParameterError("m_hat", f"has k = {k} moments for p = {p} parameters: under-identified (k >= p needed)")
    n_data = None
    Om = None
    if cov_m_hat is not None:
        if isinstance(cov_m_hat, dict):
            if set(cov_m_hat) == {"data"}:
                D = np.asarray(cov_m_hat["data"], float)
                if D.ndim != 2 or D.shape[1] != k or D.shape[0] < 2:
                    raise ParameterError("cov_m_hat.data", f"must have shape (n, {k}) with n >= 2; got {D.shape}")
                _check_finite_tree("cov_m_hat.data", D)
                n_data = D.shape[0]
                Om = np.atleast_2d(np.cov(D, rowvar=False, ddof=1)) / n_data
            elif set(cov_m_hat) == {"draws"}:
                D = np.asarray(cov_m_hat["draws"], float)
                if D.ndim != 2 or D.shape[1] != k or D.shape[0] < 2:
                    raise ParameterError("cov_m_hat.draws", f"must have shape (B, {k}) with B >= 2; got {D.shape}")
                _check_finite_tree("cov_m_hat.draws", D)
                Om = np.atleast_2d(np.cov(D, rowvar=False, ddof=1))
            else:
                raise ParameterError("cov_m_hat", f"a dict must have exactly one key, 'data' or 'draws'; got {sorted(cov_m_hat)}")
        else:
            Om = np.asarray(cov_m_hat, float)
            if Om.shape != (k, k):
                raise ParameterError("cov_m_hat", f"must have shape ({k}, {k}); got {Om.shape}")
        Om = _check_weight("cov_m_hat", Om, k, opt["s_rcond"])
    if W is not None:
        Wm = _check_weight("W", W, k, opt["s_rcond"])
        efficient = False
        label = "fixed"
    elif Om is not None:
        Wm = np.linalg.inv(Om)
        Wm = 0.5 * (Wm + Wm.T)
        efficient = True
        label = "efficient"
    else:
        Wm = np.eye(k)
        efficient = False
        label = "identity"
    mnames = _moment_names(opt, k)
    tr = _parse_bounds(bounds, opt["transforms"], flat0, names, leafinfo, theta0)
    true_flat = _flat_true(opt["true_params"], names, leafinfo, theta0)
    opt = dict(opt, center=False, hac_lags=None, cluster_correction=None, iter_tol=0.0, max_rounds=1)
    prob = _Problem(kind="md", fn=m, data=jnp.asarray(mh), unravel=unravel, transform=tr, p=p, k=k, n=n_data,
                    cov=None, clusters=None, n_clusters=None, options=opt, m_hat=mh,
                    tree_key=opt["_tree_key"])
    u0 = tr.to_unconstrained(flat0)
    starts = _starts(u0, tr, names, opt)
    fingerprint = {"kind": "md", "param_names": list(names), "k": k, "n_obs": n_data, "weighting": label,
                   "cov": None, "optimizer": opt["optimizer"]}
    state = _run(prob, "md", Wm, starts, opt, fingerprint)

    def refit(m_hat_b, start):
        o = dict(options or {})
        o.update(progress=False, checkpoint=None, resume=False, multistart=1, callback=None)
        o.pop("start_box", None)
        return minimum_distance(m, start, m_hat_b, W=W, cov_m_hat=cov_m_hat, bounds=bounds, options=o)

    return _assemble(prob, state, kind="md", weighting=label, cov_type=None, names=names, mnames=mnames, opt=opt,
                     unravel=unravel, Omega_fixed=Om, efficient=efficient, m_hat=mh, true_flat=true_flat,
                     refit=refit, leafinfo=leafinfo,
                     se_reason=None if Om is not None else
                     "W is fixed and no cov_m_hat was given: standard errors are not available (NaN)")


def bootstrap(result: Result, simulate: Callable, n_draws: int, key) -> BootstrapResult:
    """Parametric bootstrap of an estimate: the same as ``result.bootstrap(simulate, n_draws, key)``."""
    if not isinstance(result, Result):
        raise ParameterError("result", f"must be a gmm.Result; got {type(result).__name__}")
    return result.bootstrap(simulate, n_draws, key)
