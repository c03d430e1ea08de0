"""The root of every error headrace raises on purpose.

Callers catch `HeadraceError` to tell our errors (which carry a message fit for a user)
from bugs (which carry a traceback fit for a developer).
"""


class HeadraceError(Exception):
    """Base class of every error headrace raises deliberately."""


class ConfigError(HeadraceError):
    """A setting (environment variable or CLI option) is missing or malformed."""


class CodecError(HeadraceError):
    """A Kafka message could not be decoded (unknown schema fingerprint, corrupt bytes,
    invalid JSON or enum inside) or encoded (a value the wire format cannot carry)."""
