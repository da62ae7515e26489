"""`adasparse bench length --quick`: runs, prints a row per model as it goes, writes a valid JSON and a figure.
No accuracy is asserted (a benchmark is not a test); the settings that make the comparison fair are."""

import json

import pytest
import torch

from adasparse.bench import length as bench
from adasparse.cli import main as cli_main


def test_quick_run_writes_table_json_and_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    argv = ["--quick", "--threads", "1", "--out", str(tmp_path), "--variants", "softmax", "learned+scaling"]
    assert cli_main(["bench", "length", *argv]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if not ln.startswith("#")]
    header, rows = lines[0], lines[1:]
    assert header.split()[:3] == ["task", "pos", "variant"] and header.split()[3:6] == ["32", "64", "128"]
    assert len(rows) == 3 * 2 * 2  # tasks x positions x variants
    data = json.loads((tmp_path / "length_generalisation.json").read_text())
    assert (tmp_path / "length_generalisation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta, results = data["meta"], data["results"]
    assert meta["settings"]["eval_lengths"] == [32, 64, 128] and meta["wall_seconds"] > 0
    assert [tuple(r) for r in meta["runs"]] == [(r["task"], r["positions"], r["variant"]) for r in results]
    for r, row in zip(results, rows):
        assert row.split()[:3] == [r["task"], r["positions"], r["variant"]]
        assert set(r["eval"]) == {"32", "64", "128"}
        for e in r["eval"].values():
            assert 0.0 <= e["accuracy"] <= 1.0 and e["answers"] > 0 and e["sequences"] >= 2
            expected = e["sequence_accuracy"] if r["unit"] == "sequence" else e["answer_accuracy"]
            assert e["accuracy"] == expected
        assert r["train"]["steps"] == 4 and len(r["alphas"]) == 1
        if r["variant"] == "learned+scaling":
            assert set(r["length_scales"]) == {"delta", "beta"}
        else:
            assert r["length_scales"] == {} and r["alphas"] == [[1.0, 1.0]]


def test_resume_keeps_finished_rows_and_runs_the_rest(tmp_path, capsys):
    base = [
        "--quick",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
        "--tasks",
        "copy",
        "--positions",
        "rope",
        "--no-figure",
    ]
    assert bench.main([*base, "--variants", "softmax"]) == 0
    first = json.loads((tmp_path / "length_generalisation.json").read_text())["results"]
    capsys.readouterr()
    assert bench.main([*base, "--variants", "softmax", "entmax15", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "# --resume: 1 rows kept" in out and "1 to run" in out
    data = json.loads((tmp_path / "length_generalisation.json").read_text())
    assert [r["variant"] for r in data["results"]] == ["softmax", "entmax15"]
    assert data["results"][0] == first[0]  # kept as it was, not trained again
    assert data["meta"]["cpu_seconds"] > 0 and "min on two idle cores" in out
    # other settings: refused, the file untouched
    assert bench.main([*base, "--variants", "softmax", "--steps", "3", "--resume"]) == 2
    assert "written with other settings" in capsys.readouterr().err
    assert json.loads((tmp_path / "length_generalisation.json").read_text()) == data
    # without --resume an existing results file is refused, not replaced
    assert bench.main([*base, "--variants", "learned"]) == 2
    assert "already holds results: --resume keeps them" in capsys.readouterr().err
    assert json.loads((tmp_path / "length_generalisation.json").read_text()) == data
    # another selection with --resume adds its rows and keeps every earlier one
    assert bench.main([*base, "--variants", "learned", "--resume"]) == 0
    assert "# --resume: 2 rows kept" in capsys.readouterr().out
    more = json.loads((tmp_path / "length_generalisation.json").read_text())
    assert [r["variant"] for r in more["results"]] == ["softmax", "entmax15", "learned"]
    assert more["results"][:2] == data["results"]
    assert [r[2] for r in more["meta"]["runs"]] == ["softmax", "entmax15", "learned"]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_variants_share_initial_weights_batches_and_test_sequences():
    s = bench.QUICK
    task = bench.build_task("mqar", s)
    ref = bench.make_model(task, "softmax", "rope", s).state_dict()
    for v in bench.VARIANTS:
        sd = bench.make_model(task, v, "rope", s).state_dict()
        for k, t in ref.items():
            assert torch.equal(sd[k], t), (v, k)
    normalizer, scaling = bench.VARIANTS["learned+scaling"]
    cfg = bench.model_config(task, "learned+scaling", "none", s)
    assert (cfg.self_attn, cfg.length_scaling, cfg.positions) == (normalizer, scaling, "none")
    # evaluation data depends on the length and seed only
    a = bench.evaluate(bench.make_model(task, "softmax", "rope", s), task, s)
    b = bench.evaluate(bench.make_model(task, "softmax", "rope", s), task, s)
    assert {k: v["accuracy"] for k, v in a.items()} == {k: v["accuracy"] for k, v in b.items()}


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--steps", "0"], "--steps must be positive"),
        (["--train-lengths", "64", "32"], "--train-lengths"),
        (["--eval-lengths", "2"], "--eval-lengths"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_bad_arguments_are_clear_errors(argv, match, capsys, tmp_path):
    assert bench.main(["--quick", "--out", str(tmp_path), *argv]) == 2
    assert match in capsys.readouterr().err
