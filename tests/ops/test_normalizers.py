"""The normalizer vocabulary (adasparse.ops.normalizers): the name → α table, the checks on α, and that every
consumer (functional attention, the modules, the model configs, the Hugging Face setting) answers a bad
setting the same way."""

import ast
import inspect
import math

import numpy as np
import pytest
import torch

import adasparse.nn.activations as activations_mod
import adasparse.nn.attention as attention_mod
import adasparse.nn.multihead as multihead_mod
from adasparse import (
    DecoderOnlyConfig,
    MultiheadAttention,
    Seq2SeqConfig,
    entmax,
    entmax15,
    entmax_attention,
    sparsemax,
)
from adasparse.integrations import hf
from adasparse.nn import Entmax, LearnableAlpha
from adasparse.ops import normalizers
from adasparse.ops.normalizers import (
    LEARNED,
    NORMALIZER_ALPHAS,
    NORMALIZERS,
    PARAMETRIZATIONS,
    canonical_normalizer,
    check_alpha_init,
    check_alpha_tensor,
    check_alpha_value,
    check_parametrization,
    normalizer_alpha,
)

# --------------------------------------------------------------------------- the table


def test_names_mean_the_alpha_of_the_mapping_they_name():
    x = torch.randn(5, 9, dtype=torch.float64) * 3
    named = {"softmax": torch.softmax(x, -1), "entmax15": entmax15(x), "sparsemax": sparsemax(x)}
    assert set(NORMALIZER_ALPHAS) == set(named)
    for name, ref in named.items():
        torch.testing.assert_close(entmax(x, NORMALIZER_ALPHAS[name]), ref, rtol=0, atol=1e-12)
        assert normalizer_alpha(name) == NORMALIZER_ALPHAS[name]


def test_the_names_are_the_fixed_ones_and_learned():
    assert LEARNED == "learned"
    assert set(NORMALIZERS) == set(NORMALIZER_ALPHAS) | {LEARNED} and len(NORMALIZERS) == len(set(NORMALIZERS))
    assert set(PARAMETRIZATIONS) == {"clamp", "sigmoid"}


def test_former_homes_re_export_the_same_objects():
    assert attention_mod.NORMALIZER_ALPHAS is NORMALIZER_ALPHAS
    assert multihead_mod.canonical_normalizer is canonical_normalizer
    assert multihead_mod.NORMALIZERS is NORMALIZERS
    assert activations_mod.PARAMETRIZATIONS is PARAMETRIZATIONS
    assert "NORMALIZER_ALPHAS" in attention_mod.__all__ and "canonical_normalizer" in multihead_mod.__all__


def test_the_module_imports_only_torch_and_the_standard_library():
    tree = ast.parse(inspect.getsource(normalizers))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import: ops.normalizers must not depend on the rest of adasparse"
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "math", "numbers", "torch"}, roots


# --------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("good, expected", [(1, 1.0), (1.0, 1.0), (1.5, 1.5), (7, 7.0), (np.float32(1.25), 1.25)])
def test_good_numbers(good, expected):
    for result in (check_alpha_value(good), canonical_normalizer(good), normalizer_alpha(good)):
        assert type(result) is float and result == expected


@pytest.mark.parametrize("name", list(NORMALIZERS))
def test_names_are_kept_as_names(name):
    assert canonical_normalizer(name) == name
    if name == LEARNED:
        with pytest.raises(ValueError, match="fixed"):
            normalizer_alpha(name)
        with pytest.raises(ValueError, match="x='learned' is not allowed"):
            canonical_normalizer(name, "x", learned=False)


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        (0.5, ValueError, r"finite number >= 1"),
        (0, ValueError, r"finite number >= 1"),
        (-math.inf, ValueError, r"finite number >= 1"),
        (math.inf, ValueError, r"finite number >= 1"),
        (math.nan, ValueError, r"finite number >= 1"),
        (True, TypeError, r"got bool"),
        (None, TypeError, r"got NoneType"),
        ([1.5], TypeError, r"got list"),
        ("relu", ValueError, r"'relu' is not allowed \(not a known normalizer\)"),
        ("Softmax", ValueError, r"not a known normalizer"),
    ],
)
def test_bad_settings_name_the_argument(bad, exc, match):
    with pytest.raises(exc, match=r"^my_arg.*" + match):
        canonical_normalizer(bad, "my_arg")
    with pytest.raises(exc, match=r"^my_arg.*" + match):
        normalizer_alpha(bad, "my_arg")
    if not isinstance(bad, str):  # the kernels' check on a number
        with pytest.raises(exc, match=r"^my_arg"):
            check_alpha_value(bad, "my_arg")


def test_the_message_lists_what_is_allowed():
    with pytest.raises(ValueError) as e:
        canonical_normalizer("relu")
    assert all(repr(n) in str(e.value) for n in NORMALIZERS)
    with pytest.raises(TypeError) as e:
        normalizer_alpha(None, tensor=True)
    assert "floating tensor" in str(e.value) and repr(LEARNED) not in str(e.value)


