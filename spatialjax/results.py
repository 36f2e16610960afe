"""One result protocol for every user-facing result of the models.

Every result a user reads (a solve, a set of equilibria, a planner optimum, a table of
partitions) has

* ``status``: a name from :data:`STATUSES` (never free text; details go to ``message``),
* ``converged``: ``True`` exactly when ``status`` is in :data:`CONVERGED` (derived, never
  stored separately, so the two cannot disagree),
* ``residual``: the max-norm residual of the equations that were solved (``nan`` where no
  equation was solved, e.g. a set found on a grid),
* ``message``: a free-text detail ("" when there is nothing to add),
* ``summary() -> str``: a table as a paper would print it (returns, never prints),
* ``to_dict()`` / ``to_json()``: JSON-safe (NumPy/JAX arrays become lists, NaN and
  +-inf become ``null``), and ``str(result) == result.summary()``.

The status vocabulary is the generic solver's :class:`spatialjax.solver.RESULTS` names plus
a few model-level names, all documented here in one place. :class:`Equilibria` is the one
collection type for "all equilibria of a model at one parameter point".
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Callable, Iterable

import numpy as np

__all__ = ["STATUSES", "SOLVER_STATUSES", "CONVERGED", "check_status", "is_converged", "json_safe",
           "Result", "StatusFromMessage", "Equilibria"]

#: names of :class:`spatialjax.solver.RESULTS`, in the order of that enumeration
SOLVER_STATUSES = ("successful", "max_steps_reached", "stalled", "nonfinite", "singular")

#: the whole vocabulary: name -> meaning
STATUSES: dict[str, str] = {
    # the generic solver's statuses (spatialjax.solver.RESULTS)
    "successful": "converged: the equations are solved to tolerance (and, for an optimum, the "
                  "second-order condition holds)",
    "max_steps_reached": "did not converge: maximum number of iterations reached",
    "stalled": "did not converge: the iteration could not reduce the residual further",
    "nonfinite": "did not converge: non-finite values in the residual or the solution",
    "singular": "converged to a point where the Jacobian is (near-)singular (a fold or a non-isolated "
                "equilibrium); implicit derivatives there are undefined",
    # model-level statuses
    "empty": "the search completed and the set it describes is empty (e.g. no symmetric Nash "
             "equilibrium on a ray): an answer, not a failure",
    "no_solution": "no candidate satisfied the equations and the configuration's conditions (the "
                   "search may have missed one): a failure",
    "rejected": "the equations are solved but a sanity condition of the model fails (see message)",
    "not_a_maximum": "the first-order conditions are solved but the second-order condition fails",
    "on_bound": "the optimum lies on an artificial bound of the search box (not a true optimum)",
    "incomplete": "some of the roots were not converged or not kept (see message)",
    # continuation along a shock (spatialjax.models.jiao_tian_counterfactuals)
    "fold": "the branch through the baseline turns back before the full shock (a fold, located by "
            "pseudo-arclength; message gives its s): the counterfactual has no equilibrium on that branch",
    "degenerate": "the branch reached an equilibrium with (almost) all of a group in one city",
    "branch_jump": "a continuation step jumped to another branch (the change exceeded the step's bound)",
    # estimation (spatialjax.gmm.Result; there ``converged`` is the optimiser's own stop flag)
    "converged": "estimation: the optimiser converged and standard errors exist",
    "converged_no_se": "estimation: the optimiser converged; no standard errors (fixed W without a "
                       "covariance of the targets)",
    "weakly_identified": "estimation: G'WG is (near-)singular; SEs are NaN and the weak direction is named",
    "at_bound": "estimation: a bounded parameter is on its bound; no standard errors",
    "singular_S": "estimation: the moment covariance S is singular; no efficient weighting or SEs",
    "not_converged": "estimation: the optimiser stopped without meeting its criteria",
    "max_rounds_reached": "estimation: iterated GMM stopped at its maximum number of rounds",
    "failed": "estimation: no evaluation with a successful inner solve (or the optimiser failed)",
}

#: statuses for which ``converged`` is True
CONVERGED = frozenset({"successful", "empty", "converged", "converged_no_se"})


def check_status(name: str) -> str:
    """``name`` if it is in the vocabulary, else ValueError (a programming error, not user input)."""
    if name not in STATUSES:
        raise ValueError(f"unknown result status {name!r}; allowed: {', '.join(STATUSES)}")
    return name


def is_converged(status) -> bool | np.ndarray:
    """``converged`` as derived from a status name (or a list of names -> bool array)."""
    if isinstance(status, str):
        return check_status(status) in CONVERGED
    return np.array([check_status(s) in CONVERGED for s in status], dtype=bool)


def json_safe(x: Any) -> Any:
    """``x`` as plain JSON types: arrays -> (nested) lists, NumPy/JAX scalars -> Python,
    NaN / +-inf -> None, tuples -> lists, objects with ``to_dict`` -> their dict, dataclasses
    -> dicts of their fields."""
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if hasattr(x, "to_dict") and callable(x.to_dict):
        return json_safe(x.to_dict())
    if hasattr(x, "__array__") or isinstance(x, np.ndarray):
        a = np.asarray(x)
        if a.dtype == object:
            return [json_safe(v) for v in a.tolist()]
        if a.ndim == 0:
            return json_safe(a.item())
        return [json_safe(v) for v in a.tolist()]
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: json_safe(getattr(x, f.name)) for f in dataclasses.fields(x)}
    return str(x)


class Result:
    """Mixin giving a result the protocol of this module.

    A subclass provides ``status`` (a name of :data:`STATUSES`; attribute or property),
    ``residual`` (attribute or property; results that solve no equation may omit it and read
    as ``nan``), ``summary()`` and, optionally, ``message`` and ``_dict_fields()`` (the fields
    that go into :meth:`to_dict`; default: the dataclass / Module fields).
    """

    message: str = ""

    @property
    def converged(self) -> bool:
        """True exactly when ``status`` is one of :data:`CONVERGED`."""
        return bool(is_converged(self.status))

    def summary(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    #: fields left out of :meth:`to_dict` (e.g. the parameters, which a collection reports once)
    _dict_exclude: tuple = ()

    def _dict_fields(self) -> dict:
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if not f.name.startswith("_") and f.name not in self._dict_exclude}
        return {}

    def to_dict(self) -> dict:
        """JSON-safe dict: ``status``, ``converged``, ``message``, ``residual`` and the result's fields."""
        d = {"status": self.status, "converged": self.converged, "message": self.message,
             "residual": getattr(self, "residual", float("nan"))}
        for k, v in self._dict_fields().items():
            if k not in d:
                d[k] = v
        return json_safe(d)

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as strict JSON (no NaN/Infinity tokens)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def __str__(self) -> str:
        return self.summary()


