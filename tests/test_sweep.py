"""Tests of spatialjax.sweep: vmapped, device-sharded counterfactual sweeps.

The toy model is a root solve with a parameter: for each scenario ``p`` solve
``exp(y) + k * y - a = 0`` (elementwise, ``y`` of shape (2,)) with the generic
``spatialjax.solver.solve_root``. For ``k > 0`` the left side is strictly increasing, so
there is a unique root; for ``k = 0`` and ``a <= 0`` there is no root at all (``exp(y) > 0``),
so the solve must fail and the sweep must report it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spatialjax  # noqa: F401
from spatialjax.errors import ParameterError
from spatialjax.solver import solve_root
from spatialjax.sweep import SweepResult, batch_size_of, stack, sweep, unstack


class Toy(eqx.Module):
    a: jax.Array  # shape (2,)
    k: jax.Array  # shape ()
    label: str = eqx.field(static=True, default="toy")


def _F(y, p):
    return jnp.exp(y) + p.k * y - p.a


def solve_toy(p: Toy):
    return solve_root(_F, jnp.zeros(2), p, max_steps=60)


# One jitted single-scenario solver, reused by every test (compiled once).
solve_one = eqx.filter_jit(solve_toy)


def scenarios(B, fail=()):
    out = []
    for i in range(B):
        if i in fail:
            out.append(Toy(a=jnp.array([-1.0, -2.0]), k=jnp.asarray(0.0)))
        else:
            out.append(Toy(a=jnp.array([0.5 + 0.3 * i, 2.0 - 0.1 * i]), k=jnp.asarray(0.5 + 0.05 * i)))
    return out


B = 7
FAIL = (3,)


@pytest.fixture(scope="module")
def loop_results():
    """Python loop of single (jitted) solves -- the reference a sweep must reproduce."""
    return [solve_one(p) for p in scenarios(B, FAIL)]


@pytest.fixture(scope="module")
def full_sweep():
    return sweep(solve_toy, stack(scenarios(B, FAIL)))


def test_sweep_equals_python_loop(full_sweep, loop_results):
    res = full_sweep
    assert isinstance(res, SweepResult)
    assert res.values.value.shape == (B, 2)
    assert res.values.residual.shape == (B,)
    for i, ref in enumerate(loop_results):
        np.testing.assert_allclose(np.asarray(res.values.value[i]), np.asarray(ref.value), rtol=1e-12, atol=1e-14)
        assert bool(res.values.converged[i]) == bool(ref.converged)
        assert res.status[i] == ref.status
    # the converged scenarios solve the equation (independent check, not just equality)
    for i in range(B):
        if i in FAIL:
            continue
        p = scenarios(B, FAIL)[i]
        assert float(jnp.max(jnp.abs(_F(res.values.value[i], p)))) < 1e-10


def test_failures_are_reported(full_sweep, loop_results):
    res = full_sweep
    expected_ok = np.array([bool(r.converged) for r in loop_results])
    assert not expected_ok[3] and expected_ok.sum() == B - 1  # the toy really fails at 3 only
    np.testing.assert_array_equal(res.ok, expected_ok)
    np.testing.assert_array_equal(res.failed, [3])
    assert not res.all_ok
    assert res.criterion.startswith("converged flag")
    assert res.status[3] != "successful" and res.status[0] == "successful"
    text = res.summary()
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines()
                if re.search(r"\S\s{2,}\S", line))
    assert rows["scenarios"] == str(B)
    assert rows["failed"] == "1"
    assert rows["succeeded"] == str(B - 1)
    assert f"3 ({res.status[3]})" in text
    assert str(res) == text


def test_scenario_accessor(full_sweep, loop_results):
    s = full_sweep.scenario(5)
    np.testing.assert_allclose(np.asarray(s.value), np.asarray(loop_results[5].value), rtol=1e-12)
    with pytest.raises(ParameterError, match="i: scenario index"):
        full_sweep.scenario(B)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_chunking_and_padding_equal_unchunked(full_sweep, batch_size):
    """Chunks of 2 or 3 (the last chunk padded by repeating scenario 6) equal one batch."""
    res = sweep(solve_toy, stack(scenarios(B, FAIL)), batch_size=batch_size, progress=True)
    n_chunks = -(-B // batch_size)
    assert res.n_chunks == n_chunks and res.chunk_size == batch_size
    assert res.n_padded == n_chunks * batch_size - B  # 1 for chunks of 2, 2 for chunks of 3
    assert res.values.value.shape == (B, 2)
    np.testing.assert_allclose(np.asarray(res.values.value), np.asarray(full_sweep.values.value),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(np.asarray(res.values.steps), np.asarray(full_sweep.values.steps))
    np.testing.assert_array_equal(res.failed, [3])


def test_padding_when_failure_is_last_scenario():
    """Padding repeats the last scenario; a failed last scenario is reported once, not per pad."""
    sc = scenarios(5, fail=(4,))
    res = sweep(solve_toy, stack(sc), batch_size=3)
    assert res.n_padded == 1
    np.testing.assert_array_equal(res.failed, [4])
    assert res.ok.shape == (5,)
    assert res.values.value.shape == (5, 2)


def test_no_flag_uses_finiteness():
    """Outputs without a converged flag: failure = non-finite output."""
    def f(p):
        return {"root": jnp.log(p.a), "k": p.k * 2.0}

    sc = [Toy(a=jnp.array([1.0, 2.0]), k=jnp.asarray(1.0)),
          Toy(a=jnp.array([-1.0, 2.0]), k=jnp.asarray(1.0)),  # log(-1) = nan
          Toy(a=jnp.array([3.0, 4.0]), k=jnp.asarray(2.0))]
    res = sweep(f, stack(sc))
    np.testing.assert_array_equal(res.failed, [1])
    assert "finite" in res.criterion
    np.testing.assert_allclose(np.asarray(res.values["root"][2]), np.log([3.0, 4.0]), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(res.values["k"]), [2.0, 2.0, 4.0])
    assert res.status is None


def test_static_fields_and_shared_values_pass():
    """Static fields (label) and non-array leaves are shared; non-array outputs come back."""
    class WithShared(eqx.Module):
        a: jax.Array
        scale: float  # a Python number: a non-array leaf, shared by all scenarios

    def f(p):
        return {"y": p.a * p.scale, "tag": "done"}

    batched = WithShared(a=jnp.arange(6.0).reshape(3, 2), scale=10.0)
    res = sweep(f, batched)
    np.testing.assert_allclose(np.asarray(res.values["y"]), 10.0 * np.arange(6.0).reshape(3, 2))
    assert res.values["tag"] == "done"
    assert res.all_ok


def test_inconsistent_batch_raises():
    bad = Toy(a=jnp.ones((4, 2)), k=jnp.ones(3))
    with pytest.raises(ParameterError) as ei:
        sweep(solve_toy, bad)
    msg = str(ei.value)
    assert ".k" in ei.value.field and "3" in msg and "4" in msg and ".a" in msg
    with pytest.raises(ParameterError, match="leading batch axis"):
        batch_size_of(Toy(a=jnp.ones((4, 2)), k=jnp.asarray(1.0)))
    with pytest.raises(ParameterError, match="no array leaves"):
        sweep(lambda p: p, {"x": 1.0})
    with pytest.raises(ParameterError, match="batch_size"):
        sweep(solve_toy, stack(scenarios(2)), batch_size=0)
    with pytest.raises(ParameterError, match="devices"):
        sweep(solve_toy, stack(scenarios(2)), devices=[])
    with pytest.raises(ParameterError, match="'auto', 'vmap' or 'map'") as ei:
        sweep(solve_toy, stack(scenarios(2)), inner="pmap")
    assert ei.value.field == "inner"
    with pytest.raises(ParameterError, match="fn"):
        sweep(3, stack(scenarios(2)))


def test_stack_errors_and_numbers():
    with pytest.raises(ParameterError, match="non-empty"):
        stack([])
    with pytest.raises(ParameterError, match="shapes differ"):
        stack([Toy(a=jnp.ones(2), k=jnp.asarray(1.0)), Toy(a=jnp.ones(3), k=jnp.asarray(1.0))])
    with pytest.raises(ParameterError, match="structure"):
        stack([Toy(a=jnp.ones(2), k=jnp.asarray(1.0)), Toy(a=jnp.ones(2), k=jnp.asarray(1.0), label="other")])
    with pytest.raises(ParameterError, match="non-array leaf differs"):
        stack([{"x": jnp.ones(1), "s": "a"}, {"x": jnp.ones(1), "s": "b"}])
    # differing Python numbers become a swept array; equal ones stay shared
    st_ = stack([{"tau": 1.0, "s": 2.0}, {"tau": 3.0, "s": 2.0}])
    np.testing.assert_array_equal(np.asarray(st_["tau"]), [1.0, 3.0])
    assert st_["s"] == 2.0 and isinstance(st_["s"], float)


@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 5), n=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_stack_unstack_roundtrip(B, n, seed):
    rng = np.random.default_rng(seed)
    sc = [Toy(a=jnp.asarray(rng.normal(size=n)), k=jnp.asarray(rng.normal())) for _ in range(B)]
    batched = stack(sc)
    assert batched.a.shape == (B, n) and batched.k.shape == (B,)
    assert batch_size_of(batched) == B
    back = unstack(batched)
    assert len(back) == B
    for x, y in zip(sc, back):
        np.testing.assert_array_equal(np.asarray(x.a), np.asarray(y.a))
        np.testing.assert_array_equal(np.asarray(x.k), np.asarray(y.k))
        assert y.label == "toy"


_MULTI = textwrap.dedent(
    """
    import json
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np
    import spatialjax
    from spatialjax.solver import solve_root
    from spatialjax.sweep import stack, sweep

    class Toy(eqx.Module):
        a: jax.Array
        k: jax.Array

    def F(y, p):
        return jnp.exp(y) + p.k * y - p.a

    def fn(p):
        return solve_root(F, jnp.zeros(2), p, max_steps=60)

    B = 13
    sc = [Toy(a=jnp.array([0.5 + 0.3 * i, 2.0 - 0.1 * i]), k=jnp.asarray(0.5 + 0.05 * i)) for i in range(B)]
    sc[5] = Toy(a=jnp.array([-1.0, -2.0]), k=jnp.asarray(0.0))  # no root: must be reported
    batched = stack(sc)
    res = sweep(fn, batched)
    one = [jax.devices()[0]]
    ref = eqx.filter_jit(eqx.filter_vmap(fn))(jax.device_put(batched, one[0]))
    res1 = sweep(fn, batched, devices=one)
    resv = sweep(fn, batched, inner="vmap")  # the batched program on every device (toy: no LAPACK)
    ch = sweep(fn, stack(sc[:B] + sc[:3]), batch_size=8)  # B = 16: two chunks, stays sharded
    print(json.dumps({
        "n_devices": len(jax.devices()),
        "sweep_devices": res.n_devices,
        "padded_output_devices": res.n_output_devices,
        "n_padded": res.n_padded,
        "shape": list(res.values.value.shape),
        "max_diff_vs_vmap": float(np.max(np.abs(np.asarray(res.values.value) - np.asarray(ref.value)))),
        "max_diff_vs_one_device": float(np.max(np.abs(np.asarray(res.values.value)
                                                      - np.asarray(res1.values.value)))),
        "one_device_output_devices": res1.n_output_devices,
        "inner_auto": res.inner, "inner_one": res1.inner, "inner_forced": resv.inner,
        "max_diff_vmap_inner": float(np.max(np.abs(np.asarray(resv.values.value) - np.asarray(ref.value)))),
        "vmap_inner_output_devices": resv.n_output_devices,
        "failed": res.failed.tolist(),
        "ref_failed": np.flatnonzero(~np.asarray(ref.converged)).tolist(),
        "chunked_value_devices": len(ch.values.value.sharding.device_set),
        "chunked_n_chunks": ch.n_chunks,
        "chunked_max_diff": float(np.max(np.abs(np.asarray(ch.values.value[:B]) - np.asarray(ref.value)))),
    }))
    """
)


def _run_on_forced_devices(source: str, n_devices: int, tmp_path) -> dict:
    """Run ``source`` in a fresh interpreter with ``n_devices`` forced CPU devices; return the
    JSON object it prints last."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n_devices}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    script = tmp_path / f"multi_{n_devices}.py"
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_multi_device_sharded_sweep(tmp_path):
    """8 forced host devices: B = 13 padded to 16, sharded 2 per device, equal to plain vmap."""
    out = _run_on_forced_devices(_MULTI, 8, tmp_path)
    assert out["n_devices"] == 8
    assert out["sweep_devices"] == 8
    assert out["padded_output_devices"] == 8  # the computation really ran on all 8 devices
    assert out["one_device_output_devices"] == 1
    # auto: lax.map on CPU devices, however many (see sweep's docstring); vmap when forced
    assert (out["inner_auto"], out["inner_one"], out["inner_forced"]) == ("map", "map", "vmap")
    assert out["max_diff_vmap_inner"] <= 1e-12 and out["vmap_inner_output_devices"] == 8
    assert out["n_padded"] == 3
    assert out["shape"] == [13, 2]
    assert out["max_diff_vs_vmap"] <= 1e-12
    assert out["max_diff_vs_one_device"] <= 1e-12
    assert out["failed"] == [5] and out["ref_failed"] == [5]
    assert out["chunked_n_chunks"] == 2
    assert out["chunked_value_devices"] == 8  # B = 16 divisible by 8: values stay sharded
    assert out["chunked_max_diff"] <= 1e-12


