"""An offline aligned corpus: names of languages, territories, scripts, currencies, months and
weekdays as each locale writes them, from the CLDR data that ships with Babel.

One group per (kind, CLDR key), e.g. `territories:DE` holding "Germany", "德国", "Германия", ...
A locale whose script is not Latin sometimes has no native name and CLDR falls back to a
Latin one (or the name is a bare code); such names are dropped, as are empty ones, so every
phrase is real text in its language.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pandas as pd

from xling.ingest.corpus_load import LoadResult, load_phrases
from xling.ingest.languages import known_languages
from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    from babel import Locale

    from xling.warehouse import Warehouse

log = logging.getLogger(__name__)

KINDS = ("languages", "territories", "scripts", "currencies", "months", "weekdays")
# Babel numbers weekdays from Monday = 0; CLDR keys name them.
_WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _names(locale: Locale, kind: str) -> dict[str, str]:
    """{CLDR key: name} of one kind in one locale (stand-alone forms for months and days)."""
    if kind == "months":
        return {str(k): v for k, v in locale.months["stand-alone"]["wide"].items()}
    if kind == "weekdays":
        return {_WEEKDAY_KEYS[k]: v for k, v in locale.days["stand-alone"]["wide"].items()}
    return dict(getattr(locale, kind).items())


def _key_order(key: str) -> tuple[int, str]:
    """Weekdays Monday first, numeric keys (months, UN regions) by number, then codes."""
    if key in _WEEKDAY_KEYS:
        return _WEEKDAY_KEYS.index(key), key
    return (int(key), key) if key.isdigit() else (10_000, key)


def locale_script(lang: str) -> str:
    """ISO 15924 script a language is written in by default (`hi` -> `Deva`)."""
    from babel.core import get_global

    likely = get_global("likely_subtags").get(lang, "")
    parts = likely.split("_")
    return parts[1] if len(parts) > 2 else "Latn"


def is_latin(text: str) -> bool:
    """True when no letter of `text` is outside the Latin script (names with no letters too)."""
    return all("LATIN" in unicodedata.name(ch, "") for ch in text if ch.isalpha())


def cldr_frame(
    kinds: Iterable[str] | None = None,
    langs: Iterable[str] | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Phrase rows (group_id, lang, text, source) of aligned CLDR names.

    `limit` keeps at most that many groups per kind, those in the most languages first (then
    by key), so a small corpus is as complete as it can be.
    """
    import babel
    from babel import Locale, UnknownLocaleError
    from babel.core import get_cldr_version

    kinds = list(kinds or KINDS)
    langs = list(langs or ())
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise XlingError(f"unknown CLDR kind(s) {', '.join(bad)}; choose from {', '.join(KINDS)}")
    if limit is not None and limit < 1:
        raise XlingError("--limit must be at least 1")
    locales: dict[str, Locale] = {}
    for lang in langs:
        try:
            locales[lang] = Locale.parse(lang)
        except (UnknownLocaleError, ValueError):
            raise XlingError(
                f"Babel has no CLDR locale for language {lang!r}; drop it from --langs"
            ) from None
    latin = {lang: locale_script(lang) == "Latn" for lang in langs}
    source = f"cldr-{get_cldr_version()} (babel {babel.__version__})"
    rows: list[tuple[str, str, str]] = []
    dropped = 0
    for kind in kinds:
        by_key: dict[str, dict[str, str]] = {}
        for lang, locale in locales.items():
            for key, name in _names(locale, kind).items():
                name = (name or "").strip()
                if not name or (not latin[lang] and is_latin(name)):
                    dropped += 1
                    continue
                by_key.setdefault(key, {})[lang] = name
        keys = sorted(by_key, key=_key_order)
        if limit:
            keys = sorted(keys, key=lambda k: -len(by_key[k]))[:limit]
        for key in keys:
            rows.extend((f"{kind}:{key}", lang, name) for lang, name in by_key[key].items())
    log.info("cldr: %d names, %d empty or Latin-fallback names dropped", len(rows), dropped)
    df = pd.DataFrame(rows, columns=["group_id", "lang", "text"])
    df["source"] = source
    return df


def load_cldr(
    wh: Warehouse,
    kinds: Iterable[str] | None = None,
    langs: Iterable[str] | None = None,
    limit: int | None = None,
) -> LoadResult:
    """Load aligned CLDR names (`xling corpus cldr`); names already loaded are skipped, so a
    rerun only adds what is missing. `langs` defaults to every language of the warehouse."""
    langs = list(langs or known_languages(wh))
    return load_phrases(wh, cldr_frame(kinds, langs, limit), on_existing="skip")
