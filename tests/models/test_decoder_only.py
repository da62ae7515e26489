"""Decoder-only model with RoPE / NoPE and length scaling: decode_step equals forward, the plain model at
δ = 1, β = 0, old configs and checkpoints, lengths beyond max_len, gradients reaching δ, β and α."""

import json

import pytest
import torch

from adasparse.models import DecoderOnlyConfig, DecoderOnlyTransformer, summary, tiny_lm
from adasparse.nn.length_scaling import LengthScaling

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny shapes


def _model(norm="learned", **kw):
    torch.manual_seed(0)
    return DecoderOnlyTransformer(tiny_lm(norm, **kw)).eval()


def _perturb_scaling(model, seed=1):
    """Move δ, β (or σ) away from their initial values so that the scaling changes the attention."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, LengthScaling):
                for p in mod.parameters():
                    p.add_(0.5 * torch.randn(p.shape, generator=g))


def _tokens(b=3, n=11, seed=0):
    return torch.randint(3, 64, (b, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("positions", ["sinusoidal", "rope", "none"])
@pytest.mark.parametrize("scaling", ["none", "learned", "ssmax"])
@pytest.mark.parametrize("norm", ["softmax", "entmax15", "learned"])
def test_decode_step_equals_forward(positions, scaling, norm):
    """Token by token and in chunks: RoPE offsets by the cache length, n counts the cached keys too."""
    model = _model(norm, positions=positions, length_scaling=scaling)
    _perturb_scaling(model)
    x = _tokens()
    with torch.no_grad():
        full = model(x)  # (B, T, V)
        cache, steps = None, []
        for t in range(x.shape[1]):
            logits, cache = model.decode_step(x[:, t : t + 1], cache)
            steps.append(logits)
        torch.testing.assert_close(torch.stack(steps, 1), full, atol=2e-5, rtol=1e-4)
        cache = None
        for a, b in [(0, 4), (4, 5), (5, 11)]:  # a prompt, then one token, then a chunk
            logits, cache = model.decode_step(x[:, a:b], cache)
            torch.testing.assert_close(logits, full[:, b - 1], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("positions", ["sinusoidal", "rope", "none"])
@pytest.mark.parametrize("norm", ["softmax", "entmax15", "learned"])
def test_learned_scaling_at_initialisation_is_the_plain_model_exactly(positions, norm):
    plain = _model(norm, positions=positions)
    scaled = _model(norm, positions=positions, length_scaling="learned")
    missing, unexpected = scaled.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all("qk_transform.scaling" in k for k in missing)
    x = _tokens()
    pad = torch.ones_like(x, dtype=torch.bool)
    pad[0, 7:] = False
    with torch.no_grad():
        assert torch.equal(scaled(x), plain(x))
        assert torch.equal(scaled(x, pad), plain(x, pad))


def test_positions_change_the_model_and_nope_has_no_position_information_but_causality():
    x = _tokens(1, 9)
    with torch.no_grad():
        sin, rope, nope = (_model("softmax", positions=p)(x) for p in ("sinusoidal", "rope", "none"))
    assert not torch.allclose(sin, rope) and not torch.allclose(rope, nope)
    # NoPE: the first position sees only itself, so its output depends on its token alone
    m = _model("softmax", positions="none")
    y = x.clone()
    y[0, 0] = x[0, 0]
    y[0, 1:] = torch.randint(3, 64, (8,), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(m(x)[:, 0], m(y)[:, 0])


def test_rope_and_nope_run_beyond_max_len_sinusoidal_does_not():
    x = _tokens(1, 40)
    for positions in ("rope", "none"):
        model = _model("entmax15", positions=positions, max_len=16, length_scaling="learned")
        with torch.no_grad():
            assert model(x).shape == (1, 40, 64)
    with pytest.raises(ValueError, match="exceed max_len=16"):
        _model("entmax15", max_len=16)(x)


def test_padding_counts_only_real_keys():
    """Right padding: the real positions of a padded row equal the same row unpadded (n excludes pads)."""
    model = _model("learned", positions="rope", length_scaling="learned")
    _perturb_scaling(model)
    x = _tokens(2, 9)
    short = x[:1, :6]
    padded = x[:1].clone()
    padded[0, 6:] = 0  # pad_id
    with torch.no_grad():
        torch.testing.assert_close(model(padded)[:, :6], model(short), atol=1e-5, rtol=1e-5)


def test_gradients_reach_delta_beta_sigma_and_alpha():
    for scaling, names in (("learned", ("delta", "beta")), ("ssmax", ("sigma",))):
        model = _model("learned", positions="rope", length_scaling=scaling).train()
        x = _tokens()
        loss, _ = model.loss(model(x[:, :-1]), x[:, 1:])
        loss.backward()
        for layer in model.decoder.layers:
            sc = layer.self_attn.qk_transform.scaling
            for n in names:
                g = getattr(sc, n).grad
                assert g is not None and torch.isfinite(g).all() and (g != 0).all(), (scaling, n)
            assert (layer.self_attn.alpha_module.theta.grad != 0).all()
        scales = model.length_scales()
        assert set(scales) == set(names) and all(v.shape == (4, 2) for v in scales.values())
    assert _model().length_scales() == {}


def test_old_configs_and_checkpoints_load_unchanged():
    cfg = tiny_lm("learned")
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("positions", "rope_base", "length_scaling")}
    loaded = DecoderOnlyConfig.from_dict(old)
    assert loaded == cfg and loaded.positions == "sinusoidal" and loaded.length_scaling == "none"
    # the default model's state dict has no new keys, and RoPE adds none either (no parameters, no buffers)
    keys = set(_model().state_dict())
    assert not any("qk_transform" in k for k in keys)
    assert set(_model(positions="rope").state_dict()) == keys
    new = tiny_lm("learned", positions="rope", length_scaling="learned", rope_base=500.0)
    assert DecoderOnlyConfig.from_json(new.to_json()) == new
    assert json.loads(new.to_json())["positions"] == "rope"
    line = summary(DecoderOnlyTransformer(new))
    assert "positions=rope" in line and "length_scaling=learned" in line


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"positions": "alibi"}, "positions must be one of"),
        ({"positions": "rope", "d_model": 30, "n_heads": 2}, "even head dim"),
        ({"rope_base": 1.0}, "rope_base"),
        ({"rope_base": "big"}, "rope_base"),
        ({"length_scaling": "fixed"}, "length_scaling must be one of"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny_lm("softmax", **kwargs)


def test_features_project_to_the_logits():
    model = _model("learned", positions="rope", length_scaling="learned")
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(model.output(model.features(x)), model(x))
