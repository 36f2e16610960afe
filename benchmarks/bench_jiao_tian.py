#!/usr/bin/env python
"""Benchmarks of the Jiao-Tian solver: warm and cold solves, welfare gradients, baselines.

Usage::

    python benchmarks/bench_jiao_tian.py --sizes 8 100 722 3000 --output benchmarks/results/jiao_tian_cpu.json
    python benchmarks/bench_jiao_tian.py --quick          # N = 8, 100, few repeats, short budgets;
                                                          # writes benchmarks/results/jiao_tian_quick_cpu.json
    python benchmarks/bench_jiao_tian.py --help

For every N, on the synthetic economy ``jt.synthetic_economy(N, seed)`` (Table 5 parameters,
known interior equilibrium ``y_true``), three phases run, each in its own subprocess (so
that peak memory is per phase and a slow phase can be cut off at a time budget):

* ``ours``: warm solve ``jt.solve(params, y0)`` from ``y0 = y_true + perturb * noise`` on
  (log w, log L^m): compile time (first call minus the steady-state median), median of
  ``--repeats`` runs, status, residual, distance ``max|y - y_true|``; the full welfare
  gradient ``jax.grad`` of ``log U_w + log U_m`` with respect to all of Params (theta, gamma,
  T, H, tau, ...) vs one solve; central finite differences over (theta, gamma, T, H)
  (2 + 2N parameters, 2 solves each; measured in full for N <= ``--fd-full-max``,
  otherwise timed on a sample and extrapolated); peak RSS and device memory.
* ``cold``: ``jt.solve(params)`` with no warm start (homotopy from autarky), under
  ``--cold-timeout``; distance to ``y_true``.
* ``baselines``: NumPy damped fixed point (damping grid), the paper's Appendix G
  iteration (aux x damping grid), ``scipy.optimize.root`` with a finite-difference
  Jacobian (skipped above ``--scipy-max-n``), all from the same ``y0``, tolerance 1e-10.

A method is "ok" only if it converged (max-norm residual <= tol) AND its distance to the
known equilibrium is <= ``--dist-tol``; converging to another equilibrium is reported as
"wrong_equilibrium" (a failure, never "fast"). Time ratios (baseline / ours) are reported
only where both are ok. Timings are wall-clock medians (``jax.block_until_ready``); on a
shared machine they are noisy.

The script is device-agnostic: it runs on whatever ``jax.devices()[0]`` is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULT_TAG = "BENCH_RESULT_JSON:"
QUICK_OUTPUT = HERE / "results" / "jiao_tian_quick_{device}.json"


def _device_kind() -> str:
    """'cpu' or 'gpu' from the installed jaxlib, without initialising JAX in this process."""
    import importlib.util

    return "gpu" if any(importlib.util.find_spec(m) for m in ("jax_cuda12_plugin", "jax_cuda13_plugin")) else "cpu"

GOALS = {
    "warm_722_s": 0.1,
    "warm_722_speedup_vs_damped": 10.0,
    "grad_over_solve": 3.0,
    "warm_3000_s": 3.0,
    "mem_3000_GiB": 4.0,
}


# ---------------------------------------------------------------------------------------
# helpers (child side)
# ---------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _peak_rss_bytes() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024  # Linux reports KiB


def _device_memory() -> dict | None:
    import jax

    try:
        st = jax.devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not available on every backend
        return None
    if not st:
        return None
    keep = ("peak_bytes_in_use", "bytes_in_use", "bytes_limit")
    return {k: int(v) for k, v in st.items() if k in keep}


def _economy(N: int, seed: int, perturb: float, lam: float = 1.0):
    import numpy as np

    from spatialjax.models import jiao_tian as jt

    params, y_true = jt.synthetic_economy(N, seed, lam=lam)
    y_true = np.asarray(y_true)
    rng = np.random.default_rng(seed + 1000)
    y0 = y_true.copy()
    y0[: 2 * N] += perturb * rng.standard_normal(2 * N)
    return params, y_true, y0


def _verdict(converged: bool, dist: float, dist_tol: float) -> str:
    """'ok' | 'not_converged' | 'wrong_equilibrium' (converged, but not to the known equilibrium)."""
    import math

    if not converged:
        return "not_converged"
    if not math.isfinite(dist) or dist > dist_tol:
        return "wrong_equilibrium"
    return "ok"


def _degenerate(min_Lm, Lm_total) -> bool | None:
    """A solution with a city holding < 1e-12 of all managers is degenerate (the degeneracy diagnostic of the solver benchmarks)."""
    if min_Lm is None:
        return None
    return bool(min_Lm < 1e-12 * float(Lm_total))


def _median(xs):
    import numpy as np

    return float(np.median(np.asarray(xs))) if xs else None


def _timed(fn, repeats: int, budget: float = float("inf")):
    """First call time, then up to ``repeats`` steady-state times (at least one; no new repeat once
    their total exceeds ``budget`` seconds); returns (first, [times], last_output)."""
    import jax

    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
        if sum(times) > budget:
            break
    return first, times, out


def _emit(d: dict) -> None:
    """Print a (partial) result; the parent keeps the last one (so a phase cut off by its
    time budget still reports what it measured)."""
    print(RESULT_TAG + json.dumps(d), flush=True)


# ---------------------------------------------------------------------------------------
# phases (each runs in a child process)
# ---------------------------------------------------------------------------------------


def phase_ours(a) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from spatialjax.models import jiao_tian as jt

    N = a.N
    params, y_true, y0 = _economy(N, a.seed, a.perturb, a.lam)
    # all leaves as float64 arrays so that jax.grad differentiates theta, gamma, ... too
    params = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params)
    y0j = jnp.asarray(y0)
    out: dict = {"N": N}

    _log(f"N={N} ours: warm solve (compile + {a.repeats} runs)")
    solve = lambda: jt.solve(params, y0j, tol=a.tol)  # noqa: E731
    first, times, sol = _timed(solve, a.repeats, a.repeat_budget)
    med = _median(times)
    dist = float(np.max(np.abs(np.asarray(sol.y) - y_true)))
    conv = bool(sol.converged)
    out["warm"] = dict(first_call_s=first, median_s=med, min_s=float(min(times)), times_s=times,
                       compile_s=first - med, status=str(sol.status), converged=conv,
                       residual=float(sol.residual), iterations=int(sol.steps), sigma_min=float(sol.sigma_min),
                       dist=dist, verdict=_verdict(conv, dist, a.dist_tol),
                       min_Lm=float(sol.min_Lm), degenerate=_degenerate(float(sol.min_Lm), params.Lm_total),
                       perturb=a.perturb, linear_solver="auto")
    out["peak_rss_bytes"] = _peak_rss_bytes()
    _emit(out)

    # (b) full welfare gradient w.r.t. all Params leaves
    def objective(p):
        s = jt.solve(p, y0j, tol=a.tol)
        uw, um = jt.welfare(p, s)
        return uw + um

    def objective_root(p):
        # The same computation as jt.solve's warm path (solve_root on jt.residual with the
        # analytic jt.jacobian), called directly: a workaround for jax.grad through jt.solve
        # failing with "No constant handler for type: DynamicJaxprTracer" (solve_root inside
        # eqx.filter_jit closes its custom_vjp over the traced y0).
        from spatialjax.solver import solve_root

        r = solve_root(lambda y, q: jt.residual(y, q), y0j, p, tol=a.tol, jac=lambda y, q: jt.jacobian(y, q))
        return r.value[2 * N] + r.value[2 * N + 1]

    _log(f"N={N} ours: welfare gradient (compile + {a.repeats} runs)")
    grad_path, grad_error = "jax.grad(jt.welfare o jt.solve)", None
    try:
        grad_fn = jax.jit(jax.grad(objective))
        gfirst, gtimes, g = _timed(lambda: grad_fn(params), a.repeats, a.repeat_budget)
    except Exception as e:  # noqa: BLE001 - reported in the JSON, then the equivalent path is timed
        grad_error = f"{type(e).__name__}: {str(e)[:300]}"
        _log(f"N={N} jax.grad through jt.solve failed ({grad_error}); timing solve_root directly")
        grad_path = "jax.grad(solve_root(jt.residual, jac=jt.jacobian)) [workaround]"
        grad_fn = jax.jit(jax.grad(objective_root))
        gfirst, gtimes, g = _timed(lambda: grad_fn(params), a.repeats, a.repeat_budget)
    gmed = _median(gtimes)
    # one forward solve through the same path as the gradient (plain jax.jit of solve_root), so that
    # the ratio is not dominated by jt.solve's dispatch overhead at small N
    from spatialjax.solver import solve_root

    fwd = jax.jit(lambda p: solve_root(lambda y, q: jt.residual(y, q), y0j, p, tol=a.tol,
                                       jac=lambda y, q: jt.jacobian(y, q)).value)
    _, ftimes, _ = _timed(lambda: fwd(params), a.repeats, a.repeat_budget)
    fmed = _median(ftimes)
    leaves = jax.tree_util.tree_leaves(g)
    finite = bool(all(np.all(np.isfinite(np.asarray(x))) for x in leaves))
    out["grad"] = dict(first_call_s=gfirst, median_s=gmed, min_s=float(min(gtimes)), times_s=gtimes, compile_s=gfirst - gmed,
                       finite=finite, ratio_to_solve=(gmed / med if med else None),
                       same_path_solve_median_s=fmed, ratio_to_same_path_solve=(gmed / fmed if fmed else None),
                       n_params=int(sum(np.size(x) for x in leaves)), path=grad_path,
                       jt_solve_grad_error=grad_error)
    out["peak_rss_bytes"] = _peak_rss_bytes()
    _emit(out)

    # (b') central finite differences over theta, gamma, T, H (2 + 2N parameters)
    names = [("theta", None), ("gamma", None)] + [("T", i) for i in range(N)] + [("H", i) for i in range(N)]
    full = N <= a.fd_full_max
    if full:
        sample = list(range(len(names)))
    else:
        rng = np.random.default_rng(0)
        sample = [0, 1] + sorted(rng.choice(np.arange(2, len(names)), size=max(a.fd_sample - 2, 1), replace=False).tolist())
    y_base = sol.y

    def bump(p, name, i, h):
        if i is None:
            return eqx.tree_at(lambda q: getattr(q, name), p, getattr(p, name) + h)
        return eqx.tree_at(lambda q: getattr(q, name), p, getattr(p, name).at[i].add(h))

    def value(p):
        s = jt.solve(p, y_base, tol=a.tol)
        return float(s.log_Uw + s.log_Um), bool(s.converged)

    _log(f"N={N} ours: finite differences on {len(sample)} of {len(names)} parameters")
    fd_vals, ad_vals, all_conv = [], [], True
    t = time.perf_counter()
    done = []
    for j in sample:
        if done and time.perf_counter() - t > a.fd_budget:
            break
        done.append(j)
        name, i = names[j]
        x = float(getattr(params, name) if i is None else getattr(params, name)[i])
        h = a.fd_rel_step * max(abs(x), 1e-3)
        fp, cp = value(bump(params, name, i, h))
        fm, cm = value(bump(params, name, i, -h))
        all_conv &= cp and cm
        fd_vals.append((fp - fm) / (2 * h))
        gv = getattr(g, name)
        ad_vals.append(float(gv if i is None else gv[i]))
    fd_time = time.perf_counter() - t
    fd_vals, ad_vals = np.asarray(fd_vals), np.asarray(ad_vals)
    scale = np.maximum(np.abs(fd_vals), 1e-8 * max(np.max(np.abs(fd_vals)), 1e-300))
    rel = np.abs(ad_vals - fd_vals) / scale
    out["fd"] = dict(n_params=len(names), n_params_timed=len(done), n_solves_timed=2 * len(done),
                     seconds_timed=fd_time, extrapolated=len(done) < len(names),
                     seconds_total=fd_time * len(names) / len(done),
                     all_solves_converged=bool(all_conv),
                     max_rel_diff_vs_grad=float(np.nanmax(rel)) if rel.size else None,
                     median_rel_diff_vs_grad=float(np.nanmedian(rel)) if rel.size else None,
                     rel_step=a.fd_rel_step)
    out["fd"]["ratio_to_grad"] = out["fd"]["seconds_total"] / gmed if gmed else None
    out["peak_rss_bytes"] = _peak_rss_bytes()
    out["device_memory"] = _device_memory()
    return out


def phase_cold(a) -> dict:
    import jax
    import numpy as np

    from spatialjax.models import jiao_tian as jt

    N = a.N
    params, y_true, _ = _economy(N, a.seed, a.perturb, a.lam)
    _log(f"N={N} cold start (first call includes compilation)")
    _emit({"N": N, "verdict": "timeout", "status": "timeout (no cold solve finished within the budget)",
           "timeout_s": a.cold_timeout})
    t = time.perf_counter()
    sol = jax.block_until_ready(jt.solve(params, tol=a.tol))
    first = time.perf_counter() - t
    second = None
    if first < a.cold_timeout / 3:
        t = time.perf_counter()
        sol = jax.block_until_ready(jt.solve(params, tol=a.tol))
        second = time.perf_counter() - t
    dist = float(np.max(np.abs(np.asarray(sol.y) - y_true)))
    conv = bool(sol.converged)
    return {"N": N, "first_call_s": first, "steady_s": second, "status": str(sol.status), "converged": conv,
            "residual": float(sol.residual), "iterations": int(sol.steps),
            "homotopy_reached": float(sol.homotopy_reached), "min_Lm": float(sol.min_Lm),
            "degenerate": _degenerate(float(sol.min_Lm), params.Lm_total), "dist": dist,
            "verdict": _verdict(conv, dist, a.dist_tol), "peak_rss_bytes": _peak_rss_bytes(),
            "device_memory": _device_memory()}


def _grid(a, N: int, prior: dict | None):
    """Damping / aux grids; above ``--grid-max-n`` only the best settings found at a smaller N."""
    damped = [dict(damping=d) for d in (0.05, 0.1, 0.2, 0.5)]
    appg = [dict(aux=x, damping=d) for x in (0.0, 10.0, 100.0) for d in (0.5, 1.0)]
    if a.quick:
        damped, appg = damped[1::2], appg[::3]
    if N > a.grid_max_n and prior:
        damped = [prior["damped"]] if prior.get("damped") else damped[:1]
        appg = [prior["appendix_g"]] if prior.get("appendix_g") else appg[:1]
    return damped, appg


def phase_baselines(a) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from benchmarks import baselines as B
    from spatialjax.models import jiao_tian as jt

    N = a.N
    params, y_true, y0 = _economy(N, a.seed, a.perturb, a.lam)
    q = B.np_params(params)
    prior = json.loads(a.prior) if a.prior else None
    damped_grid, appg_grid = _grid(a, N, prior)
    out: dict = {"N": N, "runs": []}

    def record(r, extra=None):
        dist = float(np.max(np.abs(r.y - y_true))) if r.y is not None else float("nan")
        d = dict(method=r.method, settings=r.settings, status=r.status, residual=r.residual,
                 iterations=r.iterations, seconds=r.seconds, dist=dist,
                 verdict=("timeout" if r.status == "timeout" else _verdict(r.converged, dist, a.dist_tol)),
                 min_Lm=float(np.exp(np.min(r.y[N:2 * N]))) if r.y is not None else None)
        d["degenerate"] = _degenerate(d["min_Lm"], q.Lm_total)
        d.update(extra or {})
        out["runs"].append(d)
        _log(f"N={N} {r.method} {r.settings}: {d['verdict']} ({r.status}), {r.seconds:.3g} s, "
             f"{r.iterations} it, resid {r.residual:.2e}, dist {dist:.3g}, degenerate {d['degenerate']}")

    for s in damped_grid:
        record(B.damped_fixed_point(q, y0, tol=a.tol, max_iter=a.max_iter, time_budget=a.baseline_budget, **s))
    for s in appg_grid:
        record(B.appendix_g(q, y0, tol=a.tol, max_iter=a.max_iter, time_budget=a.baseline_budget, **s))

    if N <= a.scipy_max_n:
        res_jit = jax.jit(lambda y: jt.residual(y, params))
        f = lambda y: np.asarray(res_jit(jnp.asarray(y)))  # noqa: E731
        f(y0)  # compile outside the timing
        maxfev = a.scipy_maxfev or 5 * (2 * N + 3)
        r = B.scipy_root(f, y0, method="hybr", tol=a.tol, maxfev=maxfev)
        record(r)
    else:
        out["scipy_skipped"] = (f"N = {N} > --scipy-max-n = {a.scipy_max_n}: a finite-difference Jacobian needs "
                                f"{2 * N + 2} residual evaluations of O(N^2) each per Jacobian")
        _log(f"N={N} scipy root skipped: {out['scipy_skipped']}")
    out["peak_rss_bytes"] = _peak_rss_bytes()
    return out


PHASES = {"ours": phase_ours, "cold": phase_cold, "baselines": phase_baselines}


# ---------------------------------------------------------------------------------------
# parent: orchestration, table, JSON
# ---------------------------------------------------------------------------------------


def _vm_hwm(pid: int) -> int | None:
    """Peak resident memory (VmHWM) of a running process, Linux only; None elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _run_child(a, phase: str, N: int, timeout: float, prior: dict | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", phase, "--_N", str(N)]
    for k in ("seed", "lam", "perturb", "tol", "repeats", "dist_tol", "fd_full_max", "fd_sample", "fd_rel_step",
              "fd_budget", "repeat_budget",
              "cold_timeout", "baseline_budget", "max_iter", "scipy_max_n", "scipy_maxfev", "grid_max_n"):
        if getattr(a, k) is not None:
            cmd += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
    if a.quick:
        cmd.append("--quick")
    if prior:
        cmd += ["--_prior", json.dumps(prior)]
    t = time.perf_counter()

    def last_result(stdout) -> dict | None:
        if isinstance(stdout, bytes):
            stdout = stdout.decode(errors="replace")
        found = None
        for line in (stdout or "").splitlines():
            if line.startswith(RESULT_TAG):
                found = json.loads(line[len(RESULT_TAG):])
        return found

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None if a.verbose else subprocess.PIPE,
                            text=True, cwd=str(ROOT))
    hwm = None
    try:
        # poll (rather than wait) so that the child's peak memory so far can be read if it times out
        while proc.poll() is None and time.perf_counter() - t < timeout:
            hwm = _vm_hwm(proc.pid) or hwm
            time.sleep(0.5)
        if proc.poll() is None:
            hwm = _vm_hwm(proc.pid) or hwm
            proc.kill()
            out, _ = proc.communicate()
            d = last_result(out) or {"N": N, "verdict": "timeout", "status": "timeout"}
            d["phase_timed_out"] = True
            d["phase_timeout_s"] = timeout
            d.setdefault("peak_rss_bytes", hwm)
            return d
        out, err_text = proc.communicate()
    except BaseException:
        proc.kill()
        raise

    class _CP:  # minimal stand-in for CompletedProcess
        stdout, stderr, returncode = out, err_text, proc.returncode

    cp = _CP()
    wall = time.perf_counter() - t
    d = last_result(cp.stdout)
    if d is not None and cp.returncode == 0:
        d["phase_wall_s"] = wall
        return d
    err = (cp.stderr or "")[-2000:] if cp.stderr is not None else ""
    d = d or {"N": N, "verdict": "error"}
    d.update(status_child=f"child exited with code {cp.returncode}", stderr_tail=err, phase_wall_s=wall)
    return d


