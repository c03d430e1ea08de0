"""The gateway's security parts on their own: password hashes, the credentials file,
the authenticator, the Host and Origin rules, and webhook-key masking."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.config import Settings
from headrace.errors import ConfigError
from headrace.flow.loader import load_flow
from headrace.passwords import PasswordHash, hash_password, token_digest
from headrace.services.gateway.auth import Authenticator, Unauthenticated
from headrace.services.gateway.browser import HostPolicy, same_origin
from headrace.services.gateway.credentials import Role, load_credentials, read_credentials_file
from headrace.services.gateway.masking import MASK, WITHHELD, mask_source

KEY = "hook-key-0123456789abcdef"


def test_a_password_hash_checks_its_password_only() -> None:
    encoded = hash_password("correct horse")
    assert encoded.startswith("scrypt$16384$8$5$") and "correct" not in encoded
    stored = PasswordHash(encoded)
    assert stored.matches("correct horse")
    assert not stored.matches("correct horsE")
    assert hash_password("correct horse") != encoded  # a new salt each time


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("plain-text-password", "not a password hash"),
        ("scrypt$16384$8$5$c2FsdA$", "out of bounds"),
        ("scrypt$1000$8$1$c2FsdA$" + "A" * 43, "power of 2"),
        ("scrypt$1048576$8$1$c2FsdA$" + "A" * 43, "out of bounds"),  # 1 GiB of memory
        ("scrypt$x$8$1$c2FsdA$" + "A" * 43, "malformed"),
    ],
)
def test_a_malformed_or_unbounded_hash_is_refused(encoded: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        PasswordHash(encoded)


def write_credentials(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_credentials_file_lists_tokens_and_users_with_roles(tmp_path: Path) -> None:
    path = write_credentials(
        tmp_path / "credentials.toml",
        f"""
[[tokens]]
name = "ci"
role = "writer"
sha256 = "{token_digest("ci-token")}"

[[users]]
name = "ada"
role = "reader"
password = "{hash_password("pw")}"
""",
    )
    credentials = read_credentials_file(path)
    (token,) = credentials.tokens
    assert (token.name, token.role) == ("ci", Role.WRITER)
    assert credentials.users["ada"].role is Role.READER
    # HEADRACE_TOKEN comes on top, as a writer.
    merged = load_credentials(Settings(api_token="t", credentials_file=str(path)))
    assert [(t.name, t.role) for t in merged.tokens] == [
        ("HEADRACE_TOKEN", Role.WRITER),
        ("ci", Role.WRITER),
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[[tokens]]\nname = 'ci'\nrole = 'admin'\nsha256 = '{digest}'", r"tokens\[0\]\.role"),
        ("[[tokens]]\nname = 'ci'\nrole = 'writer'\nsha256 = 'abc'", r"tokens\[0\]\.sha256"),
        ("[[tokens]]\nname = 'ci'\nrole = 'writer'", "missing \\['sha256'\\]"),
        ("[[users]]\nname = 'a:b'\nrole = 'reader'\npassword = '{hash}'", "cannot hold ':'"),
        ("[[users]]\nname = 'ada'\nrole = 'reader'\npassword = 'secret'", r"users\[0\]\.password"),
        ("[[tokens]]\nname = 'ci'\nrole = 'writer'\ntoken = 'x'\nsha256 = '{digest}'", "unknown"),
        ("[token]\nname = 'ci'", "unknown table"),
        ("tokens = [", "not valid TOML"),
    ],
)
def test_a_bad_credentials_file_says_what_and_where(tmp_path: Path, text: str, reason: str) -> None:
    text = text.replace("{digest}", token_digest("x")).replace("{hash}", "scrypt$2$1$1$c2Fsdg$")
    path = write_credentials(tmp_path / "credentials.toml", text)
    with pytest.raises(ConfigError, match=reason) as refused:
        read_credentials_file(path)
    assert str(path) in str(refused.value)


def test_a_gateway_without_credentials_does_not_start() -> None:
    with pytest.raises(ConfigError, match="HEADRACE_TOKEN"):
        load_credentials(Settings())


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_the_authenticator_knows_tokens_users_and_roles(tmp_path: Path) -> None:
    path = write_credentials(
        tmp_path / "credentials.toml",
        f"""
[[tokens]]
name = "dashboard"
role = "reader"
sha256 = "{token_digest("read-only-token")}"

