"""`headrace server local` as a user starts it, without HEADRACE_TOKEN: it creates the
token file, prints the token, hands it to the gateway process alone, and the CLI on the
same machine finds it; it prints the web UI's address and gives the gateway its services'
metrics for the dashboard. (The session's PostgreSQL; its own embedded broker.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from headrace.broker import free_port
from headrace.config import Settings
from tests.integration.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120
SERVICES_WITH_METRICS = 4  # indexer, executor, worker, scheduler: --metrics-port N..N+3


def user_env(config_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")}
    return env | {"XDG_CONFIG_HOME": str(config_home), **extra}


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat_line = (entry / "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            # "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def service_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode()


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (--metrics-port takes N, N+1...)."""
    for _ in range(50):
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise AssertionError(f"no {count} consecutive free ports")


@pytest.fixture(scope="module")
def server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[str], list[str], Path, int, int]]:
    config_home = tmp_path_factory.mktemp("config")
    port, metrics_port = free_port(), free_ports(SERVICES_WITH_METRICS)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "headrace", "server", "local", "--port", str(port)),
            *("--metrics-port", str(metrics_port)),
        ],
        cwd=ROOT,
        env=user_env(config_home, HEADRACE_DATABASE_URL=database_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: (
                any(line.startswith("service logs") for line in lines) or process.poll() is not None
            ),
            START_TIMEOUT_S,
            "headrace server local to be up",
        )
        assert process.poll() is None, "".join(lines)
        yield process, lines, config_home, port, metrics_port
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        reader.join(10)


def test_first_start_creates_prints_and_hands_over_the_token(
    server: tuple[subprocess.Popen[str], list[str], Path, int, int],
) -> None:
    process, lines, config_home, port, _ = server
    path = config_home / "headrace" / "token"
    token = path.read_text().strip()
    (printed,) = [line for line in lines if line.startswith("token:")]
    assert token in printed and str(path) in printed and "new" in printed
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # The gateway gets the token through an in-memory file (sealed_env), like every
    # credential: no process environment holds it, the gateway's included.
    services = {service_of(pid): environment_of(pid) for pid in children(process.pid)}
    assert {"gateway", "worker", "executor", "scheduler", "indexer"} <= set(services)
    for name, environment in services.items():
        assert "HEADRACE_TOKEN" not in environment, name
        assert token not in "\0".join(environment.values()), name

    url = f"http://127.0.0.1:{port}"
    listed = subprocess.run(
        [sys.executable, "-m", "headrace", "flow", "list"],
        env=user_env(config_home, HEADRACE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert "flows" in listed.stdout
    stranger = subprocess.run(
        [sys.executable, "-m", "headrace", "flow", "list"],
        env=user_env(config_home / "elsewhere", HEADRACE_URL=url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stranger.returncode == 1 and "needs a token" in stranger.stderr


def test_it_prints_the_web_ui_and_gives_the_gateway_its_services_metrics(
    server: tuple[subprocess.Popen[str], list[str], Path, int, int],
) -> None:
    _, lines, config_home, port, metrics_port = server
    token = (config_home / "headrace" / "token").read_text().strip()
    url = f"http://127.0.0.1:{port}"
    assert f"web UI: {url}/\n" in lines
    (signed_in,) = [line for line in lines if "#token=" in line]
    assert signed_in.split()[0] == f"{url}/#token={token}"

    async def read_stats() -> dict:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.get(f"{url}/api/v1/stats", params={"hours": 1}) as response,
        ):
            assert response.status == 200
            return await response.json()

    # The dashboard's worker figures: the gateway reads every service's metrics.
    workers = asyncio.run(read_stats())["workers"]
    assert workers["configured"] is True
    services = {s["service"]: s for s in workers["services"]}
    assert set(services) == {"indexer", "executor", "worker", "scheduler"}, workers
    assert all(s["up"] and s["error"] is None for s in services.values())
    urls = {s["url"] for s in services.values()}
    assert urls == {f"http://127.0.0.1:{metrics_port + i}" for i in range(SERVICES_WITH_METRICS)}
    worker = services["worker"]
    assert worker["slots"] == Settings().worker_concurrency and worker["slotsInUse"] == 0
    assert isinstance(worker["attemptsDone"], int) and services["indexer"]["slots"] is None
