"""dbt: `dbt.build`, `dbt.run`, `dbt.test` and `dbt.cli` run dbt-core on the worker.

Kestra's `io.kestra.plugin.dbt.cli` tasks (`Build`, `Run`, `Test`, `DbtCLI`), with their
property names. dbt runs as a subprocess through `_process.run_process`: its own process
group, only the worker's base environment plus the task's `env`. dbt is told to log JSON,
and each event becomes one log line at dbt's level with dbt's own words; after each
command `run_results.json` gives a result per node (the outputs) and the failing node's
reason (the error). dbt's artifacts and logs go to the attempt's directory, never into
the project, so two executions of one project can run at once. A kill, a timeout or a
shutdown interrupts dbt as Ctrl-C does: dbt cancels its running queries on the
warehouse (it gets `STOP_GRACE_S` for that), then its process group ends.

The dbt executable: `dbtPath` (an absolute path), else the `dbt` installed beside the
worker's Python (`pip install 'headrace[dbt]'`), else the first on PATH.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from headrace.connectors._process import child_environment, run_process
from headrace.connectors.base import MAX_OUTPUTS_BYTES, TaskContext, TaskFailed
from headrace.connectors.namespace_files import copied_line, copy_namespace_files
from headrace.connectors.script_files import write_input_files
from headrace.connectors.script_task import ProgramProperties
from headrace.messages import LogLevel
from headrace.storage import TaskFiles

INSTALL_HINT = (
    "install headrace[dbt] on the workers (pip install 'headrace[dbt]'), or set dbtPath to"
    " a dbt executable"
)
# The task's own files in the attempt directory: dbt's artifacts (`target`), its log file
# and the profiles. `.headrace` names are refused as input files, so none collides.
OWN_DIRECTORY = ".headrace-dbt"
# Set by the task for every command: JSON logs are what it reads, and artifacts and logs
# go to the attempt directory. A command may not change them.
TASK_OPTIONS = ("--log-format", "--log-path", "--target-path")
DBT_LEVELS = {
    "debug": LogLevel.DEBUG,
    "info": LogLevel.INFO,
    "warn": LogLevel.WARN,
    "error": LogLevel.ERROR,
}
# run_results.json statuses (models, seeds, snapshots: success, error, skipped, no-op,
# partial success; tests: pass, fail, warn; `runtime error` for both), as output keys.
SUMMARY_KEYS = {
    "success": "success",
    "pass": "pass",
    "warn": "warn",
    "fail": "fail",
    "error": "error",
    "runtime error": "runtimeError",
    "skipped": "skipped",
    "no-op": "noOp",
    "partial success": "partialSuccess",
}
FAILED_STATUSES = frozenset({"error", "fail", "runtime error", "partial success"})
# The results list stops well short of the worker's limit on outputs: the rest is room
# for the summary, and for masking and escapes that lengthen text after it is counted.
RESULTS_BUDGET_BYTES = MAX_OUTPUTS_BYTES * 3 // 4
# Seconds dbt gets, after the Ctrl-C of a kill, a timeout or a shutdown, to cancel its
# queries on the warehouse (a round trip per query, longer on a busy one) before SIGKILL.
# Less than the worker's shutdown grace period (services.worker.service
# SHUTDOWN_GRACE_S, 10 s), with a margin for the rest of the worker's shutdown.
STOP_GRACE_S = 8.0
MAX_MESSAGE_CHARS = 1000  # of one node's message in the outputs and in the error
# "Database Error in model orders (models/orders.sql)": the first line of a node's error.
_ERROR_HEADER = re.compile(r"^(?P<kind>[\w ]*Error) in \w+ \S+ \(.*\)$")


# ------------------------------------------------------------------ properties


class DbtProperties(ProgramProperties):
    # After `inputFiles` (ProgramProperties'): its validator reads them.
    project_dir: str | None = Field(
        default=None,
        alias="projectDir",
        description="The dbt project's directory (where dbt_project.yml is): an absolute"
        " path on the worker, or with `inputFiles` a directory among them (default: their"
        " root). dbt writes nothing into it: artifacts and logs go to the attempt's own"
        " directory (`dbt deps` excepted: dbt installs packages inside the project).",
    )
    profiles: str | None = Field(
        default=None,
        description="The content of profiles.yml. Default: the project directory's"
        " profiles.yml, else ~/.dbt/profiles.yml. Pass a password in `env` and read it"
        " with dbt's `env_var('NAME')`, inside `{% raw %}…{% endraw %}` so that the flow's"
        " own expressions leave it to dbt.",
    )
    dbt_path: str | None = Field(
        default=None,
        alias="dbtPath",
        description="The dbt executable, an absolute path. Default: the dbt installed with"
        " the worker (`pip install 'headrace[dbt]'`), else the first on PATH.",
    )
    parse_run_results: bool = Field(
        default=True,
        alias="parseRunResults",
        description="Read target/run_results.json into the outputs (`results`, `summary`)"
        " and log one line per node.",
    )

    @field_validator("project_dir")
    @classmethod
    def _where_the_project_is(cls, value: str | None, info: ValidationInfo) -> str | None:
        given = info.data
        if value is None or "input_files" not in given or "namespace_files" not in given:
            return value  # not given, or another property is invalid itself
        path = PurePosixPath(value)
        if given["input_files"] or given["namespace_files"].enabled:
            if path.is_absolute() or ".." in path.parts:
                raise ValueError(
                    f"{value!r} must be a directory among the inputFiles or namespaceFiles (a"
                    " relative path inside them) when those are given"
                )
        elif not path.is_absolute():
            raise ValueError(
                f"{value!r} must be an absolute path on the worker (or give the project as"
                " inputFiles or namespaceFiles)"
            )
        return value

    @field_validator("dbt_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # A relative path would be looked for from the worker's directory but run from
        # the project's: say which file, absolutely.
        if value is not None and not PurePosixPath(value).is_absolute():
            raise ValueError(f"{value!r} must be an absolute path to a dbt executable")
        return value

    @model_validator(mode="after")
    def _some_project(self) -> DbtProperties:
        if self.project_dir is None and not in_working_directory(self):
            raise ValueError(
                "give the project: `projectDir` (its path on the worker), `inputFiles`, or"
                " `namespaceFiles`"
            )
        return self


def in_working_directory(properties: DbtProperties) -> bool:
    """Whether the project is copied into the working directory (else: `projectDir`)."""
    return bool(properties.input_files) or properties.namespace_files.enabled


def _dbt_command(command: str) -> str:
    command_words(command)
    return command


class DbtCliProperties(DbtProperties):
    # Checked one by one: an error names the command (`commands[1]`), and a command that
    # is an expression waits for its value.
    commands: list[Annotated[str, AfterValidator(_dbt_command)]] = Field(
        min_length=1,
        description="dbt commands run in order, each as `dbt SUBCOMMAND [OPTIONS]`"
        " (`dbt deps`, `dbt build --select tag:daily`): the first that fails ends the"
        " task. Split like a shell's words, never run by a shell.",
    )


def command_words(command: str) -> list[str]:
    """The words of one `commands` entry; ValueError when it is not a dbt command the task
    can run. (Messages end with ", got COMMAND", which the flow loader then does not add.)"""
    try:
        words = shlex.split(command)
    except ValueError as exc:  # an unclosed quote
        raise ValueError(f"cannot be split into words ({exc}), got {command!r}") from None
    if not words or words[0] != "dbt":
        raise ValueError(f"is not a dbt command (each starts with `dbt`), got {command!r}")
    for word in words[1:]:
        for option in TASK_OPTIONS:
            if word == option or word.startswith(option + "="):
                raise ValueError(
                    f"sets {option}, which the task sets itself (dbt's logs are read as"
                    " JSON; its artifacts and logs go to the attempt's directory),"
                    f" got {command!r}"
                )
    return words


class DbtTestProperties(DbtProperties):
    target: str | None = Field(default=None, description="The profile's target to use.")
    select: list[str] = Field(
        default_factory=list, description="Node selection (`--select`): `orders+`, `tag:daily`."
    )
    exclude: list[str] = Field(default_factory=list, description="Nodes to leave out.")
    selector: str | None = Field(default=None, description="A selector of selectors.yml.")
    vars: dict[str, Any] = Field(
        default_factory=dict, description="The project's variables (`--vars`), by name."
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        validation_alias=AliasChoices("threads", "thread"),  # `thread`: Kestra's name
        description="Models run at once (`--threads`; Kestra's name `thread` works too)."
        " Default: the profile's.",
    )
    fail_fast: bool = Field(
        default=False, alias="failFast", description="Stop at the first failure."
    )
    warn_error: bool = Field(
        default=False, alias="warnError", description="Treat dbt's warnings as errors."
    )
    debug: bool = Field(default=False, description="dbt's debug logging (at DEBUG).")

    @field_validator("select", "exclude", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DbtBuildProperties(DbtTestProperties):
    full_refresh: bool = Field(
        default=False,
        alias="fullRefresh",
        description="Rebuild incremental models from scratch (`--full-refresh`).",
    )


# ------------------------------------------------------------------ outputs


class DbtNodeResult(BaseModel):
    unique_id: str = Field(alias="uniqueId", description="model.my_project.orders")
    status: str = Field(description="dbt's: success, error, skipped, pass, fail, warn…")
    execution_time: float = Field(alias="executionTime", description="Seconds.")
    message: str | None = Field(description="dbt's: `SELECT 3`, an error's text.")
    rows_affected: int | None = Field(
        alias="rowsAffected", description="From the database's answer; -1 where it has none."
    )
    failures: int | None = Field(description="Tests: rows that failed.")


class DbtOutputs(BaseModel):
    exit_code: int = Field(alias="exitCode", description="0: a failure fails the task instead.")
    results: list[DbtNodeResult] = Field(
        description="One per node run, in order, over all commands (with parseRunResults)."
    )
    summary: dict[str, int] = Field(
        description="Nodes by status: success, pass, warn, fail, error, runtimeError,"
        " skipped, noOp, partialSuccess."
    )
    results_omitted: int = Field(
        alias="resultsOmitted",
        description="Results left out of `results` to keep the outputs under 256 KiB (each"
        " still has its log line).",
    )


# ------------------------------------------------------------------ running dbt


def find_dbt(dbt_path: str | None, search_path: str | None) -> str:
    """The dbt executable to run, by its absolute path; TaskFailed saying how to install
    it when there is none."""
    if dbt_path is not None:  # absolute: the model says so
        if not (os.path.isfile(dbt_path) and os.access(dbt_path, os.X_OK)):
            raise TaskFailed(f"dbtPath {dbt_path!r} is not an executable file: {INSTALL_HINT}")
        return dbt_path
    # Beside the worker's interpreter: where `pip install 'headrace[dbt]'` put it, even when
    # that environment's bin directory is not on PATH.
    beside = Path(sys.executable).parent / "dbt"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("dbt", path=search_path)
    if found is None:
        raise TaskFailed(f"dbt is not installed on this worker: {INSTALL_HINT}")
    # A relative entry of PATH was searched from the worker's directory; dbt runs from
    # the project's.
    return os.path.abspath(found)


def project_directory(
    properties: DbtProperties, workdir: Path, files: TaskFiles | None
) -> tuple[Path, list[str]]:
    """Blocking: where the project is, and the namespace files copied for it: copied
    from the namespace's files and `inputFiles` into `workdir`, or `projectDir` on the
    worker (the model checked which of the two forms `projectDir` takes)."""
    copied: list[str] = []
    if in_working_directory(properties):
        copied = copy_namespace_files(files, properties.namespace_files, workdir)
        write_input_files(workdir, properties.input_files, stored=files)
        project = workdir / (properties.project_dir or "")
    else:
        assert properties.project_dir is not None  # the model requires one of the two
        project = Path(properties.project_dir)
    if not (project / "dbt_project.yml").is_file():
        raise TaskFailed(f"projectDir {str(project)!r} holds no dbt_project.yml")
    return project, copied


class DbtLog:
    """Turns dbt's JSON log lines into the attempt's log lines, and keeps its errors."""

    def __init__(self, context: TaskContext) -> None:
        self.context = context
        self.last_error: str | None = None

    async def line(self, text: str) -> None:
        try:
            event = orjson.loads(text)
            info = event["info"]
            level = DBT_LEVELS.get(info["level"], LogLevel.INFO)
            message = info["msg"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            await self.context.info(text)  # not an event: a print() of a macro, a warning
            return
        if not isinstance(message, str) or not message.strip():
            return  # dbt's blank spacer lines
        # A stack trace follows an unexpected error: the error before it says more.
        if level is LogLevel.ERROR and info.get("name") != "MainStackTrace":
            self.last_error = message
        await self.context.log(level, message)


def node_reason(result: dict[str, Any]) -> str:
    """A failed node's error in one line: `Database Error: relation "raw.x" does not exist`."""
    lines = [line.strip() for line in str(result.get("message") or "").splitlines()]
    kept = [
        line
        for line in lines
        if line and not line.startswith("compiled code at") and set(line) != {"^"}
    ]
    if not kept:
        return str(result.get("status"))
    header = _ERROR_HEADER.match(kept[0])
    if header and len(kept) > 1:
        reason = f"{header['kind']}: {'; '.join(kept[1:])}"
    else:
        reason = "; ".join(kept)
    return _cut(reason)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


