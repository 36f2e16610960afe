#!/usr/bin/env python
"""Benchmark of the estimation layer (issue 9): objective + gradient through an equilibrium.

Usage::

    python benchmarks/bench_gmm.py                     # p = 5 and 50, writes benchmarks/results/gmm_cpu.json
    python benchmarks/bench_gmm.py --quick             # fewer repeats, no full estimations at p = 50
    python benchmarks/bench_gmm.py --sizes 5 20 50 --output other.json

The example is the one of tests/test_gmm_inference.py, scaled: ``M`` markets with logit demand
and isoelastic supply in ``T = 2`` scenarios (known supply shifters ``c_t``); the equilibrium
prices of each scenario solve ``log D_j - log S_j = 0`` (:func:`spatialjax.solver.solve_root`,
implicit derivatives). Parameters ``theta = (alpha, beta, a_1..a_M)``: ``p = M + 2`` (5 and 50).
Micro data: ``n`` noisy measurements of the ``2 M T`` equilibrium prices and quantities; the GMM
objective ``Q = gbar' W gbar`` (W = identity).

For each p, per evaluation of (Q, dQ/dtheta):

* ``implicit``: ``jax.value_and_grad`` (one equilibrium solve forward; the backward pass is one
  adjoint linear solve with the saved factorisation, no new equilibrium solve);
* ``fd_vmap``: central finite differences, the ``2p`` perturbed objectives batched with ``vmap``
  (what ``options["jacobian"] = "fd"`` in :mod:`spatialjax.gmm` does), plus Q itself;
* ``fd_loop``: the same differences as a Python loop of ``2p + 1`` jitted objective calls.

The number of equilibrium solves per evaluation is counted with a host callback next to the
solve (``jax.debug.callback`` runs once per solve, also under ``vmap``), not assumed. Times are
wall-clock medians after compilation (``jax.block_until_ready``; at least ``--repeats`` calls and
0.5 s in all); ratios are FD / implicit in
the same run. Unless ``--no-estimate`` (and, with ``--quick``, only at p = 5): a full
``gmm.estimate`` (identity W) with autodiff and (at p = 5, or with ``--fd-estimate-large``)
with ``jacobian="fd"``: wall time of a warm second
call (compiled functions are cached; the first call, with compilation, is ``first_call_s``),
iterations and objective evaluations.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(p: int, n: int, seed: int, count=None):
    """The scaled economy: returns (g, theta_true, data, levels)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from spatialjax.solver import solve_root

    M, T = p - 2, 2
    rng = np.random.default_rng(seed)
    a_true = rng.uniform(-0.5, 0.5, M)
    c = jnp.asarray(np.stack([rng.uniform(-0.2, 0.2, M), rng.uniform(-0.2, 0.2, M) + 0.3]))  # (T, M)
    logN = 1.0 + np.log(M)

    def excess(y, args):
        alpha, beta, a, ct = args
        v = a - alpha * jnp.exp(y)
        return logN + v - jnp.log1p(jnp.sum(jnp.exp(v))) - ct - beta * y

    def levels(th):
        if count is not None:
            jax.debug.callback(count, th["alpha"])  # one call per equilibrium solve (all T scenarios)

        def one(ct):
            s = solve_root(excess, jnp.zeros(M), (th["alpha"], th["beta"], th["a"], ct), tol=1e-12)
            return jnp.concatenate([jnp.exp(s.value), jnp.exp(ct + th["beta"] * s.value)]), s.converged

        lv, ok = jax.vmap(one)(c)
        return lv.ravel(), jnp.all(ok)

    theta = {"alpha": jnp.asarray(1.0), "beta": jnp.asarray(0.5), "a": jnp.asarray(a_true)}
    lv, ok = jax.jit(levels)(theta)
    assert bool(ok)
    sd = rng.uniform(0.05, 0.12, lv.shape[0])
    obs = np.asarray(lv)[None, :] * (1 + sd[None, :] * rng.standard_normal((n, lv.shape[0])))

    def g(th, d):
        lv, ok = levels(th)
        return d["obs"] - lv[None, :], ok

    return g, theta, {"obs": obs}, levels


