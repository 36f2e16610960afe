"""spatialjax.gmm on a nonlinear example with an inner equilibrium solve, minimum distance
(Oh-style W = diag(1/m_hat^2) and with a covariance of the targets), the parametric bootstrap,
progress display and kill-and-resume from a checkpoint (subprocess + SIGKILL).

The example economy (``M`` markets; used again, scaled up, in benchmarks/bench_gmm.py): logit
demand with an outside good and isoelastic supply. With ``p_j`` the price in market j,

    demand  D_j = N exp(a_j - alpha p_j) / (1 + sum_k exp(a_k - alpha p_k))
    supply  S_j = exp(c_j) p_j^beta,

the equilibrium solves ``log D_j - log S_j = 0`` for ``y = log p`` (``solve_root``, implicit
derivatives). Data: ``n`` noisy measurements of the equilibrium prices and quantities
(multiplicative, mean-one, heteroskedastic noise); moments ``g_i = obs_i - (p*(theta), q*(theta))``.
Parameters ``theta = (alpha, beta, logN)``; ``a``, ``c`` are known.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spatialjax  # noqa: F401
from spatialjax import gmm
from spatialjax.errors import ParameterError
from spatialjax.solver import solve_root

A = jnp.array([0.5, 0.0, -0.5, 0.2])
C = jnp.array([0.0, 0.2, -0.1, 0.1])
M = 4
TRUTH = {"alpha": 1.0, "beta": 0.5, "logN": 1.0}
SD = np.array([0.05, 0.08, 0.1, 0.12, 0.06, 0.09, 0.11, 0.07])  # per-moment noise (heteroskedastic)
START = {"alpha": 0.7, "beta": 0.8, "logN": 0.5}
BOUNDS = {"alpha": (0.0, None), "beta": (0.0, None)}


def _excess(y, args):
    alpha, beta, logN, a, c = args
    v = a - alpha * jnp.exp(y)
    return logN + v - jnp.log1p(jnp.sum(jnp.exp(v))) - c - beta * y


def levels(th):
    """Equilibrium prices and quantities (2M,) and the solve's ok flag."""
    # diagnose=False: no conditioning estimate (this small system is far from a fold); keeps the
    # compiled objective small for the test budget. ok is still False for an unconverged solve.
    sol = solve_root(_excess, jnp.zeros(M), (th["alpha"], th["beta"], th["logN"], A, C), tol=1e-12,
                     diagnose=False)
    y = sol.value
    return jnp.concatenate([jnp.exp(y), jnp.exp(C + th["beta"] * y)]), sol.converged


def g_eq(th, d):
    lv, ok = levels(th)
    return d["obs"] - lv[None, :], ok


_levels_jit = jax.jit(levels)


def simulate(th, key, n=400):
    lv, ok = _levels_jit(th)
    assert bool(ok)
    eps = jax.random.normal(key, (n, 2 * M))
    return {"obs": np.asarray(lv)[None, :] * (1.0 + SD[None, :] * np.asarray(eps))}


@pytest.fixture(scope="module")
def data():
    return simulate(TRUTH, jax.random.PRNGKey(7))


@pytest.fixture(scope="module")
def fit(data):
    return gmm.estimate(g_eq, START, data, bounds=BOUNDS, options={"true_params": TRUTH})


def _fd_jacobian(fun, theta, h=1e-6):
    names = list(theta)
    cols = []
    for nm in names:
        tp, tm = dict(theta), dict(theta)
        tp[nm] += h
        tm[nm] -= h
        cols.append((np.asarray(fun(tp)) - np.asarray(fun(tm))) / (2 * h))
    return np.stack(cols, axis=1)


