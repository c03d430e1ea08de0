"""The log, shell and python connectors, run directly with a context that collects logs."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from headrace.connectors._process import parse_outputs_line
from headrace.connectors.base import TaskContext, TaskFailed
from headrace.connectors.log import LogConnector, LogProperties
from headrace.connectors.python import PythonConnector, PythonProperties
from headrace.connectors.shell import ShellConnector, ShellProperties
from headrace.messages import LogLevel

DEADLINE_S = 10.0


class Lines(list[tuple[LogLevel, str]]):
    """The log lines an attempt wrote, in order; `on` runs a hook per line."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: list = []

    async def sink(self, level: LogLevel, message: str) -> None:
        self.append((level, message))
        for hook in self.hooks:
            hook(level, message)

    def texts(self, level: LogLevel | None = None) -> list[str]:
        return [m for lv, m in self if level is None or lv == level]


def make_context(workdir: Path, lines: Lines) -> TaskContext:
    workdir.mkdir(parents=True, exist_ok=True)
    return TaskContext(
        execution_id="e1",
        namespace="ns",
        flow_id="f",
        task_id="t",
        task_run_id="tr1",
        attempt=1,
        log_sink=lines.sink,
        workdir=workdir,
    )


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_until(condition, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def run_shell(tmp_path: Path, lines: Lines, **props) -> dict:
    properties = ShellProperties.model_validate(props)
    async with asyncio.timeout(DEADLINE_S):
        return await ShellConnector().run(properties, make_context(tmp_path / "attempt", lines))


async def test_log_connector_logs_message_at_level(tmp_path: Path) -> None:
    lines = Lines()
    properties = LogProperties(message="hello", level=LogLevel.WARN)
    outputs = await LogConnector().run(properties, make_context(tmp_path, lines))
    assert outputs == {}
    assert lines == [(LogLevel.WARN, "hello")]


async def test_shell_runs_commands_with_env_workdir_and_outputs(tmp_path: Path) -> None:
    lines = Lines()
    workdir = tmp_path / "wd"
    workdir.mkdir()
    outputs = await run_shell(
        tmp_path,
        lines,
        commands=[
            "echo hello",
            'echo "$GREETING"',
            "pwd",
            """echo '::{"outputs": {"rows": 3, "table": "events"}}::'""",
        ],
        env={"GREETING": "bonjour"},
        workingDirectory=str(workdir),
    )
    assert outputs == {"rows": 3, "table": "events", "exitCode": 0}
    assert lines == [
        (LogLevel.INFO, "hello"),
        (LogLevel.INFO, "bonjour"),
        (LogLevel.INFO, str(workdir)),
    ]


async def test_shell_defaults_to_the_attempt_directory(tmp_path: Path) -> None:
    lines = Lines()
    await run_shell(tmp_path, lines, commands=["pwd"])
    assert lines.texts() == [str(tmp_path / "attempt")]


async def test_shell_stops_at_the_first_failing_command(tmp_path: Path) -> None:
    lines = Lines()
    with pytest.raises(TaskFailed) as caught:
        await run_shell(tmp_path, lines, commands=["echo before", "false", "echo never"])
    assert str(caught.value) == "exit code 1"
    assert lines.texts() == ["before"]


async def test_shell_non_zero_exit_reports_code_and_last_stderr_line(tmp_path: Path) -> None:
    lines = Lines()
    with pytest.raises(TaskFailed) as caught:
        await run_shell(
            tmp_path, lines, commands=["echo warming up >&2", "echo disk full >&2", "exit 3"]
        )
    assert str(caught.value) == "exit code 3: disk full"
    assert lines == [(LogLevel.WARN, "warming up"), (LogLevel.WARN, "disk full")]


async def test_a_nul_in_the_environment_fails_the_task_saying_where(tmp_path: Path) -> None:
    # What an altered secret() marker leaves (`secret('X') | replace(...)`).
    with pytest.raises(TaskFailed) as caught:
        await run_shell(tmp_path, Lines(), commands=["true"], env={"S": "\x00secret:x"})
    assert str(caught.value).startswith("env S holds a NUL character")


async def test_shell_streams_lines_as_they_come(tmp_path: Path) -> None:
    # The script waits for a file the test creates only once "first" was logged: if lines
    # were delivered at the end, this would hang until the deadline.
    lines = Lines()
    go = tmp_path / "go"
    lines.hooks.append(lambda level, message: message == "first" and go.touch())
    await run_shell(
        tmp_path,
        lines,
        commands=["echo first", f"while [ ! -f {go} ]; do sleep 0.01; done", "echo second"],
    )
    assert lines.texts() == ["first", "second"]


async def test_shell_marker_lines_that_are_not_outputs_are_logged(tmp_path: Path) -> None:
    lines = Lines()
    outputs = await run_shell(tmp_path, lines, commands=["echo '::not json::'", "echo '::{}::'"])
    assert outputs == {"exitCode": 0}
    assert lines.texts() == ["::not json::", "::{}::"]


async def test_cancelling_a_shell_task_kills_its_process_group(tmp_path: Path) -> None:
    lines = Lines()
    pid_file = tmp_path / "child.pid"
    properties = ShellProperties(
        commands=[f"sleep 300 & echo $! > {pid_file}", "echo started", "wait"]
    )
    context = make_context(tmp_path / "attempt", lines)
    task = asyncio.create_task(ShellConnector().run(properties, context))
    await wait_until(lambda: "started" in lines.texts(), "the script to start")
    child = int(pid_file.read_text())
    assert process_alive(child)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await asyncio.shield(task)  # shielded so the test, not the timeout, cancels it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not process_alive(child), f"child {child} to die")


async def test_background_children_do_not_outlive_a_finished_task(tmp_path: Path) -> None:
    lines = Lines()
    pid_file = tmp_path / "child.pid"
    await run_shell(tmp_path, lines, commands=[f"sleep 300 & echo $! > {pid_file}"])
    child = int(pid_file.read_text())
    await wait_until(lambda: not process_alive(child), f"child {child} to die")


async def test_python_outputs_and_logs(tmp_path: Path) -> None:
    lines = Lines()
    script = """
import sys
from headrace.task import outputs
print("loading")
print("careful", file=sys.stderr)
outputs(rows=2, names=["a", "b"])
outputs(rows=3)
"""
    properties = PythonProperties(script=script, env={"UNUSED": "1"})
    async with asyncio.timeout(DEADLINE_S):
        outputs = await PythonConnector().run(properties, make_context(tmp_path, lines))
    assert outputs == {"rows": 3, "names": ["a", "b"], "exitCode": 0}
    assert lines.texts(LogLevel.INFO) == ["loading"]
    assert lines.texts(LogLevel.WARN) == ["careful"]


async def test_python_uses_the_worker_interpreter_and_env(tmp_path: Path) -> None:
    lines = Lines()
    script = "import os, sys\nprint(sys.executable)\nprint(os.environ['COLOUR'])\n"
    properties = PythonProperties(script=script, env={"COLOUR": "blue"})
    await PythonConnector().run(properties, make_context(tmp_path, lines))
    assert lines.texts() == [sys.executable, "blue"]


async def test_python_exception_fails_with_its_last_line(tmp_path: Path) -> None:
    lines = Lines()
    properties = PythonProperties(script="raise ValueError('bad row')\n")
    with pytest.raises(TaskFailed) as caught:
        await PythonConnector().run(properties, make_context(tmp_path, lines))
    assert str(caught.value) == "exit code 1: ValueError: bad row"
    assert any("Traceback" in text for text in lines.texts(LogLevel.WARN))


async def test_python_print_streams_without_flush(tmp_path: Path) -> None:
    lines = Lines()
    go = tmp_path / "go"
    lines.hooks.append(lambda level, message: message == "first" and go.touch())
    script = f"""
import os, time
print("first")
while not os.path.exists({str(go)!r}):
    time.sleep(0.01)
print("second")
"""
    async with asyncio.timeout(DEADLINE_S):
        await PythonConnector().run(PythonProperties(script=script), make_context(tmp_path, lines))
    assert lines.texts() == ["first", "second"]


def test_outputs_line_parsing() -> None:
    assert parse_outputs_line('::{"outputs": {"a": 1}}::') == {"a": 1}
    assert parse_outputs_line('::{"metrics": {}}::') is None
    assert parse_outputs_line('::{"outputs": 3}::') is None
    assert parse_outputs_line("::") is None
    assert parse_outputs_line('x::{"outputs": {}}::') is None


def test_task_outputs_prints_the_marker_line(capsys: pytest.CaptureFixture[str]) -> None:
    from headrace.task import outputs

    outputs(answer=42, text="a\nb")
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1
    assert parse_outputs_line(printed.rstrip("\n")) == {"answer": 42, "text": "a\nb"}


def test_process_alive_helper_sees_this_process() -> None:
    assert process_alive(os.getpid())


async def test_tasks_get_only_base_variables_of_the_workers_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEADRACE_SECRET_X", "leaky-secret-value")
    monkeypatch.setenv("HEADRACE_DATABASE_URL", "postgresql://u:pw@db/headrace")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-tasks")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("TZ", "Europe/Paris")
    lines = Lines()
    await run_shell(tmp_path, lines, commands=["env"], env={"HEADRACE_MINE": "given"})
    printed = sorted(lines.texts())
    inherited = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM"}
    assert sorted(name.split("=", 1)[0] for name in printed) == sorted(
        ["HEADRACE_MINE", "LC_TIME", "TZ", "PWD", "PYTHONUNBUFFERED"]
        + [name for name in inherited if name in os.environ]
    )
    assert "HEADRACE_MINE=given" in printed  # the task's own env is added on top
    assert f"PATH={os.environ['PATH']}" in printed


async def test_a_failing_log_sink_ends_the_process_instead_of_hanging(tmp_path: Path) -> None:
    # The script writes forever: if the failed reader stopped draining the pipe while the
    # worker waited for the exit, both would wait for ever.
    class SinkDown(Exception):
        pass

    async def sink(level: LogLevel, message: str) -> None:
        raise SinkDown

    pid_file = tmp_path / "script.pid"
    context = make_context(tmp_path / "attempt", Lines())
    context.log_sink = sink
    properties = ShellProperties(commands=[f"echo $$ > {pid_file}", "while true; do echo x; done"])
    with pytest.raises(SinkDown):
        async with asyncio.timeout(DEADLINE_S):
            await ShellConnector().run(properties, context)
    pid = int(pid_file.read_text())
    await wait_until(lambda: not process_alive(pid), f"script {pid} to die")
