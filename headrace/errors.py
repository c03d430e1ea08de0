"""The root of every error headrace raises on purpose.

Callers catch `HeadraceError` to tell our errors (which carry a message fit for a user)
from bugs (which carry a traceback fit for a developer).
"""


class HeadraceError(Exception):
    """Base class of every error headrace raises deliberately."""


class PathError(HeadraceError):
    """An error about one value at `path` (e.g. `tasks[0].message`), with the reason."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ConfigError(HeadraceError):
    """A setting (environment variable or CLI option) is missing or malformed."""


class CodecError(HeadraceError):
    """A Kafka message could not be decoded (unknown schema fingerprint, corrupt bytes,
    invalid JSON or enum inside) or encoded (a value the wire format cannot carry)."""
