import subprocess
import sys

import torch

import adasparse


def test_public_api_names():
    promised = {"entmax", "sparsemax", "entmax15", "entmax_loss", "sparsemax_loss", "entmax15_loss", "Entmax"}
    promised |= {"Sparsemax", "Entmax15", "LearnableAlpha", "entmax_attention", "MultiheadAttention"}
    promised |= {"Seq2SeqTransformer", "DecoderOnlyTransformer"}
    assert promised <= set(adasparse.__all__)
    for name in adasparse.__all__:  # every exported name resolves
        assert getattr(adasparse, name) is not None, name
    ns: dict = {}
    exec("from adasparse import *", ns)
    assert set(adasparse.__all__) <= set(ns)


def test_cli_version():
    out = subprocess.run([sys.executable, "-m", "adasparse", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"adasparse {adasparse.__version__}"


def test_sparsemax_known_value():
    p = adasparse.sparsemax(torch.tensor([3.0, 2.5, 1.0]))
    torch.testing.assert_close(p, torch.tensor([0.75, 0.25, 0.0]))
