"""The language catalog: the codes phrases may use, each with a name and a resource group.

A language must be in `languages` before phrases in it can be loaded; `add_language` is the
one way xling adds one (`xling corpus languages add`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from xling.warehouse.errors import XlingError

if TYPE_CHECKING:
    from xling.warehouse import Warehouse

# A language code as xling stores it: ISO 639 letters, optionally a region or script tag.
LANG_CODE = r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*"
_LANG_CODE_RE = re.compile(f"^{LANG_CODE}$")
RESOURCE_GROUPS = ("high", "low")


def known_languages(wh: Warehouse) -> list[str]:
    """Codes of the warehouse's languages, sorted."""
    return [r[0] for r in wh.con.execute("SELECT lang FROM languages ORDER BY lang").fetchall()]


def add_language(wh: Warehouse, code: str, name: str, group: str) -> None:
    """Add a language to `languages` (needed before phrases in it can be loaded)."""
    if not _LANG_CODE_RE.match(code):
        raise XlingError(f"{code!r} is not a language code; use e.g. de, pt_BR, yue")
    if group not in RESOURCE_GROUPS:
        raise XlingError(f"resource group must be one of {', '.join(RESOURCE_GROUPS)}")
    if not name.strip():
        raise XlingError("the language needs a name, e.g. German")
    if wh.con.execute("SELECT 1 FROM languages WHERE lang = ?", [code]).fetchall():
        raise XlingError(
            f'language {code!r} exists; regroup it with `xling sql "UPDATE languages SET '
            f"resource_group = 'low' WHERE lang = '{code}'\" --write`"
        )
    with wh.transaction() as con:
        con.execute("INSERT INTO languages VALUES (?, ?, ?)", [code, name.strip(), group])
