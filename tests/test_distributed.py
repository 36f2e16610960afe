"""Sweeps across several processes (``jax.distributed``) and several forced host devices.

Two local processes (coordinator on 127.0.0.1, a free port, CPU backend with gloo collectives,
2 forced host devices each) run one sharded sweep together over the 4 global devices; each
all-gathers the result (``spatialjax.sweep.gather``) and prints it. The test checks both equal
the single-process answer computed here, including the reported failure.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spatialjax  # noqa: F401
from spatialjax.solver import solve_root
from spatialjax.sweep import gather, stack, sweep

_WORKER = textwrap.dedent(
    """
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                               initialization_timeout=120)
    import equinox as eqx, jax.numpy as jnp, numpy as np
    import spatialjax
    from spatialjax.solver import solve_root
    from spatialjax.sweep import distributed_mesh_devices, gather, stack, sweep

    class Toy(eqx.Module):
        a: jax.Array
        k: jax.Array

    def F(y, p):
        return jnp.exp(y) + p.k * y - p.a

    def fn(p):
        return solve_root(F, jnp.zeros(2), p, max_steps=60)

    B = 12
    sc = [Toy(a=jnp.array([0.5 + 0.3 * i, 2.0 - 0.1 * i]), k=jnp.asarray(0.5 + 0.05 * i)) for i in range(B)]
    sc[5] = Toy(a=jnp.array([-1.0, -2.0]), k=jnp.asarray(0.0))  # no root
    res = sweep(fn, stack(sc), devices=distributed_mesh_devices(), batch_size=8)
    v = gather(res.values)
    print(json.dumps(dict(pid=pid, n_proc=jax.process_count(), n_dev=len(jax.devices()),
                          n_local=len(jax.local_devices()), sweep_devices=res.n_devices,
                          out_devices=res.n_output_devices, chunks=res.n_chunks, failed=res.failed.tolist(),
                          addressable_whole=bool(res.values.value.is_fully_addressable),
                          value=np.asarray(v.value).tolist(), steps=np.asarray(v.steps).tolist())), flush=True)
    """
)


class Toy(eqx.Module):
    a: jax.Array
    k: jax.Array


def _F(y, p):
    return jnp.exp(y) + p.k * y - p.a


def _fn(p):
    return solve_root(_F, jnp.zeros(2), p, max_steps=60)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_two_processes_run_one_sweep(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip())
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(i), port], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outs = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=300)
            assert p.returncode == 0, e[-3000:]
            outs.append(json.loads(o.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    B = 12
    sc = [Toy(a=jnp.array([0.5 + 0.3 * i, 2.0 - 0.1 * i]), k=jnp.asarray(0.5 + 0.05 * i)) for i in range(B)]
    sc[5] = Toy(a=jnp.array([-1.0, -2.0]), k=jnp.asarray(0.0))
    ref = sweep(_fn, stack(sc), devices=jax.devices()[:1])
    for o in outs:
        assert (o["n_proc"], o["n_dev"], o["n_local"]) == (2, 4, 2)
        assert o["sweep_devices"] == 4 and o["out_devices"] == 4  # really sharded over both processes
        assert o["chunks"] == 2
        assert not o["addressable_whole"]  # each process holds only its shards
        assert o["failed"] == [5] == ref.failed.tolist()
        v = np.asarray(o["value"])
        ok = np.arange(B) != 5
        np.testing.assert_allclose(v[ok], np.asarray(ref.values.value)[ok], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(np.asarray(o["steps"]), np.asarray(ref.values.steps))
    assert {o["pid"] for o in outs} == {0, 1}


def test_gather_single_process_is_asarray():
    t = {"x": jnp.arange(4.0), "s": "tag"}
    g = gather(t)
    assert isinstance(g["x"], np.ndarray) and g["s"] == "tag"
    np.testing.assert_array_equal(g["x"], np.arange(4.0))


_UPGRADE_DEVICES = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    import spatialjax
    from spatialjax.models import jiao_tian_counterfactuals as cf
    from spatialjax.models import jiao_tian_sweeps as js
    b = cf.synthetic_baseline(16, seed=3)
    kw = dict(q=b.q, delta_I=b.delta_I, polish=False)
    r4 = js.upgrade_each_city(b.params, b.sol, 0.4, inner="vmap", **kw)
    r1 = js.upgrade_each_city(b.params, b.sol, 0.4, devices=jax.devices()[:1], **kw)
    print(json.dumps(dict(devices=r4.info["devices"], inner=r4.info["inner"], ok=int(r4.frame["converged"].sum()),
                          max_diff=float(np.max(np.abs(r4.values - r1.values))))))
    """
)


@pytest.mark.slow
def test_chord_upgrade_vmap_on_four_forced_devices(tmp_path):
    """The chord sweep factors nothing per scenario (one baseline LU, shared), so the batched
    program runs on 4 forced host devices without the batched-LU deadlock of vmapped
    ``jt.solve`` (timeout-guarded) and equals the one-device answer."""
    script = tmp_path / "up.py"
    script.write_text(_UPGRADE_DEVICES)
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    p = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    o = json.loads(p.stdout.strip().splitlines()[-1])
    assert o["devices"] == 4 and o["inner"] == "vmap"
    assert o["ok"] == 16
    assert o["max_diff"] <= 1e-12