def _best(runs: list[dict], method: str) -> dict | None:
    rs = [r for r in runs if r["method"] == method]
    if not rs:
        return None
    ok = [r for r in rs if r["verdict"] == "ok"]
    if ok:
        return dict(min(ok, key=lambda r: r["seconds"]))
    conv = [r for r in rs if r["verdict"] == "wrong_equilibrium"]
    pool = conv or rs
    return dict(min(pool, key=lambda r: r["seconds"]))


def _summarise_baselines(entry: dict) -> dict:
    """Best setting per baseline method and its time ratio to our warm solve (stored in ``entry``)."""
    d = entry.get("baselines", {})
    if "runs" not in d:
        return {}
    ours = entry.get("ours", {}).get("warm", {})
    ours_t = ours.get("median_s") if ours.get("verdict") == "ok" else None
    best = {}
    for m in ("damped_fixed_point", "appendix_g", "scipy_root_hybr"):
        b = _best(d["runs"], m)
        if b is None:
            continue
        b["ratio_vs_ours"] = (b["seconds"] / ours_t) if (ours_t and b["verdict"] == "ok") else None
        if b["ratio_vs_ours"] is None:
            b["ratio_note"] = ("our warm solve not ok" if not ours_t else f"baseline {b['verdict']}")
        best[m] = b
    entry["best_baselines"] = best
    return best


