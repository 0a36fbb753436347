"""Machine translation of the corpus: English phrases of groups that lack a language are
translated with one MarianMT model per target language (`Helsinki-NLP/opus-mt-en-{lang}`),
as the paper built its ten-language dataset.

Weights load as safetensors only unless pickle files are explicitly allowed; remote code is
never run. All translations of one call are appended in a single transaction.
"""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from xling.ingest.corpus_load import LoadResult, load_phrases
from xling.ingest.languages import known_languages
from xling.warehouse.errors import XlingError, missing_extra

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "Helsinki-NLP/opus-mt-en-{lang}"
# Called as progress(lang, done, total) when a language starts (done=0) and after each batch.
Progress = Callable[[str, int, int], None]


@dataclass
class TranslateConfig:
    """A translation job (`xling corpus translate`)."""

    targets: list[str] = field(default_factory=list)
    """Languages to fill in [default: every language of the warehouse but the source]."""
    model_template: str = DEFAULT_TEMPLATE
    """Hub id or local directory of the model for a target, `{lang}` standing for its code."""
    source_lang: str = "en"
    """Language translated from; groups without a phrase in it are left alone."""
    batch_size: int = 32
    """Phrases per generate() call (sorted by length to cut padding)."""
    limit: int | None = None
    """At most this many phrases per target language (lowest phrase ids first)."""
    max_new_tokens: int = 256
    """Cap on generated tokens per phrase."""
    device: str | None = None
    """torch device [default: cuda when available, else cpu]."""
    allow_pickle: bool = False
    """Also load pickle (.bin) weights when a model has no safetensors. Unpickling can run
    code: only for models you trust."""

    def __post_init__(self) -> None:
        if "{lang}" not in self.model_template:
            raise XlingError(
                f"model template {self.model_template!r} has no {{lang}}; e.g. {DEFAULT_TEMPLATE}"
            )
        if self.batch_size < 1:
            raise XlingError("--batch-size must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise XlingError("--limit must be at least 1")
        if self.max_new_tokens < 1:
            raise XlingError("max_new_tokens must be at least 1")
        if self.source_lang in self.targets:
            raise XlingError(f"{self.source_lang} is the source language; drop it from --to")

    def model_name(self, lang: str) -> str:
        return self.model_template.format(lang=lang)


def missing_translations(wh: Warehouse, cfg: TranslateConfig, lang: str) -> pd.DataFrame:
    """group_id and source text of the groups holding `cfg.source_lang` but not `lang`."""
    return wh.sql(
        """
        SELECT p.group_id, p.text FROM phrases p
        WHERE p.lang = $src AND NOT EXISTS (
            SELECT 1 FROM phrases q WHERE q.group_id = p.group_id AND q.lang = $dst)
        ORDER BY p.phrase_id
        LIMIT $limit
        """,
        {"src": cfg.source_lang, "dst": lang, "limit": cfg.limit},
    )


def load_translator(name: str, *, allow_pickle: bool = False, device: str = "cpu") -> tuple:
    """(model, tokenizer) of a seq2seq translation model, in eval mode on `device`."""
    try:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    except ImportError:
        raise missing_extra("transformers", "models") from None
    if name.startswith(("/", "./", "../")) and not Path(name).is_dir():
        raise XlingError(f"no model directory {name}; check --model-template")
    _refuse_model_code(name)
    try:
        with warnings.catch_warnings():
            # MarianTokenizer recommends sacremoses, which only normalises punctuation.
            warnings.filterwarnings("ignore", message=".*sacremoses.*")
            # trust_remote_code=False, not left unset: unset, transformers asks "Do you wish
            # to run the custom code? [y/N]" for a model with its own code, and `y` runs it.
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
        # use_safetensors=True makes transformers refuse .bin (pickle) weights.
        model = AutoModelForSeq2SeqLM.from_pretrained(
            name, use_safetensors=None if allow_pickle else True, trust_remote_code=False
        )
    except (OSError, ValueError, pickle.UnpicklingError) as err:
        # ValueError: transformers refusing a repository's own code; UnpicklingError: torch's
        # weights_only loader refusing a pickle that holds more than tensors.
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "safetensors" in detail and not allow_pickle:
            raise XlingError(
                f"translation model {name} has no safetensors weights; convert it to "
                "safetensors, or pass --allow-pickle to load its pickle weights if you trust it"
            ) from None
        if "trust_remote_code" in str(err):
            raise XlingError(
                f"translation model {name} needs its own Python code to load, which xling "
                "never runs; use a MarianMT (or other transformers-native) model"
            ) from None
        raise XlingError(f"cannot load translation model {name}: {detail}") from None
    return model.to(device).eval(), tokenizer


def _refuse_model_code(name: str) -> None:
    """Refuse a model whose config names its own classes (`auto_map`) before transformers
    sees it: with trust_remote_code=False transformers skips that code but may then load the
    checkpoint into a generic class, failing later with a message that hides the reason."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(name)
    except (OSError, ValueError):
        return  # no readable config: the load itself reports that
    tokenizer_config = Path(name) / "tokenizer_config.json"
    custom = "auto_map" in config
    if not custom and tokenizer_config.is_file():
        try:
            custom = "auto_map" in json.loads(tokenizer_config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            custom = False
    if custom:
        raise XlingError(
            f"translation model {name} needs its own Python code to load, which xling never "
            "runs; use a MarianMT (or other transformers-native) model"
        )


def translate_texts(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 256,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Translations of `texts`, in order; `on_batch(done, total)` after each batch. Batches
    hold texts of similar length."""
    import torch

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[str] = [""] * len(texts)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True
        ).to(device)
        with torch.inference_mode():
            generated = model.generate(**batch, max_new_tokens=max_new_tokens)
        for i, text in zip(
            idx, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True
        ):
            out[i] = text.strip()
        if on_batch:
            on_batch(start + len(idx), len(texts))
    return out


