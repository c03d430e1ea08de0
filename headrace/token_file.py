"""The local token: what `headrace server local` accepts and the CLI sends on this machine.

`HEADRACE_TOKEN` wins wherever it is set. Otherwise `server local` reuses the token file
in the user's config folder (`$XDG_CONFIG_HOME/headrace/token`, else
`~/.config/headrace/token`), creating it on first start, and clients read the same file:
as with Jupyter, whoever can read the user's files can use the local server, nobody else.

The file is created whole and private (mode 0600, folder 0700) in one step: it is
written under a temporary name and linked into place, so a reader never sees it empty
and two servers starting at once end up with the same token.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from headrace.errors import ConfigError

TOKEN_ENV = "HEADRACE_TOKEN"
TOKEN_BYTES = 32  # 256 bits, 43 URL-safe characters
FILE_MODE = 0o600
FOLDER_MODE = 0o700


def token_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    config_home = env.get("XDG_CONFIG_HOME", "")
    # The XDG spec: a relative value is invalid and must be ignored.
    base = Path(config_home) if os.path.isabs(config_home) else Path.home() / ".config"
    return base / "headrace" / "token"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """The token in `path`, creating the file when there is none; (token, created)."""
    existing = read_token_file(path)
    if existing is not None:
        return existing, False
    path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    token = new_token()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")
        try:
            os.link(temporary, path)  # fails if another process created it meanwhile
        except FileExistsError:
            raced = read_token_file(path)
            if raced is None:
                raise ConfigError(f"the token file {path} vanished while it was created") from None
            return raced, False
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return token, True


def read_token_file(path: Path) -> str | None:
    """The token in `path`, None when there is no such file.

    A file others may read, or that another user owns, is refused rather than trusted:
    its token may be known to someone else.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from None
    with os.fdopen(fd) as file:
        info = os.fstat(file.fileno())
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"the token file {path} is readable by other users or not yours: its token "
                "may be known; delete the file (a new token is made at the next start of "
                "`headrace server local`) or `chmod 600` it if you are sure"
            )
        token = file.read().strip()
    if not token:
        raise ConfigError(f"the token file {path} is empty: delete it to get a new token")
    return token


def find_token(environ: Mapping[str, str] | None = None) -> str | None:
    """What a client sends: `HEADRACE_TOKEN`, else the local token file, else nothing."""
    env = os.environ if environ is None else environ
    return env.get(TOKEN_ENV) or read_token_file(token_path(env))
