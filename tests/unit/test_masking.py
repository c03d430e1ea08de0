"""Masking: every common encoding of every secret is hidden, and ordinary text is not."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.services.worker.masking import (
    MASK,
    MIN_BASE64_RUN_CHARS,
    MIN_MASKED_SECRET_CHARS,
    Masker,
)

SECRET = 'p@ss/w0rd "quoted" é+&='


def encodings(secret: str) -> dict[str, str]:
    data = secret.encode()
    return {
        "exact": secret,
        "upper": secret.upper(),
        "lower": secret.lower(),
        "json": json.dumps(secret)[1:-1],
        "json-ascii": json.dumps(secret, ensure_ascii=True)[1:-1],
        "url": quote(secret, safe=""),
        "url-keep-slash": quote(secret),
        "url-plus": quote_plus(secret),
        "url-lower-escapes": quote(secret, safe="").lower(),
        "base64": base64.b64encode(data).decode(),
        "base64-unpadded": base64.b64encode(data).decode().rstrip("="),
        "base64url": base64.urlsafe_b64encode(data).decode(),
        "hex": data.hex(),
        "hex-upper": data.hex().upper(),
    }


@pytest.mark.parametrize("form", sorted(encodings(SECRET)))
def test_each_encoding_is_masked_inside_a_line(form: str) -> None:
    text = encodings(SECRET)[form]
    line = f"before {text} after"
    masked = Masker([SECRET])(line)
    assert masked.startswith("before ") and masked.endswith(" after")
    assert text not in masked
    assert MASK in masked


@pytest.mark.parametrize("prefix", [b"", b"x", b"xy", b"xyz", b'{"token": "'])
def test_base64_of_a_longer_text_holding_the_secret_is_masked(prefix: bytes) -> None:
    """A secret inside JSON that was base64-encoded whole (a Basic auth header, a k8s
    secret): it starts at any offset of a base64 block."""
    secret = "hunter2-is-my-password"
    encoded = base64.b64encode(prefix + secret.encode() + b'"}').decode()
    masked = Masker([secret])(f"Authorization: Basic {encoded}")
    assert MASK in masked
    # What stays visible around the mask cannot decode to the secret: at most two
    # characters of its encoding are left on each side.
    left, right = masked.removeprefix("Authorization: Basic ").split(MASK)
    assert len(left) <= len(base64.b64encode(prefix)) + 1
    assert len(right) <= len(base64.b64encode(b'"}')) + 2


def test_each_line_of_a_multi_line_secret_is_masked_on_its_own() -> None:
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    mask = Masker([key])
    assert mask("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC") == MASK
    assert mask(key) == MASK


def test_the_longest_secret_wins_whatever_the_case() -> None:
    mask = Masker(["ABC", "abcdef-long"])
    assert mask("x abcdef-long y") == f"x {MASK} y"
    assert mask("x ABCDEF-LONG y") == f"x {MASK} y"
    assert mask("x abc y") == f"x {MASK} y"


def test_ordinary_text_is_left_alone_and_nul_is_replaced() -> None:
    mask = Masker(["correct-horse-battery"])
    line = "copied 1,204 rows to public.orders in 3.2 s \x00"
    assert mask(line) == line.replace("\x00", "\ufffd")


def test_short_values_are_not_masked() -> None:
    assert MIN_MASKED_SECRET_CHARS == 3
    mask = Masker(["", "a", "ab", "abc"])
    assert mask("a ab abc abcd") == f"a ab {MASK} {MASK}d"
    # A 4-byte secret shifted in a base64 block leaves runs under MIN_BASE64_RUN_CHARS:
    # its whole encoding is masked, its shifted runs (which chance would match) are not.
    assert MIN_BASE64_RUN_CHARS == 6
    four = Masker(["wxyz"])
    assert four(base64.b64encode(b"wxyz").decode()) == MASK
    assert four(base64.b64encode(b"-wxyz-").decode()) == base64.b64encode(b"-wxyz-").decode()


def test_a_very_long_secret_does_not_exhaust_the_stack() -> None:
    secret = "k" * 20_000 + "end"
    assert Masker([secret])(f"<{secret}>") == f"<{MASK}>"


# No "*" (the mask is made of it), no NUL (replaced), no line breaks (lines are masked
# one by one): any other text.
_TEXT = st.characters(blacklist_characters="*\x00\n\r", blacklist_categories=("Cs",))


@given(
    secret=st.text(_TEXT, min_size=MIN_MASKED_SECRET_CHARS, max_size=40),
    before=st.text(_TEXT, max_size=20),
    after=st.text(_TEXT, max_size=20),
)
def test_the_value_never_survives_in_any_case(secret: str, before: str, after: str) -> None:
    mask = Masker([secret])
    assert secret not in mask(before + secret + after)
    assert secret.upper() not in mask(before + secret.upper() + after)


def test_cost_per_line_with_many_secrets_stays_small() -> None:
    """Measured, not asserted tightly: 500 secrets (about 8,000 forms) cost tens of
    microseconds per ordinary log line; a budget 20x over that catches a regression to
    trying every form in turn (milliseconds per line)."""
    secrets = [f"secret-{n:04d}-{'x' * (n % 17)}-tail" for n in range(500)]
    mask = Masker(secrets)
    line = "2024-05-01 12:00:00 INFO copied 1,204 rows to public.orders in 3.2 s; status=ok"
    runs = 2_000
    started = time.perf_counter()
    for _ in range(runs):
        mask(line)
    per_line = (time.perf_counter() - started) / runs
    assert per_line < 0.002
    assert mask(f"token {secrets[321]}!") == f"token {MASK}!"
