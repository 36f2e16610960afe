"""spatialjax.scalar.bracket_root: the shared bracketing root finder (status, implicit derivative)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

import spatialjax  # noqa: F401
from spatialjax.scalar import SCALAR_STATUSES, bisect, bracket_root
from spatialjax.results import STATUSES


def cubic(x, a):
    return x**3 + a[1] * x - a[0]


@settings(max_examples=40, deadline=None)
@given(st.floats(0.01, 50.0), st.floats(0.0, 5.0))
def test_root_and_implicit_derivative_match_scipy_and_closed_form(c, b):
    # x^3 + b x - c is strictly increasing for b >= 0: one root in (0, c^(1/3) + 1).
    a = jnp.array([c, b])
    r = bracket_root(cubic, 0.0, c ** (1 / 3) + 1.0, a)
    ref = scipy.optimize.brentq(lambda x: x**3 + b * x - c, 0.0, c ** (1 / 3) + 1.0, xtol=1e-15, rtol=1e-15)
    assert r.status == "successful"
    assert abs(float(r.value) - ref) <= 1e-13 * max(1.0, ref)
    # implicit derivative: dx/dc = 1 / (3x^2 + b), dx/db = -x / (3x^2 + b)
    g = jax.grad(lambda aa: bracket_root(cubic, 0.0, c ** (1 / 3) + 1.0, aa).value)(a)
    x = ref
    np.testing.assert_allclose(np.asarray(g), [1 / (3 * x * x + b), -x / (3 * x * x + b)], rtol=1e-9)


def test_statuses_and_nan_derivatives():
    a = jnp.array([30.0, 0.0])
    # no sign change on [0, 3]: no_solution, value NaN, derivative NaN (never a plausible 0)
    r = bracket_root(cubic, 0.0, 3.0, a)
    assert r.status == "no_solution" and np.isnan(float(r.value)) and not bool(r.converged)
    assert np.all(np.isnan(np.asarray(jax.grad(lambda aa: bracket_root(cubic, 0.0, 3.0, aa).value)(a))))
    # a triple root x^3 = 0 at the root: df/dx = 0 -> singular, derivative NaN
    z = jnp.array([0.0, 0.0])
    r0 = bracket_root(cubic, -1.0, 1.0, z)
    assert r0.status == "singular" and abs(float(r0.value)) < 1e-5
    assert np.all(np.isnan(np.asarray(jax.grad(lambda aa: bracket_root(cubic, -1.0, 1.0, aa).value)(z))))
    # a pole 1/(x - 1) changes sign on [0, 3]: caught by ftol
    assert bracket_root(lambda x, _: 1.0 / (x - 1.0), 0.0, 3.0, ftol=1e-8).status == "stalled"
    # non-finite at an end
    assert bracket_root(lambda x, _: jnp.log(x), -1.0, 3.0).status == "nonfinite"
    # too few halvings
    assert bracket_root(cubic, 0.0, 3.0, jnp.array([2.0, 0.0]), max_iter=5).status == "max_steps_reached"
    # every status name is in the package vocabulary
    assert set(SCALAR_STATUSES) <= set(STATUSES)


def test_python_float_args_still_get_a_derivative():
    # a Python float parameter must not silently get a zero gradient
    g = jax.grad(lambda c: bracket_root(lambda x, cc: x**3 - cc, 0.0, 3.0, c).value)(2.0)
    assert abs(float(g) - (1 / 3) * 2 ** (-2 / 3)) < 1e-10


def test_vmap_jit_batch_has_per_member_status():
    cs = jnp.array([1.0, 8.0, 30.0])
    out = jax.jit(jax.vmap(lambda c: bracket_root(cubic, 0.0, 3.0, jnp.array([c, 0.0]))))(cs)
    assert out.status == ["successful", "successful", "no_solution"]
    np.testing.assert_allclose(np.asarray(out.value[:2]), [1.0, 2.0], atol=1e-14)
    assert np.isnan(float(out.value[2]))


def test_bisect_unchanged_fixed_halvings():
    x = bisect(lambda x: x * x - 2.0, 0.0, 2.0, 60)
    assert abs(float(x) - np.sqrt(2.0)) < 1e-15 * 4
