"""The `headrace` command line: servers, topics, flows, executions, logs.

Every command either succeeds or prints `error: …` (with details, one per line) and
exits non-zero; a user never sees a traceback for an error we anticipated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from headrace.api_client import ApiClient, ApiError
from headrace.cli_output import JSON, TEXT, echo_json, output_option
from headrace.cli_watch import LEVEL_COLORS, STATE_COLORS, watch_execution
from headrace.config import DEFAULT_URL, Settings
from headrace.errors import HeadraceError
from headrace.states import State

LOG_PAGE_SIZE = 10_000  # the API's largest page
SERVICE_NAMES = ("gateway", "scheduler", "executor", "worker", "indexer")


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        # Under `flow apply --detailed-exitcode`, 2 says "changes": a usage error is 1.
        detailed = "--detailed-exitcode" in sys.argv[1:]
        sys.exit(1 if detailed and exc.exit_code == 2 else exc.exit_code)
    except ApiError as exc:
        _print_error(str(exc), exc.errors)
        sys.exit(1)
    except HeadraceError as exc:
        _print_error(str(exc), getattr(exc, "errors", None))
        sys.exit(1)


def _print_error(message: str, errors: Any = None) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    for error in errors or []:
        click.echo(f"  {_format_error(error)}", err=True)


def _format_error(error: Any) -> str:
    if isinstance(error, dict):
        where = error.get("path") or error.get("input") or ""
        if error.get("line"):
            where = f"line {error['line']}:{error.get('column') or 1}: {where}"
        hint = f" (hint: {error['hint']})" if error.get("hint") else ""
        return f"{where}: {error.get('message', '')}{hint}" if where else str(error)
    return str(error)


@click.group()
@click.option(
    "--server",
    envvar="HEADRACE_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="URL of the headrace gateway (env HEADRACE_URL).",
)
@click.option(
    "--token",
    envvar="HEADRACE_TOKEN",
    default=None,
    help="Bearer token for the gateway (env HEADRACE_TOKEN; default: the token file "
    "`headrace server local` keeps in the config folder).",
)
@click.pass_context
def cli(ctx: click.Context, server: str, token: str | None) -> None:
    """headrace: declarative YAML flows, run over Kafka."""
    ctx.obj = ApiClient(server, token=token or None)


# --- servers -------------------------------------------------------------------------


@cli.group()
def server() -> None:
    """Run headrace services."""


@server.command("local")
@click.option("--port", default=8080, show_default=True, help="Port of the gateway (REST API).")
@click.option("--partitions", default=8, show_default=True, help="Partitions per topic.")
@click.option(
    "--executors",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Executor processes (they share the partitions: at most --partitions).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes (they share the partitions: at most --partitions).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve each service's /metrics, /healthz and /readyz on this port and the next "
    "ones (one per process, the gateway's are on its API port). Default: none.",
)
def server_local(
    port: int, partitions: int, executors: int, workers: int, metrics_port: int | None
) -> None:
    """Embedded broker + embedded PostgreSQL + every service, in one command.

    Uses HEADRACE_KAFKA_BOOTSTRAP / HEADRACE_DATABASE_URL instead when they are set.
    """
    from headrace.local_server import run_local_server
    from headrace.sealed_env import seal_process
    from headrace.secret_files import with_secret_files

    for option, count in (("--executors", executors), ("--workers", workers)):
        if count > partitions:
            raise click.BadParameter(
                f"{count} processes would share {partitions} partitions: some would get "
                "none (raise --partitions)",
                param_hint=option,
            )
    # First: its tasks must not read credentials in this ancestor's environment.
    sealed = with_secret_files(seal_process(), os.environ)
    run_local_server(
        port=port,
        partitions=partitions,
        sealed=sealed,
        executors=executors,
        workers=workers,
        metrics_port=metrics_port,
    )


def _service_command(name: str) -> Callable[..., None]:
    def command(
        log_level: str, log_format: str, host: str | None = None, port: int | None = None
    ) -> None:
        from headrace.sealed_env import for_service, seal_process, secrets_of
        from headrace.secret_files import with_secret_files
        from headrace.services.main import run_service

        # First: no credential stays in this process's environment (tasks could read it).
        sealed = for_service(name, seal_process())
        if name == "worker":  # the one service that resolves secrets
            sealed = with_secret_files(sealed, os.environ)
        settings = Settings.from_env({**os.environ, **sealed})
        if host is not None:
            settings = dataclasses.replace(settings, gateway_host=host)
        if port is not None:
            settings = dataclasses.replace(settings, gateway_port=port)
        run_service(
            name,
            settings,
            loglevel=log_level.upper(),
            secrets=secrets_of(sealed),
            log_format=log_format,
        )

    command.__doc__ = f"Run the {name} service (settings from HEADRACE_* variables)."
    if name == "gateway":  # the one service that listens
        command = click.option(
            "--port", type=int, default=None, help="Default: HEADRACE_GATEWAY_PORT or 8080."
        )(command)
        command = click.option(
            "--host", default=None, help="Default: HEADRACE_GATEWAY_HOST or 127.0.0.1."
        )(command)
    command = click.option(
        "--log-level", default="WARNING", show_default=True, envvar="HEADRACE_LOG_LEVEL"
    )(command)
    command = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        envvar="HEADRACE_LOG_FORMAT",
        help="json: one JSON object per line, with execution and task ids (docs/operations.md).",
    )(command)
    return server.command(name)(command)


for _name in SERVICE_NAMES:
    _service_command(_name)


# --- credentials ---------------------------------------------------------------------


@cli.group()
def auth() -> None:
    """Tokens and password hashes for the gateway (docs/security.md)."""


@auth.command("token")
@click.pass_obj
def auth_token(api: ApiClient) -> None:
    """Print the token the CLI sends (--token, HEADRACE_TOKEN or the local token file),
    e.g. for curl: export HEADRACE_TOKEN=$(headrace auth token)."""
    from headrace.token_file import find_token, token_path

    token = api.token or find_token()
    if not token:
        raise HeadraceError(
            f"no token: --token and HEADRACE_TOKEN are unset and {token_path()} does not "
            "exist (`headrace server local` creates it at its first start)"
        )
    click.echo(token)


@auth.command("new-token")
def auth_new_token() -> None:
    """Print a random token (e.g. export HEADRACE_TOKEN=$(headrace auth new-token)), and
    on stderr the line a credentials file's [[tokens]] entry takes for it (its SHA-256:
    the file holds no usable secret)."""
    from headrace.passwords import token_digest
    from headrace.token_file import new_token

    token = new_token()
    click.echo(token)
    click.echo(f'sha256 = "{token_digest(token)}"   # for a [[tokens]] entry', err=True)


@auth.command("hash-password")
@click.password_option(help="Asked for (twice) when not given.")
def auth_hash_password(password: str) -> None:
    """Hash a basic-auth password (scrypt) for a [[users]] entry of the credentials file."""
    from headrace.passwords import hash_password

    if not password:
        raise click.BadParameter("the password is empty", param_hint="--password")
    click.echo(f'password = "{hash_password(password)}"')


# --- kestra --------------------------------------------------------------------------


@cli.group()
def kestra() -> None:
    """Moving from Kestra: check which flows run unchanged (docs/kestra.md)."""


@kestra.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@output_option(help="json: one object per file (path, verdict, flow, problems) and a summary.")
def kestra_check(paths: tuple[Path, ...], output: str) -> None:
    """Read a folder of Kestra flows and say, per file, whether it runs as is, runs with
    warnings (what headrace does differently) or is refused (why). Changes nothing.
    Exits 1 when a file is refused."""
    from headrace.kestra_check import Verdict, check_files, counts, summary

    colours = {
        Verdict.AS_IS: "green",
        Verdict.WARNINGS: "yellow",
        Verdict.REFUSED: "red",
        Verdict.NOT_A_FLOW: None,
    }
    results = []
    for result in check_files(paths):
        results.append(result)
        if output == TEXT:
            click.echo(f"{result.path}: ", nl=False)
            click.secho(str(result.verdict), fg=colours[result.verdict])
            for line in result.lines():
                click.echo(f"  {line}")
    if output == JSON:
        echo_json(
            {
                "files": [r.to_json() for r in results],
                "counts": counts(results),
                "summary": summary(results),
            }
        )
    else:
        click.echo(summary(results))
    if any(r.verdict is Verdict.REFUSED for r in results):
        sys.exit(1)


# --- topics --------------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("apply")
@click.option("--partitions", type=int, default=None, help="Default: HEADRACE_PARTITIONS or 8.")
def topics_apply(partitions: int | None) -> None:
    """Create or reconcile the topics on HEADRACE_KAFKA_BOOTSTRAP."""
    from headrace.topics.apply import apply_topics

    settings = Settings.from_env()
    report = asyncio.run(
        apply_topics(
            settings.kafka_bootstrap, partitions or settings.partitions, progress=click.echo
        )
    )
    for warning in report.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    click.echo(
        f"topics: {len(report.created)} created, {len(report.reconfigured)} reconfigured, "
        f"{len(report.unchanged)} unchanged"
    )


# --- flows ---------------------------------------------------------------------------


@cli.group()
def flow() -> None:
    """Validate, apply, list, show, diff and export flows; print their JSON Schema."""


@flow.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def flow_validate(paths: tuple[Path, ...]) -> None:
    """Validate flow files (or folders of them) locally; report every error."""
    from headrace.flow_files import flow_file_warnings, load_folder

    files, errors = load_folder(paths)
    for error in errors:
        click.secho(str(error), fg="red", err=True)
    for warning in flow_file_warnings(paths):
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if errors:
        raise HeadraceError(f"{len(errors)} of {len(files) + len(errors)} flow file(s) invalid")
    click.echo(f"{len(files)} flow file(s) valid")


@flow.command("apply")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would change (the plan); change nothing.")
@click.option(
    "--prune",
    is_flag=True,
    help="Also delete the flows of these files' namespaces that no file holds.",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when nothing changed (or would), 2 when something did (or would), 1 on an "
    "error: for CI.",
)
@output_option(help="json: the gateway's answer (every flow's action, revisions and diff).")
@click.pass_obj
def flow_apply(
    api: ApiClient,
    paths: tuple[Path, ...],
    dry_run: bool,
    prune: bool,
    detailed_exitcode: bool,
    output: str,
) -> None:
    """Apply flow files and folders in one request, all or nothing: the server validates
    every file first (an invalid one: nothing changes), then applies every change at once.
    Prints the plan: + created, ~ updated (with its diff), - deleted."""
    from headrace.flow_files import apply_folder, changes, flow_file_warnings

    for warning in flow_file_warnings(paths):
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    answer = apply_folder(api, paths, dry_run=dry_run, prune=prune, echo=click.echo, output=output)
    if detailed_exitcode and changes(answer):
        sys.exit(2)


@flow.command("list")
@click.option("--namespace", default=None)
@output_option
@click.pass_obj
def flow_list(api: ApiClient, namespace: str | None, output: str) -> None:
    """List the latest revision of every flow."""
    from headrace.flow_files import list_flows

    flows = list_flows(api, namespace)
    if output == JSON:
        echo_json(flows)
        return
    for item in flows:
        click.echo(f"{item['namespace']}/{item['id']}  revision {item['revision']}")
    click.echo(f"{len(flows)} flows")


def _flow_path(namespace: str, flow_id: str) -> str:
    from urllib.parse import quote

    return f"/flows/{quote(namespace, safe='')}/{quote(flow_id, safe='')}"


@flow.command("revisions")
@click.argument("namespace")
@click.argument("flow_id")
@output_option
@click.pass_obj
def flow_revisions(api: ApiClient, namespace: str, flow_id: str, output: str) -> None:
    """List the revisions of NAMESPACE/FLOW_ID, oldest first (a deletion is one too)."""
    revisions = api.request("GET", _flow_path(namespace, flow_id) + "/revisions")
    if output == JSON:
        echo_json(revisions)
        return
    for item in revisions:
        deleted = "  deleted" if item["deleted"] else ""
        click.echo(f"revision {item['revision']:<6} {item['createdAt']}{deleted}")
    click.echo(f"{len(revisions)} revisions")


@flow.command("show")
@click.argument("namespace")
@click.argument("flow_id")
@click.option("--revision", type=click.IntRange(min=1), default=None, help="Default: the latest.")
@click.pass_obj
def flow_show(api: ApiClient, namespace: str, flow_id: str, revision: int | None) -> None:
    """Print the YAML source of NAMESPACE/FLOW_ID, as it was applied."""
    flow = api.request("GET", _flow_path(namespace, flow_id), params={"revision": revision})
    click.echo(flow["source"], nl=not flow["source"].endswith("\n"))


@flow.command("diff")
@click.argument("namespace")
@click.argument("flow_id")
@click.argument("from_revision", metavar="R1", type=click.IntRange(min=1))
@click.argument("to_revision", metavar="R2", type=click.IntRange(min=1))
@click.pass_obj
def flow_diff(
    api: ApiClient, namespace: str, flow_id: str, from_revision: int, to_revision: int
) -> None:
    """Print the unified diff of NAMESPACE/FLOW_ID's source from revision R1 to R2."""
    from headrace.flow_files import styled_diff_line

    answer = api.request(
        "GET",
        _flow_path(namespace, flow_id) + "/diff",
        params={"from": from_revision, "to": to_revision},
    )
    if not answer["diff"]:
        click.echo(f"revisions {from_revision} and {to_revision} have the same source")
    for line in answer["diff"].splitlines():
        click.echo(styled_diff_line(line))


