#!/usr/bin/env python
"""Benchmarks of the Jiao-Tian calibration (issue 10, sections 2c and 4).

Usage::

    python benchmarks/bench_jiao_tian_calibration.py --sizes 60 722 --output benchmarks/results/jiao_tian_calibration_cpu.json
    python benchmarks/bench_jiao_tian_calibration.py --sizes 60 --quick
    python benchmarks/bench_jiao_tian_calibration.py --sizes --monte-carlo 8

For each N, on a replica economy drawn by ``jiao_tian_data.generate_replica`` (model-generated on
real US geography, Table 5 parameters; the embedded ``replica60`` / ``us722`` folders when
present), at the true parameters:

* ``inversion`` mode: time of one evaluation of the stacked moments (N x k), of their exact
  Jacobian G (reverse mode through the profiled PPML and the inversion (33)+(36)), and of a
  central finite-difference Jacobian (2p moment evaluations); ratio FD / autodiff.
* ``full-solution`` mode: one evaluation (a warm-started equilibrium solve from the previous
  evaluation's root at a nearby point; and without the warm-start cache, the homotopy from the
  data-inverted economy), the gradient of the identity-weighted objective Q = gbar'gbar by
  implicit differentiation (one solve + one adjoint linear solve) vs central finite differences
  (2p solves, p = 4 + the nuisance pi); the number of equilibrium solves of each (counted by
  ``warm_cache_stats``) and how many FD solves failed.
* optionally (``--estimate``) the full-solution estimation at N = 60 from the inversion-mode
  start: wall time, iterations, evaluations and failed inner solves.
* ``--monte-carlo SEEDS``: coverage of the inversion-mode 95% intervals over replica seeds
  1..SEEDS at N = 60 (the slow test runs 4 seeds; this is the larger study), with sd(estimates) /
  mean(SE) per parameter.
* ``--main-job CONFIG``: wall time of ``spatialjax calibrate CONFIG`` end to end (estimation,
  tables, plots, counterfactuals) in a subprocess.

Timings are wall-clock medians after compilation (``jax.block_until_ready``); the machine is
shared, so they are noisy. Ratios are against the finite-difference baseline measured in the
same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
T_SHIFTERS = ("log_population", "productivity_shifter")
H_SHIFTERS = ("log_population", "land_unavailability", "regulation")


def _median_time(fn, repeats):
    import jax

    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def _data(N):
    from spatialjax.models import jiao_tian_data as jd

    folder = jd.DATA_DIR / ("replica60" if N == 60 else "us722" if N == 722 else "__none__")
    if folder.is_dir():
        return jd.load(folder), str(folder.relative_to(ROOT))
    t = time.perf_counter()
    rep = jd.generate_replica(N, seed=N)
    tmp = Path("/tmp") / f"jt_bench_replica{N}"
    rep.write(tmp)
    return jd.load(tmp), f"generate_replica({N}, seed={N}) in {time.perf_counter() - t:.1f} s"


def bench_size(N, repeats, estimate):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import spatialjax  # noqa: F401
    from spatialjax.models import jiao_tian_calibration as jc

    data, source = _data(N)
    tv = jc.true_values(data)
    out = {"N": N, "data": source}

    # -- inversion mode --------------------------------------------------------------
    pr = jc.problem_from_data(data, technology_shifters=T_SHIFTERS, theta0={k: tv[k] for k in jc.PARAM_NAMES})
    p = {k: jnp.asarray(tv[k]) for k in jc.PARAM_NAMES}
    f = jax.jit(lambda p: pr.moments(p, pr.data).mean(0))
    J = jax.jit(jax.jacrev(f))
    t = time.perf_counter()
    jax.block_until_ready(f(p))
    c_f = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(J(p))
    c_J = time.perf_counter() - t
    t_f = _median_time(lambda: f(p), repeats)
    t_J = _median_time(lambda: J(p), repeats)

    def fd():
        cols = []
        for k in p:
            h = 1e-6 * max(1.0, abs(float(p[k])))
            cols.append((f({**p, k: p[k] + h}) - f({**p, k: p[k] - h})) / (2 * h))
        return jnp.stack(cols, 1)

    t_fd = _median_time(fd, repeats)
    Jm = np.stack([np.asarray(J(p)[k]) for k in p], 1)
    err = float(np.max(np.abs(Jm - np.asarray(fd()))) / np.max(np.abs(Jm)))
    out["inversion"] = dict(n_params=len(p), n_moments=int(f(p).shape[0]), compile_eval_s=c_f, compile_jac_s=c_J,
                            eval_s=t_f, jacobian_autodiff_s=t_J, jacobian_fd_s=t_fd, fd_over_autodiff=t_fd / t_J,
                            max_rel_diff_autodiff_vs_fd=err)
    print(f"N={N} inversion: eval {t_f * 1e3:.1f} ms, G autodiff {t_J * 1e3:.1f} ms, G FD {t_fd * 1e3:.1f} ms "
          f"(x{t_fd / t_J:.2f}), rel diff {err:.1e}", flush=True)

    # -- full-solution mode ---------------------------------------------------------
    # Every evaluation solves the equilibrium. Timed at *alternating* points p and p + dp (a small
    # step in every parameter, as between optimizer iterations), so each warm-started solve starts
    # from the previous evaluation's solution at a different point and does real Newton steps;
    # re-evaluating the same point would hit the cached root (0 steps) and time nothing.
    prf = jc.problem_from_data(data, mode="full-solution", technology_shifters=T_SHIFTERS, housing_shifters=H_SHIFTERS,
                               theta0={k: tv[k] for k in jc.PARAM_NAMES}, start_from_inversion=False)
    pf = {k: jnp.asarray(v) for k, v in prf.theta0.items()}
    pf2 = {k: v + 1e-4 * max(1.0, abs(float(v))) for k, v in pf.items()}
    pts = [pf, pf2]
    gfun = jax.jit(prf.moments)
    m = prf.meta
    gcold = jax.jit(lambda th, d: jc.full_solution_moments({**{k: jnp.asarray(v) for k, v in m["fixed"].items()}, **th},
                                                            d, pi_names=m["pi_names"], rho_names=m["rho_names"],
                                                            warm_cache=False))

    def Q(th):
        g, ok = prf.moments(th, prf.data)
        gb = g.mean(0)
        return gb @ gb, ok

    vg = jax.jit(jax.value_and_grad(Q, has_aux=True))
    Qj = jax.jit(Q)

    def solves():
        s_ = jc.warm_cache_stats()
        return s_["warm"] + s_["homotopy"] + s_["failed"], s_

    t = time.perf_counter()
    g0, ok0 = gfun(pf, prf.data)
    jax.block_until_ready(g0)
    c_g = time.perf_counter() - t
    t = time.perf_counter()
    (q0, okq), gr = vg(pf)
    jax.block_until_ready(gr)
    c_vg = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(gcold(pf, prf.data)[0])
    c_cold = time.perf_counter() - t
    jax.block_until_ready(Qj(pf))
    it = [0]

    def alternate(fn):
        def call():
            it[0] += 1
            return fn(pts[it[0] % 2])
        return call

    jc.clear_warm_cache()
    t_eval = _median_time(alternate(lambda th: gfun(th, prf.data)[0]), repeats)
    n_eval, st_eval = solves()
    t_cold = _median_time(alternate(lambda th: gcold(th, prf.data)[0]), max(1, repeats // 2))
    jc.clear_warm_cache()
    t_grad = _median_time(alternate(lambda th: vg(th)[1]), repeats)
    n_grad, st_grad = solves()
    n_fail = [0, 0]

    def fdgrad(base):
        vals = []
        for k in base:
            h = 1e-6 * max(1.0, abs(float(base[k])))
            qp, okp = Qj({**base, k: base[k] + h})
            qm, okm = Qj({**base, k: base[k] - h})
            n_fail[0] += int(not bool(okp)) + int(not bool(okm))
            n_fail[1] += 2
            vals.append((qp - qm) / (2 * h))
        return jnp.stack(vals)

    jc.clear_warm_cache()
    r_fd = max(1, repeats // 2)
    t_fdg = _median_time(alternate(fdgrad), r_fd)
    n_fd, st_fd = solves()
    (_, okg), gr = vg(pf)
    ga = np.array([float(gr[k]) for k in pf])
    gf = np.asarray(fdgrad(pf))
    rel = float(np.max(np.abs(ga - gf)) / np.max(np.abs(ga)))
    out["full_solution"] = dict(
        n_params=len(pf), n_moments=int(g0.shape[1]), ok_at_truth=bool(ok0), ok_grad_point=bool(okg),
        start_feasible=m.get("start_feasible"), start_gamma_shrinks=m.get("start_gamma_shrinks"),
        compile_eval_s=c_g, compile_grad_s=c_vg, compile_cold_eval_s=c_cold,
        eval_warm_s=t_eval, eval_homotopy_s=t_cold, grad_implicit_s=t_grad, grad_fd_s=t_fdg,
        fd_over_implicit=t_fdg / t_grad, grad_implicit_over_eval=t_grad / t_eval,
        solves_per_eval=n_eval / repeats, solves_per_grad_implicit=n_grad / repeats,
        solves_per_grad_fd=n_fd / r_fd, inner_solves_eval=st_eval, inner_solves_grad_implicit=st_grad,
        inner_solves_grad_fd=st_fd, fd_failed_solves=n_fail[0], fd_solves=n_fail[1],
        max_rel_diff_implicit_vs_fd=rel,
        note="eval/grad timed at alternating points p, p + 1e-4 (relative) so that each warm solve does real "
             "Newton steps from the previous evaluation's root; eval_homotopy_s: the same evaluation without the "
             "warm-start cache (continuation from the data-inverted economy every time); solves counted by "
             "jiao_tian_calibration.warm_cache_stats (each implicit gradient: 1 solve + 1 adjoint linear solve)")
    print(f"N={N} full-solution: eval {t_eval:.3f} s warm ({t_cold:.3f} s homotopy), grad implicit {t_grad:.3f} s "
          f"({n_grad / repeats:.0f} solve + adjoint), grad FD {t_fdg:.3f} s ({n_fd / r_fd:.0f} solves, "
          f"x{t_fdg / t_grad:.1f}), FD failed {n_fail[0]}/{n_fail[1]}, ok at truth {bool(ok0)}, rel diff {rel:.1e}",
          flush=True)

    if estimate:
        from spatialjax import gmm

        t = time.perf_counter()
        prs = jc.problem_from_data(data, mode="full-solution", technology_shifters=T_SHIFTERS,
                                   housing_shifters=H_SHIFTERS,
                                   theta0=dict(theta=3.5, gamma=0.02, delta_d=0.3, delta_I=0.0),
                                   bounds={"theta": (2.2, 20.0), "gamma": (0.0, 0.2)})
        t_start = time.perf_counter() - t
        t = time.perf_counter()
        r = gmm.estimate(prs.moments, prs.theta0, prs.data, bounds=prs.bounds)
        t_est = time.perf_counter() - t
        c = r.convergence
        out["full_solution_estimation"] = dict(
            start_from_inversion_s=t_start, estimate_s=t_est, status=r.status, converged=bool(r.converged),
            iterations=c.get("iterations"), objective_evals=c.get("n_objective_evals"),
            failed_inner_solves=c.get("n_failed_evals"),
            estimates={k: float(r.params[k]) for k in jc.PARAM_NAMES}, se={k: float(r.se[k]) for k in jc.PARAM_NAMES},
            truth={k: tv[k] for k in jc.PARAM_NAMES})
        print(f"N={N} full-solution estimation: {t_est:.1f} s, {r.status}, failed inner solves "
              f"{c.get('n_failed_evals')} of {c.get('n_objective_evals')} evaluations", flush=True)
    return out


def monte_carlo(seeds, N=60):
    """Coverage of the inversion-mode 95% intervals over replica seeds (jiao_tian_data.generate_replica
    on the N largest clusters): the larger version of the slow test's 4-seed study."""
    import tempfile

    import numpy as np

    import spatialjax  # noqa: F401
    from spatialjax import gmm
    from spatialjax.models import jiao_tian_calibration as jc
    from spatialjax.models import jiao_tian_data as jd

    geo = jd.geography(N)
    rows = []
    t0 = time.perf_counter()
    for seed in seeds:
        rep = jd.generate_replica(geo, seed=seed)
        if not rep.converged:
            rows.append(dict(seed=seed, replica_converged=False))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rep.write(tmp)
            data = jd.load(tmp)
        tv = jc.true_values(data)
        pr = jc.problem_from_data(data, technology_shifters=T_SHIFTERS, theta0=dict(theta=3.5, gamma=0.02, delta_d=0.3,
                                                                                 delta_I=0.0),
                                  bounds={"theta": (2.2, 20.0), "gamma": (0.0, 0.2)})
        r = gmm.estimate(pr.moments, pr.theta0, pr.data, bounds=pr.bounds, options=pr.estimator["options"])
        row = dict(seed=seed, replica_converged=True, converged=bool(r.converged))
        for k in jc.PARAM_NAMES:
            e, se = float(r.params[k]), float(r.se[k])
            row[k] = dict(estimate=e, se=se, truth=tv[k], covered=bool(abs(e - tv[k]) <= 1.96 * se))
        rows.append(row)
        print(f"MC seed {seed}: " + ", ".join(f"{k} {row[k]['estimate']:.4f} ({row[k]['se']:.4f})"
                                              for k in jc.PARAM_NAMES), flush=True)
    ok = [r for r in rows if r.get("converged")]
    summ = {}
    for k in jc.PARAM_NAMES:
        est = np.array([r[k]["estimate"] for r in ok])
        se = np.array([r[k]["se"] for r in ok])
        summ[k] = dict(coverage=float(np.mean([r[k]["covered"] for r in ok])) if ok else None,
                       mean_bias=float(np.mean(est - ok[0][k]["truth"])) if ok else None,
                       sd_over_mean_se=float(np.std(est, ddof=1) / np.mean(se)) if len(ok) > 1 else None)
    covered = sum(int(r[k]["covered"]) for r in ok for k in jc.PARAM_NAMES)
    return dict(N=N, seeds=list(seeds), n_converged=len(ok), n_failed_replicas=sum(not r["replica_converged"]
                                                                                   for r in rows),
                covered=covered, intervals=4 * len(ok), per_parameter=summ, wall_s=time.perf_counter() - t0, rows=rows)


