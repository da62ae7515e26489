"""The analysis report: one self-contained HTML page, ``metrics.json`` and the figures as PNG files.

``report.html`` embeds every figure as a base64 PNG and its style inline; it references no file and no network
resource, so it opens from disk. ``metrics.json`` holds every number the page shows (and the arrays behind the
figures): ``{"title", "models": [AnalysisResult.to_dict() ...], "figures": [{"id", "file", "title"}]}``, compact
UTF-8 JSON. NaN (a score with no eligible token) is written as ``null``; attention-map weights carry 7 significant
digits, all other numbers full precision.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import fsync_dir
from . import figures as F
from .stats import ATTENTION_TYPES, ROLE_NAMES, AnalysisResult

__all__ = ["FigureEntry", "Report", "write_report", "summary_text"]


@dataclass
class FigureEntry:
    """One figure of the report: identifier, PNG file name, title, caption and the arrays it draws."""

    id: str
    file: str
    title: str
    caption: str
    data: dict[str, Any]
    png: bytes = field(repr=False, default=b"")


@dataclass
class Report:
    """What :func:`write_report` wrote."""

    html_path: Path
    metrics_path: Path
    figures: list[FigureEntry]
    summary: str

    @property
    def png_paths(self) -> list[Path]:
        return [self.html_path.parent / f.file for f in self.figures]


# ---------------------------------------------------------------------------------------------- terminal summary
def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    x = float(x)
    return "–" if not math.isfinite(x) else f"{x:.{nd}f}"


def summary_text(results: AnalysisResult | Sequence[AnalysisResult]) -> str:
    """Compact per-layer summary for the terminal: mean α, mean density over heads, JS, per model and type."""
    results = _as_list(results)
    lines = []
    for r in results:
        lines.append(f"[{r.name}] {r.num_sentences} sentences")
        lines.append(f"  {'type':<9} {'layer':>5} {'mean α':>7} {'density':>8} {'JS':>6}")
        for t, ts in r.types.items():
            s = ts.layer_summary()
            for li in range(ts.num_layers):
                a = None if s["alpha_mean"] is None else s["alpha_mean"][li]
                lines.append(f"  {t:<9} {li:>5} {_fmt(a):>7} {_fmt(s['density_mean'][li]):>8} {_fmt(s['js'][li]):>6}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- helpers
def _as_list(results: AnalysisResult | Sequence[AnalysisResult]) -> list[AnalysisResult]:
    if isinstance(results, AnalysisResult):
        results = [results]
    results = list(results)
    if not results:
        raise ValueError("write_report needs at least one AnalysisResult")
    for r in results:
        if not isinstance(r, AnalysisResult):
            raise TypeError(f"expected AnalysisResult objects, got {type(r).__name__}")
    names = [r.name for r in results]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be distinct, got {names}")
    return results


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    cap = f"<caption>{_esc(caption)}</caption>" if caption else ""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _head_table(arr: np.ndarray, caption: str) -> str:
    """A (layers, heads) array as a table, cells shaded by value in [1, 2] for α or [0, 1] otherwise."""
    rows = []
    for li in range(arr.shape[0]):
        rows.append([f"<b>{li}</b>"] + [_fmt(v) for v in arr[li]])
    return _table(["layer"] + [f"h{h}" for h in range(arr.shape[1])], rows, caption)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;
color:#1b1b1b;background:#fff;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:2em}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:8px 16px 16px 0;font-size:.85em;display:inline-table;vertical-align:top}
th,td{border:1px solid #ccc;padding:2px 7px;text-align:right}th{background:#f2f2f2}
caption{caption-side:top;font-weight:600;text-align:left;padding:2px 0}
figure{margin:12px 0 28px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#333;max-width:950px}.note{color:#555;font-size:.9em}
nav a{margin-right:14px}
"""


# ------------------------------------------------------------------------------------------------------ sections
Section = tuple[str, str, list[str]]  # (anchor, heading, html parts)


