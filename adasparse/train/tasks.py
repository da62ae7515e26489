"""What the training loop needs to know about a task: its data, tokenizer, model, batches, loss and validation.

The loop (:mod:`adasparse.train.trainer`) is the same for every task: checkpoints, exact resumption, DDP,
logging, stopping. A task supplies the rest:

* :class:`TranslationTask` (``task: translation``, the default): a parallel corpus (``data_dir`` with
  language suffixes, or ``train_src``/``train_tgt`` files), a :class:`~adasparse.models.Seq2SeqTransformer`,
  teacher-forced label-smoothed cross-entropy, validation loss plus BLEU/chrF or WER/PER from decoding.
* :class:`LanguageModelTask` (``task: lm``): a text folder (``data_dir`` with ``train.txt``, ``valid.txt``,
  optionally ``test.txt``, plain or ``.gz``, or another ``text_suffix``; see :mod:`adasparse.data.text`), one
  tokenizer trained as for translation, a :class:`~adasparse.models.DecoderOnlyTransformer` (the preset's
  ``*_lm`` size), next-token cross-entropy over every predicted id (lines longer than the model's ``max_len``
  split into windows), validation by :func:`~adasparse.decode.perplexity.score_text` on the whole validation
  text — ``valid_loss`` (nats per token, the early-stopping metric), ``valid_ppl`` and ``valid_bpb`` (bits per
  byte), the same figures ``adasparse evaluate --text`` prints.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.batching import TokenBatcher, encode_pairs
from ..data.corpus import VALID_PREFIXES, ParallelCorpus, find_corpus, load_parallel
from ..data.text import LMBatcher, find_text, lm_sequences, load_text, train_lm_tokenizer
from ..data.tokenizer import TokenizerConfig, TokenizerPair
from ..models import config as model_presets
from ..models.config import DecoderOnlyConfig, Seq2SeqConfig
from .config import TrainConfig

log = logging.getLogger(__name__)

__all__ = ["TextCorpus", "TranslationTask", "LanguageModelTask", "task_for"]


@dataclass(frozen=True)
class TextCorpus:
    """The non-blank lines of one text file (a language model's training or validation text)."""

    lines: list[str]
    path: Path

    def __len__(self) -> int:
        return len(self.lines)

    def summary(self) -> str:
        words = sum(len(line.split()) for line in self.lines)
        return f"{self.path}: {len(self.lines)} lines, {words} words"


def _sha256_lines(*sides: list[str]) -> str:
    h = hashlib.sha256()
    for row in zip(*sides):
        h.update(b"\t".join(s.encode("utf-8") for s in row) + b"\n")
    return h.hexdigest()


def _train_batcher(cls, cfg: TrainConfig, data: tuple, rank: int | None, world_size: int, pad_id: int):
    """``cls(*data, cfg.batch_tokens, ...)``: the training batcher of either task (shuffled with the run's seed,
    ``rank``'s share of ``world_size``); its budget error names the option (the batchers call it max_tokens)."""
    try:
        return cls(
            *data, cfg.batch_tokens, seed=cfg.seed, rank=rank, world_size=world_size, pad_id=pad_id, pool_size=100 * 64
        )
    except ValueError as e:
        raise ValueError(f"batch_tokens={cfg.batch_tokens}: {e}") from None


def _nonempty(corpus: ParallelCorpus | None, what: str, cfg: TrainConfig) -> ParallelCorpus | None:
    """``corpus``, or a ``ValueError`` naming its files when it holds no pair (empty, blank or all too long);
    a warning when source and target are one file (``--src-lang X --tgt-lang X``: a copy task)."""
    if corpus is not None and corpus.src_path is not None and corpus.tgt_path is not None:
        if Path(corpus.src_path).resolve() == Path(corpus.tgt_path).resolve():
            log.warning("%s source and target are the same file, %s: the model learns to copy", what, corpus.src_path)
    if corpus is None or len(corpus):
        return corpus
    where = f"{corpus.src_path} / {corpus.tgt_path}"
    if corpus.n_read == 0:
        why = "the files are empty"
    else:
        why = f"of their {corpus.n_read} lines, {corpus.n_empty} are blank on a side"
        if corpus.n_too_long:
            why += f" and {corpus.n_too_long} longer than max_tokens_per_sentence={cfg.max_tokens_per_sentence} words"
    raise ValueError(f"no {what} pairs in {where}: {why}")


class TranslationTask:
    """A sequence-to-sequence task on a parallel corpus (translation, grapheme-to-phoneme)."""

    name = "translation"
    unit = "pairs"

    def load_data(self, cfg: TrainConfig) -> tuple[ParallelCorpus, ParallelCorpus | None, str]:
        """The training and validation corpora, and where validation was looked for (for the notice when absent)."""
        if cfg.data_dir is not None:
            files = find_corpus(cfg.data_dir, cfg.src_lang, cfg.tgt_lang)
            train = files.load("train", max_words=cfg.max_tokens_per_sentence, max_pairs=cfg.max_pairs)
            valid = files.load("valid", max_words=None) if files.has("valid") else None
            prefixes = ", ".join(f"{p}.{files.src_lang}" for p in VALID_PREFIXES)
            return (
                _nonempty(train, "training", cfg),
                _nonempty(valid, "validation", cfg),
                f"{cfg.data_dir} has none of {prefixes} (each with its .{files.tgt_lang}, optionally .gz)",
            )
        if cfg.train_src is None:
            raise ValueError("no training data: give data_dir (--data) or train_src/train_tgt (--src/--tgt)")
        train = load_parallel(
            cfg.train_src, cfg.train_tgt, max_words=cfg.max_tokens_per_sentence, max_pairs=cfg.max_pairs
        )
        valid = None
        if cfg.valid_src and cfg.valid_tgt:
            valid = load_parallel(cfg.valid_src, cfg.valid_tgt, max_words=None)
        return (
            _nonempty(train, "training", cfg),
            _nonempty(valid, "validation", cfg),
            "no --valid-src/--valid-tgt given",
        )

    def fingerprint(self, corpus: ParallelCorpus | None) -> dict[str, Any] | None:
        """Number of pairs and SHA-256 of their text: tells a resumed run whether it is given the same data."""
        if corpus is None:
            return None
        return {"pairs": len(corpus), "sha256": _sha256_lines(corpus.src, corpus.tgt)}

    def vocab_sides(self, corpus: ParallelCorpus, joint: bool) -> list[list[str]]:
        """The texts each vocabulary is trained on (one joint text, or source and target)."""
        return [corpus.src + corpus.tgt] if joint else [corpus.src, corpus.tgt]

    def train_tokenizers(self, corpus: ParallelCorpus, config: TokenizerConfig) -> TokenizerPair:
        return TokenizerPair.train(corpus.src, corpus.tgt, config)

    def model_config(self, cfg: TrainConfig, tokenizers: TokenizerPair) -> Seq2SeqConfig:
        preset = getattr(model_presets, cfg.preset)
        overrides = dict(cfg.model)
        overrides.setdefault("src_vocab_size", tokenizers.src.vocab_size)
        overrides.setdefault("tgt_vocab_size", tokenizers.tgt.vocab_size)
        if tokenizers.joint and "share_embeddings" not in overrides:
            overrides["share_embeddings"] = "all"
        overrides.setdefault("pad_id", tokenizers.tgt.pad_id)
        overrides.setdefault("bos_id", tokenizers.tgt.bos_id)
        overrides.setdefault("eos_id", tokenizers.tgt.eos_id)
        return preset(attention=cfg.attention, **overrides)

    def batchers(
        self, cfg: TrainConfig, tokenizers: TokenizerPair, model_config: Seq2SeqConfig, train: ParallelCorpus,
        valid: ParallelCorpus | None, rank: int | None, world_size: int, say,
    ) -> tuple[TokenBatcher, TokenBatcher | None]:  # fmt: skip
        """The training batcher (``rank``'s share of ``world_size``) and the validation batcher (or ``None``)."""
        # a pair longer than the model's position table would stop training in the middle of an epoch
        max_len = min(cfg.max_tokens_per_sentence, model_config.max_len)
        src, tgt, dropped = encode_pairs(tokenizers, train.src, train.tgt, max_len)
        if dropped:
            say(f"dropped {dropped} training pairs longer than {max_len} tokens")
        if not src:
            raise ValueError(f"no training pairs left: all {dropped} are longer than {max_len} tokens")
        pad = tokenizers.tgt.pad_id
        batcher = _train_batcher(TokenBatcher, cfg, (src, tgt), rank, world_size, pad)
        valid_batcher = None
        if valid is not None:
            vs, vt, v_long = encode_pairs(tokenizers, valid.src, valid.tgt, max_len)
            where = f"{valid.src_path} / {valid.tgt_path}"
            if not vs:
                raise ValueError(
                    f"validation data {where}: all {v_long} pairs are longer than {max_len} tokens, so no validation "
                    "loss can be measured; give shorter validation pairs or a model with a larger max_len"
                )
            if v_long:  # a warning, also with --quiet: it changes what valid_loss measures
                log.warning(
                    "validation: %d of %d pairs (%s) are longer than %d tokens: valid_loss leaves them out%s",
                    v_long, len(valid), where, max_len,
                    "" if cfg.valid_metric == "loss" else f"; {cfg.valid_metric} decodes them all",
                )  # fmt: skip
            valid_batcher = TokenBatcher(vs, vt, cfg.batch_tokens, shuffle=False, rank=None, pad_id=pad)
        return batcher, valid_batcher

    @staticmethod
    def n_labels(batch) -> int:
        return int(batch.tgt_mask.sum())

    @staticmethod
    def logits(forward, batch) -> torch.Tensor:
        """The teacher-forced logits of ``batch``; ``forward`` is the model or its DDP wrapper."""
        return forward(batch.src, batch.tgt_in, batch.src_mask, batch.tgt_mask)

    @staticmethod
    def loss(model, logits: torch.Tensor, batch, label_smoothing: float) -> tuple[torch.Tensor, int]:
        """(summed loss over the batch's labels, tokens read: source + target)."""
        loss, _ = model.loss(logits, batch.tgt_out, label_smoothing, reduction="sum")
        return loss, int(batch.src_mask.sum()) + int(batch.tgt_mask.sum())

    @torch.no_grad()
    def validate(self, trainer) -> dict[str, float]:
        """Validation loss (teacher forcing) and, unless ``metric`` is ``loss``, decoding metrics."""
        from ..decode.search import SearchConfig
        from ..decode.translate import translate_lines
        from ..evaluation import score_g2p, score_translation

        model, cfg, valid = trainer.model, trainer.cfg, trainer.valid
        tot, n = 0.0, 0
        for b in trainer.valid_batcher.epoch_batches(0):
            batch = trainer.valid_batcher.make_batch(b).to(trainer.device)
            logits = model(batch.src, batch.tgt_in, batch.src_mask, batch.tgt_mask)
            tot += float(model.loss(logits, batch.tgt_out, label_smoothing=0.0, reduction="sum")[0])
            n += int(batch.tgt_mask.sum())
        out = {"valid_loss": tot / max(n, 1)}
        if cfg.valid_metric != "loss":
            k = cfg.valid_max_sentences or len(valid)
            srcs, refs = valid.src[:k], valid.tgt[:k]
            search = SearchConfig(beam_size=cfg.valid_beam, max_len=trainer.model_config.max_len)
            hyps = translate_lines(model, trainer.tokenizers, srcs, search, device=trainer.device)
            if cfg.valid_metric in ("wer", "per"):
                s = score_g2p(hyps, refs)
                out.update(wer=s.wer, per=s.per)
            else:
                s = score_translation(hyps, refs)
                out.update(bleu=s.bleu, chrf=s.chrf)
        return out


class LanguageModelTask:
    """Next-token prediction on a text folder with a decoder-only model (see the module docstring)."""

    name = "lm"
    unit = "lines"

    def load_data(self, cfg: TrainConfig) -> tuple[TextCorpus, TextCorpus | None, str]:
        if cfg.data_dir is None:
            raise ValueError(
                "no training data: task=lm reads a text folder, give data_dir (--data) holding train.txt "
                "and valid.txt (plain or .gz; another extension with text_suffix)"
            )
        files = find_text(cfg.data_dir, cfg.text_suffix)
        train_path = files.get("train")
        train = TextCorpus(load_text(train_path, max_lines=cfg.max_pairs), train_path)
        if not train.lines:
            raise ValueError(f"{train_path}: no text (every line is blank)")
        valid = None
        if files.has("valid"):
            path = files.get("valid")
            valid = TextCorpus(load_text(path), path)
            if not valid.lines:
                raise ValueError(f"{path}: no text (every line is blank)")
        names = ", ".join(f"{p}.{cfg.text_suffix}" for p in VALID_PREFIXES)
        return train, valid, f"{cfg.data_dir} has none of {names} (optionally .gz)"

    def fingerprint(self, corpus: TextCorpus | None) -> dict[str, Any] | None:
        if corpus is None:
            return None
        return {"lines": len(corpus), "sha256": _sha256_lines(corpus.lines)}

    def vocab_sides(self, corpus: TextCorpus, joint: bool) -> list[list[str]]:
        return [corpus.lines]

    def train_tokenizers(self, corpus: TextCorpus, config: TokenizerConfig) -> TokenizerPair:
        return train_lm_tokenizer(corpus.lines, config)

    def model_config(self, cfg: TrainConfig, tokenizers: TokenizerPair) -> DecoderOnlyConfig:
        preset = getattr(model_presets, f"{cfg.preset}_lm")
        tok = tokenizers.tgt
        overrides = dict(cfg.model)
        overrides.setdefault("vocab_size", tok.vocab_size)
        overrides.setdefault("pad_id", tok.pad_id)
        overrides.setdefault("bos_id", tok.bos_id)
        overrides.setdefault("eos_id", tok.eos_id)
        return preset(attention=cfg.attention, **overrides)

    def batchers(
        self, cfg: TrainConfig, tokenizers: TokenizerPair, model_config: DecoderOnlyConfig, train: TextCorpus,
        valid: TextCorpus | None, rank: int | None, world_size: int, say,
    ) -> tuple[LMBatcher, None]:  # fmt: skip
        """The training batcher; validation scores the text directly (:func:`score_text`), without one."""
        window = model_config.max_len
        seqs, _, n_long = lm_sequences(tokenizers, train.lines, window, long="split")
        if n_long:
            say(f"{n_long} training lines are longer than the model's window of {window} tokens: split into windows")
        pad = tokenizers.tgt.pad_id
        batcher = _train_batcher(LMBatcher, cfg, (seqs,), rank, world_size, pad)
        return batcher, None

    @staticmethod
    def n_labels(batch) -> int:
        return batch.n_tokens

    @staticmethod
    def logits(forward, batch) -> torch.Tensor:
        return forward(batch.inputs, batch.mask)

    @staticmethod
    def loss(model, logits: torch.Tensor, batch, label_smoothing: float) -> tuple[torch.Tensor, int]:
        """(summed loss over the predicted ids, ids read)."""
        loss, _ = model.loss(logits, batch.targets, label_smoothing, reduction="sum")
        return loss, batch.n_tokens

    @torch.no_grad()
    def validate(self, trainer) -> dict[str, float]:
        from ..decode.perplexity import score_text

        s = score_text(
            trainer.model, trainer.tokenizers, trainer.valid.lines, max_tokens=trainer.cfg.batch_tokens,
            device=trainer.device,
        )  # fmt: skip
        return {"valid_loss": s.nll_per_token, "valid_ppl": s.token_perplexity, "valid_bpb": s.bits_per_byte}


def task_for(cfg: TrainConfig) -> TranslationTask | LanguageModelTask:
    """The task ``cfg.task`` names."""
    return LanguageModelTask() if cfg.task == "lm" else TranslationTask()
