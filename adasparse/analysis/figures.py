"""Figures of the analysis (matplotlib, headless Agg backend).

Every function takes :class:`~adasparse.analysis.stats.AnalysisResult` objects (one or several models, drawn
side by side) and returns a :class:`Plot`: the matplotlib figure and the arrays it draws (``data``), so that
the report and the tests can check the figure against ``metrics.json``. A function returns ``None`` when there
is nothing to draw (e.g. no model has α, or no training log was given).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .stats import ATTENTION_TYPES, ROLE_NAMES, AnalysisResult, AttentionMap  # noqa: E402

__all__ = [
    "Plot",
    "TYPE_LABELS",
    "ROLE_LABELS",
    "ZERO_COLOR",
    "alpha_histogram",
    "alpha_trajectories",
    "sorted_density",
    "density_vs_length",
    "js_per_layer",
    "role_heatmaps",
    "attention_grid",
    "to_png",
]

TYPE_LABELS = {
    "enc_self": "encoder self-attention",
    "context": "context attention",
    "dec_self": "decoder self-attention",
    "self": "causal self-attention",  # a decoder-only language model
}
ROLE_LABELS = {
    "prev": "previous token",
    "next": "next token",
    "merge": "subword merging",
    "interrogation": "interrogation (final '?')",
}
ZERO_COLOR = "#ffffff"  # exactly-zero attention weights; the colour map never reaches it
ALPHA_BINS = np.linspace(1.0, 2.0, 21)


@dataclass
class Plot:
    """A figure and the arrays it draws (nested dicts of numpy arrays / lists)."""

    figure: Figure
    data: dict[str, Any]


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _types(results: Sequence[AnalysisResult], pred=lambda ts: True) -> list[str]:
    return [t for t in ATTENTION_TYPES if any(t in r.types and pred(r.types[t]) for r in results)]


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def alpha_histogram(results: Sequence[AnalysisResult]) -> Plot | None:
    """Histogram of α over heads, one panel per attention type, one bar series per model (models with α)."""
    types = _types(results, lambda ts: ts.alpha is not None)
    if not types:
        return None
    fig, axes = plt.subplots(1, len(types), figsize=(4.2 * len(types), 3.2), squeeze=False)
    data: dict[str, Any] = {"bins": ALPHA_BINS.copy()}
    colors = _colors(len(results))
    for ax, t in zip(axes[0], types):
        data[t] = {}
        models = [(r, c) for r, c in zip(results, colors) if t in r.types and r.types[t].alpha is not None]
        width = (ALPHA_BINS[1] - ALPHA_BINS[0]) / max(len(models), 1)
        for k, (r, c) in enumerate(models):
            a = r.types[t].alpha.ravel()
            counts, _ = np.histogram(np.clip(a, 1.0, 2.0), bins=ALPHA_BINS)
            data[t][r.name] = {"alpha": a.copy(), "counts": counts}
            ax.bar(ALPHA_BINS[:-1] + k * width, counts, width=width, align="edge", color=c, label=r.name)
        ax.set_title(TYPE_LABELS[t])
        ax.set_xlabel("α")
        ax.set_xlim(1.0, 2.0)
        ax.set_ylabel("heads")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return Plot(fig, data)


def alpha_trajectories(result: AnalysisResult) -> Plot | None:
    """α over training for one model: rows = attention types, columns = layers, one line per head."""
    traj = result.alpha_trajectory
    if traj is None:
        return None
    types = [t for t in ATTENTION_TYPES if t in traj.alpha]
    if not types or all(np.ptp(traj.alpha[t], axis=0).max(initial=0.0) == 0 for t in types):
        return None  # no α moved (a fixed normalizer, e.g. softmax's α = 1): nothing to draw
    n_layers = max(traj.alpha[t].shape[1] for t in types)
    fig, axes = plt.subplots(
        len(types),
        n_layers,
        figsize=(2.6 * n_layers + 1, 2.2 * len(types) + 0.5),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    data: dict[str, Any] = {"steps": traj.steps.copy()}
    for row, t in zip(axes, types):
        a = traj.alpha[t]  # (N, L, H)
        data[t] = a.copy()
        colors = _colors(a.shape[2])
        for li, ax in enumerate(row):
            if li >= a.shape[1]:
                ax.axis("off")
                continue
            for h in range(a.shape[2]):
                ax.plot(traj.steps, a[:, li, h], color=colors[h], lw=1, label=f"head {h}")
            ax.set_title(f"{TYPE_LABELS[t]}, layer {li}", fontsize=8)
            ax.set_ylim(0.98, 2.02)
        row[0].set_ylabel("α")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=6, ncol=2)
    fig.suptitle(f"α during training: {result.name}")
    fig.tight_layout()
    return Plot(fig, data)


def sorted_density(results: Sequence[AnalysisResult]) -> Plot:
    """Per layer, the heads' densities sorted from densest to sparsest; rows = types, one line per model."""
    types = _types(results)
    n_layers = max(r.types[t].num_layers for r in results for t in types if t in r.types)
    fig, axes = plt.subplots(
        len(types), n_layers, figsize=(2.4 * n_layers + 1, 2.2 * len(types) + 0.5), squeeze=False, sharey=True
    )
    colors = _colors(len(results))
    data: dict[str, Any] = {}
    for row, t in zip(axes, types):
        data[t] = {}
        for r, c in zip(results, colors):
            if t not in r.types:
                continue
            d = -np.sort(-r.types[t].density, axis=1)  # (L, H), descending
            data[t][r.name] = d
            for li in range(d.shape[0]):
                row[li].plot(np.arange(d.shape[1]), d[li], "o-", color=c, ms=3, lw=1, label=r.name)
        for li, ax in enumerate(row):
            ax.set_title(f"{TYPE_LABELS[t]}, layer {li}", fontsize=8)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("head (sorted)", fontsize=7)
        row[0].set_ylabel("density")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return Plot(fig, data)


