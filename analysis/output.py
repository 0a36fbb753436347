"""Writing output files without losing data: the checks and the atomic write every exporter,
figure and report uses.

An output path is refused when it is (or resolves through links to) the open warehouse or one
of its sidecars (`.wal`, the `.tmp` folder), when it exists and is not a regular file (a
device such as /dev/null, a FIFO, a socket, a folder), and when it exists and `force` is not
given. The content is written to a hidden temporary file in the same folder and renamed over
the destination, so a failed write leaves the destination as it was.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from xling.warehouse.errors import XlingError

SIDECARS = (".wal", ".tmp")


def protected_paths(warehouse: str | os.PathLike | None) -> list[Path]:
    """The warehouse file and its sidecars, resolved; empty for an in-memory warehouse."""
    if warehouse is None:
        return []
    text = str(warehouse)
    if text.startswith("parquet:"):
        return [Path(text.removeprefix("parquet:")).resolve()]
    if text == ":memory:":
        return []
    p = Path(text).resolve()
    return [p, *(p.with_name(p.name + s) for s in SIDECARS)]


def check_not_warehouse(out: Path, protected: Iterable[Path]) -> None:
    """Refuse `out` when it is the warehouse, a sidecar, or lies inside one (a folder)."""
    target = out.resolve()
    for p in protected:
        if target == p or p in target.parents:
            raise XlingError(
                f"{out} is the open warehouse or one of its files ({p.name}); "
                "writing there would destroy it; pick another --out"
            )


def check_out_file(
    out: str | os.PathLike,
    *,
    warehouse: str | os.PathLike | None = None,
    force: bool = False,
    suffixes: tuple[str, ...] | None = None,
) -> Path:
    """`out` checked as a file to write (see the module docstring); returns it as a Path."""
    out = Path(out)
    check_not_warehouse(out, protected_paths(warehouse))
    if os.path.lexists(out):
        try:
            mode = os.stat(out).st_mode
        except OSError:
            raise XlingError(f"{out} is a broken link; remove it or pick another --out") from None
        if stat.S_ISDIR(mode):
            raise XlingError(f"{out} is a directory; pass a file path with --out")
        if not stat.S_ISREG(mode):
            raise XlingError(
                f"{out} exists and is not a regular file (a device, FIFO or socket); "
                "pick another --out"
            )
        if not force:
            raise XlingError(f"{out} exists; pass --force to replace it")
        if not os.access(out, os.W_OK):
            raise XlingError(f"cannot write {out}: permission denied; pick another --out")
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise XlingError(f"{out} has no known extension; use one of {', '.join(suffixes)}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise XlingError(f"folder {parent} does not exist; create it or pick another --out")
    if not parent.is_dir():
        raise XlingError(f"{parent} is not a folder; pick another --out")
    if not os.access(parent, os.W_OK):
        raise XlingError(f"cannot write {out}: permission denied; pick another --out")
    return out


def write_atomic(out: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a new temporary file beside `out`, then rename it to `out`.

    The temporary file is removed on any failure; OSErrors become one-line XlingErrors.
    """
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{out.name}.", suffix=".xling-tmp", dir=out.parent or "."
        )
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        # mkstemp makes the file 0600; give it the permissions a normal new file gets
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except OSError as err:
        raise XlingError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