def _machine() -> dict:
    import jax

    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": getattr(d, "device_kind", None), "device_count": jax.device_count(),
            "jax_version": jax.__version__, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "machine": platform.machine(), "system": platform.system(), "processor": platform.processor(),
            "x64": bool(jax.config.jax_enable_x64)}


def _fmt(v, spec=".3g"):
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _table(results: dict) -> str:
    lines = []
    hdr = f"{'N':>5} {'method':<24} {'settings':<22} {'time[s]':>9} {'verdict':<18} {'resid':>8} {'dist':>8} {'ratio':>7}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for N, r in results["sizes"].items():
        ours = r.get("ours", {})
        w = ours.get("warm", {})
        c = r.get("cold", {})
        lines.append(f"{N:>5} {'ours cold (homotopy)':<24} {'':<22} {_fmt(c.get('first_call_s') or c.get('timeout_s')):>9} "
                     f"{c.get('verdict', '-'):<18} {_fmt(c.get('residual'), '.1e'):>8} {_fmt(c.get('dist'), '.1e'):>8} {'':>7}")
        if w:
            lines.append(f"{N:>5} {'ours warm':<24} {'median; compile ' + _fmt(w.get('compile_s'), '.2g') + 's':<22} "
                         f"{_fmt(w.get('median_s')):>9} {w.get('verdict', '-'):<18} {_fmt(w.get('residual'), '.1e'):>8} "
                         f"{_fmt(w.get('dist'), '.1e'):>8} {'1':>7}")
        elif ours:
            lines.append(f"{N:>5} {'ours warm':<24} {'':<22} {'-':>9} {ours.get('verdict', '-'):<18}")
        for b in r.get("best_baselines", {}).values():
            s = ",".join(f"{k}={v}" for k, v in b["settings"].items() if k in ("damping", "aux", "method"))
            v = b["verdict"] + (" (degen.)" if b.get("degenerate") and b["verdict"] != "ok" else "")
            lines.append(f"{N:>5} {b['method']:<24} {s:<22} {_fmt(b['seconds']):>9} {v:<18} "
                         f"{_fmt(b['residual'], '.1e'):>8} {_fmt(b['dist'], '.1e'):>8} {_fmt(b.get('ratio_vs_ours'), '.3g'):>7}")
        if r.get("baselines", {}).get("scipy_skipped"):
            lines.append(f"{N:>5} {'scipy_root_hybr':<24} skipped: FD Jacobian too costly at this N")
        g = ours.get("grad")
        if g:
            fd = ours.get("fd", {})
            lines.append(f"{N:>5} {'grad welfare (all)':<24} {'n=' + str(g.get('n_params')):<22} {_fmt(g['median_s']):>9} "
                         f"{'finite' if g['finite'] else 'NaN':<18} {'':>8} {'':>8} {_fmt(g.get('ratio_to_solve'), '.3g'):>7}")
            lines.append(f"{N:>5} {'central FD (th,g,T,H)':<24} "
                         f"{(str(fd.get('n_params')) + ' par' + (' extrap.' if fd.get('extrapolated') else '')):<22} "
                         f"{_fmt(fd.get('seconds_total')):>9} {'maxrel ' + _fmt(fd.get('max_rel_diff_vs_grad'), '.1e'):<18} "
                         f"{'':>8} {'':>8} {_fmt(fd.get('ratio_to_grad'), '.3g'):>7}")
        mem = ours.get("peak_rss_bytes")
        if mem:
            lines.append(f"{N:>5} {'peak RSS (ours/cold/base)':<24} "
                         f"{_fmt(mem / 2**20, '.0f')} / {_fmt((c.get('peak_rss_bytes') or 0) / 2**20, '.0f')} / "
                         f"{_fmt((r.get('baselines', {}).get('peak_rss_bytes') or 0) / 2**20, '.0f')} MiB")
        lines.append("")
    lines.append("ratio: baseline time / our warm time (only where both are 'ok'); for the gradient: grad time / "
                 "one warm solve; for FD: FD time / grad time.")
    lines.append("verdict 'ok' = converged (max-norm residual <= tol) and max|y - y_true| <= dist_tol; "
                 "'wrong_equilibrium' = converged elsewhere (a failure).")
    lines.append("Times are wall-clock medians on a possibly shared machine: noisy.")
    return "\n".join(lines)