def density_vs_length(results: Sequence[AnalysisResult]) -> Plot:
    """Mean density over all heads and layers against the sentence length (number of keys), per type and model."""
    types = _types(results)
    fig, axes = plt.subplots(1, len(types), figsize=(4.2 * len(types), 3.2), squeeze=False)
    colors = _colors(len(results))
    data: dict[str, Any] = {}
    for ax, t in zip(axes[0], types):
        data[t] = {}
        for r, c in zip(results, colors):
            if t not in r.types:
                continue
            ts = r.types[t]
            dens = ts.density_by_length.mean((1, 2)) if len(ts.lengths) else np.zeros(0)
            data[t][r.name] = {"length": ts.lengths.copy(), "density": dens, "count": ts.length_counts.copy()}
            ax.plot(ts.lengths, dens, "o-", color=c, ms=3, label=r.name)
        ax.set_title(TYPE_LABELS[t])
        ax.set_xlabel("sentence length (keys)")
        ax.set_ylabel("mean density")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return Plot(fig, data)


def js_per_layer(results: Sequence[AnalysisResult]) -> Plot:
    """Jensen–Shannon head diversity per layer (0 = identical heads, 1 = disjoint), bars per model."""
    types = _types(results)
    fig, axes = plt.subplots(1, len(types), figsize=(4.2 * len(types), 3.2), squeeze=False)
    colors = _colors(len(results))
    data: dict[str, Any] = {}
    for ax, t in zip(axes[0], types):
        data[t] = {}
        models = [(r, c) for r, c in zip(results, colors) if t in r.types]
        width = 0.8 / max(len(models), 1)
        for k, (r, c) in enumerate(models):
            js = r.types[t].js
            data[t][r.name] = js.copy()
            ax.bar(np.arange(len(js)) + k * width, np.nan_to_num(js), width=width, color=c, label=r.name)
        ax.set_title(TYPE_LABELS[t])
        ax.set_xlabel("layer")
        ax.set_ylabel("JS / log H")
        ax.set_ylim(0, 1)
        n = max(r.types[t].num_layers for r, _ in models)
        ax.set_xticks(np.arange(n) + 0.4 - width / 2, [str(i) for i in range(n)])
        ax.legend(fontsize=8)
    fig.tight_layout()
    return Plot(fig, data)


