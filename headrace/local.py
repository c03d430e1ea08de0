"""Run every service as its own process on one machine: `headrace server local` and tests.

Each service is `python -m headrace server <name>`, a real process talking over Kafka
like in production. Processes are started in their own session (a Ctrl-C reaches only
us; we stop them in order) and die with us on Linux even if we are killed
(PR_SET_PDEATHSIG), so no process is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import isodate

from headrace.broker import die_with_parent, free_port
from headrace.config import Settings
from headrace.errors import HeadraceError
from headrace.readiness import READY_FILE_ENV
from headrace.sealed_env import for_service, hand_over, split_sealed
from headrace.secret_files import SECRETS_DIR_ENV

SERVICES = ("indexer", "executor", "worker", "scheduler", "gateway")
# The gateway's credentials reach the gateway alone: the worker runs user code, and no
# other service has a use for them.
GATEWAY_ONLY_ENV = ("HEADRACE_TOKEN", "HEADRACE_CREDENTIALS_FILE", "HEADRACE_ALLOWED_HOSTS")
# One port per process: a value in our environment would make every service but one fail
# to bind it. `LocalStack.metrics_port` gives each process its own.
METRICS_PORT_ENV = "HEADRACE_METRICS_PORT"
# Where the gateway's dashboard reads the services' metrics (GET /api/v1/stats).
METRICS_TARGETS_ENV = "HEADRACE_METRICS_TARGETS"
# A service bound to every interface is reached on loopback from the same machine.
_ANY_HOST = frozenset({"0.0.0.0", "::", ""})
STOP_GRACE_S = 15.0
READY_TIMEOUT_S = 60.0


class StackError(HeadraceError):
    """A service failed to start or died."""


def service_env(
    settings: Settings, ready_file: Path | None = None, service: str = ""
) -> dict[str, str]:
    env = dict(os.environ)
    for name in GATEWAY_ONLY_ENV:
        env.pop(name, None)
    # `server local` read the secrets directory and hands its secrets over: a worker
    # reading it again would find each of them twice.
    env.pop(SECRETS_DIR_ENV, None)
    env.pop(METRICS_PORT_ENV, None)
    if service == "gateway":
        env |= {name: os.environ[name] for name in GATEWAY_ONLY_ENV if name in os.environ}
        if settings.api_token:
            env["HEADRACE_TOKEN"] = settings.api_token
    env |= {
        "HEADRACE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "HEADRACE_DATABASE_URL": settings.database_url,
        "HEADRACE_PARTITIONS": str(settings.partitions),
        "HEADRACE_LOW_LATENCY": "1" if settings.low_latency else "0",
        "HEADRACE_GATEWAY_HOST": settings.gateway_host,
        "HEADRACE_GATEWAY_PORT": str(settings.gateway_port),
        "HEADRACE_WORKER_CONCURRENCY": str(settings.worker_concurrency),
        "HEADRACE_EXECUTOR_STORE": settings.executor_store,
        "HEADRACE_EXECUTION_RETENTION": isodate.duration_isoformat(settings.execution_retention),
        "HEADRACE_WATCHDOG_INTERVAL": str(settings.watchdog_interval_s),
        "HEADRACE_WATCHDOG_QUIET": str(settings.watchdog_quiet_s),
        "HEADRACE_STORAGE_DIR": str(settings.storage_path()),
        "PYTHONUNBUFFERED": "1",
    }
    if ready_file is not None:
        env[READY_FILE_ENV] = str(ready_file)
    return env


def log_name(service: str, copy: int) -> str:
    """`executor.log` for the first executor process, `executor-2.log` for a second one."""
    return f"{service}.log" if copy == 1 else f"{service}-{copy}.log"


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    ready_file: Path
    output: IO[bytes] | None = None
    copy: int = 1  # the first, second… process of this service
    # Where it serves /metrics, /healthz and /readyz (headrace.service_http), if it does.
    metrics_port: int | None = None

    @property
    def log_name(self) -> str:
        return log_name(self.name, self.copy)

    def metrics_url(self, host: str) -> str | None:
        if self.metrics_port is None:
            return None
        return f"http://{host}:{self.metrics_port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class LocalStack:
    """The five services as child processes, with their output in `log_dir`."""

    settings: Settings
    log_dir: Path | None = None
    processes: list[ServiceProcess] = field(default_factory=list)
    # `HEADRACE_SECRET_*` values for the worker, besides any in this process's environment
    # (`headrace server local` keeps them in memory only: headrace.sealed_env).
    secrets: dict[str, str] = field(default_factory=dict)
    # Metrics and probe ports of the services but the gateway (which serves them on its
    # API port): None, none; 0, a free port each; N, N, N+1… in the order processes are
    # first started (a restarted process keeps its port).
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        self._state_dir = Path(tempfile.mkdtemp(prefix="headrace-stack-"))
        self._started = 0
        self._metrics_ports: dict[tuple[str, int], int] = {}

    @property
    def url(self) -> str:
        return f"http://{self.settings.gateway_host}:{self.settings.gateway_port}"

    def start(
        self,
        services: Iterable[str] = SERVICES,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        services = list(services)
        # Every process's metrics port first: the gateway is handed them all.
        copies: dict[str, int] = {}
        for name in services:
            copies[name] = copies.get(name, 0) + 1
            self.metrics_port_for(name, copies[name])
        for name in services:
            self.start_service(name)
        self.wait_ready(progress)

    def metrics_targets(self) -> list[str]:
        """The base URL of every process's metrics (none without `metrics_port`)."""
        host = self.settings.metrics_host
        host = "127.0.0.1" if host in _ANY_HOST else host
        host = f"[{host}]" if ":" in host else host
        return [f"http://{host}:{port}" for port in self._metrics_ports.values()]

    def start_service(self, name: str, copy: int | None = None) -> ServiceProcess:
        """Start a process of service `name`: the `copy`-th (default: one more)."""
        if copy is None:
            copy = 1 + sum(1 for p in self.processes if p.name == name)
        self._started += 1  # a restarted process must not find its predecessor's file
        ready_file = self._state_dir / f"{name}-{self._started}.ready"
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / log_name(name, copy)).open("ab")
        # Credentials go through an in-memory file, never the environment, and each
        # service gets only its own: the worker the secrets, the gateway the database URL
        # and its token, the executor nothing, the others the database URL.
        env, sealed = split_sealed(service_env(self.settings, ready_file, name))
        if name == "executor":
            # Each executor process its own store, kept across its restarts; it goes with
            # the stack, as the embedded broker's changelogs do.
            env["HEADRACE_EXECUTOR_DATA_DIR"] = str(self._state_dir / f"executor-{copy}-data")
        metrics_port = self.metrics_port_for(name, copy)
        if metrics_port is not None:
            env[METRICS_PORT_ENV] = str(metrics_port)
        if name == "gateway" and self.metrics_port is not None:
            env[METRICS_TARGETS_ENV] = ",".join(self.metrics_targets())
        with hand_over(env, for_service(name, {**sealed, **self.secrets})) as fds:
            process = subprocess.Popen(
                [sys.executable, "-m", "headrace", "server", name],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
                preexec_fn=die_with_parent,
                pass_fds=fds,
            )
        service = ServiceProcess(name, process, ready_file, output, copy, metrics_port)
        self.processes.append(service)
        return service

    def metrics_port_for(self, name: str, copy: int) -> int | None:
        if self.metrics_port is None or name == "gateway":
            return None
        port = self._metrics_ports.get((name, copy))
        if port is None:
            if self.metrics_port == 0:
                port = free_port()
            else:
                port = self.metrics_port + len(self._metrics_ports)
            self._metrics_ports[name, copy] = port
        return port

    def wait_ready(self, progress: Callable[[str], None] = lambda _: None) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pending = [p for p in self.processes if not p.ready_file.exists()]
        while pending:
            for service in pending:
                if not service.alive:
                    raise StackError(
                        f"service {service.name} exited with code {service.process.returncode}"
                        + (f"; see {self.log_dir / service.log_name}" if self.log_dir else "")
                    )
                if service.ready_file.exists():
                    progress(f"{service.name} ready")
            pending = [p for p in pending if not p.ready_file.exists()]
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in pending)
                raise StackError(f"services not ready after {READY_TIMEOUT_S:.0f}s: {names}")
            time.sleep(0.05)
        _wait_http_ok(self.url + "/healthz", deadline)

    def restart(self, service: ServiceProcess) -> ServiceProcess:
        """Replace a dead (or live) service process by a new one of the same service."""
        self.stop_service(service)
        self.processes.remove(service)
        return self.start_service(service.name, service.copy)

    def first_dead(self) -> ServiceProcess | None:
        return next((p for p in self.processes if not p.alive), None)

    def stop_service(self, service: ServiceProcess) -> None:
        if service.alive:
            service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()
        if service.output is not None:
            service.output.close()

    def stop(self) -> None:
        # One process of each service gets SIGTERM at once and shuts down on its own; each
        # is then awaited (and killed after STOP_GRACE_S). Further processes of a service
        # are stopped one at a time before: on the embedded broker, two members leaving a
        # consumer group at the same moment leave it wedged for good (docs/architecture.md).
        first: dict[str, ServiceProcess] = {}
        for service in self.processes:
            if service.alive:
                first.setdefault(service.name, service)
        for service in reversed(self.processes):
            if first.get(service.name) is not service:
                self.stop_service(service)
        for service in first.values():
            if service.alive:
                service.process.send_signal(signal.SIGTERM)
        for service in reversed(first.values()):
            self.stop_service(service)
        self.processes.clear()
        shutil.rmtree(self._state_dir, ignore_errors=True)


def _wait_http_ok(url: str, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise StackError(f"{url} did not answer 200 in time")
        time.sleep(0.05)
