"""Figures for Thisse, Turner & Ushchev (2023): Figure 1 (f and g loci with their crossings) and
Figure 2 (equilibrium correspondence ln ρ against γ, stable solid, unstable dashed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

import spatialjax.plots  # noqa: F401  (Agg backend)
import matplotlib.pyplot as plt

from spatialjax.models import thisse_turner_ushchev as ttu
from spatialjax.atomic import save_figure


def figure1(params: ttu.Params, gammas: Sequence[float], path: str | Path | None = None, n: int = 600):
    """Figure 1 analog: the market-clearing locus f (24) (red) and the zero-profit locus g (25)
    (blues, one per γ) on (ρ_m, ρ_M), log scale; the interior equilibria (the crossings, found by
    ``ttu.equilibria``) are marked. Returns the matplotlib Figure (closed if ``path`` is given)."""
    rho_m, rho_M = ttu.rho_bounds(params)
    rho = np.exp(np.linspace(np.log(rho_m), np.log(rho_M), n + 2)[1:-1])
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.plot(rho, np.asarray(ttu.f_curve(params, rho)), color="tab:red", lw=2, label="f (market clearing)")
    blues = plt.cm.Blues(np.linspace(0.45, 0.95, max(len(gammas), 1)))
    for g, col in zip(gammas, blues):
        p = params.replace(gamma=float(g))
        ax.plot(rho, np.asarray(ttu.g_curve(p, rho)), color=col, lw=1.5, label=rf"g, $\gamma={g:g}$")
        for e in ttu.equilibria(p, stability=False, corners=False, throw=False):
            if 0 < e.omega < np.inf:
                Om = np.exp((1 + float(p.eps)) / float(p.eps) * e.log_omega)
                ax.plot([e.rho], [Om], "o", color=col, mec="k", ms=5, zorder=5)
    ax.axvline(ttu.rho_L(params), color="0.6", ls=":", lw=1, label=r"$\rho_L$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(rho_m, rho_M)
    ax.set_ylim(1e-3, 1e3)
    ax.set_xlabel(r"$\rho$ (amenity-adjusted relative rent)")
    ax.set_ylabel(r"$\omega^{(1+\epsilon)/\epsilon}$")
    ax.set_title(rf"f and g loci ($\gamma_m = \alpha/\epsilon$ = {float(params.gamma_m):.4g})")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=120)
        plt.close(fig)
    return fig


def _segments(sweep: dict):
    """Split the swept roots into branch segments (root k of the same root count at neighbouring
    γ), each tagged with its stability at the left end."""
    g, lr, valid, st, n = sweep["gamma"], sweep["log_rho"], sweep["valid"], sweep["stable"], sweep["n_roots"]
    segs = []
    for i in range(len(g) - 1):
        if n[i] != n[i + 1]:
            continue
        for k in range(min(int(n[i]), lr.shape[1])):
            if valid[i, k] and valid[i + 1, k]:
                segs.append(((g[i], g[i + 1]), (lr[i, k], lr[i + 1, k]), bool(st[i, k] and st[i + 1, k])))
    return segs


def figure2(params: ttu.Params, gammas, path: str | Path | None = None, sweep: dict | None = None):
    """Figure 2 analog: every interior equilibrium's ln ρ against γ, computed as one vmapped
    sweep (``ttu.sweep_gamma``); stable (Definition 3) solid, unstable dashed. Vertical lines
    at γ_m = α/ε and at the Proposition-9 bound. Returns (Figure, sweep dict)."""
    sw = ttu.sweep_gamma(params, gammas) if sweep is None else sweep
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for (gx, ly, stable) in _segments(sw):
        ax.plot(gx, ly, color="k", lw=2.0 if stable else 1.0, ls="-" if stable else "--")
    # roots not joined to a neighbour (where the root count changes) as markers, so none is hidden
    g, n = sw["gamma"], sw["n_roots"]
    same_left = np.r_[False, n[1:] == n[:-1]]
    same_right = np.r_[n[:-1] == n[1:], False]
    lonely = ~(same_left | same_right)
    for k in range(sw["log_rho"].shape[1]):
        m = sw["valid"][:, k] & lonely
        ax.plot(g[m], sw["log_rho"][m, k], "o", color="k", ms=3, mfc="none")
    ax.axvline(float(params.gamma_m), color="tab:blue", ls=":", lw=1, label=r"$\gamma_m = \alpha/\epsilon$")
    gs = float(params.gamma_strong)
    if g.min() <= gs <= g.max():
        ax.axvline(gs, color="tab:green", ls=":", lw=1, label="Prop. 9 bound")
    ax.axhline(np.log(ttu.rho_L(params)), color="0.6", ls=":", lw=1, label=r"$\ln \rho_L$")
    ax.plot([], [], "k-", lw=2, label="stable")
    ax.plot([], [], "k--", lw=1, label="unstable")
    rm, rM = ttu.rho_bounds(params)
    ax.set_ylim(np.log(rm) - 0.2, np.log(rM) + 0.2)
    ax.set_xlabel(r"$\gamma$")
    ax.set_ylabel(r"$\ln \rho$")
    ax.set_title("Equilibrium correspondence (interior equilibria)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=120)
        plt.close(fig)
    return fig, sw
