"""The one exception type users see: a single line naming the problem and the fix."""


class XlingError(Exception):
    """A user-facing error. The CLI prints its message on one line and exits 1."""


class WarehouseLocked(XlingError):
    """Another process holds the warehouse's write lock."""


def missing_extra(package: str, extra: str) -> XlingError:
    return XlingError(
        f"{package} is not installed; install the '{extra}' extra: pip install 'xling[{extra}]'"
    )
