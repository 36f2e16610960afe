"""Figure 2/3 analogs for Jiao & Tian (2024): skill share of the upgraded city against ICT openness."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import spatialjax.plots  # noqa: F401  (Agg backend)
from spatialjax.atomic import save_figure


def plot_openness_sweep(branches, eqs, report, out: Path, title: str = "") -> list[Path]:
    """One panel per experiment: the traced branches (branch 0 starts at autarky; solid until
    det J changes sign at a fold, dashed after), folds (x), and the equilibria on the grid (dots).
    Writes ``jiao_tian_openness.png`` and returns the paths written."""
    exps = list(dict.fromkeys(branches["experiment"]))
    fig, axes = plt.subplots(len(exps), 1, figsize=(6.5, 3.2 * len(exps)), squeeze=False)
    for ax, e in zip(axes[:, 0], exps):
        be = branches[branches["experiment"] == e]
        for bi, b in be.groupby("branch"):
            d, s, sg = b["Delta"].to_numpy(), b["skill_share_focus"].to_numpy(), b["det_sign"].to_numpy()
            sg0 = sg[0] if len(sg) else 1.0
            for k in range(len(d) - 1):
                ax.plot(d[k:k + 2], s[k:k + 2], "-" if sg[k + 1] == sg0 else "--", color=f"C{bi}", lw=1.6,
                        label=("branch from autarky" if bi == 0 else f"branch {bi} (from an equilibrium at Delta = 1)"))
            # folds: where the branch turns in Delta
            dd = np.diff(d)
            for k in np.flatnonzero(dd[:-1] * dd[1:] < 0):
                ax.plot([d[k + 1]], [s[k + 1]], "x", color="C3", ms=9, mew=2, label="fold")
        q = eqs[eqs["experiment"] == e]
        ax.scatter(q["Delta"], q["skill_share_focus"], s=14, color="k", zorder=3, label="equilibria on the Delta grid")
        ax.set_xlabel(r"ICT openness $\Delta = \tau^{-\theta}$")
        city = re.search(r"City (\d+)", str(e))
        ax.set_ylabel(rf"$L^m/(L^m+L^p)$ in City {city.group(1) if city else 1}")
        ax.set_title(e)
        ax.set_xlim(0, 1)
        h, lab = ax.get_legend_handles_labels()
        uniq = dict(zip(lab, h))
        uniq["solid: before the first fold (det J sign of the start); dashed: after"] = \
            plt.Line2D([], [], color="0.4", ls="-")
        ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(out) / "jiao_tian_openness.png"
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return [path]
