import jax
import pytest

import spatialjax  # noqa: F401  (enables x64)


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
