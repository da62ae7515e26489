"""``adasparse analyze --text`` on language-model runs: the report's numbers against a direct computation from
``model.attention_maps`` (one sentence at a time, no padding, the causal mask written out), and the errors for a
checkpoint given the other kind's data."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from adasparse.analysis.cli import analyze_lm_checkpoints, read_text
from adasparse.cli import main as cli_main
from adasparse.data.text import lm_tokenizer
from adasparse.train.config import TrainConfig
from adasparse.train.loading import load_model
from adasparse.train.trainer import train

from ..train.test_trainer import _toy_config, _toy_corpus

TEXT = Path(__file__).parents[1] / "data" / "tiny_text"
N_LINES = 12  # analysis lines: three batches of 5, 5 and 2 (padding in every batch)
SOFTMAX_WINDOW = 8  # the softmax LM's max_len: some analysis lines are longer and get cut


def _lm(out: Path, **kw) -> Path:
    base = dict(
        task="lm", data_dir=str(TEXT), preset="tiny", batch_tokens=512, max_steps=30, valid_every=30,
        valid_max_sentences=8, log_every=5, seed=2, num_threads=1,
    )  # fmt: skip
    base.update(kw)
    train(TrainConfig(**base), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A learned-α LM with BPE pieces (words of several pieces: merge scores), a softmax LM with a short
    window, and a tiny translation run (the kind errors)."""
    root = tmp_path_factory.mktemp("lm_runs")
    learned = _lm(root / "learned", tokenizer="bpe", vocab_size=120, attention="learned", alpha_lr_scale=20.0)
    softmax = _lm(root / "softmax", tokenizer="whitespace", attention="softmax", model={"max_len": SOFTMAX_WINDOW})
    mt_data = _toy_corpus(root / "mt_data", n_train=40, n_valid=4)
    train(_toy_config(mt_data, max_steps=2, valid_every=2), root / "mt", quiet=True)
    return {"learned": learned, "softmax": softmax, "mt": root / "mt", "mt_data": mt_data}


@pytest.fixture(scope="module")
def analysis(runs, tmp_path_factory):
    """One report of both LMs: maps of sentences 0 and 3, layers 0 and 2."""
    lines = read_text(TEXT / "valid.txt", N_LINES)
    out = tmp_path_factory.mktemp("lm_report")
    report = analyze_lm_checkpoints(
        [runs["learned"], runs["softmax"]], lines, out, sentences=[0, 3], map_layers=[0, 2], batch_size=5,
        names=["learned", "softmax"],
    )  # fmt: skip
    metrics = json.loads(report.metrics_path.read_text())
    models = {m["name"]: m for m in metrics["models"]}
    figures = {f.id: f for f in report.figures}
    return lines, report, models, figures


def _direct(run: Path, lines: list[str]) -> dict:
    """Density, JS, previous-token and merge scores of a LM's causal self-attention, one sentence at a time.

    Query i of a sequence of T inputs may attend to keys 0..i; every query of every sentence counts once."""
    model, toks, _ = load_model(run)
    tok = lm_tokenizer(toks)
    window = model.config.max_len
    L, H = model.config.n_layers, model.config.n_heads
    ratio, js, prev, merge = np.zeros((L, H)), np.zeros(L), np.zeros((L, H)), np.zeros((L, H))
    n_q = n_prev = n_merge = 0
    maps = []
    for line in lines:
        ids = tok.encode(line, add_bos=True, add_eos=True)[:-1][:window]  # the model's inputs
        words = tok.word_ids(line, add_bos=True, add_eos=False)[: len(ids)]
        with torch.no_grad():
            att = [p[0].double().numpy() for p in model.attention_maps(torch.tensor([ids]))["self"]]  # (H, T, T)
        maps.append(att)
        T = len(ids)
        for i in range(T):
            n_q += 1
            n_prev += i >= 1
            others = [j for j in range(i) if words[j] >= 0 and words[j] == words[i]]
            n_merge += bool(others)
            for li, p in enumerate(att):
                row = p[:, i, : i + 1]  # (H, i + 1): the attendable keys
                ratio[li] += (row > 0).sum(1) / (i + 1)
                mean = row.mean(0)
                ent = lambda q: -sum(x * math.log(x) for x in q if x > 0)  # noqa: E731
                js[li] += (ent(mean) - np.mean([ent(r) for r in row])) / math.log(H)
                if i >= 1:
                    prev[li] += p[:, i, i - 1]
                if others:
                    merge[li] += p[:, i, others].sum(1)
    return {
        "model": model, "tok": tok, "maps": maps, "density": ratio / n_q, "js": js / n_q, "prev": prev / n_prev,
        "merge": merge / n_merge if n_merge else None, "merge_tokens": n_merge, "num_queries": n_q,
    }  # fmt: skip


