"""lm-evaluation-harness results documents: per-language scores, the model, the steering.

lm-eval names one task per language (`arc_hi`, `hellaswag_es`, `m_mmlu_ml`, `xling_mc_en`);
xling stores one row per (model, task, language, metric): task `arc`, lang `hi`, metric
`acc`. English Okapi scores come from `arc_challenge` and `hellaswag`. A group whose name
carries no language (`arc_multilingual`, `xling_mc`) is opened and its per-language members
stored; a per-language group without its own scores is folded the way lm-eval aggregates
groups by default (mean weighted by each subtask's sample count, pooled standard error).

A results file is read as untrusted input: every section is checked to have the shape
lm-eval writes, so a malformed file is one `XlingError` naming the section, never a traceback.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from xling.analysis.bench_scores import Score
from xling.warehouse.errors import XlingError

# lm-eval task names that are English without saying so (the Okapi papers' English baselines).
ENGLISH_TASKS = {"arc_challenge": "arc", "hellaswag": "hellaswag"}
# lm-eval task families whose per-language name differs from the benchmark's name.
TASK_RENAMES = {"m_mmlu": "mmlu"}
_LANG_SUFFIX = re.compile(r"^(?P<task>.+)_(?P<lang>[a-z]{2,3})$")


def split_task_name(name: str, known_langs: Iterable[str] = ()) -> tuple[str, str] | None:
    """lm-eval task name -> (benchmark, language), or None when the name carries no language.

    `arc_hi` -> (arc, hi), `m_mmlu_hi` -> (mmlu, hi), `arc_challenge` -> (arc, en). A two- or
    three-letter suffix is a language when the warehouse knows it or it is a language code
    with CLDR data (so `arc_ar` is reported as a language the warehouse lacks, while
    `mmlu_law` and `xling_mc` carry no language).
    """
    from babel import localedata

    if name in ENGLISH_TASKS:
        return ENGLISH_TASKS[name], "en"
    m = _LANG_SUFFIX.match(name)
    if m is None or not (m["lang"] in set(known_langs) or localedata.exists(m["lang"])):
        return None
    return TASK_RENAMES.get(m["task"], m["task"]), m["lang"]


def _number(value: Any) -> float | None:
    """A JSON number as float; None for "N/A", null and other non-numbers. An integer too
    large for a float (JSON has no limit) is infinite, so it is refused like one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _metric_values(entry: dict[str, Any]) -> dict[str, tuple[float, float | None]]:
    """{metric: (value, stderr)} from an lm-eval result entry (`acc,none`, `acc_stderr,none`).

    The filter is dropped when it is `none`, kept (`exact_match,strict-match`) otherwise.
    """
    out: dict[str, tuple[float, float | None]] = {}
    for key, raw in entry.items():
        metric, sep, filt = key.partition(",")
        if not sep or metric.endswith("_stderr"):
            continue
        value = _number(raw)
        if value is None:
            continue
        stderr = _number(entry.get(f"{metric}_stderr,{filt}"))
        if stderr is not None and not math.isfinite(stderr):
            stderr = None
        out[metric if filt == "none" else key] = (value, stderr)
    return out


def _weighted_fold(
    parts: list[tuple[float, float | None, int | None]],
) -> tuple[float, float | None, int | None]:
    """Fold subtask (value, stderr, n) into one, as lm-eval's default group aggregation does.

    Weighted by n (`aggregate_subtask_metrics`) with the pooled standard error
    (`pooled_sample_stderr`); when a size is unknown, the plain mean and the standard error of
    a mean of independent means (lm-eval's `weight_by_size: false`).
    """
    values = [p[0] for p in parts]
    stderrs = [p[1] for p in parts]
    sizes = [p[2] for p in parts]
    if all(n is not None and n > 0 for n in sizes):
        total = sum(sizes)
        value = sum(v * n for v, n in zip(values, sizes, strict=True)) / total
        stderr = None
        if all(s is not None for s in stderrs) and total > len(sizes):
            pooled = sum((n - 1) * s * s * n for s, n in zip(stderrs, sizes, strict=True))
            stderr = _finite(math.sqrt(pooled / (total - len(sizes)) / total))
        return value, stderr, total
    stderr = None
    if all(s is not None for s in stderrs):
        stderr = _finite(math.sqrt(sum(s * s for s in stderrs)) / len(stderrs))
    return sum(values) / len(values), stderr, None


