"""Secrets at rest: scrypt hashes of basic-auth passwords, SHA-256 digests of tokens.

A password hash is self-describing text, `scrypt$<n>$<r>$<p>$<salt>$<hash>` (salt and
hash in unpadded URL-safe base64), so the cost can be raised later without breaking the
hashes already written. Tokens are long random values, not words a person chose: a
single SHA-256 cannot be reversed for them, and checking one costs nothing.

Every comparison of secrets uses `hmac.compare_digest` (constant time).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re

from headrace.errors import ConfigError

SCHEME = "scrypt"
# Cost of a new hash: 16 MiB and ~0.2 s per check (n * r * 128 bytes; p sequential
# rounds), one of the settings OWASP lists as equivalent to its scrypt minimum, chosen
# for its small memory. The gateway remembers a checked password, so a user pays once.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 5
SALT_BYTES = 16
HASH_BYTES = 32
# A hash read from a file may name its own cost: refuse what would exhaust memory.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
TOKEN_DIGEST = re.compile(r"[0-9a-f]{64}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The text to store for `password` (a new random salt unless one is given)."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return f"{SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


class PasswordHash:
    """A parsed password hash; `matches` runs scrypt (tenths of a second: not on a loop)."""

    def __init__(self, encoded: str) -> None:
        parts = encoded.split("$")
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ConfigError(
                "not a password hash: expected scrypt$n$r$p$salt$hash "
                "(make one with `headrace auth hash-password`)"
            )
        try:
            self.n, self.r, self.p = (int(part) for part in parts[1:4])
            self.salt, self.digest = _unb64(parts[4]), _unb64(parts[5])
        except ValueError as exc:
            raise ConfigError(f"malformed password hash: {exc}") from None
        if self.n < 2 or self.n & (self.n - 1) or self.r < 1 or self.p < 1:
            raise ConfigError("malformed password hash: n must be a power of 2, r and p >= 1")
        if 128 * self.n * self.r > MAX_SCRYPT_MEMORY or not self.salt or len(self.digest) < 16:
            raise ConfigError(
                "password hash out of bounds: scrypt memory over 256 MiB, or no salt, "
                "or a hash under 16 bytes"
            )

    def matches(self, password: str) -> bool:
        computed = _scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(computed, self.digest)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=MAX_SCRYPT_MEMORY + 2**20, dklen=length
    )


def token_digest(token: str) -> str:
    """What a credentials file stores for a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token_digest(text: str) -> bytes:
    if not TOKEN_DIGEST.fullmatch(text):
        raise ConfigError(
            "a token's sha256 must be 64 lower-case hex digits "
            "(`headrace auth new-token` prints one)"
        )
    return bytes.fromhex(text)