def test_softmax_lm_is_dense_everywhere(runs, analysis):
    lines, _, models, figures = analysis
    ts = models["softmax"]["types"]
    assert list(ts) == ["self"]  # a language model has one attention type
    s = ts["self"]
    assert np.array(s["density"]).shape == (4, 2) and np.all(np.array(s["density"]) == 1.0)
    assert np.all(np.array(s["density_pooled"]) == 1.0)
    assert np.all(np.array(s["alpha"]) == 1.0)
    assert s["next"] is None and s["interrogation"] is None  # causal: no next token, no final '?' to look at
    # the window: lines longer than 8 inputs are cut to it, and every query counts once
    d = _direct(runs["softmax"], lines)
    assert s["num_queries"] == d["num_queries"] < sum(len(line.split()) + 1 for line in lines)
    np.testing.assert_allclose(s["js"], d["js"], atol=1e-6)
    assert figures["density_sorted"].data["self"]["softmax"].tolist() == [[1.0, 1.0]] * 4


def test_learned_lm_statistics_equal_a_direct_computation(runs, analysis):
    lines, _, models, figures = analysis
    d = _direct(runs["learned"], lines)
    s = models["learned"]["types"]["self"]
    density = np.array(s["density"])
    assert density.min() < 0.99  # entmax heads: exact zeros among the attendable keys
    np.testing.assert_allclose(density, d["density"], rtol=0, atol=1e-12)
    assert s["num_queries"] == d["num_queries"]
    np.testing.assert_allclose(s["js"], d["js"], atol=1e-6)
    np.testing.assert_allclose(s["prev"], d["prev"], atol=1e-6)
    assert d["merge_tokens"] > 0 and s["merge_tokens"] == d["merge_tokens"]
    np.testing.assert_allclose(s["merge"], d["merge"], atol=1e-6)
    assert s["next"] is None and s["interrogation"] is None
    # the figures draw these numbers
    np.testing.assert_allclose(
        figures["density_sorted"].data["self"]["learned"], -np.sort(-d["density"], 1), atol=1e-12
    )
    np.testing.assert_allclose(figures["js_per_layer"].data["self"]["learned"], d["js"], atol=1e-6)
    np.testing.assert_allclose(figures["roles_m0"].data["self"]["merge"], d["merge"], atol=1e-6)


def test_alpha_and_its_trajectory(runs, analysis):
    _, _, models, figures = analysis
    model, _, ckpt = load_model(runs["learned"])
    alpha = model.alphas()["self"].double().numpy()
    assert models["learned"]["types"]["self"]["alpha"] == alpha.tolist()
    hist = figures["alpha_histogram"].data["self"]
    assert hist["learned"]["alpha"].tolist() == alpha.ravel().tolist()
    assert hist["learned"]["counts"].sum() == 8 and hist["softmax"]["counts"][0] == 8  # α = 1: the first bin
    # the trajectory is the log's α records, in order; softmax's α never moves, so it has no trajectory figure
    records = [json.loads(x) for x in (runs["learned"] / "log.jsonl").read_text().splitlines()]
    records = [r for r in records if "alpha" in r]
    traj = models["learned"]["alpha_trajectory"]
    assert traj["steps"] == [r["step"] for r in records] and len(records) > 3
    assert traj["alpha"]["self"] == [r["alpha"]["self"] for r in records]
    assert np.ptp(np.array(traj["alpha"]["self"]), 0).max() > 0.01  # α moved during training
    assert "alpha_trajectories_m0" in figures and "alpha_trajectories_m1" not in figures


