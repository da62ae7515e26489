"""Training configuration: a frozen dataclass, read from YAML/JSON, overridden from the command line.

A run is reproducible from its saved ``train_config.json`` (written into every checkpoint).
Override syntax on the command line: ``--set key=value`` (repeatable), values parsed as YAML
scalars (``--set lr=5e-4 --set attention=entmax15 --set max_steps=2000``); the model's own fields
go through ``model.<field>=value`` (e.g. ``--set model.d_model=128``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = [
    "TrainConfig",
    "TASKS",
    "RECIPES",
    "load_train_config",
    "parse_overrides",
    "resume_differences",
    "auto_warmup_steps",
    "auto_log_every",
    "RESUMABLE_OPTIONS",
    "AUTO_OPTIONS",
    "LOWER_IS_BETTER",
    "valid_metric_of",
    "metric_mode_of",
]

_DEVICES = ("auto", "cpu", "cuda")
_AMP = ("auto", "none", "bf16", "fp16")
_TOKENIZERS = ("bpe", "unigram", "char", "whitespace")
_METRICS = ("bleu", "chrf", "loss", "wer", "per")
_SCHEDULES = ("inverse_sqrt", "noam")
TASKS = ("translation", "lm")
_TRANSLATION_METRICS = ("bleu", "chrf", "wer", "per")

#: Named sets of training options. A recipe supplies defaults: options given in the config file or with
#: ``--set`` win over it. ``"paper"`` is the set-up of Correia, Niculae & Martins (2019) as their OpenNMT-py
#: code ran it: one Adam for all parameters with β = (0.9, 0.998), the noam schedule with factor 2
#: (``lr`` is noam's factor) and 8,000 warmup updates, 8,192-token batches, dropout 0.1, label smoothing 0.1,
#: no gradient clipping, no weight decay (on θ neither), θ ~ N(0, 1) with α = clamp(1 + sigmoid θ, 1.01, 2).
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {
        "schedule": "noam",
        "lr": 2.0,
        "warmup_steps": 8000,
        "betas": [0.9, 0.998],
        "adam_eps": 1e-9,
        "weight_decay": 0.0,
        "alpha_lr_scale": 1.0,
        "batch_tokens": 8192,
        "label_smoothing": 0.1,
        "clip_norm": 0.0,
        "model": {"dropout": 0.1, "attn_dropout": 0.1, "alpha_init": "normal", "alpha_parametrization": "clamp"},
    },
}


def _under_recipe(d: dict[str, Any], source: str) -> dict[str, Any]:
    """``d`` on top of the options of the recipe it names (if any); ``model`` mappings are merged."""
    name = d.get("recipe")
    if name is None:
        return d
    if name not in RECIPES:
        raise ValueError(f"{source}: recipe={name!r} is unknown; known recipes: {sorted(RECIPES)}")
    out = {**RECIPES[name], **d}
    out["model"] = {**RECIPES[name].get("model", {}), **(d.get("model") or {})}
    return out


# the command-line flag of an option, where `adasparse train` has one (else --set key=value)
_FLAGS = {
    "data_dir": "--data",
    "src_lang": "--src-lang",
    "tgt_lang": "--tgt-lang",
    "task": "--task",
    "text_suffix": "--text-suffix",
    "train_src": "--src",
    "train_tgt": "--tgt",
    "valid_src": "--valid-src",
    "valid_tgt": "--valid-tgt",
    "preset": "--preset",
    "attention": "--attention",
    "seed": "--seed",
    "recipe": "--recipe",
}
# options a resumed run may change (``--resume --set key=value``); every other one is the run's own, from its
# checkpoint. The data locations may move: a resumed run checks the data by content (a fingerprint of the pairs).
RESUMABLE_OPTIONS = (
    "max_steps", "max_epochs", "max_minutes", "patience", "valid_every", "valid_beam", "valid_max_sentences",
    "keep_last", "log_every", "device", "amp", "num_threads",
    "data_dir", "train_src", "train_tgt", "valid_src", "valid_tgt",
)  # fmt: skip
# options whose default (None) is chosen from the data and max_steps when a run starts (see TrainConfig)
AUTO_OPTIONS = ("vocab_size", "warmup_steps", "log_every")


LOWER_IS_BETTER = frozenset({"loss", "wer", "per"})


def valid_metric_of(options: dict[str, Any]) -> str:
    """The validation metric of training options (a :class:`TrainConfig` as a dict, or a checkpoint's saved
    ``"train"`` options): ``metric``, or by default ``bleu`` for translation and ``loss`` for ``task=lm``."""
    metric = options.get("metric")
    if metric is not None:
        return str(metric)
    return "loss" if options.get("task") == "lm" else "bleu"


def metric_mode_of(metric: str) -> str:
    """``"min"`` for a metric where lower is better (:data:`LOWER_IS_BETTER`), else ``"max"``."""
    return "min" if metric in LOWER_IS_BETTER else "max"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data files' contents.

    Task: ``task="translation"`` (default; an encoder–decoder on a parallel corpus) or ``"lm"`` (a decoder-only
    language model on a text folder: ``data_dir`` with ``train.{text_suffix}`` and ``valid.{text_suffix}``, plain
    or ``.gz``, ``text_suffix`` ``"txt"`` by default; see :mod:`adasparse.train.tasks`). Options whose default
    depends on the task (``None`` = automatic): ``metric`` (``bleu`` / ``loss``) and ``label_smoothing``
    (0.1 / 0); :attr:`valid_metric` and :attr:`smoothing` give the values in force. ``max_pairs`` keeps the first
    training pairs (for ``task="lm"``: the first non-blank lines).

    Data: ``data_dir`` (folder with ``train``/``valid``/``test`` prefixes and language suffixes) or
    explicit ``train_src``/``train_tgt`` (+ ``valid_src``/``valid_tgt``). ``tokenizer`` is
    ``"bpe"``/``"unigram"`` (SentencePiece, ``vocab_size`` pieces, ``joint_vocab``), ``"char"`` or
    ``"whitespace"`` (space-separated symbols, e.g. graphemes/phonemes).

    Model: ``preset`` (``tiny``/``small``/``base``), ``attention`` for all three attention types
    (``softmax``/``sparsemax``/``entmax15``/``learned``/α), and ``model`` overrides of any
    :class:`adasparse.models.Seq2SeqConfig` field.

    ``data_world_size`` (default: the number of processes) makes the batch schedule of that many ranks; a
    single process with ``data_world_size=W`` and ``accum_steps=W`` sees, step by step, the same global
    batches as ``W`` processes with ``accum_steps=1``.

    Optimisation: AdamW with ``betas``, the learning-rate ``schedule`` — ``"inverse_sqrt"`` (peak ``lr`` after
    linear ``warmup_steps``, then ∝ 1/√step) or ``"noam"`` (OpenNMT-py's: ``lr`` is the noam factor, the rate
    is ``lr · d_model^{-1/2} · min(step^{-1/2}, step · warmup^{-3/2})``) —, label smoothing, gradient
    clipping, accumulation. ``recipe="paper"`` sets the paper's options (see :data:`RECIPES`).
    ``alpha_lr_scale`` multiplies the learning rate of the learned-α parameters θ (by default
    α = 1.01 + 0.99 · sigmoid θ): Adam moves each θ by at most about ``lr`` per update, so with the paper's 1×
    α can travel only ≈ ¼ · Σ lr over a run (≈ 0.24 in 1,500 updates at lr 1e-3); a larger scale lets short runs find their α.

    Stopping: at ``max_steps`` updates, ``max_epochs`` epochs, ``max_minutes`` of training in this session (a
    resumed run gets ``max_minutes`` again) or ``patience`` scheduled validations (every ``valid_every`` updates)
    without improvement on the best of them; the extra validation where a session ends is checkpointed but not
    counted, so where sessions end does not change when a run stops.

    Defaults that scale (``None``, resolved when a run starts and saved with it): ``vocab_size`` = one piece per
    20 words of training text, at least every character plus the special pieces, at most 8,000
    (:func:`adasparse.data.tokenizer.auto_vocab_size`); ``warmup_steps`` = ``max_steps // 10``, at most 4,000;
    ``log_every`` = ``max_steps // 20``, between 1 and 50. The last update of a run is always logged.

    Resuming: the options are the run's own (its checkpoint's ``config.json``, key ``"train"``); only
    :data:`RESUMABLE_OPTIONS` may change.
    """

    # task and data
    task: str = "translation"
    data_dir: str | None = None
    text_suffix: str = "txt"
    src_lang: str | None = None
    tgt_lang: str | None = None
    train_src: str | None = None
    train_tgt: str | None = None
    valid_src: str | None = None
    valid_tgt: str | None = None
    tokenizer: str = "bpe"
    vocab_size: int | None = None
    joint_vocab: bool = True
    max_tokens_per_sentence: int = 200
    max_pairs: int | None = None
    # model
    preset: str = "small"
    attention: str | float = "learned"
    model: dict[str, Any] = field(default_factory=dict)
    # optimisation
    recipe: str | None = None
    schedule: str = "inverse_sqrt"
    lr: float = 7e-4
    alpha_lr_scale: float = 1.0
    warmup_steps: int | None = None
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-9
    weight_decay: float = 0.0
    label_smoothing: float | None = None
    clip_norm: float = 1.0
    accum_steps: int = 1
    batch_tokens: int = 4096
    max_steps: int = 100_000
    max_epochs: int | None = None
    max_minutes: float | None = None
    # evaluation and checkpoints
    valid_every: int = 1000
    valid_beam: int = 1
    valid_max_sentences: int | None = 500
    metric: str | None = None
    patience: int | None = None
    keep_last: int = 3
    log_every: int | None = None
    # runtime
    seed: int = 1
    device: str = "auto"
    amp: str = "auto"
    num_threads: int | None = None
    data_world_size: int | None = None

    def __post_init__(self):
        if self.tokenizer not in _TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {_TOKENIZERS}, got {self.tokenizer!r}")
        if self.device not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}, got {self.device!r}")
        if self.amp not in _AMP:
            raise ValueError(f"amp must be one of {_AMP}, got {self.amp!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.metric is not None and self.metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS} or null (auto), got {self.metric!r}")
        if self.task == "lm" and self.metric in _TRANSLATION_METRICS:
            raise ValueError(
                f"metric={self.metric!r} scores translations; a language model (task=lm) is validated by its "
                "loss per token (metric: loss, the default for task=lm; perplexity = exp(loss))"
            )
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"recipe={self.recipe!r} is unknown; known recipes: {sorted(RECIPES)}")
        if self.preset not in ("tiny", "small", "base"):
            raise ValueError(f"preset must be 'tiny', 'small' or 'base', got {self.preset!r}")
        for name in ("batch_tokens", "max_steps", "accum_steps", "valid_every", "keep_last"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("vocab_size", "log_every"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v <= 0):
                raise ValueError(f"{name} must be a positive int or null (auto), got {v!r}")
        for name in ("valid_beam", "max_tokens_per_sentence"):
            if not _is_int(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("max_epochs", "patience", "valid_max_sentences", "max_pairs", "num_threads", "data_world_size"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v <= 0):
                raise ValueError(f"{name} must be a positive int or null, got {v!r}")
        if not _is_int(self.seed):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if self.warmup_steps is not None and (not _is_int(self.warmup_steps) or self.warmup_steps < 0):
            raise ValueError(f"warmup_steps must be an int >= 0 or null (auto), got {self.warmup_steps!r}")
        for name in ("lr", "adam_eps", "alpha_lr_scale"):
            if not _is_number(getattr(self, name)) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        for name in ("clip_norm", "weight_decay"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a number >= 0 (0 = off), got {getattr(self, name)!r}")
        for name in ("lr", "adam_eps", "alpha_lr_scale", "clip_norm", "weight_decay", "max_minutes"):
            v = getattr(self, name)
            if _is_number(v) and not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if self.max_minutes is not None and (not _is_number(self.max_minutes) or self.max_minutes <= 0):
            raise ValueError(f"max_minutes must be a positive number or null, got {self.max_minutes!r}")
        ls = self.label_smoothing
        if ls is not None and (not _is_number(ls) or not 0.0 <= ls < 1.0):
            raise ValueError(f"label_smoothing must be in [0, 1) or null (auto), got {ls!r}")
        if not isinstance(self.text_suffix, str) or not self.text_suffix or "." in self.text_suffix:
            raise ValueError(
                f"text_suffix must be a file extension without dots, e.g. 'txt' or 'en', got {self.text_suffix!r}"
            )
        if self.task == "lm":
            given = [n for n in ("src_lang", "tgt_lang", "train_src", "train_tgt", "valid_src", "valid_tgt")
                     if getattr(self, n) is not None]  # fmt: skip
            if given:
                raise ValueError(
                    f"{'/'.join(given)} ({', '.join(_FLAGS[n] for n in given)}) are options of translation; "
                    "task=lm reads a text folder: data_dir (--data) with train.txt and valid.txt (another "
                    "extension, e.g. the 'en' of a translation corpus, with text_suffix)"
                )
            if not self.joint_vocab:
                raise ValueError("joint_vocab=false: a language model (task=lm) has one tokenizer")
        if not isinstance(self.joint_vocab, bool):
            raise ValueError(f"joint_vocab must be true or false, got {self.joint_vocab!r}")
        if not (isinstance(self.betas, list | tuple) and len(self.betas) == 2 and all(map(_is_number, self.betas))):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        for name in ("data_dir", "src_lang", "tgt_lang", "train_src", "train_tgt", "valid_src", "valid_tgt"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError(f"{name} must be a string (a path or a language suffix), got {v!r}")
        files = [n for n in ("train_src", "train_tgt", "valid_src", "valid_tgt") if getattr(self, n) is not None]
        if self.data_dir is not None and files:
            raise ValueError(
                f"give either data_dir (--data, a corpus folder) or {'/'.join(files)} "
                f"({', '.join(_FLAGS[n] for n in files)}), not both: with data_dir they would be ignored"
            )
        if self.data_dir is None:
            langs = [n for n in ("src_lang", "tgt_lang") if getattr(self, n) is not None]
            if langs:
                raise ValueError(
                    f"{'/'.join(langs)} ({', '.join(_FLAGS[n] for n in langs)}) name the languages of a corpus folder: "
                    "they need data_dir (--data)"
                )
            if (self.train_src is None) != (self.train_tgt is None):
                raise ValueError("give both train_src and train_tgt (--src and --tgt), or data_dir (--data)")
            if (self.valid_src is None) != (self.valid_tgt is None):
                given, missing = (
                    ("valid_src", "valid_tgt") if self.valid_src is not None else ("valid_tgt", "valid_src")
                )
                raise ValueError(
                    f"{given} ({_FLAGS[given]}) needs {missing} ({_FLAGS[missing]}): a validation set has two sides"
                )
            if self.patience is not None and self.valid_src is None and self.train_src is not None:
                raise ValueError(
                    f"patience={self.patience} stops on validation, but no validation set is given "
                    "(valid_src/valid_tgt, --valid-src/--valid-tgt)"
                )
        if not isinstance(self.model, dict):
            raise ValueError(f"model must be a mapping of Seq2SeqConfig overrides, got {self.model!r}")
        self._check_model()

    @property
    def valid_metric(self) -> str:
        """The validation metric: ``metric``, or by default ``bleu`` for translation and ``loss`` for ``task=lm``."""
        return valid_metric_of({"metric": self.metric, "task": self.task})

    @property
    def metric_mode(self) -> str:
        """``"min"`` when a lower :attr:`valid_metric` is better (loss, WER, PER), else ``"max"`` (BLEU, chrF)."""
        return metric_mode_of(self.valid_metric)

    @property
    def smoothing(self) -> float:
        """The label smoothing: ``label_smoothing``, or by default 0.1 for translation (the paper's) and 0 for
        ``task=lm`` (so that the training loss is the log-perplexity it reports)."""
        if self.label_smoothing is not None:
            return float(self.label_smoothing)
        return 0.0 if self.task == "lm" else 0.1

    def _check_model(self) -> None:
        """Build the model config once with stand-in vocabulary sizes, so that a bad ``attention`` or ``model``
        entry is reported now, not after reading the corpus and training the tokenizer."""
        from ..models import config as presets

        kw = dict(self.model)
        if self.task == "lm":
            kw.setdefault("vocab_size", 1 << 16)
            preset = getattr(presets, f"{self.preset}_lm")
        else:
            if "vocab_size" not in kw:
                kw.setdefault("src_vocab_size", 1 << 16)
                kw.setdefault("tgt_vocab_size", 1 << 16)
            preset = getattr(presets, self.preset)
        try:
            preset(attention=self.attention, **kw)
        except TypeError as e:  # a value of the wrong type, e.g. attention=[1.5]
            raise ValueError(f"attention/model options: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{source}: unknown training options {unknown}; allowed: {sorted(names)}")
        d = _under_recipe(d, source)
        try:
            return cls(**d)
        except ValueError as e:  # a bad value: say which file it came from
            raise ValueError(f"{source}: {e}") from None

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with ``overrides`` applied; keys ``model.<field>`` go into :attr:`model`. An override
        ``recipe=NAME`` applies that recipe's options first (the other overrides win over it)."""
        top = {k: v for k, v in overrides.items() if not k.startswith("model.")}
        model = dict(self.model)
        if top.get("recipe") is not None:
            recipe = _under_recipe({"recipe": top["recipe"]}, "--set recipe")
            model.update(recipe.pop("model"))
            top = {**recipe, **top}
        if "model" in top:  # model={d_model: 64, ...} adds to the model overrides
            given = top.pop("model")
            if not isinstance(given, dict):
                raise ValueError(
                    f"model must be a mapping of Seq2SeqConfig overrides (or use model.<field>=value), got {given!r}"
                )
            model.update(given)
        model.update({k[len("model.") :]: v for k, v in overrides.items() if k.startswith("model.")})
        names = {f.name for f in fields(self)}
        unknown = sorted(set(top) - names)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; allowed: {sorted(names)} and model.<field>")
        return replace(self, **top, model=model)


def auto_warmup_steps(max_steps: int) -> int:
    """The default warmup: a tenth of the run, at most 4,000 updates (the paper's), at least 1."""
    return max(1, min(4000, max_steps // 10))


def auto_log_every(max_steps: int) -> int:
    """The default logging interval: about 20 records a run, every 1 to 50 updates."""
    return max(1, min(50, max_steps // 20))


def resume_differences(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """``"key: saved → now"`` for each option of ``cfg`` that a resumed run may not change (see
    :data:`RESUMABLE_OPTIONS`) and that differs from the run's ``saved`` options. An automatic option left at
    ``None`` takes the run's value; an option the saved dict lacks (an older version) is not compared."""
    out = []
    for key, now in cfg.to_dict().items():
        if key in RESUMABLE_OPTIONS or key not in saved or (key in AUTO_OPTIONS and now is None):
            continue
        was = saved[key]
        if key == "betas" and isinstance(was, list | tuple):
            was = [float(b) for b in was]
        if was != now:
            flag = f" ({_FLAGS[key]})" if key in _FLAGS else ""
            out.append(f"{key}{flag}: {was!r} → {now!r}")
    return out


def _yaml_loader():
    """PyYAML's safe loader, reading ``5e-4`` and ``1e9`` as numbers (YAML 1.2) rather than strings (YAML 1.1)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    number = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789."))
    return Loader


def _load_yaml(text: str) -> Any:
    import yaml

    return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader: no arbitrary objects


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["lr=5e-4", "model.d_model=128"]`` → ``{"lr": 0.0005, "model.d_model": 128}`` (YAML scalars)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = _load_yaml(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: invalid value: {getattr(e, 'problem', e)}") from None
    return out


def load_train_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, base: dict[str, Any] | None = None
) -> TrainConfig:
    """Read a YAML or JSON file (``None``: defaults), then apply ``overrides``.

    ``base`` (e.g. a resumed run's saved options) replaces the defaults under the file's options.
    """
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(
                f"training config {p} " + ("is a folder, not a file" if p.is_dir() else "does not exist")
            )
        try:
            text = p.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = p.read_bytes()[: e.start].count(b"\n") + 1
            raise ValueError(
                f"training config {p}, line {line}: not valid UTF-8 (byte {e.start}); save it as UTF-8"
            ) from None
        if p.suffix == ".json":
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}, line {e.lineno}: invalid JSON: {e.msg}") from None
        else:
            import yaml

            try:
                loaded = _load_yaml(text) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                where = f", line {mark.line + 1}" if mark is not None else ""
                raise ValueError(f"{p}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: expected a mapping of options at the top level, got {type(loaded).__name__}")
        data.update(loaded)
    overrides = dict(overrides or {})
    if overrides.get("recipe") is not None:  # the recipe goes beneath the file's options, not over them
        data = {**data, "recipe": overrides.pop("recipe")}
    source = str(path) if path else ("the run's saved options" if base else "defaults")
    cfg = TrainConfig.from_dict(data, source=source)
    return cfg.with_overrides(overrides)