def role_heatmaps(result: AnalysisResult) -> Plot | None:
    """Head-role scores of one model as (layer × head) heat maps: rows = types, columns = roles."""
    cells = [(t, r) for t in _types([result]) for r in ROLE_NAMES if result.types[t].role(r) is not None]
    if not cells:
        return None
    types = [t for t in ATTENTION_TYPES if any(c[0] == t for c in cells)]
    roles = [r for r in ROLE_NAMES if any(c[1] == r for c in cells)]
    fig, axes = plt.subplots(
        len(types),
        len(roles),
        figsize=(3.0 * len(roles) + 1, 2.4 * len(types) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    cmap = plt.get_cmap("magma").with_extremes(bad="#bbbbbb")
    data: dict[str, Any] = {}
    im = None
    for i, t in enumerate(types):
        data[t] = {}
        for j, role in enumerate(roles):
            ax = axes[i][j]
            s = result.types[t].role(role)
            if s is None:
                ax.axis("off")
                continue
            data[t][role] = s.copy()
            im = ax.imshow(np.ma.masked_invalid(s), vmin=0, vmax=1, cmap=cmap, aspect="auto")
            ax.set_title(f"{t}: {ROLE_LABELS[role]}", fontsize=8)
            ax.set_xlabel("head", fontsize=7)
            ax.set_ylabel("layer", fontsize=7)
            ax.set_xticks(range(s.shape[1]))
            ax.set_yticks(range(s.shape[0]))
            ax.tick_params(labelsize=6)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6)
    fig.suptitle(f"head roles: {result.name}")
    return Plot(fig, data)


def attention_grid(amap: AttentionMap, attn_type: str, layer: int, model_name: str = "", max_cols: int = 4) -> Plot:
    """All heads of one layer for one sentence. Exact zeros are drawn in :data:`ZERO_COLOR` (white), distinct
    from small weights, which the colour map draws dark."""
    w = amap.attention[attn_type][layer]  # (H, Q, K)
    H = w.shape[0]
    qt, kt = amap.axis_tokens(attn_type)
    ncols = min(H, max_cols)
    nrows = -(-H // ncols)
    cell = max(2.2, 0.22 * max(w.shape[1], w.shape[2]))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols + 1, cell * nrows + 0.6), squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad=ZERO_COLOR)
    im = None
    for h in range(nrows * ncols):
        ax = axes[h // ncols][h % ncols]
        if h >= H:
            ax.axis("off")
            continue
        im = ax.imshow(np.ma.masked_where(w[h] == 0, w[h]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"head {h}", fontsize=8)
        ax.set_xticks(range(w.shape[2]))
        ax.set_yticks(range(w.shape[1]))
        ax.set_xticklabels(
            kt if kt is not None and len(kt) == w.shape[2] else range(w.shape[2]), rotation=90, fontsize=6
        )
        ax.set_yticklabels(qt if qt is not None and len(qt) == w.shape[1] else range(w.shape[1]), fontsize=6)
        ax.set_facecolor(ZERO_COLOR)
    fig.colorbar(im, ax=axes, shrink=0.6, label="weight (white = exactly 0)")
    title = f"{TYPE_LABELS[attn_type]}, layer {layer}, sentence {amap.index}"
    fig.suptitle(f"{model_name}: {title}" if model_name else title)
    return Plot(fig, {"weights": w.copy(), "query_tokens": qt, "key_tokens": kt})
