"""Tile configurations: every candidate's tiles give the reference's output and gradients; the lookup (one fixed
configuration under the interpreter, the table by head dim, dtype and length bucket otherwise) and the tuner."""

import os

import pytest
import torch

from adasparse.kernels import tiles
from adasparse.kernels.tiles import INTERPRETER, TABLE, TileConfig, candidates, config_key, tile_config, tune_tiles
from tests.kernels.test_triton_attention import DALPHA_FACTOR, DEVICE, TOL, assert_close_all, make, reference

if DEVICE.type == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="triton is not installed: the fused kernel tests need it")

from adasparse.kernels.triton_entmax_attention import (  # noqa: E402
    triton_entmax_attention,
    triton_entmax_attention_forward,
)

pytestmark = [pytest.mark.triton, pytest.mark.usefixtures("one_thread")]

# the distinct tiles of the tuning space, one candidate each (the interpreter ignores warps and stages; on a GPU,
# ADASPARSE_TEST_DEVICE=cuda, the warps/stages of the candidate picked here run too)
TILE_PAIRS = sorted({(c.block_m, c.block_n): c for c in candidates(32)}.items())
GROUPS = [TILE_PAIRS[i::3] for i in range(3)]  # three tests of three tile pairs each


@pytest.fixture(autouse=True)
def no_tuned():
    tiles.clear_tuned()
    yield
    tiles.clear_tuned()


def test_the_tuning_space():
    assert {(c.block_m, c.block_n) for c in candidates(64)} == {(m, n) for m in (32, 64, 128) for n in (32, 64, 128)}
    assert (128, 128) not in {(c.block_m, c.block_n) for c in candidates(96)}  # too many registers above D = 64
    assert {(c.num_warps, c.num_stages) for c in candidates(64)} == {(w, s) for w in (4, 8) for s in (1, 2, 3)}
    assert len(candidates(64)) == 9 * 6 and len(candidates(128)) == 8 * 6


