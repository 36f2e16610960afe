"""Figures for van Vuuren (2016): the Figure 2 rent schedule and u, v, du against a."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import spatialjax.plots  # noqa: F401  (Agg backend)
import matplotlib.pyplot as plt
from spatialjax.atomic import save_figure


def plot_rents(eq, path, RA: float = 0.0, ranks=(0.1, 0.5, 0.9)):
    """Figure 2: land rent R(d) with the unemployed zone [du, du+u] and bid-rent lines."""
    from spatialjax.models import van_vuuren as vv

    d = np.linspace(0, 1, 501)
    R = vv.rents(eq, d, RA)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(d, R, "k", lw=2, label="rent R(d)")
    for name, line in vv.bid_rents(eq, d, ranks, RA).items():
        ax.plot(d, line, lw=0.8, ls="--", label=f"bid rent, {name}")
    ax.axvspan(eq.du, eq.du + eq.u, color="0.85", label="unemployed")
    ax.set_ylim(RA - 0.05 * (R.max() - RA), R.max() * 1.05 + 1e-12)
    ax.set_xlabel("distance to CBD d")
    ax.set_ylabel("rent")
    ax.set_title(f"Rent schedule ({eq.config}; u={eq.u:.3f}, du={eq.du:.3f})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, Path(path), dpi=120)
    plt.close(fig)
    return Path(path)


def plot_sweep(sweep: dict, path, title: str = ""):
    """u, v and du against a (output of ``van_vuuren.sweep_a``), one marker style per configuration."""
    a = sweep["a"]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    styles = {"integrated": "s", "interior": "o", "segregated": "^"}
    for ax, k in zip(axes, ("u", "v", "du")):
        for cfg, m in styles.items():
            c = sweep[cfg]
            if np.any(c["valid"]):
                ax.plot(a[c["valid"]], c[k][c["valid"]], m, ms=3, label=cfg)
        ax.set_xlabel("a (search efficiency at the CBD)")
        ax.set_ylabel({"u": "unemployment u", "v": "vacancies v", "du": "inner edge of unemployed zone du"}[k])
        ax.set_title(k)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, Path(path), dpi=120)
    plt.close(fig)
    return Path(path)