class StatusFromMessage(Result):
    """A :class:`Result` whose ``status`` and ``message`` come from one method.

    A subclass defines ``_status_message() -> (status, message)``: ``status`` a name of
    :data:`STATUSES`, ``message`` the detail ("" when there is nothing to add). Deriving both
    from one decision keeps them from disagreeing (a success with a failure's message, or the
    reverse); ``converged`` follows from ``status`` as in :class:`Result`. The method runs on
    every access, so it should be cheap and must work on concrete (not traced) fields.

    Example::

        @dataclass
        class Interval(StatusFromMessage):
            lo: float
            hi: float

            def _status_message(self):
                if self.lo <= self.hi:
                    return "successful", ""
                return "empty", f"lo = {self.lo} > hi = {self.hi}"
    """

    def _status_message(self) -> tuple[str, str]:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @property
    def status(self) -> str:
        return check_status(self._status_message()[0])

    @property
    def message(self) -> str:
        return self._status_message()[1]


def _generic_summary(eqs: "Equilibria") -> str:
    from spatialjax.tables import format_kv

    rows = [("status", eqs.status), ("equilibria", len(eqs))]
    if eqs.message:
        rows.append(("message", eqs.message))
    return format_kv(rows, title=eqs.title)


class Equilibria(Result, list):
    """All equilibria of a model at one parameter point: a list of results (each with this
    protocol) plus the collection's own ``status``/``message``.

    Args:
        items: the equilibria (any order; the model documents its ordering).
        status: a name of :data:`STATUSES` for the whole search (e.g. "successful",
            "no_solution", "incomplete").
        message: detail, e.g. "2 equilibria found" or the problems met.
        params: the model's parameters (anything with ``to_dict`` or a dict), or None.
        info: extra JSON-safe facts about the search (bounds, number of roots, ...).
        rejected: candidates that solved the equations but were rejected, with reasons.
        title: the table title of the generic summary.
        formatter: ``formatter(equilibria) -> str`` giving the model's summary table.
    """

    def __init__(self, items: Iterable = (), *, status: str = "successful", message: str = "",
                 params: Any = None, info: dict | None = None, rejected: Iterable = (),
                 title: str = "Equilibria", formatter: Callable[["Equilibria"], str] | None = None):
        super().__init__(items)
        self.status = check_status(status)
        self.message = message
        self.params = params
        self.info = dict(info or {})
        self.rejected = list(rejected)
        self.title = title
        self._formatter = formatter

    @property
    def residual(self) -> float:
        """Largest residual over the equilibria (nan if there are none)."""
        r = [float(e.residual) for e in self if np.isfinite(float(getattr(e, "residual", np.nan)))]
        return max(r) if r else float("nan")

    def summary(self) -> str:
        return self._formatter(self) if self._formatter is not None else _generic_summary(self)

    def to_dict(self) -> dict:
        p = self.params
        if p is not None and hasattr(p, "to_dict"):
            p = p.to_dict()
        return json_safe({"status": self.status, "converged": self.converged, "message": self.message,
                          "residual": self.residual, "n_equilibria": len(self), "params": p,
                          "info": self.info, "rejected": self.rejected,
                          "equilibria": [e.to_dict() for e in self]})

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"Equilibria({list.__repr__(self)}, status={self.status!r})"
