"""Tests of spatialjax.models.jiao_tian_sweeps: every city's internet upgrade as one batched
computation (chord iterations with the baseline's factorised Jacobian, Newton polish).

The reference for every scenario is an independent warm ``jt.solve`` of the upgraded economy
(its own Newton iteration, Jacobians and factorisations), run in a Python loop.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import spatialjax  # noqa: F401
from spatialjax.errors import ParameterError
from spatialjax.models import jiao_tian as jt
from spatialjax.models import jiao_tian_counterfactuals as cf
from spatialjax.models import jiao_tian_sweeps as js

N = 24
DQ = 0.4


@pytest.fixture(scope="module")
def base():
    return cf.synthetic_baseline(N, seed=3)


@pytest.fixture(scope="module")
def grad(base):
    return cf.welfare_gradient(base, fd_cities=0)


@pytest.fixture(scope="module")
def sweep_all(base, grad):
    return js.upgrade_each_city_from_baseline(base, DQ, gradient=grad, batch_size=8)


@pytest.fixture(scope="module")
def loop_all(base):
    return js.upgrade_loop(base.params, base.sol, DQ, q=base.q, delta_I=base.delta_I)


def test_rank_two_change_of_tau(base):
    """Only row c and column c of log tau change, by delta_I dq q_k (eq. 29-30), off the diagonal."""
    c = 5
    p1 = js.upgrade_params(base.params, c, DQ, base.q, base.delta_I)
    d = np.log(np.asarray(p1.tau)) - np.log(np.asarray(base.params.tau))
    q = np.asarray(base.q)
    expected = np.zeros((N, N))
    expected[c, :] = base.delta_I * DQ * q
    expected[:, c] = base.delta_I * DQ * q
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(d, expected, atol=1e-13)
    assert np.linalg.matrix_rank(d, tol=1e-12) == 2
    # the log openness handed to the residual is -theta log tau', zero on the diagonal
    logD = np.asarray(js.upgrade_log_openness(base.params, c, DQ, base.q, base.delta_I))
    off = 1 - np.eye(N)
    np.testing.assert_allclose(logD, -float(base.params.theta) * np.log(np.asarray(p1.tau)) * off, atol=1e-12)


def test_sweep_equals_loop_of_warm_solves(sweep_all, loop_all):
    df, ref = sweep_all.frame, loop_all
    assert len(df) == N and list(df["city"]) == list(range(N))
    assert (ref["status"] == "successful").all()
    assert sweep_all.status == "successful" and df["converged"].all()
    # the chord iteration does the work: most scenarios never need a Newton step
    assert (df["method"] == "chord").sum() >= N - 3
    assert (df.loc[df["method"] == "chord", "newton_iterations"] == 0).all()
    assert df["residual"].max() <= 1e-10
    np.testing.assert_allclose(sweep_all.values, ref.attrs["values"], rtol=0, atol=1e-7)
    for col in ("dlogUw", "dlogUm", "skill_share_slope"):
        a, b = df[col].to_numpy(), ref[col].to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9 * np.max(np.abs(b)))
    # an upgrade raises someone's welfare: not a zero shock
    assert np.max(np.abs(df["dlogUw"])) > 1e-4


def test_solutions_solve_the_upgraded_economies(base, sweep_all):
    """Independent check: the returned y is a root of jt.residual at the upgraded tau."""
    for c in (0, 7, N - 1):
        p1 = js.upgrade_params(base.params, c, DQ, base.q, base.delta_I)
        r = np.asarray(jt.residual(jnp.asarray(sweep_all.values[c]), p1))
        assert np.max(np.abs(r)) <= 1e-9


def test_first_order_predictions(base, grad, sweep_all):
    """The gradient map and the one-chord-step answer agree with the nonlinear answer to first
    order: the error shrinks like dq^2 (halving dq cuts it by about 4)."""
    df = sweep_all.frame
    c = int(np.argmax(np.abs(df["dlogUw"])))
    errs = {}
    for dq in (0.02, 0.01):
        r = js.upgrade_each_city(base.params, base.sol, dq, q=base.q, delta_I=base.delta_I, cities=[c],
                                 gradient=grad).frame.iloc[0]
        assert r["status"] == "successful"
        errs[dq] = (abs(r["linear_workers_pct"] - r["workers_pct"]), abs(r["chord1_workers_pct"] - r["workers_pct"]),
                    abs(r["workers_pct"]))
    for k in (0, 1):
        assert errs[0.02][k] < 0.1 * errs[0.02][2]
        ratio = errs[0.02][k] / errs[0.01][k]
        assert 2.5 < ratio < 6.0, ratio


def test_polish_path_equals_loop(base, loop_all):
    """rho_max tiny: every chord stops at once, every scenario is re-solved by Newton."""
    cities = [1, 4, 9]
    r = js.upgrade_each_city(base.params, base.sol, DQ, q=base.q, delta_I=base.delta_I, cities=cities,
                             rho_max=1e-12)
    df = r.frame
    assert (df["chord_status"] == "stalled").all() and (df["method"] == "newton").all()
    assert (df["status"] == "successful").all() and (df["newton_iterations"] > 0).all()
    np.testing.assert_allclose(r.values, loop_all.attrs["values"][cities], atol=1e-8)


def test_failed_scenarios_are_reported_and_do_not_poison(base):
    """A batch with an unsolvable (NaN) upgrade, one that pushes tau below 1, and one the Newton
    chord cannot finish in one step: all stay in the table with their status; the others equal
    the clean batch's answers exactly."""
    cities = np.array([2, 3, 6, 8, 11])
    dq = np.array([DQ, np.nan, DQ, 1e4, DQ])
    clean = js.upgrade_each_city(base.params, base.sol, DQ, q=base.q, delta_I=base.delta_I, cities=cities[[0, 2, 4]])
    r = js.upgrade_each_city(base.params, base.sol, dq, q=base.q, delta_I=base.delta_I, cities=cities)
    df = r.frame
    assert len(df) == 5 and list(df["city"]) == cities.tolist()
    assert df["status"].tolist() == ["successful", "rejected", "successful", "rejected", "successful"]
    assert r.status == "incomplete" and "2 of 5" in r.message
    assert "tau < 1" in df.loc[3, "message"]
    assert not df.loc[1, "converged"] and np.isnan(df.loc[1, "residual"])
    ok = [0, 2, 4]
    np.testing.assert_array_equal(r.values[ok], clean.values)
    np.testing.assert_array_equal(df.loc[ok, "dlogUw"].to_numpy(), clean.frame["dlogUw"].to_numpy())
    text = r.summary()
    assert "rejected: 2" in text and "3 (rejected)" in text
    # without polish the chord's own status is reported (a one-step budget cannot reach tol)
    r3 = js.upgrade_each_city(base.params, base.sol, DQ, q=base.q, delta_I=base.delta_I, cities=[0, 5],
                              max_chord=1, polish=False)
    assert r3.frame["status"].tolist() == ["max_steps_reached"] * 2
    assert (r3.frame["method"] == "none").all()


