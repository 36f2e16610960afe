"""Counterfactual sweeps: one vmapped computation, sharded across all available devices.

A *sweep* evaluates a pure function ``fn(scenario) -> outputs`` on ``B`` scenarios at once.
The scenarios are given as one *batched* PyTree (for instance a model's ``Params``
``eqx.Module``) whose array leaves carry a leading batch axis of size ``B``; non-array
leaves (Python numbers, strings, static fields) are shared by all scenarios.

:func:`sweep` ``jax.vmap``-s ``fn`` and shards the batch axis over a one-dimensional
device mesh (``jax.sharding.Mesh`` with axis name ``"batch"``, inputs placed with
``NamedSharding(mesh, PartitionSpec("batch"))``). Inside, each device runs ``vmap(fn)`` on
its own slice of the batch (``jax.shard_map``), so there is no cross-device communication:
in particular a device's vmapped Newton ``while_loop`` stops as soon as *its* scenarios
have converged, not when the slowest scenario of the whole batch has. The code is
device-agnostic: CPU devices (e.g. ``XLA_FLAGS=--xla_force_host_platform_device_count=8``),
one GPU or several.

``B`` is padded up to a multiple of the device count by repeating the last scenario; the
padding is stripped from the outputs. With ``batch_size`` the batch is processed in
chunks of equal size (one compilation, reused for every chunk), to bound memory.

A sweep never hides failures: :class:`SweepResult` exposes ``ok`` (a boolean mask of shape
``(B,)``) and ``failed`` (indices), read from a ``converged`` flag of the outputs (e.g.
:class:`spatialjax.solver.SolveResult`), from a ``result`` status enumeration, or, if the
outputs carry neither, from finiteness of every floating-point output; ``summary()`` says
how many scenarios failed and which.

Typical use::

    from spatialjax.sweep import stack, sweep
    batched = stack([Params(tau=t) for t in taus])          # leading axis B on arrays
    res = sweep(lambda p: solve(p, y0=baseline.value), batched)
    print(res.summary())
    res.values.value   # shape (B, n)

Known issue (jax 0.10.2, CPU backend): with several host devices
(``--xla_force_host_platform_device_count``), jaxlib's *batched* LAPACK kernels (the LU of
a vmapped Newton solve) can deadlock: two device programs each wait in
``jax::ParallelBatchMap`` for work on an exhausted thread pool (seen with 2 or 4 devices
and 2 scenarios per device, N = 100 Jiao-Tian solves; native stacks via gdb). On such
meshes, and on CPU generally (where it is also faster: a batched Newton solve runs as long as
its slowest scenario), :func:`sweep` evaluates each device's slice with ``jax.lax.map``
(``inner="auto"``), which runs unbatched kernels; ``inner="vmap"`` forces the batched
program (the default on accelerators). Re-checked 2026-12-06 (8 warm N = 100 solves on 4 forced
devices, ``inner="vmap"``, 150 s timeout): 1 of 3 runs hung; with
``--xla_cpu_multi_thread_eigen=false`` (the cure of a related pool re-entry deadlock) 3 of 3
hung, so that flag is not a fix. jax 0.10.2 is the newest release on the package index this
project installs from, so the upgrade past the jaxlib change could not be tried; the cause is
inside jaxlib, and the per-device ``lax.map`` stays.

This module is generic: it never imports a model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import spatialjax  # noqa: F401  (switches on float64)
from spatialjax.errors import ParameterError
from spatialjax.tables import format_table

__all__ = ["SweepResult", "sweep", "stack", "unstack", "batch_size_of", "gather", "distributed_mesh_devices"]

_AXIS = "batch"


# ---------------------------------------------------------------------------------------
# Batched PyTrees: sizes, stack, unstack
# ---------------------------------------------------------------------------------------


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _leaves_with_paths(tree):
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _path_name(root: str, path) -> str:
    return root + jax.tree_util.keystr(path)


def batch_size_of(batched: Any, *, name: str = "batched") -> int:
    """Leading batch size ``B`` shared by all array leaves of ``batched``.

    Raises:
        ParameterError: if there is no array leaf, an array leaf is a scalar (no batch
            axis), or two array leaves disagree on the leading size. The message names the
            leaf paths and sizes.
    """
    sizes: list[tuple[str, int]] = []
    for path, leaf in _leaves_with_paths(batched):
        if not _is_array(leaf):
            continue
        where = _path_name(name, path)
        if np.ndim(leaf) == 0:
            raise ParameterError(where, "array leaves of a batched PyTree need a leading batch axis; "
                                        "got a scalar (0-d) array. Use stack() to build a batch, or make a "
                                        "shared value a Python number / static field")
        sizes.append((where, int(np.shape(leaf)[0])))
    if not sizes:
        raise ParameterError(name, "has no array leaves, so there is no batch axis to sweep over; "
                                   "array leaves must carry a leading batch axis of size B")
    B = sizes[0][1]
    bad = [(w, s) for w, s in sizes if s != B]
    if bad:
        w, s = bad[0]
        listing = ", ".join(f"{ww}: {ss}" for ww, ss in sizes[:12]) + (" ..." if len(sizes) > 12 else "")
        raise ParameterError(w, f"leading batch size {s} differs from {B} (the size of {sizes[0][0]}); "
                                f"all array leaves must share the same leading batch axis. Sizes: {listing}")
    if B == 0:
        raise ParameterError(sizes[0][0], "batch size is 0; a sweep needs at least one scenario")
    return B


def _is_number(x) -> bool:
    return isinstance(x, (int, float, complex, np.number)) and not isinstance(x, bool)


def stack(scenarios: Sequence[Any], *, name: str = "scenarios") -> Any:
    """Stack a list of scenario PyTrees into one batched PyTree (leading axis ``B``).

    Array leaves are stacked with ``jnp.stack``. Non-array leaves must agree across the
    scenarios and stay shared (static) -- except Python numbers that differ between
    scenarios, which are stacked into a float/int array (so ``Params(tau=1.0)``,
    ``Params(tau=2.0)`` becomes a sweep over ``tau``).

    Args:
        scenarios: non-empty sequence of PyTrees with identical structure (the same
            static fields); array leaves must have identical shapes.

    Returns:
        A PyTree of the same structure; each stacked leaf has shape ``(B, *leaf.shape)``.

    Raises:
        ParameterError: empty list, structures differ, shapes differ, or a non-numeric
            non-array leaf differs between scenarios.
    """
    scenarios = list(scenarios)
    if not scenarios:
        raise ParameterError(name, "must be a non-empty sequence of scenarios; got an empty sequence")
    flat0, treedef0 = jax.tree_util.tree_flatten_with_path(scenarios[0])
    flats = [[leaf for _, leaf in flat0]]
    for i, sc in enumerate(scenarios[1:], start=1):
        leaves, treedef = jax.tree_util.tree_flatten(sc)
        if treedef != treedef0:
            a, b = str(treedef0), str(treedef)
            raise ParameterError(f"{name}[{i}]", "has a different PyTree structure (fields, static fields or "
                                                 f"None-ness) from {name}[0]: {b[:300]} vs {a[:300]}")
        flats.append(leaves)
    out = []
    for j, (path, leaf0) in enumerate(flat0):
        col = [f[j] for f in flats]
        where = _path_name(name + "[i]", path)
        if any(_is_array(x) for x in col):
            shapes = {np.shape(x) for x in col}
            if len(shapes) > 1:
                raise ParameterError(where, f"array shapes differ between scenarios: {sorted(shapes)}; "
                                            "every scenario must have the same shapes")
            out.append(jnp.stack([jnp.asarray(x) for x in col]))
        elif all(_is_number(x) for x in col) and len({x for x in col}) > 1:
            out.append(jnp.asarray(col))
        else:
            try:
                same = all(x == leaf0 for x in col[1:]) if len(col) > 1 else True
                same = bool(same)
            except Exception:  # noqa: BLE001  (objects without a clean __eq__)
                same = all(x is leaf0 for x in col)
            if not same:
                raise ParameterError(where, "non-array leaf differs between scenarios; non-array leaves are "
                                            "shared by all scenarios (only arrays and Python numbers can vary)")
            out.append(leaf0)
    return jax.tree_util.tree_unflatten(treedef0, out)


def unstack(batched: Any, *, name: str = "batched") -> list[Any]:
    """Inverse of :func:`stack`: a list of ``B`` scenario PyTrees.

    Array leaves are split along the leading axis (``leaf[i]``); non-array leaves are
    shared. Raises :class:`ParameterError` on inconsistent batch sizes.
    """
    B = batch_size_of(batched, name=name)
    dyn, static = eqx.partition(batched, _is_array)
    return [eqx.combine(jax.tree.map(lambda x, i=i: x[i], dyn), static) for i in range(B)]


# ---------------------------------------------------------------------------------------
# The sharded, vmapped call
# ---------------------------------------------------------------------------------------


@eqx.filter_jit
def _sharded_vmap(fn, mesh, dyn, static, inner="vmap", shared=None, map_batch=None):
    """``vmap(fn)`` (or ``lax.map(fn)`` with ``inner="map"``) over the leading axis of
    ``dyn`` (array leaves), sharded on ``mesh``; ``shared`` (a PyTree of arrays, or None) is
    replicated on every device and passed unbatched as ``fn(scenario, shared)``.

    ``fn``, ``mesh``, ``static``, ``inner`` and ``map_batch`` are static (hashed) by
    ``filter_jit``: one compilation per (function, mesh, static part, shapes), reused across
    chunks and calls.
    """
    out_static = {}

    with_shared = shared is not None

    def call(d1, sh):
        sc = eqx.combine(d1, static)
        return fn(sc, sh) if with_shared else fn(sc)

    def local(d, sh):
        if inner == "map":
            def one(d1):
                o_dyn, o_static = eqx.partition(call(d1, sh), eqx.is_array)
                out_static["v"] = o_static
                return o_dyn
            return jax.lax.map(one, d, batch_size=map_batch)
        out = eqx.filter_vmap(lambda d1: call(d1, sh))(d)
        o_dyn, o_static = eqx.partition(out, eqx.is_array)
        out_static["v"] = o_static
        return o_dyn

    spec = PartitionSpec(_AXIS)
    shared = () if shared is None else shared
    sh_spec = jax.tree.map(lambda _: PartitionSpec(), shared)
    o_dyn = jax.shard_map(local, mesh=mesh, in_specs=(spec, sh_spec), out_specs=spec, check_vma=False)(dyn, shared)
    return eqx.combine(o_dyn, out_static["v"])


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


def _status_of(values):
    """(ok mask or None, how it was determined, per-scenario status names or None)."""
    conv = None
    if isinstance(values, dict) and "converged" in values:
        conv = values["converged"]
    elif hasattr(values, "converged"):
        try:
            conv = getattr(values, "converged")
        except Exception:  # noqa: BLE001
            conv = None
    names = None
    res = values.get("result") if isinstance(values, dict) else getattr(values, "result", None)
    if res is not None:
        # a spatialjax.solver.RESULTS item: names via the enumeration's public comparisons
        # (None for anything else, e.g. another enumeration)
        from spatialjax.solver import status_names

        names = status_names(res)
        if names is not None and conv is None:
            conv = np.asarray([n == "successful" for n in names], dtype=bool)
    if conv is not None and _is_array(conv) and np.asarray(conv).dtype == np.bool_:
        return np.asarray(conv).reshape(-1), "converged flag of the outputs", names
    # no flag at the top: results nested in the outputs (e.g. ``dict(solve=sol.solve, U=...)``,
    # or a tuple of solutions) each carry one; a scenario is ok only if all of them converged,
    # and its status is the first failing one's (never the finiteness fallback, under which a
    # finite but unconverged solve would pass as ok)
    nested = [x for x in jax.tree_util.tree_leaves(values, is_leaf=_has_flag) if _has_flag(x)]
    flags, all_names = [], []
    for x in nested:
        try:
            c = np.asarray(x.converged)
        except Exception:  # noqa: BLE001
            continue
        if c.dtype == np.bool_:
            flags.append(c.reshape(-1))
            r = getattr(x, "result", None)
            if r is None and hasattr(x, "solve"):
                r = getattr(x.solve, "result", None)
            nm = None
            if r is not None:
                from spatialjax.solver import status_names

                nm = status_names(r)
            all_names.append(nm if nm is not None else ["successful" if v else "failed" for v in c.reshape(-1)])
    if flags and len({f.size for f in flags}) == 1:
        ok = np.logical_and.reduce(flags)
        names = [next((nm[i] for nm in all_names if nm[i] != "successful"), all_names[0][i])
                 for i in range(ok.size)]
        return ok, f"converged flags of the {len(flags)} result(s) nested in the outputs", names
    return None, None, names


def _has_flag(x) -> bool:
    """A result object with a ``converged`` flag (a solver or model result), not a container."""
    return isinstance(x, eqx.Module) and isinstance(getattr(type(x), "converged", None), property)


def _finite_mask(values, B):
    ok = np.ones(B, dtype=bool)
    for leaf in jax.tree.leaves(values):
        if _is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.inexact) and np.ndim(leaf) >= 1:
            a = np.asarray(leaf).reshape(B, -1)
            ok &= np.all(np.isfinite(a), axis=1)
    return ok


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """Outputs of a :func:`sweep` over ``B`` scenarios.

    Attributes:
        values: the stacked outputs: ``fn``'s output PyTree with a leading axis ``B`` on
            every array leaf (padding removed). Its arrays stay sharded over the devices
            (``NamedSharding(mesh, PartitionSpec("batch"))``) when ``B`` is a multiple of
            the device count; otherwise they are gathered onto the first device (an
            uneven split cannot be expressed as a sharding).
        ok: boolean mask, shape ``(B,)``: True where the scenario succeeded.
        failed: indices (int array) of the scenarios that failed.
        criterion: how ``ok`` was determined ("converged flag of the outputs", or
            "all floating-point outputs finite" when the outputs carry no flag).
        status: per-scenario status names (when the outputs carry a ``result``
            enumeration, e.g. :class:`spatialjax.solver.SolveResult`), else ``None``.
        n_devices: number of devices in the mesh.
        n_output_devices: smallest number of devices any chunk's (padded) output was
            sharded over -- equals ``n_devices`` when the sweep really ran sharded.
        n_chunks: number of chunks; ``chunk_size`` scenarios (padded) per chunk.
        n_padded: number of padding scenarios computed and discarded, in total.
        inner: ``"vmap"`` or ``"map"``: how each device evaluated its slice.
    """

    values: Any
    ok: np.ndarray
    failed: np.ndarray
    criterion: str
    status: list[str] | None
    n_devices: int
    n_output_devices: int
    n_chunks: int
    chunk_size: int
    n_padded: int
    inner: str = "vmap"

    @property
    def size(self) -> int:
        """Number of scenarios ``B``."""
        return int(self.ok.shape[0])

    @property
    def all_ok(self) -> bool:
        return bool(np.all(self.ok))

    def scenario(self, i: int) -> Any:
        """Outputs of scenario ``i`` (array leaves indexed at ``i``)."""
        if not -self.size <= i < self.size:
            raise ParameterError("i", f"scenario index must be in [0, {self.size}); got {i}")
        dyn, static = eqx.partition(self.values, eqx.is_array)
        return eqx.combine(jax.tree.map(lambda x: x[i], dyn), static)

    def summary(self, max_listed: int = 20) -> str:
        """Table: scenarios, devices, chunks, failures (count and indices, with status)."""
        nf = int(self.failed.shape[0])
        if nf == 0:
            listed = "none"
        else:
            parts = []
            for i in self.failed[:max_listed]:
                s = f"{int(i)}"
                if self.status is not None:
                    s += f" ({self.status[int(i)]})"
                parts.append(s)
            listed = ", ".join(parts) + (f", ... ({nf - max_listed} more)" if nf > max_listed else "")
        rows = [("scenarios", self.size),
                ("devices", f"{self.n_devices} ({self.inner} per device)"),
                ("chunks x chunk size", f"{self.n_chunks} x {self.chunk_size}"),
                ("padding scenarios (discarded)", self.n_padded),
                ("succeeded", self.size - nf),
                ("failed", nf),
                ("failed scenarios", listed)]
        notes = [f"failure criterion: {self.criterion}"]
        if self.status is not None:
            counts: dict[str, int] = {}
            for s in self.status:
                counts[s] = counts.get(s, 0) + 1
            notes.append("status counts: " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        return format_table(["quantity", "value"], rows, title="Counterfactual sweep", notes=notes)

    def __str__(self) -> str:
        return self.summary()


# ---------------------------------------------------------------------------------------
# Several processes (jax.distributed)
# ---------------------------------------------------------------------------------------


def _needs_gather(tree) -> bool:
    return any(isinstance(x, jax.Array) and not x.is_fully_addressable for x in jax.tree.leaves(tree))


def gather(tree):
    """Every array leaf of ``tree`` as a NumPy array holding the *whole* batch.

    In one process this is ``np.asarray`` of each leaf. In a multi-process run
    (``jax.distributed.initialize``; a sweep over ``jax.devices()`` then spans the devices of
    every process and its outputs are global arrays of which each process holds its own
    shards), the leaves are all-gathered (``jax.experimental.multihost_utils.process_allgather``);
    every process must call it (it is a collective). Non-array leaves pass through."""
    dyn, static = eqx.partition(tree, lambda x: isinstance(x, jax.Array))
    if _needs_gather(dyn):
        from jax.experimental import multihost_utils

        dyn = jax.tree.map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), dyn)
    else:
        dyn = jax.tree.map(np.asarray, dyn)
    return eqx.combine(dyn, static)


def distributed_mesh_devices() -> list:
    """The devices a multi-process sweep shards over: ``jax.devices()`` (all processes' devices,
    global order) after ``jax.distributed.initialize``. Pass them as ``sweep(..., devices=...)``
    (the default does the same); listed here so that a driver script states it."""
    return list(jax.devices())


# ---------------------------------------------------------------------------------------
# sweep
# ---------------------------------------------------------------------------------------


@eqx.filter_jit
def _assemble(parts, B, out_sharding):
    """Concatenate chunk outputs along the batch axis, drop the padding, place the result."""
    out = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0)[:B], *parts)
    if out_sharding is None:
        return out
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, out_sharding), out)


def _take(dyn, lo, hi, pad_to):
    """Rows ``lo:hi`` of every leaf, padded to ``pad_to`` rows by repeating the last row."""
    def f(x):
        x = jnp.asarray(x)[lo:hi]
        n = x.shape[0]
        if n < pad_to:
            x = jnp.concatenate([x, jnp.repeat(x[-1:], pad_to - n, axis=0)], axis=0)
        return x
    return jax.tree.map(f, dyn)


def sweep(
    fn: Callable[[Any], Any],
    batched: Any,
    *,
    devices: Sequence[jax.Device] | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    inner: str = "auto",
    shared: Any = None,
    map_batch_size: int | None = None,
) -> SweepResult:
    """Evaluate ``fn`` on every scenario of ``batched`` as one vmapped, device-sharded sweep.

    Args:
        fn: pure JAX function mapping one scenario (a PyTree, e.g. a ``Params``
            ``eqx.Module``) to a PyTree of outputs (e.g. a solution object). Must be
            hashable (functions are, by identity); pass the *same* function object to
            reuse the compilation across calls.
        batched: the scenario PyTree with a leading batch axis of size ``B`` on every
            array leaf; non-array leaves are static and shared. Build it with
            :func:`stack`.
        devices: devices to shard the batch over; default ``jax.devices()`` (all devices
            of the default backend).
        batch_size: if given, process the batch in chunks of this many scenarios (rounded
            down to a multiple of the device count, at least one scenario per device),
            for memory. All chunks have the same padded shape: one compilation.
        progress: show a tqdm progress bar over the chunks.
        inner: how each device evaluates its slice of the batch: ``"vmap"`` (one batched
            program), ``"map"`` (``jax.lax.map``: the scenarios one after the other, each
            unbatched) or ``"auto"``: ``"map"`` on CPU devices, ``"vmap"`` on accelerators.
            Measured on 2 CPU cores (benchmarks/bench_sweep.py): a batched Newton solve runs
            until its slowest scenario converges and its batched LU kernels are slower than
            unbatched ones, so ``map`` was 5-8x faster than ``vmap`` on one CPU device (100
            warm Jiao-Tian solves at N = 50: 0.71 s vs 5.7 s; the loop of single jitted
            solves 0.87 s). On CPU, jaxlib's batched LAPACK kernels (e.g. the LU under ``vmap``)
            split the batch over a thread pool that two concurrently executing host devices
            can exhaust: with forced host devices a vmapped Newton solve was seen to
            deadlock there (2 or 4 devices, 2 scenarios per device; native stacks show both
            devices waiting in ``jax::LuDecomposition`` / ``ParallelBatchMap``). Unbatched
            kernels do not do that; on CPU, ``map`` also costs nothing in parallelism that
            the devices do not already provide.
        shared: optional PyTree of arrays common to every scenario (e.g. a baseline
            solution and its factorised Jacobian): replicated on every device and passed
            unbatched, ``fn(scenario, shared)``. Passing large arrays this way, instead of
            closing over them in ``fn``, keeps them out of the compiled program as
            constants and lets one compilation serve different shared values.
        map_batch_size: with ``inner="map"``, the scenarios of a device are evaluated
            ``map_batch_size`` at a time (``jax.lax.map(..., batch_size=...)``: vmapped
            inside each group); default ``None``: one at a time.

    Returns:
        :class:`SweepResult` with ``values`` (outputs stacked along a leading axis ``B``)
        and the ``ok`` / ``failed`` report.

    Raises:
        ParameterError: inconsistent leading batch sizes (names the leaf paths and the
            sizes), scalar array leaves, no array leaves, an empty device list, or a
            ``batch_size`` that is not a positive integer.
    """
    if not callable(fn):
        raise ParameterError("fn", f"must be a callable mapping one scenario to outputs; got {type(fn).__name__}")
    B = batch_size_of(batched)
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ParameterError("devices", "must be a non-empty sequence of jax devices (default: jax.devices())")
    nd = len(devs)
    if batch_size is not None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ParameterError("batch_size", f"must be a positive integer or None; got {batch_size!r}")
        chunk = max(nd, (int(batch_size) // nd) * nd)
        chunk = min(chunk, math.ceil(B / nd) * nd)
    else:
        chunk = math.ceil(B / nd) * nd
    n_chunks = math.ceil(B / chunk)

    if inner not in ("auto", "vmap", "map"):
        raise ParameterError("inner", f"must be 'auto', 'vmap' or 'map'; got {inner!r}")
    if map_batch_size is not None and (isinstance(map_batch_size, bool)
                                       or not isinstance(map_batch_size, (int, np.integer)) or map_batch_size < 1):
        raise ParameterError("map_batch_size", f"must be a positive integer or None; got {map_batch_size!r}")
    if inner == "auto":
        inner = "map" if all(d.platform == "cpu" for d in devs) else "vmap"

    mesh = Mesh(np.asarray(devs, dtype=object), (_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(_AXIS))
    dyn, static = eqx.partition(batched, _is_array)
    if shared is not None:
        bad = [_path_name("shared", p) for p, x in _leaves_with_paths(shared) if not _is_array(x)]
        if bad:
            raise ParameterError(bad[0], "shared values must be arrays (a PyTree of arrays); put Python "
                                         "numbers and other static values in fn or in the batched PyTree")
        shared = jax.device_put(shared, NamedSharding(mesh, PartitionSpec()))

    starts = range(0, B, chunk)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=B, desc="sweep", unit="scenario")
    outs = []
    out_devices = []
    try:
        for lo in starts:
            hi = min(lo + chunk, B)
            d = jax.device_put(_take(dyn, lo, hi, chunk), sharding)
            out = _sharded_vmap(fn, mesh, d, static, inner, shared,
                                None if map_batch_size is None else int(map_batch_size))
            arrs = [x for x in jax.tree.leaves(out) if isinstance(x, jax.Array)]
            out_devices.append(min((len(x.sharding.device_set) for x in arrs), default=nd))
            if bar is not None:
                jax.block_until_ready(out)
                bar.update(hi - lo)
            outs.append((out, hi - lo))
    finally:
        if bar is not None:
            bar.close()

    o_static = eqx.partition(outs[0][0], eqx.is_array)[1]
    dyn_outs = [eqx.partition(o, eqx.is_array)[0] for o, _ in outs]
    # Un-pad. An array sharded over the mesh needs B divisible by the device count; otherwise
    # the chunk outputs are gathered onto the first device (not replicated on every device)
    # and un-padded there.
    if n_chunks == 1 and chunk == B:
        values_dyn = dyn_outs[0]
    elif B % nd == 0:
        values_dyn = _assemble(tuple(dyn_outs), B, sharding)
    else:
        parts = jax.device_put(tuple(dyn_outs), jax.sharding.SingleDeviceSharding(devs[0]))
        values_dyn = _assemble(parts, B, None)
    values = eqx.combine(values_dyn, o_static)

    # multi-process runs (jax.distributed): the outputs are global arrays that this process
    # cannot read whole; the failure report is read from an all-gathered copy
    host = gather(values) if _needs_gather(values) else values
    ok, criterion, names = _status_of(host)
    if ok is None:
        ok = _finite_mask(host, B)
        criterion = "all floating-point outputs finite (the outputs carry no converged flag)"
    failed = np.flatnonzero(~ok)
    return SweepResult(values=values, ok=ok, failed=failed, criterion=criterion, status=names,
                       n_devices=nd, n_output_devices=min(out_devices), n_chunks=n_chunks,
                       chunk_size=chunk, n_padded=n_chunks * chunk - B, inner=inner)