class _Figures:
    """Renders the figures of a report into ``out`` as PNG files and keeps their entries in drawing order."""

    def __init__(self, out: Path, dpi: int):
        self.out = out
        self.dpi = dpi
        self.entries: list[FigureEntry] = []

    def add(self, plot: F.Plot | None, fid: str, title: str, caption: str) -> FigureEntry | None:
        if plot is None:
            return None
        fid = re.sub(r"[^A-Za-z0-9_.-]", "_", fid)
        png = F.to_png(plot.figure, dpi=self.dpi)
        (self.out / f"{fid}.png").write_bytes(png)
        e = FigureEntry(fid, f"{fid}.png", title, caption, plot.data, png)
        self.entries.append(e)
        return e


def _summary_section(results: list[AnalysisResult]) -> Section:
    """Per attention type, a table of mean α, density and JS per layer with the models side by side."""
    parts = [
        "<p class='note'>Per layer: α averaged over the layer's heads (– for models without α), density "
        "averaged over heads, and the Jensen–Shannon head diversity (normalised by log H).</p>"
    ]
    for t in ATTENTION_TYPES:
        present = [r for r in results if t in r.types]
        if not present:
            continue
        n_layers = max(r.types[t].num_layers for r in present)
        header = ["layer"] + [f"{r.name}: {c}" for r in present for c in ("mean α", "density", "JS")]
        rows = []
        for li in range(n_layers):
            row: list[str] = [f"<b>{li}</b>"]
            for r in present:
                s = r.types[t].layer_summary()
                if li >= r.types[t].num_layers:
                    row += ["", "", ""]
                    continue
                a = None if s["alpha_mean"] is None else s["alpha_mean"][li]
                row += [_fmt(a), _fmt(s["density_mean"][li]), _fmt(s["js"][li])]
            rows.append(row)
        parts.append(_table(header, rows, F.TYPE_LABELS[t]))
    return "summary", "Summary per layer", parts


def _alpha_section(results: list[AnalysisResult], figs: _Figures, side: str) -> Section:
    """The α histogram, each model's α tables and the α trajectories of the models with a training log."""
    parts = []
    e = figs.add(
        F.alpha_histogram(results),
        "alpha_histogram",
        "α per head",
        "Histogram of the learned (or fixed) α of every head, one panel per attention type. α = 1 is softmax "
        "(dense), α = 2 is sparsemax (sparsest); the paper finds the encoder self-attention bimodal, with one "
        "mode near 2 and one between 1 and 1.5." + side,
    )
    parts.append(_fig(e) if e else "<p class='note'>No model has α per head.</p>")
    for k, r in enumerate(results):
        tables = [
            _head_table(ts.alpha, f"{r.name}: α, {F.TYPE_LABELS[t]}")
            for t, ts in r.types.items()
            if ts.alpha is not None
        ]
        parts += tables
        e = figs.add(
            F.alpha_trajectories(r),
            f"alpha_trajectories_m{k}",
            f"α during training: {r.name}",
            "α of every head over the training steps, read from the training log: rows are attention types, "
            "columns layers, one line per head. Heads that move to 2 became sparse; heads that fall towards 1 "
            "became dense.",
        )
        if e:
            parts.append(_fig(e))
    return "alpha", "α per head", parts


def _density_section(results: list[AnalysisResult], figs: _Figures, side: str) -> Section:
    """Sorted density per head, density against sentence length, and each model's density tables."""
    parts = []
    e = figs.add(
        F.sorted_density(results),
        "density_sorted",
        "Density per head, sorted within each layer",
        "Density of a head = fraction of the attendable keys that get a non-zero weight, averaged over real "
        "(non-pad) queries; a softmax head has density 1. Within each layer the heads are sorted from densest "
        "to sparsest." + side,
    )
    parts.append(_fig(e))
    e = figs.add(
        F.density_vs_length(results),
        "density_vs_length",
        "Density against sentence length",
        "Mean density over all heads and layers for sentences of each length (number of keys: source length "
        "for encoder self- and context attention, target length for decoder self-attention, sequence length "
        "for a language model's causal self-attention). Sparse heads "
        "attend to a roughly constant number of keys, so their density falls as sentences grow." + side,
    )
    parts.append(_fig(e))
    for r in results:
        parts += [_head_table(ts.density, f"{r.name}: density, {F.TYPE_LABELS[t]}") for t, ts in r.types.items()]
    return "density", "Density", parts


