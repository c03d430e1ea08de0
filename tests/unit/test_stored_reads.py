"""`read()` from the flow to the task, without a broker: the core renders a marker, the
codec carries it, the worker's `run_attempt` swaps it for the stored file's text. Marker
text from outside stays data; files of another namespace, too big or not UTF-8 fail the
attempt naming them; places where the executor needs the value refuse read() when the
flow loads, with the line."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from headrace import codec
from headrace.connectors.registry import connector_classes
from headrace.core.context import secret_seed
from headrace.expressions import ExpressionError, render_properties, render_value
from headrace.flow import FlowValidationError, load_flow
from headrace.flow.model import Flow
from headrace.messages import LogRecord, TaskRequest, TaskResult
from headrace.namespace_storage import put_namespace_file
from headrace.secret_markers import SCOPE_KEY, SecretScope
from headrace.services.worker.runner import run_attempt
from headrace.states import State
from headrace.storage import Storage
from headrace.stored_reads import (
    MAX_READ_BYTES,
    MAX_READS_BYTES,
    marker,
    read_uses,
    resolve_reads,
)
from tests.unit.test_core_helpers import Run, finished, logs, requests, trigger
from tests.unit.test_worker import RecordingConnector

NAMESPACE = "company.team"
MADE_URI = f"headrace:///{NAMESPACE}/demo/executions/ex1/tasks/make/run1/0a1b2c-out.txt"
FLOW = Flow.model_validate(
    {
        "id": "demo",
        "namespace": NAMESPACE,
        "variables": {"sql": "{{ read('sql/load.sql') }}"},
        "tasks": [
            {"id": "make", "type": "recording", "body": "{{ inputs.note }}"},
            {
                "id": "use",
                "type": "recording",
                "body": "got {{ read(outputs.make.outputFiles['out.txt']) }}!",
                "password": "{{ vars.sql }}",
            },
        ],
    }
)


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    storage = Storage(tmp_path / "storage")
    with storage.writer(MADE_URI) as out:
        out.write("héllo\n".encode())
    put_namespace_file(storage, NAMESPACE, "sql/load.sql", io.BytesIO(b"SELECT 1;\n"))
    return storage


async def in_worker(request: TaskRequest, storage: Storage | None) -> tuple[TaskResult, Any]:
    """The result and what the task got, after the wire format and the worker."""
    decoded = codec.decode(codec.encode(request))
    assert isinstance(decoded, TaskRequest)

    async def publish(record: LogRecord) -> None:
        pass

    RecordingConnector.received.clear()
    result = await run_attempt(
        decoded,
        worker_id="w1",
        publish_log=publish,
        connectors={**connector_classes(), "recording": RecordingConnector},
        storage=storage,
    )
    received = RecordingConnector.received[0] if RecordingConnector.received else None
    return result, received


def use_request(note: str = "hi", made: str = MADE_URI) -> tuple[TaskRequest, TaskRequest]:
    """The requests of `make` and of `use`, after `make` stored `made`."""
    run = Run(FLOW)
    with secret_seed("seed-one"):
        (make,) = requests(run.send(trigger(inputs={"note": note})))
    with secret_seed("seed-two"):
        (use,) = requests(run.send(finished(make, outputs={"outputFiles": {"out.txt": made}})))
    return make, use


async def test_read_gives_the_stored_files_text_to_the_task(storage: Storage) -> None:
    make, use = use_request()
    # `vars.sql` renders for every task: each gets a nonce, its own.
    assert len(use.secret_nonce) == 32 and use.secret_nonce != make.secret_nonce
    assert use.secret_names == []
    assert use.properties["body"] == "got " + marker(MADE_URI, use.secret_nonce) + "!"
    result, received = await in_worker(use, storage)
    assert result.state is State.SUCCESS, result.error
    # A read in a variable works too, and a namespace file by its path.
    assert received == {"body": "got héllo\n!", "password": "SELECT 1;\n"}


async def test_marker_text_from_outside_stays_data(storage: Storage) -> None:
    # An input holding read markers: without a nonce, with a made-up one, and (below)
    # with the very nonce of an earlier attempt, which leaked through its output.
    forged = marker(MADE_URI, "") + marker(MADE_URI, "0" * 32)
    make, _ = use_request(note=forged)
    result, received = await in_worker(make, storage)
    assert result.state is State.SUCCESS, result.error
    assert received == {"body": forged}
    _, use = use_request()
    leaked = marker(MADE_URI, use.secret_nonce)
    run = Run(FLOW)
    with secret_seed("seed-three"):
        (again,) = requests(run.send(trigger(inputs={"note": leaked})))
    assert again.secret_nonce not in ("", use.secret_nonce)  # each attempt has its own
    result, received = await in_worker(again, storage)
    assert received == {"body": leaked}


async def test_a_file_of_another_namespace_fails_the_attempt(storage: Storage) -> None:
    # The executor refuses the URI while rendering...
    other = MADE_URI.replace(NAMESPACE, "company.other")
    run = Run(FLOW)
    with secret_seed("seed"):
        (make,) = requests(run.send(trigger(inputs={"note": "hi"})))
        sent = run.send(finished(make, outputs={"outputFiles": {"out.txt": other}}))
    assert requests(sent) == []  # the attempt failed while rendering
    (line,) = [r.message for r in logs(run.history) if r.task_id == "use"]
    assert "a flow of 'company.team' reads only its own namespace's files" in line
    # ...and the worker refuses it too, should a marker of it reach it anyway.
    _, use = use_request()
    use.properties = {"body": marker(other, use.secret_nonce)}
    result, received = await in_worker(use, storage)
    assert (result.state, received) == (State.FAILED, None)
    assert result.error is not None
    assert "a task of 'company.team' reads only its own namespace's files" in result.error


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"ok\xff", "body: read(" + MADE_URI + "): not UTF-8 text (byte 0xff at offset 2)"),
        (b"a" * (MAX_READ_BYTES + 1), "the file is over 1 MiB, the most read() gives"),
    ],
)
async def test_what_read_cannot_give_fails_the_attempt_naming_the_file(
    storage: Storage, content: bytes, error: str
) -> None:
    with storage.writer(MADE_URI) as out:
        out.write(content)
    _, use = use_request()
    result, received = await in_worker(use, storage)
    assert (result.state, received) == (State.FAILED, None)
    assert error in (result.error or "")


async def test_missing_files_and_no_storage_fail_the_attempt(storage: Storage) -> None:
    _, use = use_request(made=MADE_URI.replace("out.txt", "gone.txt"))
    result, _ = await in_worker(use, storage)
    assert result.state is State.FAILED
    assert "gone.txt: no such file in storage" in (result.error or "")
    result, _ = await in_worker(use, None)
    assert result.state is State.FAILED
    assert "no file storage is set up where this task runs" in (result.error or "")


def test_reads_of_one_attempt_are_bounded_in_all() -> None:
    files = {
        f"headrace:///ns/f/executions/e/tasks/t/r/{i}": b"a" * MAX_READ_BYTES for i in range(5)
    }
    value = [marker(uri, "n" * 32) for uri in files]
    with pytest.raises(Exception, match="over 4 MiB in all"):
        resolve_reads(value, lambda uri: io.BytesIO(files[uri]), nonce="n" * 32)
    assert MAX_READS_BYTES == 4 * MAX_READ_BYTES
    # One file read twice counts (and is read) once.
    opened: list[str] = []

    def open_counted(uri: str) -> io.BytesIO:
        opened.append(uri)
        return io.BytesIO(b"x")

    first = next(iter(files))
    twice = [marker(first, "n" * 32)] * 2
    assert resolve_reads(twice, open_counted, nonce="n" * 32) == ["x", "x"]
    assert opened == [first]


def test_a_files_text_is_not_scanned_for_markers() -> None:
    nonce = "n" * 32
    inner = "headrace:///ns/f/executions/e/tasks/t/r/inner"
    files = {"headrace:///ns/f/executions/e/tasks/t/r/outer": marker(inner, nonce).encode()}
    text = resolve_reads(
        {"a": marker(next(iter(files)), nonce)}, lambda uri: io.BytesIO(files[uri]), nonce=nonce
    )
    assert text == {"a": marker(inner, nonce)}


# ------------------------------------------------------------------ rendering


def context(scope: SecretScope | None) -> dict[str, Any]:
    base: dict[str, Any] = {"flow": {"id": "demo", "namespace": NAMESPACE}, "inputs": {}}
    return base if scope is None else {**base, SCOPE_KEY: scope}


@pytest.mark.parametrize(
    ("path", "uri"),
    [
        ("sql/load.sql", f"headrace:///{NAMESPACE}/_files/sql/load.sql"),
        ("/sql/a b.sql", f"headrace:///{NAMESPACE}/_files/sql/a%20b.sql"),
        ("nsfile:///sql/load.sql", f"headrace:///{NAMESPACE}/_files/sql/load.sql"),
        (f"nsfile://{NAMESPACE}/x.sql", f"headrace:///{NAMESPACE}/_files/x.sql"),
        (f"headrace:///{NAMESPACE}/_files/a b", f"headrace:///{NAMESPACE}/_files/a%20b"),
    ],
)
def test_read_names_a_namespace_file_by_its_path_as_kestra_does(path: str, uri: str) -> None:
    scope = SecretScope("n" * 32)
    rendered = render_properties({"x": "{{ read(p) }}"}, {**context(scope), "p": path})
    assert rendered == {"x": marker(uri, "n" * 32)}
    assert scope.reads and scope.names == []


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        ("read('kestra:///company/team/f/x')", "is a Kestra storage URI"),
        ("read('headrace:///company.other/_files/x')", "reads only its own namespace's files"),
        ("read('nsfile://company.other/x')", "reads only its own namespace's files"),
        ("read('x', namespace='company.other')", "reads only the files of the flow's own"),
        ("read('../x')", "leads out of the namespace's files"),
        ("read('https://example.com/x')", "give a storage URI"),
        ("read(3)", "takes a storage URI"),
        ("read('x.sql', version=2)", "leave out `version`"),
    ],
)
def test_what_read_refuses_when_it_renders(call: str, reason: str) -> None:
    with pytest.raises(ExpressionError, match="read") as caught:
        render_properties({"x": "{{ " + call + " }}"}, context(SecretScope("n" * 32)))
    assert reason in str(caught.value)


def test_read_where_no_task_properties_render_gives_a_marker_that_never_resolves() -> None:
    # Variables render for every context, runIf's too: that must not fail (the loader
    # refuses a read() whose value the executor would use).
    rendered = render_value("{{ read('x.sql') }}", context(None), "runIf")
    assert rendered == marker("", "")
    assert resolve_reads(rendered, lambda uri: io.BytesIO(b"x"), nonce="") == rendered


def test_no_read_no_nonce() -> None:
    flow = Flow.model_validate(
        {"id": "plain", "namespace": NAMESPACE, "tasks": [{"id": "a", "type": "recording"}]}
    )
    with secret_seed("seed"):
        (request,) = requests(Run(flow).send(trigger()))
    assert request.secret_nonce == ""


def test_read_inside_render_gives_no_marker_out() -> None:
    scope = SecretScope("n" * 32)
    ctx = {**context(scope), "inputs": {"note": "{{ read('x.sql') }}"}}
    with pytest.raises(ExpressionError, match="render"):
        render_properties({"x": "{{ render(inputs.note) }}"}, ctx)


# ------------------------------------------------------------------ validation


def test_read_uses_tell_a_whole_read_from_a_transformed_one() -> None:
    whole = [u.whole for u in read_uses("a {{ read(x) }} b\n{{ read(y) }}")]
    assert whole == [True, True]
    for source in (
        "{{ read(x) | trim }}",
        "{{ read(x) ~ 'a' }}",
        "{{ fromJson(read(x)).a }}",
        "{% if read(x) %}{% endif %}",
        "{% filter upper %}{{ read(x) }}{% endfilter %}",
        "{% set s %}{{ read(x) }}{% endset %}",
        "{% set r = read %}",
    ):
        assert [u.whole for u in read_uses(source)] == [False], source
    assert [u.whole for u in read_uses("{{ read(read(x)) }}")] == [True, False]
    assert read_uses("read the {{ x }}") == [] and read_uses("{{ reader }}") == []


READ_FLOW = """\
id: reads
namespace: company.team
variables:
  sql: "{{ read('load.sql') }}"
  shout: "{{ read('load.sql') | upper }}"
