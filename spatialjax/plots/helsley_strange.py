"""Figures 1-5 of Helsley & Strange (2012) for an I = 2 economy (analogs computed from the model).

figure1: iso-utility ellipses of V_1, V_2 and the type optima (Figure 1).
figure2: the contract curve connecting the type optima (Figure 2, (IV.6)-(IV.7)).
figure3: the four loci dV_i/dn_k = 0 ((A.22)-(A.25) for (A.1)), the stable region ∩ S_i, the
         ratio line (V.2) and the CPE (Figure 3).
figure4: the autarky sets A_i, the stable region and the Nash segment of the ratio line (Figure 4).
figure5: specialized-city utility curves V_i^i(n), V_i^k(n), with n^S, n^A, n^C (Figure 5).

Every function takes ``params`` (``helsley_strange.Params`` with I = 2) and ``path``; it saves
the PNG, closes the figure and returns the path. ``all_figures`` writes the five files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from spatialjax.errors import ParameterError  # noqa: E402
from spatialjax.models import helsley_strange as hs  # noqa: E402
from spatialjax.atomic import save_figure

_C = ("tab:blue", "tab:red")


def _need_I2(params):
    if params.I != 2:
        raise ParameterError("theta", f"the Figure 1-5 analogs are drawn for I = 2; got I = {params.I}")


@eqx.filter_jit
def _mesh_values(params, X, Y):
    pts = jnp.stack([X.ravel(), Y.ravel()], axis=1)
    V = jax.vmap(lambda n: hs.utility(params, n))(pts)
    D = jax.vmap(lambda n: hs.utility_jacobian(params, n))(pts)
    return V.reshape(X.shape + (2,)), D.reshape(X.shape + (2, 2))


def _extent(params, nash=None):
    opts = [np.asarray(hs.solve_type_optimum(params, i).n) for i in range(2)]
    m = max(float(np.nanmax(o)) for o in opts)
    if nash is not None and nash.exists:
        m = max(m, float(np.max(np.asarray(nash.n_hi))))
    return 1.35 * m if np.isfinite(m) and m > 0 else 10.0


def _mesh(params, hi, k=241):
    x = np.linspace(1e-6, hi, k)
    X, Y = np.meshgrid(x, x)
    V, D = _mesh_values(params, jnp.asarray(X), jnp.asarray(Y))
    return X, Y, np.asarray(V), np.asarray(D)


def _type_optima(ax, params):
    for i in range(2):
        o = hs.solve_type_optimum(params, i)
        if bool(o.is_max):
            ax.plot(*np.asarray(o.n), "o", color=_C[i], ms=8, label=f"type-{i + 1} optimum $n^{{*{i + 1}}}$")


def _levels(V, vmax, k=6):
    lo = np.nanpercentile(V, 40)
    return np.unique(np.linspace(lo, vmax, k + 1)[:-1])


def _ellipses(ax, X, Y, V, params):
    for i in range(2):
        o = hs.solve_type_optimum(params, i)
        vmax = float(o.V[i]) if bool(o.is_max) else float(np.nanmax(V[..., i]))
        ax.contour(X, Y, V[..., i], levels=_levels(V[..., i], vmax), colors=_C[i], linewidths=0.8, alpha=0.7)


def _finish(fig, ax, path, title):
    ax.set_xlabel("$n_1$ (type-1 workers in the cluster)")
    ax.set_ylabel("$n_2$ (type-2 workers in the cluster)")
    ax.set_title(title, fontsize=10)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def figure1(params, path):
    """Iso-utility ellipses V_i(n_1, n_2) = const and the type optima (IV.1)."""
    _need_I2(params)
    hi = _extent(params)
    X, Y, V, _ = _mesh(params, hi)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    _ellipses(ax, X, Y, V, params)
    ax.plot([0, hi], [0, hi], color="0.5", lw=0.8, ls=":", label="45° line")
    _type_optima(ax, params)
    return _finish(fig, ax, path, "Figure 1 analog: type optimal clusters and iso-utility ellipses")


def _contract(ax, params, label=True):
    lams = jnp.linspace(0.0, 1.0, 101)
    path = np.asarray(hs.contract_curve_path(params, lams))
    ax.plot(path[:, 0], path[:, 1], color="k", lw=2, label="contract curve (IV.6)-(IV.7)" if label else None)


def figure2(params, path):
    """The contract curve: Pareto-efficient clusters for lambda in [0, 1] (IV.6)-(IV.7)."""
    _need_I2(params)
    hi = _extent(params)
    X, Y, V, _ = _mesh(params, hi)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    _ellipses(ax, X, Y, V, params)
    _contract(ax, params)
    _type_optima(ax, params)
    return _finish(fig, ax, path, "Figure 2 analog: the contract curve")


def _loci(ax, X, Y, D):
    styles = {(0, 0): "-", (0, 1): "--", (1, 0): "--", (1, 1): "-"}
    for (i, k), ls in styles.items():
        ax.contour(X, Y, D[..., i, k], levels=[0.0], colors=_C[i], linestyles=ls, linewidths=1.4)
        ax.plot([], [], color=_C[i], ls=ls, label=f"$\\partial V_{i + 1}/\\partial n_{k + 1}=0$")


def _ratio_line(ax, params, hi):
    r = np.asarray(params.ratio)
    s = hi / max(r)
    ax.plot([0, s * r[0]], [0, s * r[1]], color="0.3", lw=1, label="ratio line (V.2)")


def figure3(params, path):
    """The four loci dV_i/dn_k = 0, the stable region ∩ S_i (shaded), contract curve, ratio line, CPE."""
    _need_I2(params)
    hi = _extent(params, hs.nash_interval(params))
    X, Y, V, D = _mesh(params, hi)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    stable = (D[..., 0, 0] < 0) & (D[..., 1, 1] < 0)
    ax.contourf(X, Y, stable.astype(float), levels=[0.5, 1.5], colors=["0.85"])
    ax.fill([], [], color="0.85", label="stable region $\\cap_i S_i$")
    _loci(ax, X, Y, D)
    _contract(ax, params)
    _ratio_line(ax, params, hi)
    _type_optima(ax, params)
    cpe = hs.constrained_pareto_efficient(params)
    if cpe.exists:
        ax.plot(*np.asarray(cpe.n), "s", color="k", ms=7, label="CPE")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    return _finish(fig, ax, path, "Figure 3 analog: loci, stable region and the CPE")


def figure4(params, path):
    """Autarky sets A_i (V_i >= V_i(0)), the stable region, and the Nash segment of the ratio line."""
    _need_I2(params)
    ns = hs.nash_interval(params)
    hi = _extent(params, ns)
    X, Y, V, D = _mesh(params, hi)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    stable = (D[..., 0, 0] < 0) & (D[..., 1, 1] < 0)
    ax.contourf(X, Y, stable.astype(float), levels=[0.5, 1.5], colors=["0.88"])
    ax.fill([], [], color="0.88", label="stable region $\\cap_i S_i$")
    V0 = np.asarray(params.V0)
    for i in range(2):
        ax.contour(X, Y, V[..., i] - V0[i], levels=[0.0], colors=_C[i], linewidths=1.2)
        ax.plot([], [], color=_C[i], label=f"$V_{i + 1} = V_{i + 1}(0)$ (boundary of $A_{i + 1}$)")
    _ratio_line(ax, params, hi)
    _contract(ax, params)
    cpe = hs.constrained_pareto_efficient(params)
    if cpe.exists:
        ax.plot(*np.asarray(cpe.n), "s", color="k", ms=7, label="CPE")
    if ns.exists:
        a, b = np.asarray(ns.n_lo), np.asarray(ns.n_hi)
        ax.plot([a[0], b[0]], [a[1], b[1]], color="tab:green", lw=5, solid_capstyle="butt",
                label=f"symmetric Nash: $N^j\\in[{ns.S_lo:.3g}, {ns.S_hi:.3g}]$")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    return _finish(fig, ax, path, "Figure 4 analog: symmetric Nash equilibria (too-large clusters)")


def figure5(params, path):
    """Specialized-city utility curves V_i^i(n) and V_i^k(n) (k != i) with n^S, n^C, n^A."""
    _need_I2(params)
    sp = hs.specialized_equilibria(params)
    nA = np.asarray(sp.n_A)
    top = float(np.nanmax(np.where(np.isfinite(nA), nA, np.asarray(sp.n_S) * 2)))
    n = jnp.linspace(0.0, 1.15 * top, 400)
    eye = jnp.eye(2)
    # U[k, j, i] = V_i(n_j e_k): a type-i worker in a type-k specialized city of size n_j
    U = np.asarray(jax.vmap(lambda e: jax.vmap(lambda s: hs.utility(params, s * e))(n))(eye))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    V0 = np.asarray(params.V0)
    for i, ax in enumerate(axes):
        k = 1 - i
        ax.plot(n, U[i, :, i], color=_C[i], lw=2, label=f"$V_{i + 1}^{i + 1}(n)$ (own-type city)")
        ax.plot(n, U[k, :, i], color=_C[k], lw=1.5, ls="--", label=f"$V_{i + 1}^{k + 1}(n)$ (type-{k + 1} city)")
        ax.axhline(V0[i], color="0.4", lw=0.8, ls=":", label=f"autarky $V_{i + 1}(0)$")
        ax.axhline(float(sp.V_cross[i, k]), color=_C[k], lw=0.8, ls=":",
                   label=f"$V_{i + 1}^{k + 1}(n^S_{k + 1})$")
        for j, (name, v) in enumerate((("$n^S$", sp.n_S[i]), ("$n^C$", sp.n_C[i]), ("$n^A$", sp.n_A[i]))):
            v = float(v)
            if np.isfinite(v):
                ax.axvline(v, color="0.6", lw=0.6)
                ax.annotate(name, (v, ax.get_ylim()[0]), textcoords="offset points", xytext=(2, 4 + 12 * j), fontsize=8)
        lo, hi = float(sp.lo[i]), float(sp.hi[i])
        if np.isfinite(lo) and np.isfinite(hi) and lo <= hi:
            ax.axvspan(lo, hi, color=_C[i], alpha=0.12, label="specialized equilibria")
        ax.set_xlabel(f"city size n (type-{i + 1} panel)")
        ax.set_ylabel(f"utility of a type-{i + 1} worker")
        ax.legend(fontsize=7)
    fig.suptitle("Figure 5 analog: utility in specialized cities (Proposition 3)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def all_figures(params, outdir, prefix: str = "helsley_strange_") -> list:
    """Write figure1..figure5 as ``{prefix}figure{k}.png`` into ``outdir``; returns the paths."""
    outdir = Path(outdir)
    return [f(params, outdir / f"{prefix}figure{k}.png")
            for k, f in enumerate((figure1, figure2, figure3, figure4, figure5), start=1)]