_MULTI_JT = textwrap.dedent(
    """
    import json, sys
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np
    import spatialjax
    from spatialjax.models import jiao_tian as jt
    from spatialjax.sweep import stack, sweep

    p, y = jt.synthetic_economy(100, 0)
    base = jt.solve(p, y)
    sc = [eqx.tree_at(lambda q: q.T, p, p.T * (1 + 0.001 * i)) for i in range(8)]
    fn = lambda q: jt.solve(q, base).solve
    res = sweep(fn, stack(sc))
    loop = np.stack([np.asarray(jt.solve(q, base).y) for q in sc])
    print(json.dumps({"n_devices": len(jax.devices()), "sweep_devices": res.n_devices, "inner": res.inner,
                      "failed": res.failed.tolist(),
                      "max_diff_vs_loop": float(np.max(np.abs(np.asarray(res.values.value) - loop)))}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("n_dev", [2, 4])
def test_multi_device_jiao_tian_sweep_does_not_deadlock(tmp_path, n_dev):
    """2 and 4 forced host devices, 2+ scenarios per device, N = 100 Newton solves: jaxlib's
    batched LU deadlocked here under vmap; the sweep's per-device lax.map must finish and
    equal the loop of single solves."""
    out = _run_on_forced_devices(_MULTI_JT, n_dev, tmp_path)
    assert out["n_devices"] == n_dev and out["sweep_devices"] == n_dev
    assert out["inner"] == "map"
    assert out["failed"] == []
    assert out["max_diff_vs_loop"] <= 1e-10


def _solve_shared(p, sh):
    """The toy with a shared additive shift: exp(y) + k y - (a + shift) = 0."""
    return solve_root(lambda y, q: jnp.exp(y) + q[0].k * y - (q[0].a + q[1]), jnp.zeros(2), (p, sh["shift"]),
                      max_steps=60)


def test_shared_operands_equal_per_scenario_copies():
    """``shared`` arrays are passed unbatched to every scenario: the same answers as putting a
    copy of them into every scenario; a new shared value reuses the compilation."""
    sc = scenarios(5)
    shift = jnp.array([0.2, -0.1])
    res = sweep(_solve_shared, stack(sc), shared={"shift": shift}, batch_size=3)
    for i, p in enumerate(sc):
        ref = solve_one(Toy(a=p.a + shift, k=p.k))
        np.testing.assert_allclose(np.asarray(res.values.value[i]), np.asarray(ref.value), rtol=1e-12, atol=1e-14)
    res2 = sweep(_solve_shared, stack(sc), shared={"shift": 2 * shift}, batch_size=3)
    ref2 = solve_one(Toy(a=sc[4].a + 2 * shift, k=sc[4].k))
    np.testing.assert_allclose(np.asarray(res2.values.value[4]), np.asarray(ref2.value), rtol=1e-12)
    assert not np.allclose(np.asarray(res2.values.value), np.asarray(res.values.value))
    with pytest.raises(ParameterError, match="shared"):
        sweep(_solve_shared, stack(sc), shared={"shift": 1.0})


def test_map_batch_size_equals_vmap(full_sweep):
    res = sweep(solve_toy, stack(scenarios(B, FAIL)), inner="map", map_batch_size=2)
    assert res.inner == "map"
    np.testing.assert_allclose(np.asarray(res.values.value), np.asarray(full_sweep.values.value), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_array_equal(res.failed, [3])
    with pytest.raises(ParameterError, match="map_batch_size"):
        sweep(solve_toy, stack(scenarios(2)), map_batch_size=0)


def test_unconverged_solve_nested_in_the_outputs_is_a_failure_not_finite_ok():
    """Outputs without a top-level flag (``dict(solve=SolveResult, value=...)``): a finite but
    unconverged nested solve must be reported as failed with its status (not pass the
    finiteness fallback)."""
    from spatialjax.solver import solve_root

    def fn(a):
        # y^2 = a: no real root for a < 0 (finite iterates, the solve stalls or runs out)
        s = solve_root(lambda y, aa: y ** 2 - aa, jnp.array([1.0]), a, tol=1e-12, max_steps=30)
        return dict(solve=s, y=jnp.tanh(s.value))

    a = jnp.array([4.0, -1.0, 9.0, -4.0])
    r = sweep(fn, a)
    assert np.all(np.isfinite(np.asarray(r.values["y"])))
    assert list(r.failed) == [1, 3]
    assert r.status[0] == r.status[2] == "successful"
    assert r.status[1] in ("stalled", "max_steps_reached") and r.status[3] in ("stalled", "max_steps_reached")
    assert "nested" in r.criterion


def test_auto_inner_is_map_on_cpu_and_equals_vmap():
    from spatialjax.solver import solve_root

    def fn(a):
        return solve_root(lambda y, aa: y ** 3 - aa, jnp.array([1.0]), a, tol=1e-13)

    a = jnp.linspace(1.0, 8.0, 6)
    r_auto, r_vmap = sweep(fn, a), sweep(fn, a, inner="vmap")
    if all(d.platform == "cpu" for d in jax.devices()):
        assert r_auto.inner == "map"
    np.testing.assert_allclose(np.asarray(r_auto.values.value[:, 0]), np.asarray(a) ** (1 / 3), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(r_auto.values.value), np.asarray(r_vmap.values.value), rtol=1e-12)
