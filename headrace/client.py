"""`TriggerClient`: start executions by publishing `TriggerEvent`s straight to Kafka.

For producers that live next to Kafka (a stream processor, a CDC pipeline) and would
rather not go through the gateway. A `TriggerEvent` names a flow *revision* and carries
inputs already typed; a Kafka client has no database to read either from, so:

- with `server_url` (a headrace gateway), the client reads the flow over the REST API:
  the latest revision when `revision` is None, and the flow itself: the start is
  admitted by the same code as the gateway's (`headrace.admission`: disabled, inputs
  typed and defaulted, size) before publishing;
- without it, `revision` is required and inputs go as given: the executor is then the
  only one that can check them.

The REST calls send `api_token` as a bearer token (a reader's token is enough); left
out, the client sends what the CLI would: `HEADRACE_TOKEN`, else the local token file.

The latest revision is looked up again after `revision_ttl_s`, so a flow update
reaches producers within that time; explicit revisions never change and stay cached.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from headrace import codec
from headrace.admission import Refusal, StartRefused, admit
from headrace.api_client import ApiClient, ApiError
from headrace.config import Settings
from headrace.core.ids import derive_id
from headrace.errors import HeadraceError
from headrace.flow.inputs import InputValidationError
from headrace.flow.loader import load_flow
from headrace.flow.model import Flow
from headrace.ids import base62
from headrace.kafka import make_producer
from headrace.messages import TriggerEvent
from headrace.topics.definitions import MAX_VALUE_BYTES, TRIGGERS

# What `trigger` holds in the executions a TriggerClient starts.
PRODUCER_TRIGGER_TYPE = "producer"
DEFAULT_REVISION_TTL_S = 5.0


class TriggerClientError(HeadraceError):
    """The client cannot publish this trigger: unknown or disabled flow, no revision,
    a broker that refused it, or a client that is not started."""


@dataclass(frozen=True, slots=True)
class _FlowRevision:
    revision: int
    flow: Flow
    fetched_at: float


def new_id() -> str:
    return base62(uuid.uuid4().int)


class TriggerClient:
    """An asyncio producer of trigger events.

    ```python
    async with TriggerClient("kafka:9092", server_url="http://headrace:8080") as client:
        execution_id = await client.trigger("company.data", "nightly-elt", {"full": True})
    ```
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        server_url: str | None = None,
        api_token: str | None = None,
        client_id: str = "headrace-trigger-client",
        revision_ttl_s: float = DEFAULT_REVISION_TTL_S,
        topic: str = TRIGGERS.name,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.revision_ttl_s = revision_ttl_s
        self._api = ApiClient(server_url, token=api_token) if server_url else None
        self._producer: AIOKafkaProducer = make_producer(
            Settings(kafka_bootstrap=bootstrap), client_id
        )
        self._started = False
        self._latest: dict[tuple[str, str], _FlowRevision] = {}
        self._revisions: dict[tuple[str, str, int], Flow] = {}

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise TriggerClientError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._producer.stop()

    async def __aenter__(self) -> TriggerClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def trigger(
        self,
        namespace: str,
        flow_id: str,
        inputs: dict[str, Any] | None = None,
        *,
        labels: dict[str, str] | None = None,
        revision: int | None = None,
        execution_id: str | None = None,
    ) -> str:
        """Publish one trigger (keyed by execution id) and return the execution id once
        the broker has acknowledged it.

        Raises `InputValidationError` for inputs that do not fit the flow (only when the
        client knows the flow, i.e. with `server_url`) and `TriggerClientError`.
        """
        if self._api is None and revision is None:
            raise TriggerClientError(
                "revision is required without server_url: a Kafka client cannot know the "
                "latest revision of a flow"
            )
        if not self._started:
            raise TriggerClientError("the TriggerClient is not started (use start() or async with)")
        execution_id = execution_id or new_id()
        trigger = {"type": PRODUCER_TRIGGER_TYPE}
        now = datetime.now(UTC)
        if self._api is not None:
            revision, flow = await self._flow(namespace, flow_id, revision)
            try:
                start = admit(
                    flow,
                    revision,
                    execution_id=execution_id,
                    inputs=inputs,
                    trigger=trigger,
                    time=now,
                    labels=labels,
                )
            except StartRefused as exc:
                if exc.refusal is Refusal.INVALID_INPUTS:
                    raise InputValidationError(exc.input_errors) from exc
                raise TriggerClientError(str(exc)) from exc
            value = start.value
        else:
            # Without the flow, only what Kafka would refuse is checked (the docstring).
            assert revision is not None
            event = TriggerEvent(
                event_id=derive_id(execution_id, "trigger-event"),
                execution_id=execution_id,
                namespace=namespace,
                flow_id=flow_id,
                flow_revision=revision,
                inputs=dict(inputs or {}),
                time=now,
                labels=dict(labels or {}),
                trigger=trigger,
            )
            value = codec.encode(event)
            if len(value) > MAX_VALUE_BYTES:  # Kafka would refuse it, less clearly
                raise TriggerClientError(
                    f"the trigger is {len(value)} bytes, over the {MAX_VALUE_BYTES} the "
                    f"{self.topic} topic takes: send smaller inputs"
                )
        try:
            await self._producer.send_and_wait(self.topic, value, key=execution_id.encode())
        except KafkaError as exc:
            raise TriggerClientError(f"the broker did not accept the trigger: {exc}") from exc
        return execution_id

    async def _flow(self, namespace: str, flow_id: str, revision: int | None) -> tuple[int, Flow]:
        if revision is not None:
            flow = self._revisions.get((namespace, flow_id, revision))
            if flow is None:
                _, flow = await self._fetch(namespace, flow_id, revision)
                self._revisions[(namespace, flow_id, revision)] = flow
            return revision, flow
        cached = self._latest.get((namespace, flow_id))
        if cached is not None and time.monotonic() - cached.fetched_at < self.revision_ttl_s:
            return cached.revision, cached.flow
        latest, flow = await self._fetch(namespace, flow_id, None)
        self._latest[(namespace, flow_id)] = _FlowRevision(latest, flow, time.monotonic())
        return latest, flow

    async def _fetch(self, namespace: str, flow_id: str, revision: int | None) -> tuple[int, Flow]:
        assert self._api is not None
        path = f"/flows/{urllib.parse.quote(namespace)}/{urllib.parse.quote(flow_id)}"
        params = {"revision": revision} if revision is not None else None
        try:
            # The REST client is synchronous (urllib): keep it off the event loop.
            record = await asyncio.to_thread(self._api.request, "GET", path, params=params)
        except ApiError as exc:
            if exc.status == 404:
                what = f" revision {revision}" if revision is not None else ""
                raise TriggerClientError(f"flow {namespace}/{flow_id}{what} not found") from exc
            raise
        flow = load_flow(record["source"], f"{namespace}/{flow_id}@{record['revision']}")
        return int(record["revision"]), flow