def main_job(config):
    t = time.perf_counter()
    out = Path("/tmp") / "jt_bench_main_job"
    p = subprocess.run([sys.executable, "-m", "spatialjax", "calibrate", config, "--output", str(out), "--quiet"],
                       cwd=ROOT, capture_output=True, text=True)
    return dict(config=config, wall_s=time.perf_counter() - t, returncode=p.returncode, stderr_tail=p.stderr[-2000:])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[60, 722], help="N values (none: only --monte-carlo / --main-job)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 repeats")
    ap.add_argument("--estimate", action="store_true", help="also time the full-solution estimation at N = 60")
    ap.add_argument("--main-job", default=None, help="a config to time end to end (spatialjax calibrate)")
    ap.add_argument("--monte-carlo", type=int, default=0, metavar="SEEDS",
                    help="coverage study of the inversion-mode intervals over replica seeds 1..SEEDS (N = 60)")
    ap.add_argument("--output", default=None)
    a = ap.parse_args(argv)
    import jax

    reps = 2 if a.quick else a.repeats
    res = {"benchmark": "jiao_tian_calibration", "device": str(jax.devices()[0]), "platform": platform.platform(),
           "python": sys.version.split()[0], "jax": jax.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "note": "timings on a shared 2-core machine (noisy); ratios against finite differences measured in the same run",
           "sizes": []}
    for N in a.sizes:
        res["sizes"].append(bench_size(N, reps, a.estimate and N == 60))
    if a.monte_carlo:
        res["monte_carlo"] = monte_carlo(range(1, a.monte_carlo + 1))
        mc = res["monte_carlo"]
        print(f"Monte Carlo: {mc['covered']}/{mc['intervals']} intervals cover the truth", flush=True)
    if a.main_job:
        res["main_job"] = main_job(a.main_job)
        print(f"main job {a.main_job}: {res['main_job']['wall_s']:.1f} s (exit {res['main_job']['returncode']})")
    text = json.dumps(res, indent=2)
    if a.output:
        from spatialjax.atomic import write_text

        write_text(a.output, text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