@flow.command("export")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--namespace", default=None)
@click.pass_obj
def flow_export(api: ApiClient, folder: Path, namespace: str | None) -> None:
    """Write every flow's latest source to FOLDER/<namespace>/<id>.yaml."""
    from headrace.flow_files import list_flows

    flows = list_flows(api, namespace)
    for item in flows:
        path = folder / item["namespace"] / f"{item['id']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(item["source"])
        click.echo(f"wrote {path}")
    click.echo(f"{len(flows)} flows exported")


@flow.command("schema")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write it to this file instead of printing it.",
)
def flow_schema(output: Path | None) -> None:
    """Print the JSON Schema of flows, for editors (docs/editors.md).

    Built from the task types installed here: no server is needed.
    """
    from headrace.flow_schema import flow_json_schema_bytes

    schema = flow_json_schema_bytes()
    if output is None:
        click.echo(schema.decode(), nl=False)
        return
    try:
        output.write_bytes(schema)
    except OSError as exc:
        raise HeadraceError(f"cannot write {output}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {output}")


# --- task types ----------------------------------------------------------------------


@cli.group()
def plugins() -> None:
    """The task types installed here (connectors and flowables), with their properties."""


@plugins.command("list")
@output_option
def plugins_list(output: str) -> None:
    """List every task type, its Kestra alias and what it does."""
    from headrace.plugins import plugins as installed

    found = installed()
    if output == JSON:  # as GET /api/v1/plugins gives them
        echo_json([plugin.to_json() for plugin in found])
        return
    width = max(len(plugin.type) for plugin in found)
    for plugin in found:
        click.echo(f"{plugin.type:<{width}}  {plugin.summary}")
        for alias in plugin.aliases:
            click.echo(f"{'':<{width}}  alias: {alias}")
    click.echo(f"{len(found)} task types")


