"""Logging for the `xling` command: one handler on stderr, one line a record.

The library logs (`logging.getLogger(__name__)` under `xling.`) and never configures
logging; the CLI does, here, once per invocation:

- default: warnings and errors from xling and from the libraries it calls;
- `-v`: also xling's info (what a step did, how long it took); `-vv`: xling's debug and
  every library's info, each line naming its logger;
- `-q`: errors only.

Python warnings (`warnings.warn`, which transformers, sae-lens and torch use for deprecations)
are captured into logging (`logging.captureWarnings`) and printed like the rest: one line,
`warning: <message> (<Category>, <file>:<line>)`, instead of the message plus a source line.
transformers' own logger keeps its handler (`[transformers] <message>`, one line), with the
threshold of -v/-q.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback

# Where a Python warning's text comes from: warnings.formatwarning writes
# "{file}:{line}: {Category}: {message}\n" and then, when it finds it, "  {source line}\n".
_WARNING_TEXT = re.compile(
    r"^(?P<file>.*?):(?P<line>\d+): (?P<category>\w+): (?P<message>.*)$", re.S
)
_SOURCE_LINE = re.compile(r"\n  [^\n]*\n?$")


def one_line(text: str) -> str:
    """`text` with every run of whitespace that holds a line break turned into one space."""
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _short_path(path: str) -> str:
    """site-packages/transformers/modeling_utils.py -> transformers/modeling_utils.py."""
    parts = path.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :])
    return "/".join(parts[-2:])


class LineFormatter(logging.Formatter):
    """`level: message`, on one line; with `names`, `level name: message`."""

    def __init__(self, *, names: bool = False, tracebacks: bool = False) -> None:
        super().__init__()
        self.names = names
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "py.warnings":
            message = self._warning(message)
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            if self.tracebacks:
                message += "\n" + "".join(traceback.format_exception(err)).rstrip()
                return f"{self._prefix(record)}{message}"
            message += f" ({type(err).__name__}: {err})"
        return self._prefix(record) + one_line(message)

    def _prefix(self, record: logging.LogRecord) -> str:
        level = record.levelname.lower()
        return f"{level} {record.name}: " if self.names else f"{level}: "

    @staticmethod
    def _warning(text: str) -> str:
        m = _WARNING_TEXT.match(_SOURCE_LINE.sub("", text))
        if m is None:
            return text
        return f"{m['message']} ({m['category']}, {_short_path(m['file'])}:{m['line']})"


class StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is when a record comes (a progress bar or a test runner
    may have replaced it since the handler was made)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass  # always the current sys.stderr


class _Threshold(logging.Filter):
    """xling's records from `xling_level`, everyone else's from `other_level`."""

    def __init__(self, xling_level: int, other_level: int) -> None:
        super().__init__()
        self.xling_level = xling_level
        self.other_level = other_level

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.name == "xling" or record.name.startswith("xling.")
        return record.levelno >= (self.xling_level if ours else self.other_level)


def levels(verbose: int, quiet: bool) -> tuple[int, int]:
    """(xling's threshold, other libraries' threshold) for -v (counted) and -q."""
    if quiet:
        return logging.ERROR, logging.ERROR
    if verbose >= 2:
        return logging.DEBUG, logging.INFO
    if verbose == 1:
        return logging.INFO, logging.WARNING
    return logging.WARNING, logging.WARNING


def setup_logging(verbose: int = 0, quiet: bool = False) -> logging.Handler:
    """Install the CLI's one handler on the root logger (replacing the one a previous call in
    this process installed) and capture Python warnings; returns the handler."""
    xling_level, other_level = levels(verbose, quiet)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, StderrHandler)]:
        root.removeHandler(old)
    handler = StderrHandler()
    handler.setFormatter(LineFormatter(names=verbose >= 2, tracebacks=verbose >= 2))
    handler.addFilter(_Threshold(xling_level, other_level))
    root.addHandler(handler)
    # Levels decide which records are made at all; the handler's filter decides which print.
    root.setLevel(min(other_level, logging.WARNING))
    logging.getLogger("xling").setLevel(xling_level if verbose else logging.NOTSET)
    # Off, then on: a second call must capture into logging again even when something (a
    # warnings.catch_warnings block, a test runner) has replaced warnings.showwarning since
    # the first, which captureWarnings(True) alone leaves as it finds it.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    if verbose or quiet:
        _transformers_level(other_level)
    return handler


def _transformers_level(level: int) -> None:
    """transformers prints its logger through a handler of its own (it does not propagate to
    ours); give it the same threshold. Set by environment when it is not imported yet, so
    that `xling --help` does not import it."""
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity(level)
    else:
        os.environ["TRANSFORMERS_VERBOSITY"] = logging.getLevelName(level).lower()
