"""Figure 2/3 analogs for Jiao & Tian (2024): skill share of one city against ICT openness."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D

import spatialjax.plots  # noqa: F401  (Agg backend)
from spatialjax.atomic import save_figure

STABLE_LABEL = "solid: index +1, as autarky (stability not ruled out)"
UNSTABLE_LABEL = "dashed: index -1, across a fold from autarky (unstable)"


def _runs(ix: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index ranges (stop inclusive) of constant ``ix``."""
    cut = np.flatnonzero(np.diff(ix) != 0) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut - 1, [len(ix) - 1]])
    return list(zip(starts.tolist(), stops.tolist()))


def plot_openness_sweep(branches, eqs, out: Path, title: str = "") -> list[Path]:
    """One panel per experiment, from the tables of
    :class:`spatialjax.models.jiao_tian_branches.EquilibriaAlong` (``branch_table()``,
    ``table()``, concatenated over experiments): every traced branch in its own colour (named in
    the legend), solid where its index is +1 (the sign of det dF/dy at autarky), dashed where it
    is -1 (unstable), folds (x), and the equilibria found on the Delta grid (filled: interior,
    open: degenerate). The y-axis names the city whose skill share is shown.
    Writes ``jiao_tian_openness.png`` and returns the paths written."""
    exps = list(dict.fromkeys(branches["experiment"]))
    fig, axes = plt.subplots(len(exps), 1, figsize=(7.5, 3.8 * len(exps)), squeeze=False)
    top = float(np.max(eqs["Delta"])) if len(eqs) else 1.0
    for ax, e in zip(axes[:, 0], exps):
        be = branches[branches["experiment"] == e]
        focus = int(be["focus_city"].iloc[0])
        handles: dict[str, object] = {}
        fold = None
        for bi, b in be.groupby("branch"):
            d, s, ix = b["Delta"].to_numpy(), b["skill_share"].to_numpy(), b["index"].to_numpy()
            colour = f"C{int(bi) % 10}"
            for lo, hi in _runs(ix):
                seg = slice(lo, min(hi + 2, len(d)))  # overlap one point: no gap at the change
                ax.plot(d[seg], s[seg], "-" if ix[lo] > 0 else "--", color=colour, lw=1.6)
            name = (f"branch {bi}: from autarky" if bi == 0 else
                    f"branch {bi}: from an equilibrium at Delta = {top:g}")
            handles[name] = Line2D([], [], color=colour, lw=2.5)
            dd = np.diff(d)
            k = np.flatnonzero(dd[:-1] * dd[1:] < 0) + 1  # where the branch turns in Delta
            if len(k):
                ax.plot(d[k], s[k], "x", color="k", ms=9, mew=2)
                fold = Line2D([], [], ls="none", marker="x", color="k", ms=9, mew=2)
        if fold is not None:
            handles["fold (the branch turns back in Delta)"] = fold
        handles[STABLE_LABEL] = Line2D([], [], color="0.35", ls="-", lw=1.6)
        handles[UNSTABLE_LABEL] = Line2D([], [], color="0.35", ls="--", lw=1.6)
        q = eqs[(eqs["experiment"] == e) & (eqs["kind"] != "")]
        inner, degen = q[q["kind"] == "interior"], q[q["kind"] == "degenerate"]
        ax.scatter(inner["Delta"], inner["skill_share"], s=16, color="k", zorder=3)
        ax.scatter(degen["Delta"], degen["skill_share"], s=22, facecolors="none", edgecolors="0.3", zorder=3)
        handles["interior equilibrium on the Delta grid"] = Line2D([], [], ls="none", marker="o", color="k", ms=4)
        handles["degenerate equilibrium (a city almost without managers)"] = \
            Line2D([], [], ls="none", marker="o", mfc="none", mec="0.3", ms=5)
        ax.set_xlabel(r"ICT openness $\Delta = \tau^{-\theta}$ of the upgraded pairs")
        ax.set_ylabel(f"skill share $L^m/(L^m+L^p)$\nof City {focus}")
        ax.set_title(f"{e}: skill share of City {focus}")
        ax.set_xlim(0, top)
        ax.legend(list(handles.values()), list(handles.keys()), fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(out) / "jiao_tian_openness.png"
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return [path]
