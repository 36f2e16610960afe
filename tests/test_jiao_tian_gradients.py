"""Gradients of Jiao-Tian welfare through the equilibrium (implicit differentiation).

``jax.grad`` of ``welfare(params, solve(params))`` with respect to theta, gamma, T, H and tau is
checked against (1) central finite differences of warm-started re-solves and (2) two
independent implicit-differentiation paths: optimistix ``root_find`` with ``ImplicitAdjoint``
and jaxopt ``implicit_diff.custom_root``. Gradients through failed or singular solves must be NaN.
"""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

import spatialjax  # noqa: F401  (x64)
from spatialjax.models import jiao_tian as jt

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import jaxopt

F64 = jnp.float64
W_M = 0.7  # weight of manager welfare in the scalar objective

def _a(v):
    return jnp.asarray(v, F64)


def _params(T, tau, H, *, alpha=0.4, beta=0.4, theta=5.0, gamma=0.1, Lm_total=1.0, Lp_total=2.0):
    return jt.Params(alpha=_a(alpha), beta=_a(beta), theta=_a(theta), gamma=_a(gamma), T=_a(T), tau=_a(tau), H=_a(H),
                     Lm_total=_a(Lm_total), Lp_total=_a(Lp_total))


def _as_arrays(p):
    """Same Params with every scalar a 0-d float64 array (so jit does not specialise on values)."""
    return _params(p.T, p.tau, p.H, alpha=p.alpha, beta=p.beta, theta=p.theta, gamma=p.gamma, Lm_total=p.Lm_total,
                   Lp_total=p.Lp_total)


@pytest.fixture(scope="module")
def two_city():
    """Figure-2 economy at openness Delta = 0.1 (interior, well before the fold at 0.2007), with
    unequal housing so that the H-gradient is not symmetric."""
    t = 0.1 ** (-1 / 5.0)
    p = _params(jnp.array([1.5 ** 5, 1.0]), jnp.array([[1.0, t], [t, 1.0]]), jnp.array([1.0, 1.3]))
    s = jt.solve(p, y0=jt.autarky(p))
    assert s.status == "successful"
    return p, s.y


@pytest.fixture(scope="module")
def synth():
    p, y_true = jt.synthetic_economy(6, 2)
    p = _as_arrays(p)
    assert float(jnp.max(jnp.abs(jt.residual(y_true, p)))) < 1e-13
    return p, y_true


def objective(p, y0):
    lw, lm = jt.welfare(p, jt.solve(p, y0=y0, tol=1e-12))
    return lw + W_M * lm


def _fd_grad(p, y0, fields=("theta", "gamma", "T", "H", "tau"), rel=1e-6):
    """Central finite differences of the objective, one parameter entry at a time (warm re-solves at tol 1e-12).

    Off-diagonal tau entries only (the diagonal is pinned to 1 by the model)."""
    out = {}
    for name in fields:
        x = np.asarray(getattr(p, name), dtype=np.float64)
        g = np.zeros_like(x)
        idx = list(np.ndindex(x.shape)) if x.ndim else [()]
        for i in idx:
            if name == "tau" and i[0] == i[1]:
                continue
            h = rel * max(abs(x[i]), 1e-3)
            vals = []
            for sgn in (1.0, -1.0):
                xp = x.copy()
                xp[i] += sgn * h
                q = eqx.tree_at(lambda r: getattr(r, name), p, _a(xp))
                s = jt.solve(q, y0=y0, tol=1e-12)
                assert s.status == "successful"
                vals.append(float(s.log_Uw + W_M * s.log_Um))
            g[i] = (vals[0] - vals[1]) / (2 * h)
        out[name] = g
    return out


def _compare(g_auto, g_ref, rtol, what):
    for name, ref in g_ref.items():
        got = np.asarray(getattr(g_auto, name), dtype=np.float64)
        if name == "tau":
            mask = ~np.eye(ref.shape[0], dtype=bool)
            got, ref = got[mask], ref[mask]
        scale = np.max(np.abs(ref)) if np.ndim(ref) else abs(ref)
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * 1e-2 * scale, err_msg=f"{what}: d/d{name}")


# ---------------------------------------------------------------------------------------
# Independent implicit-differentiation paths (not using spatialjax.solver)
# ---------------------------------------------------------------------------------------


def objective_optx(p, y0):
    sol = optx.root_find(lambda y, q: jt.residual(y, q), optx.Newton(rtol=1e-13, atol=1e-13), y0, args=p,
                         adjoint=optx.ImplicitAdjoint(), max_steps=100)
    y = sol.value
    N = p.T.shape[0]
    return y[2 * N] + W_M * y[2 * N + 1]


