"""Analysis of attention heads: statistics (α, density, JS diversity, head roles), figures and the HTML report.

Typical use, with teacher-forced batches from a model::

    from adasparse.analysis import AttentionBatch, analyze_attention, write_report

    result = analyze_attention(batches, name="learned α", alpha=alpha_per_head, alpha_log="train.jsonl")
    write_report([result], "out/")   # out/report.html, out/metrics.json, out/*.png

Definitions and input formats: :mod:`adasparse.analysis.stats`.
"""

from .stats import (
    ATTENTION_TYPES,
    AlphaTrajectory,
    AnalysisResult,
    AttentionBatch,
    AttentionMap,
    AttentionStats,
    TypeStats,
    analyze_attention,
    head_density,
    head_density_pooled,
    interrogation_score,
    js_divergence,
    layer_js,
    merge_score,
    prev_next_confidence,
    read_alpha_log,
    top_heads,
)

_REPORT_NAMES = ("Report", "summary_text", "write_report")  # imported lazily: they pull in matplotlib

__all__ = [
    "ATTENTION_TYPES",
    "Report",
    "summary_text",
    "write_report",
    "AlphaTrajectory",
    "AnalysisResult",
    "AttentionBatch",
    "AttentionMap",
    "AttentionStats",
    "TypeStats",
    "analyze_attention",
    "head_density",
    "head_density_pooled",
    "interrogation_score",
    "js_divergence",
    "layer_js",
    "merge_score",
    "prev_next_confidence",
    "read_alpha_log",
    "top_heads",
]


def __getattr__(name: str):
    if name in _REPORT_NAMES:
        from . import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