@pytest.mark.parametrize("n", [3, 200])  # per-head (Python loop) and large (tensor ops) paths
@pytest.mark.parametrize("bad", [0.5, math.nan, math.inf, -math.inf])
def test_tensor_values(n, bad):
    a = torch.full((n,), 1.5)
    check_alpha_tensor(a)
    a[n // 2] = bad
    with pytest.raises(ValueError, match="my_alpha must be finite and >= 1 everywhere"):
        check_alpha_tensor(a, "my_alpha")
    check_alpha_tensor(a.to("meta"))  # no values to look at: shapes only


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_tensor_dtype(dtype):
    with pytest.raises(TypeError, match="alpha must be a floating-point tensor"):
        check_alpha_tensor(torch.ones(3, dtype=dtype))


@pytest.mark.parametrize("good", ["normal", 1.01, 1.5, 1.99, np.float64(1.3)])
def test_alpha_init_good(good):
    assert check_alpha_init(good) is good


@pytest.mark.parametrize("bad", ["uniform", 1.0, 2.0, 0.5, math.nan, True, None, [1.5]])
def test_alpha_init_bad(bad):
    with pytest.raises(ValueError, match=r"^init must be 'normal' or a number in \(1, 2\)"):
        check_alpha_init(bad, "init")
    with pytest.raises(ValueError, match="init"):
        LearnableAlpha(2, init=bad)
    with pytest.raises(ValueError, match="alpha_init must be"):
        Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=8, n_heads=2, alpha_init=bad)


def test_parametrization():
    for p in PARAMETRIZATIONS:
        assert check_parametrization(p) == p
    with pytest.raises(ValueError, match=r"alpha_parametrization must be one of \['clamp', 'sigmoid'\]"):
        check_parametrization("tanh", "alpha_parametrization")


# --------------------------------------------------------------------------- every consumer agrees

B, H, L, D = 1, 2, 3, 4


def _attention(alpha):
    q = torch.randn(B, H, L, D)
    return entmax_attention(q, q, q, alpha=alpha)


def _mha(normalizer):
    return MultiheadAttention(8, H, normalizer=normalizer, batch_first=True)


def _seq2seq(normalizer):
    return Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=8, n_heads=2, context=normalizer)


def _decoder_only(normalizer):
    return DecoderOnlyConfig(vocab_size=20, d_model=8, n_heads=2, self_attn=normalizer)


def _hf(alpha):  # the setting is checked before the model is looked at (transformers is not needed for that)
    return hf.sparsify(torch.nn.Linear(2, 2), alpha=alpha)


# consumer, the argument name its messages use, whether "learned" is allowed there
CONSUMERS = {
    "entmax_attention": (_attention, "alpha", False),
    "MultiheadAttention": (_mha, "normalizer", True),
    "Seq2SeqConfig": (_seq2seq, "context", True),
    "DecoderOnlyConfig": (_decoder_only, "self_attn", True),
    "hf.sparsify": (_hf, "alpha", True),
}
BAD = [
    ("relu", ValueError),
    (0.5, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    (True, TypeError),
    (None, TypeError),
    ([1.5], TypeError),
]


@pytest.mark.parametrize("bad, exc", BAD, ids=[repr(b) for b, _ in BAD])
@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_every_consumer_refuses_a_bad_setting_alike(consumer, bad, exc):
    call, name, learned = CONSUMERS[consumer]
    with pytest.raises(exc) as expected:
        canonical_normalizer(bad, name, learned=learned)
    with pytest.raises(exc) as got:
        call(bad)
    assert got.type is expected.type
    assert str(got.value).startswith(name)  # names the argument
    if not isinstance(bad, list):
        assert repr(bad) in str(got.value) or type(bad).__name__ in str(got.value)  # and says what was given


@pytest.mark.parametrize("consumer", list(CONSUMERS))
def test_learned_is_refused_only_where_alpha_must_be_fixed(consumer):
    call, _, learned = CONSUMERS[consumer]
    if learned:
        return
    with pytest.raises(ValueError, match="'learned' is not allowed"):
        call(LEARNED)


@pytest.mark.parametrize("setting", ["softmax", "entmax15", "sparsemax", 1.3, np.float64(1.7)])
def test_every_consumer_reads_a_fixed_setting_as_the_same_alpha(setting):
    alpha = normalizer_alpha(setting)
    assert hf._check_alpha_setting(setting) == alpha
    torch.testing.assert_close(_mha(setting).alpha, torch.full((H,), alpha))
    cfg = _seq2seq(setting)
    assert cfg.context == canonical_normalizer(setting)
    assert attention_mod.resolve_alpha(setting) == alpha
    x = torch.randn(4, 6)
    torch.testing.assert_close(Entmax(alpha)(x), entmax(x, alpha))
