"""`headrace server local --executors N --workers N`: which processes it starts."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from headrace.cli import cli
from headrace.config import Settings
from headrace.local import SERVICES, log_name, service_env
from headrace.local_server import services_to_run


def test_one_of_each_service_by_default() -> None:
    assert services_to_run(1, 1) == list(SERVICES)


def test_executors_and_workers_are_repeated_in_place() -> None:
    services = services_to_run(executors=2, workers=3)
    assert services.count("executor") == 2 and services.count("worker") == 3
    assert [s for s in services if s not in ("executor", "worker")] == [
        s for s in SERVICES if s not in ("executor", "worker")
    ]
    # The indexer first (it migrates and consumes before anything is produced).
    assert services[0] == "indexer"


def test_each_process_of_a_service_has_its_own_log() -> None:
    assert [log_name("executor", copy) for copy in (1, 2, 3)] == [
        "executor.log",
        "executor-2.log",
        "executor-3.log",
    ]


def test_more_processes_than_partitions_is_refused_before_anything_starts() -> None:
    result = CliRunner().invoke(
        cli, ["server", "local", "--partitions", "2", "--workers", "3"], standalone_mode=False
    )
    assert result.exception is not None
    assert "3 processes would share 2 partitions" in str(result.exception)


def test_zero_executors_is_refused() -> None:
    result = CliRunner().invoke(cli, ["server", "local", "--executors", "0"])
    assert result.exit_code == 2
    assert "--executors" in result.output


def test_services_do_not_read_the_secrets_directory_server_local_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The supervisor hands the directory's secrets over; a worker reading it again
    # would find each secret twice and refuse to start.
    monkeypatch.setenv("HEADRACE_SECRETS_DIR", "/run/secrets")
    settings = Settings(kafka_bootstrap="127.0.0.1:9092", database_url="postgresql://x/y")
    assert "HEADRACE_SECRETS_DIR" not in service_env(settings, service="worker")