def _goals(results: dict) -> list[dict]:
    """The issue's goals next to the measurements (``met`` is None where that N was not run)."""
    S = results["sizes"]
    out = []

    def get(N, *path):
        d = S.get(str(N))
        for p in path:
            if not isinstance(d, dict):
                return None
            d = d.get(p)
        return d

    if "722" in S:
        w, v = get(722, "ours", "warm", "median_s"), get(722, "ours", "warm", "verdict")
        out.append(dict(goal="N=722 warm solve <= 0.1 s", measured=w, verdict_of_solve=v,
                        met=bool(w is not None and v == "ok" and w <= GOALS["warm_722_s"])))
        dam = get(722, "best_baselines", "damped_fixed_point")
        ratio = dam.get("ratio_vs_ours") if dam else None
        out.append(dict(goal="N=722 warm solve >= 10x faster than the damped loop", measured=ratio,
                        note=None if ratio is not None else "no ratio: damped loop or our solver not 'ok'",
                        met=bool(ratio is not None and ratio >= GOALS["warm_722_speedup_vs_damped"])))
    else:
        out.append(dict(goal="N=722 goals", measured=None, met=None, note="N=722 not run"))
    for N in S:
        r = get(N, "ours", "grad", "ratio_to_solve")
        if r is not None:
            out.append(dict(goal=f"N={N} full welfare gradient <= 3x one solve", measured=r,
                            measured_vs_same_path_solve=get(N, "ours", "grad", "ratio_to_same_path_solve"),
                            grad_finite=get(N, "ours", "grad", "finite"),
                            met=bool(r <= GOALS["grad_over_solve"] and get(N, "ours", "grad", "finite"))))
    if "3000" in S:
        w, v = get(3000, "ours", "warm", "median_s"), get(3000, "ours", "warm", "verdict")
        m = get(3000, "ours", "peak_rss_bytes")
        out.append(dict(goal="N=3000 warm solve <= 3 s within 4 GiB", measured=w,
                        peak_rss_GiB=(m / 2**30 if m else None), verdict_of_solve=v,
                        met=bool(w is not None and v == "ok" and w <= GOALS["warm_3000_s"] and m is not None
                                 and m <= GOALS["mem_3000_GiB"] * 2**30)))
    else:
        out.append(dict(goal="N=3000 goal", measured=None, met=None, note="N=3000 not run"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Phases run in subprocesses; see the module docstring.")
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 100, 722, 3000], help="numbers of cities N")
    ap.add_argument("--output", "-o", type=Path, default=None,
                    help="JSON output file (default: print only; with --quick "
                         "benchmarks/results/jiao_tian_quick_<device>.json)")
    ap.add_argument("--quick", action="store_true", help="small run: N = 8, 100 (unless --sizes given), 2 repeats, "
                                                         "reduced grids and budgets")
    ap.add_argument("--phases", nargs="+", default=["ours", "cold", "baselines"], choices=list(PHASES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lam", type=float, default=1.0,
                    help="common pair cost lambda of (29) in jt.synthetic_economy (sets how integrated the economy is)")
    ap.add_argument("--perturb", type=float, default=0.01, help="std of the noise on log w, log L^m of the warm start")
    ap.add_argument("--tol", type=float, default=1e-10, help="max-norm residual tolerance, all methods")
    ap.add_argument("--dist-tol", type=float, default=1e-6, help="max|y - y_true| for a solve to count as 'ok'")
    ap.add_argument("--repeats", type=int, default=7, help="steady-state repeats (median reported)")
    ap.add_argument("--fd-full-max", type=int, default=100, help="full central FD up to this N, sample above")
    ap.add_argument("--fd-sample", type=int, default=6, help="number of parameters timed for FD above --fd-full-max")
    ap.add_argument("--fd-rel-step", type=float, default=1e-5)
    ap.add_argument("--fd-budget", type=float, default=60.0,
                    help="stop timing FD solves after this many seconds (at least one parameter) and extrapolate")
    ap.add_argument("--repeat-budget", type=float, default=30.0,
                    help="no further steady-state repeat once the repeats took this many seconds (at least one)")
    ap.add_argument("--cold-timeout", type=float, default=180.0, help="time budget [s] of the cold-start phase")
    ap.add_argument("--ours-timeout", type=float, default=400.0, help="time budget [s] of the 'ours' phase")
    ap.add_argument("--baselines-timeout", type=float, default=400.0, help="time budget [s] of the baselines phase")
    ap.add_argument("--baseline-budget", type=float, default=10.0, help="time budget [s] per baseline run")
    ap.add_argument("--max-iter", type=int, default=20000, help="iteration cap of the fixed-point baselines")
    ap.add_argument("--scipy-max-n", type=int, default=722, help="skip scipy root (FD Jacobian) above this N")
    ap.add_argument("--scipy-maxfev", type=int, default=None,
                    help="residual evaluations allowed to scipy root (default 5 (2N+3): a few FD Jacobians)")
    ap.add_argument("--grid-max-n", type=int, default=722,
                    help="above this N the baselines only use the best settings found at smaller N")
    ap.add_argument("--update", action="store_true",
                    help="merge into an existing --output file (replace only the phases run now)")
    ap.add_argument("--verbose", "-v", action="store_true", help="show the children's progress log")
    ap.add_argument("--_child", choices=list(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--_N", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--_prior", type=str, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.N, a.prior = a._N, a._prior

    if a._child:
        sys.path.insert(0, str(ROOT))
        import spatialjax  # noqa: F401  (x64 on)

        _emit(PHASES[a._child](a))
        return 0

    if a.quick:
        if a.output is None:
            a.output = QUICK_OUTPUT.with_name(QUICK_OUTPUT.name.format(device=_device_kind()))
        if "--sizes" not in (argv if argv is not None else sys.argv[1:]):
            a.sizes = [8, 100]
        a.repeats = min(a.repeats, 2)
        a.baseline_budget = min(a.baseline_budget, 5.0)
        a.cold_timeout = min(a.cold_timeout, 120.0)

    from tqdm import tqdm

    sys.path.insert(0, str(ROOT))
    results: dict = {"benchmark": "jiao_tian", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "machine": _machine(), "goals": GOALS,
                     "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()
                                  if not k.startswith("_") and k not in ("N", "prior")},
                     "sizes": {}}
    if a.update and a.output and a.output.exists():
        old = json.loads(a.output.read_text())
        results["sizes"] = old.get("sizes", {})
        results["previous_runs"] = old.get("previous_runs", []) + [
            {k: old.get(k) for k in ("created", "settings", "total_wall_s")}]
    jobs = [(N, ph) for N in sorted(a.sizes) for ph in a.phases]
    prior = None
    t_all = time.perf_counter()
    bar = tqdm(jobs, desc="bench", unit="phase", file=sys.stderr)
    for N, ph in bar:
        bar.set_postfix_str(f"N={N} {ph}")
        timeout = {"ours": a.ours_timeout, "cold": a.cold_timeout, "baselines": a.baselines_timeout}[ph]
        d = _run_child(a, ph, N, timeout, prior if ph == "baselines" else None)
        entry = results["sizes"].setdefault(str(N), {"N": N})
        entry[ph] = d
        if ph == "baselines" and "runs" in d:
            best = _summarise_baselines(entry)
            if N <= a.grid_max_n:
                prior = {m: best[m]["settings"] for m in ("damped_fixed_point", "appendix_g") if m in best}
                prior = {"damped": {"damping": prior["damped_fixed_point"]["damping"]} if "damped_fixed_point" in prior else None,
                         "appendix_g": ({k: prior["appendix_g"][k] for k in ("aux", "damping")}
                                        if "appendix_g" in prior else None)}
        if a.output:  # write partial results as we go
            a.output.parent.mkdir(parents=True, exist_ok=True)
            results["total_wall_s"] = time.perf_counter() - t_all
            a.output.write_text(json.dumps(results, indent=1, default=str))
    bar.close()
    for entry in results["sizes"].values():  # ratios again (with --update, "ours" may be newer)
        _summarise_baselines(entry)
    results["total_wall_s"] = time.perf_counter() - t_all
    results["goal_report"] = _goals(results)
    print(_table(results))
    print("\nGoals (not tested):")
    for g in results["goal_report"]:
        met = "not run" if g["met"] is None else ("MET" if g["met"] else "not met")
        print(f"  - {g['goal']}: measured {_fmt(g.get('measured'))} -> {met}"
              + (f" ({g['note']})" if g.get("note") else "")
              + (f" [our solve: {g['verdict_of_solve']}]" if g.get("verdict_of_solve") not in (None, "ok") else "")
              + (f", peak RSS {g['peak_rss_GiB']:.2f} GiB" if g.get("peak_rss_GiB") else ""))
    if a.output:
        a.output.write_text(json.dumps(results, indent=1, default=str))
        print(f"\nwrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