def _finite(x: float) -> float | None:
    # s * s rather than s**2: a float power overflows with an exception, a product with inf.
    return x if math.isfinite(x) else None


# Deeper group nesting than any lm-eval suite has; a deeper file is broken, not ambitious.
MAX_GROUP_DEPTH = 64
_INT64_MAX = 2**63 - 1  # benchmarks.n_samples is a BIGINT
_INT32_MAX = 2**31 - 1  # benchmarks.num_fewshot is an INTEGER


def _section(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """`doc[key]` as an object ({} when absent or null), or XlingError naming the section."""
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise XlingError(
            f"{where}: '{key}' is a {type(value).__name__}, not an object as lm-eval writes it"
        )
    return value


def _count(value: Any, what: str, where: str, limit: int) -> int | None:
    """A JSON integer in 0..limit (None when absent), or XlingError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise XlingError(f"{where}: {what} is {str(value)[:40]!r}, not a count from 0 to {limit}")
    return value


class _LmevalResults:
    """One lm-eval results document, walked from its top-level tasks and groups.

    Every section is checked on construction (objects where lm-eval writes objects, subtask
    lists of names, no group that contains itself), so walking it cannot fail later."""

    def __init__(self, doc: dict[str, Any], where: str) -> None:
        results = doc.get("results")
        if not isinstance(results, dict):
            raise XlingError(
                f"{where}: not an lm-evaluation-harness results file (no 'results' object); "
                "pass the results_*.json that lm-eval writes, not its samples"
            )
        self.where = where
        self.entries: dict[str, dict[str, Any]] = {}
        for section in (results, _section(doc, "groups", where)):
            for name, entry in section.items():
                if isinstance(entry, dict):
                    self.entries.setdefault(name, {}).update(entry)
        self.children: dict[str, list[str]] = {}
        for name, kids in _section(doc, "group_subtasks", where).items():
            if kids is None:
                continue
            if not isinstance(kids, list) or not all(isinstance(k, str) for k in kids):
                raise XlingError(f"{where}: group_subtasks of {name!r} is not a list of task names")
            if kids:
                self.children[name] = list(dict.fromkeys(kids))
        self._check_nesting()
        self.n_samples = _section(doc, "n-samples", where)
        self.n_shot = _section(doc, "n-shot", where)

    def _check_nesting(self) -> None:
        """Refuse a group that contains itself, or nesting deeper than MAX_GROUP_DEPTH (both
        would recurse without end); iterative, so the check itself cannot overflow."""
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for root in self.children:
            if state.get(root):
                continue
            path, stack = [root], [iter(self.children[root])]
            state[root] = 1
            while stack:
                kid = next(stack[-1], None)
                if kid is None:
                    state[path.pop()] = 2
                    stack.pop()
                    continue
                if state.get(kid) == 1:
                    cycle = [*path[path.index(kid) :], kid]
                    raise XlingError(
                        f"{self.where}: group_subtasks has a cycle ({' -> '.join(map(repr, cycle))}); "
                        "a group cannot contain itself"
                    )
                if state.get(kid) == 2 or kid not in self.children:
                    continue
                if len(path) >= MAX_GROUP_DEPTH:
                    raise XlingError(
                        f"{self.where}: group_subtasks nest deeper than {MAX_GROUP_DEPTH} levels"
                    )
                state[kid] = 1
                path.append(kid)
                stack.append(iter(self.children[kid]))

    def roots(self) -> list[str]:
        inner = {kid for kids in self.children.values() for kid in kids}
        names = dict.fromkeys([*self.entries, *self.children])
        return [name for name in names if name not in inner]

    def leaves(self, name: str) -> list[str]:
        kids = self.children.get(name)
        if not kids:
            return [name]
        return [leaf for kid in kids for leaf in self.leaves(kid)]

    def size(self, name: str) -> int | None:
        counts = self.n_samples.get(name)
        if isinstance(counts, dict) and counts.get("effective") is not None:
            return _count(counts["effective"], f"n-samples of {name!r}", self.where, _INT64_MAX)
        n = self.entries.get(name, {}).get("sample_len")
        if n is not None:
            return _count(n, f"sample_len of {name!r}", self.where, _INT64_MAX)
        if name in self.children:
            sizes = [self.size(leaf) for leaf in self.leaves(name)]
            if all(s is not None for s in sizes):
                return _count(sum(sizes), f"the sample count of {name!r}", self.where, _INT64_MAX)
        return None

    def metrics(self, name: str) -> dict[str, tuple[float, float | None, int | None]]:
        """{metric: (value, stderr, n)}: the entry's own numbers, else its leaves folded."""
        own = _metric_values(self.entries.get(name, {}))
        if own:
            n = self.size(name)
            return {metric: (v, s, n) for metric, (v, s) in own.items()}
        parts: dict[str, list[tuple[float, float | None, int | None]]] = {}
        for leaf in self.leaves(name):
            if leaf == name:
                continue
            n = self.size(leaf)
            for metric, (v, s) in _metric_values(self.entries.get(leaf, {})).items():
                parts.setdefault(metric, []).append((v, s, n))
        folded = {metric: _weighted_fold(p) for metric, p in parts.items()}
        for _, _, n in folded.values():
            _count(n, f"the sample count of {name!r}", self.where, _INT64_MAX)
        return folded

    def num_fewshot(self, name: str) -> int | None:
        return _count(self.n_shot.get(name), f"n-shot of {name!r}", self.where, _INT32_MAX)


def scores_from_lmeval(
    doc: dict[str, Any], known_langs: Iterable[str], *, where: str = "results"
) -> tuple[list[Score], dict[str, str]]:
    """Per-language scores of an lm-eval results document, and {task: why skipped}.

    Raises XlingError on a NaN or infinite score of a task that would be stored, and when two
    lm-eval tasks give the same (task, lang) (e.g. `arc_challenge` and an `arc_en`).
    """
    known = set(known_langs)
    res = _LmevalResults(doc, where)
    scores: list[Score] = []
    skipped: dict[str, str] = {}
    seen: dict[tuple[str, str], str] = {}

    def visit(name: str) -> bool:
        split = split_task_name(name, known)
        if split is None:
            if name not in res.children:
                skipped[name] = "no language in the task name"
                return False
            mark = len(skipped)
            stored = [visit(kid) for kid in res.children[name]]
            if any(stored):
                return True
            # Nothing below was stored: report the group once instead of each member.
            for kid in list(skipped)[mark:]:
                del skipped[kid]
            skipped[name] = "no per-language task inside"
            return False
        task, lang = split
        if lang not in known:
            skipped[name] = f"language '{lang}' is not in the warehouse"
            return False
        if seen.get((task, lang)) == name:
            return True  # listed by two groups: stored once
        if (task, lang) in seen:
            raise XlingError(
                f"{where}: lm-eval tasks {seen[task, lang]} and {name} both give {task}/{lang}; "
                "import them from separate files"
            )
        seen[task, lang] = name
        metrics = res.metrics(name)
        if not metrics:
            skipped[name] = "no numeric metric"
            return False
        for metric, (value, stderr, n) in metrics.items():
            if not math.isfinite(value):
                raise XlingError(
                    f"{where}: {name} {metric} is {value}; nothing was imported "
                    "(fix or remove the task in the file)"
                )
            scores.append(Score(task, lang, metric, value, stderr, n, res.num_fewshot(name)))
        return True

    for root in res.roots():
        visit(root)
    return scores, skipped


def model_of_lmeval(doc: dict[str, Any]) -> tuple[str | None, str | None]:
    """(model name, adapter path) an lm-eval results document was produced with.

    From `config.model_args` (`pretrained=...`, `peft=...`; string or dict), else the
    top-level `model_name` (which lm-eval sets to the adapter path when there is one).
    """
    config = doc.get("config") or {}
    args = config.get("model_args") if isinstance(config, dict) else None
    parsed: dict[str, Any] = {}
    if isinstance(args, str):
        parsed = dict(part.split("=", 1) for part in args.split(",") if "=" in part)
    elif isinstance(args, dict):
        parsed = args
    adapter = parsed.get("peft")
    name = parsed.get("pretrained")
    if not isinstance(name, str) and not adapter and isinstance(doc.get("model_name"), str):
        name = doc["model_name"]
    return (name if isinstance(name, str) else None), (str(adapter) if adapter else None)


def steer_of_lmeval(doc: dict[str, Any], *, where: str = "results") -> str | None:
    """The intervention a file written by `xling bench run --out` was measured under."""
    steer = _section(doc, "xling", where).get("steer")
    return steer if isinstance(steer, str) else None
