"""The fused Triton α-entmax attention against a plain-torch reference, under the Triton interpreter.

The reference materialises the scores, masks them with -inf and applies :func:`adasparse.ops.entmax.entmax`
(autograd for the gradients), always in float64 from the same inputs; "relative error" is
‖kernel − reference‖ / ‖reference‖ per tensor.
"""

import os

import pytest
import torch

# ADASPARSE_TEST_DEVICE=cuda runs the same tests on a GPU (compiled kernels); by default they run on CPU
# under the Triton interpreter, which must be switched on before triton is imported (conftest does it too)
DEVICE = torch.device(os.environ.get("ADASPARSE_TEST_DEVICE", "cpu"))
if DEVICE.type == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="triton is not installed: the fused kernel tests need it")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from adasparse.kernels.triton_entmax_attention import (  # noqa: E402
    _pack_bits,
    _pop_lowest,
    _prefix_bits,
    _store_bits,
    triton_entmax_attention,
    triton_entmax_attention_forward,
)
from adasparse.ops.entmax import entmax  # noqa: E402

pytestmark = pytest.mark.triton

# float64 cases are marked fp64: the GPU run skips them (-m "not fp64": consumer/H100 fp64 is slow to compile
# and to run, and the interpreter already checks them against the float64 reference in CI)
FP32_FP64 = [
    pytest.param(torch.float32, id="float32"),
    pytest.param(torch.float64, id="float64", marks=pytest.mark.fp64),
]
TOL = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 5e-3}
BLOCK = 16  # small tiles: several blocks per sequence at L ≤ 64


def reference(q, k, v, alpha, key_padding_mask=None, is_causal=False):
    """Materialised scores, -inf masking, adasparse.entmax with α (1, H, 1, 1), then @ v."""
    D = q.shape[-1]
    z = (q @ k.transpose(-1, -2)) * D**-0.5  # (B, H, Q, K)
    ok = torch.ones(z.shape[-2:], dtype=torch.bool, device=z.device)
    if is_causal:
        ok = ok.tril()
    ok = ok.expand(q.shape[0], 1, *ok.shape)  # (B, 1, Q, K)
    if key_padding_mask is not None:
        ok = ok & key_padding_mask[:, None, None, :]
    z = z.masked_fill(~ok, float("-inf"))
    return entmax(z, alpha.view(1, -1, 1, 1), dim=-1) @ v


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def run_both(q, k, v, alpha, kpm=None, causal=False, seed=0, deterministic=None):
    """Kernel outputs/grads in the input dtype and float64 reference outputs/grads, for one random dO."""
    gen = torch.Generator().manual_seed(seed)
    inputs = [x.detach().clone().requires_grad_(True) for x in (q, k, v, alpha)]
    out = triton_entmax_attention(
        *inputs[:3], inputs[3], key_padding_mask=kpm, is_causal=causal, block_m=BLOCK, block_n=BLOCK,
        deterministic=deterministic,
    )  # fmt: skip
    do = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device)
    grads = torch.autograd.grad(out, inputs, do.to(out.dtype))
    ref_inputs = [x.detach().double().requires_grad_(True) for x in (q, k, v, alpha)]
    ref_out = reference(*ref_inputs, key_padding_mask=kpm, is_causal=causal)
    ref_grads = torch.autograd.grad(ref_out, ref_inputs, do)
    return (out, *grads), (ref_out, *ref_grads)


def make(B, H, Lq, Lk, D, dtype, seed, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Lq, D, generator=g, dtype=torch.float64) * spread
    k = torch.randn(B, H, Lk, D, generator=g, dtype=torch.float64) * spread
    v = torch.randn(B, H, Lk, D, generator=g, dtype=torch.float64)
    return q.to(DEVICE, dtype), k.to(DEVICE, dtype), v.to(DEVICE, dtype)


def assert_close_all(got, want, tol, dalpha_tol=None):
    names = ["out", "dq", "dk", "dv", "dalpha"]
    errs = {n: rel(a, b) for n, a, b in zip(names, got, want)}
    assert all(torch.isfinite(a).all() for a in got), errs
    limits = {n: (dalpha_tol or tol) if n == "dalpha" else tol for n in errs}
    assert all(errs[n] <= limits[n] for n in errs), (errs, limits)