def node_result(result: dict[str, Any]) -> dict[str, Any]:
    """One run_results.json entry as an output: Kestra-style names, short messages."""
    answer = result.get("adapter_response") or {}
    rows = answer.get("rows_affected") if isinstance(answer, dict) else None
    message = result.get("message")
    return {
        "uniqueId": result.get("unique_id"),
        "status": result.get("status"),
        "executionTime": round(float(result.get("execution_time") or 0.0), 3),
        "message": None if message is None else _cut(str(message)),
        "rowsAffected": rows if isinstance(rows, int) else None,
        "failures": result.get("failures"),
    }


def describe_result(result: dict[str, Any]) -> tuple[LogLevel, str]:
    """The log line summing up one node: `model.p.orders: success in 0.12s, 3 rows (SELECT 3)`."""
    status = str(result.get("status"))
    line = f"{result.get('unique_id')}: {status} in {float(result.get('execution_time') or 0):.2f}s"
    if status in FAILED_STATUSES:
        return LogLevel.ERROR, f"{line}: {node_reason(result)}"
    answer = result.get("adapter_response") or {}
    rows = answer.get("rows_affected") if isinstance(answer, dict) else None
    if result.get("failures") is not None:  # a test: its rows are failures, not changes
        if result["failures"]:
            line += f", {result['failures']} failing"
    elif isinstance(rows, int) and rows >= 0:
        line += f", {rows} row{'s' if rows != 1 else ''}"
    if result.get("message"):
        line += f" ({_cut(str(result['message']))})"
    return (LogLevel.WARN if status == "warn" else LogLevel.INFO), line


