#!/usr/bin/env python
"""Benchmarks of the Oh (2025) inverse problem and estimation (issue 11, section 5).

Usage::

    python benchmarks/bench_oh.py --output benchmarks/results/oh_cpu.json
    python benchmarks/bench_oh.py --quick            # fewer repeats, no full estimation

Measured in one process, on the shipped US stand-in (20 bins, Table 1's parameters):

* ``inverse_solve``: compile time (first call minus the steady median), warm median of
  ``oh.solve_inverse`` from its own initial guess and from a warm start (``z0`` of the baseline
  perturbed by 1e-3), residual and Newton steps.
* ``baseline_scipy``: ``scipy.optimize.root(method="hybr")`` (MINPACK, finite-difference
  Jacobian) on the same 61 residuals (the jitted residual function wrapped in NumPy), same
  start: time, residual, and the ratio to ours.
* ``gradient``: ``jax.grad`` of the estimation objective ``(m(Θ) − m̂)' W (m(Θ) − m̂)`` with
  respect to all 48 parameters of Θ (implicit differentiation through the solve) against
  one solve, and against central finite differences over the 48 parameters (96 solves):
  time ratio and max relative difference.
* ``moment_jacobian``: the 50 × 48 moment Jacobian G by ``jax.jacrev`` (as the estimator uses
  it) against central finite differences (96 solves).
* ``estimation`` (skipped with ``--quick``): one full minimum-distance estimation, exactly
  ``spatialjax calibrate calibration/oh_us2017.toml`` (Θ of 48, Levenberg–Marquardt via
  ``spatialjax.gmm``, report and figures included): wall time including compilation, iterations.

Timings are wall-clock medians (``jax.block_until_ready``) on whatever ``jax.devices()[0]`` is;
on the shared 2-core machine they are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _median_time(f, repeats):
    ts = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=str(HERE / "results" / "oh_cpu.json"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.repeats = 5

    import jax
    import jax.numpy as jnp
    import numpy as np
    from scipy.optimize import root

    import spatialjax
    from spatialjax import atomic
    from spatialjax.models.oh import estimation as est
    from spatialjax.models.oh import quantitative as q

    prof, P, _ = est.load_standin("us")
    n = 20
    out = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                       "device": str(jax.devices()[0]), "jax": jax.__version__,
                       "spatialjax": spatialjax.__version__}, "bins": n}

    def solve(z0=None):
        r = q.solve_inverse(P, prof.L, prof.u, w1=prof.w1, t_h=prof.t_h, tau_w=prof.tau_w, z0=z0)
        jax.block_until_ready(r.x)
        return r

    t0 = time.perf_counter()
    r0 = solve()
    first = time.perf_counter() - t0
    med, r = _median_time(solve, a.repeats)
    z_warm = r0.z * (1 + 1e-3 * jnp.sin(jnp.arange(r0.z.shape[0])))
    solve(z_warm)
    med_w, rw = _median_time(lambda: solve(z_warm), a.repeats)
    out["inverse_solve"] = {"compile_s": first - med, "cold_start_median_s": med, "warm_start_median_s": med_w,
                            "residual": float(r.residual), "steps_cold": int(r.solve.steps),
                            "steps_warm": int(rw.solve.steps), "status": r.status, "goal_s": 0.05}

    # Baseline: MINPACK hybr with a finite-difference Jacobian on the same residuals.
    d = q._Data(p=P, L=prof.L, u=prof.u, w1=prof.w1, t_h=prof.t_h, tau_w=prof.tau_w, mix=0.5)
    F = jax.jit(q._residual)
    z_init = q._initial_guess(d)
    F(z_init, d).block_until_ready()

    def scipy_solve():
        return root(lambda z: np.asarray(F(jnp.asarray(z), d)), np.asarray(z_init), method="hybr", tol=1e-14)

    med_s, sol = _median_time(scipy_solve, max(3, a.repeats // 4))
    res_s = float(np.max(np.abs(np.asarray(F(jnp.asarray(sol.x), d)))))
    ok_s = res_s <= 1e-10 and float(np.max(np.abs(sol.x - np.asarray(r.z)))) <= 1e-8
    out["baseline_scipy"] = {"median_s": med_s, "residual": res_s, "nfev": int(sol.nfev),
                             "verdict": "ok" if ok_s else "not_converged",
                             "ratio_to_ours": (med_s / med) if ok_s else None}

    # Objective gradient through the solve vs one solve and vs central finite differences.
    m = est.make_moment_function(P, prof)
    Ln, un = est.bin_names(n)
    theta = {k: float(getattr(P, k)) for k in est.STRUCTURAL}
    theta.update({k: float(v) for k, v in zip(Ln, np.asarray(prof.L))})
    theta.update({k: float(v) for k, v in zip(un, np.asarray(prof.u))})
    targets = np.asarray(est.load_targets(est.DATA_DIR / "table2_us2017.csv")["target"], float)
    m_hat = jnp.asarray(np.concatenate([targets, np.asarray(prof.L), np.asarray(prof.u)]))
    W = jnp.asarray(est.weighting_matrix(np.asarray(m_hat), n))

    def Q(th):
        e = m(th)[0] - m_hat
        return e @ W @ e

    Qj = jax.jit(Q)
    gQ = jax.jit(jax.grad(Q))
    t0 = time.perf_counter()
    jax.block_until_ready(gQ(theta))
    g_first = time.perf_counter() - t0
    Qj(theta).block_until_ready()
    med_q, _ = _median_time(lambda: Qj(theta).block_until_ready(), a.repeats)
    med_g, g = _median_time(lambda: jax.block_until_ready(gQ(theta)), a.repeats)
    names = list(theta)

    def fd_grad():
        out_ = {}
        for k in names:
            h = 1e-5 * abs(theta[k])
            out_[k] = (float(Qj({**theta, k: theta[k] + h})) - float(Qj({**theta, k: theta[k] - h}))) / (2 * h)
        return out_

    t0 = time.perf_counter()
    gfd = fd_grad()
    t_fd = time.perf_counter() - t0
    gv = np.array([float(g[k]) for k in names])
    fv = np.array([gfd[k] for k in names])
    scale = np.maximum(np.abs(gv), 1e-8 * np.max(np.abs(gv)))
    out["gradient"] = {"parameters": len(names), "objective_median_s": med_q, "grad_median_s": med_g,
                       "grad_over_solve": med_g / med_q, "goal_ratio": 3.0, "grad_compile_s": g_first - med_g,
                       "fd_s": t_fd, "fd_over_grad": t_fd / med_g,
                       "max_rel_diff_vs_fd": float(np.max(np.abs(gv - fv) / scale))}

    # Moment Jacobian as the estimator computes it vs central finite differences.
    mj = jax.jit(lambda th: m(th)[0])
    Gj = jax.jit(jax.jacrev(lambda th: m(th)[0]))
    jax.block_until_ready(Gj(theta))
    mj(theta).block_until_ready()
    med_G, G = _median_time(lambda: jax.block_until_ready(Gj(theta)), max(3, a.repeats // 4))
    t0 = time.perf_counter()
    Gfd = np.column_stack([(np.asarray(mj({**theta, k: theta[k] + 1e-5 * abs(theta[k])}))
                            - np.asarray(mj({**theta, k: theta[k] - 1e-5 * abs(theta[k])}))) / (2e-5 * abs(theta[k]))
                           for k in names])
    t_Gfd = time.perf_counter() - t0
    Ga = np.column_stack([np.asarray(G[k]) for k in names])
    big = np.abs(Ga) > 1e-6 * np.max(np.abs(Ga))
    out["moment_jacobian"] = {"shape": list(Ga.shape), "jacrev_median_s": med_G, "fd_s": t_Gfd,
                              "fd_over_jacrev": t_Gfd / med_G,
                              "max_rel_diff_vs_fd": float(np.max(np.abs(Ga - Gfd)[big] / np.abs(Ga)[big]))}

    if not a.quick:
        import tempfile

        from spatialjax.calibrate import run_calibration

        cfg = HERE.parent / "calibration" / "oh_us2017.toml"
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res, _ = run_calibration(cfg, Path(tmp) / "run", progress=False, echo=False)
            wall = time.perf_counter() - t0
        out["estimation"] = {"config": "calibration/oh_us2017.toml", "wall_s_including_compile_and_report": wall,
                             "iterations": res.convergence.get("iterations"),
                             "stop_reason": res.convergence.get("stop_reason"), "status": res.status,
                             "objective": float(res.objective), "parameters": len(res.param_names),
                             "n_objective_evals": res.convergence.get("n_objective_evals"),
                             "n_failed_evals": res.convergence.get("n_failed_evals")}
    atomic.write_json(a.output, out)
    import json

    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
