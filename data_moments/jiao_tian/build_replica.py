"""Rebuild the replica economies ``us722/`` and ``replica60/`` — model-generated on real US geography.

Each is drawn by :func:`spatialjax.models.jiao_tian_data.generate_replica` at the paper's
Table 5 parameters with a fixed seed, on the committed ``geography.csv`` (all 722 clusters, or
the 60 largest). The script refuses to write a replica whose equilibrium solve did not
converge or is degenerate (a city with under 1e-6 of the managers), and prints the summary.

    python data_moments/jiao_tian/build_replica.py            # both
    python data_moments/jiao_tian/build_replica.py replica60  # one

Nothing is downloaded. These files are NOT US data.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPLICAS = {"us722": dict(n=None, seed=722), "replica60": dict(n=60, seed=60)}


def build(name: str):
    from spatialjax.models import jiao_tian_data as jd

    spec = REPLICAS[name]
    rep = jd.generate_replica(spec["n"], seed=spec["seed"])
    print(rep.summary())
    s = rep.truth["solve"]
    share = s["min_Lm"] / rep.truth["parameters"]["Lm_total"]
    own = rep.links[rep.links["origin"] == rep.links["destination"]]
    if len(own) < rep.geography.N:
        raise SystemExit(f"{name}: not written: {rep.geography.N - len(own)} cities have no own-city link "
                         "(X_nn = 0), which eq. (33) cannot use; choose another seed or a larger M")
    if not rep.converged or share < 1e-6:
        raise SystemExit(f"{name}: not written: solve status {s['status']}, converged {s['converged']}, "
                         f"min L^m share {share:.2e}")
    paths = rep.write(HERE / name)
    print("wrote " + ", ".join(str(p.relative_to(HERE)) for p in paths.values()))
    return rep


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(REPLICAS)
    bad = [n for n in names if n not in REPLICAS]
    if bad:
        print(f"unknown replica(s) {bad}; available: {list(REPLICAS)}", file=sys.stderr)
        return 2
    for n in names:
        build(n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