def test_equilibrium_gmm_G_equals_finite_differences_and_truth_recovered(fit, data):
    r = fit
    assert r.status == "converged" and r.converged
    # the second step ends at the noise floor of Q (inner solves to 1e-12): either the gradient
    # criterion or a negligible Gauss-Newton step after a stalled line search
    last = r.convergence["stages"][-1]
    assert last["stop_reason"] in ("gradient", "step")
    if last["stop_reason"] == "step" and last["gauss_newton_step"] is not None:
        assert last["gauss_newton_step"] < 1e-8
    assert r.param_names == ["alpha", "beta", "logN"]
    th = {k: float(v) for k, v in r.params.items()}
    lev = lambda t: _levels_jit(t)[0]  # noqa: E731
    G_fd = -_fd_jacobian(lev, th)  # d gbar / d theta = -d levels / d theta
    rel = np.max(np.abs(r.G - G_fd)) / np.max(np.abs(G_fd))
    assert rel < 1e-6, rel
    # the data-generating values lie within 2 SEs (fixed seed; coverage is the slow Monte Carlo's job)
    z = (r.theta - np.array([TRUTH[k] for k in r.param_names])) / r.se_flat
    assert np.all(np.abs(z) < 2), z
    assert r.J_df == 5 and r.J_pvalue > 0.01
    assert "true" in r.summary() and list(r.to_frame()["true"]) == [1.0, 0.5, 1.0]
    # the moment table: model moments are the equilibrium levels at the estimate
    np.testing.assert_allclose(r.moments["model"], r.gbar, rtol=1e-12)
    np.testing.assert_allclose(r.gbar, data["obs"].mean(0) - np.asarray(lev(th)), atol=1e-12)


def test_minimum_distance_matches_centred_cue(data):
    # MD with cov_m_hat = {"data": obs} (cov = np.cov(obs, ddof=1) / n, W = cov^{-1}) and micro CUE
    # with centred S (which then does not depend on theta) minimise proportional objectives:
    # the same estimates; V_md / V_cue = n / (n - 1) and J_md / J_cue = (n - 1) / n.
    n = data["obs"].shape[0]
    obs = data["obs"]
    md = gmm.minimum_distance(levels, START, obs.mean(0), cov_m_hat={"data": obs}, bounds=BOUNDS)
    cue = gmm.estimate(g_eq, START, data, weighting="cue", bounds=BOUNDS, options={"center": True})
    assert md.status == "converged" and cue.status == "converged"
    np.testing.assert_allclose(md.theta, cue.theta, atol=1e-9)
    np.testing.assert_allclose(md.cov, cue.cov * n / (n - 1), rtol=1e-6)
    assert md.J == pytest.approx(cue.J * (n - 1) / n, rel=1e-6)
    assert md.weighting == "efficient" and md.J_df == 5
    np.testing.assert_allclose(md.Omega, np.cov(obs, rowvar=False, ddof=1) / n, rtol=1e-12)
    mf = md.moments_frame()
    np.testing.assert_allclose(mf["data"], obs.mean(0))
    np.testing.assert_allclose(mf["se_data"], np.sqrt(np.diag(md.Omega)), rtol=1e-12)


def test_minimum_distance_oh_style_fixed_W(data):
    obs = data["obs"]
    n = obs.shape[0]
    m_hat = obs.mean(0)
    W = np.diag(1.0 / m_hat ** 2)
    m = levels
    r0 = gmm.minimum_distance(m, START, m_hat, W=W, bounds=BOUNDS)
    assert r0.status == "converged_no_se" and not np.any(np.isfinite(r0.se_flat))
    assert np.all(np.abs(r0.theta - np.array([TRUTH[k] for k in r0.param_names])) < 0.2)
    assert np.isnan(r0.J_pvalue)
    Om = np.cov(obs, rowvar=False, ddof=1) / n
    r1 = gmm.minimum_distance(m, START, m_hat, W=W, cov_m_hat=Om, bounds=BOUNDS)
    np.testing.assert_allclose(r1.theta, r0.theta, atol=1e-10)
    G = r1.G
    B = np.linalg.inv(G.T @ W @ G)
    np.testing.assert_allclose(r1.cov, B @ G.T @ W @ Om @ W @ G @ B, rtol=1e-9)
    assert r1.status == "converged" and r1.weighting == "fixed"
    # G of minimum distance is d m / d theta
    th = {k: float(v) for k, v in r1.params.items()}
    np.testing.assert_allclose(G, _fd_jacobian(lambda t: _levels_jit(t)[0], th), rtol=1e-6, atol=1e-9)
    # bootstrap draws of m_hat as the covariance
    rng = np.random.default_rng(0)
    draws = obs[rng.integers(0, n, size=(200, n))].mean(axis=1)
    r2 = gmm.minimum_distance(m, START, m_hat, W=W, cov_m_hat={"draws": draws}, bounds=BOUNDS)
    np.testing.assert_allclose(r2.Omega, np.cov(draws, rowvar=False, ddof=1), rtol=1e-12)
    assert np.all(np.isfinite(r2.se_flat))