def test_attention_maps_are_causal_and_the_models(runs, analysis):
    lines, report, models, figures = analysis
    d = _direct(runs["learned"], lines)
    kept = models["learned"]["attention_maps"]
    assert [m["index"] for m in kept] == [0, 3]
    for m in kept:
        line = lines[m["index"]]
        assert m["src_tokens"] is None and m["tgt_tokens"] == ["<s>"] + d["tok"].tokenize(line)
        assert list(m["attention"]) == ["self"] and len(m["attention"]["self"]) == 4
        for li, w in enumerate(m["attention"]["self"]):
            w = np.array(w)  # (H, T, T)
            expect = d["maps"][m["index"]][li]
            np.testing.assert_allclose(w, expect, rtol=1e-6, atol=1e-9)
            above = np.triu_indices(w.shape[1], 1)  # keys after the query
            assert np.all(w[:, above[0], above[1]] == 0)
            np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    # the softmax LM's maps keep the cut line's first 8 tokens
    soft = {m["index"]: m for m in models["softmax"]["attention_maps"]}
    for i, m in soft.items():
        assert m["tgt_tokens"] == (["<s>"] + lines[i].split())[:SOFTMAX_WINDOW]
    maps = sorted(f for f in figures if f.startswith("attention_"))
    assert maps == sorted(f"attention_m{k}_s{s}_self_l{li}" for k in (0, 1) for s in (0, 3) for li in (0, 2))
    page = report.html_path.read_text()
    assert "causal self-attention" in page and "learned: sentence 3, causal self-attention, layer 2" in page
    drawn, written = figures["attention_m0_s3_self_l2"].data["weights"], np.array(kept[1]["attention"]["self"][2])
    np.testing.assert_allclose(drawn, written, rtol=1e-6, atol=0)  # metrics.json: 7 significant digits
    assert np.array_equal(drawn == 0, written == 0) and (drawn == 0).any()


def test_cli_on_a_language_model(runs, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="adasparse"):
        rc = cli_main(["analyze", str(runs["softmax"]), "--text", str(TEXT / "valid.txt"), "--max-sentences", "4",
                       "--sentence", "1", "--map-layers", "0", "--out", str(out)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "[softmax] 4 sentences" in printed and f"report: {out / 'report.html'}" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip().startswith("self ")]
    assert [r[1] for r in rows] == ["0", "1", "2", "3"] and all(r[2:4] == ["1.000", "1.000"] for r in rows)
    longer = sum(len(line.split()) + 1 > SOFTMAX_WINDOW for line in read_text(TEXT / "valid.txt", 4))
    assert longer and f"{longer} of 4 analysis lines are longer than its window of 8 tokens" in caplog.text
    assert json.loads((out / "metrics.json").read_text())["models"][0]["attention_maps"][0]["index"] == 1


def test_the_wrong_kind_of_data_is_a_clear_error(runs, tmp_path, capsys):
    text = str(TEXT / "valid.txt")
    src, tgt = str(runs["mt_data"] / "valid.in"), str(runs["mt_data"] / "valid.out")
    lm, mt, out = str(runs["softmax"]), str(runs["mt"]), str(tmp_path / "out")

    def error(*args: str) -> str:
        assert cli_main(["analyze", *args, "--out", out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        return err

    assert error(lm, "--data", src, tgt) == (
        f"adasparse: error: --data: {lm} is a language model (decoder-only); give its data with --text FILE "
        "instead of --data SRC TGT"
    )
    assert error(mt, "--text", text) == (
        f"adasparse: error: --text: {mt} is a translation model (encoder–decoder); give its data with --data SRC "
        "TGT instead of --text FILE"
    )
    for option in (["--text", text], ["--data", src, tgt]):
        err = error(mt, lm, *option)
        assert err.startswith(f"adasparse: error: {option[0]}: ") and "a report compares models of one kind" in err
        assert f"{lm} is a language model" in err and f"{mt} is a translation model" in err
    assert not (tmp_path / "out").exists()
    for both_or_none in (["--data", src, tgt, "--text", text], []):
        with pytest.raises(SystemExit) as e:
            cli_main(["analyze", lm, *both_or_none, "--out", out])
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --text: not allowed with argument --data" in err
    assert "one of the arguments --data --text is required" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert error(lm, "--text", str(empty)) == f"adasparse: error: --text: no lines in {empty}"
