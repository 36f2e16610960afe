"""Jiao-Tian solver at scale (issue 12, section 1), checked at small N.

The Newton-Krylov path (``linear_solver="gmres"``: matrix-free Jacobian, bordered-diagonal
Schur preconditioner, :func:`jt.schur_operator`) must find the same equilibrium as the
factorised Newton path and give the same implicit gradient; the conditioning diagnostic
(sigma_min by inverse iteration on the factorisation already computed, with a stopping
rule) must agree with the SVD; a fold must still be reported, never passed as a success.
Speed is measured in ``benchmarks/bench_jiao_tian_scale.py``, not here.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spatialjax  # noqa: F401  (x64)
from spatialjax.models import jiao_tian as jt
from spatialjax.solver import jacobian_sigma_min, pgmres, solve_root

F64 = jnp.float64


def _perturbed(y, N, scale, seed):
    return y.at[:2 * N].add(scale * jnp.asarray(np.random.default_rng(seed).standard_normal(2 * N)))


@pytest.fixture(scope="module")
def econ30():
    p, y_true = jt.synthetic_economy(30, 3)
    return p, y_true


def _dense_S(lin):
    lu = np.asarray(lin.S.luT.T)
    perm = np.asarray(lin.S.perm)
    n = lu.shape[0]
    S = np.empty_like(lu)
    S[perm] = (np.tril(lu, -1) + np.eye(n)) @ np.triu(lu)
    return S


def test_krylov_operator_is_the_exact_jacobian_and_its_preconditioner_is_built_from_S(econ30):
    """mv / mv^T equal the analytic Jacobian (itself checked against jax.jacfwd in
    test_jiao_tian); the preconditioner's diagonal and borders are those of the Schur
    complement S of the factorised path, computed here without the N^3 product; the
    norm bound is an upper bound."""
    p, y_true = econ30
    N = p.N
    y = _perturbed(y_true, N, 0.01, 0)
    J = np.asarray(jt.jacobian(y, p))
    np.testing.assert_allclose(J, np.asarray(jax.jacfwd(lambda yy: jt.residual(yy, p))(y)), atol=1e-10)
    op = jt.schur_operator(y, p)
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(2 * N + 2)
        np.testing.assert_allclose(np.asarray(op.mv(jnp.asarray(v))), J @ v, atol=1e-12)
        np.testing.assert_allclose(np.asarray(op.mv(jnp.asarray(v), trans=True)), J.T @ v, atol=1e-12)
    S = _dense_S(jt.schur_jacobian(y, p))
    np.testing.assert_allclose(np.asarray(op.dT), np.diag(S)[:N], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(op.Ccols), S[:N, N:], atol=1e-12)
    np.testing.assert_allclose(np.asarray(op.Rrows), S[N:, :N], atol=1e-12)
    np.testing.assert_allclose(np.asarray(op.E), S[N:, N:], atol=1e-12)
    row_sums = np.abs(J).sum(axis=1).max()
    assert row_sums <= float(op.norm_inf()) <= 3.0 * row_sums
    assert not op.exact and jt.schur_jacobian(y, p).exact


def test_solution_derives_the_hires_from_x_and_m_and_the_shifted_softmax_matches_the_definitions(econ30):
    """Solution stores x (9) and the vector m, not L^p_nc: the property equals (19) computed from
    its definition, its columns sum to L^p; the shares and Phi (8) from the shifted softmax
    equal the textbook formulas, also with wages far apart (the shift is min beta theta log w)."""
    p, y_true = econ30
    N = p.N
    s = jt.solve(p, y_true)
    assert s.status == "successful" and s.Lp_nc.shape == (N, N)
    k, _, log_eta = jt._consts(p)
    g = p.gamma / (1 - p.beta)
    tau, T, th, bt = np.asarray(p.tau), np.asarray(p.T), float(p.theta), float(p.beta * p.theta)
    for w in (np.asarray(s.w), np.asarray(s.w) * np.exp(np.linspace(-40.0, 40.0, N))):
        o = jt.equilibrium_objects(p, jnp.asarray(w), s.Lm)
        K = T[:, None] * tau ** (-th) * w[None, :] ** (-bt)
        np.testing.assert_allclose(np.asarray(o.x), K / K.sum(axis=1, keepdims=True), rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(np.asarray(o.Phi), K.sum(axis=1), rtol=1e-12)
    Lm, Phi, w = np.asarray(s.Lm), np.asarray(s.Phi), np.asarray(s.w)
    Lp_nc = (np.exp(float(log_eta)) * Phi ** float(k) * Lm ** (1 + float(g)))[:, None] * np.asarray(s.x) / w[None, :]
    np.testing.assert_allclose(np.asarray(s.Lp_nc), Lp_nc, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(s.Lp_nc).sum(axis=0), np.asarray(s.Lp), rtol=1e-12)


def test_pgmres_solves_with_the_schur_preconditioner_and_reports_its_true_residual(econ30):
    p, y_true = econ30
    N = p.N
    y = _perturbed(y_true, N, 0.01, 0)
    op = jt.schur_operator(y, p)
    J = np.asarray(jt.jacobian(y, p))
    b = jnp.asarray(np.random.default_rng(2).standard_normal(2 * N + 2))
    x, rn, its = pgmres(op.mv, op.solve, b, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(J, np.asarray(b)), rtol=1e-9, atol=1e-9)
    assert float(rn) == pytest.approx(np.linalg.norm(J @ np.asarray(x) - np.asarray(b)), rel=1e-3, abs=1e-13)
    # preconditioned: far fewer iterations than the unknowns; unpreconditioned with the same
    # budget does not reach the tolerance and says so through its residual
    assert int(its) < N
    x0, rn0, its0 = pgmres(op.mv, None, b, rtol=1e-12, restart=5, max_restarts=1)
    assert float(rn0) > 1e-12 * float(jnp.linalg.norm(b))
    assert float(rn0) == pytest.approx(np.linalg.norm(J @ np.asarray(x0) - np.asarray(b)), rel=1e-6)


def test_krylov_path_same_root_and_sigma_min_as_dense_and_svd(econ30):
    p, y_true = econ30
    N = p.N
    y0 = _perturbed(y_true, N, 0.001, 4)
    d = jt.solve(p, y0, linear_solver="dense")
    k = jt.solve(p, y0, linear_solver="gmres")
    assert d.status == k.status == "successful"
    np.testing.assert_allclose(np.asarray(k.y), np.asarray(d.y), atol=1e-10)
    assert float(jnp.max(jnp.abs(k.y - y_true))) < 1e-9
    sv = np.linalg.svd(np.asarray(jt.jacobian(d.y, p)), compute_uv=False)
    # dense: inverse iteration on the Schur LU, stopped when successive estimates agree to 1e-6
    assert float(d.sigma_min) == pytest.approx(sv[-1], rel=1e-4)
    # Krylov: run only to the accuracy the singularity test needs (KRYLOV_SIGMA_RTOL = 1e-2)
    assert float(k.sigma_min) == pytest.approx(sv[-1], rel=5e-2)
    assert float(k.sigma_min) >= sv[-1] * (1 - 1e-6) or float(k.sigma_min) == pytest.approx(sv[-1], rel=1e-3)
    for s in (d, k):
        assert 0.8 * sv[0] <= float(s.solve.jac_norm) <= sv[0] * (1 + 1e-9)


def test_sigma_min_from_the_reused_factorisation_matches_svd():
    """jacobian_sigma_min on a given (already factorised) linearisation builds no new one and
    agrees with the SVD; the stopping rule leaves it accurate to about its tolerance."""
    p, y_true = jt.synthetic_economy(12, 5)
    lin = jt.schur_jacobian(y_true, p)
    F = lambda yy: jt.residual(yy, p)  # noqa: E731

    def boom(_):
        raise AssertionError("a new factorisation was built")

    smin, jn = jacobian_sigma_min(F, y_true, jac=boom, lin=lin)
    sv = np.linalg.svd(np.asarray(jt.jacobian(y_true, p)), compute_uv=False)
    assert float(smin) == pytest.approx(sv[-1], rel=1e-5)
    assert float(jn) == pytest.approx(sv[0], rel=2e-2)
    fixed, _ = jacobian_sigma_min(F, y_true, lin=lin, rtol=0.0, iters=30)
    assert float(fixed) == pytest.approx(sv[-1], rel=1e-9)


def _objective(p, y0, ls):
    s = jt.solve(p, y0, tol=1e-12, linear_solver=ls)
    return s.log_Uw + 0.5 * s.log_Um


def test_krylov_path_gives_the_same_implicit_gradient_as_dense_and_finite_differences():
    """The time of this test is compilation (N = 16): every scalar field is made a float64 array
    up front, so that the shifted economies of the finite differences (``theta + h`` is an array,
    a Python float is a static argument of the jitted solve) and the base share one compiled
    forward solve: three compilations (dense gradient, Krylov gradient, dense forward) instead
    of six; the checks are unchanged."""
    p, y_true = jt.synthetic_economy(16, 7)
    p = jax.tree.map(lambda x: jnp.asarray(x, F64), p)
    N = p.N
    y0 = _perturbed(y_true, N, 0.001, 8)
    g_d = jax.grad(_objective)(p, y0, "dense")
    g_k = jax.grad(_objective)(p, y0, "gmres")
    for name in ("theta", "gamma", "T", "H", "tau"):
        a, b = np.asarray(getattr(g_k, name)), np.asarray(getattr(g_d, name))
        assert np.all(np.isfinite(a)), name
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10 * np.max(np.abs(b))), name
    # central differences on a few entries of T and on theta, gamma
    y_star = jt.solve(p, y0, tol=1e-12, linear_solver="dense").y

    def fd(field, idx, h):
        def shifted(delta):
            v = getattr(p, field)
            v = v + delta if idx is None else v.at[idx].add(delta)
            return eqx.tree_at(lambda q: getattr(q, field), p, v)

        return (float(_objective(shifted(h), y_star, "dense")) - float(_objective(shifted(-h), y_star, "dense"))) / (2 * h)

    for field, idx in (("theta", None), ("gamma", None), ("T", 0), ("T", 5), ("H", 3)):
        base = getattr(p, field) if idx is None else getattr(p, field)[idx]
        h = 1e-5 * max(1.0, abs(float(base)))
        g = float(getattr(g_k, field)) if idx is None else float(getattr(g_k, field)[idx])
        assert g == pytest.approx(fd(field, idx, h), rel=1e-5, abs=1e-9), (field, idx)


@pytest.mark.slow
def test_krylov_path_at_moderate_N_converges_to_the_known_equilibrium():
    """N = 300 forced onto the Krylov path (below its automatic threshold)."""
    p, y_true = jt.synthetic_economy(300, 0)
    y0 = _perturbed(y_true, 300, 0.001, 1)
    k = jt.solve(p, y0, linear_solver="gmres")
    assert k.status == "successful", k.solve.summary()
    assert float(jnp.max(jnp.abs(k.y - y_true))) < 1e-8
    d = jt.solve(p, y0, linear_solver="dense")
    np.testing.assert_allclose(np.asarray(k.y), np.asarray(d.y), atol=1e-9)
    assert float(k.sigma_min) == pytest.approx(float(d.sigma_min), rel=5e-2)


def _fig2_fold():
    """The fold of the Figure-2 autarky branch (Delta* ~ 0.20066), solved as the extended
    system F = 0, J v = 0, v.v0 = 1 (see test_jiao_tian_gradients)."""
    th = 5.0
    base = jt.Params(alpha=0.4, beta=0.4, theta=5.0, gamma=0.1, T=jnp.array([1.5 ** 5, 1.0]),
                     tau=jnp.array([[1.0, 2.0], [2.0, 1.0]]), H=jnp.ones(2), Lm_total=1.0, Lp_total=2.0)

    def par(D):
        t = D ** (-1 / th)
        return eqx.tree_at(lambda r: r.tau, base, jnp.eye(2) + t * (1 - jnp.eye(2)))

    y = jt.autarky(par(jnp.asarray(0.05, F64)))
    for D in (0.05, 0.1, 0.15, 0.19, 0.2, 0.2005):
        y = jt.solve(par(jnp.asarray(D, F64)), y0=y, tol=1e-12).y
    _, _, vt = jnp.linalg.svd(jt.jacobian(y, par(jnp.asarray(0.2005, F64))))
    v0 = vt[-1]
    n = 6

    def G(z, _):
        yy, v, D = z[:n], z[n:2 * n], z[2 * n]
        q = par(D)
        return jnp.concatenate([jt.residual(yy, q), jt.jacobian(yy, q) @ v, jnp.atleast_1d(v @ v0 - 1.0)])

    r = solve_root(G, jnp.concatenate([y, v0, jnp.atleast_1d(jnp.asarray(0.2005, F64))]), None, tol=1e-13)
    assert r.status == "successful"
    return par(r.value[2 * n]), r.value[:n]


@pytest.mark.parametrize("ls", ["dense", "gmres"])
def test_fold_is_reported_not_converged_or_singular_on_both_paths(ls):
    p, y_fold = _fig2_fold()
    s = jt.solve(p, y0=y_fold, tol=1e-12, linear_solver=ls)
    assert s.status in ("singular", "stalled", "max_steps_reached"), s.solve.summary()
    assert not bool(s.converged)
    g = jax.grad(lambda q: jt.solve(q, y0=y_fold, tol=1e-12, linear_solver=ls).log_Uw)(p)
    assert np.all(np.isnan(np.asarray(g.T)))
