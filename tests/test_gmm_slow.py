"""Monte Carlo of spatialjax.gmm (slow): over 200 seeds of the heteroskedastic linear IV design
(the one of tests/test_gmm.py, n = 1000), two-step efficient GMM with robust SEs.

* 95% Wald intervals must cover the truth at roughly the nominal rate: with 200 draws the
  number of covering intervals is Binomial(200, 0.95) (sd 3.1 draws, 1.5 points); we accept
  coverage in [0.91, 0.98] (about -2.6 and +2 sd around 0.95; two-step SEs are known to be
  slightly too small in finite samples, Windmeijer 2005, so the band is wider below).
* Hansen's J (df = 2) must reject at roughly its 5% size: Binomial(200, 0.05) has sd 1.5
  points; we accept a rejection rate in [0.015, 0.10].
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import spatialjax  # noqa: F401
from spatialjax import gmm

TRUE = np.array([1.0, 2.0])


def _data(seed, n=1000):
    rng = np.random.default_rng(seed)
    Z = np.column_stack([np.ones(n), rng.standard_normal((n, 3))])
    v = rng.standard_normal(n)
    x = Z[:, 1] + 0.5 * Z[:, 2] + 0.3 * Z[:, 3] + v
    u = (0.5 * v + rng.standard_normal(n)) * np.exp(0.3 * Z[:, 1])
    X = np.column_stack([np.ones(n), x])
    return {"y": X @ TRUE + u, "X": X, "Z": Z}


def g(theta, d):
    e = d["y"] - d["X"] @ theta
    return d["Z"] * e[:, None]


@pytest.mark.slow
def test_monte_carlo_coverage_and_J_size():
    R = 200
    cover = np.zeros((R, 2), bool)
    reject = np.zeros(R, bool)
    for s in range(R):
        r = gmm.estimate(g, jnp.zeros(2), _data(1000 + s))
        assert r.status == "converged", (s, r.status, r.message)
        cover[s] = (r.ci_low <= TRUE) & (TRUE <= r.ci_high)
        reject[s] = r.J_pvalue < 0.05
    rate = cover.mean(axis=0)
    assert np.all((rate >= 0.91) & (rate <= 0.98)), rate
    assert 0.015 <= reject.mean() <= 0.10, reject.mean()