def translate_missing(
    wh: Warehouse, cfg: TranslateConfig, progress: Progress | None = None
) -> LoadResult:
    """Translate the source phrases of groups lacking each target language and load the
    translations in one transaction (`source` names the model). Empty outputs are dropped."""
    known = known_languages(wh)
    targets = cfg.targets or [lang for lang in known if lang != cfg.source_lang]
    unknown = [t for t in [cfg.source_lang, *targets] if t not in known]
    if unknown:
        raise XlingError(
            f"unknown language code(s) {', '.join(unknown)}; add them with "
            "`xling corpus languages add CODE NAME --group high|low`"
        )
    device = cfg.device or _default_device()
    frames: list[pd.DataFrame] = []
    notes: list[str] = []
    for lang in targets:
        todo = missing_translations(wh, cfg, lang)
        if todo.empty:
            notes.append(f"{lang}: nothing to translate")
            continue
        name = cfg.model_name(lang)
        log.info("translating %d phrases into %s with %s", len(todo), lang, name)
        model, tokenizer = load_translator(name, allow_pickle=cfg.allow_pickle, device=device)
        if progress:
            progress(lang, 0, len(todo))
        texts = translate_texts(
            model,
            tokenizer,
            todo["text"].tolist(),
            batch_size=cfg.batch_size,
            max_new_tokens=cfg.max_new_tokens,
            on_batch=partial(progress, lang) if progress else None,
        )
        del model
        rows = pd.DataFrame({"group_id": todo["group_id"], "lang": lang, "text": texts})
        rows["source"] = name
        empty = rows["text"] == ""
        if empty.any():
            notes.append(f"{lang}: {int(empty.sum())} empty translation(s) dropped")
        frames.append(rows[~empty])
    if not frames:
        return LoadResult(0, 0, 0, {}, notes=notes)
    result = load_phrases(wh, pd.concat(frames, ignore_index=True))
    result.notes.extend(notes)
    return result


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
