"""Hypothesis sends the live gateway every kind of bad request: no answer is a 5xx, and
`/healthz` answers within 100 ms all along.

The gateway runs as its own process (as under `headrace server local`) on the test
broker and database, with the executor and the indexer (a kill or resume is answered by
the executor, through the index). Requests are drawn per route: paths from known and random
segments, query parameters with edge values (NaN, huge, negative, NUL, non-ASCII),
headers, and bodies (bytes, JSON, forms, flows with values swapped for random ones).

`/healthz` is probed from a separate process, so the fuzzing client's own CPU use (it
holds this process's GIL) is not counted against the gateway. On a loaded 2-core
machine the prober itself may be descheduled: a probe whose timer woke more than
`PROBER_LATE_S` late measured the machine, not the gateway, and is set aside; the test
requires most probes to count and every counted one to be within `HEALTH_BUDGET_S`.
When the test runs as root, the gateway and the prober get a higher CPU priority than
other work on the machine (not than each other), for the same reason.

About 10 s by default; `HEADRACE_FUZZ_EXAMPLES=5000` runs a longer search.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.broker import free_port
from headrace.config import Settings
from headrace.db.migrate import migrate_url
from headrace.local import LocalStack

# Every request the fuzzer sends carries these (webhooks and /healthz ignore them); the
# `gateway` fixture adds the session's bearer token.
BASE_HEADERS: dict[str, str] = {}

EXAMPLES = int(os.environ.get("HEADRACE_FUZZ_EXAMPLES", "500"))
HEALTH_BUDGET_S = 0.100  # the bar for /healthz under fuzzing
PROBE_EVERY_S = 0.05
PROBER_LATE_S = 0.02  # a probe whose sleep overran this much measured a busy machine
MIN_COUNTED_SHARE = 0.5  # at least half the probes must count, or the run proves nothing
REQUEST_TIMEOUT_S = 5.0  # only a wait=true request may take this long (it then gives up)
CPU_PRIORITY = -5  # nice value for the gateway and the prober when allowed (root)

NAMESPACE = f"fuzz.ns{uuid.uuid4().hex[:6]}"
KEY = "fuzz-key-0123456789abcdef"
FLOW = f"""\
id: target
namespace: {NAMESPACE}
inputs:
  - {{id: count, type: INT, min: 0, max: 100, defaults: 1}}
  - {{id: when, type: DATETIME, required: false}}
  - {{id: ratio, type: FLOAT, required: false}}
  - {{id: tags, type: ARRAY, itemType: STRING, required: false}}
  - {{id: choice, type: SELECT, values: [a, b], required: false}}
tasks:
  - id: t
    type: log
    message: "{{{{ inputs.count }}}}"
    retry: {{type: exponential, interval: PT1S, maxAttempts: 3}}
    timeout: PT1M
triggers:
  - {{id: tick, type: schedule, cron: "0 0 * * *"}}
  - {{id: hook, type: webhook, key: {KEY}}}
