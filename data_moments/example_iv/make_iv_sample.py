"""Simulate ``iv_sample.csv``: the model-free worked example of ``calibration/example_iv.toml``.

Data-generating process (all draws from ``numpy.random.default_rng(SEED)``), for
observations ``i = 1..N`` in ``G`` clusters (``cluster = i mod G``):

    z1, z2, z3 ~ N(0, 1)                          excluded instruments
    x1 ~ N(0, 1)                                  exogenous regressor
    a_c ~ N(0, 0.5^2)                             cluster effect in the error
    v ~ N(0, 1)
    e = a_c + 0.8 v + (0.5 + 0.5 |z1|) eps,  eps ~ N(0, 1)   (heteroskedastic, clustered)
    x2 = 0.3 + 0.8 z1 + 0.5 z2 - 0.4 z3 + 0.3 x1 + v         endogenous (corr(x2, e) != 0)
    y  = BETA_CONST + BETA_X1 x1 + BETA_X2 x2 + e

True parameters: const = 1.0, x1 = 0.5, x2 = -1.0. Moments E[z (y - x'beta)] = 0 with
z = (const, x1, z1, z2, z3): 5 moments, 3 parameters (over-identified by 2).

Run from the repository root: ``python data_moments/example_iv/make_iv_sample.py``.
"""

from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20261202
N = 600
G = 60
BETA_CONST, BETA_X1, BETA_X2 = 1.0, 0.5, -1.0


def simulate(seed: int = SEED, n: int = N, g: int = G) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3))
    x1 = rng.standard_normal(n)
    cluster = np.arange(n) % g
    a = 0.5 * rng.standard_normal(g)[cluster]
    v = rng.standard_normal(n)
    e = a + 0.8 * v + (0.5 + 0.5 * np.abs(z[:, 0])) * rng.standard_normal(n)
    x2 = 0.3 + 0.8 * z[:, 0] + 0.5 * z[:, 1] - 0.4 * z[:, 2] + 0.3 * x1 + v
    y = BETA_CONST + BETA_X1 * x1 + BETA_X2 * x2 + e
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "z1": z[:, 0], "z2": z[:, 1], "z3": z[:, 2],
                         "cluster": cluster})


if __name__ == "__main__":
    out = Path(__file__).with_name("iv_sample.csv")
    simulate().to_csv(out, index=False, float_format="%.17g")
    print(f"wrote {out}")
