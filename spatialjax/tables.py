"""Plain-text tables for ``summary()`` methods: results print like a table in a paper."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _fmt(v, digits: int) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(v)
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f != f:
        return "nan"
    if f == 0:
        return "0"
    if abs(f) >= 1e5 or abs(f) < 1e-3:
        return f"{f:.{digits}e}"
    return f"{f:.{digits}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence], *, title: str | None = None,
                 digits: int = 4, notes: Sequence[str] | None = ()) -> str:
    """Format ``rows`` under ``headers`` as a fixed-width table with rules above and below."""
    cells = [[_fmt(v, digits) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = []
    if title:
        out.append(title)
    out.append(rule)
    out.append("  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    out.append(rule)
    for r in cells:
        out.append("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    out.append(rule)
    out.extend(notes or ())
    return "\n".join(out)


def format_kv(pairs: Sequence[tuple[str, object]], *, title: str | None = None, digits: int = 4) -> str:
    """Two-column key/value block."""
    return format_table(["quantity", "value"], [(k, v) for k, v in pairs], title=title, digits=digits)