"""
FLOW_DICT: dict[str, Any] = {
    "id": "target",
    "namespace": NAMESPACE,
    "concurrency": {"limit": 2},
    "inputs": [{"id": "count", "type": "INT", "defaults": 1}],
    "tasks": [
        {
            "id": "t",
            "type": "log",
            "message": "hi",
            "retry": {"type": "exponential", "interval": "PT1S", "maxAttempts": 3},
            "timeout": "PT1M",
        },
        {
            "id": "p",
            "type": "flow.parallel",
            "concurrency": 2,
            "tasks": [{"id": "c", "type": "log", "message": "x"}],
        },
        {
            "id": "e",
            "type": "flow.foreach",
            "values": [1, 2],
            "concurrencyLimit": 1,
            "tasks": [{"id": "d", "type": "log", "message": "x"}],
        },
        {"id": "w", "type": "flow.pause", "delay": "PT1S"},
    ],
    "triggers": [
        {"id": "tick", "type": "schedule", "cron": "0 0 * * *", "timezone": "UTC"},
        {
            "id": "k",
            "type": "kafka",
            "topic": "x",
            "batch": {"maxRecords": 5, "maxDuration": "PT1S"},
        },
    ],
}


# ------------------------------------------------------------------------ the prober


def _probe(port: int, stop: Any, results: Any) -> None:
    """In its own process: GET /healthz every PROBE_EVERY_S until `stop` is set, then
    put [(how late the probe started, its latency, its status)] on `results`."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, CPU_PRIORITY)
    probes = []
    due = time.monotonic()
    while not stop.is_set():
        late = time.monotonic() - due
        started = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/healthz", headers=BASE_HEADERS)
            status = conn.getresponse().status
            conn.close()
        except OSError:
            status = 0
        probes.append((late, time.monotonic() - started, status))
        due += PROBE_EVERY_S
        time.sleep(max(0.0, due - time.monotonic()))
    results.put(probes)


# ------------------------------------------------------------------------ strategies

_EDGE_TEXT = st.sampled_from(
    [
        "",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "1e999",
        "-1",
        "0",
        "1",
        "99999999999999999999999",
        "P99999999999D",
        "PT0S",
        "true",
        "yes",
        "x" * 300,
        "é",
        "\x00",
        "%00",
        "../..",
        "a:b",
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59+14:00",
        "RUNNING",
        "debug",
        "null",
    ]
)
_TEXT = _EDGE_TEXT | st.text(max_size=20)
_SEGMENT = st.sampled_from([NAMESPACE, "target", "tick", "hook", KEY, "missing", "a" * 22]) | _TEXT
_PARAM_NAMES = st.sampled_from(
    [
        "wait",
        "timeout",
        "page",
        "size",
        "revision",
        "namespace",
        "flowId",
        "state",
        "labels",
        "minLevel",
        "taskRunId",
        "taskId",
        "startDate",
        "endDate",
        "lastEventId",
        "recursive",
        "path",
        "dryRun",
        "delete",
        "from",
        "to",
        "q",
        "hours",
        "x",
    ]
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)
# The test flow's inputs, given values of any kind.
_INPUTS = st.fixed_dictionaries(
    {}, optional={name: _JSON for name in ("count", "when", "ratio", "tags", "choice", "x")}
)
_CONTENT_TYPES = st.sampled_from(
    [
        "application/x-yaml",
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "text/plain; charset=bogus",
        "application/x+json",
        "",
        "*/*",
    ]
)


@st.composite
def _flow_variant(draw: st.DrawFn) -> bytes:
    """The test flow with one value, anywhere in it, replaced by a random one."""
    flow = json.loads(json.dumps(FLOW_DICT))
    node: Any = flow
    for _ in range(draw(st.integers(1, 5))):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        if not isinstance(node[key], dict | list) or draw(st.booleans()):
            node[key] = draw(_JSON)
            break
        node = node[key]
    return json.dumps(flow, allow_nan=True).encode()


_BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    _JSON.map(lambda value: json.dumps(value, allow_nan=True).encode()),
    _flow_variant(),
    st.just(FLOW.encode()),
    st.dictionaries(_TEXT, _TEXT, max_size=3).map(lambda form: urlencode(form).encode()),
)

