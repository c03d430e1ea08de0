"""Flow triggers through the real services: an upstream's end starts its downstream flows."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.services.scheduler.flow_triggers import CHAIN_LIMIT
from tests.integration.stacks import running_stack
from tests.integration.waiting import wait_until

TERMINAL = {"SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"}


@dataclasses.dataclass
class Stack:
    api: ApiClient
    log_dir: Path


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(settings, tmp_path_factory, "flow-trigger-logs") as local:
        assert local.log_dir is not None
        yield Stack(ApiClient(local.url, timeout_s=60), local.log_dir)


def namespace() -> str:
    # Every test its own namespace: triggers of one test never see another's executions.
    return f"tests.flowtrig.n{uuid.uuid4().hex[:8]}"


def apply(api: ApiClient, source: str) -> None:
    api.request("POST", "/flows", body=source.encode(), content_type="application/x-yaml")


def executions(api: ApiClient, ns: str, flow_id: str) -> list[dict]:
    page = api.request("GET", f"/executions?namespace={ns}&flowId={flow_id}&size=100")
    return page["results"]


def ended(api: ApiClient, ns: str, flow_id: str, count: int = 1) -> list[dict]:
    def done() -> list[dict] | None:
        found = [e for e in executions(api, ns, flow_id) if e["state"]["current"] in TERMINAL]
        return found if len(found) >= count else None

    return wait_until(done)


def logs(api: ApiClient, execution_id: str) -> list[str]:
    try:
        return [line["message"] for line in api.request("GET", f"/logs/{execution_id}")]
    except ApiError as exc:
        if exc.status == 404:
            return []
        raise


def upstream(ns: str, fail: bool = False) -> str:
    return f"""
id: orders
namespace: {ns}
labels: {{team: data}}
tasks:
  - id: work
    type: shell
    commands: ["{"exit 1" if fail else "echo ok"}"]
outputs:
  - id: total
    type: INT
    value: 42
"""


def downstream(ns: str, flow_id: str = "report") -> str:
    return f"""
id: {flow_id}
namespace: {ns}
inputs:
  - id: upstream
    type: STRING
tasks:
  - id: say
    type: log
    message: "after {{{{ trigger.executionId }}}} total={{{{ trigger.outputs.total }}}} in={{{{ inputs.upstream }}}}"
triggers:
  - id: after-orders
    type: flow
    inputs:
      upstream: "{{{{ trigger.executionId }}}}"
    preconditions:
      flows:
        - namespace: {ns}
          flowId: orders
          states: [SUCCESS]
          labels: {{team: data}}
"""


def test_a_successful_upstream_starts_the_downstream(stack: Stack) -> None:
    api, ns = stack.api, namespace()
    apply(api, upstream(ns))
    apply(api, downstream(ns))
    up = api.request("POST", f"/executions/{ns}/orders?wait=true")
    assert up["state"]["current"] == "SUCCESS"
    [down] = ended(api, ns, "report")
    assert down["state"]["current"] == "SUCCESS"
    assert down["trigger"]["type"] == "flow"
    assert down["trigger"]["executionId"] == up["id"]
    assert down["trigger"]["chain"] == [f"{ns}/orders"]
    line = f"after {up['id']} total=42 in={up['id']}"
    assert wait_until(lambda: line in logs(api, down["id"]))


def test_a_failed_upstream_does_not_start_a_success_only_trigger(stack: Stack) -> None:
    api, ns = stack.api, namespace()
    apply(api, upstream(ns, fail=True))
    apply(api, downstream(ns))
    # A second, catch-all trigger on FAILED proves the end was seen and processed.
    apply(
        api,
        f"""
id: on-failure
namespace: {ns}
tasks:
  - id: say
    type: log
    message: "{{{{ trigger.state }}}}"
triggers:
  - id: failed
    type: flow
    preconditions:
      flows:
        - namespace: {ns}
          states: [FAILED]
