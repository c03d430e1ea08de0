"""The parts of the web UI's API that need no server: the dashboard's buckets and its
reading of Prometheus text, the metrics targets setting and who sets it (`server local`,
docker-compose.yml), the blueprints' titles and copies, and the printed UI address."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from ruamel.yaml import YAML

from headrace.config import Settings, split_targets
from headrace.db.stats import Window, bucket_seconds
from headrace.errors import ConfigError
from headrace.flow.loader import load_flow
from headrace.local import LocalStack
from headrace.local_server import web_ui_lines
from headrace.services.gateway.blueprints_api import Blueprint, replace_top_level
from headrace.services.gateway.stats_api import read_metrics

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ buckets


def test_every_window_has_24_to_49_aligned_buckets_ending_now() -> None:
    now = datetime(2026, 12, 7, 10, 37, 13, 512, tzinfo=UTC)
    for hours in range(1, 721):
        window = Window.last(hours, now)
        starts, width = window.starts(), timedelta(seconds=window.bucket)
        assert 24 <= len(starts) <= 49, hours
        assert window.bucket == bucket_seconds(hours)
        assert all(int(start.timestamp()) % window.bucket == 0 for start in starts)
        assert all(b - a == width for a, b in itertools.pairwise(starts))
        assert starts[0] <= now - timedelta(hours=hours) < starts[0] + width, hours
        assert starts[-1] <= now < starts[-1] + width, hours


# ------------------------------------------------------------------ metrics


def exposition(service: str, slots: float | None = None, attempts: int = 0) -> str:
    """A service's metrics, as prometheus-client writes them (the services' own names)."""
    registry = CollectorRegistry()
    info = Gauge("headrace_info", "", ["service", "version"], registry=registry)
    info.labels(service, "1.2.3").set(1)
    capacity = Gauge("headrace_worker_slots", "", registry=registry)
    in_use = Gauge("headrace_worker_slots_in_use", "", registry=registry)
    if slots is not None:
        capacity.set(slots)
        in_use.set(2)
    durations = Histogram(
        "headrace_task_attempt_duration_seconds", "", ["type", "state"], registry=registry
    )
    for n in range(attempts):
        durations.labels("log" if n % 2 else "shell", "SUCCESS").observe(0.01 * n)
    Gauge("headrace_worker_slots_other", "", registry=registry).set(99)  # not ours to read
    return generate_latest(registry).decode()


def test_a_workers_metrics_give_its_slots_and_attempts() -> None:
    found = read_metrics(exposition("worker", slots=8, attempts=5))
    assert found == {
        "service": "worker",
        "version": "1.2.3",
        "slots": 8,
        "slotsInUse": 2,
        "attemptsDone": 5,
    }
    assert read_metrics(exposition("worker", slots=4))["attemptsDone"] == 0


def test_other_services_have_no_worker_figures() -> None:
    # Every process exports the worker's gauges, at 0: they are not its own.
    assert read_metrics(exposition("indexer", slots=0)) == {
        "service": "indexer",
        "version": "1.2.3",
    }


def test_text_that_is_no_headrace_metrics_is_an_error() -> None:
    with pytest.raises(ValueError, match="headrace_info"):
        read_metrics("<html>hello</html>\nup 1\n")


# ------------------------------------------------------------------ the targets setting


def test_the_metrics_targets_setting_is_read_and_checked() -> None:
    assert Settings.from_env({}).metrics_targets == ()
    text = "http://worker:9100, https://10.0.0.2:9100/ http://worker:9100"
    assert Settings.from_env({"HEADRACE_METRICS_TARGETS": text}).metrics_targets == (
        "http://worker:9100",
        "https://10.0.0.2:9100/",
    )
    for bad in ("worker:9100", "ftp://worker", "http://"):
        with pytest.raises(ConfigError, match="HEADRACE_METRICS_TARGETS"):
            split_targets(bad)


@pytest.mark.parametrize(
    ("host", "seen_as"), [("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1")]
)
def test_server_local_names_every_processs_metrics_for_the_gateway(host: str, seen_as: str) -> None:
    settings = Settings(metrics_host=host)
    stack = LocalStack(settings, metrics_port=9300)
    try:
        for name, copy in [("indexer", 1), ("worker", 1), ("worker", 2), ("gateway", 1)]:
            stack.metrics_port_for(name, copy)
        assert stack.metrics_targets() == [
            f"http://{seen_as}:{port}" for port in (9300, 9301, 9302)
        ]
        assert LocalStack(settings).metrics_targets() == []
    finally:
        stack.stop()


def test_compose_gives_the_gateway_every_service_that_serves_metrics() -> None:
    compose = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    targets = split_targets(services["gateway"]["environment"]["HEADRACE_METRICS_TARGETS"])
    port = services["worker"]["environment"]["HEADRACE_METRICS_PORT"]
    serving = {
        name
        for name, service in services.items()
        if name != "gateway"
        and "HEADRACE_METRICS_PORT" in (service.get("environment") or {})
        and service.get("command", [""])[0] == "server"
    }
    assert serving == {"scheduler", "executor", "worker", "indexer"}
    assert set(targets) == {f"http://{name}:{port}" for name in serving}


# ------------------------------------------------------------------ web UI address


def test_server_local_prints_a_signed_in_address_for_its_own_token_only() -> None:
    url = "http://127.0.0.1:8080"
    assert web_ui_lines(url, "a+b/c", from_environment=False) == [
        "web UI: http://127.0.0.1:8080/",
        "        http://127.0.0.1:8080/#token=a%2Bb%2Fc  (opens it signed in)",
    ]
    (line,) = web_ui_lines(url, "secret", from_environment=True)
    assert line.startswith("web UI: http://127.0.0.1:8080/") and "secret" not in line


# ------------------------------------------------------------------ blueprints


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("hello", "The smallest useful flow - an input, three tasks, outputs passed along"),
        ("approval", "Waits for a person's approval before publishing"),  # folded, 3 lines
        ("run-sql", None),
    ],
)
def test_a_blueprints_title_is_its_descriptions_first_sentence(
    name: str, title: str | None
) -> None:
    source = (ROOT / "examples" / f"{name}.yaml").read_text()
    blueprint = Blueprint(name, source, load_flow(source)).json()
    description = blueprint["description"]
    assert "\n" not in description and "  " not in description
    if title is not None:
        assert blueprint["title"] == title
    assert description.startswith(blueprint["title"]) and blueprint["title"]


def test_a_copy_replaces_only_the_top_level_key_and_keeps_its_comment() -> None:
    source = (
        "id: after\n"
        "namespace: examples   # where it lives\n"
        "triggers:\n"
        "  - id: t\n"
        "    type: flow\n"
        "    preconditions:\n"
        "      flows:\n"
        "        - namespace: examples\n"
        "namespace: second  # not the first: left alone\n"
    )
    copied = replace_top_level(source, "namespace", "team.data")
    assert copied.splitlines()[1] == "namespace: team.data   # where it lives"
    assert copied.splitlines()[1:] != source.splitlines()[1:]
    assert copied.splitlines()[2:] == source.splitlines()[2:]
    assert replace_top_level(source, "id", "true").splitlines()[0] == 'id: "true"'
    assert (
        replace_top_level(source, "namespace", "2024")
        .splitlines()[1]
        .startswith('namespace: "2024"')
    )