@pytest.mark.parametrize("dtype", FP32_FP64)
def test_ragged_padding_mixed_alpha(dtype):
    """Key padding with ragged lengths; one head each at α = 1.01, 1.5, 2 (learned α: gradient checked)."""
    q, k, v = make(2, 3, 40, 40, 32, dtype, seed=1)
    kpm = torch.ones(2, 40, dtype=torch.bool, device=DEVICE)
    kpm[1, 23:] = False  # batch 1 has 23 real keys
    kpm[0, 7] = False  # a hole, not only a suffix
    alpha = torch.tensor([1.01, 1.5, 2.0], dtype=dtype, device=DEVICE)
    got, want = run_both(q, k, v, alpha, kpm)
    assert_close_all(got, want, TOL[dtype])


@pytest.mark.parametrize("dtype", FP32_FP64)
def test_causal_cross_lengths_softmax_head_noncontiguous(dtype):
    """Causal (top-left), Q ≠ K, D = 64, a softmax head (α = 1) next to α = 1.25, q as a transposed view."""
    q, k, v = make(1, 2, 24, 40, 64, dtype, seed=2)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # (B, H, Q, D) view with stride(2) != D
    assert not q.is_contiguous()
    alpha = torch.tensor([1.0, 1.25], dtype=dtype, device=DEVICE)
    got, want = run_both(q, k, v, alpha, causal=True)
    assert_close_all(got, want, TOL[dtype])


@pytest.mark.parametrize("dtype", FP32_FP64)
def test_deterministic_backward_agrees_with_the_fused_one(dtype):
    """The two-kernel backward without atomics (deterministic=True) and the single FA2-style kernel with atomic
    dQ (the default): both exact against the reference, and equal to each other up to the order of additions;
    causal + ragged padding, α = 1 (softmax), 1.25 and 2 with their α gradients."""
    q, k, v = make(2, 3, 37, 37, 32, dtype, seed=9)
    kpm = torch.ones(2, 37, dtype=torch.bool, device=DEVICE)
    kpm[1, 19:] = False
    alpha = torch.tensor([1.0, 1.25, 2.0], dtype=dtype, device=DEVICE)
    det, want = run_both(q, k, v, alpha, kpm, causal=True, deterministic=True)
    fused, _ = run_both(q, k, v, alpha, kpm, causal=True, deterministic=False)
    assert_close_all(det, want, TOL[dtype])
    assert_close_all(fused, want, TOL[dtype])
    for a, b in zip(fused, det):
        assert rel(a, b) <= 1e3 * torch.finfo(dtype).eps, rel(a, b)
    assert torch.equal(fused[2], det[2]) and torch.equal(fused[3], det[3])  # dK, dV: the same kernel, no atomics


def test_fully_masked_rows_give_zero_output_and_grads():
    """Causal + the first keys padded: the first queries attend nothing; batch 1 has no real key at all."""
    q, k, v = make(2, 2, 32, 32, 32, torch.float32, seed=3)
    kpm = torch.ones(2, 32, dtype=torch.bool, device=DEVICE)
    kpm[0, :5] = False
    kpm[1, :] = False
    alpha = torch.tensor([1.5, 2.0], device=DEVICE)
    got, want = run_both(q, k, v, alpha, kpm, causal=True)
    out, dq, dk, dv, _ = got
    assert torch.isfinite(torch.cat([x.flatten() for x in got])).all()
    assert (out[0, :, :5] == 0).all() and (out[1] == 0).all()
    assert (dq[0, :, :5] == 0).all() and (dq[1] == 0).all()
    assert (dk[1] == 0).all() and (dv[1] == 0).all()
    assert out[0, :, 5:].abs().sum() > 0
    assert_close_all(got, want, TOL[torch.float32])