@plugins.command("describe")
@click.argument("task_type")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def plugins_describe(task_type: str, as_json: bool) -> None:
    """Describe TASK_TYPE (ours or an alias): its properties and outputs."""
    import orjson

    from headrace.plugins import find_plugin, property_rows

    plugin = find_plugin(task_type)
    if plugin is None:
        raise HeadraceError(f"unknown task type {task_type!r}: `headrace plugins list` lists them")
    if as_json:
        click.echo(orjson.dumps(plugin.to_json(), option=orjson.OPT_INDENT_2).decode())
        return
    click.secho(f"{plugin.type} ({plugin.kind})", bold=True)
    for alias in plugin.aliases:
        click.echo(f"alias: {alias}")
    click.echo(f"\n{plugin.description}")
    sections = [("properties", plugin.properties)]
    if plugin.outputs is not None:
        sections.append(("outputs", plugin.outputs))
    for title, schema in sections:
        click.secho(f"\n{title}:", bold=True)
        for row in property_rows(schema):
            facts = [row.type, "required" if row.required else None]
            if row.default is not None:
                # As a flow writes it: `true`, `GET`, `[]`, not Python's `True`, `'GET'`.
                default = row.default
                if not isinstance(default, str) or not default:  # "" shows as ""
                    default = orjson.dumps(default).decode()
                facts.append(f"default {default}")
            click.echo(f"  {row.name} ({', '.join(f for f in facts if f)})")
            if row.description:
                click.echo(f"      {row.description}")


