"""The NumPy/SciPy baselines of benchmarks/baselines.py are correct implementations.

They are only worth comparing against if they solve the same equations: every check here
is against the model's own ``jt.residual`` (independent JAX code). No wall-clock assertions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import baselines as B  # noqa: E402
from spatialjax.models import jiao_tian as jt  # noqa: E402

N = 8


@pytest.fixture(scope="module")
def economy():
    params, y_true = jt.synthetic_economy(N, seed=0)
    return params, np.asarray(y_true), B.np_params(params)


@pytest.fixture(scope="module")
def jt_res(economy):
    params = economy[0]
    f = jax.jit(lambda y: jt.residual(y, params))
    return lambda y: np.asarray(f(jnp.asarray(y)))


def _warm(y_true, eps=0.01, seed=1):
    rng = np.random.default_rng(seed)
    y0 = y_true.copy()
    y0[: 2 * N] += eps * rng.standard_normal(2 * N)
    return y0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 1.0))
def test_numpy_residual_equals_jt_residual(economy, jt_res, seed, scale):
    """The NumPy equilibrium system (8), (9), (11), (13), (14), (16)-(19) is the model's, at arbitrary y."""
    _, y_true, q = economy
    y = y_true + scale * np.random.default_rng(seed).standard_normal(y_true.shape)
    np.testing.assert_allclose(B.np_residual(y, q), jt_res(y), rtol=1e-10, atol=1e-11)


def test_known_equilibrium_is_a_fixed_point_of_both_iterations(economy):
    """y_true solves (60) for every aux, and is a fixed point of the damped loop for every damping."""
    _, y_true, q = economy
    logw, logLm = y_true[:N], y_true[N:2 * N]
    for aux in (-2.0, 0.0, 10.0, 100.0):
        np.testing.assert_allclose(B.appendix_g_map(q, logw, aux), logw, atol=1e-12)
    for d in (0.05, 0.5, 1.0):
        w1, m1 = B.damped_step(q, logw, logLm, d)
        np.testing.assert_allclose(w1, logw, atol=1e-12)
        np.testing.assert_allclose(m1, logLm, atol=1e-12)
    # and a non-equilibrium point is not: the maps do move it
    w_bad = logw + 0.05 * np.cos(np.arange(N))
    assert np.max(np.abs(B.appendix_g_map(q, w_bad, 0.0) - w_bad)) > 1e-3


@pytest.mark.parametrize("damping", [0.2, 0.5])
def test_damped_loop_converges_to_an_equilibrium_of_the_model(economy, jt_res, damping):
    """When the damped loop reports convergence, its point solves the model (jt.residual).

    It also reproduces the equilibrium-selection finding of issue 2: from a warm start 0.01
    away from the interior equilibrium it ends at a degenerate equilibrium (almost all
    managers in one city), far from y_true."""
    _, y_true, q = economy
    r = B.damped_fixed_point(q, _warm(y_true), damping=damping, tol=1e-10, max_iter=5000)
    assert r.status == "converged", r
    assert np.max(np.abs(jt_res(r.y))) <= 1e-9
    assert np.max(np.abs(r.y - y_true)) > 1.0
    assert np.exp(r.y[N:2 * N]).min() < 1e-20 * q.Lm_total


@pytest.mark.parametrize("aux,damping", [(0.0, 0.5), (10.0, 1.0)])
def test_appendix_g_converges_to_an_equilibrium_of_the_model(economy, jt_res, aux, damping):
    """Appendix G (eq. (60)) with damping: converged points solve the model; like the damped
    loop, it selects a degenerate equilibrium at the Table 5 parameters (issue 2)."""
    _, y_true, q = economy
    r = B.appendix_g(q, _warm(y_true), aux=aux, damping=damping, tol=1e-10, max_iter=5000)
    assert r.status == "converged", r
    assert np.max(np.abs(jt_res(r.y))) <= 1e-9
    assert np.exp(r.y[N:2 * N]).min() < 1e-20 * q.Lm_total


def test_baselines_stop_at_known_equilibrium_without_iterating(economy):
    _, y_true, q = economy
    for r in (B.damped_fixed_point(q, y_true), B.appendix_g(q, y_true)):
        assert r.status == "converged" and r.iterations == 0
        np.testing.assert_allclose(r.y, y_true, atol=1e-12)


def test_iteration_cap_is_reported(economy):
    _, y_true, q = economy
    r = B.damped_fixed_point(q, _warm(y_true), damping=0.05, max_iter=3)
    assert r.status == "max_iter" and r.iterations == 3 and r.residual > 1e-10
    r = B.appendix_g(q, _warm(y_true), aux=100.0, damping=0.1, max_iter=3)
    assert r.status == "max_iter" and not r.converged


def test_wage_level_clears_the_worker_market(economy):
    """_level_wages rescales wages so that labour demand (19) adds up to L^p exactly (18)."""
    _, y_true, q = economy
    logw = y_true[:N] + 0.3
    lw = B._level_wages(q, logw, y_true[N:2 * N], B._log_delta_T(q))
    o = B.np_objects(q, lw, y_true[N:2 * N])
    assert o["Lp"].sum() == pytest.approx(q.Lp_total, rel=1e-12)
    np.testing.assert_allclose(lw, y_true[:N], atol=1e-12)  # the level shift is undone exactly


def test_scipy_root_finds_the_known_equilibrium_and_reports_failure(economy, jt_res):
    _, y_true, _ = economy
    r = B.scipy_root(jt_res, _warm(y_true), method="hybr", tol=1e-10)
    assert r.status == "converged"
    assert np.max(np.abs(jt_res(r.y))) <= 1e-10
    np.testing.assert_allclose(r.y, y_true, atol=1e-8)
    bad = B.scipy_root(jt_res, _warm(y_true, eps=0.5), method="hybr", tol=1e-10, maxfev=3)
    assert not bad.converged and bad.residual > 1e-10


def test_verdict_classifies_wrong_equilibria_as_failures():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_jiao_tian as bench

    assert bench._verdict(True, 1e-9, 1e-6) == "ok"
    assert bench._verdict(True, 85.0, 1e-6) == "wrong_equilibrium"
    assert bench._verdict(True, float("nan"), 1e-6) == "wrong_equilibrium"
    assert bench._verdict(False, 0.0, 1e-6) == "not_converged"
    runs = [dict(method="m", verdict="wrong_equilibrium", seconds=0.01),
            dict(method="m", verdict="ok", seconds=5.0)]
    assert bench._best(runs, "m")["verdict"] == "ok"  # a slow correct run beats a fast wrong one
