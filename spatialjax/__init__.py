"""spatialjax: solve, differentiate and calibrate quantitative spatial-equilibrium models.

Importing the package switches JAX to float64 (``jax_enable_x64``): every
equilibrium in this library is computed in double precision.
"""

import jax

jax.config.update("jax_enable_x64", True)

from spatialjax.errors import ConvergenceError, ParameterError, SingularJacobianError  # noqa: E402

__all__ = ["ConvergenceError", "ParameterError", "SingularJacobianError"]
__version__ = "0.1.0"