def _js_section(results: list[AnalysisResult], figs: _Figures, side: str) -> Section:
    """The Jensen–Shannon head diversity per layer."""
    e = figs.add(
        F.js_per_layer(results),
        "js_per_layer",
        "Head diversity per layer",
        "Jensen–Shannon divergence between the heads of a layer for the same query, H(mean of heads) − mean "
        "of H(head), divided by log H and averaged over real queries: 0 when all heads agree, 1 when they "
        "attend to disjoint keys. The paper finds sparse heads more diverse than softmax heads." + side,
    )
    return "js", "Head diversity (JS)", [_fig(e)]


def _roles_section(results: list[AnalysisResult], figs: _Figures) -> Section:
    """Each model's role heatmaps and its top heads per attention type and role."""
    parts = [
        "<p class='note'>previous / next token: mean weight a query puts on the key just before / after it "
        "(self-attention only; no next token under a causal mask). Subword merging: mean weight a subword "
        "piece gives to the other pieces of its own word (those before it, under a causal mask). Interrogation: "
        "mean weight put on a final '?' of the source sentence, over sentences ending with one (translation "
        "models only: under a causal mask a final '?' is seen by no query but itself).</p>"
    ]
    for k, r in enumerate(results):
        e = figs.add(
            F.role_heatmaps(r),
            f"roles_m{k}",
            f"Head roles: {r.name}",
            "Score of every head (layer × head) for each role; grey cells have no eligible token.",
        )
        if e:
            parts.append(_fig(e))
        for t, ts in r.types.items():
            for role in ROLE_NAMES:
                if ts.role(role) is None:
                    continue
                top = r.top_heads(t, role)
                rows = [[str(h["layer"]), str(h["head"]), _fmt(h["score"]), _fmt(h["alpha"])] for h in top]
                parts.append(
                    _table(
                        ["layer", "head", "score", "α"],
                        rows,
                        f"{r.name}: top {F.ROLE_LABELS[role]} heads, {F.TYPE_LABELS[t]}",
                    )
                )
    return "roles", "Head roles", parts


def _maps_section(results: list[AnalysisResult], figs: _Figures, map_layers: Sequence[int] | None) -> Section:
    """One attention grid per model × kept sentence × attention type × layer in ``map_layers`` (all if None)."""
    parts = [
        "<p class='note'>All heads of a layer for one sentence; rows are queries, columns keys. Exactly zero "
        "weights are white, distinct from small non-zero weights (dark).</p>"
    ]
    for k, r in enumerate(results):
        for amap in r.maps:
            for t, layers in amap.attention.items():
                for li in range(len(layers)):
                    if map_layers is not None and li not in map_layers:
                        continue
                    e = figs.add(
                        F.attention_grid(amap, t, li, r.name),
                        f"attention_m{k}_s{amap.index}_{t}_l{li}",
                        f"{r.name}: sentence {amap.index}, {F.TYPE_LABELS[t]}, layer {li}",
                        "Attention weights of every head; white = exactly zero.",
                    )
                    parts.append(_fig(e))
    if len(parts) == 1:
        parts.append("<p class='note'>No attention maps were kept.</p>")
    return "maps", "Attention maps", parts


def _write_metrics(path: Path, title: str, results: list[AnalysisResult], entries: list[FigureEntry]) -> None:
    metrics = {
        "title": title,
        "models": [r.to_dict() for r in results],
        "figures": [{"id": e.id, "file": e.file, "title": e.title} for e in entries],
    }
    path.write_text(json.dumps(metrics, ensure_ascii=False, allow_nan=False), encoding="utf-8")