tasks:
  - id: make
    type: io.kestra.plugin.scripts.shell.Commands
    commands: ["echo hi > out.txt"]
    outputFiles: [out.txt]
  - id: show
    type: io.kestra.plugin.core.log.Log
    message: "{{ read(outputs.make.outputFiles['out.txt']) }}"
    runIf: "{{ read('flag') }}"
  - id: decide
    type: io.kestra.plugin.core.flow.If
    condition: "{{ read('flag') == 'yes' }}"
    then:
      - id: inner
        type: log
        message: |
          first line
          {{ read('x') | trim }}
outputs:
  - id: text
    type: STRING
    value: "{{ read('x') }}"
checks:
  - condition: "{{ read('x') }}"
    message: no
triggers:
  - id: hook
    type: io.kestra.plugin.core.trigger.Webhook
    key: "a-key-of-twenty-chars-{{ read('x') }}"
"""


def test_read_is_refused_where_it_cannot_work_with_its_line() -> None:
    with pytest.raises(FlowValidationError) as caught:
        load_flow(READ_FLOW)
    found = {(e.path, e.line): e.message for e in caught.value.errors if "read()" in e.message}
    assert set(found) == {
        ("variables.shout", 5),
        ("tasks[1].runIf", 14),
        ("tasks[2].condition", 17),
        ("tasks[2].then[0].message", 21),
        ("outputs[0].value", 27),
        ("checks[0].condition", 29),
        ("triggers[0].key", 34),
    }
    assert "read() cannot be used in runIf:" in found[("tasks[1].runIf", 14)]
    assert "the executor needs this value itself" in found[("tasks[2].condition", 17)]
    assert "`condition` of io.kestra.plugin.core.flow.If" in found[("tasks[2].condition", 17)]
    assert (
        "Use read() in the properties of a task that a worker runs"
        in found[("checks[0].condition", 29)]
    )
    inner = found[("tasks[2].then[0].message", 21)]
    assert inner.startswith("read() works only output whole, as in `{{ read(…) }}` (line 2")
    assert "give the file to the task as inputFiles" in inner


def test_a_whole_read_in_worker_task_properties_loads() -> None:
    allowed = "\n".join(
        line
        for line in READ_FLOW.split("outputs:")[0].splitlines()
        if "shout" not in line and "runIf" not in line
    ).split("  - id: decide")[0]
    flow = load_flow(allowed)
    assert [task.id for task in flow.tasks] == ["make", "show"]


VARIABLE_FLOW = """\
id: via-vars
namespace: company.team
variables:
  sql: "{{ read('load.sql') }}"
  query: "-- load\\n{{ vars.sql }}"
  plain: hello
tasks:
  - id: run
    type: log
    message: "{{ vars.query }} {{ vars.plain | upper }}"
    runIf: "{{ vars.plain == 'hello' }}"
  - id: loud
    type: log
    message: "{{ vars.query | upper }}"
  - id: maybe
    type: log
    message: x
    runIf: "{{ vars.sql }}"
  - id: all
    type: log
    message: "{{ vars | toJson }}"
"""


def test_a_variable_holding_a_read_is_held_to_the_same_rules() -> None:
    with pytest.raises(FlowValidationError) as caught:
        load_flow(VARIABLE_FLOW)
    found = {e.path: e.message for e in caught.value.errors}
    assert set(found) == {"tasks[1].message", "tasks[2].runIf", "tasks[3].message"}
    assert found["tasks[1].message"].startswith("vars.query, which holds a read(), works only")
    assert found["tasks[2].runIf"].startswith("vars.sql, which holds a read(), cannot be used")
    assert found["tasks[3].message"].startswith("`vars`, whose variables hold a read(),")
    loads = VARIABLE_FLOW.split("  - id: loud")[0]
    assert [task.id for task in load_flow(loads).tasks] == ["run"]