# (method, path template): every route of services/gateway/*_api.py.
ROUTES = [
    ("GET", "/api/v1/flows"),
    ("POST", "/api/v1/flows"),
    ("POST", "/api/v1/flows/validate"),
    ("GET", "/api/v1/flows/{}/{}"),
    ("PUT", "/api/v1/flows/{}/{}"),
    ("DELETE", "/api/v1/flows/{}/{}"),
    ("GET", "/api/v1/flows/{}/{}/revisions"),
    ("GET", "/api/v1/flows/{}/{}/diff"),
    ("POST", "/api/v1/flows/bulk"),
    ("POST", "/api/v1/executions/{}/{}"),
    ("GET", "/api/v1/executions"),
    ("GET", "/api/v1/executions/{}"),
    ("POST", "/api/v1/executions/{}/kill"),
    ("POST", "/api/v1/executions/{}/restart"),
    ("POST", "/api/v1/executions/{}/resume"),
    ("POST", "/api/v1/executions/{}/replay"),
    ("POST", "/api/v1/executions/webhook/{}/{}/{}"),
    ("GET", "/api/v1/executions/webhook/{}/{}/{}"),
    ("GET", "/api/v1/executions/{}/file"),
    ("GET", "/api/v1/executions/{}/file/metas"),
    ("GET", "/api/v1/logs/{}"),
    ("GET", "/api/v1/logs/{}/download"),
    ("GET", "/api/v1/logs/{}/follow"),
    ("GET", "/api/v1/executions/{}/follow"),
    ("GET", "/api/v1/flows/schema"),
    ("GET", "/api/v1/namespaces/{}/files/directory"),
    ("GET", "/api/v1/namespaces/{}/files"),
    ("POST", "/api/v1/namespaces/{}/files"),
    ("DELETE", "/api/v1/namespaces/{}/files"),
    ("GET", "/api/v1/plugins"),
    ("GET", "/api/v1/plugins/{}"),
    ("GET", "/api/v1/triggers"),
    ("PUT", "/api/v1/triggers/{}/{}/{}"),
    ("POST", "/api/v1/triggers/{}/{}/{}/backfill"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/blueprints"),
    ("GET", "/api/v1/blueprints/{}"),
    ("POST", "/api/v1/blueprints/{}/copy"),
    ("GET", "/healthz"),
    ("GET", "/"),
    ("GET", "/ui/{}"),
    ("GET", "/ui/static/{}"),
]


@dataclasses.dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def waits(self) -> bool:
        """A request that may rightly take longer than REQUEST_TIMEOUT_S: `wait=true`,
        or a live stream (which also waits a few seconds for an id the index lacks)."""
        return "wait=" in self.path or self.path.split("?")[0].endswith("/follow")


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method, template = draw(st.sampled_from(ROUTES))
    count = template.count("{}")
    if count >= 2 and draw(st.booleans()):  # the seeded flow, to get past the lookups
        third = KEY if "webhook" in template else draw(st.sampled_from(["tick", "hook", "k"]))
        segments = [NAMESPACE, "target", third][:count]
    elif template.startswith("/api/v1/blueprints/") and draw(st.booleans()):
        segments = [draw(st.sampled_from(["hello", "etl"]))]  # examples that exist
    else:
        segments = [quote(draw(_SEGMENT), safe="") or "x" for _ in range(count)]
    path = template.format(*segments)
    params = draw(st.lists(st.tuples(_PARAM_NAMES, _TEXT), max_size=4))
    if params:
        path += "?" + urlencode(params)
    headers = dict(BASE_HEADERS)
    content_type = draw(_CONTENT_TYPES)
    if content_type:
        headers["Content-Type"] = content_type
    for name, value in draw(
        st.lists(
            st.tuples(st.sampled_from(["X-Fuzz", "Accept", "Authorization", "Cookie"]), _TEXT),
            max_size=2,
        )
    ):
        if value.isprintable() and value.isascii():
            headers[name] = value
    if template.startswith("/api/v1/flows") and method != "GET" and draw(st.booleans()):
        # Mostly well-formed YAML requests: they get past the content type to validation.
        headers["Content-Type"] = "application/x-yaml"
        body = draw(_flow_variant() | st.just(FLOW.encode()))
    elif method == "POST" and template == "/api/v1/executions/{}/{}" and draw(st.booleans()):
        headers["Content-Type"] = "application/json"
        body = json.dumps(draw(_INPUTS), allow_nan=True).encode()
    elif method == "PUT" and template.startswith("/api/v1/triggers"):
        body = draw(st.sampled_from([b'{"disabled": true}', b'{"disabled": "x"}']) | _BODIES)
    elif template.startswith("/api/v1/blueprints/"):
        copy = {"namespace": draw(st.sampled_from([NAMESPACE, NAMESPACE + ".bp"]) | _TEXT)}
        if draw(st.booleans()):
            copy["id"] = draw(_TEXT)
        body = json.dumps(copy).encode() if draw(st.booleans()) else draw(_BODIES)
    elif template.endswith("/backfill"):
        body = (
            json.dumps({"start": draw(_TEXT), "end": draw(_EDGE_TEXT)}).encode()
            if draw(st.booleans())
            else draw(_BODIES)
        )
    else:
        body = draw(_BODIES)
    return Request(method, path, headers, body)


# ---------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def gateway(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, auth_headers: dict[str, str]
) -> Iterator[LocalStack]:
    BASE_HEADERS.update(auth_headers)
    asyncio.run(migrate_url(settings.database_url))
    stack = LocalStack(
        dataclasses.replace(settings, gateway_port=free_port()),
        log_dir=tmp_path_factory.mktemp("fuzz-logs"),
    )
    try:
        # The executor answers kills, resumes and restarts (the gateway waits for it) and
        # the indexer stores its answers; the fuzzer's flows need nothing else.
        stack.start(services=("indexer", "executor", "gateway"))
        for service in stack.processes:
            if service.name == "gateway":
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, service.process.pid, CPU_PRIORITY)
        yield stack
    finally:
        stack.stop()


