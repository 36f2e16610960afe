#!/usr/bin/env python
"""Benchmark: the Jiao-Tian welfare-gradient map (one reverse pass) vs N finite-difference re-solves,
and the wall time of ``jiao_tian_counterfactuals.run_all`` (issue 10, §3-4).

Usage::

    python benchmarks/bench_jiao_tian_welfare_gradient.py --output benchmarks/results/jiao_tian_welfare_gradient_cpu.json
    python benchmarks/bench_jiao_tian_welfare_gradient.py --N 100 --fd-cities 20     # quick

The economy: the replica economy of ``jiao_tian_data.generate_replica(N, seed)`` (model-generated on
real US geography, Table 5 parameters, the true parameters as the calibrated baseline) when
``--economy replica`` (default), or ``jiao_tian_counterfactuals.synthetic_baseline`` (synthetic
allocation on the same geography, inverted by (35)-(36)) with ``--economy synthetic``.

Measured (wall clock, ``block_until_ready``; the machine is shared, so numbers are noisy and the
load average is recorded):

* ``warm_solve``: a warm ``jt.solve`` at the baseline perturbed in one q_n (median of repeats).
* ``map``: the one-pass map ``welfare_gradient`` (jacrev of (log U_w, log U_m) w.r.t. q through a
  warm ``jt.solve``): first call (compile + run) and the median of repeated calls.
* ``fd``: forward finite differences, one warm re-solve per city (``--fd-cities`` of them, all N
  by default), timed in full; the N-city cost is ``N * per-city`` (exact when all N are run).
  Also the max relative difference between the FD and the map entries on the cities run.
* ``ratio``: FD time for all N cities / steady map time (and / first-call map time).
* ``run_all``: the full counterfactual pipeline with the default config (all counterfactuals,
  headline gradients with a stand-in covariance, the map, plots), in a fresh process state
  (compiles included), plus per-task times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _baseline(args):
    import jax.numpy as jnp

    from spatialjax.models import jiao_tian_counterfactuals as cf
    from spatialjax.models import jiao_tian_data as jd

    geo = jd.geography(args.N)
    if args.economy == "synthetic":
        g = geo.to_frame()
        b = cf.synthetic_baseline(args.N, args.seed, geography=g)
        return b, dict(economy="synthetic_baseline on the real US geography (inverted by (35)-(36))")
    t0 = time.perf_counter()
    rep = jd.generate_replica(geo, args.seed)
    secs = time.perf_counter() - t0
    if not rep.converged:
        raise SystemExit(f"replica solve failed: {rep.status}")
    tr = rep.truth["parameters"]
    cities = rep.cities
    b = cf.Baseline(params=rep.params, sol=rep.solution, q=jnp.asarray(cities["internet"].to_numpy(float)),
                    dist=jnp.asarray(geo.distances()), log_lam=0.0, delta_d=tr["delta_d"], delta_I=tr["delta_I"],
                    names=[str(v) for v in geo.name], lat=geo.lat, lon=geo.lon, ids=geo.city)
    return b, dict(economy=f"jiao_tian_data.generate_replica({args.N}, seed={args.seed}) (model-generated on real "
                           f"US geography; true parameters as the calibrated baseline)",
                   replica_generation_s=secs)


def _time(f, repeats):
    import jax

    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        ts.append(time.perf_counter() - t0)
    return ts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", type=int, default=722)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--economy", choices=("replica", "synthetic"), default="replica")
    ap.add_argument("--fd-cities", type=int, default=None, help="cities re-solved by FD (default: all N)")
    ap.add_argument("--fd-step", type=float, default=1e-4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-run-all", action="store_true")
    ap.add_argument("--only-run-all", action="store_true",
                    help="skip the map and FD phases: run_all right after the baseline, so that its time includes "
                         "every compilation (a fresh process)")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    import spatialjax  # noqa: F401
    from spatialjax import atomic
    from spatialjax.models import jiao_tian_counterfactuals as cf

    out = dict(benchmark="jiao_tian_welfare_gradient", created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               machine=dict(platform=jax.devices()[0].platform, device_kind=jax.devices()[0].device_kind,
                            cpu_count=os.cpu_count(), jax_version=jax.__version__, python=platform.python_version(),
                            load_average_start=list(os.getloadavg())),
               settings=vars(args).copy())
    out["settings"]["output"] = str(args.output) if args.output else None
    b, info = _baseline(args)
    out.update(info)
    N = b.N
    out["N"] = N
    print(f"baseline N = {N}: {b.sol.status}, residual {float(b.sol.residual):.2e}", flush=True)

    if args.only_run_all:
        _run_all(cf, b, out)
        return _write(out, args, atomic)

    # the map: first call (compile + run), then steady state
    t0 = time.perf_counter()
    wg = cf.welfare_gradient(b, fd_cities=0)
    first = time.perf_counter() - t0
    steady = _time(lambda: cf._welfare_jac(b.q, b.params, b.q, jnp.asarray(b.delta_I), b.sol.y), args.repeats)
    out["map"] = dict(first_call_s=first, median_s=float(np.median(steady)), times_s=steady, status=wg.status)
    print(f"map: first {first:.2f} s, steady {np.median(steady):.3f} s", flush=True)

    # warm solves
    dI = jnp.asarray(b.delta_I)
    q0 = b.q

    def resolve(c, h):
        return cf._welfare_of_q(q0.at[c].add(h), b.params, q0, dI, b.sol.y)[0]

    jax.block_until_ready(resolve(0, args.fd_step))  # compile outside the timing
    ws = _time(lambda: resolve(1, args.fd_step), args.repeats)
    out["warm_solve"] = dict(median_s=float(np.median(ws)), times_s=ws)

    # forward finite differences
    n_fd = N if args.fd_cities is None else min(args.fd_cities, N)
    base_val = np.asarray(jnp.stack([b.sol.log_Uw, b.sol.log_Um]))
    J = np.stack([wg.d_logUw_dq, wg.d_logUm_dq])
    t0 = time.perf_counter()
    errs, fails = [], 0
    for c in range(n_fd):
        v = np.asarray(resolve(c, args.fd_step))
        if not np.all(np.isfinite(v)):
            fails += 1
            continue
        fd = (v - base_val) / args.fd_step
        errs.append(float(np.max(np.abs(fd - J[:, c]) / np.maximum(np.abs(J[:, c]), 1e-300))))
    fd_s = time.perf_counter() - t0
    per = fd_s / n_fd
    out["fd"] = dict(cities=n_fd, seconds=fd_s, per_city_s=per, all_N_s=per * N, measured_in_full=(n_fd == N),
                     failed_solves=fails, max_rel_diff_forward_fd=max(errs) if errs else None,
                     note="forward differences: one warm re-solve per city; the map's exactness is tested against "
                          "central differences (rel 1e-5) in tests/test_jiao_tian_counterfactuals.py")
    out["ratio"] = dict(fd_all_N_over_map_steady=per * N / float(np.median(steady)),
                        fd_all_N_over_map_first_call=per * N / first)
    print(f"fd: {n_fd} cities {fd_s:.1f} s ({per:.3f} s/city); ratio {out['ratio']}", flush=True)

    if not args.no_run_all:
        _run_all(cf, b, out)
    return _write(out, args, atomic)


def _run_all(cf, b, out):
    import pandas as pd

    cov = np.diag([0.05 ** 2, 0.01 ** 2, 0.002 ** 2, 0.001 ** 2])
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        paths = cf.run_all(b, Path(d), cov=cov, param_names=["theta", "delta_d", "gamma", "delta_I"], progress=True)
        ra = time.perf_counter() - t0
        df = pd.read_csv(paths["counterfactuals"])
        cmp_df = pd.read_csv(paths["paper_comparison"])
    cols = ["name", "status", "slope", "slope_se", "workers_pct", "managers_pct", "n_solves", "seconds",
            "slope_se_delta", "workers_pct_se_delta", "managers_pct_se_delta", "d_slope_d_gamma", "d_slope_d_theta",
            "d_slope_d_delta_I", "direct_workers_logpts", "direct_managers_logpts", "reorg_workers_logpts",
            "reorg_managers_logpts"]
    out["run_all"] = dict(seconds=ra, rows=df[cols].to_dict(orient="records"),
                          paper_comparison=cmp_df[["counterfactual", "quantity", "ours", "paper", "same_sign",
                                                   "log10_ratio"]].to_dict(orient="records"),
                          stand_in_cov="diag(se theta 0.05, delta_d 0.01, gamma 0.002, delta_I 0.001)^2",
                          note="run after the map/FD phases, the jt.solve and map compilations are already done "
                               "unless --only-run-all")
    print(f"run_all: {ra:.1f} s", flush=True)
    print(df[["name", "status", "slope", "workers_pct", "managers_pct", "n_solves", "seconds"]].to_string())


def _write(out, args, atomic):
    out["machine"]["load_average_end"] = list(os.getloadavg())
    if args.output:
        atomic.write_json(args.output, out)
        print(f"wrote {args.output}")
    else:
        json.dump(atomic._json_safe(out), sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
