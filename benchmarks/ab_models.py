"""A/B timing of the models' public solves between two source trees (one process per tree, same machine, same run):

    PYTHONPATH=<tree> python benchmarks/ab_models.py OUT.json

first_s: the first call (compilation included); warm_median_s: the median of the repeats after it.
Used for issue 13 (the tree before the one-engine refactor, 2f6c6ec^, against main)."""
import json, sys, time, statistics
import numpy as np
import jax
import spatialjax
from spatialjax.models import jiao_tian as jt, helsley_strange as hs, thisse_turner_ushchev as ttu, van_vuuren as vv

def block(x):
    jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)
    return x

def timeit(f, reps=5):
    t = time.perf_counter(); block(f()); first = time.perf_counter() - t
    ws = []
    for _ in range(reps):
        t = time.perf_counter(); block(f()); ws.append(time.perf_counter() - t)
    return {"first_s": first, "warm_median_s": statistics.median(ws)}

out = {}
p8, y8 = jt.synthetic_economy(8, 0)
out["jt.solve N=8 (from y_true)"] = timeit(lambda: jt.solve(p8, y8))
p100, y100 = jt.synthetic_economy(100, 0)
out["jt.solve N=100 (from y_true)"] = timeit(lambda: jt.solve(p100, y100 * 1.0 + 0.01))
P = hs.default_params()
out["hs.solve_type_optimum"] = timeit(lambda: hs.solve_type_optimum(P, 0))
out["hs.partition_equilibria"] = timeit(lambda: hs.partition_equilibria(P), reps=2)
out["hs.sweep over alpha, 16 points"] = timeit(lambda: hs.sweep(lambda q: hs.solve_type_optimum(q, 0), P, "alpha", np.linspace(0.9, 1.1, 16)), reps=2)
A = ttu.Params(alpha=0.6, beta=0.3, eps=6.0, tau=1.2)
out["ttu.equilibria"] = timeit(lambda: ttu.equilibria(A), reps=3)
gm = float(A.gamma_m)
out["ttu.sweep_gamma 25"] = timeit(lambda: ttu.sweep_gamma(A, np.linspace(0.0, 3 * gm, 25)), reps=2)
V = vv.Params.panel_b(1.0)
out["vv.solve_market"] = timeit(lambda: vv.solve_market(V), reps=3)
out["vv.solve_planner"] = timeit(lambda: vv.solve_planner(V), reps=3)
Vh = vv.Params.panel_b(1.0, tau=vv.TABLE2_TAU)
out["vv.solve_market_hetero"] = timeit(lambda: vv.solve_market_hetero(Vh), reps=2)
out["vv.sweep_a 3"] = timeit(lambda: vv.sweep_a(V, np.array([1.0, 0.25, 0.55])), reps=2)
json.dump(out, open(sys.argv[1], "w"), indent=1)
for k, v in out.items():
    print(f"{k:32s} first {v['first_s']:8.3f}  warm {v['warm_median_s']:8.4f}")
