"""Every equilibrium of the Jiao & Tian (2024) model found along a sweep of ICT openness Delta.

:func:`equilibria_along` is the algorithm behind ``spatialjax solve jiao-tian`` (the analogs of
Figures 2-3 of the paper: the skill share of one city against Delta = tau^(-theta), Section 3.3):

1. **Branches.** The branch that starts at fragmentation autarky (closed form of Prop. 3,
   :func:`jiao_tian.autarky`) is followed upwards in Delta by pseudo-arclength continuation
   (:func:`spatialjax.continuation.pseudo_arclength`), through its folds. Then every
   equilibrium at the top of the grid that Newton reaches from points of that branch (and that
   is not where the branch itself crosses the top) starts a second branch, traced downwards.
2. **Equilibria at each grid point.** Every crossing of a traced branch with the grid value
   (secant start between the two branch points around it; every crossing, where
   :func:`spatialjax.continuation.arclength_to` returns the first), plus ``n_starts`` seeded
   random starts (:func:`random_starts`), all solved in one vmapped Newton solve
   (:func:`spatialjax.continuation.multistart`). Roots are de-duplicated in the max norm of
   ``y = (log w, log L^m, log U_w, log U_m)`` after sorting interchangeable cities (same
   T_n, H_n and tau pattern), so equilibria are counted up to relabelling identical cities.
   The random multi-start is a search, not a proof: equilibria it misses are not counted.
3. **Classification.** An equilibrium in which some city's manager share L^m_n / L^m is below
   ``degenerate_share`` (default 1e-3) is *degenerate*: that city is (almost) empty of
   managers. Because E[pi_n] ~ (L^m_n)^(gamma/(1-beta)) (13), such allocations solve the
   equations for tiny but positive L^m_n; they are the near-corner equilibria into which a
   fixed-point iteration falls. ``index`` is sign det(dF/dy) relative to the autarky
   equilibrium at the bottom of the grid; it changes at every fold. An equilibrium of index -1
   is **unstable** under every adjustment process dy/dt = M F(y) (M a fixed non-singular
   matrix) under which the autarky equilibrium is stable: a stable equilibrium of such a
   process has sign det(M J) = (-1)^n, so index -1 forces a real positive eigenvalue of M J.
   Index +1 is necessary for stability in that sense, not sufficient ("autarky-type").

Each grid point's :class:`results.Equilibria` has a status: ``"successful"`` (at least one
interior equilibrium), ``"degenerate"`` (only degenerate ones; the message says which cities
are empty and gives the evidence: starts used, how many converged, the smallest manager share
found) or ``"no_solution"`` (nothing converged: a failure).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from spatialjax.continuation import Branch, multistart, pseudo_arclength
from spatialjax.errors import ParameterError
from spatialjax.models import jiao_tian as jt
from spatialjax.results import Equilibria, Result, json_safe

__all__ = ["equilibria_along", "AlongPoint", "EquilibriaAlong", "openness_setter", "openness_mask",
           "random_starts", "symmetry_groups", "BRANCH_COLUMNS", "EQUILIBRIUM_COLUMNS"]

#: openness of the pairs not being upgraded (``jiao_tian.tau_from_openness``'s ``Delta_base``)
BASE_OPENNESS = 1e-12
#: rows of every batched Newton solve (starts are padded or split to it): one shape for every
#: grid point, experiment, ``n_starts`` and the top-of-grid search, so one compilation per
#: process and N (the default 64 random starts plus up to 8 branch crossings fill one batch)
BATCH = 72

#: what the columns of :meth:`EquilibriaAlong.branch_table` mean
BRANCH_COLUMNS = {
    "experiment": "which pairs get openness Delta ('all pairs' or 'City k upgraded')",
    "focus_city": "the city (1-based) whose skill share is reported",
    "branch": "traced branch: 0 starts at autarky, 1.. start at equilibria at the top of the grid",
    "Delta": "ICT openness Delta = tau^(-theta) of the upgraded pairs at this branch point",
    "residual": "max-norm residual of the equilibrium equations at the branch point",
    "index": "sign det(dF/dy) relative to autarky: +1 as autarky, -1 across an odd number of folds (unstable)",
    "skill_share": "L^m/(L^m+L^p) of the focus city",
    "Lm_k": "managers living in city k",
}
#: what the columns of :meth:`EquilibriaAlong.table` mean
EQUILIBRIUM_COLUMNS = {
    "experiment": BRANCH_COLUMNS["experiment"],
    "focus_city": BRANCH_COLUMNS["focus_city"],
    "Delta": "grid value of ICT openness",
    "point_status": "successful (an interior equilibrium found), degenerate (only degenerate ones) or "
                    "no_solution (none: a failure)",
    "kind": "interior, or degenerate (some city holds less than degenerate_share of the managers)",
    "branch": "traced branch it lies on, or -1 if only the random multi-start found it",
    "index": BRANCH_COLUMNS["index"],
    "stability": "unstable (index -1) / autarky-type (index +1: not ruled out) / singular",
    "status": "solver status of the polishing Newton solve",
    "residual": "max-norm residual",
    "sigma_min": "smallest singular value of dF/dy",
    "min_share": "smallest manager share L^m_n/L^m over cities",
    "empty_cities": "cities (1-based) whose manager share is below degenerate_share",
    "skill_share": BRANCH_COLUMNS["skill_share"],
    "copies": "relabellings of identical cities found (the same equilibrium up to symmetry)",
    "log_Uw": "common log real income of workers", "log_Um": "common log real expected income of managers",
    "Lm_k": BRANCH_COLUMNS["Lm_k"],
}


def openness_mask(N: int, upgraded: int | None = None) -> np.ndarray:
    """(N, N) array: 1 for the pairs that get openness Delta (all pairs if ``upgraded`` is None,
    else those involving city ``upgraded``, 0-based), 0 for the pairs kept at autarky."""
    if upgraded is None:
        return np.ones((N, N))
    m = np.zeros((N, N))
    m[upgraded, :] = 1.0
    m[:, upgraded] = 1.0
    return m


def _with_mask(p: jt.Params, D, mask) -> jt.Params:
    """``p`` with tau from :func:`jiao_tian.tau_from_openness`: openness D on the pairs of
    ``mask``, :data:`BASE_OPENNESS` on the others (as ``tau_from_openness(N, theta, D, c)``);
    ``mask`` is an array argument, so one compiled function serves every experiment."""
    N = mask.shape[-1]
    tau = mask * jt.tau_from_openness(N, p.theta, D) + (1 - mask) * jt.tau_from_openness(N, p.theta, BASE_OPENNESS)
    return eqx.tree_at(lambda q: q.tau, p, tau)


def openness_setter(N: int, upgraded: int | None = None) -> Callable[[jt.Params, Any], jt.Params]:
    """``(params, Delta) -> params`` with tau from :func:`jiao_tian.tau_from_openness` (traceable
    in Delta): all pairs at openness Delta (``upgraded=None``) or only the pairs involving city
    ``upgraded`` (0-based), the others at autarky."""
    mask = jnp.asarray(openness_mask(N, upgraded))

    def with_D(p, D):
        return _with_mask(p, D, mask)
    return with_D


# Residuals in (y, Delta, (params, mask)) at module level: pseudo_arclength and multistart
# compile once per function object, so these are compiled once per process and shape.
def _res_masked(y, D, a):
    p, mask = a
    return jt.residual(y, _with_mask(p, D, mask))


def _jac_masked(y, D, a):
    p, mask = a
    return jt.jacobian(y, _with_mask(p, D, mask))


def _fixed_D_residual(y, p):
    return jt.residual(y, p)


def _fixed_D_jacobian(y, p):
    return jt.jacobian(y, p)


def random_starts(params: jt.Params, m: int, seed: int = 0, *, wage_sd: float = 0.5,
                  concentration: float = 0.7, min_share: float = 1e-6) -> np.ndarray:
    """``m`` random starting points ``y`` (shape (m, 2N+2)): log wages = autarky wages + N(0, wage_sd²),
    manager shares ~ Dirichlet(concentration) (floored at ``min_share``), utility levels the
    means of the implied ones."""
    N = params.T.shape[-1]
    rng = np.random.default_rng(seed)
    a = np.asarray(jt.autarky(params))
    lw = a[None, :N] + rng.normal(0.0, wage_sd, (m, N))
    sh = np.maximum(rng.dirichlet(np.full(N, concentration), size=m), min_share)
    lLm = np.log(sh * float(params.Lm_total))
    lUw, lUm = _mean_utilities(params, jnp.asarray(lw), jnp.asarray(lLm))
    return np.concatenate([lw, lLm, np.asarray(lUw)[:, None], np.asarray(lUm)[:, None]], axis=1)


@jax.jit
def _mean_utilities(params, lw, lLm):
    o = jax.vmap(lambda w, L: jt.equilibrium_objects(params, w, L))(jnp.exp(lw), jnp.exp(lLm))
    return jnp.mean(o.log_Uw, axis=1), jnp.mean(o.log_Um, axis=1)


@dataclasses.dataclass(repr=False)
class AlongPoint(Result):
    """One equilibrium at one grid value of Delta.

    ``branch``: the traced branch it lies on (0 = from autarky), or -1 when only the random
    multi-start found it. ``index``: sign det(dF/dy) relative to the autarky equilibrium
    (+1 as autarky; -1 across an odd number of folds). ``stability``: ``"unstable"``
    (index -1, see the module docstring), ``"autarky-type"`` (index +1: stability not ruled
    out) or ``"singular"``. ``min_share``: smallest L^m_n / L^m; ``empty``: 1-based cities
    with a share below the degenerate threshold; ``share_focus``: L^m/(L^m+L^p) of the focus
    city; ``copies``: relabellings of identical cities found.
    """

    Delta: float
    branch: int
    index: int
    stability: str
    status: str
    residual: float
    sigma_min: float
    degenerate: bool
    min_share: float
    empty: list
    share_focus: float
    Lm: np.ndarray
    log_Uw: float
    log_Um: float
    y: np.ndarray
    copies: int = 1
    message: str = ""
    _dict_exclude = ("y",)

    @property
    def kind(self) -> str:
        return "degenerate" if self.degenerate else "interior"

    def summary(self) -> str:
        kind = f"degenerate (cities {self.empty} almost without managers)" if self.degenerate else "interior"
        where = "random multi-start" if self.branch < 0 else f"branch {self.branch}"
        return (f"Delta = {self.Delta:.4g}: {kind}, {where}, index {self.index:+d} ({self.stability}), "
                f"status {self.status}, residual {self.residual:.1e}, min L^m share {self.min_share:.3g}, "
                f"skill share of the focus city {self.share_focus:.4f}")


class EquilibriaAlong(Result):
    """The result of :func:`equilibria_along` (the result protocol of :mod:`spatialjax.results`).

    ``grid``: the Delta values; ``points[k]``: the :class:`results.Equilibria` at ``grid[k]``
    (items :class:`AlongPoint`, interior ones first); ``branches``: the traced
    :class:`continuation.Branch` objects; ``branch_Lm``/``branch_Lp``/``branch_index``: L^m,
    L^p (shape (m, N)) and the index at their points; ``folds``: Delta at their folds.

    ``status``: ``"successful"`` when every grid point has at least one equilibrium (interior
    or degenerate, each explained in its message) and every branch point solves the
    equations to ``tol_branch``; ``"incomplete"`` otherwise (``message`` says where).
    """

    def __init__(self, grid, points, branches, branch_Lm, branch_Lp, branch_index, folds, focus, info,
                 tol_branch, label=""):
        self.grid = np.asarray(grid, dtype=float)
        self.points = list(points)
        self.branches = list(branches)
        self.branch_Lm, self.branch_Lp, self.branch_index = list(branch_Lm), list(branch_Lp), list(branch_index)
        self.folds = sorted(float(f) for f in folds)
        self.focus = int(focus)
        self.info = dict(info)
        self.label = label
        self.tol_branch = float(tol_branch)

    def _problems(self) -> list[str]:
        bad_branch = [i for i, b in enumerate(self.branches) if not np.max(b.residual) <= self.tol_branch]
        none = [float(D) for D, e in zip(self.grid, self.points) if e.status == "no_solution"]
        problems = []
        if none:
            problems.append(f"no equilibrium found at Delta = {', '.join(f'{d:.4g}' for d in none)}")
        if bad_branch:
            problems.append(f"branch(es) {bad_branch} have points that do not solve the equations to "
                            f"{self.tol_branch:g}")
        return problems

    @property
    def status(self) -> str:
        return "incomplete" if self._problems() else "successful"

    @property
    def message(self) -> str:
        return "; ".join(self._problems())

    @property
    def residual(self) -> float:
        r = [e.residual for e in self.points if len(e)]
        return float(np.nanmax(r)) if r else float("nan")

    @property
    def counts(self) -> list[int]:
        """Number of equilibria found (interior and degenerate) at each grid point."""
        return [len(e) for e in self.points]

    @property
    def interior_counts(self) -> list[int]:
        return [sum(not q.degenerate for q in e) for e in self.points]

    @property
    def point_statuses(self) -> list[str]:
        return [e.status for e in self.points]

    def table(self):
        """One row per grid point and equilibrium (a grid point with none gets one row with
        empty cells and its status), as a pandas DataFrame; columns in :data:`EQUILIBRIUM_COLUMNS`."""
        import pandas as pd

        rows = []
        N = self.info["N"]
        for D, e in zip(self.grid, self.points):
            common = {"experiment": self.label, "focus_city": self.focus + 1, "Delta": float(D),
                      "point_status": e.status}
            if not len(e):
                rows.append({**common, "kind": "", "branch": None, "index": None, "stability": "", "status": "",
                             "residual": np.nan, "sigma_min": np.nan, "min_share": np.nan, "empty_cities": "",
                             "skill_share": np.nan, "copies": None, "log_Uw": np.nan, "log_Um": np.nan,
                             **{f"Lm_{i + 1}": np.nan for i in range(N)}})
            for q in e:
                rows.append({**common, "kind": q.kind, "branch": q.branch, "index": q.index,
                             "stability": q.stability, "status": q.status, "residual": q.residual,
                             "sigma_min": q.sigma_min, "min_share": q.min_share,
                             "empty_cities": " ".join(str(c) for c in q.empty), "skill_share": q.share_focus,
                             "copies": q.copies, "log_Uw": q.log_Uw, "log_Um": q.log_Um,
                             **{f"Lm_{i + 1}": float(q.Lm[i]) for i in range(N)}})
        df = pd.DataFrame(rows)
        for c in ("branch", "index", "copies"):
            df[c] = df[c].astype("Int64")
        return df

    def branch_table(self):
        """The traced branches point by point; columns in :data:`BRANCH_COLUMNS`."""
        import pandas as pd

        frames = []
        for bi, (br, Lm, Lp, ix) in enumerate(zip(self.branches, self.branch_Lm, self.branch_Lp, self.branch_index)):
            frames.append(pd.DataFrame({"experiment": self.label, "focus_city": self.focus + 1, "branch": bi,
                                        "Delta": br.lam, "residual": br.residual, "index": ix.astype(int),
                                        "skill_share": (Lm / (Lm + Lp))[:, self.focus],
                                        **{f"Lm_{i + 1}": Lm[:, i] for i in range(Lm.shape[1])}}))
        return pd.concat(frames, ignore_index=True)

    def summary(self, max_listed: int = 6) -> str:
        from spatialjax.tables import format_table

        rows = []
        for D, e in zip(self.grid, self.points):
            inner = [q for q in e if not q.degenerate]
            show = inner or list(e)
            limit = max_listed if inner else min(3, max_listed)
            cells = [("" if inner else "d ") + _share(q.share_focus) + ("" if q.branch < 0 else f" (b{q.branch})")
                     + {1: "", -1: " [unstable]", 0: " [singular]"}[q.index] for q in show[:limit]]
            if len(show) > limit:
                cells.append(f"... {len(show) - limit} more")
            rows.append((self.label, float(D), len(inner), len(e) - len(inner), e.status, ", ".join(cells) or "-"))
        info = self.info
        notes = [f"{self.label}: {len(self.branches)} branch(es) traced; folds at Delta = "
                 f"{', '.join(f'{x:.4f}' for x in self.folds) or 'none'}; {info['n_starts']} random starts "
                 f"per grid point besides the branch crossings (a search: equilibria it misses are not counted); "
                 f"equilibria counted up to relabelling identical cities",
                 f"degenerate = some city holds less than {info['degenerate_share']:g} of the managers "
                 f"('d' = listed only when no interior one was found); (bK) = on traced branch K; [unstable] = "
                 f"index -1, an odd number of folds from autarky"]
        notes += [f"Delta = {D:.4g}: {e.message}" for D, e in zip(self.grid, self.points) if e.status != "successful"]
        if self.message:
            notes.append(f"status {self.status}: {self.message}")
        return format_table(["experiment", "Delta", "# interior", "# degenerate", "status",
                             f"skill share of City {self.focus + 1} in each equilibrium"],
                            rows, title=f"Jiao-Tian equilibria along ICT openness Delta ({self.label})", notes=notes)

    def to_dict(self) -> dict:
        return json_safe({"status": self.status, "converged": self.converged, "message": self.message,
                          "residual": self.residual, "experiment": self.label, "focus_city": self.focus + 1,
                          "grid": self.grid, "folds_Delta": self.folds, "branches": len(self.branches),
                          "branch_points": int(sum(len(b.lam) for b in self.branches)),
                          "counts": self.counts, "interior_counts": self.interior_counts,
                          "point_statuses": self.point_statuses, "info": self.info,
                          "points": [e.to_dict() for e in self.points]})


def _share(x: float) -> str:
    return f"{x:.4f}" if x >= 1e-3 else f"{x:.2g}"


def _levels_one(l, y, a):
    p, mask = a
    N = p.T.shape[-1]
    o = jt.equilibrium_objects(_with_mask(p, l, mask), jnp.exp(y[:N]), jnp.exp(y[N:2 * N]))
    return o.Lm, o.Lp


_levels_batch = jax.jit(jax.vmap(_levels_one, in_axes=(0, 0, None)))


def _levels(a, lams, ys, pad_to: int):
    """L^m and L^p (shape (m, N)) at the branch points (one compiled evaluation of fixed size)."""
    m = len(lams)
    k = max(pad_to, m)
    lp = np.concatenate([lams, np.full(k - m, lams[-1])])
    yp = np.concatenate([ys, np.repeat(ys[-1:], k - m, axis=0)])
    Lm, Lp = _levels_batch(jnp.asarray(lp), jnp.asarray(yp), a)
    return np.asarray(Lm)[:m], np.asarray(Lp)[:m]


def _crossings(br: Branch, D: float) -> list[np.ndarray]:
    """Secant starts at every crossing of the branch with Delta = D."""
    lam = br.lam
    d = lam - D
    out = []
    for k in np.flatnonzero(d[:-1] * d[1:] <= 0):
        den = lam[k + 1] - lam[k]
        w = (D - lam[k]) / den if den != 0 else 0.0
        out.append(br.y[k] + w * (br.y[k + 1] - br.y[k]))
    return out


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ParameterError(name, f"must be an integer >= {lo}; got {v!r}")


def _check_pos(name, v, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not np.isfinite(v) or v <= 0 \
            or (hi is not None and v >= hi):
        raise ParameterError(name, f"must be a number in (0, {hi if hi is not None else 'inf'}); got {v!r}")


def equilibria_along(economy: jt.Params, grid: Sequence[float], *, upgraded: int | None = None,
                     params_fn: Callable[[jt.Params, Any], jt.Params] | None = None, focus: int | None = None,
                     arclength_steps: int = 250, ds: float = 0.02, n_starts: int = 64, seed: int = 0,
                     degenerate_share: float = 1e-3, tol: float = 1e-10, tol_branch: float = 1e-8,
                     dedupe_tol: float = 1e-6, max_branches: int = 4, label: str = "",
                     progress: Callable | None = None) -> EquilibriaAlong:
    """All equilibria found along the openness grid (algorithm in the module docstring).

    Args:
        economy: :class:`jiao_tian.Params` (its tau is replaced by the openness at each Delta).
        grid: strictly increasing Delta values (>= 0); the branches are traced over [grid[0], grid[-1]].
        upgraded: 0-based city whose pairs get openness Delta (None: all pairs; the others stay
            at :data:`BASE_OPENNESS`), used when ``params_fn`` is None.
        params_fn: optional ``(params, Delta) -> params``, traceable in Delta (pseudo-arclength
            differentiates through it); compiled anew on every call.
        focus: city (0-based) whose skill share is reported; default ``upgraded`` or 0.
        arclength_steps, ds: pseudo-arclength steps per branch and initial step length.
        n_starts: random starts at every grid point besides the branch crossings (0: branches only).
        seed: seed of the random starts (grid point k uses ``seed + 7919 k``).
        degenerate_share: an equilibrium with a manager share L^m_n / L^m below this is degenerate.
        tol: residual tolerance of the polishing solves; ``tol_branch`` that of branch points.
        dedupe_tol: max-norm distance in ``y`` below which two roots are one.
        max_branches: at most this many branches traced down from the top of the grid.
        progress: optional ``callable(iterable) -> iterable`` (e.g. tqdm) over the grid.

    Returns:
        :class:`EquilibriaAlong`.
    """
    if not isinstance(economy, jt.Params):
        raise ParameterError("economy", f"must be a jiao_tian.Params; got {type(economy).__name__}")
    jt.validate(economy)
    grid = np.asarray(grid, dtype=float)
    if grid.ndim != 1 or grid.size < 2:
        raise ParameterError("grid", f"must be a 1-d sequence of at least 2 Delta values; got shape {grid.shape}")
    if not np.all(np.isfinite(grid)) or np.any(grid < 0) or np.any(np.diff(grid) <= 0):
        raise ParameterError("grid", "Delta values must be finite, >= 0 and strictly increasing")
    N = int(economy.T.shape[-1])
    for name, v in (("upgraded", upgraded), ("focus", focus)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < N):
            raise ParameterError(name, f"must be a city index in [0, {N - 1}] or None; got {v!r}")
    _check_int("arclength_steps", arclength_steps, 1)
    _check_int("n_starts", n_starts, 0)
    _check_int("seed", seed, 0)
    _check_int("max_branches", max_branches, 0)
    _check_pos("degenerate_share", degenerate_share, 1.0)
    for name, v in (("ds", ds), ("tol", tol), ("tol_branch", tol_branch), ("dedupe_tol", dedupe_tol)):
        _check_pos(name, v)
    if params_fn is None:
        a = (economy, jnp.asarray(openness_mask(N, upgraded)))
        fn, jac_fn = _res_masked, _jac_masked

        def with_D(p, D):
            return _with_mask(p, D, a[1])
    else:
        a, with_D = economy, params_fn

        def fn(y, D, p):
            return jt.residual(y, params_fn(p, D))

        def jac_fn(y, D, p):
            return jt.jacobian(y, params_fn(p, D))
    focus = int(focus if focus is not None else (upgraded if upgraded is not None else 0))
    lo, hi = float(grid[0]), float(grid[-1])
    lam_min, lam_max = lo - 1e-3 * (hi - lo), hi + 1e-9
    width = BATCH

    def solve_many(y0s, pD):
        """Newton from every row of ``y0s`` in batches of ``width`` rows (one compiled shape)."""
        y0s = np.asarray(y0s)
        vals, names = [], []
        for s in range(0, len(y0s), width):
            chunk = y0s[s:s + width]
            pad = np.concatenate([chunk, np.repeat(chunk[-1:], width - len(chunk), axis=0)])
            _, _, res = multistart(_fixed_D_residual, jnp.asarray(pad), pD, tol=tol, jac=_fixed_D_jacobian,
                                   dedupe_tol=dedupe_tol)
            vals.append(np.asarray(res.value)[:len(chunk)])
            names += list(res.status)[:len(chunk)]
        return np.concatenate(vals), names

    # 1. branches: from autarky upwards, then from the equilibria at the top reachable from it
    p_lo, p_hi = with_D(economy, lo), with_D(economy, hi)
    jt.validate(p_lo)
    jt.validate(p_hi)
    branches = [pseudo_arclength(fn, jt.autarky(p_lo), a, lo, ds=ds, n_steps=arclength_steps,
                                 lam_min=lam_min, lam_max=lam_max, jac=jac_fn)]
    b0 = branches[0]
    starts = list(b0.y[:: max(1, len(b0.lam) // 16)])
    n_b0 = len(starts)
    if n_starts:
        starts += list(random_starts(p_hi, n_starts, seed=seed + 104729))
    vals, names = solve_many(starts, p_hi)
    d_hi = _diagnostics(vals, p_hi, width)
    groups_hi = symmetry_groups(economy, with_D, hi)
    seen = [_canonical(u, np.exp(u[N:2 * N]), groups_hi, N) for u in _crossings(b0, hi)]
    tops: list[np.ndarray] = []
    for i, (v, s_) in enumerate(zip(vals, names)):
        if s_ != "successful" or not np.all(np.isfinite(v)):
            continue
        if i >= n_b0 and np.min(d_hi["Lm"][i]) / float(economy.Lm_total) < degenerate_share:
            continue  # random starts: only interior equilibria start a branch
        key = _canonical(v, d_hi["Lm"][i], groups_hi, N)
        if any(np.max(np.abs(key - u)) < 1e-3 for u in seen):  # branch 0's own top, or a relabelled duplicate
            continue
        seen.append(key)
        tops.append(v)
    for r in tops[:max_branches]:
        branches.append(pseudo_arclength(fn, r, a, hi, ds=ds, n_steps=arclength_steps, direction=-1.0,
                                         lam_min=lam_min, lam_max=lam_max, jac=jac_fn))
    folds = [f[0] for br in branches for f in br.folds]
    sign0 = float(b0.det_sign[0]) or 1.0
    pad_levels = 128 * -(-(arclength_steps + 1) // 128)  # few distinct shapes: few compilations
    levels = [_levels(a, br.lam, br.y, pad_levels) if params_fn is None else _levels_fn(with_D, economy, br)
              for br in branches]

    # 2.-3. equilibria at each grid point: branch crossings and random starts
    groups = groups_hi
    points = []
    it = progress(list(enumerate(grid))) if progress is not None else enumerate(grid)
    for k, D in it:
        pD = with_D(economy, float(D))
        cross = [(bi, y) for bi, br in enumerate(branches) for y in _crossings(br, float(D))]
        y0s = [y for _, y in cross]
        if n_starts:
            y0s += list(random_starts(pD, n_starts, seed=seed + 7919 * k))
        if not y0s:
            y0s = [np.asarray(jt.autarky(pD))]
        origin = [bi for bi, _ in cross] + [-1] * (len(y0s) - len(cross))
        vals, names = solve_many(y0s, pD)
        ok = np.array([s_ in ("successful", "singular") for s_ in names]) & np.all(np.isfinite(vals), axis=1)
        d = _diagnostics(vals, pD, width)
        found, items = [], []
        for i in np.flatnonzero(ok):
            key = _canonical(vals[i], d["Lm"][i], groups, N)
            for q, kq in zip(items, found):
                if np.max(np.abs(key - kq)) < dedupe_tol * (1 + np.max(np.abs(kq))):
                    q.copies += int(not any(np.max(np.abs(vals[i] - yy)) < dedupe_tol for yy in q._ys))
                    q._ys.append(vals[i])
                    if q.branch < 0 <= origin[i]:
                        q.branch = origin[i]
                    break
            else:
                found.append(key)
                items.append(_point(float(D), origin[i], names[i], d, i, vals[i], sign0, degenerate_share, focus,
                                    float(economy.Lm_total)))
                items[-1]._ys = [vals[i]]
        for q in items:
            del q._ys
        items.sort(key=lambda q: (q.degenerate, q.branch if q.branch >= 0 else 99, q.share_focus))
        status, msg = _classify(items, len(cross), n_starts, int(np.sum(ok)), len(y0s), degenerate_share,
                                float(economy.Lm_total), d, ok)
        points.append(Equilibria(items, status=status, message=msg, info={"Delta": float(D)},
                                 title=f"Jiao-Tian equilibria at Delta = {float(D):.4g}"))
    info = {"N": N, "upgraded": None if upgraded is None else int(upgraded) + 1, "focus_city": focus + 1,
            "n_starts": n_starts, "seed": seed, "degenerate_share": degenerate_share,
            "arclength_steps": arclength_steps, "ds": ds, "max_branches": max_branches, "tol": tol, "dedupe_tol": dedupe_tol,
            "symmetry_groups": [[c + 1 for c in g] for g in groups]}
    return EquilibriaAlong(grid, points, branches, [L for L, _ in levels], [P for _, P in levels],
                           [np.sign(br.det_sign) * sign0 for br in branches], folds, focus, info, tol_branch,
                           label=label)


def _levels_fn(with_D, economy, br):
    N = economy.T.shape[-1]
    Lm, Lp = [], []
    for l, y in zip(br.lam, br.y):
        o = jt.equilibrium_objects(with_D(economy, float(l)), jnp.exp(y[:N]), jnp.exp(y[N:2 * N]))
        Lm.append(np.asarray(o.Lm))
        Lp.append(np.asarray(o.Lp))
    return np.array(Lm), np.array(Lp)


def _cities(cs) -> str:
    cs = list(cs)
    return ("City " if len(cs) == 1 else "cities ") + ", ".join(str(c) for c in cs)


def _classify(items, n_cross, n_starts, n_conv, n_solved, degenerate_share, Lm_total, d, ok):
    """Status and message of one grid point from the distinct equilibria found."""
    evidence = (f"{n_cross} branch crossing(s) and {n_starts} random start(s) solved, {n_conv} of {n_solved} "
                f"converged")
    n_int = sum(not q.degenerate for q in items)
    if n_int:
        return "successful", (f"{n_int} interior and {len(items) - n_int} degenerate equilibria (up to relabelling "
                              f"identical cities) from {evidence}")
    if items:
        patterns = []
        for q in items:
            full = [i + 1 for i in np.flatnonzero(q.Lm / Lm_total > 1 - degenerate_share * (len(q.Lm) - 1))]
            txt = (f"all managers in City {full[0]}" if full else f"{_cities(q.empty)} without managers")
            if txt not in patterns:
                patterns.append(txt)
        shown = "; ".join(patterns[:4]) + (f"; and {len(patterns) - 4} more patterns" if len(patterns) > 4 else "")
        smallest = min(items, key=lambda q: q.min_share)
        return "degenerate", (f"only degenerate equilibria: {len(items)} found (up to relabelling identical cities), "
                              f"each with a city holding less than {degenerate_share:g} of the managers ({shown}; "
                              f"smallest share {smallest.min_share:.2g}); no interior equilibrium from {evidence}")
    return "no_solution", f"no equilibrium found from {evidence}"


@jax.jit
def _diag_batch(ys, p):
    def one(y):
        N = p.T.shape[-1]
        o = jt.equilibrium_objects(p, jnp.exp(y[:N]), jnp.exp(y[N:2 * N]))
        J = jt.jacobian(y, p)
        sv = jnp.linalg.svd(J, compute_uv=False)
        sgn, _ = jnp.linalg.slogdet(J)
        return {"Lm": o.Lm, "Lp": o.Lp, "residual": jnp.max(jnp.abs(jt.residual(y, p))), "sigma_min": sv[-1],
                "det_sign": sgn}
    return jax.vmap(one)(ys)


def _diagnostics(vals, p, width):
    """L^m, L^p, residual, sigma_min and sign det J at every row of ``vals`` (batches of ``width``)."""
    safe = np.where(np.isfinite(vals), vals, 0.0)
    out: dict[str, list] = {}
    for s in range(0, len(safe), width):
        chunk = safe[s:s + width]
        pad = np.concatenate([chunk, np.repeat(chunk[-1:], width - len(chunk), axis=0)])
        for k, v in _diag_batch(jnp.asarray(pad), p).items():
            out.setdefault(k, []).append(np.asarray(v)[:len(chunk)])
    return {k: np.concatenate(v) for k, v in out.items()}


def symmetry_groups(params: jt.Params, with_D, D: float) -> list[list[int]]:
    """Classes of interchangeable cities (0-based): same T_n and H_n, and swapping the two
    leaves tau (at openness ``D``) unchanged. Equilibria that differ by such a relabelling are one."""
    p = with_D(params, D)
    T, H, tau = np.asarray(p.T), np.asarray(p.H), np.asarray(p.tau)
    N = T.shape[0]
    groups: list[list[int]] = []
    for i in range(N):
        for g in groups:
            j = g[0]
            perm = np.arange(N)
            perm[[i, j]] = perm[[j, i]]
            if T[i] == T[j] and H[i] == H[j] and np.array_equal(tau[np.ix_(perm, perm)], tau):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _canonical(y, Lm, groups, N):
    """``y`` with the cities of each symmetry group sorted by L^m (a key equal for relabellings)."""
    order = np.arange(N)
    for g in groups:
        g = np.asarray(g)
        order[g] = g[np.argsort(Lm[g], kind="stable")]
    return np.concatenate([y[:N][order], y[N:2 * N][order], y[2 * N:]])


def _point(D, branch, status, d, i, y, sign0, degenerate_share, focus, Lm_total) -> AlongPoint:
    Lm, Lp = d["Lm"][i], d["Lp"][i]
    N = Lm.shape[0]
    share = Lm / Lm_total
    sgn = float(d["det_sign"][i])
    singular = status == "singular" or sgn == 0
    index = 0 if singular else int(np.sign(sgn) * sign0)
    stability = "singular" if singular else ("autarky-type" if index > 0 else "unstable")
    empty = [int(j) + 1 for j in np.flatnonzero(share < degenerate_share)]
    return AlongPoint(Delta=D, branch=int(branch), index=index, stability=stability, status=str(status),
                      residual=float(d["residual"][i]), sigma_min=float(d["sigma_min"][i]), degenerate=bool(empty),
                      min_share=float(share.min()), empty=empty, share_focus=float(Lm[focus] / (Lm[focus] + Lp[focus])),
                      Lm=np.asarray(Lm), log_Uw=float(y[2 * N]), log_Um=float(y[2 * N + 1]), y=np.asarray(y))
