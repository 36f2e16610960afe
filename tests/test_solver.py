"""Generic machinery (spatialjax.solver, spatialjax.continuation) on toy problems with known answers.

Everything here is model-free: residuals are small polynomial systems whose roots, folds and
implicit derivatives are known in closed form.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spatialjax  # noqa: F401  (x64)
from spatialjax import continuation as cont
from spatialjax.errors import ConvergenceError, SingularJacobianError
from spatialjax.solver import RESULTS, solve_root

# ---------------------------------------------------------------------------------------
# Toy problems
# ---------------------------------------------------------------------------------------

N_TOY = 6
_A = jnp.asarray(np.random.default_rng(0).normal(size=(N_TOY, N_TOY)) * 0.2 + 2.0 * np.eye(N_TOY))


def cubic_system(y, b):
    """F(y) = A y + y^3 - b: strictly monotone (A + A^T > 0), unique root, J = A + 3 diag(y^2)."""
    return _A @ y + y ** 3 - b


def scalar_cubic(y, p):
    """y^3 + y = p (componentwise): unique root, dy/dp = 1 / (3 y^2 + 1)."""
    return y ** 3 + y - p


def no_root(y, p):
    """y^2 + 1 = 0 has no real root."""
    return y ** 2 + 1.0 + 0.0 * p


def double_root(y, p):
    """y^2 = p: at p = 0 a double root (J = 2y = 0), dy/dp = 1/(2 sqrt p) blows up."""
    return y ** 2 - p


_solve_cubic = jax.jit(lambda y0, b: solve_root(cubic_system, y0, b, tol=1e-12))


def _cubic_dot(b, c):
    return jnp.dot(c, solve_root(cubic_system, jnp.zeros(N_TOY), b, tol=1e-12).value)


# jit of grad (the differentiation happens inside the traced function)
_grad_cubic_dot = jax.jit(jax.grad(_cubic_dot))


@pytest.fixture(scope="module")
def cubic_rhs():
    return jnp.asarray(np.random.default_rng(1).normal(size=N_TOY))


# ---------------------------------------------------------------------------------------
# Convergence and status reporting
# ---------------------------------------------------------------------------------------


def test_converges_with_status_and_small_residual(cubic_rhs):
    r = _solve_cubic(jnp.zeros(N_TOY), cubic_rhs)
    assert r.status == "successful"
    assert bool(r.converged)
    assert float(r.residual) < 1e-12
    # the reported residual is the true max-norm residual at the returned value
    assert float(jnp.max(jnp.abs(cubic_system(r.value, cubic_rhs)))) == pytest.approx(float(r.residual), abs=1e-15)
    assert 1 <= int(r.steps) < 30
    # conditioning diagnostic against numpy's SVD of the exact Jacobian
    J = np.asarray(_A) + 3 * np.diag(np.asarray(r.value) ** 2)
    sv = np.linalg.svd(J, compute_uv=False)
    assert float(r.sigma_min) == pytest.approx(sv[-1], rel=1e-3)
    # ||J||_2 is a 12-step power-iteration estimate: a lower bound, within 10%
    assert 0.9 * sv[0] <= float(r.jac_norm) <= sv[0] * (1 + 1e-12)
    assert "successful" in r.summary()


def test_no_root_reports_failure_with_residual_and_steps():
    r = solve_root(no_root, jnp.array([0.5]), jnp.array(0.0), max_steps=25)
    assert not bool(r.converged)
    assert r.status in ("max_steps_reached", "stalled")
    # min of y^2 + 1 is 1: the residual can never fall below it
    assert float(r.residual) >= 1.0 - 1e-12
    assert 0 < int(r.steps) <= 25
    assert "did not converge" not in r.status  # status is the enum name
    assert r.status in r.summary()


def test_no_root_throw_raises_convergence_error():
    with pytest.raises(ConvergenceError, match="residual"):
        solve_root(no_root, jnp.array([0.5]), jnp.array(0.0), max_steps=25, throw=True)


def test_max_steps_reached_is_reported():
    # Newton from far away needs more than 2 steps for the cubic
    r = solve_root(scalar_cubic, jnp.array([50.0]), jnp.array(1.0), max_steps=2)
    assert r.status == "max_steps_reached"
    assert int(r.steps) == 2
    assert float(r.residual) > 1e-10


def test_double_root_is_flagged_singular_and_gradient_is_nan():
    r = solve_root(double_root, jnp.array([1.0]), jnp.array(0.0))
    assert r.status == "singular", r.summary()
    assert not bool(r.converged)
    assert abs(float(r.value[0])) < 1e-4
    with pytest.raises(SingularJacobianError):
        solve_root(double_root, jnp.array([1.0]), jnp.array(0.0), throw=True)
    g = jax.grad(lambda p: solve_root(double_root, jnp.array([1.0]), p).value[0])(jnp.array(0.0))
    assert np.isnan(float(g))


def test_regular_root_near_double_root_is_not_flagged():
    # y^2 = p with p = 0.25: regular root y = 0.5, dy/dp = 1/(2y) = 1
    f = lambda p: solve_root(double_root, jnp.array([1.0]), p).value[0]  # noqa: E731
    r = solve_root(double_root, jnp.array([1.0]), jnp.array(0.25))
    assert r.status == "successful"
    assert float(r.value[0]) == pytest.approx(0.5, abs=1e-12)
    assert float(jax.grad(f)(jnp.array(0.25))) == pytest.approx(1.0, rel=1e-10)


def test_gradient_through_non_converged_solve_is_nan():
    f = lambda p: solve_root(scalar_cubic, jnp.array([50.0]), p, max_steps=1).value[0]  # noqa: E731
    r = solve_root(scalar_cubic, jnp.array([50.0]), jnp.array(1.0), max_steps=1)
    assert r.status == "max_steps_reached"
    g = jax.grad(f)(jnp.array(1.0))
    assert np.isnan(float(g))


# ---------------------------------------------------------------------------------------
# Implicit derivatives
# ---------------------------------------------------------------------------------------


def test_gradient_matches_analytic_implicit_derivative():
    p = jnp.array([-2.0, 0.3, 1.0, 5.0])

    def ysum(pp):
        return jnp.sum(solve_root(scalar_cubic, jnp.zeros(4), pp, tol=1e-13).value)

    y = solve_root(scalar_cubic, jnp.zeros(4), p, tol=1e-13).value
    np.testing.assert_allclose(np.asarray(y ** 3 + y), np.asarray(p), atol=1e-12)
    g = jax.grad(ysum)(p)
    np.testing.assert_allclose(np.asarray(g), np.asarray(1.0 / (3 * y ** 2 + 1)), rtol=1e-10)


def test_system_gradient_matches_implicit_function_theorem(cubic_rhs):
    # dy/db = J^{-1} with J = A + 3 diag(y^2); d(c.y)/db = J^{-T} c
    c = jnp.arange(1.0, N_TOY + 1.0)
    g = _grad_cubic_dot(cubic_rhs, c)
    y = _solve_cubic(jnp.zeros(N_TOY), cubic_rhs).value
    J = np.asarray(_A) + 3 * np.diag(np.asarray(y) ** 2)
    np.testing.assert_allclose(np.asarray(g), np.linalg.solve(J.T, np.asarray(c)), rtol=1e-9)


def test_dense_and_gmres_agree_on_solution_and_gradient(cubic_rhs):
    def obj(b, ls):
        r = solve_root(cubic_system, jnp.zeros(N_TOY), b, linear_solver=ls, tol=1e-12)
        return jnp.sum(jnp.sin(r.value)), r

    (vd, rd), gd = jax.value_and_grad(lambda b: obj(b, "dense"), has_aux=True)(cubic_rhs)
    (vg, rg), gg = jax.value_and_grad(lambda b: obj(b, "gmres"), has_aux=True)(cubic_rhs)
    assert rd.status == "successful" and rg.status == "successful"
    np.testing.assert_allclose(np.asarray(rg.value), np.asarray(rd.value), atol=1e-11)
    np.testing.assert_allclose(np.asarray(gg), np.asarray(gd), rtol=1e-7, atol=1e-10)
    assert float(rg.sigma_min) == pytest.approx(float(rd.sigma_min), rel=1e-3)


# Regression test: grad of a jitted function calling solve_root used to fail with "No constant handler
# for type DynamicJaxprTracer" (custom_vjp closing over the traced y0); fixed in c7f8ef6.
def test_grad_of_jitted_solve(cubic_rhs):
    c = jnp.arange(1.0, N_TOY + 1.0)
    g = jax.grad(lambda b: jnp.dot(c, _solve_cubic(jnp.zeros(N_TOY), b).value))(cubic_rhs)
    np.testing.assert_allclose(np.asarray(g), np.asarray(_grad_cubic_dot(cubic_rhs, c)), rtol=1e-10)


def test_user_jacobian_is_used_and_agrees(cubic_rhs):
    calls = []

    def jac(y, b):
        calls.append(1)
        return _A + 3 * jnp.diag(y ** 2)

    r = solve_root(cubic_system, jnp.zeros(N_TOY), cubic_rhs, jac=jac, tol=1e-12)
    r0 = _solve_cubic(jnp.zeros(N_TOY), cubic_rhs)
    assert calls, "the supplied Jacobian was never called"
    np.testing.assert_allclose(np.asarray(r.value), np.asarray(r0.value), atol=1e-12)


def test_levenberg_marquardt_converges(cubic_rhs):
    r = solve_root(cubic_system, 3.0 * jnp.ones(N_TOY), cubic_rhs, method="lm", tol=1e-11)
    assert r.status == "successful", r.summary()
    r0 = _solve_cubic(jnp.zeros(N_TOY), cubic_rhs)
    np.testing.assert_allclose(np.asarray(r.value), np.asarray(r0.value), atol=1e-10)
    g_lm = jax.grad(lambda b: jnp.sum(solve_root(cubic_system, 3.0 * jnp.ones(N_TOY), b, method="lm").value))(cubic_rhs)
    g_nt = _grad_cubic_dot(cubic_rhs, jnp.ones(N_TOY))
    np.testing.assert_allclose(np.asarray(g_lm), np.asarray(g_nt), rtol=1e-8)


def test_vmap_equals_loop(cubic_rhs):
    B = jnp.stack([cubic_rhs * s for s in (0.5, 1.0, 2.0, -3.0)])
    batched = jax.vmap(lambda b: _solve_cubic(jnp.zeros(N_TOY), b))(B)
    assert batched.status == ["successful"] * 4
    for i in range(4):
        single = _solve_cubic(jnp.zeros(N_TOY), B[i])
        np.testing.assert_allclose(np.asarray(batched.value[i]), np.asarray(single.value), atol=1e-13)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="linear_solver"):
        solve_root(scalar_cubic, jnp.zeros(1), 1.0, linear_solver="qr")
    with pytest.raises(ValueError, match="method"):
        solve_root(scalar_cubic, jnp.zeros(1), 1.0, method="bisection")
    with pytest.raises(ValueError, match="y0"):
        solve_root(scalar_cubic, jnp.zeros((2, 2)), 1.0)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), scale=st.floats(0.1, 10.0))
def test_property_random_monotone_cubic_system(seed, scale):
    """Random right-hand sides of a strictly monotone system: the unique root is found, and the
    gradient satisfies the implicit function theorem."""
    b = jnp.asarray(np.random.default_rng(seed).normal(size=N_TOY) * scale)
    r = _solve_cubic(jnp.zeros(N_TOY), b)
    assert r.status == "successful"
    assert float(jnp.max(jnp.abs(cubic_system(r.value, b)))) < 1e-11
    g = _grad_cubic_dot(b, jnp.ones(N_TOY))
    J = np.asarray(_A) + 3 * np.diag(np.asarray(r.value) ** 2)
    np.testing.assert_allclose(np.asarray(g), np.linalg.solve(J.T, np.ones(N_TOY)), rtol=1e-8)


# ---------------------------------------------------------------------------------------
# Multistart, homotopy, path tracing, pseudo-arclength
# ---------------------------------------------------------------------------------------


def test_multistart_finds_and_deduplicates_three_roots():
    f = lambda y, p: y ** 3 - y  # noqa: E731
    starts = jnp.linspace(-2.0, 2.0, 21)[:, None]
    roots, counts, res = cont.multistart(f, starts, None)
    found = np.sort(np.array([r[0] for r in roots]))
    np.testing.assert_allclose(found, [-1.0, 0.0, 1.0], atol=1e-10)
    assert sum(counts) == int(np.sum(np.asarray(res.converged)))
    assert len(res.status) == 21


def cubic_homotopy(y, lam, p):
    """y^3 + y - lam p: regular for all lam, root y(1) solves y^3 + y = p."""
    return y ** 3 + y - lam * p


def test_homotopy_reaches_lam1_on_regular_path():
    p = jnp.array([10.0, -4.0])
    h = jax.jit(lambda y0, pp: cont.homotopy(cubic_homotopy, y0, pp, 0.0, 1.0))(jnp.zeros(2), p)
    assert bool(h.success)
    assert float(h.lam_reached) == 1.0
    np.testing.assert_allclose(np.asarray(h.value ** 3 + h.value), np.asarray(p), atol=1e-8)
    assert int(h.steps) >= 4  # h_max = 0.25 forces at least four steps
    # the same path with a reused factorisation in the corrector (Shamanskii steps)
    hr = jax.jit(lambda y0, pp: cont.homotopy(cubic_homotopy, y0, pp, 0.0, 1.0, reuse_jacobian=True))(jnp.zeros(2), p)
    assert bool(hr.success)
    np.testing.assert_allclose(np.asarray(hr.value), np.asarray(h.value), atol=1e-8)


def test_homotopy_with_reused_jacobian_stops_before_fold():
    h = cont.homotopy(fold_fn, jnp.asarray([-1.0]), None, -1.0, 0.5, h0=0.1, reuse_jacobian=True)
    assert not bool(h.success)
    assert -0.05 < float(h.lam_reached) <= 0.0  # never claims a point beyond the fold
    assert abs(float(h.value[0]) ** 2 + float(h.lam_reached)) < 1e-8


def fold_fn(y, lam, p):
    """y^2 + lam = 0: two branches y = +-sqrt(-lam) for lam < 0 meeting at the fold lam = 0."""
    return y ** 2 + lam


def test_homotopy_stops_before_fold():
    h = cont.homotopy(fold_fn, jnp.array([1.0]), None, -1.0, 1.0)
    assert not bool(h.success)
    assert -1e-3 < float(h.lam_reached) <= 0.0
    assert float(h.value[0] ** 2 + h.lam_reached) == pytest.approx(0.0, abs=1e-8)


def test_trace_path_reports_fold_at_zero():
    lams = np.linspace(-1.0, 0.5, 14)  # grid step 0.115, does not hit the fold lam = 0 itself
    path = cont.trace_path(fold_fn, jnp.array([1.0]), None, lams)
    assert path.fold_at is not None
    # the branch y = sqrt(-lam) can be followed up to (almost) the fold
    assert -1e-3 < path.fold_at <= 0.0
    assert "fold" in path.message
    # every recorded point is a genuine root and lies before the fold
    assert np.all(path.lam <= 0.0)
    assert np.all(path.residual < 1e-10)
    np.testing.assert_allclose(path.y[:, 0], np.sqrt(-path.lam), atol=1e-8)
    # sigma_min = |2 y| falls towards the fold
    assert np.all(np.diff(path.sigma_min) < 0)


def test_trace_path_without_fold_reaches_the_end():
    lams = np.linspace(0.0, 1.0, 6)
    path = cont.trace_path(cubic_homotopy, jnp.zeros(2), jnp.array([10.0, -4.0]), lams)
    assert path.fold_at is None
    np.testing.assert_allclose(path.lam, lams)
    assert np.all(path.residual < 1e-10)


def test_pseudo_arclength_goes_around_fold():
    br = cont.pseudo_arclength(fold_fn, jnp.array([1.0]), None, -1.0, ds=0.1, n_steps=60, lam_min=-1.5,
                               lam_max=1.0)
    assert len(br.folds) == 1
    lam_f, y_f = br.folds[0]
    assert abs(lam_f) < 1e-6
    assert abs(float(y_f[0])) < 1e-3
    # both branches visited: y > 0 before the fold, y < 0 after, all genuine roots
    assert np.max(br.y[:, 0]) > 0.5 and np.min(br.y[:, 0]) < -0.5
    assert np.all(br.lam <= 1e-9)
    np.testing.assert_allclose(br.y[:, 0] ** 2 + br.lam, 0.0, atol=1e-9)
    # det(J) = 2y changes sign exactly once
    assert np.sum(np.diff(br.det_sign) != 0) == 1


@pytest.mark.slow
def test_failed_adjoint_solve_gives_nan_not_zero_gradient():
    """The backward (adjoint) linear solve is checked: a matrix-free forward solve that converges by
    many cheap inexact-Newton steps (max_krylov=2 GMRES restarts), whose adjoint GMRES cannot reach
    its tolerance within the same budget, yields NaN cotangents, never a plausible number. With enough
    Krylov iterations the same gradient is finite and matches the dense one."""
    n = 200
    rng = np.random.default_rng(0)
    A = jnp.asarray(np.diag(np.logspace(0, 4, n)) + 0.01 * rng.normal(size=(n, n)))

    def F(y, b):
        return A @ y + 0.01 * y ** 3 - b

    def obj(b, mk, ls):
        r = solve_root(F, jnp.zeros(n), b, linear_solver=ls, max_krylov=mk, max_steps=100)
        return jnp.sum(r.value), r

    b = jnp.ones(n)
    (_, r_starved), g_starved = jax.value_and_grad(obj, has_aux=True)(b, 2, "gmres")
    assert r_starved.status == "successful"  # the forward solve itself is fine
    assert np.all(np.isnan(np.asarray(g_starved)))
    (_, r_ok), g_ok = jax.value_and_grad(obj, has_aux=True)(b, 400, "gmres")
    (_, r_d), g_d = jax.value_and_grad(obj, has_aux=True)(b, 400, "dense")
    assert r_ok.status == "successful" and r_d.status == "successful"
    np.testing.assert_allclose(np.asarray(g_ok), np.asarray(g_d), rtol=1e-7)


def test_reuse_jacobian_matches_newton_and_gradient():
    """Shamanskii steps (one LU reused while it contracts) reach the same root and the same
    implicit gradient as full Newton; failures are still reported."""
    def F(y, a):
        return jnp.array([y[0] ** 3 + y[1] - a["p"], y[1] - a["q"] * y[0]])

    a = {"p": jnp.asarray(3.0), "q": jnp.asarray(0.5)}
    r0 = solve_root(F, jnp.array([1.0, 1.0]), a)
    r1 = solve_root(F, jnp.array([1.0, 1.0]), a, reuse_jacobian=True)
    assert r1.status == "successful" and float(r1.residual) < 1e-12
    np.testing.assert_allclose(np.asarray(r1.value), np.asarray(r0.value), rtol=1e-12)
    g0 = jax.grad(lambda a: solve_root(F, jnp.array([1.0, 1.0]), a).value[0])(a)
    g1 = jax.grad(lambda a: solve_root(F, jnp.array([1.0, 1.0]), a, reuse_jacobian=True).value[0])(a)
    np.testing.assert_allclose(float(g1["p"]), float(g0["p"]), rtol=1e-10)
    bad = solve_root(lambda y, a: y ** 2 + 1.0, jnp.array([1.0]), None, reuse_jacobian=True)
    assert bad.status != "successful" and float(bad.residual) >= 1.0


# ---------------------------------------------------------------------------------------
# LU helpers and user-supplied factorisations (Linearization protocol)
# ---------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2 ** 31 - 1))
def test_lu_solve_and_transposed_solve(n, seed):
    from spatialjax.solver import lu_factor, lu_solve

    rng = np.random.default_rng(seed)
    A = jnp.asarray(rng.normal(size=(n, n)) + 3.0 * np.eye(n))  # pivoting happens (rows are not diagonal-dominant)
    b = jnp.asarray(rng.normal(size=n))
    fac = lu_factor(A)
    np.testing.assert_allclose(np.asarray(A @ lu_solve(fac, b)), np.asarray(b), atol=1e-10)
    np.testing.assert_allclose(np.asarray(A.T @ lu_solve(fac, b, trans=True)), np.asarray(b), atol=1e-10)


def test_lu_solve_under_vmap_and_grad():
    from spatialjax.solver import lu_factor, lu_solve

    rng = np.random.default_rng(1)
    As = jnp.asarray(rng.normal(size=(3, 5, 5)) + 4 * np.eye(5))
    b = jnp.asarray(rng.normal(size=5))
    xs = jax.vmap(lambda A: lu_solve(lu_factor(A), b, trans=True))(As)
    np.testing.assert_allclose(np.asarray(jnp.einsum("kji,kj->ki", As, xs)), np.tile(np.asarray(b), (3, 1)),
                               atol=1e-12)
    A = As[0]
    g = jax.grad(lambda M: jnp.sum(lu_solve(lu_factor(M), b)))(A)
    # d(1^T A^{-1} b)/dA = -(A^{-T} 1)(A^{-1} b)^T
    expected = -jnp.outer(jnp.linalg.solve(A.T, jnp.ones(5)), jnp.linalg.solve(A, b))
    np.testing.assert_allclose(np.asarray(g), np.asarray(expected), atol=1e-12)



def test_user_linearization_is_used_for_newton_diagnostic_and_adjoint(cubic_rhs):
    """A ``jac`` returning a Linearization (here: a dense LU with a deliberately different
    but exact solve, the explicit inverse) drives Newton, sigma_min and the adjoint."""
    from spatialjax.solver import Linearization

    class InverseLinearization(Linearization):
        J: jax.Array
        Jinv: jax.Array

        def solve(self, b, trans=False):
            return self.Jinv.T @ b if trans else self.Jinv @ b

        def mv(self, v, trans=False):
            return self.J.T @ v if trans else self.J @ v

        def norm_inf(self):
            return jnp.linalg.norm(self.J, ord=jnp.inf)

    def jac(y, b):
        J = _A + 3.0 * jnp.diag(y ** 2)
        return InverseLinearization(J=J, Jinv=jnp.linalg.inv(J))

    b = cubic_rhs
    y0 = jnp.zeros(N_TOY)
    ref = solve_root(cubic_system, y0, b)
    res = solve_root(cubic_system, y0, b, jac=jac)
    assert res.status == "successful"
    np.testing.assert_allclose(np.asarray(res.value), np.asarray(ref.value), atol=1e-12)
    # the default dense path (n <= SVD_DIAGNOSTIC_MAX) reads sigma_min off an exact SVD; a user
    # Linearization gets inverse iteration, stopped once successive estimates agree to 1e-6
    # (measured: 3.4e-5 relative to the exact value here)
    J = jax.jacfwd(lambda y: cubic_system(y, b))(ref.value)
    s_exact = np.linalg.svd(np.asarray(J), compute_uv=False)
    assert float(ref.sigma_min) == pytest.approx(s_exact[-1], rel=1e-12)
    assert float(ref.jac_norm) == pytest.approx(s_exact[0], rel=1e-12)
    assert float(res.sigma_min) == pytest.approx(s_exact[-1], rel=1e-4)
    g_ref = jax.grad(lambda bb: jnp.sum(solve_root(cubic_system, y0, bb).value))(b)
    g = jax.grad(lambda bb: jnp.sum(solve_root(cubic_system, y0, bb, jac=jac).value))(b)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-10)

    # A wrong factorisation (solves with J^T instead of J) cannot give a plausible gradient:
    class WrongAdjoint(InverseLinearization):
        def solve(self, b, trans=False):
            return self.Jinv @ b if trans else self.Jinv @ b

    bad = lambda y, bb: WrongAdjoint(J=_A + 3.0 * jnp.diag(y ** 2), Jinv=jnp.linalg.inv(_A + 3.0 * jnp.diag(y ** 2)))  # noqa: E731
    g_bad = jax.grad(lambda bb: jnp.sum(solve_root(cubic_system, y0, bb, jac=bad).value))(b)
    assert np.all(np.isnan(np.asarray(g_bad)))


def s_curve(y, lam, a):
    """y^3 - 3y = 6 lam - 3: an S-shaped branch in lam with folds at lam = 5/6 (y = -1) and
    lam = 1/6 (y = 1); at lam = 0 and lam = 1 the root is unique (y ~ -2.104 and ~ 2.104)."""
    return y ** 3 - 3.0 * y - (6.0 * lam - 3.0) + 0.0 * a


def test_arclength_to_returns_to_the_target_around_two_folds():
    y_start = jnp.asarray([-2.1038034027355366])  # root of y^3 - 3y + 3
    assert abs(float(s_curve(y_start, 0.0, 0.0)[0])) < 1e-12
    h = cont.homotopy(s_curve, y_start, 0.0, 0.0, 1.0, h0=0.05, h_min=1e-6)
    assert not bool(h.success)
    assert float(h.lam_reached) == pytest.approx(5 / 6, abs=2e-3)  # stops at the first fold
    y1, br = cont.arclength_to(s_curve, h.value, 0.0, float(h.lam_reached), 1.0, ds=0.02, n_steps=400,
                               lam_bounds=(0.0, 1.0))
    assert y1 is not None
    folds = sorted(f for f, _ in br.folds)
    assert folds == pytest.approx([1 / 6, 5 / 6], abs=1e-6)
    r = solve_root(lambda y, a: s_curve(y, 1.0, a), jnp.asarray(y1), 0.0)
    assert r.status == "successful"
    assert float(r.value[0]) == pytest.approx(2.1038034027355366, abs=1e-10)  # the unique root at lam = 1


def test_arclength_to_reports_none_when_the_branch_does_not_return():
    """A single fold (y^2 = lam0 - lam) turns back for good: no point at the target."""
    fold = lambda y, lam, a: y ** 2 - (0.5 - lam) + 0.0 * a  # noqa: E731
    y1, br = cont.arclength_to(fold, jnp.asarray([-0.7071067811865476]), 0.0, 0.0, 1.0, ds=0.02, n_steps=200,
                               lam_bounds=(0.0, 1.0))
    assert y1 is None
    assert len(br.folds) == 1 and br.folds[0][0] == pytest.approx(0.5, abs=1e-6)


def test_throw_under_jit_raises_at_run_time_and_passes_when_solved():
    """``throw=True`` inside ``jit`` cannot raise at trace time; it must raise when the compiled
    solve ends unsuccessfully, and must not when it succeeds (the value is then the root)."""
    import jax
    import jax.numpy as jnp
    import pytest

    from spatialjax.solver import solve_root

    f = lambda y, a: y ** 2 + a  # noqa: E731  (no real root for a > 0)
    solve = jax.jit(lambda a: solve_root(f, jnp.array([1.0]), a, throw=True).value)
    assert float(solve(-4.0)[0]) == pytest.approx(2.0, rel=1e-12)
    with pytest.raises(Exception, match="did not succeed"):
        solve(1.0).block_until_ready()


def test_helsley_strange_unknown_parameter_is_a_parameter_error():
    import pytest

    from spatialjax.errors import ParameterError
    from spatialjax.models import helsley_strange as hs

    with pytest.raises(ParameterError, match="thetta: unknown parameter; allowed"):
        hs.Params(thetta=[[2.0, 1.0], [1.0, 2.0]])


# ---------------------------------------------------------------------------------------
# SolverConfig: the typed options object of solve_root
# ---------------------------------------------------------------------------------------


def test_solver_config_equals_keyword_options_and_is_a_static_argument():
    from spatialjax.solver import SolverConfig

    F = lambda y, a: jnp.array([y[0] ** 3 - a, y[1] - y[0]])  # noqa: E731
    y0 = jnp.array([1.0, 1.0])
    cfg = SolverConfig(tol=1e-13, linear_solver="dense", max_steps=40)
    r1 = solve_root(F, y0, jnp.asarray(2.0), cfg)
    r2 = solve_root(F, y0, jnp.asarray(2.0), tol=1e-13, linear_solver="dense", max_steps=40)
    assert r1.status == r2.status == "successful"
    np.testing.assert_array_equal(np.asarray(r1.value), np.asarray(r2.value))
    np.testing.assert_allclose(float(r1.value[0]), 2.0 ** (1 / 3), rtol=1e-13)
    # an override on top of a config wins
    r3 = solve_root(F, y0, jnp.asarray(2.0), cfg, max_steps=1)
    assert r3.status == "max_steps_reached"
    # hashable: a static argument of jit (one compilation per config)
    f = jax.jit(lambda a, c: solve_root(F, y0, a, c).value, static_argnums=1)
    np.testing.assert_allclose(float(f(jnp.asarray(3.0), cfg)[0]), 3.0 ** (1 / 3), rtol=1e-13)
    assert hash(cfg) == hash(SolverConfig(tol=1e-13, linear_solver="dense", max_steps=40))


@pytest.mark.parametrize("field,value", [("method", "bfgs"), ("linear_solver", "cg"), ("tol", 0.0), ("tol", -1e-3),
                                         ("max_steps", 0), ("max_steps", 2.5), ("adjoint_rtol", "1e-6"),
                                         ("kantorovich_h", 0.0)])
def test_solver_config_rejects_bad_fields_by_name(field, value):
    from spatialjax.solver import SolverConfig

    with pytest.raises(ValueError, match=field):
        SolverConfig(**{field: value})


def test_solve_root_unknown_option_names_the_allowed_ones():
    with pytest.raises(TypeError, match="unknown option.*tolerance.*allowed: method"):
        solve_root(lambda y, a: y, jnp.ones(2), None, tolerance=1e-3)


def test_solve_result_protocol_json_roundtrip():
    import json

    r = solve_root(lambda y, a: y ** 2 - a, jnp.array([1.0]), jnp.asarray(4.0), tol=1e-12)
    d = json.loads(r.to_json())
    assert d["status"] == "successful" and d["converged"] is True
    assert d["value"] == pytest.approx([2.0], rel=1e-12)
    assert d["residual"] == pytest.approx(float(r.residual))
    assert str(r) == r.summary() and "successful" in r.summary()
    # a failed solve: converged false, status named, no NaN token in the JSON
    bad = solve_root(lambda y, a: y ** 2 + a, jnp.array([1.0]), jnp.asarray(4.0), tol=1e-12, max_steps=5)
    db = json.loads(bad.to_json())
    assert db["converged"] is False and db["status"] in ("max_steps_reached", "stalled")


def test_kantorovich_rule_flags_the_fold_that_the_first_order_rules_let_through():
    """The numbers measured at the Figure-2 fold under ``jax.grad`` (2 polish steps, residual
    5.6e-16, sigma_min 9e-9, ||J|| ~ 7): sigma_min / ||J|| = 1.3e-9 > singular_rtol and
    residual / sigma_min = 6.2e-8 < error_rtol, so before the Kantorovich rule that root was
    'successful' and its gradient a finite 1.9e6 (tests/test_jiao_tian_scale.py fold test).
    h = ||J|| residual / sigma_min^2 = 48 > 1/2 flags it; a regular, merely ill-conditioned root
    converged to round-off (sigma_min 1e-6, h = 1e-2) stays successful."""
    from spatialjax.solver import SolverConfig, _status_code

    y, k = jnp.ones(4), jnp.asarray(2)
    code = lambda res, smin, jn, cfg=SolverConfig(): int(_status_code(y, jnp.asarray(res), k, jnp.asarray(smin),  # noqa: E731
                                                                       jnp.asarray(jn), cfg))
    assert code(5.6e-16, 9e-9, 7.0) == 4                                     # singular
    assert code(5.6e-16, 9e-9, 7.0, SolverConfig(kantorovich_h=1e9)) == 0    # the old rules alone: passed
    assert code(1e-15, 1e-6, 10.0) == 0                                      # regular, ill-conditioned
    assert code(1e-15, 1e-12, 10.0) == 4                                     # sigma_min / ||J|| < 1e-10


# ---------------------------------------------------------------------------------------
# The preconditioned Krylov sigma_min (Golub-Kahan-Lanczos on J^-1)
# ---------------------------------------------------------------------------------------

def _known_svd_matrix(n, s, seed):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    V, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return jnp.asarray(U @ np.diag(s) @ V.T)


def _jacobi_linearization(J):
    """J with a deliberately crude preconditioner (its diagonal): ``exact = False``, so
    jacobian_sigma_min takes the preconditioned GMRES path."""
    from spatialjax.solver import Linearization

    class Jacobi(Linearization):
        exact = False
        J: jax.Array

        def solve(self, b, trans=False):
            return b / jnp.diagonal(self.J)

        def mv(self, v, trans=False):
            return v @ self.J if trans else self.J @ v

        def norm_inf(self):
            return jnp.linalg.norm(self.J, ord=jnp.inf)

    return Jacobi(J=J)


@pytest.mark.parametrize("seed", [0, 1])
def test_krylov_sigma_min_matches_the_svd_and_approaches_from_above(seed):
    """Two close smallest singular values (1e-3, 1.5e-3: inverse power iteration gains only a
    factor (1/1.5)^2 per step) and a Jacobi preconditioner that is far from J: the
    Golub-Kahan-Lanczos estimate stops at the 1e-2 change rule of the Krylov diagnostic within
    about 1 % of the true value, never below it by more than the solves' tolerance."""
    from spatialjax.solver import jacobian_sigma_min

    n = 40
    s = np.concatenate([[1e-3, 1.5e-3], np.linspace(0.5, 3.0, n - 2)])
    J = _known_svd_matrix(n, s, seed)  # singular values exactly s
    lin = _jacobi_linearization(J)
    F = lambda y: J @ y  # noqa: E731
    smin, jn = jacobian_sigma_min(F, jnp.zeros(n), linear_solver="gmres", jac=lambda y: lin, rtol=1e-2,
                                  krylov_rtol=1e-3, norm_rtol=1e-2)
    assert float(smin) == pytest.approx(1e-3, rel=2e-2)
    assert float(smin) >= 1e-3 * (1 - 2e-3)
    assert float(jn) == pytest.approx(3.0, rel=5e-2)
    tight, _ = jacobian_sigma_min(F, jnp.zeros(n), linear_solver="gmres", jac=lambda y: lin, rtol=1e-10,
                                  krylov_rtol=1e-10, iters=40)
    assert float(tight) == pytest.approx(1e-3, rel=1e-6)


def test_krylov_sigma_min_is_zero_when_a_solve_fails_on_a_singular_jacobian():
    """Rank-deficient J: a GMRES solve inside the bidiagonalisation cannot reach its tolerance,
    so the estimate is 0 (flagged singular by solve_root), never a plausible number."""
    from spatialjax.solver import jacobian_sigma_min

    n = 30
    s = np.concatenate([[0.0], np.linspace(0.5, 2.0, n - 1)])
    J = _known_svd_matrix(n, s, 3)
    lin = _jacobi_linearization(J)
    smin, _ = jacobian_sigma_min(lambda y: J @ y, jnp.zeros(n), linear_solver="gmres", jac=lambda y: lin,
                                 rtol=1e-2, krylov_rtol=1e-3)
    assert float(smin) == 0.0
