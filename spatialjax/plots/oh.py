"""Figures for Oh (2025), quantitative model: analogs of Figure 3 (worker and firm productivity,
urban wage premium) and Figure 4 (model fit across ℓ). Written atomically
(:func:`spatialjax.atomic.save_figure`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import spatialjax.plots  # noqa: F401  (Agg backend)
import matplotlib.pyplot as plt

from spatialjax.atomic import save_figure


def _ell(n):
    return (np.arange(n) + 0.5) / n


def _finish(fig, path, title: str) -> Path:
    """Optional suptitle, tight layout, atomic save at 110 dpi, close; the written path."""
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = save_figure(fig, path, dpi=110)
    plt.close(fig)
    return out


def plot_figure3(result, lines: dict, shares: dict, path, *, title: str = "") -> Path:
    """Figure 3 analog. Left: ``log x(ℓ) − log x(0)`` and ``log y(ℓ) − log y(0)`` by bin. Right:
    the log wage from variation in ``x(ℓ)``, ``y(ℓ)``, ``θ(ℓ)`` alone (others at their averages),
    and the model's log wage, each relative to its lowest-bin value; legend with the shares.

    ``lines`` and ``shares`` are :func:`spatialjax.models.oh.estimation.wage_premium_lines` and
    :func:`~spatialjax.models.oh.estimation.wage_premium_shares` of ``result`` (computed by the
    caller, so that this plotting module does not import the estimation module that calls it)."""
    x, y = np.asarray(result.x), np.asarray(result.y)
    ell = _ell(x.shape[0])
    lines = {k: np.asarray(v) for k, v in lines.items()}
    sh = shares
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ell, np.log(x / x[0]), "o-", label="worker productivity log x(ℓ)/x(0)")
    a.plot(ell, np.log(y / y[0]), "s-", label="firm productivity log y(ℓ)/y(0)")
    a.set_xlabel("ℓ (population rank)")
    a.set_ylabel("log productivity relative to ℓ = 0")
    a.legend(fontsize=8)
    a.set_title("Worker and firm productivity")
    b.plot(ell, lines["wage"] - lines["wage"][0], "k-", lw=2, label="model log wage")
    b.plot(ell, lines["worker"] - lines["worker"][0], "o--", label=f"workers x(ℓ) ({100 * sh['worker_share']:.1f}%)")
    b.plot(ell, lines["firm"] - lines["firm"][0], "s--", label=f"firms y(ℓ) ({100 * sh['firm_share']:.1f}%)")
    b.plot(ell, lines["tightness"] - lines["tightness"][0], "^--",
           label=f"tightness θ(ℓ) ({100 * sh['tightness_share']:.1f}%)")
    b.set_xlabel("ℓ (population rank)")
    b.set_ylabel("log wage relative to ℓ = 0")
    b.legend(fontsize=8)
    b.set_title("Urban wage premium")
    return _finish(fig, path, title)


def plot_figure4(params, result, targets: dict, path, *, housing_groups: int = 4, title: str = "") -> Path:
    """Figure 4 analog: model log wages, rents and housing spending shares by bin, with the
    quartile-group averages of the model and the Table 2 targets (``1 + m̂`` relative to the
    first quartile for wages and rents; the mean and the Q4 − Q1 gap for housing shares)."""
    from spatialjax.models.oh.quantitative import quartile_weights

    n = int(np.asarray(result.x).shape[0])
    ell = _ell(n)
    Q = quartile_weights(n, 4)
    centers = np.array([0.125, 0.375, 0.625, 0.875])
    w, r = np.asarray(result.wage), np.asarray(result.r)
    share = np.asarray(result.housing_share)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, v, key, lab in ((axes[0], w, "wage", "log wage"), (axes[1], r, "rent", "log rent")):
        ax.plot(ell, np.log(v / (Q @ v)[0]), "o-", ms=3, label="model, by bin")
        ax.plot(centers, np.log((Q @ v) / (Q @ v)[0]), "s", label="model, quartile averages")
        tg = [0.0] + [targets[f"{key}_q{i}"] for i in (2, 3, 4)]
        ax.plot(centers, np.log1p(tg), "x", ms=9, mew=2, color="C3", label="Table 2 target")
        ax.set_xlabel("ℓ")
        ax.set_ylabel(f"{lab} relative to Q1")
        ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(ell, share, "o-", ms=3, label="model, by bin")
    Qh = quartile_weights(n, housing_groups)
    ch = (np.arange(housing_groups) + 0.5) / housing_groups
    ax.plot(ch, Qh @ share, "s", label="model, group averages")
    mean, gap = targets["housing_mean"], targets["housing_q4_q1"]
    ax.axhline(mean, color="C3", lw=1, ls=":", label=f"target mean {mean:.3f}")
    ax.plot([ch[0], ch[-1]], [mean - gap / 2, mean + gap / 2], "x", ms=9, mew=2, color="C3",
            label=f"target gap {gap:.3f} (centred on the mean)")
    ax.set_xlabel("ℓ")
    ax.set_ylabel("housing spending share")
    ax.legend(fontsize=7)
    return _finish(fig, path, title)
