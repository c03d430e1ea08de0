"""Settings every service reads from the environment, in one place.

Each setting has one environment variable; `Settings.from_env()` is called once at a
service's start and the value is passed down, so nothing else reads `os.environ`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from headrace.errors import ConfigError
from headrace.fetch_wait import FetchWait

DEFAULT_URL = "http://127.0.0.1:8080"
# Bounds an attempt of a task that sets no `timeout`, so a hung one frees its worker
# slot some day. Long, since it applies to tasks whose authors gave no thought to it:
# six hours (GitHub Actions' limit per job) lets any reasonable batch step finish.
DEFAULT_TASK_TIMEOUT = timedelta(hours=6)
TASK_TIMEOUT_ENV = "HEADRACE_WORKER_TASK_TIMEOUT"
# The embedded broker's fetch wait once a consumer is quiet (headrace/fetch_wait.py): an
# idle consumer fetches a few times a second instead of ~400, and the first record after
# a quiet spell waits ~100 ms (up to ~250). Quiet means no record for QUIET_AFTER_S.
# docs/benchmarks.md has the measured trade-off (idle CPU against that first wait).
IDLE_FETCH_WAIT_MS = 600
QUIET_AFTER_S = 2.0
# How long the executor keeps an ended execution's state (a restart or replay needs it)
# before it leaves a tombstone in its place (services/executor/eviction.py).
DEFAULT_EXECUTION_RETENTION = timedelta(days=7)
RETENTION_ENV = "HEADRACE_EXECUTION_RETENTION"


@dataclass(frozen=True, slots=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/headrace"
    # Partitions of the co-partitioned executor topics: the ceiling on executor processes.
    partitions: int = 8
    # Copies of each topic partition: 1 for one broker, 3 for a production cluster.
    replication_factor: int = 1
    # The embedded broker answers a fetch after up to half of fetch_max_wait_ms and a JoinGroup
    # after half of the group timeouts (docs/architecture.md): `server local` turns this on for it.
    # Real Kafka needs it off: long polls cost nothing there, and it refuses session
    # timeouts under group.min.session.timeout.ms (6 s by default).
    low_latency: bool = False
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    worker_concurrency: int = 64
    # The timeout of attempts whose task sets none (see DEFAULT_TASK_TIMEOUT).
    worker_task_timeout: timedelta = DEFAULT_TASK_TIMEOUT
    # `rocksdb://`: executions on disk, memory bounded (services/executor/store.py);
    # `memory://`: every execution in RAM, rebuilt from the changelog at each start.
    executor_store: str = "rocksdb://"
    # The executor's RocksDB files: one folder per executor process, kept across its
    # restarts (they then read only the changelog's tail). None: $XDG_STATE_HOME/headrace.
    executor_data_dir: str | None = None
    execution_retention: timedelta = DEFAULT_EXECUTION_RETENTION
    # The scheduler's watchdog (services/scheduler/watchdog.py): seconds between passes,
    # and how long an unended execution goes unchanged before it is probed.
    watchdog_interval_s: float = 30.0
    watchdog_quiet_s: float = 60.0
    # The gateway's credentials (docs/security.md): the full-access token, a file of more
    # tokens and basic-auth users, and host names it answers to besides loopback and IPs.
    api_token: str | None = field(default=None, repr=False)
    credentials_file: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    # The file storage every worker and the gateway share (headrace/storage.py). None:
    # $XDG_STATE_HOME/headrace/storage, which suits one machine only.
    storage_dir: str | None = None
    # Every service but the gateway serves /metrics, /healthz and /readyz on this port
    # (headrace/service_http.py); None: no such server. One port per process.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # The gateway's dashboard (`GET /api/v1/stats`) reads the metrics of these services:
    # their base URLs (`http://worker:9100`), as HEADRACE_METRICS_PORT serves them.
    metrics_targets: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        try:
            return cls(
                kafka_bootstrap=env.get("HEADRACE_KAFKA_BOOTSTRAP", defaults.kafka_bootstrap),
                database_url=env.get("HEADRACE_DATABASE_URL", defaults.database_url),
                partitions=int(env.get("HEADRACE_PARTITIONS", defaults.partitions)),
                replication_factor=int(
                    env.get("HEADRACE_REPLICATION_FACTOR", defaults.replication_factor)
                ),
                low_latency=env.get("HEADRACE_LOW_LATENCY", "0").lower() in ("1", "true", "yes"),
                gateway_host=env.get("HEADRACE_GATEWAY_HOST", defaults.gateway_host),
                gateway_port=int(env.get("HEADRACE_GATEWAY_PORT", defaults.gateway_port)),
                worker_concurrency=int(
                    env.get("HEADRACE_WORKER_CONCURRENCY", defaults.worker_concurrency)
                ),
                executor_store=_store(env.get("HEADRACE_EXECUTOR_STORE", defaults.executor_store)),
                executor_data_dir=env.get("HEADRACE_EXECUTOR_DATA_DIR") or None,
                watchdog_interval_s=_positive(
                    env.get("HEADRACE_WATCHDOG_INTERVAL", defaults.watchdog_interval_s)
                ),
                watchdog_quiet_s=_positive(
                    env.get("HEADRACE_WATCHDOG_QUIET", defaults.watchdog_quiet_s)
                ),
                worker_task_timeout=_duration(
                    TASK_TIMEOUT_ENV, env.get(TASK_TIMEOUT_ENV), DEFAULT_TASK_TIMEOUT
                ),
                execution_retention=_duration(
                    RETENTION_ENV, env.get(RETENTION_ENV), DEFAULT_EXECUTION_RETENTION
                ),
                api_token=env.get("HEADRACE_TOKEN") or None,
                credentials_file=env.get("HEADRACE_CREDENTIALS_FILE") or None,
                allowed_hosts=split_hosts(env.get("HEADRACE_ALLOWED_HOSTS", "")),
                storage_dir=env.get("HEADRACE_STORAGE_DIR") or None,
                metrics_port=_port("HEADRACE_METRICS_PORT", env.get("HEADRACE_METRICS_PORT")),
                metrics_host=env.get("HEADRACE_METRICS_HOST") or defaults.metrics_host,
                metrics_targets=split_targets(env.get(METRICS_TARGETS_ENV, "")),
            )
        except ValueError as exc:
            raise ConfigError(f"bad numeric setting in the environment: {exc}") from exc

    @property
    def executor_on_disk(self) -> bool:
        return self.executor_store == "rocksdb://"

    def executor_data_path(self, environ: dict[str, str] | None = None) -> Path:
        if self.executor_data_dir:
            return Path(self.executor_data_dir)
        return _state_home(environ) / "headrace" / "executor"

    def storage_path(self, environ: dict[str, str] | None = None) -> Path:
        if self.storage_dir:
            return Path(self.storage_dir)
        return _state_home(environ) / "headrace" / "storage"

    def fetch_wait(self) -> FetchWait:
        """A new fetch wait policy, one per consumer (it follows that consumer's traffic).

        Real Kafka answers a fetch as soon as records come: a long wait costs nothing
        there. The embedded broker holds it: short while busy, long once quiet."""
        if self.low_latency:
            return FetchWait(busy_ms=5, idle_ms=IDLE_FETCH_WAIT_MS, quiet_after_s=QUIET_AFTER_S)
        return FetchWait(busy_ms=500, idle_ms=500, quiet_after_s=QUIET_AFTER_S)


def _state_home(environ: dict[str, str] | None) -> Path:
    env = os.environ if environ is None else environ
    state_home = env.get("XDG_STATE_HOME", "")
    # The XDG spec: a relative value is invalid and must be ignored.
    return Path(state_home) if os.path.isabs(state_home) else Path.home() / ".local/state"


STORES = ("rocksdb://", "memory://")


def _store(text: str) -> str:
    if text not in STORES:
        raise ConfigError(f"HEADRACE_EXECUTOR_STORE: {text!r} is not one of {', '.join(STORES)}")
    return text


def _positive(text: str | float) -> float:
    """Seconds, finite and above zero (`ValueError` otherwise)."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(f"{text!r} is not a number of seconds above zero")
    return value


def _port(name: str, text: str | None) -> int | None:
    """A TCP port from variable `name` (0: any free one), None when unset or empty."""
    if not text:
        return None
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}: {port} is not a port number (0-65535)")
    return port