class DbtRunner:
    """Runs the dbt commands of one attempt and gathers their results."""

    def __init__(self, properties: DbtProperties, context: TaskContext) -> None:
        self.properties = properties
        self.context = context
        self.results: list[dict[str, Any]] = []  # run_results.json entries, all commands
        own = context.workdir / OWN_DIRECTORY
        self.target_path = own / "target"
        self.log_path = own / "logs"
        self.profiles_dir = own / "profiles"

    async def prepare(self) -> None:
        # Off the event loop: copying the project's files may take a while.
        self.project, copied = await asyncio.to_thread(
            project_directory, self.properties, self.context.workdir, self.context.files
        )
        if self.properties.namespace_files.enabled:
            await self.context.info(copied_line(copied, self.context.namespace))
        self.env = child_environment(self.properties.env)
        # A worker does not report usage to dbt Labs unless the flow says so in `env`.
        self.env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        # As variables, not options: every subcommand reads them (`dbt deps` takes no
        # --target-path), and a task's command line stays what the user wrote.
        self.env["DBT_PROJECT_DIR"] = str(self.project)
        self.env["DBT_TARGET_PATH"] = str(self.target_path)
        if self.properties.profiles is not None:
            self.profiles_dir.mkdir(parents=True)
            (self.profiles_dir / "profiles.yml").write_text(self.properties.profiles)
            self.env["DBT_PROFILES_DIR"] = str(self.profiles_dir)
        self.dbt = find_dbt(self.properties.dbt_path, self.env.get("PATH"))

    async def run(self, words: list[str], label: str) -> None:
        """Run `dbt WORDS...`; TaskFailed with the first failing node's reason."""
        await self.context.info(f"{label}{shlex.join(['dbt', *words])}")
        run_results = self.target_path / "run_results.json"
        run_results.unlink(missing_ok=True)  # a command that writes none must not reread one
        argv = [self.dbt, "--log-format", "json", "--no-use-colors"]
        argv += ["--log-path", str(self.log_path), *words]
        log = DbtLog(self.context)
        failure: TaskFailed | None = None
        try:
            await run_process(
                argv,
                self.context,
                env=self.env,
                cwd=self.project,  # where dbt looks for a profiles.yml of the project's
                stdout_handler=log.line,
                stop_signal=signal.SIGINT,  # dbt's Ctrl-C cancels its running queries
                grace_s=STOP_GRACE_S,
            )
        except TaskFailed as exc:
            failure = exc
        results = self._read(run_results)
        if self.properties.parse_run_results:
            for result in results:
                await self.context.log(*describe_result(result))
            self.results.extend(results)
        if failure is not None:
            failed = next((r for r in results if r.get("status") in FAILED_STATUSES), None)
            if failed is not None:
                raise TaskFailed(f"{label}{failed.get('unique_id')}: {node_reason(failed)}")
            if log.last_error is not None:
                raise TaskFailed(f"{label}{_cut(' '.join(log.last_error.split()))}")
            raise TaskFailed(f"{label}dbt failed: {failure}")

    @staticmethod
    def _read(run_results: Path) -> list[dict[str, Any]]:
        try:
            document = orjson.loads(run_results.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return []  # `dbt deps`, `dbt debug`, or dbt failed before running any node
        results = document.get("results") if isinstance(document, dict) else None
        return [r for r in results or [] if isinstance(r, dict)]

    async def outputs(self) -> dict[str, Any]:
        summary = dict.fromkeys(SUMMARY_KEYS.values(), 0)
        statuses = Counter(str(r.get("status")) for r in self.results)
        for status, count in statuses.items():
            key = SUMMARY_KEYS.get(status, status)
            summary[key] = summary.get(key, 0) + count
        listed: list[dict[str, Any]] = []
        size = 0
        for result in self.results:
            entry = node_result(result)
            size += len(orjson.dumps(entry)) + 1
            if size > RESULTS_BUDGET_BYTES:
                break
            listed.append(entry)
        omitted = len(self.results) - len(listed)
        if omitted:
            await self.context.log(
                LogLevel.WARN,
                f"outputs list the first {len(listed)} of {len(self.results)} results (the"
                f" outputs hold at most {MAX_OUTPUTS_BYTES // 1024} KiB); the log has a line"
                " for each",
            )
        return {"exitCode": 0, "results": listed, "summary": summary, "resultsOmitted": omitted}


# ------------------------------------------------------------------ task types


class DbtCli:
    """Runs dbt commands (`dbt deps`, `dbt build --select …`) on a dbt project.

    Each command runs in order and the first that fails ends the task, with the failing
    node's error ("model.shop.orders: Database Error: relation \"raw.x\" does not exist").
    dbt's log lines stream into the execution's logs at dbt's levels; `results` and
    `summary` give every node's status, time and rows. dbt's artifacts and logs go to the
    attempt's directory, never into the project. A kill, a timeout or a shutdown
    interrupts dbt, which cancels its running queries, and ends its process group.
    """

    Properties = DbtCliProperties
    Outputs = DbtOutputs
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.plugin.dbt.cli.DbtCLI",)

    async def run(self, properties: DbtCliProperties, context: TaskContext) -> dict[str, Any]:
        runner = DbtRunner(properties, context)
        await runner.prepare()
        total = len(properties.commands)
        for number, command in enumerate(properties.commands, start=1):
            words = command_words(command)[1:]
            await runner.run(words, f"command {number} of {total}: " if total > 1 else "")
        return await runner.outputs()


class DbtCommand:
    """A dbt subcommand with typed options (the shortcuts' shared part)."""

    command: ClassVar[str]
    Outputs = DbtOutputs

    async def run(self, properties: DbtTestProperties, context: TaskContext) -> dict[str, Any]:
        runner = DbtRunner(properties, context)
        await runner.prepare()
        await runner.run([self.command, *options(properties)], "")
        return await runner.outputs()


def options(properties: DbtTestProperties) -> list[str]:
    """The dbt options that `properties` ask for, as words of their own (no shell).

    Each value is joined to its option (`--select=orders+`): as a word of its own, a
    value starting with `-` (`--target-path /x`, from an input) would be read by dbt as
    an option, one the task sets itself or any other.
    """
    words: list[str] = []
    if properties.target is not None:
        words.append(f"--target={properties.target}")
    words += [f"--select={selector}" for selector in properties.select]
    words += [f"--exclude={selector}" for selector in properties.exclude]
    if properties.selector is not None:
        words.append(f"--selector={properties.selector}")
    if properties.vars:
        words.append(f"--vars={orjson.dumps(properties.vars).decode()}")  # JSON is YAML
    if properties.threads is not None:
        words.append(f"--threads={properties.threads}")
    if isinstance(properties, DbtBuildProperties) and properties.full_refresh:
        words.append("--full-refresh")
    if properties.fail_fast:
        words.append("--fail-fast")
    if properties.warn_error:
        words.append("--warn-error")
    if properties.debug:
        words.append("--debug")
    return words


class DbtBuild(DbtCommand):
    """Runs `dbt build`: seeds, models, snapshots and tests, in the order of the DAG.

    The first failing node fails the task with its error; dbt's log lines stream into the
    execution's logs, and `results`/`summary` give every node's status, time and rows.
    """

    Properties = DbtBuildProperties
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.plugin.dbt.cli.Build",)
    command = "build"


class DbtRun(DbtCommand):
    """Runs `dbt run`: builds the models.

    The first failing model fails the task with its error; dbt's log lines stream into the
    execution's logs, and `results`/`summary` give every model's status, time and rows.
    """

    Properties = DbtBuildProperties
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.plugin.dbt.cli.Run",)
    command = "run"


class DbtTest(DbtCommand):
    """Runs `dbt test`: the data tests and unit tests.

    A failing test fails the task with dbt's reason ("Got 3 results, configured to fail if
    != 0"); `results`/`summary` give every test's status and failing rows.
    """

    Properties = DbtTestProperties
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.plugin.dbt.cli.Test",)
    command = "test"
