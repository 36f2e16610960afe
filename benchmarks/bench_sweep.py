#!/usr/bin/env python
"""Benchmark: counterfactual sweeps as one computation (issue 12, section 2).

Usage::

    python benchmarks/bench_sweep.py --output benchmarks/results/sweep_cpu.json      # full (N = 722)
    python benchmarks/bench_sweep.py --quick --output /tmp/sweep_quick.json            # minutes

Sections (``--sections``, default all):

* ``upgrade``: every city's internet upgrade (``jiao_tian_sweeps.upgrade_each_city``: chord
  iterations with the baseline's Schur LU, Newton polish) on the embedded us722 replica
  (``jiao_tian_data.load()``: true parameters as the calibrated baseline, the baseline a warm
  ``jt.solve`` from the data allocation; model-generated on real US geography), against one
  cold ``jt.solve`` (the goal: sweep < 10x cold), a Python loop of single warm ``jt.solve``
  calls (``--loop-cities`` of them; all N by default in the full run), and the first-order
  prediction of the welfare-gradient map. Accuracy columns: every method against the loop's
  warm Newton solves.
* ``slowest``: the slowest-member effect of a vmapped while-loop: per-scenario chord iteration
  counts against the iterations each chunk ran (its slowest member), and the batch wall time,
  for vmap in the given order, vmap with chunks sorted by predicted difficulty, and
  ``lax.map`` (every scenario its own loop).
* ``grid``: a 1,000-scenario (delta_I, gamma) grid for Jiao-Tian (vmapped warm ``jt.solve``
  through ``spatialjax.sweep`` at N = ``--grid-N``) and a 1,000-scenario (t, gamma) policy grid
  for Helsley-Strange (contract-curve optimum at lambda = 0.5), each against a Python loop
  of jitted single solves in the same run (``--loop-scenarios`` of them, time per scenario),
  with chunk sizes and peak memory (max RSS growth of a fresh subprocess).
* ``devices``: the upgrade sweep (``--devices-N`` cities, synthetic baseline) on 1, 2, 4, 8
  forced host CPU devices, one subprocess per count (``--xla_force_host_platform_device_count``).

Wall clock with ``block_until_ready``; the machine is shared (load average recorded), so
numbers are noisy. Ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _baseline_us722():
    import jax.numpy as jnp

    from spatialjax.models import jiao_tian as jt
    from spatialjax.models import jiao_tian_counterfactuals as cf
    from spatialjax.models import jiao_tian_data as jd

    ds = jd.load()
    p = ds.true_params()
    sol = jt.solve_from_data(p, ds.w, ds.Lm)
    if not bool(sol.converged):
        raise SystemExit(f"baseline solve failed: {sol.status}")
    tr = ds.truth["parameters"]
    lam = np.asarray(ds.truth["pair_cost"]["lambda_c"], float)
    N = ds.N
    log_lam = np.where(np.eye(N, dtype=bool), 0.0, np.broadcast_to(lam[None, :], (N, N)))
    names = [str(v) for v in ds.cities["name"]] if "name" in ds.cities else None
    b = cf.Baseline(params=p, sol=sol, q=jnp.asarray(ds.q), dist=jnp.asarray(ds.distances()), log_lam=log_lam,
                    delta_d=tr["delta_d"], delta_I=tr["delta_I"], names=names, lat=ds.lat, lon=ds.lon)
    return b, "jiao_tian_data.load() us722 replica (model-generated on real US geography), true parameters as " \
              "the calibrated baseline, baseline = warm jt.solve from the data allocation"


def _time(f):
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(f())
    return out, time.perf_counter() - t0


def bench_upgrade(args, b, sweep_cities=None):
    import jax.numpy as jnp

    from spatialjax.models import jiao_tian as jt
    from spatialjax.models import jiao_tian_counterfactuals as cf
    from spatialjax.models import jiao_tian_sweeps as js

    out = {"N": b.N, "dq": args.dq}
    # one cold solve (homotopy from autarky): first call compiles, second is the reference time
    c1, t1 = _time(lambda: jt.solve(b.params).y)
    c2 = jt.solve(b.params)
    _, t2 = _time(lambda: jt.solve(b.params).y)
    out["cold_solve"] = dict(first_call_s=t1, seconds=t2, status=c2.status,
                             max_abs_dy_vs_baseline=float(jnp.max(jnp.abs(c2.y - b.sol.y))))
    # welfare-gradient map (first-order prediction)
    g, tg = _time(lambda: cf.welfare_gradient(b, fd_cities=0))
    out["gradient_map"] = dict(seconds_incl_compile=tg, status=g.status)
    runs = {}
    sc = np.arange(b.N) if sweep_cities is None else np.asarray(sweep_cities)
    out["scenarios"] = int(len(sc))
    for label, kw in (("map", dict(inner="map", batch_size=args.batch, cities=sc)),):
        r1 = js.upgrade_each_city_from_baseline(b, args.dq, gradient=g, **kw)  # compiles
        r = js.upgrade_each_city_from_baseline(b, args.dq, gradient=g, **kw)
        runs[label] = r
        out[f"sweep_{label}"] = dict(first_call_s=r1.timings["total"], seconds=r.timings["total"],
                                     sweep_s=r.timings["sweep"], polish_s=r.timings["polish"], info=r.info,
                                     status=r.status, statuses=r.frame["status"].value_counts().to_dict(),
                                     chord_iterations=dict(median=float(r.frame["chord_iterations"].median()),
                                                           max=int(r.frame["chord_iterations"].max())))
    r = runs["map"]
    df = r.frame
    out["sweep_over_cold_solve"] = out["sweep_map"]["seconds"] / t2
    out["goal_sweep_below_10x_cold"] = bool(out["sweep_over_cold_solve"] < 10)
    # the Python loop of warm solves (reference)
    n_loop = len(sc) if args.loop_cities is None else min(args.loop_cities, len(sc))
    pos = np.linspace(0, len(sc) - 1, n_loop).round().astype(int)
    cities = sc[pos]
    js.upgrade_loop(b.params, b.sol, args.dq, q=b.q, delta_I=b.delta_I, cities=cities[:1])  # compile
    t0 = time.perf_counter()
    L = js.upgrade_loop(b.params, b.sol, args.dq, q=b.q, delta_I=b.delta_I, cities=cities)
    tl = time.perf_counter() - t0
    loop_all = tl * len(sc) / n_loop
    out["loop"] = dict(cities=int(n_loop), seconds=tl, per_city_s=tl / n_loop, all_N_s=loop_all,
                       measured_in_full=bool(n_loop == len(sc)), statuses=L["status"].value_counts().to_dict())
    out["loop_over_sweep"] = loop_all / out["sweep_map"]["seconds"]  # same scenarios
    # accuracy vs the loop, on the scenarios both converged
    sub = df.iloc[pos].reset_index(drop=True)
    both = (sub["converged"].to_numpy()) & (L["status"].to_numpy() == "successful")
    dy = np.abs(r.values[pos] - L.attrs["values"])
    acc = dict(scenarios_both_converged=int(both.sum()),
               status_agreement=float(np.mean(sub["status"].to_numpy() == L["status"].to_numpy())),
               max_abs_dy=float(np.max(dy[both])) if both.any() else None)
    for col in ("workers_pct", "managers_pct", "skill_share_slope"):
        a, ref = sub[col].to_numpy()[both], L[col].to_numpy()[both]
        acc[f"max_rel_err_{col}"] = float(np.max(np.abs(a - ref) / np.maximum(np.abs(ref), 1e-300)))
    for col in ("linear_workers_pct", "chord1_workers_pct"):
        a, ref = sub[col].to_numpy()[both], L["workers_pct"].to_numpy()[both]
        rel = np.abs(a - ref) / np.maximum(np.abs(ref), 1e-300)
        acc[f"{col}_vs_loop"] = dict(median_rel_err=float(np.median(rel)), p90_rel_err=float(np.quantile(rel, 0.9)),
                                     max_rel_err=float(np.max(rel)))
    out["accuracy_vs_loop"] = acc
    # where does the linear answer fail? the largest relative errors, by city size
    ok = df[df["converged"]].copy()
    ok["lin_rel_err"] = np.abs(ok["linear_workers_pct"] - ok["workers_pct"]) / np.abs(ok["workers_pct"])
    ok["size_rank"] = ok["population"].rank(ascending=False)
    worst = ok.sort_values("lin_rel_err", ascending=False).head(8)
    out["linear_worst"] = [dict(city=int(x.city), name=str(x.name), size_rank=int(x.size_rank),
                                workers_pct=float(x.workers_pct), linear=float(x.linear_workers_pct),
                                rel_err=float(x.lin_rel_err), chord_iterations=int(x.chord_iterations))
                           for x in worst.itertuples()]
    out["linear_rel_err_by_size"] = {
        q: float(ok[ok["size_rank"].between(lo, hi)]["lin_rel_err"].median())
        for q, (lo, hi) in {"largest_10": (1, 10), "rank_11_100": (11, 100), "rank_101_722": (101, 10 ** 6)}.items()}
    failed = df[~df["converged"]]
    rank = b.size.argsort()[::-1].argsort() + 1
    out["failed_scenarios"] = [dict(city=int(x.city), name=str(x.name), status=str(x.status),
                                    chord_status=str(x.chord_status), contraction=float(x.contraction),
                                    size_rank=int(rank[int(x.city)]))
                               for x in failed.itertuples()]
    if args.tables:
        d = Path(args.tables)
        r.write_csv(d / "upgrade_each_city.csv")
        r.write_parquet(d / "upgrade_each_city.parquet")
        from spatialjax.plots import jiao_tian_sweeps as pl

        pl.plot_upgrade_map(df, d / "upgrade_each_city_map.png")
        pl.plot_linear_vs_nonlinear(df, d / "upgrade_linear_vs_nonlinear.png")
        out["tables_written_to"] = str(d)
    return out, r


def bench_slowest(args, b):
    from spatialjax.models import jiao_tian_sweeps as js

    n = min(args.slowest_cities, b.N)
    cities = np.linspace(0, b.N - 1, n).round().astype(int)
    out = {"cities": int(n), "batch_size": args.slowest_batch}
    for label, kw in (("vmap_given_order", dict(inner="vmap", order="given")),
                      ("vmap_sorted_by_difficulty", dict(inner="vmap", order="difficulty")),
                      ("map_each_own_loop", dict(inner="map", order="given"))):
        kw = dict(kw, batch_size=args.slowest_batch, cities=cities, polish=False)
        js.upgrade_each_city(b.params, b.sol, args.dq, q=b.q, delta_I=b.delta_I, **kw)  # compile
        r = js.upgrade_each_city(b.params, b.sol, args.dq, q=b.q, delta_I=b.delta_I, **kw)
        it = r.frame["chord_iterations"].to_numpy()
        # iterations each chunk actually ran: its slowest member (vmap) / each its own (map)
        if kw["order"] == "difficulty":
            pred = np.asarray(js._initial_residuals(js.stack_scen(cities, np.full(n, args.dq)),
                                                    js._shared(b.params, b.sol, b.q, b.delta_I, 1e-10, 40, 0.7)))
            perm = np.argsort(pred, kind="stable")
            spearman = float(np.corrcoef(np.argsort(np.argsort(pred)), np.argsort(np.argsort(it)))[0, 1])
        else:
            perm, spearman = np.arange(n), None
        cs = r.info["chunk_size"]
        its = it[perm]
        chunk_max = [int(its[i:i + cs].max()) for i in range(0, n, cs)]
        ran = sum(m * len(its[i:i + cs]) for m, i in zip(chunk_max, range(0, n, cs)))
        eff = float(it.sum() / ran) if kw["inner"] == "vmap" else 1.0
        out[label] = dict(seconds=r.timings["sweep"], predict_s=r.timings.get("predict", 0.0),
                          iterations_sum=int(it.sum()), iterations_ran=int(ran) if kw["inner"] == "vmap" else int(it.sum()),
                          useful_fraction=eff, chunk_max_iterations=chunk_max,
                          rank_corr_predicted_vs_iterations=spearman)
    out["sorted_over_given_time"] = out["vmap_sorted_by_difficulty"]["seconds"] / out["vmap_given_order"]["seconds"]
    out["map_over_vmap_given_time"] = out["map_each_own_loop"]["seconds"] / out["vmap_given_order"]["seconds"]
    return out


_GRID = textwrap.dedent(
    """
    import json, resource, sys, time
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np
    import spatialjax
    from spatialjax.sweep import stack, sweep
    model, n_scen, n_loop, batch, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    k = int(round(n_scen ** 0.5)); m = -(-n_scen // k)
    if model == "jiao_tian":
        from spatialjax.models import jiao_tian as jt
        from spatialjax.models import jiao_tian_counterfactuals as cf
        b = cf.synthetic_baseline(N, seed=1)
        p0, y0, q = b.params, b.sol.y, b.q
        logtau0 = jnp.log(p0.tau); free = (logtau0 > 0).astype(float)
        qq = jnp.outer(q, q)
        dIs = np.linspace(-0.015, -0.005, k); gs = np.linspace(0.006, 0.014, m)
        grid = [(a, g) for a in dIs for g in gs][:n_scen]
        def mk(a, g):
            return eqx.tree_at(lambda p: (p.tau, p.gamma), p0,
                               (jnp.exp(logtau0 + free * (a - b.delta_I) * qq), jnp.asarray(g)))
        scen = [mk(a, g) for a, g in grid]
        def fn(p):
            s = jt.solve(p, y0)
            return dict(solve=s.solve, logU=jnp.stack([s.log_Uw, s.log_Um]))
        label = f"Jiao-Tian (delta_I, gamma) grid, warm jt.solve from the baseline, N = {N}"
    else:
        from spatialjax.models import helsley_strange as hs
        p0 = hs.default_params()
        ts = np.linspace(0.3, 0.7, k); gs = np.linspace(0.3, 0.7, m)
        grid = [(t, g) for t in ts for g in gs][:n_scen]
        scen = [eqx.tree_at(lambda p: (p.t, p.gamma), p0, (jnp.asarray(t), jnp.asarray(g))) for t, g in grid]
        def fn(p):
            o = hs.solve_contract_curve(p, 0.5)
            return o
        label = "Helsley-Strange (t, gamma) policy grid, contract-curve optimum at lambda = 0.5"
    batched = stack(scen)
    t0 = time.perf_counter(); r = sweep(fn, batched, batch_size=batch); jax.block_until_ready(r.values)
    first = time.perf_counter() - t0
    t0 = time.perf_counter(); r = sweep(fn, batched, batch_size=batch); jax.block_until_ready(r.values)
    ts_ = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    one = eqx.filter_jit(fn)
    idx = np.linspace(0, n_scen - 1, n_loop).round().astype(int)
    jax.block_until_ready(one(scen[0]))
    t0 = time.perf_counter(); loop = [jax.block_until_ready(one(scen[i])) for i in idx]; tl = time.perf_counter() - t0
    leaf = (lambda o: o["logU"]) if model == "jiao_tian" else (lambda o: o.n)
    Lv = np.stack([np.asarray(leaf(o)) for o in loop]); Sv = np.asarray(leaf(r.values))[idx]
    okl = np.all(np.isfinite(Lv), axis=1) & r.ok[idx]
    print(json.dumps(dict(label=label, scenarios=n_scen, batch_size=batch, chunks=r.n_chunks, chunk_size=r.chunk_size,
        first_call_s=first, seconds=ts_, per_scenario_s=ts_ / n_scen, loop_scenarios=n_loop,
        loop_per_scenario_s=tl / n_loop, loop_over_sweep_per_scenario=(tl / n_loop) / (ts_ / n_scen),
        failed=int(len(r.failed)), max_abs_diff_vs_loop=float(np.max(np.abs(Lv[okl] - Sv[okl]))) if okl.any() else None,
        peak_rss_growth_mb=rss1 - rss0, peak_rss_mb=rss1)))
    """
)


def _subprocess_json(source, argv, env_extra=None, timeout=900):
    env = dict(os.environ)
    env.update(env_extra or {})
    env.setdefault("JAX_PLATFORMS", "cpu")
    p = subprocess.run([sys.executable, "-c", source, *map(str, argv)], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    if p.returncode != 0:
        return dict(error=p.stderr[-2000:], returncode=p.returncode)
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_grid(args):
    out = {}
    for model, batches in (("jiao_tian", args.grid_batches), ("helsley_strange", args.grid_batches)):
        out[model] = [_subprocess_json(_GRID, [model, args.grid_scenarios, args.loop_scenarios, bs, args.grid_N])
                      for bs in batches]
    return out


_DEVICES = textwrap.dedent(
    """
    import json, sys, time
    import jax, numpy as np
    import spatialjax
    from spatialjax.models import jiao_tian_counterfactuals as cf
    from spatialjax.models import jiao_tian_sweeps as js
    N = int(sys.argv[1]); inner = sys.argv[2]
    b = cf.synthetic_baseline(N, seed=2)
    kw = dict(inner=inner, batch_size=8 * len(jax.devices()) * 4, polish=False)
    js.upgrade_each_city(b.params, b.sol, 0.4, q=b.q, delta_I=b.delta_I, **kw)
    t0 = time.perf_counter(); r = js.upgrade_each_city(b.params, b.sol, 0.4, q=b.q, delta_I=b.delta_I, **kw)
    print(json.dumps(dict(devices=len(jax.devices()), inner=r.info["inner"], seconds=time.perf_counter() - t0,
                          chord_converged=r.info["chord_converged"], scenarios=N,
                          checksum=float(np.nansum(r.values[:, -2:])))))
    """
)


def bench_devices(args):
    out = []
    for nd in (1, 2, 4, 8):
        flags = f"--xla_force_host_platform_device_count={nd}"
        for inner in ("map", "vmap"):
            res = _subprocess_json(_DEVICES, [args.devices_N, inner], {"XLA_FLAGS": flags}, timeout=600)
            res.update(requested_devices=nd, requested_inner=inner)
            out.append(res)
    one = {r["requested_inner"]: r.get("seconds") for r in out if r["requested_devices"] == 1}
    for r in out:
        if r.get("seconds") and one.get(r["requested_inner"]):
            r["speedup_vs_1_device"] = one[r["requested_inner"]] / r["seconds"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes): 96 upgrade cities, "
                                                         "loop of 12, grids of 200, devices at N = 60")
    ap.add_argument("--output", type=str, default=None, help="write the JSON here")
    ap.add_argument("--tables", type=str, default=None, help="folder for the upgrade CSV, Parquet and map PNG")
    ap.add_argument("--sections", type=str, default="upgrade,slowest,grid,devices")
    ap.add_argument("--dq", type=float, default=0.5, help="rise in q_c of each city's upgrade")
    ap.add_argument("--batch", type=int, default=64, help="chunk size of the upgrade sweep")
    ap.add_argument("--loop-cities", type=int, default=None, help="cities in the reference loop (default all N)")
    ap.add_argument("--slowest-cities", type=int, default=128)
    ap.add_argument("--slowest-batch", type=int, default=32)
    ap.add_argument("--grid-scenarios", type=int, default=1000)
    ap.add_argument("--grid-N", type=int, default=50)
    ap.add_argument("--grid-batches", type=int, nargs="+", default=[1000, 250])
    ap.add_argument("--loop-scenarios", type=int, default=40)
    ap.add_argument("--devices-N", type=int, default=120)
    args = ap.parse_args(argv)
    if args.quick:
        args.loop_cities = args.loop_cities or 12
        args.slowest_cities = min(args.slowest_cities, 64)
        args.grid_scenarios = min(args.grid_scenarios, 200)
        args.grid_batches = [min(b, 200) for b in args.grid_batches]
        args.loop_scenarios = min(args.loop_scenarios, 10)
        args.devices_N = min(args.devices_N, 60)
    import jax

    import spatialjax  # noqa: F401

    sections = set(args.sections.split(","))
    res = dict(benchmark="sweep", created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               machine=dict(platform=jax.default_backend(), cpu_count=os.cpu_count(), jax_version=jax.__version__,
                            python=platform.python_version(), load_average_start=list(os.getloadavg())),
               settings=vars(args))
    t0 = time.perf_counter()
    b = None
    if sections & {"upgrade", "slowest"}:
        b, label = _baseline_us722()
        res["economy"] = label
    if "upgrade" in sections:
        sc = np.linspace(0, b.N - 1, 96).round().astype(int) if args.quick else None
        up, _ = bench_upgrade(args, b, sc)
        res["upgrade"] = up
    if "slowest" in sections:
        res["slowest_member"] = bench_slowest(args, b)
    if "grid" in sections:
        res["grid"] = bench_grid(args)
    if "devices" in sections:
        res["devices"] = bench_devices(args)
    res["peak_rss_mb_main_process"] = _rss_mb()
    res["machine"]["load_average_end"] = list(os.getloadavg())
    res["wall_s"] = time.perf_counter() - t0
    text = json.dumps(res, indent=1, default=float)
    if args.output:
        from spatialjax.atomic import write_json

        write_json(args.output, res)
    print(text)


if __name__ == "__main__":
    main()
