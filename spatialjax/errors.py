"""Exceptions raised by spatialjax. Every message names the offending field and what is allowed."""


class ParameterError(ValueError):
    """A parameter or data field is invalid. ``field`` names it; the message says what is allowed."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


class ConvergenceError(RuntimeError):
    """An equilibrium solve did not converge (raised only with ``throw=True``)."""


class SingularJacobianError(RuntimeError):
    """The equilibrium Jacobian is (near-)singular: the solution is at or near a fold,
    so implicit derivatives through it are not defined."""