def objective_jaxopt(p, y0):
    @jaxopt.implicit_diff.custom_root(lambda y, q: jt.residual(y, q), solve=jaxopt.linear_solve.solve_lu)
    def newton(y_init, q):
        def body(y, _):
            return y - jnp.linalg.solve(jax.jacfwd(jt.residual)(y, q), jt.residual(y, q)), None

        y, _ = jax.lax.scan(body, y_init, None, length=30)
        return y

    y = newton(y0, p)
    N = p.T.shape[0]
    return y[2 * N] + W_M * y[2 * N + 1]


def _param_grads(fn, p, y0):
    """Gradient of fn(p, y0) w.r.t. theta, gamma, T, H, tau (other leaves held fixed)."""
    def f(theta, gamma, T, H, tau):
        q = eqx.tree_at(lambda r: (r.theta, r.gamma, r.T, r.H, r.tau), p, (theta, gamma, T, H, tau))
        return fn(q, y0)

    g = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4)))(p.theta, p.gamma, p.T, p.H, p.tau)
    return dict(zip(("theta", "gamma", "T", "H", "tau"), [np.asarray(v) for v in g]))


_FD_CACHE = {}


def fd_grad(econ, p, y0):
    """Central FD of the objective, computed once per economy and shared by the tests."""
    if econ not in _FD_CACHE:
        _FD_CACHE[econ] = _fd_grad(p, y0)
    return _FD_CACHE[econ]


class _G:  # attribute access for _compare
    def __init__(self, d):
        self.__dict__.update(d)


@pytest.mark.slow
def test_gmres_and_lm_paths_agree_with_dense(synth):
    """Matrix-free Newton-Krylov (the large-N path) and Levenberg-Marquardt give the dense solution;
    the GMRES adjoint gives the dense gradient."""
    p, y_true = synth
    y0 = y_true + 0.1 * jnp.asarray(np.random.default_rng(0).uniform(-1, 1, y_true.shape[0]))

    def f(q, ls, m):
        s = jt.solve(q, y0=y0, linear_solver=ls, method=m, tol=1e-12)
        return s.log_Uw + W_M * s.log_Um, s

    (_, sd), gd = jax.value_and_grad(f, has_aux=True)(p, "dense", "newton")
    (_, sg), gg = jax.value_and_grad(f, has_aux=True)(p, "gmres", "newton")
    sl = jt.solve(p, y0=y0, method="lm", tol=1e-12)
    for s in (sd, sg, sl):
        assert s.status == "successful"
        np.testing.assert_allclose(np.asarray(s.y), np.asarray(y_true), atol=1e-10)
    assert float(sg.sigma_min) == pytest.approx(float(sd.sigma_min), rel=1e-3)
    for k in ("theta", "gamma", "T", "H", "tau"):
        np.testing.assert_allclose(np.asarray(getattr(gg, k)), np.asarray(getattr(gd, k)), rtol=1e-7, atol=1e-12,
                                   err_msg=k)


@pytest.mark.parametrize("econ", ["two_city", "synth"])
def test_independent_paths_agree_with_finite_differences(econ, request):
    """optimistix ImplicitAdjoint and jaxopt custom_root agree with each other and with central FD.
    (Validates the reference paths themselves; they do not use spatialjax.solver.)"""
    p, y0 = request.getfixturevalue(econ)
    g_optx = _param_grads(objective_optx, p, y0)
    g_jaxopt = _param_grads(objective_jaxopt, p, y0)
    for k in g_optx:
        np.testing.assert_allclose(g_jaxopt[k], g_optx[k], rtol=1e-9, atol=1e-12, err_msg=k)
    _compare(_G(g_optx), fd_grad(econ, p, y0), 1e-5, "optimistix vs FD")


@pytest.mark.parametrize("econ", ["two_city", "synth"])
def test_welfare_gradient_matches_fd_and_independent_paths(econ, request):
    p, y0 = request.getfixturevalue(econ)
    g = jax.grad(objective)(p, y0)
    assert all(np.all(np.isfinite(np.asarray(getattr(g, k)))) for k in ("theta", "gamma", "T", "H", "tau"))
    _compare(g, fd_grad(econ, p, y0), 1e-5, "jax.grad vs FD")
    ref = _param_grads(objective_optx, p, y0)
    _compare(g, ref, 1e-8, "jax.grad vs optimistix ImplicitAdjoint")
    # the diagonal of tau does not enter the model
    np.testing.assert_array_equal(np.diag(np.asarray(g.tau)), 0.0)


