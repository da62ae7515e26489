"""Loading a trained model: a checkpoint (or a run folder) → the model in eval mode and its tokenizers.

Every reader of trained models goes through :func:`load_model` (``adasparse translate``/``evaluate``,
``adasparse analyze``, the demo), and the trainer's ``--resume`` through :func:`load_weights_into`, so that
all of them verify the checkpoint (:func:`~adasparse.train.checkpoint.load_checkpoint`) and report a damaged
or mismatched file the same way: a :class:`~adasparse.train.checkpoint.CorruptCheckpointError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.tokenizer import TokenizerPair
from ..models import build_model
from ..models.config import DecoderOnlyConfig, Seq2SeqConfig, saved_model_config
from .checkpoint import Checkpoint, CheckpointManager, CorruptCheckpointError, load_checkpoint

__all__ = ["load_model", "model_from_checkpoint", "load_weights_into", "pick_device"]


def pick_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available, else CPU) or a torch device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``...)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but CUDA is not available")
    return device


def load_model(checkpoint: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, tokenizers, checkpoint) from a checkpoint folder or a run folder (its best checkpoint,
    else its latest). The model is a :class:`~adasparse.models.Seq2SeqTransformer` (``adasparse train``) or a
    :class:`~adasparse.models.DecoderOnlyTransformer` (``adasparse train --task lm``, whose tokenizers are one
    joint pair), as the checkpoint's ``config.json`` says (its ``"kind"``).

    The checkpoint is verified against its manifest (:func:`~adasparse.train.checkpoint.load_checkpoint`); a
    damaged or inconsistent one raises :class:`~adasparse.train.checkpoint.CorruptCheckpointError` (a
    ``ValueError``) naming the file.
    """
    path = Path(checkpoint)
    if path.is_dir() and not any((path / n).exists() for n in ("manifest.json", "model.safetensors")):
        mgr = CheckpointManager(path.parent if path.name == "checkpoints" else path, create=False)
        path = mgr.best() or mgr.latest() or path
    ckpt = load_checkpoint(path, device="cpu")
    model = model_from_checkpoint(ckpt)
    if ckpt.tokenizer_dir is None:
        raise FileNotFoundError(f"checkpoint {ckpt.path} has no tokenizer/ folder")
    tokenizers = TokenizerPair.load(ckpt.tokenizer_dir)
    c = model.config
    if isinstance(c, DecoderOnlyConfig):  # a language model: one tokenizer, a joint pair
        if not tokenizers.joint:
            raise CorruptCheckpointError(
                f"{ckpt.tokenizer_dir}: a language model has one tokenizer, but this folder holds separate src and "
                f"tgt models; the checkpoint's files do not belong together",
                ckpt.tokenizer_dir,
            )
        sizes = (("joint", tokenizers.tgt, c.vocab_size),)
    else:
        sizes = (("src", tokenizers.src, c.src_vocab_size), ("tgt", tokenizers.tgt, c.tgt_vocab_size))
    for side, tok, size in sizes:
        if tok.vocab_size != size:
            raise CorruptCheckpointError(
                f"{ckpt.tokenizer_dir}: the {side} tokenizer has {tok.vocab_size} pieces but the model in "
                f"{ckpt.path / 'config.json'} expects {size}; the checkpoint's files do not belong together",
                ckpt.tokenizer_dir,
            )
    return model.to(device).eval(), tokenizers, ckpt


def model_from_checkpoint(ckpt: Checkpoint) -> torch.nn.Module:
    """The model a loaded checkpoint describes, with its weights; clear errors naming the file at fault."""
    cfg_file = ckpt.path / "config.json"
    saved = ckpt.config.get("model") if isinstance(ckpt.config, dict) else None
    if not isinstance(saved, dict):
        raise CorruptCheckpointError(
            f"{cfg_file} has no 'model' entry (the model's configuration): not a checkpoint of `adasparse train`?",
            cfg_file,
        )
    kinds = {c.__name__: c for c in (Seq2SeqConfig, DecoderOnlyConfig)}
    kind = saved.get("kind", Seq2SeqConfig.__name__)  # configs saved before "kind" existed are seq2seq
    if kind not in kinds:
        raise CorruptCheckpointError(
            f"{cfg_file}: the model's kind is {kind!r}; known kinds: {', '.join(kinds)}", cfg_file
        )
    try:
        model = build_model(kinds[kind].from_dict(saved_model_config(saved)))
    except (ValueError, TypeError) as e:
        raise CorruptCheckpointError(f"{cfg_file}: invalid model configuration: {e}", cfg_file) from None
    load_weights_into(model, ckpt)
    return model


def load_weights_into(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """``model.load_state_dict`` of the checkpoint's weights; a mismatch raises :class:`CorruptCheckpointError`
    naming ``model.safetensors`` (first 400 characters of what torch found)."""
    try:
        model.load_state_dict(ckpt.model_state)
    except RuntimeError as e:  # missing/unexpected tensors, size mismatches
        details = "; ".join(line.strip() for line in str(e).splitlines()[1:] if line.strip()) or str(e)
        if len(details) > 400:
            details = details[:400] + "…"
        f = ckpt.path / "model.safetensors"
        raise CorruptCheckpointError(
            f"{f} does not fit the model of {ckpt.path / 'config.json'}: {details}", f
        ) from None
