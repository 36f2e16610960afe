"""Figures for Oh (2025)'s counterfactuals (Section 4.4, Appendix B.6), written atomically.

* :func:`plot_deregulation` — Figure 5 analog: effective housing supply elasticity
  ``1/(gamma + t_h)``, population density and rents across ``l`` before and after.
* :func:`plot_welfare_decomposition` — Figure 6 analog: change in each worker's value by
  component (two-sided left, one-sided right when available) against the worker's baseline
  location ``l`` (= her type quantile).
* :func:`plot_welfare_gradient` — dW/dt_h(l) and dW/dtau_w(l) bin by bin.
"""

from __future__ import annotations

import numpy as np

import spatialjax.plots  # noqa: F401  (Agg backend)
import matplotlib.pyplot as plt

from spatialjax.atomic import save_figure

__all__ = ["plot_deregulation", "plot_welfare_decomposition", "plot_welfare_gradient"]


def _centres(res):
    e = np.asarray(res.edges)
    return 0.5 * (e[:-1] + e[1:])


def plot_deregulation(params, cf, path):
    """Figure 5 analog for a :class:`~spatialjax.models.oh.forward.CounterfactualResult`."""
    g = 1.0 / float(params.eta_w)
    ell = _centres(cf.base)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for res, lab, ls in ((cf.base, "baseline", "-"), (cf.new, "counterfactual", "--")):
        axes[0].plot(ell, 1.0 / (g + np.asarray(res.t_h)), ls, label=lab)
        axes[1].plot(ell, np.log(np.asarray(res.L)), ls, label=lab)
        axes[2].plot(ell, np.asarray(res.r), ls, label=lab)
    axes[0].set_ylabel("housing supply elasticity 1/(gamma + t_h)")
    axes[1].set_ylabel("log population density L")
    axes[2].set_ylabel("rent r")
    for ax in axes:
        ax.set_xlabel("location l (baseline population rank)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{cf.name}: top-decile density {cf.metrics['top_decile_density']:+.1f}%, "
                 f"output {cf.metrics['output']:+.3f}%, welfare {cf.metrics['welfare']:+.3f}%", fontsize=9)
    fig.tight_layout()
    out = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return out


def plot_welfare_decomposition(cf, path):
    """Figure 6 analog: per-worker change in rho V^u (% of the mean baseline value) by component."""
    panels = [("two-sided", cf.decomposition)]
    if cf.one_sided_decomposition is not None:
        panels.append(("one-sided", cf.one_sided_decomposition))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (title, d) in zip(axes[0], panels):
        fp = "local TFP" if title == "one-sided" else "firm productivity"
        for key, lab in (("total", "total"), ("firm_productivity", fp), ("housing", "housing market"),
                         ("tightness", "market tightness"), ("other", "other (transfers, taxes)")):
            ax.plot(d["c"], d[key], lw=2 if key == "total" else 1, label=lab)
        ax.axhline(0.0, color="0.6", lw=0.5)
        ax.set_xlabel("worker's baseline location l (type quantile)")
        ax.set_ylabel("change in rho V^u (% of mean)")
        ax.set_title(f"{title} ({cf.name})", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return out


def plot_welfare_gradient(edges, grad: dict, path, title: str = "welfare gradient"):
    """Bars of dW/dt_h and dW/dtau_w per bin (output of ``forward.welfare_gradient``)."""
    e = np.asarray(edges)
    ell = 0.5 * (e[:-1] + e[1:])
    width = 0.9 * np.min(np.diff(e))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, lab in ((axes[0], "t_h", "dW/dt_h(l)  (< 0: deregulating l raises welfare)"),
                         (axes[1], "tau_w", "dW/dtau_w(l)")):
        v = np.asarray(grad[key])
        ax.bar(ell, v, width=width, color=np.where(v < 0, "tab:blue", "tab:red"))
        ax.axhline(0.0, color="0.4", lw=0.5)
        ax.set_xlabel("location l")
        ax.set_title(lab, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return out