def test_welfare_gradient_inside_jit_equals_eager(two_city):
    p, y0 = two_city
    g_eager = jax.grad(objective)(p, y0)
    g_jit = jax.jit(jax.grad(objective))(p, y0)
    for k in ("theta", "gamma", "T", "H", "tau"):
        np.testing.assert_allclose(np.asarray(getattr(g_jit, k)), np.asarray(getattr(g_eager, k)), rtol=1e-12)


def test_cold_start_gradient_equals_warm(two_city):
    p, y0 = two_city

    def cold(q):
        lw, lm = jt.welfare(q, jt.solve(q, tol=1e-12))
        return lw + W_M * lm

    g_cold = jax.grad(cold)(p)
    ref = _param_grads(objective_optx, p, y0)
    _compare(g_cold, ref, 1e-8, "cold-start jax.grad vs optimistix")


def test_vmapped_gradient_equals_loop(two_city):
    p, y0 = two_city
    Ts = jnp.stack([jnp.array([1.5 ** 5 * f, 1.0]) for f in (0.9, 1.0, 1.1)])

    def f(T):
        return objective(eqx.tree_at(lambda r: r.T, p, T), y0)

    gb = jax.vmap(jax.grad(f))(Ts)
    for i in range(3):
        np.testing.assert_allclose(np.asarray(gb[i]), np.asarray(jax.grad(f)(Ts[i])), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Failed solves give NaN gradients, never plausible numbers
# ---------------------------------------------------------------------------------------


def test_gradient_through_non_converged_solve_is_nan(synth):
    p, y_true = synth
    y_bad = y_true + 0.3 * jnp.sin(jnp.arange(y_true.shape[0], dtype=F64))

    def f(q):
        s = jt.solve(q, y0=y_bad, max_steps=1, tol=1e-12)
        return s.log_Uw, s

    s = jt.solve(p, y0=y_bad, max_steps=1, tol=1e-12)
    assert s.status == "max_steps_reached" and float(s.residual) > 1e-6
    g, _ = jax.grad(f, has_aux=True)(p)
    for k in ("theta", "gamma", "T", "H", "tau"):
        assert np.all(np.isnan(np.asarray(getattr(g, k)))), k


def _fold_point():
    """The fold of the Figure-2 autarky branch, solved as the extended system
    F(y, Delta) = 0, J(y, Delta) v = 0, v.v0 = 1 (a regular root of the extended system)."""
    th = 5.0

    base = _params(jnp.array([1.5 ** 5, 1.0]), jnp.array([[1.0, 2.0], [2.0, 1.0]]), jnp.ones(2))

    def par(D):
        t = D ** (-1 / th)
        return eqx.tree_at(lambda r: r.tau, base, jnp.eye(2) + t * (1 - jnp.eye(2)))

    p0 = par(_a(0.2))
    n = 6
    # start: the branch near the fold, and the null vector of J there
    y = jt.autarky(p0)
    for D in (0.05, 0.1, 0.15, 0.19, 0.2, 0.2005):
        y = jt.solve(par(_a(D)), y0=y, tol=1e-12).y
    _, _, vt = jnp.linalg.svd(jt.jacobian(y, par(_a(0.2005))))
    v0 = vt[-1]

    def G(z, _):
        yy, v, D = z[:n], z[n:2 * n], z[2 * n]
        q = par(D)
        return jnp.concatenate([jt.residual(yy, q), jt.jacobian(yy, q) @ v, jnp.atleast_1d(v @ v0 - 1.0)])

    from spatialjax.solver import solve_root
    r = solve_root(G, jnp.concatenate([y, v0, jnp.atleast_1d(_a(0.2005))]), None, tol=1e-13)
    assert r.status == "successful", r.summary()
    return par(r.value[2 * n]), r.value[:n], float(r.value[2 * n])


@pytest.mark.slow
def test_gradient_at_fold_is_nan_and_status_singular():
    p, y_fold, D_fold = _fold_point()
    # Delta* = 0.2006624 (extended system, residual < 1e-13); MODELS.md: "around 0.2"
    assert abs(D_fold - 0.2006624) < 1e-6
    s = jt.solve(p, y0=y_fold, tol=1e-12)
    assert not bool(s.converged)
    assert s.status == "singular", s.summary()
    assert float(s.sigma_min) < 1e-5 * float(s.solve.jac_norm)  # the diagnostic sees the fold
    from spatialjax.errors import SingularJacobianError
    with pytest.raises(SingularJacobianError, match="fold"):
        jt.solve(p, y0=y_fold, tol=1e-12, throw=True)
    g = jax.grad(lambda q: objective(q, y_fold))(p)
    assert np.all(np.isnan(np.asarray(g.T)))
