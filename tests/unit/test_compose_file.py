"""docker-compose.yml, checked as `docker compose config` would and for what we rely on.

The schema check runs check-jsonschema with the compose-spec schema it ships (the one
Docker Compose validates against); CI has no Docker. The rest checks what the schema
cannot: Kafka keeps its data on its volume and has a listener for the host, every
long-running service has a health check (headrace's ask `/readyz` on the port it
serves), and what `depends_on` names exists and has what its condition waits for.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
HEADRACE_SERVICES = ("gateway", "scheduler", "executor", "worker", "indexer")
CHECK = (sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec")


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHECK, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # Merge keys (`<<: *headrace`) resolved, as Compose does.
    return YAML(typ="safe").load(COMPOSE.read_text())


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in (service.get("environment") or {}).items()}


def test_the_file_matches_the_compose_specification() -> None:
    checked = schema_check(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_misspelt_key_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("start_period:", "start_perod:", 1))
    checked = schema_check(broken)
    assert checked.returncode == 1 and "start_perod" in checked.stdout


def test_kafka_keeps_its_data_on_its_volume(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = environment(kafka)
    mounts = {mount.split(":")[1]: mount.split(":")[0] for mount in kafka["volumes"]}
    assert mounts.get(env["KAFKA_LOG_DIRS"]) == "kafka-data"
    assert "kafka-data" in compose["volumes"]
    # The data was formatted with this id: it must be a valid one, and fixed.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16


def test_kafka_has_a_listener_for_the_host(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = environment(kafka)
    advertised = dict(
        listener.split("://") for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    assert advertised == {"PLAINTEXT": "kafka:9092", "EXTERNAL": "localhost:9094"}
    assert "EXTERNAL://:9094" in env["KAFKA_LISTENERS"].split(",")
    assert "EXTERNAL:PLAINTEXT" in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    assert "127.0.0.1:9094:9094" in kafka["ports"]
    # The services use the internal listener.
    assert environment(compose["services"]["worker"])["HEADRACE_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue  # a one-shot job (topics): it ends, it is not healthy
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert "pg_isready" in " ".join(compose["services"]["postgres"]["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in " ".join(
        compose["services"]["kafka"]["healthcheck"]["test"]
    )


@pytest.mark.parametrize("name", HEADRACE_SERVICES)
def test_headrace_services_are_healthy_when_ready_on_the_port_they_serve(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    env = environment(service)
    probe = " ".join(service["healthcheck"]["test"])
    if name == "gateway":
        port = env["HEADRACE_GATEWAY_PORT"]
    else:
        port = env["HEADRACE_METRICS_PORT"]
        assert env["HEADRACE_METRICS_HOST"] == "0.0.0.0"  # for Prometheus on the network
    assert f"http://127.0.0.1:{port}/readyz" in probe
    # The image has Python, not curl.
    assert service["healthcheck"]["test"][:2] == ["CMD", "python"]
    assert env["HEADRACE_LOG_FORMAT"] == "json"


def test_what_depends_on_names_exists_and_can_meet_its_condition(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        for needed, rule in (service.get("depends_on") or {}).items():
            assert needed in services, f"{name} depends on unknown {needed}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[needed], f"{needed} has no health check"
            elif condition == "service_completed_successfully":
                assert services[needed].get("restart") == "no", f"{needed} is not a job"
    for name in HEADRACE_SERVICES:
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == "service_healthy"
        # Adopted by the services: `up --wait` takes its exit 0 for success, not a failure.
        assert needs["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name} mounts undeclared {source}"