# --- executions ----------------------------------------------------------------------


@cli.group()
def execution() -> None:
    """Start and inspect executions."""


@execution.command("start")
@click.argument("namespace")
@click.argument("flow_id")
@click.option("--input", "inputs", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option(
    "--wait", is_flag=True, help="Show task states and log lines live, then the execution."
)
@click.option("--timeout", default=300, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def execution_start(
    api: ApiClient, namespace: str, flow_id: str, inputs: tuple[str, ...], wait: bool, timeout: int
) -> None:
    """Start an execution of NAMESPACE/FLOW_ID."""
    values = _key_values(inputs)
    result = api.start_execution(namespace, flow_id, values)
    if not wait:
        click.echo(f"started execution {result['id']}")
        return
    execution_id = result["id"]
    click.echo(f"started execution {execution_id}")  # as without --wait: scripts cut it
    ended = watch_execution(api, execution_id, timeout)
    if ended is None:
        state = api.get_execution(execution_id)["state"]["current"]
        if state == "PAUSED":
            click.echo(
                f"execution {execution_id} is PAUSED after {timeout}s, waiting for a resume:"
                f" `headrace execution resume {execution_id} [--input KEY=VALUE ...]`"
            )
        else:
            click.echo(
                f"execution {execution_id} is still {state} after {timeout}s: follow it with"
                f" `headrace logs {execution_id} --follow`"
            )
        sys.exit(1)
    _echo_execution(ended)
    if ended["state"]["current"] not in ("SUCCESS", "WARNING"):
        sys.exit(1)


@execution.command("show")
@click.argument("execution_id")
@click.pass_obj
def execution_show(api: ApiClient, execution_id: str) -> None:
    """Show one execution with its task runs."""
    _echo_execution(api.get_execution(execution_id))


@execution.command("list")
@click.option("--namespace", default=None)
@click.option("--flow-id", default=None)
@click.option("--state", default=None)
@click.option(
    "--stuck", is_flag=True, help="Only those the watchdog found unable to make progress."
)
@click.option("--size", default=25, show_default=True)
@output_option
@click.pass_obj
def execution_list(
    api: ApiClient,
    namespace: str | None,
    flow_id: str | None,
    state: str | None,
    stuck: bool,
    size: int,
    output: str,
) -> None:
    """List recent executions."""
    page = api.list_executions(namespace, flow_id, state, stuck=stuck, size=size)
    if output == JSON:
        echo_json(page["results"])
        return
    for item in page["results"]:
        line = f"{item['id']}  {item['namespace']}/{item['flowId']}  {item['state']['current']}"
        if "stuck" in item:
            line += f"  stuck: {item['stuck']['reason']}"
        click.echo(line)
    click.echo(f"{len(page['results'])} of {page['total']}")


def _echo_answer(kind: str, execution_id: str, answer: dict) -> None:
    """What the executor did with a kill, restart or resume (refusals raise ApiError)."""
    if answer.get("outcome") == "APPLIED":
        click.echo(f"{kind} applied to {execution_id}: it is {answer['state']}")
    else:
        click.echo(f"{kind} sent to {execution_id}: {answer.get('message', 'not applied yet')}")


@execution.command("kill")
@click.argument("execution_id")
@click.pass_obj
def execution_kill(api: ApiClient, execution_id: str) -> None:
    """Kill a running execution: its running tasks and subflows end KILLED."""
    answer = api.kill_execution(execution_id)
    _echo_answer("kill", execution_id, answer)


@execution.command("restart")
@click.argument("execution_id")
@click.pass_obj
def execution_restart(api: ApiClient, execution_id: str) -> None:
    """Re-run a FAILED or KILLED execution from its failed task runs (successful ones are kept)."""
    answer = api.restart_execution(execution_id)
    _echo_answer("restart", execution_id, answer)


@execution.command("resume")
@click.argument("execution_id")
@click.option("--input", "inputs", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.pass_obj
def execution_resume(api: ApiClient, execution_id: str, inputs: tuple[str, ...]) -> None:
    """Resume a PAUSED execution, optionally with inputs for the paused task."""
    answer = api.resume_execution(execution_id, _key_values(inputs))
    _echo_answer("resume", execution_id, answer)


@execution.command("replay")
@click.argument("execution_id")
@click.option("--task-run-id", default=None, help="Replay from this task run (default: the start).")
@click.pass_obj
def execution_replay(api: ApiClient, execution_id: str, task_run_id: str | None) -> None:
    """Start a new execution that replays EXECUTION_ID from a chosen task run."""
    answer = api.replay_execution(execution_id, task_run_id)
    click.echo(f"replaying {execution_id} as new execution {answer['id']}")


def download_options(command: Callable[..., None]) -> Callable[..., None]:
    """`-o/--output PATH` and `--force`, as every download command takes them."""
    command = click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")(command)
    return click.option(
        "-o",
        "--output",
        default=None,
        metavar="PATH",
        help="Write it there (a folder: under the file's name); - writes to stdout. "
        "Default: the file's name, in the current folder.",
    )(command)


@execution.command("file")
@click.argument("execution_id")
@click.argument("uri")
@download_options
@click.pass_obj
def execution_file(
    api: ApiClient, execution_id: str, uri: str, output: str | None, force: bool
) -> None:
    """Download URI (headrace:///…), a file a task of EXECUTION_ID stored: its outputs
    name it."""
    from headrace import file_download
    from headrace.storage import stored_file

    name = stored_file(uri).name  # not a storage URI: the error the gateway would give
    written = file_download.download(
        lambda: api.download_execution_file(execution_id, uri), name, output, force
    )
    if written is not None:
        click.echo(f"wrote {written[0]} ({written[1]:,} bytes)")


def _key_values(items: tuple[str, ...]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--input")
        values[key] = value
    return values


@cli.command("logs")
@click.argument("execution_id")
@click.option("--min-level", default=None, help="TRACE, DEBUG, INFO, WARN or ERROR.")
@click.option("--task", "task_id", default=None, help="Only the lines of this task id.")
@click.option(
    "--follow", "-f", is_flag=True, help="Print new lines as they come, until the execution ends."
)
@click.pass_obj
def logs(
    api: ApiClient, execution_id: str, min_level: str | None, task_id: str | None, follow: bool
) -> None:
    """Print the log lines of an execution."""
    if follow:
        for event in api.follow_logs(execution_id, min_level=min_level, task_id=task_id):
            if event.event == "log":
                _echo_log_line(json.loads(event.data))
            elif event.event == "end":
                state = json.loads(event.data)["state"]
                click.echo(f"execution {execution_id} ended {_styled_state(state)}")
        return
    page = 1
    while True:
        records = api.list_logs(
            execution_id, min_level=min_level, task_id=task_id, page=page, size=LOG_PAGE_SIZE
        )
        for record in records:
            _echo_log_line(record)
        if len(records) < LOG_PAGE_SIZE:
            return
        page += 1


def _echo_log_line(record: dict[str, Any]) -> None:
    task = record.get("taskId") or "-"
    level = click.style(f"{record['level']:<5}", fg=LEVEL_COLORS.get(record["level"]))
    click.echo(f"{record['timestamp']}  {level}  {task:<20}  {record['message']}")


def _styled_state(state: str) -> str:
    return click.style(state, fg=STATE_COLORS.get(state), bold=True)


def _echo_execution(execution: dict[str, Any]) -> None:
    state = execution["state"]["current"]
    color = {"SUCCESS": "green", "FAILED": "red", "WARNING": "yellow"}.get(state)
    click.echo(
        f"execution {execution['id']}  {execution['namespace']}/{execution['flowId']}"
        f"  revision {execution['flowRevision']}"
    )
    click.echo(
        "state     " + click.style(state, fg=color, bold=True) + _duration(execution["state"])
    )
    flow_outputs = execution.get("outputs") or {}
    if flow_outputs:
        click.echo("outputs   " + ", ".join(f"{k}={v!r}" for k, v in flow_outputs.items()))
    runs = execution.get("taskRunList") or []
    if runs:
        # A for-each's runs differ by their item: show it, as taskId[item].
        labels = [
            run["taskId"] + (f"[{run['value']}]" if run.get("value") is not None else "")
            for run in runs
        ]
        width = max(len(label) for label in labels)
        for label, run in zip(labels, runs, strict=True):
            outputs = run.get("outputs") or {}
            shown = ", ".join(f"{k}={v!r}" for k, v in outputs.items())
            click.echo(
                f"  {label:<{width}}  {run['state']['current']:<8}"
                f"  attempts {len(run.get('attempts') or [])}{_duration(run['state'])}"
                f"  id {run['id']}" + (f"  outputs: {shown}" if shown else "")
            )
            error = ((run.get("attempts") or [{}])[-1]).get("error")
            if run["state"]["current"] == "FAILED" and error:
                click.echo(f"  {'':<{width}}  error: {error}")


def _duration(state: dict[str, Any]) -> str:
    """How long it ran: to its end, or until now while it is not over."""
    histories = state.get("histories") or []
    if not histories:
        return ""
    start = datetime.fromisoformat(histories[0]["date"])
    if State(histories[-1]["state"]).is_terminal:
        end = datetime.fromisoformat(histories[-1]["date"])
    else:
        end = datetime.now(UTC)
    if end == start:
        return ""
    return f"  ({(end - start).total_seconds():.2f}s)"


# --- triggers ------------------------------------------------------------------------


@cli.group()
def trigger() -> None:
    """Start executions through triggers."""


@trigger.command("publish")
@click.argument("namespace")
@click.argument("flow_id")
@click.option("--input", "inputs", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option(
    "--bootstrap",
    envvar="HEADRACE_KAFKA_BOOTSTRAP",
    default=Settings().kafka_bootstrap,
    show_default=True,
    help="Kafka bootstrap servers (env HEADRACE_KAFKA_BOOTSTRAP).",
)
@click.option("--revision", type=int, default=None, help="Flow revision (default: the latest).")
@click.pass_obj
def trigger_publish(
    api: ApiClient,
    namespace: str,
    flow_id: str,
    inputs: tuple[str, ...],
    bootstrap: str,
    revision: int | None,
) -> None:
    """Publish a trigger event for NAMESPACE/FLOW_ID straight to Kafka.

    The flow (latest revision unless --revision) and its inputs are checked through
    --server first, as a `headrace.client.TriggerClient` with a server_url does.
    """
    from headrace.client import TriggerClient

    values = _key_values(inputs)

    async def publish() -> str:
        async with TriggerClient(bootstrap, server_url=api.base_url, api_token=api.token) as client:
            return await client.trigger(namespace, flow_id, values, revision=revision)

    click.echo(f"published trigger for execution {asyncio.run(publish())}")


@trigger.command("list")
@click.option("--namespace", default=None)
@click.option("--flow-id", default=None)
@output_option
@click.pass_obj
def trigger_list(api: ApiClient, namespace: str | None, flow_id: str | None, output: str) -> None:
    """List declared triggers with their state (disabled, last and next fire time)."""
    page = api.list_triggers(namespace, flow_id)
    if output == JSON:
        echo_json(page["results"])
        return
    for item in page["results"]:
        state = "disabled" if item["disabled"] else "enabled"
        line = f"{item['namespace']}/{item['flowId']}/{item['triggerId']}  {item['type']}  {state}"
        # What it last started (the schedule's watermark, `lastTick`, is in the API).
        line += f"  last fired {item.get('lastFiredAt') or '-'}"
        if item["type"] == "schedule":
            line += f"  next {item['nextTick'] or '-'}"
        if item.get("lastError"):
            line += f"  error: {item['lastError']}"
        click.echo(line)
    click.echo(f"{page['total']} triggers")


def _switch_trigger(
    api: ApiClient, namespace: str, flow_id: str, trigger_id: str, on: bool
) -> None:
    api.set_trigger(namespace, flow_id, trigger_id, disabled=not on)
    click.echo(f"{namespace}/{flow_id}/{trigger_id} {'enabled' if on else 'disabled'}")


@trigger.command("enable")
@click.argument("namespace")
@click.argument("flow_id")
@click.argument("trigger_id")
@click.pass_obj
def trigger_enable(api: ApiClient, namespace: str, flow_id: str, trigger_id: str) -> None:
    """Switch a trigger back on (ticks missed while it was off are not caught up)."""
    _switch_trigger(api, namespace, flow_id, trigger_id, True)


@trigger.command("disable")
@click.argument("namespace")
@click.argument("flow_id")
@click.argument("trigger_id")
@click.pass_obj
def trigger_disable(api: ApiClient, namespace: str, flow_id: str, trigger_id: str) -> None:
    """Switch a trigger off at runtime, whatever its YAML says."""
    _switch_trigger(api, namespace, flow_id, trigger_id, False)


@trigger.command("backfill")
@click.argument("namespace")
@click.argument("flow_id")
@click.argument("trigger_id")
@click.option("--start", required=True, help="ISO date-time, included (no offset: trigger zone).")
@click.option("--end", required=True, help="ISO date-time, excluded.")
@click.pass_obj
def trigger_backfill(
    api: ApiClient, namespace: str, flow_id: str, trigger_id: str, start: str, end: str
) -> None:
    """Start every tick of a schedule in [START, END); re-running it starts nothing new."""
    answer = api.backfill_trigger(namespace, flow_id, trigger_id, start, end)
    for execution_id in answer["executionIds"]:
        click.echo(execution_id)
    click.echo(f"{answer['count']} ticks published (a tick that already ran starts nothing new)")


# --- namespaces ----------------------------------------------------------------------


@cli.group()
def namespace() -> None:
    """A namespace's own things (its files)."""


@namespace.group("files")
def namespace_files() -> None:
    """Files a namespace keeps beside its flows, for tasks' `namespaceFiles`."""


@namespace_files.command("upload")
@click.argument("local", type=click.Path(exists=True, path_type=Path))
@click.argument("namespace_name", metavar="NAMESPACE")
@click.option("--to", default="", metavar="DIR", help="Folder of the namespace to put it in.")
@click.pass_obj
def namespace_files_upload(api: ApiClient, local: Path, namespace_name: str, to: str) -> None:
    """Upload LOCAL, a file or a folder (recursively; hidden entries such as `.git`, and
    links, skipped), to NAMESPACE's files."""
    from headrace import namespace_files_cli

    namespace_files_cli.upload(api, local, namespace_name, to, click.echo)


@namespace_files.command("list")
@click.argument("namespace_name", metavar="NAMESPACE")
@click.argument("path", default="")
@output_option
@click.pass_obj
def namespace_files_list(api: ApiClient, namespace_name: str, path: str, output: str) -> None:
    """List NAMESPACE's files (below the folder PATH): size, time changed (UTC), path."""
    from headrace import namespace_files_cli

    if output == JSON:  # the API's entries, each with its path in the namespace
        folder = path.strip("/")
        echo_json(
            [
                {**entry, "path": f"{folder}/{entry['fileName']}" if folder else entry["fileName"]}
                for entry in namespace_files_cli.listing(api, namespace_name, path)
                if entry["type"] == "File"
            ]
        )
        return
    namespace_files_cli.list_files(api, namespace_name, path, click.echo)


@namespace_files.command("download")
@click.argument("namespace_name", metavar="NAMESPACE")
@click.argument("path")
@download_options
@click.pass_obj
def namespace_files_download(
    api: ApiClient, namespace_name: str, path: str, output: str | None, force: bool
) -> None:
    """Download the file PATH of NAMESPACE."""
    from headrace import namespace_files_cli

    namespace_files_cli.download(api, namespace_name, path, output, force, click.echo)


@namespace_files.command("delete")
@click.argument("namespace_name", metavar="NAMESPACE")
@click.argument("path")
@click.pass_obj
def namespace_files_delete(api: ApiClient, namespace_name: str, path: str) -> None:
    """Delete the file or folder PATH of NAMESPACE (a folder with all it holds)."""
    from headrace import namespace_files_cli

    namespace_files_cli.delete(api, namespace_name, path, click.echo)


@namespace_files.command("sync")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("namespace_name", metavar="NAMESPACE")
@click.option("--prune", is_flag=True, help="Delete NAMESPACE's files that FOLDER lacks.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.pass_obj
def namespace_files_sync(
    api: ApiClient, folder: Path, namespace_name: str, prune: bool, dry_run: bool
) -> None:
    """Make NAMESPACE's files those of FOLDER: upload what differs (by SHA-256)."""
    from headrace import namespace_files_cli

    namespace_files_cli.sync(
        api, folder, namespace_name, prune=prune, dry_run=dry_run, echo=click.echo
    )
