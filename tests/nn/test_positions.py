"""RoPE: an independent complex-number reference, Hugging Face Llama's implementation, relative positions,
offsets (incremental decoding) and argument checks."""

import math

import pytest
import torch

from adasparse.nn.positions import RotaryEmbedding, apply_rotary, rotate_half


def _reference_rope(x: torch.Tensor, offset: int, base: float) -> torch.Tensor:
    """Half-split RoPE written as complex multiplication: coordinates (i, i + D/2) form z_i = x_i + j·x_{i+D/2},
    rotated by e^{j·m·θ_i} at position m, θ_i = base^(−2i/D).  Float64 throughout."""
    d = x.shape[-1]
    half = d // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())  # (..., L, D/2)
    m = torch.arange(offset, offset + x.shape[-2], dtype=torch.float64)[:, None]  # (L, 1)
    theta = torch.tensor([base ** (-2 * i / d) for i in range(half)], dtype=torch.float64)  # (D/2,)
    r = z * torch.polar(torch.ones_like(m * theta), m * theta)
    return torch.cat([r.real, r.imag], dim=-1)


@pytest.mark.parametrize("offset", [0, 7])
@pytest.mark.parametrize("base", [10000.0, 500.0])
def test_rope_matches_complex_rotation_reference(offset, base):
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    rope = RotaryEmbedding(8, base)
    got = rope.rotate(x, offset)
    assert got.dtype == torch.float64
    # the angles are computed in float32 (as Llama's): agreement to float32 precision of the angles
    torch.testing.assert_close(got, _reference_rope(x, offset, base), atol=1e-5, rtol=1e-5)


def test_rope_matches_hugging_face_llama():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    cfg = transformers.LlamaConfig(hidden_size=32, num_attention_heads=2, head_dim=16, rope_theta=10000.0)
    hf = LlamaRotaryEmbedding(cfg)
    q, k = torch.randn(2, 2, 6, 16), torch.randn(2, 2, 6, 16)
    pos = torch.arange(3, 9)[None].expand(2, 6)  # positions 3..8, as after a cache of 3 tokens
    cos, sin = hf(q, pos)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    q_ours, k_ours = RotaryEmbedding(16, 10000.0)(q, k, offset=3)
    torch.testing.assert_close(q_ours, q_hf, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(k_ours, k_hf, atol=1e-6, rtol=1e-5)


def test_scores_depend_on_relative_position_only_and_norms_are_kept():
    rope = RotaryEmbedding(16)
    q, k = torch.randn(1, 1, 1, 16, dtype=torch.float64), torch.randn(1, 1, 1, 16, dtype=torch.float64)
    scores = []
    for shift in (0, 5, 100, 3000):
        qm = rope.rotate(q, 10 + shift)  # query at position 10 + shift, key at 4 + shift: distance 6
        kn = rope.rotate(k, 4 + shift)
        scores.append((qm * kn).sum().item())
    assert max(scores) - min(scores) < 1e-3 * max(1.0, abs(scores[0]))
    x = torch.randn(3, 2, 9, 16, dtype=torch.float64)
    torch.testing.assert_close(rope.rotate(x, 11).norm(dim=-1), x.norm(dim=-1))


def test_offset_equals_slicing_the_full_rotation():
    """What incremental decoding relies on: rotating positions 5.. with offset 5 equals the full rotation's tail."""
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 3, 12, 8)
    torch.testing.assert_close(rope.rotate(x[..., 5:, :], offset=5), rope.rotate(x)[..., 5:, :])


def test_position_zero_is_identity_and_helpers():
    rope = RotaryEmbedding(4)
    x = torch.randn(1, 1, 1, 4)
    assert torch.equal(rope.rotate(x, 0), x)
    assert torch.equal(rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0]))
    cos, sin = rope.cos_sin(2, 1)
    assert cos.shape == (1, 4)
    torch.testing.assert_close(cos[0, 0], torch.tensor(math.cos(2.0)))
    torch.testing.assert_close(apply_rotary(x, cos, sin), rope.rotate(x, 2))
    assert rope.state_dict() == {}  # nothing to save: checkpoints are unchanged by RoPE


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"head_dim": 7}, "even head dim"),
        ({"head_dim": 0}, "even head dim"),
        ({"head_dim": 8, "base": 1.0}, "base"),
        ({"head_dim": 8, "base": float("inf")}, "base"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RotaryEmbedding(**kwargs)


def test_wrong_head_dim_is_a_clear_error():
    with pytest.raises(ValueError, match="head dim 8"):
        RotaryEmbedding(8).rotate(torch.randn(1, 4, 6))