def _page(title: str, results: list[AnalysisResult], sections: list[Section]) -> str:
    """The HTML page: title, the models, a navigation bar and the sections."""
    models = ", ".join(f"{_esc(r.name)} ({r.num_sentences} sentences)" for r in results)
    nav = "".join(f"<a href='#{a}'>{_esc(h)}</a>" for a, h, _ in sections)
    body = "".join(f"<h2 id='{a}'>{_esc(h)}</h2>\n" + "\n".join(p) for a, h, p in sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1><p>Models: {models}. Every number on this page is also in "
        f"<code>metrics.json</code> next to it.</p><nav>{nav}</nav>{body}</body></html>\n"
    )


# -------------------------------------------------------------------------------------------------------- report
def write_report(
    results: AnalysisResult | Sequence[AnalysisResult],
    out_dir: str | Path,
    *,
    title: str = "adasparse: attention analysis",
    map_layers: Sequence[int] | None = None,
    dpi: int = 100,
) -> Report:
    """Write ``report.html``, ``metrics.json`` and the figure PNGs into ``out_dir``.

    Args:
        results: one :class:`AnalysisResult` or several (compared side by side; names must be distinct).
        out_dir: created if missing; an earlier report there is replaced as a whole (its figures that this one
            does not draw are deleted; other files are left alone), once this one is complete.
        title: page title.
        map_layers: layers drawn in the attention-map grids (default: all layers).
        dpi: resolution of the figures.

    Returns:
        a :class:`Report` with the paths, the figures (with the arrays they draw) and :func:`summary_text`.
    """
    results = _as_list(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # everything is drawn into a hidden folder first and moved into place at the end (figures, then metrics.json,
    # then report.html): an error or Ctrl-C while drawing leaves the earlier report as it was
    stage = Path(tempfile.mkdtemp(prefix=".report-tmp-", dir=out))
    try:
        figs = _Figures(stage, dpi)
        side = " Models are drawn side by side in different colours." if len(results) > 1 else ""
        sections = [
            _summary_section(results),
            _alpha_section(results, figs, side),
            _density_section(results, figs, side),
            _js_section(results, figs, side),
            _roles_section(results, figs),
            _maps_section(results, figs, map_layers),
        ]
        summary = summary_text(results)
        _write_metrics(stage / "metrics.json", title, results, figs.entries)
        (stage / "report.html").write_text(_page(title, results, sections), encoding="utf-8")
        earlier = _listed_figures(out / "metrics.json")
        for e in figs.entries:
            os.replace(stage / e.file, out / e.file)
        for name in earlier - {e.file for e in figs.entries}:  # the earlier report's figures this one lacks
            (out / name).unlink(missing_ok=True)
        os.replace(stage / "metrics.json", out / "metrics.json")
        os.replace(stage / "report.html", out / "report.html")
        fsync_dir(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return Report(out / "report.html", out / "metrics.json", figs.entries, summary)


def _listed_figures(metrics_path: Path) -> set[str]:
    """The PNG files an earlier report in the folder listed in its ``metrics.json`` (plain names only)."""
    try:
        figures = json.loads(metrics_path.read_text(encoding="utf-8")).get("figures", [])
        names = {f["file"] for f in figures if isinstance(f, dict) and isinstance(f.get("file"), str)}
    except (OSError, ValueError, AttributeError):
        return set()
    return {n for n in names if n.endswith(".png") and Path(n).name == n and not n.startswith(".")}


def _fig(e: FigureEntry) -> str:
    b64 = base64.b64encode(e.png).decode("ascii")
    return (
        f"<figure id='{_esc(e.id)}'><img alt='{_esc(e.title)}' src='data:image/png;base64,{b64}'>"
        f"<figcaption><b>{_esc(e.title)}.</b> {_esc(e.caption)}</figcaption></figure>"
    )
