"""Figures of every city's internet upgrade (:mod:`spatialjax.models.jiao_tian_sweeps`).

* :func:`plot_upgrade_map` — cities at (lon, lat), colour = welfare change when *that* city's
  internet quality is raised (workers and managers panels), marker area ~ population; failed
  scenarios drawn as black crosses (never dropped from the picture).
* :func:`plot_linear_vs_nonlinear` — the first-order prediction against the nonlinear answer.

Written atomically (:func:`spatialjax.atomic.save_figure`); no map outline (nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import spatialjax.plots  # noqa: F401  (Agg backend)
from spatialjax.atomic import save_figure

DATA_LABEL = "model-generated on real US geography"

__all__ = ["plot_upgrade_map", "plot_linear_vs_nonlinear"]


def _finish(fig, path, title):
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, Path(path), dpi=120)
    plt.close(fig)
    return Path(path)


def _coords(df):
    lon, lat = df["lon"].to_numpy(float), df["lat"].to_numpy(float)
    if not np.all(np.isfinite(lon)) or not np.all(np.isfinite(lat)):
        lon, lat = np.arange(len(df), dtype=float), np.zeros(len(df))
    return lon, lat


def plot_upgrade_map(df, path, *, data_label: str = DATA_LABEL) -> Path:
    """Two panels (workers, managers): colour = welfare change in percent of the upgrade of the
    city at that point (``workers_pct`` / ``managers_pct`` of an ``UpgradeSweep.frame``; a
    symmetric log colour scale, since a few large cities dominate), area ~ population."""
    lon, lat = _coords(df)
    pop = df["population"].to_numpy(float)
    area = 6 + 300 * np.sqrt(pop / np.nanmax(pop))
    ok = df["converged"].to_numpy(bool)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), squeeze=False)
    for ax, col, who in zip(axes[0], ("workers_pct", "managers_pct"), ("workers", "managers")):
        v = df[col].to_numpy(float)
        good = ok & np.isfinite(v)
        m = float(np.nanmax(np.abs(v[good]))) if np.any(good) else 1.0
        lin = max(m * 1e-3, 1e-12)
        from matplotlib.colors import SymLogNorm

        sc = ax.scatter(lon[good], lat[good], c=v[good], s=area[good], cmap="RdBu_r",
                        norm=SymLogNorm(linthresh=lin, vmin=-m, vmax=m), alpha=0.8, edgecolors="k", linewidths=0.2)
        if np.any(~good):
            ax.scatter(lon[~good], lat[~good], marker="x", c="k", s=30, label=f"failed ({int((~good).sum())})")
            ax.legend(fontsize=7, loc="lower left")
        cb = fig.colorbar(sc, ax=ax)
        cb.set_label(f"{who}' welfare change, % (upgrade of this city)")
        ax.set_xlabel("longitude (degrees)")
        ax.set_ylabel("latitude (degrees)")
        ax.set_title(f"{who}: welfare change when the city's internet quality rises", fontsize=9)
    dq = df["dq"].to_numpy(float)
    dq_txt = f"dq = {dq[0]:g}" if np.allclose(dq, dq[0]) else "dq varies"
    return _finish(fig, path, f"Every city's internet upgrade ({dq_txt}; size = population); data: {data_label}")


def plot_linear_vs_nonlinear(df, path, *, data_label: str = DATA_LABEL) -> Path:
    """Workers' welfare change: nonlinear (the solved scenario) against the first-order prediction
    (``linear_workers_pct``, or the one-chord-step answer ``chord1_workers_pct`` without a
    gradient map), log-log, with the 45-degree line."""
    col = "linear_workers_pct" if "linear_workers_pct" in df else "chord1_workers_pct"
    ok = df["converged"].to_numpy(bool)
    x, y = df[col].to_numpy(float)[ok], df["workers_pct"].to_numpy(float)[ok]
    pos = (x > 0) & (y > 0)
    fig, ax = plt.subplots(figsize=(5, 4.4))
    ax.scatter(x[pos], y[pos], s=8, alpha=0.6)
    if np.any(pos):
        lo, hi = min(x[pos].min(), y[pos].min()), max(x[pos].max(), y[pos].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="45 degrees")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel(f"first-order prediction, % ({col})")
    ax.set_ylabel("nonlinear answer, % (workers_pct)")
    return _finish(fig, path, f"Linear vs nonlinear welfare change; data: {data_label}")
