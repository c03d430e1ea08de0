"""Secrets from a directory the operator mounts: one file per secret.

`HEADRACE_SECRETS_DIR=/run/secrets` makes the file `/run/secrets/PG_PASSWORD` the value of
`{{ secret('PG_PASSWORD') }}`, as Docker and Kubernetes mount secrets. The directory is
read once, at start, by the process that holds the worker's secrets (a worker, or
`headrace server local`, which hands them to its workers); from then on the values live
in memory like `HEADRACE_SECRET_*` ones (`headrace.sealed_env`). A process cannot hide a
file from its own tasks, which run as its user: docs/security.md says what follows.

Rules, each refused at start with the file's name rather than guessed at:
- a file's name is the secret's name (`secret()`'s characters: letters, digits, `_.-`);
- hidden entries are skipped (Kubernetes keeps its `..data` links there), and so are
  subdirectories;
- the value is the file's UTF-8 text, less one trailing newline (`echo value > file`);
- a name also set as `HEADRACE_SECRET_<NAME>` is an error: two values, no winner.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from headrace.errors import ConfigError
from headrace.sealed_env import SECRET_PREFIX
from headrace.secret_markers import NAME_PATTERN

SECRETS_DIR_ENV = "HEADRACE_SECRETS_DIR"
MAX_SECRET_BYTES = 1024 * 1024  # a certificate chain fits; a misplaced dump does not
_NAME = re.compile(f"{NAME_PATTERN}")


def read_secrets_dir(directory: Path) -> dict[str, str]:
    """The secrets in `directory`, as sealed variables (`HEADRACE_SECRET_<name>`)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        raise ConfigError(f"{SECRETS_DIR_ENV}={directory}: {exc.strerror}") from None
    secrets = {}
    for entry in entries:
        if entry.name.startswith(".") or entry.is_dir():
            continue
        path = directory / entry.name
        if not _NAME.fullmatch(entry.name):
            raise ConfigError(
                f"{path}: a secret's file name is its name, made of letters, digits, "
                "'_', '.' and '-'"
            )
        secrets[SECRET_PREFIX + entry.name] = _read_value(path)
    return secrets


def _read_value(path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the secret: {exc.strerror}") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{path}: a secret holds at most {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: a secret is UTF-8 text (encode binary values, e.g. in base64)"
        ) from None
    return text.removesuffix("\n").removesuffix("\r")


def with_secret_files(sealed: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """`sealed` plus the secrets of the directory `environ` names, if any."""
    directory = environ.get(SECRETS_DIR_ENV)
    if not directory:
        return dict(sealed)
    from_files = read_secrets_dir(Path(directory))
    both = sorted(name.removeprefix(SECRET_PREFIX) for name in from_files.keys() & sealed)
    if both:
        raise ConfigError(
            f"secret {', '.join(both)}: set both in {SECRETS_DIR_ENV} ({directory}) and "
            f"as {SECRET_PREFIX}<NAME>; keep one"
        )
    return {**sealed, **from_files}
