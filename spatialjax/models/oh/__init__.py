"""Oh (2025), "Spatial Sorting of Workers and Firms" (``shared/seeds/oh_2025_spatial_sorting.txt``).

* :mod:`spatialjax.models.oh.quantitative` — the quantitative model of Section 4 / Appendix B
  (``Params``, ``solve_inverse``, ``moments``); its public names are re-exported here, so
  ``from spatialjax.models import oh; oh.Params.table1()`` works.
* :mod:`spatialjax.models.oh.forward` — the forward mode (types fixed, locations re-sorted:
  ``solve_forward``) and the Section 4.4 / B.6 counterfactuals; re-exported here too.
* :mod:`spatialjax.models.oh.estimation` — the minimum-distance calibration of Section 4.2
  (the problem module behind ``spatialjax calibrate calibration/oh_us2017.toml``).
* :mod:`spatialjax.models.oh.theory` — the theory model of Sections 2–3 (two-point boundary
  value problem in x(ℓ), y(ℓ), planner, Propositions 1–5), as ``oh.theory``.
"""

from spatialjax.models.oh import theory  # noqa: F401
from spatialjax.models.oh.quantitative import *  # noqa: F401,F403
from spatialjax.models.oh.quantitative import __all__ as _quantitative_all
from spatialjax.models.oh.forward import *  # noqa: F401,F403
from spatialjax.models.oh.forward import __all__ as _forward_all

__all__ = ["theory", *_quantitative_all, *_forward_all]
