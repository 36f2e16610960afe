"""Sweeps of Jiao-Tian counterfactuals as one computation: every city's internet upgrade.

Jiao & Tian (2024), the Figure 3 experiment (one city's ICT openness raised, all else fixed)
run for each of the N cities of a calibrated economy: scenario ``c`` raises q_c by ``dq``, and
by (29)-(30)

    log tau'_nc = log tau_nc + delta^I (q'_n q'_c - q_n q_c),   n != c,

i.e. only row c and column c of log tau change (by delta^I dq q_k): a *rank-two* change of
log tau (pairs at the bound tau_nc = 1, e.g. clipped by a calibration, stay there, as in
``jiao_tian_counterfactuals.welfare_gradient``).

Solver (:func:`upgrade_each_city`): each scenario is a warm start from the baseline
equilibrium y0 (``jt.Solution.y``), and the baseline's factorised Jacobian J0
(``jt.schur_jacobian``: one Schur-complement LU, computed once) is reused across *all*
scenarios as the fixed matrix of a chord iteration

    y_{k+1} = y_k - J0^{-1} F(y_k; tau_c)                                              (chord)

(F is ``jt.residual`` with the scenario's log openness, eqs. (8), (9), (13), (14), (16)-(19)).
One chord step costs one residual evaluation (a few N x N passes) and one solve with J0
(triangular solves and N x N products, batched across scenarios as matrix-matrix products);
a Newton step costs a Jacobian (an N^3 product) and an LU. The chord iteration contracts
with rate about ||I - J0^{-1} J_c||, small for a one-city shock. It is stopped when the
residual ratio |F_{k+1}| / |F_k| exceeds ``rho_max`` (not contracting), is non-finite, or
after ``max_chord`` steps; such a scenario is re-solved by the full Newton solve (``jt.solve``
warm from the best chord iterate, with its own conditioning diagnostic), and reported with
that solve's status: a scenario that fails is reported, never dropped.

Regularity. A converged chord iteration with observed contraction rate rho < 1 implies that
J0^{-1} J_c is close to the identity (spectral radius of I - J0^{-1} J_c about rho), so J_c
is regular whenever J0 is: sigma_min(J_c) >~ (1 - rho) sigma_min(J0) as a heuristic bound (the
spectral radius is not a norm). Near a fold J_c loses rank, the rate tends to 1, the chord
stops on ``rho_max`` and the Newton solve's sigma_min check reports ``singular``: a fold does
not pass silently.

Outputs per scenario: status, max-norm residual, iterations (chord + Newton), the chord's
last contraction ratio, the welfare changes of workers and managers (log U_w, log U_m of
(14), (16); in log points, 100 Delta log U, and percent), and the skill-share slope: the
OLS slope of the change in the high-skill share L^m_n / (L^m_n + L^p_n) on log baseline
city size (the Table 7 statistic of ``jiao_tian_counterfactuals``, here counterfactual minus
baseline). Two linear answers come with it: the first chord step (one solve with J0 from the
baseline) and, when a welfare-gradient map is given, the first-order prediction
d log U / d q_c * dq of ``jiao_tian_counterfactuals.welfare_gradient``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import spatialjax  # noqa: F401  (x64)
from spatialjax import atomic
from spatialjax.errors import ParameterError
from spatialjax.models import jiao_tian as jt
from spatialjax.results import Result, check_status
from spatialjax.sweep import gather, stack, sweep
from spatialjax.tables import format_table

__all__ = ["UpgradeSweep", "upgrade_each_city", "upgrade_each_city_from_baseline", "upgrade_loop",
           "upgrade_params", "upgrade_log_openness", "chord_solve", "ChordResult", "write_parquet", "write_csv",
           "parquet_engine", "CHORD_STATUS"]

F64 = jnp.float64

#: chord iteration codes -> status names of ``spatialjax.results.STATUSES``
CHORD_STATUS = {0: "max_steps_reached", 1: "successful", 2: "stalled", 3: "nonfinite"}
_RUN, _OK, _NOCONTRACT, _NONFIN = -1, 1, 2, 3


# ---------------------------------------------------------------------------------------
# Scenario construction
# ---------------------------------------------------------------------------------------


def _free_pairs(tau):
    """Pairs whose log tau responds to q (log tau_nc > 0, off the diagonal), as 0/1 floats."""
    logtau = jnp.log(tau)
    N = tau.shape[-1]
    return ((logtau > 0) & (jnp.eye(N) == 0)).astype(tau.dtype)


def _dlogtau(city, dq, q, delta_I, free):
    """Delta log tau of raising q_city by dq: delta^I dq q_k in row and column ``city`` (eq. 29-30)."""
    N = q.shape[0]
    e = jax.nn.one_hot(city, N, dtype=q.dtype)
    v = delta_I * dq * q
    return (e[:, None] * v[None, :] + v[:, None] * e[None, :]) * free


def upgrade_log_openness(params: jt.Params, city, dq, q, delta_I):
    """log Delta_nc = -theta log tau'_nc (n != c, 0 on the diagonal) of the upgrade of ``city``
    by ``dq`` (traceable in ``city`` and ``dq``); the argument ``logD`` of ``jt.residual``."""
    N = params.tau.shape[-1]
    logtau = jnp.log(params.tau) + _dlogtau(city, dq, jnp.asarray(q, F64), delta_I, _free_pairs(params.tau))
    return (-params.theta * logtau) * (1 - jnp.eye(N, dtype=logtau.dtype))


def upgrade_params(params: jt.Params, city: int, dq: float, q, delta_I: float) -> jt.Params:
    """The :class:`jt.Params` of the upgrade of ``city`` by ``dq`` (tau changed in row and column ``city``)."""
    tau = params.tau * jnp.exp(_dlogtau(city, dq, jnp.asarray(q, F64), delta_I, _free_pairs(params.tau)))
    return eqx.tree_at(lambda p: p.tau, params, tau)


# ---------------------------------------------------------------------------------------
# The chord iteration (one scenario; vmapped / mapped by spatialjax.sweep)
# ---------------------------------------------------------------------------------------


class ChordResult(eqx.Module):
    """Result of :func:`chord_solve` (batched under ``vmap``): ``value`` y (2N+2,), ``code``
    (:data:`CHORD_STATUS`), ``residual`` max-norm at ``value``, ``steps``, ``rate`` (last ratio
    |F_{k+1}| / |F_k|), ``first_step`` (log U_w, log U_m after one chord step: a linear answer)."""

    value: jax.Array
    code: jax.Array
    residual: jax.Array
    steps: jax.Array
    rate: jax.Array
    first_step: jax.Array

    @property
    def converged(self):
        return self.code == _OK


def chord_solve(F, y0, lin, *, tol: float = 1e-10, max_steps: int = 40, rho_max: float = 0.7) -> ChordResult:
    """Chord iteration y <- y - J0^{-1} F(y) with a fixed factorised matrix ``lin`` (any
    ``spatialjax.solver.Linearization``; here the baseline's Schur Jacobian). Pure JAX (one
    ``while_loop``), so it vmaps. Stops at max|F| <= ``tol`` (code 1), on a residual ratio above
    ``rho_max`` (2: not contracting), on non-finite values (3) or after ``max_steps`` (0).
    ``value`` is the iterate with the smallest residual."""
    n = y0.shape[0]
    f0 = F(y0)
    n0 = jnp.max(jnp.abs(f0))
    code0 = jnp.where(~jnp.isfinite(n0), _NONFIN, jnp.where(n0 <= tol, _OK, _RUN)).astype(jnp.int32)
    u0 = y0[n - 2:]

    def cond(c):
        return c[4] == _RUN

    def body(c):
        y, f, nrm, k, code, rate, yb, nb, u1 = c
        y1 = y + lin.solve(-f)
        f1 = F(y1)
        n1 = jnp.max(jnp.abs(f1))
        fin = jnp.isfinite(n1) & jnp.all(jnp.isfinite(y1))
        n1 = jnp.where(fin, n1, jnp.inf)
        ratio = n1 / nrm
        better = n1 < nb
        yb = jnp.where(better, y1, yb)
        nb = jnp.where(better, n1, nb)
        u1 = jnp.where(k == 0, jnp.where(fin, y1[n - 2:], jnp.nan), u1)
        k1 = k + 1
        code = jnp.where(~fin, _NONFIN, jnp.where(n1 <= tol, _OK, jnp.where(
            ratio > rho_max, _NOCONTRACT, jnp.where(k1 >= max_steps, 0, _RUN)))).astype(jnp.int32)
        return y1, f1, n1, k1, code, ratio, yb, nb, u1

    init = (y0, f0, n0, jnp.asarray(0, jnp.int32), code0, jnp.asarray(0.0, F64), y0, n0, u0)
    _, _, _, k, code, rate, yb, nb, u1 = jax.lax.while_loop(cond, body, init)
    return ChordResult(value=yb, code=code, residual=nb, steps=k, rate=rate, first_step=u1)


def _slope(yv, xv):
    xc = xv - jnp.mean(xv)
    return jnp.sum(xc * (yv - jnp.mean(yv))) / jnp.sum(xc * xc)


def _outcomes(params, y, logD):
    N = params.T.shape[-1]
    o = jt.equilibrium_objects(params, jnp.exp(y[:N]), jnp.exp(y[N:2 * N]), 1.0, logD)
    return o.Lm / (o.Lm + o.Lp)


def _scenario(sc, sh):
    """One upgrade scenario (``sc``: city, dq) given the shared baseline (``sh``)."""
    p = sh["params"]
    logD = upgrade_log_openness(p, sc["city"], sc["dq"], sh["q"], sh["delta_I"])
    r = chord_solve(lambda y: jt.residual(y, p, 1.0, logD), sh["y0"], sh["lin"], tol=sh["tol"],
                    max_steps=sh["max_steps"], rho_max=sh["rho_max"])
    skill = _outcomes(p, r.value, logD)
    slope = _slope(skill - sh["skill0"], sh["log_size0"])
    return dict(chord=r, skill_share_slope=slope)


_CONFIG_FIELDS = ("tol", "max_steps", "rho_max")


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class UpgradeSweep(Result):
    """Every city's upgrade: one row per scenario in ``frame`` (pandas), never a dropped scenario.

    Columns: ``city`` (0-based index), ``name``, ``lat``, ``lon``, ``population`` (baseline
    L^m + L^p), ``q`` (baseline), ``dq``, ``status`` (a name of ``spatialjax.results.STATUSES``),
    ``converged``, ``method`` ("chord": the chord iteration converged; "newton": re-solved by
    ``jt.solve``; "none": not re-solved), ``residual`` (max-norm), ``iterations`` (chord +
    Newton), ``chord_iterations``, ``newton_iterations``, ``chord_status``, ``contraction``
    (the chord's last residual ratio), ``dlogUw``/``dlogUm`` (100 Delta log U, log points),
    ``workers_pct``/``managers_pct`` ((exp(Delta log U) - 1) 100), ``skill_share_slope``,
    ``chord1_workers_pct``/``chord1_managers_pct`` (after one chord step from the baseline), and,
    with a welfare-gradient map, ``linear_workers_pct``/``linear_managers_pct`` (first order:
    100 (exp(d log U/d q_c dq) - 1)).
    """

    frame: pd.DataFrame
    status: str
    residual: float
    message: str = ""
    timings: dict = dataclasses.field(default_factory=dict)
    info: dict = dataclasses.field(default_factory=dict)
    values: np.ndarray | None = None  # (B, 2N+2) solved y per scenario (NaN rows where none)

    _dict_exclude = ("frame", "values")

    @property
    def failed(self) -> pd.DataFrame:
        return self.frame[~self.frame["converged"]]

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["scenarios"] = json_records(self.frame)
        return d

    def summary(self, max_rows: int = 10) -> str:
        df = self.frame
        ok = df[df["converged"]]
        top = ok.sort_values("workers_pct", ascending=False).head(max_rows)
        rows = [(int(r.city), str(r.name)[:24], r.dq, r.workers_pct, r.managers_pct, r.skill_share_slope,
                 r.method, int(r.iterations)) for r in top.itertuples()]
        counts = df["status"].value_counts().to_dict()
        methods = df["method"].value_counts().to_dict()
        notes = [f"status: {self.status}; {len(df)} scenarios; statuses: "
                 + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                 + "; methods: " + ", ".join(f"{k}: {v}" for k, v in sorted(methods.items())),
                 f"max-norm residual (converged scenarios) {self.residual:.2e}; chord iterations: median "
                 f"{float(np.median(df['chord_iterations'])):.0f}, max {int(df['chord_iterations'].max())}"]
        if self.timings:
            notes.append("seconds: " + ", ".join(f"{k} {v:.3g}" for k, v in self.timings.items()))
        bad = df[~df["converged"]]
        if len(bad):
            notes.append("failed: " + ", ".join(f"{int(r.city)} ({r.status})" for r in bad.head(20).itertuples())
                         + (" ..." if len(bad) > 20 else ""))
        if self.message:
            notes.append(self.message)
        return format_table(["city", "name", "dq", "workers %", "managers %", "skill slope", "method", "iter."],
                            rows, title="Every city's internet upgrade (largest workers' gains first)", notes=notes)

    def write_csv(self, path):
        """Write the table to ``path`` (CSV, atomically); returns the path."""
        return write_csv(self.frame, path)

    def write_parquet(self, path):
        """Write the table to ``path`` (Parquet, atomically); see :func:`write_parquet`."""
        return write_parquet(self.frame, path)


def json_records(df: pd.DataFrame) -> list[dict]:
    from spatialjax.results import json_safe

    return json_safe(df.to_dict(orient="records"))


def write_csv(df: pd.DataFrame, path):
    """The tidy table as CSV (atomic write)."""
    return atomic.write_frame(path, df)


def parquet_engine() -> str | None:
    """The installed Parquet engine for pandas (``"pyarrow"`` or ``"fastparquet"``), or None."""
    for name in ("pyarrow", "fastparquet"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def write_parquet(df: pd.DataFrame, path):
    """The tidy table as Parquet (atomic write). Needs pyarrow (a dependency of spatialjax) or
    fastparquet; without either, raises RuntimeError saying so (write CSV instead)."""
    eng = parquet_engine()
    if eng is None:
        raise RuntimeError("writing Parquet needs a Parquet engine for pandas, and neither pyarrow nor fastparquet "
                           "is installed: `pip install pyarrow` (listed in spatialjax's dependencies), or use "
                           "write_csv")
    return atomic.write_frame(path, df, engine=eng)


# ---------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------


def _check_inputs(params, baseline, dq, q, delta_I, cities):
    if not isinstance(params, jt.Params):
        raise ParameterError("params", f"must be a jiao_tian.Params; got {type(params).__name__}")
    if not isinstance(baseline, jt.Solution):
        raise ParameterError("baseline", f"must be the baseline jiao_tian.Solution (from jt.solve); got "
                                         f"{type(baseline).__name__}")
    N = params.N
    if baseline.w.shape != (N,):
        raise ParameterError("baseline", f"is a solution with {baseline.w.shape[-1]} cities; params have N = {N}")
    if not bool(baseline.converged):
        raise ParameterError("baseline", f"must be a converged, regular equilibrium; its status is "
                                         f"{baseline.status!r} (residual {float(baseline.residual):.2e})")
    q = np.asarray(q, dtype=float)
    if q.shape != (N,) or not np.all(np.isfinite(q)):
        raise ParameterError("q", f"must be a finite array of shape ({N},) (baseline internet quality); got "
                                  f"shape {q.shape}")
    if not (np.ndim(delta_I) == 0 and np.isfinite(float(delta_I))):
        raise ParameterError("delta_I", f"must be a finite scalar; got {delta_I!r}")
    cities = np.arange(N) if cities is None else np.asarray(cities)
    if cities.ndim != 1 or cities.size == 0 or not np.issubdtype(cities.dtype, np.integer):
        raise ParameterError("cities", "must be a non-empty 1-d sequence of integer city indices")
    if np.any((cities < 0) | (cities >= N)):
        raise ParameterError("cities", f"city indices must lie in 0..{N - 1}; got {cities[(cities < 0) | (cities >= N)][:3]}")
    dq = np.broadcast_to(np.asarray(dq, dtype=float), cities.shape).copy()
    return q, float(delta_I), cities, dq


def _shared(params, baseline, q, delta_I, tol, max_steps, rho_max):
    p = jt.Params(**{f: jnp.asarray(getattr(params, f), F64) for f in
                     ("alpha", "beta", "theta", "gamma", "T", "tau", "H", "Lm_total", "Lp_total")})
    N = p.N
    logD0 = (-p.theta * jnp.log(p.tau)) * (1 - jnp.eye(N))
    lin = _baseline_jacobian(baseline.y, p, logD0)
    skill0 = baseline.Lm / (baseline.Lm + baseline.Lp)
    return dict(params=p, y0=baseline.y, lin=lin, q=jnp.asarray(q, F64), delta_I=jnp.asarray(delta_I, F64),
                skill0=skill0, log_size0=jnp.log(baseline.Lm + baseline.Lp), tol=jnp.asarray(tol, F64),
                max_steps=jnp.asarray(max_steps, jnp.int32), rho_max=jnp.asarray(rho_max, F64))


@eqx.filter_jit
def _baseline_jacobian(y, p, logD):
    return jt.schur_jacobian(y, p, 1.0, logD)


def _pct(d):
    return (np.exp(d) - 1.0) * 100.0


def upgrade_each_city(params: jt.Params, baseline: jt.Solution, dq, *, q, delta_I: float, cities=None,
                      tol: float = 1e-10, max_chord: int = 40, rho_max: float = 0.7, polish: bool = True,
                      polish_max_steps: int = 50,
                      batch_size: int | None = 64, devices=None, inner: str = "auto",
                      map_batch_size: int | None = None, order: str = "given", gradient=None,
                      names=None, lat=None, lon=None, progress: bool = False) -> UpgradeSweep:
    """Every city's internet upgrade (the Figure 3 experiment for each city), batched.

    Args:
        params: the calibrated :class:`jt.Params` of the baseline.
        baseline: its converged equilibrium (:class:`jt.Solution`).
        dq: the rise in q_c (scalar, or one per scenario).
        q: baseline internet quality q_n, shape (N,).
        delta_I: internet elasticity of (29).
        cities: scenario cities (0-based; default all N, in order).
        tol: max-norm residual tolerance (logs), as ``jt.solve``.
        max_chord, rho_max: chord iteration limits (module docstring).
        polish: re-solve the scenarios whose chord iteration did not converge with ``jt.solve``
            (warm from the best chord iterate, at most ``polish_max_steps`` Newton steps, the
            default of ``jt.solve``);
            ``False`` reports them with the chord's status.
        batch_size, devices, inner, map_batch_size: passed to :func:`spatialjax.sweep.sweep`
            (chunks bound memory: a scenario holds a few N x N arrays).
        order: ``"given"`` or ``"difficulty"``: chunk the scenarios sorted by a predicted
            number of chord iterations (|F(y0; tau_c)|, one residual per scenario), so that a
            vmapped chunk's while-loop does not wait for one slow scenario (results are
            returned in the given order either way).
        gradient: optional ``jiao_tian_counterfactuals.WelfareGradientResult`` at this baseline:
            adds the first-order prediction columns.
        names, lat, lon: optional city labels and coordinates for the table and the map.
        progress: tqdm bar over the chunks.

    Returns:
        :class:`UpgradeSweep` (status "successful" if every scenario converged, else
        "incomplete" with the failures listed in the table).
    """
    q, delta_I, cities, dq = _check_inputs(params, baseline, dq, q, delta_I, cities)
    if order not in ("given", "difficulty"):
        raise ParameterError("order", f"must be 'given' or 'difficulty'; got {order!r}")
    N = params.N
    t0 = time.perf_counter()
    sh = _shared(params, baseline, q, delta_I, tol, max_chord, rho_max)
    # tau must stay >= 1 (Params): a rise that pushes a free pair below 1 is reported, not solved
    logtau0 = np.log(np.asarray(params.tau))
    free = np.asarray(_free_pairs(params.tau))
    row_min = np.array([np.min(np.where(free[c] > 0, logtau0[c] + delta_I * d * q, np.inf)) for c, d in zip(cities, dq)])
    col_min = np.array([np.min(np.where(free[:, c] > 0, logtau0[:, c] + delta_I * d * q, np.inf))
                        for c, d in zip(cities, dq)])
    admissible = (np.minimum(row_min, col_min) >= 0) & np.isfinite(dq)
    perm = np.arange(len(cities))
    t_pred = 0.0
    if order == "difficulty":
        tp = time.perf_counter()
        pred = np.asarray(_initial_residuals(stack_scen(cities, dq), sh))
        perm = np.argsort(np.where(np.isfinite(pred), pred, np.inf), kind="stable")
        t_pred = time.perf_counter() - tp
    batched = stack_scen(cities[perm], dq[perm])
    res = sweep(_scenario, batched, shared=sh, batch_size=batch_size, devices=devices, inner=inner,
                map_batch_size=map_batch_size, progress=progress)
    jax.block_until_ready(res.values)
    t_sweep = time.perf_counter() - t0
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    vals = gather(res.values)  # whole batch on the host (all-gathered in a multi-process run)
    ch = jax.tree.map(lambda x: np.asarray(x)[inv], vals["chord"])
    slope = np.asarray(vals["skill_share_slope"])[inv]

    B = len(cities)
    code = np.asarray(ch.code)
    Y = np.array(ch.value, dtype=float)
    resid = np.array(ch.residual, dtype=float)
    chord_it = np.asarray(ch.steps, dtype=int)
    newton_it = np.zeros(B, dtype=int)
    chord_status = [CHORD_STATUS[int(c)] for c in code]
    status = list(chord_status)
    method = ["chord" if c == _OK else "none" for c in code]
    messages = ["" for _ in range(B)]
    for i in np.flatnonzero(~admissible):
        status[i], method[i] = "rejected", "none"
        messages[i] = "tau < 1 after the upgrade (dq too large for (29))"
        Y[i], resid[i], slope[i] = np.nan, np.nan, np.nan
    t1 = time.perf_counter()
    base_skill = np.asarray(sh["skill0"])
    log_size0 = np.log(np.asarray(baseline.Lm + baseline.Lp))
    if polish:
        for i in np.flatnonzero((code != _OK) & admissible):
            pc = upgrade_params(params, int(cities[i]), float(dq[i]), q, delta_I)
            start = Y[i] if np.all(np.isfinite(Y[i])) else np.asarray(baseline.y)
            s = jt.solve(pc, jnp.asarray(start), tol=tol, max_steps=polish_max_steps)
            newton_it[i] = int(s.steps)
            method[i] = "newton"
            status[i] = check_status(s.status)
            resid[i] = float(s.residual)
            Y[i] = np.asarray(s.y)
            sk = np.asarray(s.skill_share)
            slope[i] = float(np.polyfit(log_size0, sk - base_skill, 1)[0]) if np.all(np.isfinite(sk)) else np.nan
    t_polish = time.perf_counter() - t1

    y0 = np.asarray(baseline.y)
    dUw = Y[:, 2 * N] - y0[2 * N]
    dUm = Y[:, 2 * N + 1] - y0[2 * N + 1]
    u1 = np.asarray(ch.first_step, dtype=float)
    conv = np.array([s == "successful" for s in status])
    df = pd.DataFrame(dict(
        city=cities.astype(int),
        name=[str(names[c]) for c in cities] if names is not None else [f"city {int(c)}" for c in cities],
        lat=np.asarray(lat, float)[cities] if lat is not None else np.nan,
        lon=np.asarray(lon, float)[cities] if lon is not None else np.nan,
        population=np.asarray(baseline.Lm + baseline.Lp)[cities], q=q[cities], dq=dq,
        status=status, converged=conv, method=method, residual=resid, iterations=chord_it + newton_it,
        chord_iterations=chord_it, newton_iterations=newton_it, chord_status=chord_status,
        contraction=np.asarray(ch.rate, dtype=float), dlogUw=100 * dUw, dlogUm=100 * dUm, workers_pct=_pct(dUw),
        managers_pct=_pct(dUm), skill_share_slope=slope,
        chord1_workers_pct=_pct(u1[:, 0] - y0[2 * N]), chord1_managers_pct=_pct(u1[:, 1] - y0[2 * N + 1]),
        message=messages))
    if gradient is not None:
        gw = np.asarray(gradient.d_logUw_dq)[cities]
        gm = np.asarray(gradient.d_logUm_dq)[cities]
        df["linear_workers_pct"] = _pct(gw * dq)
        df["linear_managers_pct"] = _pct(gm * dq)
    n_fail = int((~conv).sum())
    ok_res = resid[conv]
    st = "successful" if n_fail == 0 else "incomplete"
    msg = "" if n_fail == 0 else f"{n_fail} of {B} scenarios did not converge (listed in the table with their status)"
    timings = dict(total=time.perf_counter() - t0, sweep=t_sweep, polish=t_polish)
    if order == "difficulty":
        timings["predict"] = t_pred
    info = dict(N=N, scenarios=B, chord_converged=int((code == _OK).sum()), polished=int((np.array(method) == "newton").sum()),
                failed=n_fail, devices=res.n_devices, inner=res.inner, chunks=res.n_chunks, chunk_size=res.chunk_size,
                order=order, tol=tol, max_chord=max_chord, rho_max=rho_max)
    return UpgradeSweep(frame=df, status=st, residual=float(np.max(ok_res)) if ok_res.size else float("nan"),
                        message=msg, timings=timings, info=info, values=Y)


def stack_scen(cities, dq):
    return dict(city=jnp.asarray(np.asarray(cities), jnp.int32), dq=jnp.asarray(np.asarray(dq, float), F64))


@eqx.filter_jit
def _initial_residuals(batched, sh):
    p = sh["params"]

    def one(c, d):
        logD = upgrade_log_openness(p, c, d, sh["q"], sh["delta_I"])
        return jnp.max(jnp.abs(jt.residual(sh["y0"], p, 1.0, logD)))

    return jax.lax.map(lambda a: one(*a), (batched["city"], batched["dq"]))


def upgrade_loop(params: jt.Params, baseline: jt.Solution, dq, *, q, delta_I: float, cities=None,
                 tol: float = 1e-10) -> pd.DataFrame:
    """The reference: a Python loop of single warm ``jt.solve`` calls (one per city, from the
    baseline). Columns: city, status, residual, iterations, dlogUw, dlogUm, workers_pct,
    managers_pct, skill_share_slope, seconds; ``df.attrs["values"]`` holds the solved y (B, 2N+2)."""
    q, delta_I, cities, dq = _check_inputs(params, baseline, dq, q, delta_I, cities)
    N = params.N
    y0 = np.asarray(baseline.y)
    skill0 = np.asarray(baseline.Lm / (baseline.Lm + baseline.Lp))
    ls = np.log(np.asarray(baseline.Lm + baseline.Lp))
    rows, Y = [], []
    for c, d in zip(cities, dq):
        t = time.perf_counter()
        s = jt.solve(upgrade_params(params, int(c), float(d), q, delta_I), baseline, tol=tol)
        y = np.asarray(s.y)
        secs = time.perf_counter() - t
        dUw, dUm = y[2 * N] - y0[2 * N], y[2 * N + 1] - y0[2 * N + 1]
        sk = np.asarray(s.skill_share)
        rows.append(dict(city=int(c), status=s.status, residual=float(s.residual), iterations=int(s.steps),
                         dlogUw=100 * dUw, dlogUm=100 * dUm, workers_pct=_pct(dUw), managers_pct=_pct(dUm),
                         skill_share_slope=float(np.polyfit(ls, sk - skill0, 1)[0]), seconds=secs))
        Y.append(y)
    df = pd.DataFrame(rows)
    df.attrs["values"] = np.stack(Y)
    return df


def upgrade_each_city_from_baseline(b, dq, *, gradient: bool | Any = True, **kw) -> UpgradeSweep:
    """:func:`upgrade_each_city` on a ``jiao_tian_counterfactuals.Baseline`` (its params, solution,
    q, delta_I, names, lat, lon). ``gradient=True`` computes the welfare-gradient map
    (``welfare_gradient(b, fd_cities=0)``) for the first-order columns; pass a
    ``WelfareGradientResult`` to reuse one, or False to skip."""
    if gradient is True:
        from spatialjax.models import jiao_tian_counterfactuals as cf

        gradient = cf.welfare_gradient(b, fd_cities=0)
    elif gradient is False:
        gradient = None
    kw.setdefault("names", b.city_names())
    kw.setdefault("lat", b.lat)
    kw.setdefault("lon", b.lon)
    return upgrade_each_city(b.params, b.sol, dq, q=b.q, delta_I=b.delta_I, gradient=gradient, **kw)
