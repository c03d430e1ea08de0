"""The local token: where it lives, how `server local` creates or reuses it, what
clients find, and which service processes get it."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from headrace.config import Settings
from headrace.errors import ConfigError
from headrace.local import service_env
from headrace.local_server import local_token
from headrace.token_file import find_token, load_or_create_token, read_token_file, token_path


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private config folder, and no HEADRACE_TOKEN (the session sets one)."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    monkeypatch.delenv("HEADRACE_TOKEN", raising=False)
    return home


def test_the_token_file_follows_xdg_config_home(tmp_path: Path) -> None:
    assert token_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "headrace" / "token"
    # Unset or relative (the XDG spec says to ignore it): ~/.config.
    expected = Path.home() / ".config" / "headrace" / "token"
    assert token_path({}) == expected
    assert token_path({"XDG_CONFIG_HOME": "relative/dir"}) == expected


def test_first_start_creates_a_private_file_and_later_starts_reuse_it(config_home: Path) -> None:
    path = token_path()
    token, created = load_or_create_token(path)
    assert created and len(token) >= 40
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_or_create_token(path) == (token, False)
    assert [p.name for p in path.parent.iterdir()] == ["token"]  # no temporary file left


def test_servers_starting_at_once_agree_on_one_token(config_home: Path) -> None:
    path = token_path()
    results: list[tuple[str, bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(load_or_create_token(path)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({token for token, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert path.read_text().strip() == results[0][0]


def test_a_file_others_can_read_is_refused(config_home: Path) -> None:
    path = token_path()
    load_or_create_token(path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        load_or_create_token(path)
    path.write_text("")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="is empty"):
        read_token_file(path)


def test_clients_send_headrace_token_else_the_file(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find_token() is None  # neither: nothing is sent
    token, _ = load_or_create_token(token_path())
    assert find_token() == token
    monkeypatch.setenv("HEADRACE_TOKEN", "from-the-environment")
    assert find_token() == "from-the-environment"


def test_server_local_prints_the_token_and_where_it_is_kept(
    config_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token, note = local_token({})
    path = config_home / "headrace" / "token"
    assert path.read_text().strip() == token
    assert token in note and str(path) in note and "new" in note
    again, note = local_token({})
    assert again == token and "new" not in note
    # HEADRACE_TOKEN, once `server local` took it out of its environment (sealed_env)
    assert local_token({"HEADRACE_TOKEN": "operator-chosen"}) == (
        "operator-chosen",
        "from HEADRACE_TOKEN",
    )


def test_only_the_gateway_process_gets_the_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADRACE_TOKEN", "ambient")
    monkeypatch.setenv("HEADRACE_CREDENTIALS_FILE", "/etc/headrace/credentials.toml")
    monkeypatch.setenv("HEADRACE_ALLOWED_HOSTS", "headrace.internal")
    settings = Settings(api_token="the-gateway-token")
    gateway = service_env(settings, service="gateway")
    assert gateway["HEADRACE_TOKEN"] == "the-gateway-token"
    assert gateway["HEADRACE_CREDENTIALS_FILE"] == "/etc/headrace/credentials.toml"
    assert gateway["HEADRACE_ALLOWED_HOSTS"] == "headrace.internal"
    for service in ("worker", "executor", "scheduler", "indexer"):
        env = service_env(settings, service=service)
        assert not {"HEADRACE_TOKEN", "HEADRACE_CREDENTIALS_FILE", "HEADRACE_ALLOWED_HOSTS"} & set(
            env
        ), service
        assert env["HEADRACE_KAFKA_BOOTSTRAP"] == settings.kafka_bootstrap
    assert os.environ["HEADRACE_TOKEN"] == "ambient"  # our own environment is untouched