def _median_time(fn, repeats, min_total_s=0.5):
    import jax
    import numpy as np

    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    ts = []
    while len(ts) < repeats or (sum(ts) < min_total_s and len(ts) < 500):  # sub-ms calls: enough repeats
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return first, float(np.median(ts)), ts


def bench_size(p: int, a) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.flatten_util import ravel_pytree

    from spatialjax import gmm

    counter = [0]
    g_count, theta, data, _ = build(p, a.n, a.seed, count=lambda *_: counter.__setitem__(0, counter[0] + 1))
    g, _, _, _ = build(p, a.n, a.seed)
    flat0, unravel = ravel_pytree(theta)
    th_eval = flat0 * 1.02  # away from the truth
    obs = jnp.asarray(data["obs"])

    def make_Q(gf):
        def Q(v):
            gi, ok = gf(unravel(v), {"obs": obs})
            gb = jnp.mean(gi, axis=0)
            return gb @ gb
        return Q

    def fd_parts(Q):
        h = 6.06e-6 * (1 + jnp.abs(th_eval))

        def vmapped(v):
            E = jnp.diag(h)
            qp, qm = jax.vmap(Q)(v + E), jax.vmap(Q)(v - E)
            return Q(v), (qp - qm) / (2 * h)
        return h, vmapped

    out = {"p": p, "M": p - 2, "T": 2, "n_obs": a.n, "k": 2 * (p - 2) * 2}
    res = {}
    for label, gf in (("count", g_count), ("time", g)):
        Q = make_Q(gf)
        vg = jax.jit(jax.value_and_grad(Q))
        h, fdv = fd_parts(Q)
        fdv = jax.jit(fdv)
        Qj = jax.jit(Q)

        def fd_loop():
            q0 = Qj(th_eval)
            gr = []
            for i in range(p):
                e = jnp.zeros(p).at[i].set(h[i])
                gr.append((Qj(th_eval + e) - Qj(th_eval - e)) / (2 * h[i]))
            return q0, jnp.stack(gr)

        if label == "count":
            for name, fn in (("implicit", lambda: vg(th_eval)), ("fd_vmap", lambda: fdv(th_eval)),
                             ("fd_loop", fd_loop)):
                jax.block_until_ready(fn())  # compile (and count the compile-call solves too)
                counter[0] = 0
                jax.block_until_ready(fn())
                res.setdefault(name, {})["solves_per_eval"] = counter[0]
            continue
        _log(f"p={p}: timing implicit")
        first, med, _ = _median_time(lambda: vg(th_eval), a.repeats)
        res["implicit"].update(first_call_s=first, median_s=med)
        q_i, g_i = vg(th_eval)
        _log(f"p={p}: timing fd_vmap")
        first, med, _ = _median_time(lambda: fdv(th_eval), a.repeats)
        res["fd_vmap"].update(first_call_s=first, median_s=med)
        q_f, g_f = fdv(th_eval)
        _log(f"p={p}: timing fd_loop")
        first, med, _ = _median_time(fd_loop, max(1, a.repeats // 2))
        res["fd_loop"].update(first_call_s=first, median_s=med)
        out["grad_rel_diff_fd_vs_implicit"] = float(jnp.max(jnp.abs(g_f - g_i)) / jnp.max(jnp.abs(g_i)))
    for name in ("fd_vmap", "fd_loop"):
        res[name]["time_ratio_vs_implicit"] = res[name]["median_s"] / res["implicit"]["median_s"]
        res[name]["solves_ratio_vs_implicit"] = res[name]["solves_per_eval"] / max(res["implicit"]["solves_per_eval"], 1)
    out["evaluation"] = res

    if a.estimate and not (a.quick and p > 5):
        est, thetas = {}, {}
        th0 = {"alpha": 0.8, "beta": 0.7, "a": np.zeros(p - 2)}
        jacs = ("autodiff", "fd") if (p <= 5 or a.fd_estimate_large) else ("autodiff",)
        if "fd" not in jacs:
            est["fd"] = {"skipped": "a full FD estimation at this p takes > 20 min on the shared 2-core machine "
                                    "(2p+1 solves per evaluation); pass --fd-estimate-large to run it"}
        for jac in jacs:
            _log(f"p={p}: gmm.estimate (identity W, jacobian={jac})")
            run = lambda: gmm.estimate(g, th0, data, weighting="identity",  # noqa: E731
                                       bounds={"alpha": (0.0, None), "beta": (0.0, None)},
                                       options={"jacobian": jac, "max_iter": a.max_iter})
            t = time.perf_counter()
            run()  # first call: includes compilation
            first = time.perf_counter() - t
            t = time.perf_counter()
            r = run()  # compiled functions are cached: the optimisation itself
            est[jac] = {"wall_s": time.perf_counter() - t, "first_call_s": first, "status": r.status,
                        "iterations": r.convergence["iterations"], "stop_reason": r.convergence["stop_reason"],
                        "objective_evals": r.convergence["n_objective_evals"], "objective": r.objective,
                        "max_abs_dev_from_truth": float(np.max(np.abs(r.theta - np.asarray(flat0))))}
            thetas[jac] = r.theta
        if "fd" in thetas:
            est["estimate_max_abs_diff_fd_vs_autodiff"] = float(np.max(np.abs(thetas["fd"] - thetas["autodiff"])))
        out["estimate"] = est
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of parameters p (>= 4); default 5 50")
    ap.add_argument("--n", type=int, default=200, help="observations")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--max-iter", type=int, default=200, help="max optimiser iterations of the full estimations")
    ap.add_argument("--no-estimate", dest="estimate", action="store_false", help="skip the full estimations")
    ap.add_argument("--fd-estimate-large", action="store_true", help="also run the full FD estimation at p > 5")
    ap.add_argument("--quick", action="store_true", help="3 repeats; full estimation only at p = 5")
    ap.add_argument("--output", "-o", type=Path, default=HERE / "results" / "gmm_cpu.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.repeats = 3
    sizes = a.sizes or [5, 50]
    if any(s < 4 for s in sizes):
        ap.error("--sizes: every p must be >= 4 (p = M + 2 with M >= 2 markets)")

    import jax

    import spatialjax
    from spatialjax import atomic

    results = {"benchmark": "gmm objective+gradient through an equilibrium (implicit vs finite differences)",
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "platform": platform.platform(),
               "python": platform.python_version(), "jax": jax.__version__, "spatialjax": spatialjax.__version__,
               "device": str(jax.devices()[0]), "quick": a.quick, "sizes": []}
    for p in sizes:
        r = bench_size(p, a)
        results["sizes"].append(r)
        ev = r["evaluation"]
        print(f"p = {p:3d}: implicit {ev['implicit']['median_s'] * 1e3:8.2f} ms ({ev['implicit']['solves_per_eval']} "
              f"solve) | fd vmap {ev['fd_vmap']['median_s'] * 1e3:8.2f} ms ({ev['fd_vmap']['solves_per_eval']} solves, "
              f"x{ev['fd_vmap']['time_ratio_vs_implicit']:.1f}) | fd loop {ev['fd_loop']['median_s'] * 1e3:8.2f} ms "
              f"({ev['fd_loop']['solves_per_eval']} solves, x{ev['fd_loop']['time_ratio_vs_implicit']:.1f}) | "
              f"grad rel diff {r['grad_rel_diff_fd_vs_implicit']:.1e}")
        if "estimate" in r and "wall_s" in r["estimate"].get("fd", {}):
            e = r["estimate"]
            print(f"          estimate: autodiff {e['autodiff']['wall_s']:.2f} s ({e['autodiff']['objective_evals']} evals, "
                  f"{e['autodiff']['status']}) | fd {e['fd']['wall_s']:.2f} s ({e['fd']['objective_evals']} evals, "
                  f"{e['fd']['status']})")
        atomic.write_json(a.output, results)  # partial results survive a later failure
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