def test_difficulty_order_returns_given_order(base, sweep_all):
    r = js.upgrade_each_city(base.params, base.sol, DQ, q=base.q, delta_I=base.delta_I, order="difficulty",
                             batch_size=8, inner="vmap")
    assert list(r.frame["city"]) == list(range(N))
    np.testing.assert_allclose(r.values, sweep_all.values, atol=1e-12)
    np.testing.assert_array_equal(r.frame["chord_iterations"], sweep_all.frame["chord_iterations"])


def test_csv_parquet_json_and_map(tmp_path, sweep_all):
    df = sweep_all.frame
    p_csv = sweep_all.write_csv(tmp_path / "up.csv")
    back = pd.read_csv(p_csv)
    assert list(back.columns) == list(df.columns)
    np.testing.assert_allclose(back["dlogUw"], df["dlogUw"], rtol=1e-12)
    assert js.parquet_engine() is not None  # pyarrow is a dependency
    p_pq = sweep_all.write_parquet(tmp_path / "up.parquet")
    back = pd.read_parquet(p_pq)
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True))
    d = json.loads(sweep_all.to_json())
    assert d["status"] == "successful" and d["converged"] is True and len(d["scenarios"]) == N
    assert str(sweep_all) == sweep_all.summary()
    from spatialjax.plots import jiao_tian_sweeps as pl

    out = pl.plot_upgrade_map(df, tmp_path / "map.png")
    out2 = pl.plot_linear_vs_nonlinear(df, tmp_path / "lin.png")
    import matplotlib.image as mpimg

    for o in (out, out2):
        assert o.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert mpimg.imread(o).shape[0] > 100


def test_parquet_without_engine_says_so(monkeypatch, sweep_all, tmp_path):
    monkeypatch.setattr(js, "parquet_engine", lambda: None)
    with pytest.raises(RuntimeError, match="pyarrow"):
        sweep_all.write_parquet(tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_bad_input(base):
    p, s = base.params, base.sol
    with pytest.raises(ParameterError, match="q"):
        js.upgrade_each_city(p, s, DQ, q=np.ones(N - 1), delta_I=base.delta_I)
    with pytest.raises(ParameterError, match="cities"):
        js.upgrade_each_city(p, s, DQ, q=base.q, delta_I=base.delta_I, cities=[N])
    with pytest.raises(ParameterError, match="baseline"):
        js.upgrade_each_city(p, base.q, DQ, q=base.q, delta_I=base.delta_I)
    with pytest.raises(ParameterError, match="order"):
        js.upgrade_each_city(p, s, DQ, q=base.q, delta_I=base.delta_I, order="random")
    with pytest.raises(ParameterError, match="delta_I"):
        js.upgrade_each_city(p, s, DQ, q=base.q, delta_I=float("nan"))