""",
    )
    # The same trigger on a flow switched off at runtime (API/CLI) starts nothing.
    muted = api.request("GET", f"/flows/{ns}/on-failure")["source"].replace(
        "id: on-failure", "id: muted"
    )
    apply(api, muted)
    api.request("PUT", f"/triggers/{ns}/muted/failed", json_body={"disabled": True})
    up = api.request("POST", f"/executions/{ns}/orders?wait=true")
    assert up["state"]["current"] == "FAILED"
    [alert] = ended(api, ns, "on-failure")
    assert alert["trigger"]["executionId"] == up["id"]
    # The flow-trigger consumer handles an end's matches together: none for `report`,
    # none for the switched-off `muted`.
    assert executions(api, ns, "report") == []
    assert executions(api, ns, "muted") == []


def scheduler_log(stack: Stack) -> str:
    return (stack.log_dir / "scheduler.log").read_text(errors="replace")


def test_a_self_triggering_flow_stops_at_the_chain_limit(stack: Stack) -> None:
    api, ns = stack.api, namespace()
    apply(
        api,
        f"""
id: again
namespace: {ns}
tasks:
  - id: say
    type: log
    message: "{{{{ trigger.type }}}}"
triggers:
  - id: self
    type: flow
    preconditions:
      flows:
        - namespace: {ns}
          flowId: again
""",
    )
    api.request("POST", f"/executions/{ns}/again")
    # The API start plus one per chain link up to the limit.
    ended(api, ns, "again", CHAIN_LIMIT + 1)
    wait_until(
        lambda: "flow trigger loop cut" in scheduler_log(stack) and ns in scheduler_log(stack)
    )
    assert len(executions(api, ns, "again")) == CHAIN_LIMIT + 1
    chains = sorted(len(e["trigger"].get("chain", [])) for e in executions(api, ns, "again"))
    assert chains == list(range(CHAIN_LIMIT + 1))


def test_a_trigger_on_two_upstreams_starts_once_after_both_ended(stack: Stack) -> None:
    api, ns = stack.api, namespace()
    apply(api, upstream(ns))
    apply(api, upstream(ns).replace("id: orders", "id: stock").replace("value: 42", "value: 7"))
    apply(
        api,
        f"""
id: report
namespace: {ns}
inputs:
  - id: orders
    type: STRING
tasks:
  - id: say
    type: log
    message: "orders {{{{ inputs.orders }}}} stock {{{{ trigger.upstreams[1].outputs.total }}}}"
triggers:
  - id: after-both
    type: flow
    inputs:
      orders: "{{{{ trigger.upstreams[0].executionId }}}}"
    preconditions:
      id: orders_and_stock
      timeWindow: {{type: DURATION_WINDOW, window: P1D}}
      flows:
        - {{namespace: {ns}, flowId: orders}}
        - {{namespace: {ns}, flowId: stock}}
""",
    )
    # A probe started by every upstream end: once it ran, that end was also counted (the
    # consumer counts an end's windowed matches before publishing any of its starts).
    apply(
        api,
        f"""
id: probe
namespace: {ns}
tasks:
  - {{id: say, type: log, message: "{{{{ trigger.flowId }}}}"}}
triggers:
  - id: any-upstream
    type: flow
    preconditions:
      flows:
        - {{namespace: {ns}, labels: {{team: data}}}}
""",
    )
    orders = api.request("POST", f"/executions/{ns}/orders?wait=true")
    ended(api, ns, "probe", 1)
    assert executions(api, ns, "report") == []  # one upstream is not enough
    stock = api.request("POST", f"/executions/{ns}/stock?wait=true")
    [report] = ended(api, ns, "report")
    assert report["state"]["current"] == "SUCCESS"
    trigger = report["trigger"]
    assert trigger["executionId"] == stock["id"] and trigger["outputs"] == {"total": 7}
    assert [u["executionId"] for u in trigger["upstreams"]] == [orders["id"], stock["id"]]
    assert [u["flowId"] for u in trigger["upstreams"]] == ["orders", "stock"]
    line = f"orders {orders['id']} stock 7"
    assert wait_until(lambda: line in logs(api, report["id"]))
    # The start reset the window: stock ending again, alone, starts nothing more.
    api.request("POST", f"/executions/{ns}/stock?wait=true")
    ended(api, ns, "probe", 3)
    assert len(executions(api, ns, "report")) == 1
