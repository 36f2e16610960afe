"""Figures of the Jiao-Tian calibration and counterfactuals (Sections 5.2-5.4 analogs).

Every figure is written atomically (:func:`spatialjax.atomic.save_figure`), has labelled axes with
units and a title that says what the data are (default: model-generated on real US geography).

* :func:`plot_counterfactual_slopes` — Figure 7/8 analogs: change in the high-skill share against
  log city size, one panel per counterfactual, with the fitted OLS line.
* :func:`plot_welfare_gradient_map` — the welfare-gradient map: cities at (lon, lat), colour =
  d log U / d q_n, size = population (no outline is drawn: nothing is downloaded).
* :func:`plot_model_fit` — data vs model by city size (for the estimation report).
* :func:`plot_estimates_vs_truth` — estimates with 95% intervals against the true parameters of a
  replica (for the estimation report).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import spatialjax.plots  # noqa: F401  (Agg backend)
from spatialjax.atomic import save_figure

DATA_LABEL = "model-generated on real US geography"

__all__ = ["plot_counterfactual_slopes", "plot_welfare_gradient_map", "plot_model_fit", "plot_estimates_vs_truth"]


def _finish(fig, path, title):
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, Path(path), dpi=120)
    plt.close(fig)
    return Path(path)


def plot_counterfactual_slopes(results, path, *, data_label: str = DATA_LABEL) -> Path:
    """One panel per :class:`~spatialjax.models.jiao_tian_counterfactuals.CounterfactualResult`:
    scatter of the change in the high-skill share (percentage points) against log baseline city
    size, with the fitted line and its slope (and the paper's printed slope) in the legend."""
    results = list(results)
    n = max(len(results), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False)
    for ax, r in zip(axes[0], results):
        x = np.asarray(r.log_size)
        y = 100 * np.asarray(r.d_skill_share)
        if r.converged and np.all(np.isfinite(y)):
            ax.scatter(x, y, s=8, alpha=0.6, color="C0", label="cities")
            xs = np.linspace(x.min(), x.max(), 50)
            ax.plot(xs, 100 * (r.intercept + r.slope * xs), color="C3",
                    label=f"OLS slope {r.slope:.2e} (se {r.slope_se:.1e})")
            if "slope" in r.paper:
                ax.plot([], [], " ", label=f"paper (US data): {r.paper['slope']:.4f}")
            ax.legend(fontsize=7, loc="best")
        else:
            ax.text(0.5, 0.5, f"not computed: status {r.status}\n(s reached {r.s_reached:.3g})",
                    ha="center", va="center", transform=ax.transAxes, fontsize=9)
        sign = "baseline - counterfactual" if r.effect_sign < 0 else "counterfactual - baseline"
        ax.set_xlabel("log baseline city size, log(L$^m$+L$^p$) (model units)")
        ax.set_ylabel(f"change in high-skill share, pp\n({sign})")
        ax.set_title(r.name, fontsize=9)
    return _finish(fig, path, f"Change in high-skill share vs city size; data: {data_label}")


def plot_welfare_gradient_map(df, path, *, data_label: str = DATA_LABEL) -> Path:
    """Two panels (workers, managers): cities at (lon, lat) in degrees, colour = d log U / d q_n
    (log points per unit of q, diverging colour scale centred at 0), marker area ~ population."""
    lon, lat = df["lon"].to_numpy(float), df["lat"].to_numpy(float)
    if not np.all(np.isfinite(lon)) or not np.all(np.isfinite(lat)):
        lon, lat = np.arange(len(df), dtype=float), np.zeros(len(df))
    pop = df["population"].to_numpy(float)
    area = 6 + 300 * np.sqrt(pop / pop.max())
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), squeeze=False)
    for ax, col, who in zip(axes[0], ("d_logUw_dq", "d_logUm_dq"), ("workers", "managers")):
        g = df[col].to_numpy(float)
        m = float(np.nanmax(np.abs(g))) if np.any(np.isfinite(g)) else 1.0
        sc = ax.scatter(lon, lat, c=g, s=area, cmap="RdBu_r", vmin=-m, vmax=m, alpha=0.8, edgecolors="k",
                        linewidths=0.2)
        cb = fig.colorbar(sc, ax=ax)
        cb.set_label(f"d log U_{who[0]} / d q_n (per unit of q)")
        top = df.nsmallest(5, "rank") if "rank" in df else df.head(0)
        for _, row in top.iterrows():
            ax.annotate(str(row.get("name", row["city"])), (row["lon"], row["lat"]), fontsize=6)
        ax.set_xlabel("longitude (degrees)")
        ax.set_ylabel("latitude (degrees)")
        ax.set_title(f"{who}' welfare gradient w.r.t. city internet quality", fontsize=9)
    return _finish(fig, path, f"Welfare-gradient map (size = population); data: {data_label}")


def plot_model_fit(log_size, data, model, path, *, quantity: str = "log wage", units: str = "log model units",
                   data_label: str = DATA_LABEL) -> Path:
    """Data vs model against log city size (one panel), and model against data (45-degree line)."""
    x, d, m = (np.asarray(v, float) for v in (log_size, data, model))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    ax = axes[0, 0]
    ax.scatter(x, d, s=8, alpha=0.6, label="data")
    ax.scatter(x, m, s=8, alpha=0.6, marker="x", label="model")
    ax.set_xlabel("log city size (model units)")
    ax.set_ylabel(f"{quantity} ({units})")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.scatter(d, m, s=8, alpha=0.6)
    lo, hi = float(np.nanmin([d.min(), m.min()])), float(np.nanmax([d.max(), m.max()]))
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
    ax.set_xlabel(f"data: {quantity} ({units})")
    ax.set_ylabel(f"model: {quantity} ({units})")
    return _finish(fig, path, f"Model fit: {quantity}; data: {data_label}")


def plot_estimates_vs_truth(names, estimates, se, truth, path, *, data_label: str = DATA_LABEL) -> Path:
    """Each parameter's estimate with its 95% interval (estimate +- 1.96 se) next to the truth,
    as (estimate - truth) / |truth| (dimensionless), one row per parameter."""
    names = list(names)
    est, s, tr = (np.asarray(v, float) for v in (estimates, se, truth))
    scale = np.where(np.abs(tr) > 0, np.abs(tr), 1.0)
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(names) + 1.5))
    yy = np.arange(len(names))
    ax.errorbar((est - tr) / scale, yy, xerr=1.96 * s / scale, fmt="o", capsize=3, label="estimate, 95% interval")
    ax.axvline(0.0, color="k", lw=0.8, label="truth")
    ax.set_yticks(yy, names)
    ax.set_xlabel("(estimate - truth) / |truth| (dimensionless)")
    ax.legend(fontsize=8)
    return _finish(fig, path, f"Estimates vs truth; data: {data_label}")