def test_block_skip_visits_fewer_blocks_and_stays_exact():
    """α = 2, keys and queries clustered by block: most blocks are empty and are not visited again."""
    L, D = 64, 32
    g = torch.Generator().manual_seed(4)
    centres = 2.0 * torch.randn(L // BLOCK, D, generator=g).repeat_interleave(BLOCK, 0)  # (L, D)
    k = (centres + 0.7 * torch.randn(L, D, generator=g)).view(1, 1, L, D)
    q = (centres + 0.7 * torch.randn(L, D, generator=g)).view(1, 1, L, D)
    v = torch.randn(1, 1, L, D, generator=g)
    q, k, v = q.to(DEVICE), k.to(DEVICE), v.to(DEVICE)
    alpha = torch.tensor([2.0], device=DEVICE)
    fwd = triton_entmax_attention_forward(q, k, v, alpha, block_m=BLOCK, block_n=BLOCK)
    n_kb = L // BLOCK
    assert fwd.empty_block_fraction >= 0.5, fwd.block_mask
    # without skipping: pass 1 + every Newton iteration + the output pass each visit all n_kb key blocks
    no_skip = (2 + fwd.newton_iters) * n_kb
    assert (fwd.block_visits < no_skip).all(), (fwd.block_visits, no_skip)
    # the block mask agrees with the exact probabilities, block by block
    with torch.no_grad():
        p = entmax((q @ k.transpose(-1, -2)).double() * D**-0.5, 2.0, dim=-1)[0, 0]  # (L, L)
    nonzero = (p.view(L // BLOCK, BLOCK, n_kb, BLOCK) > 0).any(3).any(1)
    assert torch.equal(fwd.block_mask[0, 0].cpu(), nonzero.cpu())
    got, want = run_both(q, k, v, alpha)
    assert_close_all(got, want, TOL[torch.float32])


def test_block_walk_across_bitmask_words():
    """64 key blocks, two int32 words of the register bitmask: each query block's live blocks include bits 0,
    31, 32 and 63 (word boundaries, the sign bit); the block mask is the exact one, dead blocks are not walked,
    outputs and gradients match the reference."""
    Lq, Lk, D = 48, 1024, 16
    n_kb = Lk // BLOCK
    g = torch.Generator().manual_seed(5)
    kc = 2.0 * torch.randn(n_kb, D, generator=g)
    k = (kc.repeat_interleave(BLOCK, 0) + 0.3 * torch.randn(Lk, D, generator=g)).view(1, 1, Lk, D)
    targets = torch.tensor([[0, 31], [32, 63], [31, 32]])  # query block j: half its rows near each key block
    qc = kc[targets].repeat_interleave(BLOCK // 2, 1).reshape(Lq, D)
    q = (qc + 0.3 * torch.randn(Lq, D, generator=g)).view(1, 1, Lq, D)
    v = torch.randn(1, 1, Lk, D, generator=g)
    q, k, v = q.to(DEVICE), k.to(DEVICE), v.to(DEVICE)
    alpha = torch.tensor([2.0], device=DEVICE)
    fwd = triton_entmax_attention_forward(q, k, v, alpha, block_m=BLOCK, block_n=BLOCK)
    with torch.no_grad():
        p = entmax((q @ k.transpose(-1, -2)).double() * D**-0.5, 2.0, dim=-1)[0, 0]  # (Lq, Lk)
    nonzero = (p.view(Lq // BLOCK, BLOCK, n_kb, BLOCK) > 0).any(3).any(1)
    assert torch.equal(fwd.block_mask[0, 0].cpu(), nonzero.cpu())
    assert nonzero.gather(1, targets).all() and nonzero.sum() <= 4 * targets.numel(), nonzero.nonzero()
    assert (fwd.block_visits < (2 + fwd.newton_iters) * n_kb).all(), fwd.block_visits
    got, want = run_both(q, k, v, alpha)
    assert_close_all(got, want, TOL[torch.float32])


@triton.jit
def _walk_kernel(FLAGS, ORDER, BACK, PREFIX, n_prefix, N_WORDS: tl.constexpr):
    """Pack FLAGS into the register bitmask, write it back, write the prefix mask of n_prefix, pop every bit."""
    widx = tl.arange(0, N_WORDS)
    wcol = tl.arange(0, 32)
    kbs = widx[:, None] * 32 + wcol[None, :]
    flags = tl.load(FLAGS + kbs)
    rem = _pack_bits(flags, wcol)
    _store_bits(BACK, rem, widx, wcol, N_WORDS * 32)
    _store_bits(PREFIX, _prefix_bits(widx, n_prefix), widx, wcol, N_WORDS * 32)
    n_live = tl.sum(tl.sum((flags != 0).to(tl.int32), 1), 0)
    for i in range(0, n_live):
        kb, rem = _pop_lowest(rem, widx, N_WORDS)
        tl.store(ORDER + i, kb)


def test_register_bitmask_helpers():
    """The kernels' bitmask primitives on 128 blocks (4 words, one of them empty, bits 0/31/32/63/127 set):
    packing, the prefix mask, popping the lowest bit in order, and the one-store write-back."""
    g = torch.Generator().manual_seed(0)
    flags = (torch.rand(128, generator=g) < 0.3).to(torch.int8)
    flags[64:96] = 0
    flags[[0, 31, 32, 63, 127]] = 1
    for n_prefix in (0, 1, 31, 32, 33, 100, 128):
        order = torch.full((128,), -1, dtype=torch.int32, device=DEVICE)
        back = torch.empty(128, dtype=torch.int8, device=DEVICE)
        prefix = torch.empty(128, dtype=torch.int8, device=DEVICE)
        _walk_kernel[(1,)](flags.to(DEVICE), order, back, prefix, n_prefix, N_WORDS=4)
        live = flags.nonzero().flatten()
        assert order[: live.numel()].cpu().tolist() == live.tolist()
        assert (order[live.numel() :] == -1).all()
        assert torch.equal(back.cpu(), flags)
        assert prefix.cpu().tolist() == [1] * n_prefix + [0] * (128 - n_prefix)


def test_topk_start_saves_passes_and_keeps_the_output():
    """The solver started from the first pass's top-k scores (the default) against the start at t = 0: the same
    output (both stop at the same residual), fewer solver passes and fewer key-block visits on clustered keys."""
    L, D = 64, 32
    g = torch.Generator().manual_seed(8)
    centres = 2.0 * torch.randn(L // BLOCK, D, generator=g).repeat_interleave(BLOCK, 0)  # (L, D)
    k = (centres + 0.7 * torch.randn(2, L, D, generator=g)).view(1, 2, L, D)
    q = (centres + 0.7 * torch.randn(2, L, D, generator=g)).view(1, 2, L, D)
    v = torch.randn(1, 2, L, D, generator=g)
    q, k, v = q.to(DEVICE), k.to(DEVICE), v.to(DEVICE)
    alpha = torch.tensor([1.25, 1.5], device=DEVICE)
    new = triton_entmax_attention_forward(q, k, v, alpha, block_m=BLOCK, block_n=BLOCK)
    old = triton_entmax_attention_forward(q, k, v, alpha, block_m=BLOCK, block_n=BLOCK, topk=0)
    assert rel(new.out, old.out) <= 1e-5
    assert new.newton_iters.sum() < old.newton_iters.sum(), (new.newton_iters, old.newton_iters)
    assert new.block_visits.sum() < old.block_visits.sum(), (new.block_visits, old.block_visits)
    assert (new.topk_rounds > 0).all() and (old.topk_rounds == 0).all()


# ---- the grid: head dims (powers of two and not), dtypes, masks; forward and every gradient ----------------
HEAD_DIMS = (16, 32, 48, 64, 80, 96, 112, 128)
GRID_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MASKS = ("none", "causal", "padding", "causal+padding")
# measured (full grid, strict interpreter): fp32 ≤ 1.5e-6 (dα ≤ 6.8e-6), fp16 ≤ 5e-4 (dα ≤ 1.9e-3), bf16 ≤ 7.5e-3
# (dα ≤ 1.9e-2): the inputs are rounded to the dtype, p is rounded to it before p·v, fp32 accumulation
GRID_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
DALPHA_FACTOR = 4  # dα sums over rows and heads terms that cancel: its relative error is a few times larger


def _default_grid() -> set[tuple[int, torch.dtype, str]]:
    """12 of the 96 cases, run by default: every head dim, and every (dtype, mask) pair, at least once."""
    pairs = [(dt, mk) for dt in GRID_DTYPES for mk in MASKS]
    return {(HEAD_DIMS[i % len(HEAD_DIMS)], dt, mk) for i, (dt, mk) in enumerate(pairs)}


_DEFAULT = _default_grid()
GRID = [
    pytest.param(D, dt, mk, marks=() if (D, dt, mk) in _DEFAULT else pytest.mark.triton_full, id=f"D{D}-{dt}-{mk}")
    for D in HEAD_DIMS
    for dt in GRID_DTYPES
    for mk in MASKS
]


@pytest.mark.parametrize("D, dtype, mask", GRID)
def test_grid_head_dims_dtypes_masks(D, dtype, mask):
    """Ragged everything: Q = 29, K = 37 (neither a multiple of the 16-wide tiles), per-batch key lengths 37 and
    21 with a hole, head dims up to 128 including 48/80/96/112 (padded to a power of two inside the kernel);
    out and the q, k, v, α gradients against the float64 reference on the same (rounded) inputs."""
    causal, padding = "causal" in mask, "padding" in mask
    seed = 100 + HEAD_DIMS.index(D) * 16 + GRID_DTYPES.index(dtype) * 4 + MASKS.index(mask)
    q, k, v = make(2, 2, 29, 37, D, dtype, seed=seed, spread=1.5)
    kpm = None
    if padding:
        kpm = torch.ones(2, 37, dtype=torch.bool, device=DEVICE)
        kpm[1, 21:] = False
        kpm[0, 3] = False
    # two heads per case, α among softmax, near-softmax, 1.5 and sparsemax
    alphas = ((1.0, 1.5), (1.01, 2.0), (1.25, 1.75))[seed % 3]
    alpha = torch.tensor(alphas, device=DEVICE)
    got, want = run_both(q, k, v, alpha, kpm, causal, seed=seed)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    assert_close_all(got, want, GRID_TOL[dtype], DALPHA_FACTOR * GRID_TOL[dtype])


def test_offsets_past_int32_are_64_bit():
    """q, k, v rows 2²⁶ elements apart (a strided view into a lazily allocated 5 GiB buffer: only the 40 pages the
    rows sit on are ever touched), so row · stride passes 2³¹ from row 32 on: int32 offsets would wrap and read
    elsewhere.  Forward and gradients must match the same inputs made contiguous."""
    if DEVICE.type != "cpu":
        pytest.skip("the lazily allocated buffer trick is for the interpreter (CPU memory)")
    L, D, row = 40, 16, 2**26
    try:
        buf = torch.empty(L * row, dtype=torch.float32)  # virtual; pages appear only when written
    except RuntimeError as e:  # an allocator that refuses overcommit
        pytest.skip(f"cannot reserve {L * row * 4 / 2**30:.0f} GiB of virtual memory: {e}")
    views = [buf.as_strided((1, 1, L, D), (0, 0, row, 1), storage_offset=i * D) for i in range(3)]  # q, k, v
    g = torch.Generator().manual_seed(11)
    for x in views:
        x.copy_(torch.randn(1, 1, L, D, generator=g))
    assert (L - 1) * row > 2**31
    from adasparse.kernels.triton_entmax_attention import _needs_int64

    assert _needs_int64(views[0]) and not _needs_int64(views[0].contiguous())  # the 64-bit specialisation runs
    alpha = torch.tensor([1.5], requires_grad=True)
    qkv = [x.requires_grad_(True) for x in views]  # the strided views themselves (a clone would be contiguous)
    out = triton_entmax_attention(*qkv, alpha, is_causal=True, block_m=BLOCK, block_n=BLOCK)
    do = torch.randn(out.shape, generator=g)
    got = (out, *torch.autograd.grad(out, (*qkv, alpha), do))
    ref_inputs = [x.detach().double().contiguous().requires_grad_(True) for x in (*views, alpha)]
    ref = reference(*ref_inputs, is_causal=True)
    want = (ref, *torch.autograd.grad(ref, ref_inputs, do.double()))
    assert_close_all(got, want, TOL[torch.float32])


@pytest.mark.fp64
def test_alpha_gradcheck_float64():
    """∂out/∂α against finite differences (independent of the reference's analytic gradient)."""
    q, k, v = make(1, 2, 16, 16, 32, torch.float64, seed=5)
    alpha = torch.tensor([1.05, 1.7], dtype=torch.float64, device=DEVICE, requires_grad=True)

    def f(a):
        return triton_entmax_attention(q, k, v, a, block_m=BLOCK, block_n=BLOCK)

    assert torch.autograd.gradcheck(f, (alpha,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_float16_inputs_fp32_accumulation():
    """Half-precision inputs: everything agrees with float64 to half-precision accuracy, α gradient included."""
    q, k, v = make(1, 2, 32, 32, 32, torch.float16, seed=6)
    alpha = torch.tensor([1.01, 1.6], device=DEVICE)  # α stays float32
    got, want = run_both(q, k, v, alpha)
    assert got[0].dtype == torch.float16 and got[4].dtype == torch.float32
    assert_close_all(got, want, TOL[torch.float16])


def test_scalar_alpha_broadcasts_to_heads():
    q, k, v = make(1, 2, 16, 16, 32, torch.float32, seed=7)
    a = triton_entmax_attention(q, k, v, 1.5, block_m=BLOCK, block_n=BLOCK)
    two = torch.tensor([1.5, 1.5], device=DEVICE)
    b = triton_entmax_attention(q, k, v, two, block_m=BLOCK, block_n=BLOCK)
    assert torch.equal(a, b)
    assert rel(a, reference(q.double(), k.double(), v.double(), two.double())) <= 1e-5


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(D=256), ValueError, "head dim"),
        (dict(alpha=2.5), ValueError, r"\[1, 2\]"),
        (dict(alpha=torch.tensor([1.5, 1.5, 1.5], device=DEVICE)), ValueError, "shape"),
        (dict(kpm=torch.ones(1, 16, device=DEVICE)), TypeError, "bool"),
        (dict(kpm=torch.ones(1, 15, dtype=torch.bool, device=DEVICE)), ValueError, "key_padding_mask"),
        (dict(kdtype=torch.float64), TypeError, "one dtype"),
        (dict(qdtype=torch.int32), TypeError, "float16"),
    ],
)
def test_invalid_inputs_raise_clear_errors(kwargs, exc, match):
    D = kwargs.get("D", 32)
    q = torch.zeros(1, 2, 16, D, dtype=kwargs.get("qdtype", torch.float32), device=DEVICE)
    k = torch.zeros(1, 2, 16, D, dtype=kwargs.get("kdtype", torch.float32), device=DEVICE)
    v = torch.zeros(1, 2, 16, D, dtype=torch.float32, device=DEVICE)
    with pytest.raises(exc, match=match):
        triton_entmax_attention(q, k, v, kwargs.get("alpha", 1.5), key_padding_mask=kwargs.get("kpm"))


def test_more_than_2_pow_31_elements_on_gpu():
    """On a GPU: B·H·L·D > 2³¹ (bf16, 4.3 GB per tensor), forward only; the last heads (past 2³¹) match the
    reference computed on their own.  (The interpreter cannot write 4 GB outputs; it runs the strided test above.)"""
    if DEVICE.type != "cuda":
        pytest.skip("needs a GPU with > 24 GB free")
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip(f"needs > 24 GB free GPU memory, {free / 2**30:.0f} GB free")
    H, L, D = 33000, 1024, 64  # H·L·D = 2.16e9 > 2³¹
    g = torch.Generator(device=DEVICE).manual_seed(12)
    q, k, v = (torch.randn(1, H, L, D, generator=g, device=DEVICE, dtype=torch.bfloat16) for _ in range(3))
    with torch.no_grad():
        out = triton_entmax_attention(q, k, v, 1.5)
        for h in (0, H - 1):
            sl = slice(h, h + 1)
            a = torch.tensor([1.5], device=DEVICE, dtype=torch.float64)
            want = reference(q[:, sl].double(), k[:, sl].double(), v[:, sl].double(), a)
            assert rel(out[:, sl], want) <= GRID_TOL[torch.bfloat16], h


def test_alpha_tensor_out_of_range_raises_on_cpu():
    """Off CUDA an α tensor is checked on the host (on CUDA: a device-side assert, no host sync)."""
    if DEVICE.type == "cuda":
        pytest.skip("on CUDA the α range check is a device-side assert (it would poison the CUDA context)")
    q = torch.zeros(1, 2, 16, 32)
    with pytest.raises(ValueError, match=r"\[1, 2\].*0\.5"):
        triton_entmax_attention(q, q, q, torch.tensor([1.5, 0.5]))


_SPILLS = """
import os, re, subprocess, tempfile, torch, triton
from adasparse.kernels.triton_entmax_attention import compile_kernels
tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
for idx64 in (False, True):
    ks = compile_kernels(90, torch.bfloat16, 64, idx64=idx64)
    assert all(len(k.asm["cubin"]) > 0 for k in ks.values())
    print("compiled", idx64, sorted(ks))
    if not idx64 and os.path.exists(tool):
        for name, k in sorted(ks.items()):
            with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
                f.write(k.asm["cubin"]); f.flush()
                use = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
            print("usage", name, re.search(r"REG:\\d+ STACK:\\d+", use).group(0))
"""


def test_kernels_compile_for_h100_without_gpu():
    """The interpreter does not type-check like the compiler: lower all the kernels (bf16, D = 64) to sm_90,
    in the 32-bit and the 64-bit index specialisations; the 32-bit one (the common case) must not spill
    registers (cuobjdump's STACK:0, when Triton's bundled cuobjdump is there)."""
    import subprocess
    import sys
    from pathlib import Path

    code = _SPILLS
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0 and "ptxas" in r.stderr and "not found" in r.stderr:
        pytest.skip("Triton's bundled ptxas is not available: cannot compile CUDA kernels here")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "compiled False ['backward', 'backward_kv', 'backward_q', 'forward']" in r.stdout
    assert "compiled True ['backward', 'backward_kv', 'backward_q', 'forward']" in r.stdout
    usage = [line for line in r.stdout.splitlines() if line.startswith("usage")]
    assert all(line.endswith("STACK:0") for line in usage), usage  # no spills (8 warps, 64×64 tiles)


def test_entmax_attention_dispatches_to_the_kernel():
    """``entmax_attention(backend="triton")`` runs the kernel (key padding + causal, learned per-head α) and agrees
    with ``backend="reference"``; ``"auto"`` keeps CPU tensors on the reference path."""
    from adasparse.kernels.dispatch import triton_supports
    from adasparse.nn.attention import entmax_attention

    gen = torch.Generator().manual_seed(3)
    B, H, L, D = 2, 2, 24, 32
    q, k, v = (torch.randn(B, H, L, D, generator=gen).to(DEVICE) for _ in range(3))
    lengths = torch.tensor([24, 17])
    mask = (torch.arange(L)[None, :] < lengths[:, None])[:, None, None, :].to(DEVICE)  # (B, 1, 1, K)
    outs = {}
    for backend in ("triton", "reference"):
        alpha = torch.tensor([1.3, 1.8], device=DEVICE, requires_grad=True)
        qq = q.clone().requires_grad_()
        out = entmax_attention(qq, k, v, alpha=alpha, attn_mask=mask, is_causal=True, backend=backend)
        out.square().sum().backward()
        outs[backend] = (out.detach(), qq.grad, alpha.grad)
    for a, b in zip(outs["triton"], outs["reference"]):
        assert rel(a, b) < 1e-5
    # "auto" takes the kernel on CUDA only (on CPU the interpreter is a test device, not a backend)
    assert triton_supports(q, k, v, 1.5, attn_mask=mask, is_causal=True) == (DEVICE.type == "cuda")


@pytest.mark.parametrize("dtype", FP32_FP64)
def test_fast_log_agrees_with_the_accurate_path(dtype):
    """``fast_log=True`` (log2/exp2 with the ln 2 factors folded) against the reference and the default path:
    general α near 1 and away from it, a closed form and softmax, causal + padding, every gradient.  Under the
    interpreter log2/exp2 are exact, so this checks the algebra; lg2.approx's accuracy needs a GPU."""
    q, k, v = make(2, 4, 40, 37, 32, dtype, seed=7)
    kpm = torch.ones(2, 37, dtype=torch.bool, device=DEVICE)
    kpm[0, 29:] = False
    alpha = torch.tensor([1.0, 1.01, 1.4, 2.0], dtype=dtype, device=DEVICE)
    runs = {}
    for fast in (False, True):
        inputs = [x.detach().clone().requires_grad_(True) for x in (q, k, v, alpha)]
        out = triton_entmax_attention(
            *inputs[:3], inputs[3], key_padding_mask=kpm, is_causal=True, block_m=BLOCK, block_n=BLOCK, fast_log=fast
        )
        do = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(out)
        runs[fast] = (out, *torch.autograd.grad(out, inputs, do))
    ref_in = [x.detach().double().requires_grad_(True) for x in (q, k, v, alpha)]
    ref = reference(*ref_in, key_padding_mask=kpm, is_causal=True)
    want = (ref, *torch.autograd.grad(ref, ref_in, do.double()))
    assert_close_all(runs[True], want, TOL[dtype])
    assert_close_all(runs[True], runs[False], TOL[dtype] / 10)