[[users]]
name = "ada"
role = "writer"
password = "{hash_password("ada-pw")}"
""",
    )
    auth = Authenticator(load_credentials(Settings(api_token="full", credentials_file=str(path))))
    assert (await auth.authenticate("Bearer full")).can_write
    reader = await auth.authenticate("bearer read-only-token")
    assert (reader.name, reader.can_write) == ("dashboard", False)
    ada = await auth.authenticate(basic("ada", "ada-pw"))
    assert (ada.name, ada.scheme, ada.can_write) == ("ada", "basic", True)
    assert await auth.authenticate(basic("ada", "ada-pw")) == ada  # remembered
    assert "Basic" in auth.challenge
    for header, reason in [
        (None, "authentication required"),
        ("Bearer nope", "not valid"),
        (basic("ada", "wrong"), "wrong user name or password"),
        (basic("bob", "ada-pw"), "wrong user name or password"),
        ("Basic !!!", "malformed"),
        ("Basic é\udcff", "malformed"),
        ("Basic " + base64.b64encode(b"\xff:\xfe").decode(), "malformed"),
        ("Digest x", "unsupported"),
        ("Bearer \udcff\udcfe", "not valid"),  # bytes that are not UTF-8, as aiohttp gives them
    ]:
        with pytest.raises(Unauthenticated, match=reason):
            await auth.authenticate(header)


async def test_without_users_basic_auth_is_not_offered() -> None:
    auth = Authenticator(load_credentials(Settings(api_token="full")))
    assert auth.challenge == 'Bearer realm="headrace"'
    with pytest.raises(Unauthenticated, match="takes Bearer"):
        await auth.authenticate(basic("ada", "full"))


# Header values as aiohttp hands them over: any text, bytes that are not UTF-8 as surrogates.
HEADER_TEXT = st.text(st.characters(codec=None, exclude_categories=["Cc"]), max_size=60)


@settings(max_examples=300, deadline=None)
@given(header=HEADER_TEXT, origin=HEADER_TEXT, host=HEADER_TEXT)
async def test_any_header_value_gives_an_answer_not_a_crash(
    header: str, origin: str, host: str
) -> None:
    auth = Authenticator(load_credentials(Settings(api_token="full")))
    for value in (header, "Bearer " + header, "Basic " + header):
        try:
            principal = await auth.authenticate(value)
        except Unauthenticated as refused:
            assert str(refused)  # a reason for the 401
        else:
            assert principal.name == "HEADRACE_TOKEN" and value.split() == ["Bearer", "full"]
    assert isinstance(same_origin(origin, host), bool)
    assert isinstance(HostPolicy.from_settings(Settings()).allows(host.lower()), bool)


def test_the_hosts_a_gateway_answers_to() -> None:
    local = HostPolicy.from_settings(Settings())
    for host in ("localhost", "127.0.0.1", "::1", "10.1.2.3", "app.localhost", "localhost."):
        assert local.allows(host), host
    for host in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io"):
        assert not local.allows(host), host
    named = HostPolicy.from_settings(
        Settings(gateway_host="headrace.lan", allowed_hosts=("api.example.com", ".corp.example"))
    )
    for host in ("headrace.lan", "api.example.com", "corp.example", "ci.corp.example"):
        assert named.allows(host), host
    assert not named.allows("example.com") and not named.allows("xcorp.example")
    # Bound to every interface: no name is added for it; `*` turns the check off.
    assert HostPolicy.from_settings(Settings(gateway_host="0.0.0.0")).names == {"localhost"}
    assert HostPolicy.from_settings(Settings(allowed_hosts=("*",))).allows("evil.example")


def test_same_origin_compares_host_and_port_not_the_scheme() -> None:
    assert same_origin("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert same_origin("https://headrace.example", "headrace.example")  # behind a TLS proxy
    assert same_origin("http://localhost", "localhost:80")
    assert not same_origin("http://localhost:3000", "localhost:8080")  # another local app
    assert not same_origin("http://evil.example", "127.0.0.1:8080")
    assert not same_origin("null", "127.0.0.1:8080")


HOOK_FLOW = f"""\
id: hooked
namespace: team
# rotate {KEY} every quarter
tasks:
  - id: t
    type: log
    message: hi
triggers:
  - id: a
    type: webhook
    key: {KEY}
  - id: b
    type: webhook
    key: "{KEY}-longer"
"""


def test_masking_hides_every_copy_of_every_key() -> None:
    masked = mask_source(HOOK_FLOW, load_flow(HOOK_FLOW))
    assert KEY not in masked
    assert masked.count(MASK) == 3  # the comment, and both triggers
    assert mask_source(HOOK_FLOW, None) == masked  # parsed on demand
    without_key = "id: plain\nnamespace: team\ntasks:\n  - {id: t, type: log, message: hi}\n"
    assert mask_source(without_key, None) == without_key


def test_a_source_with_a_short_key_is_withheld_where_the_mask_would_tell_the_key() -> None:
    short = "id: hook\nnamespace: company.team\ntasks:\n  - {id: t, type: log, message: hi}\n"
    short += "triggers:\n  - id: w\n    type: webhook\n    key: team\n"
    assert mask_source(short, load_flow(short)) == WITHHELD


def test_a_source_whose_keys_cannot_be_found_is_withheld() -> None:
    escaped = HOOK_FLOW.replace(f"key: {KEY}\n", 'key: "hook-key-\\x30123456789abcdef"\n')
    assert load_flow(escaped).triggers[0].spec().key == KEY  # type: ignore[union-attr]
    assert mask_source(escaped, None) == WITHHELD
    broken = HOOK_FLOW.replace("type: log", "type: no-such-type")
    assert mask_source(broken, None) == WITHHELD
