"""The report: files, metrics.json against the figures' data, self-containedness, headless rendering."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import matplotlib.image as mpimg
import numpy as np
import pytest

from adasparse.analysis import figures as F
from adasparse.analysis.report import summary_text, write_report


@pytest.fixture(scope="module")
def report(three_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rep = write_report(three_models, out, map_layers=[1], dpi=60)
    metrics = json.loads(rep.metrics_path.read_text())
    return rep, metrics, three_models


def _model(metrics, name):
    (m,) = [m for m in metrics["models"] if m["name"] == name]
    return m


def _arr(x):
    return np.array([[np.nan if v is None else v for v in row] for row in x], dtype=float)


def test_files_written(report):
    rep, metrics, results = report
    assert rep.html_path.name == "report.html" and rep.html_path.is_file()
    assert [m["name"] for m in metrics["models"]] == ["softmax", "1.5-entmax", "learned α"]
    for f in metrics["figures"]:
        png = (rep.html_path.parent / f["file"]).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    ids = {f["id"] for f in metrics["figures"]}
    assert {"alpha_histogram", "density_sorted", "density_vs_length", "js_per_layer"} <= ids
    assert "alpha_trajectories_m2" in ids and "alpha_trajectories_m0" not in ids  # only the model with a log
    # one grid per model × kept sentence × type, for the requested layer only
    maps = [i for i in ids if i.startswith("attention_")]
    assert len(maps) == 3 * 1 * 3 and all(i.endswith("_l1") for i in maps)


def test_metrics_agree_with_figure_data(report):
    rep, metrics, results = report
    figs = {e.id: e.data for e in rep.figures}
    for r in results:
        m = _model(metrics, r.name)
        for t, ts in m["types"].items():
            np.testing.assert_allclose(figs["js_per_layer"][t][r.name], np.array(ts["js"], dtype=float))
            np.testing.assert_allclose(figs["density_sorted"][t][r.name], -np.sort(-_arr(ts["density"]), axis=1))
            dvl = figs["density_vs_length"][t][r.name]
            assert dvl["length"].tolist() == ts["lengths"]
            np.testing.assert_allclose(dvl["density"], np.array(ts["density_by_length"]).mean((1, 2)))
            if ts["alpha"] is not None:
                np.testing.assert_allclose(figs["alpha_histogram"][t][r.name]["alpha"], _arr(ts["alpha"]).ravel())
            else:
                assert r.name not in figs["alpha_histogram"].get(t, {})
        k = [x.name for x in results].index(r.name)
        for t, roles in figs[f"roles_m{k}"].items():
            for role, score in roles.items():
                np.testing.assert_allclose(score, _arr(m["types"][t][role]))
        for mp in m["attention_maps"]:
            for t in mp["attention"]:
                w = figs[f"attention_m{k}_s{mp['index']}_{t}_l1"]["weights"]
                stored = np.array(mp["attention"][t][1])
                np.testing.assert_allclose(w, stored, rtol=1e-6, atol=0)
                np.testing.assert_array_equal(w == 0, stored == 0)  # exact zeros stay exact, tiny weights non-zero
    traj = _model(metrics, "learned α")["alpha_trajectory"]
    np.testing.assert_allclose(figs["alpha_trajectories_m2"]["steps"], traj["steps"])
    np.testing.assert_allclose(figs["alpha_trajectories_m2"]["enc_self"], traj["alpha"]["enc_self"])


def test_figures_draw_the_metrics(report):
    """What matplotlib actually draws (bar heights, line data) equals the numbers in metrics.json."""
    rep, metrics, results = report
    plot = F.js_per_layer(results)
    for ax, t in zip(plot.figure.axes, [t for t in ("enc_self", "context", "dec_self")]):
        heights = np.array([p.get_height() for p in ax.patches]).reshape(len(results), -1)
        for k, r in enumerate(results):
            np.testing.assert_allclose(heights[k], _model(metrics, r.name)["types"][t]["js"])
    plot = F.sorted_density(results)
    ax = plot.figure.axes[0]  # enc_self, layer 0: one line per model
    for line, r in zip(ax.get_lines(), results):
        want = -np.sort(-_arr(_model(metrics, r.name)["types"]["enc_self"]["density"])[0])
        np.testing.assert_allclose(line.get_ydata(), want)
    plot = F.alpha_histogram(results)
    ax = plot.figure.axes[0]
    alpha_models = [r for r in results if r.types["enc_self"].alpha is not None]
    counts = np.array([p.get_height() for p in ax.patches]).reshape(len(alpha_models), -1)
    for k, r in enumerate(alpha_models):
        a = _arr(_model(metrics, r.name)["types"]["enc_self"]["alpha"]).ravel()
        np.testing.assert_array_equal(counts[k], np.histogram(a, bins=F.ALPHA_BINS)[0])
    for p in (plot, F.js_per_layer(results), F.sorted_density(results)):
        F.to_png(p.figure)


def test_attention_grid_shows_exact_zeros_distinctly(three_models):
    amap = three_models[2].maps[0]
    w = amap.attention["enc_self"][0]
    assert (w == 0).any() and (w > 0).any()
    plot = F.attention_grid(amap, "enc_self", 0)
    images = [ax.images[0] for ax in plot.figure.axes if ax.images]
    assert len(images) == w.shape[0]
    for h, im in enumerate(images):
        arr = im.get_array()
        np.testing.assert_array_equal(np.ma.getmaskarray(arr), w[h] == 0)
        cmap = im.get_cmap()
        bad = cmap(np.ma.masked_array([0.0], mask=[True]))[0]
        assert np.abs(np.array(bad) - np.array(cmap(0.0))).max() > 0.5  # zero colour far from the smallest weight
    F.to_png(plot.figure)


def test_html_is_self_contained(report):
    rep, metrics, _ = report
    page = rep.html_path.read_text()
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page and "url(" not in page
    srcs = re.findall(r"src\s*=\s*['\"]([^'\"]*)", page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert len(srcs) == len(metrics["figures"])
    for s in srcs[:3]:
        assert base64.b64decode(s.split(",", 1)[1])[:4] == b"\x89PNG"
    hrefs = re.findall(r"href\s*=\s*['\"]([^'\"]*)", page)
    assert all(h.startswith("#") for h in hrefs)
    # the numbers of the summary table are on the page
    js0 = _model(metrics, "learned α")["types"]["enc_self"]["js"][0]
    assert f"{js0:.3f}" in page


def test_summary_text(report):
    rep, metrics, results = report
    assert rep.summary == summary_text(results)
    lines = rep.summary.splitlines()
    for r in results:
        assert f"[{r.name}]" in rep.summary
    row = [ln for ln in lines if ln.split()[:2] == ["dec_self", "1"]][-1]  # learned α, last model
    ts = results[2].types["dec_self"]
    assert row.split()[2:] == [f"{ts.alpha[1].mean():.3f}", f"{ts.density[1].mean():.3f}", f"{ts.js[1]:.3f}"]


def test_single_model_and_name_checks(three_models, tmp_path):
    rep = write_report(three_models[0], tmp_path, map_layers=[])
    metrics = json.loads(rep.metrics_path.read_text())
    assert len(metrics["models"]) == 1 and "alpha_histogram" not in {f["id"] for f in metrics["figures"]}
    with pytest.raises(ValueError, match="distinct"):
        write_report([three_models[0], three_models[0]], tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        write_report([], tmp_path)


def test_report_renders_in_headless_chromium(report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian package `chromium`): report.html was not rendered")
    rep, _, _ = report
    png = tmp_path / "shot.png"
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,3000",
        rep.html_path.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = mpimg.imread(png)[..., :3]  # (H, W, 3) in [0, 1]
    assert img.shape[:2] == (3000, 1200)
    non_white = (img < 0.9).any(-1).mean()
    assert non_white > 0.02, f"screenshot is nearly blank ({non_white:.2%} non-white pixels)"
    assert img.std() > 0.05


def test_decoder_only_model_report(tmp_path):
    import torch

    from adasparse import entmax
    from adasparse.analysis import AttentionBatch, analyze_attention
    from adasparse.analysis import write_report as lazy_write_report

    T, H = 5, 2
    mask = torch.arange(T)[None] < torch.tensor([[3], [5]])  # (B, T)
    z = torch.randn(2, H, T, T, generator=torch.Generator().manual_seed(0))
    z = z.masked_fill(~(mask[:, None, None] & torch.ones(T, T, dtype=torch.bool).tril()), float("-inf"))
    p = entmax(z, 1.5, -1)
    tokens = [["x", "y", "?", "", ""], list("abcde")]
    r = analyze_attention(
        [AttentionBatch({"self": [p]}, tgt_mask=mask, tgt_tokens=tokens, tgt_word_ids=[[0, 0, 1], [0, 1, 1, 2, 2]])],
        alpha={"self": 1.5},
        keep_sentences=[0],
    )
    ts = r.types["self"]
    assert ts.next is None and ts.interrogation is None and ts.merge is not None
    rep = lazy_write_report(r, tmp_path)
    metrics = json.loads(rep.metrics_path.read_text())
    assert list(metrics["models"][0]["types"]) == ["self"]
    assert metrics["models"][0]["attention_maps"][0]["tgt_tokens"] == ["x", "y", "?"]
    assert "attention_m0_s0_self_l0" in {f["id"] for f in metrics["figures"]}


def test_alpha_trajectories_only_for_models_whose_alpha_moved():
    from types import SimpleNamespace

    steps = np.array([0, 50, 100])
    fixed = SimpleNamespace(
        name="softmax", alpha_trajectory=SimpleNamespace(steps=steps, alpha={"enc_self": np.ones((3, 2, 4))})
    )
    assert F.alpha_trajectories(fixed) is None  # a fixed normalizer: flat lines would say nothing
    moving = np.ones((3, 2, 4))
    moving[2, 1, 3] = 1.4
    learned = SimpleNamespace(
        name="learned α", alpha_trajectory=SimpleNamespace(steps=steps, alpha={"enc_self": moving})
    )
    plot = F.alpha_trajectories(learned)
    assert plot is not None and np.array_equal(plot.data["enc_self"], moving)


def test_a_report_replaces_the_earlier_one_whole_and_an_interrupted_one_changes_nothing(
    three_models, tmp_path, monkeypatch
):
    """A second report into the same folder: its figures, metrics.json and report.html, none of the earlier
    report's figures it does not draw, the user's own files untouched; interrupted while drawing, the folder
    keeps the earlier report byte for byte and no temporary folder."""
    first = write_report(three_models, tmp_path, map_layers=[1], dpi=40)
    (tmp_path / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(F, "to_png", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_report(three_models[0], tmp_path, map_layers=[], dpi=40)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    second = write_report(three_models[0], tmp_path, map_layers=[], dpi=40)
    listed = {f["file"] for f in json.loads(second.metrics_path.read_text())["figures"]}
    assert len(listed) < len(first.figures)
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert pngs == listed  # the earlier report's other figures are gone
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
