"""Kestra's `debug.Return`, `output.OutputValues` and `flow.Sleep`, as a worker runs them."""

from __future__ import annotations

import textwrap
import time
from datetime import timedelta

from headrace.flow.loader import load_flow
from headrace.messages import LogLevel
from headrace.states import State
from headrace.testing import run_task
from tests.unit.test_flow_loader import only_error


async def test_return_outputs_its_format_as_value_and_logs_it() -> None:
    run = await run_task("io.kestra.plugin.core.debug.Return", {"format": "ok > 2026"})
    assert (run.state, run.outputs) == (State.SUCCESS, {"value": "ok > 2026"})
    assert run.logs == [(LogLevel.DEBUG, "ok > 2026")]
    empty = await run_task("io.kestra.core.tasks.debugs.Return", {})  # Kestra's older name
    assert (empty.state, empty.outputs, empty.logs) == (State.SUCCESS, {"value": None}, [])


async def test_output_values_outputs_any_json() -> None:
    values = {"n": 42, "items": ["a", "b"], "nested": {"k": "v"}, "none": None}
    run = await run_task("io.kestra.plugin.core.output.OutputValues", {"values": values})
    assert (run.state, run.outputs) == (State.SUCCESS, {"values": values})


async def test_sleep_waits_its_duration_and_its_timeout_ends_the_wait() -> None:
    started = time.monotonic()
    run = await run_task("io.kestra.plugin.core.flow.Sleep", {"duration": "PT0.2S"})
    assert run.state is State.SUCCESS and run.outputs == {}
    assert time.monotonic() - started >= 0.2
    # The task's timeout cancels the wait, as a kill does.
    limited = await run_task("sleep", {"duration": "PT1H"}, timeout=timedelta(seconds=0.1))
    assert limited.state is State.FAILED and "timed out after" in (limited.error or "")


def test_a_kestra_flow_of_these_types_loads_and_bad_properties_say_where() -> None:
    flow = load_flow(
        textwrap.dedent(
            """
            id: kestra_core
            namespace: company.team
            tasks:
              - id: values
                type: io.kestra.plugin.core.output.OutputValues
                values:
                  greeting: "{{ flow.id }}"
              - id: wait
                type: io.kestra.plugin.core.flow.Sleep
                duration: PT1S
              - id: return
                type: io.kestra.plugin.core.debug.Return
                format: "{{ outputs['values'].values.greeting }}"
            """
        ),
        "kestra_core.yaml",
    )
    assert [task.type for task in flow.tasks] == ["output.values", "sleep", "return"]
    error = only_error(
        """
        id: f
        namespace: n
        tasks:
          - id: wait
            type: io.kestra.plugin.core.flow.Sleep
            duration: 5 seconds
        """
    )
    assert (error.path, error.line) == ("tasks[0].duration", 7)
