#!/usr/bin/env python
"""The Jiao-Tian solver near its limit (issue 12, section 1): warm solves at N = 722, 3000, 10,000.

Usage::

    python benchmarks/bench_jiao_tian_scale.py --sizes 722 3000 10000 \
        --output benchmarks/results/jiao_tian_scale_cpu.json
    python benchmarks/bench_jiao_tian_scale.py --sizes 722 --repeats 5      # one size
    python benchmarks/bench_jiao_tian_scale.py --help

For every N and every linear-algebra path a child process (so that peak memory is per row)
builds ``jt.synthetic_economy(N, seed, lam=lam(N))`` (known interior equilibrium ``y_true``),
starts from ``y0 = y_true + perturb * noise`` on (log w, log L^m) and measures:

* one residual evaluation (``jt.residual``, jitted, median of several): the unit in which
  solve times are also reported (``solve / residual``);
* ``jt.solve(params, y0, linear_solver=...)`` with the conditioning diagnostic on (the
  default): first call (compile + solve), then the median wall time and CPU time of
  ``--repeats`` warm calls; status, Newton steps, residual, sigma_min, ||J||;
* the verdict: ``ok`` (status successful and max|y - y_true| <= ``--dist-tol``),
  ``wrong_equilibrium`` (successful elsewhere), ``not_converged`` (any other status);
* peak RSS of the child.

Paths (``--paths``): ``dense`` = factorised Schur-complement Newton (one (N+2) LU reused
while Newton contracts, one more at the solution for sigma_min and the adjoint: the path
``jt.solve`` took at these N before issue 12); ``gmres`` = Newton-Krylov on the matrix-free
Jacobian with the bordered-diagonal Schur preconditioner (``jt.schur_operator``; no N^3
work; the default above ``jt.KRYLOV_MIN_N``). ``dense`` is skipped above ``--dense-max``.
Ratios ``dense / gmres`` are measured in the same run.

A separate row (``--fold``) runs the default path on an economy at (or next to) a fold
(N = 3000 with lam = 1, sigma_min(J) ~ 1e-6 at the constructed equilibrium): its status is
reported; a ``successful`` status there would be checked against y_true like any other row.

Timings are wall-clock on whatever ``jax.devices()[0]`` is; on a shared machine they are
noisy (the CPU time of the child is recorded next to the wall time).
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
TAG = "BENCH_SCALE_JSON:"

# Pair cost lambda of (29) per N: the default territory grows with N at constant city
# density, but the distance kernel d^(-theta delta_d) ~ d^(-0.95) is long-ranged, so more
# cities still integrate the economy; lam rises with N to keep the constructed equilibrium
# away from a fold (sigma_min(J) at y_true: 6.4e-4 at N = 722, 2.3e-4 at N = 3000).
DEFAULT_LAM = {722: 1.0, 3000: 1.35, 10000: 1.6}
GOALS = {"warm_722_s": 0.05, "warm_3000_s": 1.0, "warm_10000_s": 60.0, "mem_10000_GiB": 8.0}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _peak_rss_bytes() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def child(cfg: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import spatialjax  # noqa: F401
    from spatialjax.models import jiao_tian as jt

    N, lam, path = cfg["N"], cfg["lam"], cfg["path"]
    t = time.perf_counter()
    p, y_true = jt.synthetic_economy(N, cfg["seed"], lam=lam)
    t_gen = time.perf_counter() - t
    rng = np.random.default_rng(cfg["seed"] + 1)
    y0 = y_true.at[:2 * N].add(cfg["perturb"] * jnp.asarray(rng.standard_normal(2 * N)))
    out = {"N": N, "lam": lam, "path": path, "generate_s": t_gen}

    logD = jt._log_openness(p)
    res_fn = jax.jit(lambda y, pp, lD: jt.residual(y, pp, 1.0, lD))
    jax.block_until_ready(res_fn(y0, p, logD))
    ts = []
    for _ in range(cfg["residual_repeats"]):
        t = time.perf_counter()
        jax.block_until_ready(res_fn(y0, p, logD))
        ts.append(time.perf_counter() - t)
    out["residual_s"] = float(np.median(ts))
    o = jt.equilibrium_objects(p, jnp.exp(y_true[:N]), jnp.exp(y_true[N:2 * N]))
    out["mean_fragmentation_share"] = float(jnp.mean(1.0 - jnp.diagonal(o.x)))
    del o

    _log(f"N={N} lam={lam} {path}: residual {out['residual_s'] * 1e3:.2f} ms; first solve")
    t = time.perf_counter()
    s = jt.solve(p, y0, linear_solver=path)
    jax.block_until_ready(s.y)
    out["first_call_s"] = time.perf_counter() - t
    walls, cpus = [], []
    for _ in range(cfg["repeats"]):
        t, c = time.perf_counter(), time.process_time()
        s = jt.solve(p, y0, linear_solver=path)
        jax.block_until_ready(s.y)
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    out["warm_s"] = float(np.median(walls)) if walls else out["first_call_s"]
    out["warm_all_s"] = walls
    out["warm_cpu_s"] = float(np.median(cpus)) if cpus else None
    out["compile_s"] = out["first_call_s"] - out["warm_s"] if walls else None
    out["solve_over_residual"] = out["warm_s"] / out["residual_s"]
    dist = float(jnp.max(jnp.abs(s.y - y_true)))
    out.update(status=s.status, steps=int(s.steps), residual=float(s.residual), sigma_min=float(s.sigma_min),
               jac_norm=float(s.solve.jac_norm), dist_to_y_true=dist)
    if s.status == "successful":
        out["verdict"] = "ok" if dist <= cfg["dist_tol"] else "wrong_equilibrium"
    else:
        out["verdict"] = "not_converged"
    out["peak_rss_GiB"] = _peak_rss_bytes() / 2 ** 30
    _log(f"N={N} {path}: warm {out['warm_s']:.3f} s ({out['solve_over_residual']:.0f} residuals), {s.status}, "
         f"dist {dist:.1e}, peak RSS {out['peak_rss_GiB']:.2f} GiB")
    return out


def run_child(cfg: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(cfg)]
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {**cfg, "verdict": "timeout", "timeout_s": timeout}
    sys.stderr.write(r.stderr[-4000:])
    for line in r.stdout.splitlines():
        if line.startswith(TAG):
            out = json.loads(line[len(TAG):])
            out["child_wall_s"] = time.perf_counter() - t
            return out
    return {**cfg, "verdict": "error", "returncode": r.returncode, "stderr_tail": r.stderr[-2000:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[722, 3000])
    ap.add_argument("--paths", nargs="+", default=["dense", "gmres"], choices=["dense", "gmres", "auto"])
    ap.add_argument("--lam", type=float, default=None, help="pair cost lambda for every N (default: per-N table)")
    ap.add_argument("--repeats", type=int, default=3, help="warm repeats (1 for N >= 10000)")
    ap.add_argument("--perturb", type=float, default=0.001)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dist-tol", type=float, default=1e-6)
    ap.add_argument("--dense-max", type=int, default=3000, help="skip the dense path above this N")
    ap.add_argument("--fold", action="store_true", help="add the fold row (N = 3000, lam = 1, default path)")
    ap.add_argument("--timeout", type=float, default=1500.0, help="per-row time budget (s)")
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child is not None:
        print(TAG + json.dumps(child(json.loads(a.child))), flush=True)
        return 0

    import jax

    rows = []
    for N in a.sizes:
        lam = a.lam if a.lam is not None else DEFAULT_LAM.get(N, 1.0)
        for path in a.paths:
            if path == "dense" and N > a.dense_max:
                continue
            cfg = dict(N=N, lam=lam, path=path, seed=a.seed, perturb=a.perturb, dist_tol=a.dist_tol,
                       repeats=a.repeats if N < 10000 else min(a.repeats, 1), residual_repeats=7 if N < 10000 else 3)
            rows.append(run_child(cfg, a.timeout))
        by = {r["path"]: r for r in rows if r.get("N") == N}
        if "dense" in by and "gmres" in by and by["dense"].get("verdict") == "ok" and by["gmres"].get("verdict") == "ok":
            by["gmres"]["speedup_vs_dense"] = by["dense"]["warm_s"] / by["gmres"]["warm_s"]
    if a.fold:
        cfg = dict(N=3000, lam=1.0, path="auto", seed=a.seed, perturb=a.perturb, dist_tol=a.dist_tol, repeats=1,
                   residual_repeats=3, fold_row=True)
        rows.append(run_child(cfg, a.timeout))
    meta = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), jax=jax.__version__, device=str(jax.devices()[0]),
                platform=platform.platform(), cpu_count=os.cpu_count(), goals=GOALS,
                load_average=os.getloadavg(), argv=sys.argv[1:])
    result = {"meta": meta, "rows": rows}
    for r in rows:
        print(f"N={r.get('N')} lam={r.get('lam')} {r.get('path')}: {r.get('verdict')} warm {r.get('warm_s')} s "
              f"({r.get('solve_over_residual')} residuals) status {r.get('status')} steps {r.get('steps')} "
              f"sigma_min {r.get('sigma_min')} dist {r.get('dist_to_y_true')} RSS {r.get('peak_rss_GiB')} GiB")
    if a.output is not None:
        a.output.parent.mkdir(parents=True, exist_ok=True)
        old = {}
        if a.output.exists():
            old = json.loads(a.output.read_text())
        # keep rows of other (N, path, lam) from earlier runs, replace the ones re-run
        key = lambda r: (r.get("N"), r.get("path"), r.get("lam"), bool(r.get("fold_row")))  # noqa: E731
        merged = {key(r): r for r in old.get("rows", [])}
        merged.update({key(r): {**r, "run_date": meta["date"]} for r in rows})
        result["rows"] = sorted(merged.values(), key=lambda r: (r.get("N", 0), str(r.get("path")), r.get("lam", 0)))
        result["runs"] = old.get("runs", []) + [meta]
        a.output.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
