#!/usr/bin/env python
"""Coverage of the Jiao-Tian inversion-mode intervals, and where a shortfall comes from (issue 10 §2d).

Usage::

    python benchmarks/mc_jiao_tian_coverage.py run --N 60 --seeds 1 200 --output benchmarks/results/jt_mc_coverage_N60.json
    python benchmarks/mc_jiao_tian_coverage.py analyze benchmarks/results/jt_mc_coverage_N60.json
    python benchmarks/mc_jiao_tian_coverage.py redraw --N 60 --seed 1 --draws 300

``run``: for each seed a replica is drawn by ``jiao_tian_data.generate_replica`` on the N largest
clusters, the stacked GMM is estimated (two-step, as the benchmark's ``--monte-carlo``), and at the
*true* parameters the per-city moments g_n, their mean gbar, S_hat = (1/N) sum g_n g_n' and the
Jacobian G are stored. The JSON is rewritten after every seed (atomically), so a killed run keeps
what it had; ``--resume`` skips the seeds already in the file.

``analyze``: coverage of the 95% intervals per parameter; sd(estimates) / mean(SE); the Monte
Carlo variance of sqrt(N) gbar at the truth against the mean S_hat, moment by moment (a ratio
above 1: the sandwich's S underestimates the moment's variance); the "oracle" SE (the sandwich with
S replaced by the Monte Carlo variance) against the spread of the estimates; the SE factor each
parameter would need for 95% coverage.

``redraw``: one economy held fixed, only the Poisson links and the manager incomes redrawn: the
variance of the gravity and income moments conditional on the economy against the mean S_hat.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

T_SHIFTERS = ("log_population", "productivity_shifter")
PARAMS = ("theta", "gamma", "delta_d", "delta_I")


def _atomic_json(obj, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def run(N, first, last, output, shifters=T_SHIFTERS, resume=False):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import spatialjax  # noqa: F401
    from spatialjax import gmm
    from spatialjax.models import jiao_tian_calibration as jc
    from spatialjax.models import jiao_tian_data as jd

    doc = {"benchmark": "mc_jiao_tian_coverage", "N": N, "technology_shifters": list(shifters),
           "weighting": "two-step", "cov": "robust (one row per city)", "rows": []}
    if resume and Path(output).exists():
        doc = json.load(open(output))
    done = {r["seed"] for r in doc["rows"]}
    geo = jd.geography(N)
    t0 = time.perf_counter()
    for seed in range(first, last + 1):
        if seed in done:
            continue
        rep = jd.generate_replica(geo, seed=seed)
        if not rep.converged:
            doc["rows"].append(dict(seed=seed, replica_converged=False))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rep.write(tmp)
            data = jd.load(tmp)
        tv = jc.true_values(data)
        pr = jc.problem_from_data(data, technology_shifters=tuple(shifters),
                                  theta0=dict(theta=3.5, gamma=0.02, delta_d=0.3, delta_I=0.0),
                                  bounds={"theta": (2.2, 20.0), "gamma": (0.0, 0.2)})
        th = {k: jnp.asarray(tv[k]) for k in PARAMS}
        gi = np.asarray(pr.moments(th, pr.data))
        J = jax.jacfwd(lambda t: jnp.mean(pr.moments(t, pr.data), axis=0))(th)
        G = np.column_stack([np.asarray(J[k]) for k in PARAMS])
        r = gmm.estimate(pr.moments, pr.theta0, pr.data, bounds=pr.bounds, options=pr.estimator["options"])
        doc["rows"].append(dict(seed=seed, replica_converged=True, converged=bool(r.converged),
                                gbar=gi.mean(0).tolist(), S=(gi.T @ gi / N).tolist(), G=G.tolist(),
                                first_stage_F=rep.truth["stats"]["first_stage_F"],
                                est=[float(r.params[k]) for k in PARAMS], se=[float(r.se[k]) for k in PARAMS],
                                truth=[tv[k] for k in PARAMS], small_sample=r.small_sample))
        doc["wall_s"] = doc.get("wall_s", 0.0) + (time.perf_counter() - t0)
        t0 = time.perf_counter()
        _atomic_json(doc, output)
        print(f"seed {seed}: {len(doc['rows'])} rows, {doc['wall_s']:.0f} s", flush=True)
        if len(doc["rows"]) % 15 == 0:
            # every new data set compiles a few eager while-loops (the profiled PPML under jacfwd);
            # their code pages would exhaust the kernel's 65,530 memory mappings after ~60 seeds
            jax.clear_caches()
    return doc


def analyze(paths):
    import numpy as np
    from scipy import stats

    rows, N = [], None
    for p in paths:
        d = json.load(open(p))
        N = d["N"] if N is None else N
        if d["N"] != N:
            sys.exit(f"{p}: N = {d['N']}, the other files have N = {N}")
        rows += [{**r, "technology_shifters": d.get("technology_shifters", list(T_SHIFTERS))}
                 for r in d["rows"] if r.get("replica_converged") and r.get("converged")]
    finite = [bool(np.all(np.isfinite(r["se"]))) for r in rows]
    n_bad = len(rows) - sum(finite)
    rows = [r for r, f in zip(rows, finite) if f]
    n = len(rows)
    g = np.array([r["gbar"] for r in rows])
    S = np.array([r["S"] for r in rows])
    G = np.array([r["G"] for r in rows])
    est = np.array([r["est"] for r in rows])
    se = np.array([r["se"] for r in rows])
    tr = np.array(rows[0]["truth"])
    k = g.shape[1]
    mnames = ["gravity_delta_d", "gravity_delta_I", "income"] + [f"iv_{i + 1}" for i in range(k - 3)]
    V_mc = np.cov(g.T) * N
    S_m = S.mean(0)
    Gm = G.mean(0)
    V_or = np.linalg.inv(Gm.T @ np.linalg.inv(V_mc) @ Gm) / N
    V_sh = np.linalg.inv(Gm.T @ np.linalg.inv(S_m) @ Gm) / N
    z = np.abs(est - tr) / se
    crit_t = stats.t.ppf(0.975, N - len(PARAMS))
    # Small-sample intervals (gmm df_correction, the default since 2026-12-06): SE x sqrt(N/(N-p-K))
    # and t(N-p-K), K = 1 + the technology shifters (the concentrated pi). Rows stored before then
    # carry asymptotic SEs (no "small_sample" entry): they are rescaled here, exactly (the estimates
    # do not depend on the correction).
    K = 1 + len(rows[0]["technology_shifters"])
    dof = N - len(PARAMS) - K
    asym = np.array([r.get("small_sample") is None for r in rows])
    z_ss = np.where(asym[:, None], z / np.sqrt(N / dof), z)
    crit_ss = stats.t.ppf(0.975, dof)
    z = np.where(asym[:, None], z, z * np.sqrt(N / dof))  # the asymptotic z for every row
    out = {"N": N, "replicas": n, "dropped_nonfinite_se": n_bad, "coverage_mc_se": float(np.sqrt(0.95 * 0.05 / n)),
           "coverage_all": float((z <= 1.96).mean()), "coverage_all_small_sample": float((z_ss <= crit_ss).mean()),
           "small_sample_df": int(dof), "per_parameter": {}, "moments": {}}
    for j, p in enumerate(PARAMS):
        out["per_parameter"][p] = dict(
            coverage=float((z[:, j] <= 1.96).mean()), coverage_t=float((z[:, j] <= crit_t).mean()),
            coverage_small_sample=float((z_ss[:, j] <= crit_ss).mean()),
            sd=float(est[:, j].std(ddof=1)), mean_se=float(se[:, j].mean()),
            sd_over_mean_se=float(est[:, j].std(ddof=1) / se[:, j].mean()),
            oracle_se=float(np.sqrt(V_or[j, j])), se_mean_S_at_truth=float(np.sqrt(V_sh[j, j])),
            bias_over_sd=float((est[:, j].mean() - tr[j]) / est[:, j].std(ddof=1)),
            se_factor_for_95=float(np.quantile(z[:, j], 0.95) / 1.96))
    for i, m in enumerate(mnames):
        out["moments"][m] = dict(var_mc_over_mean_S=float(V_mc[i, i] / S_m[i, i]),
                                 mean_over_sd=float(np.sqrt(N) * g[:, i].mean() / np.sqrt(V_mc[i, i])))
    if n_bad:
        print(f"{n_bad} converged fits with a non-finite SE left out (the estimator flags them)")
    print(f"N = {N}, {n} replicas; Monte Carlo SE of a coverage near 0.95: {out['coverage_mc_se']:.3f}")
    print(f"all 4n intervals: coverage {out['coverage_all']:.3f} (asymptotic), "
          f"{out['coverage_all_small_sample']:.3f} (small-sample, t({dof}))")
    print(f"{'parameter':10s} {'cover':>6s} {'cover_t':>7s} {'cover_ss':>8s} {'sd/SE':>6s} {'oracle/sd':>9s} {'factor95':>8s}")
    for p, v in out["per_parameter"].items():
        print(f"{p:10s} {v['coverage']:6.3f} {v['coverage_t']:7.3f} {v['coverage_small_sample']:8.3f} "
              f"{v['sd_over_mean_se']:6.3f} {v['oracle_se'] / v['sd']:9.3f} {v['se_factor_for_95']:8.3f}")
    print("moment           var_MC / mean S_hat (at the truth)")
    for m, v in out["moments"].items():
        print(f"{m:16s} {v['var_mc_over_mean_S']:6.3f}")
    return out


def redraw(N, seed, draws):
    import jax
    import jax.numpy as jnp
    import numpy as np
    from scipy.special import gamma as gamma_fn

    import spatialjax  # noqa: F401
    from spatialjax.models import jiao_tian_calibration as jc
    from spatialjax.models import jiao_tian_data as jd

    rep = jd.generate_replica(jd.geography(N), seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        rep.write(tmp)
        base = jc.as_data(jd.load(tmp))
    tv = jc.true_values(base)
    th = {k: jnp.asarray(tv[k]) for k in PARAMS}
    sol = rep.solution
    lam = float(rep.truth["links_per_manager"]) * np.asarray(sol.Lm)[:, None] * np.asarray(sol.x)
    kappa = tv["theta"] * (1 - tv["beta"])
    scale = np.asarray(sol.Epi) / gamma_fn(1 - 1 / kappa)
    f = jax.jit(lambda d: (jc.inversion_moments(th, d), jc.inversion_variance_moments(th, d)))
    rng = np.random.default_rng(1000 + seed)
    gs, Ss, Hs = [], [], []
    for _ in range(draws):
        X = rng.poisson(lam).astype(float)
        u = rng.uniform(size=base.income_city.size)
        inc = scale[base.income_city] * (-np.log(u)) ** (-1.0 / kappa)
        d, _ = jc.prepare(types.SimpleNamespace(**{**vars(base), "X": X, "income": inc}), technology_shifters=T_SHIFTERS)
        gi, hi = (np.asarray(a) for a in f(d))
        gs.append(gi.mean(0))
        Ss.append(gi.T @ gi / N)
        Hs.append(hi.T @ hi / N)
    gs, Ss, Hs = np.array(gs), np.array(Ss), np.array(Hs)
    V = np.diag(np.cov(gs.T) * N)
    names = ["gravity_delta_d", "gravity_delta_I", "income"]
    res = {}
    for lab, SS in (("plain", Ss), ("hc2", Hs)):
        ratio = V / np.diag(SS.mean(0))
        res[lab] = {m: float(ratio[i]) for i, m in enumerate(names)}
        print(f"N {N}, seed {seed}, {draws} redraws of links and incomes, S from the {lab} rows: var / mean S_hat "
              + ", ".join(f"{m} {v:.3f}" for m, v in res[lab].items()) + f" (sampling sd ~{np.sqrt(2 / draws):.3f})")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("run", help="estimate on replica seeds and store the moments at the truth")
    a.add_argument("--N", type=int, default=60)
    a.add_argument("--seeds", type=int, nargs=2, default=[1, 200], metavar=("FIRST", "LAST"))
    a.add_argument("--technology-shifters", default=",".join(T_SHIFTERS))
    a.add_argument("--output", required=True)
    a.add_argument("--resume", action="store_true", help="skip seeds already in --output")
    b = sub.add_parser("analyze", help="coverage and the decomposition of the SE shortfall")
    b.add_argument("files", nargs="+")
    b.add_argument("--output", help="write the summary as JSON")
    c = sub.add_parser("redraw", help="one economy fixed, links and incomes redrawn")
    c.add_argument("--N", type=int, default=60)
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--draws", type=int, default=300)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        run(args.N, args.seeds[0], args.seeds[1], args.output, tuple(args.technology_shifters.split(",")), args.resume)
    elif args.cmd == "analyze":
        out = analyze(args.files)
        if args.output:
            _atomic_json(out, args.output)
    else:
        redraw(args.N, args.seed, args.draws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
