import os
from pathlib import Path

# The test run uses XLA's CPU backend without its expensive LLVM passes (set before JAX starts its
# backend; flags already in XLA_FLAGS, e.g. forced host devices, are kept). SPATIALJAX_TEST_XLA_O0=0
# runs the tests with XLA's default optimisation instead (as users run the package). Most of the
# suite's time is compilation of programs that then run for milliseconds: the whole suite took
# 17.8 min this way against 27.2 min by default on the 2-core machine (2026-12-03). The programs
# compute the same thing; only round-off differs (fusion order). One test was sensitive to that:
# the full-solution fit of test_jiao_tian_calibration_slow.py reached the same estimates (theta
# 4.1100, J 9.944) but its line search met the objective's noise floor with a Gauss-Newton step of
# 6.2e-9, just above the generic gn_tol; the Jiao-Tian problems now use gn_tol 1e-8 (gmm.py).
if os.environ.get("SPATIALJAX_TEST_XLA_O0", "1") != "0":
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in _flags:
        os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0"
                                   " --xla_llvm_disable_expensive_passes=true").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

import spatialjax  # noqa: F401,E402  (enables x64)


def pytest_configure(config):
    """JAX's persistent compilation cache for the test run (``SPATIALJAX_TEST_COMPILE_CACHE=0``
    turns it off; another value names the folder). The module-scope fixture below drops the
    in-memory caches after a module once the worker holds many memory mappings; the modules after
    that would otherwise recompile the programs they share with earlier ones (``jt.solve`` at the
    same shapes, the TTU root finder, ...). The disk cache serves those, and the programs the
    other xdist worker compiled. The cache key is the program, the JAX/XLA version and the
    flags, so a stale entry is never used; only programs that took >= 0.2 s to compile are
    stored."""
    where = os.environ.get("SPATIALJAX_TEST_COMPILE_CACHE", "")
    if where == "0":
        return
    path = Path(where) if where else Path(str(config.rootpath)) / ".pytest_cache" / "jax-compilation-cache"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@pytest.fixture(autouse=True)
def _float64():
    assert jax.config.jax_enable_x64, "spatialjax must enable float64 on import"
    yield


def _n_mappings():
    """Memory mappings of this process (Linux), else None."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return None


#: Clear JAX's in-memory caches after a module once the process holds this many mappings
#: (``SPATIALJAX_TEST_MAX_MAPPINGS``; 0 clears after every module).
_MAX_MAPPINGS = int(os.environ.get("SPATIALJAX_TEST_MAX_MAPPINGS", "25000"))


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's caches of compiled programs after a test module once the worker holds
    ``_MAX_MAPPINGS`` memory mappings (always where they cannot be counted). A worker runs many
    modules; every compiled XLA program keeps memory mappings alive, and a long-lived worker
    that accumulated them crashed inside XLA's compiler (segfault, twice at the same late
    test) near the kernel's limit of 65,530 mappings per process (vm.max_map_count). With the
    caches dropped after every module one module added at most ~11k mappings (1.7k-13k
    measured), so 25k leaves ample room, while modules that share programs (jt.solve at the same
    shapes, the TTU root finder, ...) no longer recompile them each time."""
    yield
    n = _n_mappings()
    if n is None or n >= _MAX_MAPPINGS:
        import gc

        jax.clear_caches()
        gc.collect()
