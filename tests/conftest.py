import jax
import pytest

import spatialjax  # noqa: F401  (enables x64)


@pytest.fixture(autouse=True)
def _float64():
    assert jax.config.jax_enable_x64, "spatialjax must enable float64 on import"
    yield