def _duration(name: str, text: str | None, default: timedelta) -> timedelta:
    """An ISO-8601 duration above zero from variable `name`, `default` when unset."""
    if text is None:
        return default
    # Here, not at the top: the flow package is heavy, and most processes never get here.
    from headrace.flow.durations import DURATION_HINT, parse_duration

    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}; {DURATION_HINT}") from None
    if value <= timedelta(0):
        raise ConfigError(f"{name}: must be longer than zero, got {text!r}")
    return value


METRICS_TARGETS_ENV = "HEADRACE_METRICS_TARGETS"


def split_targets(text: str) -> tuple[str, ...]:
    """`HEADRACE_METRICS_TARGETS`: comma- or space-separated http(s) base URLs."""
    targets = tuple(dict.fromkeys(text.replace(",", " ").split()))
    for target in targets:
        scheme, sep, rest = target.partition("://")
        if scheme.lower() not in ("http", "https") or not sep or not rest.strip("/"):
            raise ConfigError(
                f"{METRICS_TARGETS_ENV}: {target!r} is not an http:// or https:// URL"
            )
    return targets


def split_hosts(text: str) -> tuple[str, ...]:
    """`HEADRACE_ALLOWED_HOSTS`: comma- or space-separated names, compared lower-cased."""
    return tuple(name.lower() for name in text.replace(",", " ").split())