def send(port: int, request: Request) -> int | None:
    """The answer's status; None when a `wait=true` request was still waiting."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request(request.method, request.path, body=request.body, headers=request.headers)
        response = conn.getresponse()
        body = response.read()
    except TimeoutError:
        assert request.waits, f"no answer in {REQUEST_TIMEOUT_S} s: {request}"
        return None
    finally:
        conn.close()
    assert response.status < 500, (request, response.status, body[:500])
    if response.status >= 400:
        assert json.loads(body).get("message"), (request, body[:500])
    return response.status


def test_no_request_gets_a_5xx_and_healthz_stays_fast(gateway: LocalStack) -> None:
    port = gateway.settings.gateway_port
    seeded = Request(
        "PUT",
        f"/api/v1/flows/{NAMESPACE}/target",
        {**BASE_HEADERS, "Content-Type": "application/x-yaml"},
        FLOW.encode(),
    )
    assert send(port, seeded) in (200, 201)

    context = multiprocessing.get_context("spawn")
    results, stop = context.Queue(), context.Event()
    prober = context.Process(target=_probe, args=(port, stop, results), daemon=True)
    prober.start()
    statuses: dict[int | None, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize="HEADRACE_FUZZ_EXAMPLES" not in os.environ,  # CI: the same run each time
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(request=requests())
    def fuzz(request: Request) -> None:
        status = send(port, request)
        statuses[status] = statuses.get(status, 0) + 1
        if request.method == "DELETE" and status == 204:
            send(port, seeded)  # keep the target flow for the requests that follow

    try:
        fuzz()
    finally:
        stop.set()
        probes = results.get(timeout=30)
        prober.join(10)
    counted = [(latency, status) for late, latency, status in probes if late <= PROBER_LATE_S]
    assert len(probes) >= 20, f"too few /healthz probes: {len(probes)}"
    assert len(counted) >= MIN_COUNTED_SHARE * len(probes), (len(counted), len(probes))
    assert all(status == 200 for _, status in counted), counted
    slow = sorted(latency for latency, _ in counted if latency > HEALTH_BUDGET_S)
    assert not slow, f"{len(slow)} of {len(counted)} /healthz answers over 100 ms: {slow[-5:]}"
    assert sum(n for status, n in statuses.items() if status and status < 300) > 0, statuses
