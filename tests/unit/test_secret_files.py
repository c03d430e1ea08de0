"""Secrets from a mounted directory (`HEADRACE_SECRETS_DIR`): what is read, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.errors import ConfigError
from headrace.secret_files import MAX_SECRET_BYTES, read_secrets_dir, with_secret_files


def test_each_file_is_a_secret_less_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "PG_PASSWORD").write_text("s3cret\n")
    (tmp_path / "api.key-2").write_text("line one\nline two\n\n")  # only the last goes
    (tmp_path / "CRLF").write_bytes(b"windows\r\n")
    assert read_secrets_dir(tmp_path) == {
        "HEADRACE_SECRET_CRLF": "windows",
        "HEADRACE_SECRET_PG_PASSWORD": "s3cret",
        "HEADRACE_SECRET_api.key-2": "line one\nline two\n",
    }


def test_a_kubernetes_secret_volume_reads_as_its_keys(tmp_path: Path) -> None:
    # Kubernetes mounts each key as a link into a hidden, timestamped directory.
    versioned = tmp_path / "..2026_12_07_01_00_00.123"
    versioned.mkdir()
    (versioned / "TOKEN").write_text("tok-1")
    (tmp_path / "..data").symlink_to(versioned.name)
    (tmp_path / "TOKEN").symlink_to("..data/TOKEN")
    (tmp_path / "nested").mkdir()  # not a secret either
    assert read_secrets_dir(tmp_path) == {"HEADRACE_SECRET_TOKEN": "tok-1"}


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("has space", b"x", "a secret's file name is its name"),
        ("BINARY", b"\xff\xfe", "a secret is UTF-8 text"),
        ("HUGE", b"x" * (MAX_SECRET_BYTES + 1), f"at most {MAX_SECRET_BYTES} bytes"),
    ],
)
def test_a_file_that_cannot_be_a_secret_is_refused_by_name(
    tmp_path: Path, name: str, content: bytes, reason: str
) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_secrets_dir(tmp_path)
    assert str(tmp_path / name) in str(caught.value) and reason in str(caught.value)


def test_a_missing_directory_is_refused_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"HEADRACE_SECRETS_DIR={tmp_path / 'gone'}: No such"):
        with_secret_files({}, {"HEADRACE_SECRETS_DIR": str(tmp_path / "gone")})


def test_files_join_the_environments_secrets_and_a_name_in_both_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "FROM_FILE").write_text("a")
    sealed = {"HEADRACE_SECRET_FROM_ENV": "b", "HEADRACE_DATABASE_URL": "postgresql://x"}
    environ = {"HEADRACE_SECRETS_DIR": str(tmp_path)}
    assert with_secret_files(sealed, environ) == {**sealed, "HEADRACE_SECRET_FROM_FILE": "a"}
    assert with_secret_files(sealed, {}) == sealed  # no directory set: nothing read
    (tmp_path / "FROM_ENV").write_text("c")
    with pytest.raises(ConfigError, match="secret FROM_ENV: set both"):
        with_secret_files(sealed, environ)