def test_parametric_bootstrap(fit):
    b = fit.bootstrap(simulate, 20, jax.random.PRNGKey(3))
    assert b.draws.shape == (20, 3) and b.n_failed == 0
    ratio = b.se / fit.se_flat
    # 20 draws: the bootstrap SE has a relative sampling error of about 1/sqrt(2*19) ~ 16%
    assert np.all((ratio > 0.5) & (ratio < 1.6)), ratio
    assert np.all(b.ci_low < fit.theta) and np.all(fit.theta < b.ci_high)
    assert list(b.to_frame()["parameter"]) == fit.param_names


def test_progress_display(capsys, data):
    gmm.estimate(g_eq, START, data, weighting="identity", bounds=BOUNDS, options={"progress": True, "max_iter": 2})
    err = capsys.readouterr().err
    assert "gmm" in err and "Q=" in err and "ms/eval" in err


# ---------------------------------------------------------------------------------------
# Kill-and-resume
# ---------------------------------------------------------------------------------------

_SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    import numpy as np, jax, jax.numpy as jnp
    import spatialjax
    from spatialjax import gmm

    mode, ck, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(0)
    n = 2000
    Z = np.column_stack([np.ones(n), rng.standard_normal((n, 3))])
    v = rng.standard_normal(n)
    x = Z[:, 1] + 0.5 * Z[:, 2] + 0.3 * Z[:, 3] + v
    u = (0.5 * v + rng.standard_normal(n)) * np.exp(0.3 * Z[:, 1])
    X = np.column_stack([np.ones(n), x])
    data = {"y": X @ np.array([1.0, 2.0]) + u, "X": X, "Z": Z}
    count = [0]

    def tick(_):
        count[0] += 1
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def g(th, d):
        jax.debug.callback(tick, th["a"])
        e = d["y"] - d["X"] @ jnp.stack([th["a"], th["b"]])
        return d["Z"] * e[:, None]

    out = {}
    th0 = {"a": 0.0, "b": 0.0}
    if mode in ("kill", "resume"):
        r = gmm.estimate(g, th0, data, weighting="iterated",
                         options={"checkpoint": ck, "resume": mode == "resume"})
        out["resumed"] = r.theta.tolist()
        out["status"] = r.status
    if mode == "resume":
        r2 = gmm.estimate(g, th0, data, weighting="iterated")
        out["fresh"] = r2.theta.tolist()
        out["fresh_status"] = r2.status
    print("RESULT:" + json.dumps(out))
''')


def _run_script(script, *args, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_kill_and_resume_same_estimates(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    ck = tmp_path / "ck" / "gmm.json"
    proc = _run_script(script, "kill", str(ck), "25")
    reads, t0 = 0, time.time()
    while proc.poll() is None and time.time() - t0 < 240:
        if ck.exists():  # the checkpoint is always a complete, loadable file
            try:
                text = ck.read_text()
            except FileNotFoundError:  # pragma: no cover - replaced between exists() and open()
                continue
            state = json.loads(text)["state"]
            assert state["fingerprint"]["weighting"] == "iterated"
            reads += 1
        time.sleep(0.005)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    assert reads > 0
    killed = json.loads(ck.read_text())["state"]
    assert not killed["done"]
    assert killed["counters"]["objective"] >= 5  # it was killed mid-run, after some iterations
    # resume, and an uninterrupted run in the same process for comparison
    proc = _run_script(script, "resume", str(ck), "-1")
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    res = json.loads(out.split("RESULT:")[1])
    assert res["status"] == res["fresh_status"] == "converged"
    np.testing.assert_allclose(res["resumed"], res["fresh"], rtol=0, atol=1e-10)
    final = json.loads(ck.read_text())["state"]
    assert final["done"] and final["stage_name"] == "round"


def test_resume_refuses_another_problem(tmp_path, data):
    ck = tmp_path / "ck.json"
    gmm.estimate(g_eq, START, data, weighting="identity", bounds=BOUNDS, options={"checkpoint": str(ck), "max_iter": 2})
    assert json.loads(ck.read_text())["state"]["fingerprint"]["n_obs"] == 400
    with pytest.raises(ParameterError) as e:
        gmm.estimate(g_eq, START, data, weighting="two-step", bounds=BOUNDS,
                     options={"checkpoint": str(ck), "resume": True})
    assert e.value.field == "options.resume" and "weighting" in str(e.value)
