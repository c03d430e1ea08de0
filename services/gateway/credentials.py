"""Who may call the gateway: `HEADRACE_TOKEN` and the credentials file, read at start.

`HEADRACE_TOKEN` is one full-access (writer) token. `HEADRACE_CREDENTIALS_FILE` names a
TOML file of more bearer tokens and basic-auth users, each with a role; it holds no
secret in clear (token SHA-256 digests, scrypt password hashes: `headrace auth new-token`
and `headrace auth hash-password` make them):

    [[tokens]]
    name = "ci"
    role = "writer"
    sha256 = "<64 hex digits>"

    [[users]]
    name = "ada"
    role = "reader"
    password = "scrypt$16384$8$5$<salt>$<hash>"

A reader may call GET routes (and validate flows) and sees webhook keys masked; a
writer may call every route. A bad file stops the gateway with what and where.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from headrace.config import Settings
from headrace.errors import ConfigError
from headrace.passwords import PasswordHash, parse_token_digest, token_digest
from headrace.token_file import TOKEN_ENV


class Role(StrEnum):
    READER = "reader"
    WRITER = "writer"


@dataclass(frozen=True, slots=True)
class TokenCredential:
    name: str
    role: Role
    digest: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class UserCredential:
    name: str
    role: Role
    password: PasswordHash = field(repr=False)


@dataclass(frozen=True, slots=True)
class Credentials:
    tokens: tuple[TokenCredential, ...] = ()
    users: dict[str, UserCredential] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.tokens and not self.users


def load_credentials(settings: Settings) -> Credentials:
    """The gateway's credentials; ConfigError when there are none at all."""
    tokens: list[TokenCredential] = []
    users: dict[str, UserCredential] = {}
    if settings.api_token:
        digest = bytes.fromhex(token_digest(settings.api_token))
        tokens.append(TokenCredential(TOKEN_ENV, Role.WRITER, digest))
    if settings.credentials_file:
        from_file = read_credentials_file(Path(settings.credentials_file))
        tokens += from_file.tokens
        users = from_file.users
    credentials = Credentials(tuple(tokens), users)
    if credentials.empty:
        raise ConfigError(
            "the gateway has no credentials: set HEADRACE_TOKEN (a long random value, e.g. "
            "from `headrace auth new-token`) or HEADRACE_CREDENTIALS_FILE; see docs/security.md"
        )
    return credentials


_TOKEN_KEYS = {"name", "role", "sha256"}
_USER_KEYS = {"name", "role", "password"}


def read_credentials_file(path: Path) -> Credentials:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the credentials file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"tokens", "users"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)}; expected tokens, users")
    tokens: dict[str, TokenCredential] = {}
    for where, entry in _entries(path, data, "tokens", _TOKEN_KEYS):
        name = _name(entry, where)
        if name in tokens:
            raise ConfigError(f"{where}.name: token {name!r} is listed twice")
        digest = _parse(parse_token_digest, entry, "sha256", where)
        tokens[name] = TokenCredential(name, _role(entry, where), digest)
    users: dict[str, UserCredential] = {}
    for where, entry in _entries(path, data, "users", _USER_KEYS):
        name = _name(entry, where)
        if ":" in name:
            raise ConfigError(f"{where}.name: a basic-auth user name cannot hold ':'")
        if name in users:
            raise ConfigError(f"{where}.name: user {name!r} is listed twice")
        password = _parse(PasswordHash, entry, "password", where)
        users[name] = UserCredential(name, _role(entry, where), password)
    return Credentials(tuple(tokens.values()), users)


def _entries(
    path: Path, data: dict[str, Any], table: str, keys: set[str]
) -> list[tuple[str, dict[str, Any]]]:
    entries = data.get(table, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{path}: {table} must be an array of tables ([[{table}]])")
    found = []
    for index, entry in enumerate(entries):
        where = f"{path}: {table}[{index}]"
        if set(entry) != keys:
            missing, extra = sorted(keys - set(entry)), sorted(set(entry) - keys)
            raise ConfigError(
                f"{where}: expected the keys {sorted(keys)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )
        found.append((where, entry))
    return found


def _name(entry: dict[str, Any], where: str) -> str:
    name = entry["name"]
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name: must be non-empty text")
    return name


def _role(entry: dict[str, Any], where: str) -> Role:
    try:
        return Role(entry["role"])
    except ValueError:
        raise ConfigError(
            f"{where}.role: {entry['role']!r} is not a role (reader or writer)"
        ) from None


def _parse(parse: Any, entry: dict[str, Any], key: str, where: str) -> Any:
    value = entry[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: must be text")
    try:
        return parse(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{key}: {exc}") from None