@pytest.mark.parametrize("group", range(len(GROUPS)))
def test_every_candidate_tile_gives_the_references_output_and_gradients(group):
    """Ragged lengths (several blocks at 32, one at 128), key padding, causal, learned α with a closed form."""
    B, H, Lq, Lk, D = 2, 2, 70, 75, 24
    q, k, v = make(B, H, Lq, Lk, D, torch.float32, seed=group)
    kpm = torch.ones(B, Lk, dtype=torch.bool, device=DEVICE)
    kpm[1, 50:] = False
    alpha = torch.tensor([1.3, 2.0], device=DEVICE)
    for (bm, bn), cfg in GROUPS[group]:
        causal = bm == bn  # a third of the pairs: causal
        inputs = [x.detach().clone().requires_grad_(True) for x in (q, k, v, alpha)]
        out = triton_entmax_attention(*inputs[:3], inputs[3], key_padding_mask=kpm, is_causal=causal, config=cfg)
        do = torch.randn(out.shape, generator=torch.Generator().manual_seed(bm + bn), dtype=torch.float64)
        grads = torch.autograd.grad(out, inputs, do.to(DEVICE, out.dtype))
        ref_in = [x.detach().double().requires_grad_(True) for x in (q, k, v, alpha)]
        ref = reference(*ref_in, key_padding_mask=kpm, is_causal=causal)
        ref_grads = torch.autograd.grad(ref, ref_in, do.to(DEVICE))
        tol = TOL[torch.float32]
        assert_close_all((out, *grads), (ref, *ref_grads), tol, DALPHA_FACTOR * tol)
        fwd = triton_entmax_attention_forward(q, k, v, alpha, key_padding_mask=kpm, is_causal=causal, config=cfg)
        assert fwd.config == cfg and fwd.block_mask.shape == (B, H, -(-Lq // bm), -(-Lk // bn))


def test_lookup_by_head_dim_dtype_and_length():
    assert config_key(64, torch.bfloat16, 1024) == (64, "half", 1024)
    assert config_key(65, torch.float16, 1025) == (128, "half", 8192)
    assert config_key(32, torch.float64, 32768) == (64, "fp64", float("inf"))
    for length in (16, 5000, 40000):  # under the interpreter: one configuration per head-dim bucket, whatever else
        assert tile_config(64, torch.float32, length, interpreted=True) == INTERPRETER[64]
        assert tile_config(128, torch.bfloat16, length, interpreted=True) == INTERPRETER[128]
        assert tile_config(80, torch.float16, length) == TABLE[(128, "half", config_key(80, torch.float16, length)[2])]
    q, k, v = make(1, 2, 20, 20, 32, torch.float32, seed=0)
    default = triton_entmax_attention_forward(q, k, v, 1.5)
    assert default.config == (INTERPRETER[64] if DEVICE.type == "cpu" else TABLE[config_key(32, torch.float32, 20)])
    pinned = triton_entmax_attention_forward(q, k, v, 1.5, config=TileConfig(32, 32), block_n=16)
    assert (pinned.config.block_m, pinned.config.block_n) == (32, 16)  # block_n overrides the config's tile
    torch.testing.assert_close(pinned.out, default.out, rtol=0, atol=1e-5)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match=r"TileConfig.block_n must be a power of two >= 16, got 48"):
        TileConfig(64, 48)
    with pytest.raises(ValueError, match=r"TileConfig.num_warps must be a power of two >= 1, got 3"):
        TileConfig(64, 64, num_warps=3)
    with pytest.raises(ValueError, match=r"TileConfig.bwd_num_stages must be an int >= 1, got 0"):
        TileConfig(64, 64, bwd_num_stages=0)
    q = torch.zeros(1, 1, 8, 16, device=DEVICE)
    with pytest.raises(TypeError, match="config must be an adasparse.kernels.tiles.TileConfig, got tuple"):
        triton_entmax_attention_forward(q, q, q, 1.5, config=(64, 64))


def test_tuner_caches_its_choice_for_the_inputs_key():
    """The mechanism only: under the interpreter the times mean nothing, so any of the candidates may win."""
    q, k, v = make(1, 2, 40, 40, 16, torch.float32, seed=1)
    alpha = torch.tensor([1.2, 1.7], device=DEVICE, requires_grad=True)
    configs = [TileConfig(32, 32, 4, 2, 4, 1), TileConfig(64, 32, 8, 1, 8, 3)]
    timings = []
    best = tune_tiles(q, k, v, alpha, configs=configs, reps=1, timings=timings)
    assert (best.block_m, best.block_n) in {(32, 32), (64, 32)}
    assert [c for c, _, _ in timings] == configs and all(tf > 0 and tb > 0 for _, tf, tb in timings)
    # the winner is the tile pair with the least forward + backward time among those recorded
    fastest = min(timings, key=lambda r: r[1] + r[2])[0]
    assert (fastest.block_m, fastest.block_n) == (best.block_m, best.block_n)
    assert best.num_warps == best.bwd_num_warps  # forward and backward settings from candidates of those tiles
    assert triton_entmax_attention_forward(q, k, v, alpha).config == best  # same key: the tuned configuration
    other = make(1, 2, 40, 40, 80, torch.float32, seed=1)
    assert triton_entmax_attention_forward(*other, 1.5).config == tile_config(80, torch.float32, 40, interpreted=True)
    tiles.clear_tuned()
    assert tile_config(16, torch.float32, 40, interpreted=True) == INTERPRETER[64]
    with pytest.raises(TypeError, match="key_padding_mask must be a bool tensor"):  # not a launch failure: raised
        tune_tiles(q, k, v, alpha, configs=configs, reps=1, key_padding_mask=torch.ones(1, 40))
    with pytest.raises(ValueError, match="tune_tiles: configs is empty"):
        tune_tiles(q, k, v, alpha, configs=[])
