import os
from pathlib import Path

import jax
import pytest

import spatialjax  # noqa: F401  (enables x64)


def pytest_configure(config):
    """JAX's persistent compilation cache for the test run (``SPATIALJAX_TEST_COMPILE_CACHE=0``
    turns it off; another value names the folder). The module-scope fixture below drops the
    in-memory caches after every module, so each module would otherwise recompile the programs
    it shares with others (``jt.solve`` at the same shapes, the TTU root finder, ...); the disk
    cache serves those from the first module that compiled them, in either xdist worker. The
    cache key is the program, the JAX/XLA version and the flags, so a stale entry is never used;
    only programs that took >= 0.5 s to compile are stored."""
    where = os.environ.get("SPATIALJAX_TEST_COMPILE_CACHE", "")
    if where == "0":
        return
    path = Path(where) if where else Path(str(config.rootpath)) / ".pytest_cache" / "jax-compilation-cache"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(autouse=True)
def _float64():
    assert jax.config.jax_enable_x64, "spatialjax must enable float64 on import"
    yield


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's caches of compiled programs after each test module. A worker runs many
    modules; every compiled XLA program keeps memory mappings alive, and a long-lived worker
    that accumulated them crashed inside XLA's compiler (segfault, twice at the same late
    test) near the kernel's limit of 65,530 mappings per process (vm.max_map_count)."""
    yield
    import gc

    jax.clear_caches()
    gc.collect()
