"""Start a job on a vendor's service, follow it to its end, stop it if the task is stopped.

Every connector that drives a remote job (an Airbyte sync, a Hightouch sync run...) does
the same dance, so it is written once, here. A connector describes its vendor's job as a
`RemoteJob` (how to start it, read its state, cancel it) and derives from
`RemoteJobConnector`, whose `run`:

- starts the job; with `wait: false` it succeeds at once, the job's id in the outputs;
- otherwise polls it every `pollFrequency`, logging its progress when it changes and
  streaming its new log lines as they appear, until the job ends: then its outputs, or
  `TaskFailed` with the vendor's reason;
- survives blips while polling (no connection, 5xx, 429 with `Retry-After`): logged and
  asked again, `MAX_POLL_FAILURES` times in a row at most; a refusal (a 4xx: bad token,
  unknown id) fails at once with the vendor's message;
- gives up after `maxDuration`: cancels the job and fails;
- and when `run` itself is cancelled (a kill, the task's `timeout`, a worker shutdown:
  docs/connectors.md) cancels the job on the vendor's side before letting the
  cancellation go on. That call is shielded from the cancellation and bounded by
  `cancel_timeout_s`, so a dead vendor cannot hold a worker's shutdown, and its outcome
  is logged either way. A cancellation that comes while the request starting the job is
  out lets that request finish first (within the same bound): the vendor may start the
  job all the same, and only its answer says which job to cancel.

The request that starts a job is sent once, never again after a blip: the job may have
started all the same, and a second one would run beside it. The task's `retry` decides.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

import isodate
from pydantic import Field

from headrace.connectors.base import ConnectorProperties, TaskContext, TaskFailed
from headrace.connectors.vendor_api import TransientFailure
from headrace.flow.durations import Duration
from headrace.messages import LogLevel

# Seconds the vendor gets to answer a cancel once the task is stopped: a few, as a
# worker's shutdown grace period (10 s) must cover it, and a dead vendor never answers.
CANCEL_TIMEOUT_S = 5.0
# Failed polls in a row before the task gives up, and the longest wait between two.
MAX_POLL_FAILURES = 5
MAX_BACKOFF_S = 30.0
# Cancels and closes under way, kept here so one outliving its task (cancelled again) is
# not garbage-collected: the event loop keeps only weak references to tasks.
_CANCELS: set[asyncio.Future[Any]] = set()

Line = TypeVar("Line")


class RemoteJobProperties(ConnectorProperties):
    """What every remote job's task takes besides the vendor's own properties."""

    wait: bool = Field(
        default=True,
        description="Follow the job to its end (the default); false: start it and succeed"
        " at once, its id in the outputs.",
    )
    max_duration: Duration = Field(
        default=timedelta(hours=1),
        alias="maxDuration",
        gt=timedelta(0),
        description="Longest wait for the job to end: past it the job is cancelled and"
        " the task fails.",
    )
    poll_frequency: Duration = Field(
        default=timedelta(seconds=1),
        alias="pollFrequency",
        gt=timedelta(0),
        description="How often the job's state (and new log lines) are read.",
    )


@dataclass(slots=True)
class Snapshot:
    """What one look at the job found."""

    status: str  # the vendor's word for the job's state: "running", "succeeded"
    finished: bool = False
    error: str | None = None  # why a finished job failed; None when it succeeded
    progress: str | None = None  # logged when it changes (default: the status)
    lines: list[tuple[LogLevel, str]] = field(default_factory=list)  # new log lines
    data: Any = None  # the vendor's answer, for the outputs


class RemoteJob(ABC):
    """One job on a vendor's service, for one attempt of a task."""

    vendor: ClassVar[str]  # "Airbyte"
    noun: ClassVar[str] = "job"  # "sync run": logs say "Hightouch sync run 7"
    # False when the vendor's API offers no way to cancel a job: stopping the task then
    # only stops following it, and says so.
    can_cancel: ClassVar[bool] = True

    def __init__(self) -> None:
        self.id: Any = None  # set by `start`
        self.stopping: asyncio.Future[str] | None = None  # the cancel, once asked for
        self.status = "started"  # the last status seen
        self.finished = False

    @property
    def name(self) -> str:
        return f"{self.vendor} {self.noun} {self.id}"

    @abstractmethod
    async def start(self) -> bool:
        """Start the job and set `id`; False when there is nothing to follow (the vendor
        says one is already running and the task accepts that)."""

    @abstractmethod
    async def check(self) -> Snapshot:
        """The job's state now, with the log lines not seen before."""

    async def cancel(self) -> None:
        """Ask the vendor to cancel the job (only called when `can_cancel`)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what following the job held (connections): called once `run` has
        ended and any cancel of the job under way has too."""
        return None  # nothing held, unless a connector says otherwise

    @abstractmethod
    def outputs(self, final: Snapshot | None) -> dict[str, Any]:
        """The task's outputs: from the last snapshot, or None when it was not followed."""


class NewLines:
    """Which lines of growing logs were streamed already, one count per log (an Airbyte
    job has one per attempt), so each poll streams only what is new."""

    def __init__(self) -> None:
        self._sent: dict[Hashable, int] = {}

    def take(self, log: Hashable, lines: Sequence[Line]) -> list[Line]:
        sent = self._sent.get(log, 0)
        self._sent[log] = max(sent, len(lines))
        return list(lines[sent:])


class RemoteJobConnector(ABC):
    """A task type that runs one `RemoteJob` (see the module's docstring)."""

    uses_workdir = False
    cancel_timeout_s: ClassVar[float] = CANCEL_TIMEOUT_S

    @abstractmethod
    def job(self, properties: Any, context: TaskContext) -> RemoteJob:
        """The job these properties describe (not started yet)."""

    async def run(self, properties: RemoteJobProperties, context: TaskContext) -> dict[str, Any]:
        job = self.job(properties, context)
        try:
            return await follow(job, properties, context, cancel_timeout_s=self.cancel_timeout_s)
        finally:
            # In a task of its own, kept: a cancel may still be under way (a second
            # cancellation of `run` does not stop it), and it needs the connections.
            closing = asyncio.ensure_future(_close_when_stopped(job))
            _CANCELS.add(closing)
            closing.add_done_callback(_CANCELS.discard)
            await asyncio.shield(closing)


async def _close_when_stopped(job: RemoteJob) -> None:
    if job.stopping is not None:
        await asyncio.wait([job.stopping])
    await job.close()


class _OutOfTime(Exception):
    """`maxDuration` passed before the job ended."""


async def follow(
    job: RemoteJob,
    settings: RemoteJobProperties,
    context: TaskContext,
    *,
    cancel_timeout_s: float = CANCEL_TIMEOUT_S,
) -> dict[str, Any]:
    """Start `job` and follow it as `settings` say; its outputs, or `TaskFailed`."""
    # A task of its own, so that a cancellation does not cut the start request short:
    # the vendor may start the job all the same, and its answer says which to cancel.
    starting = asyncio.ensure_future(job.start())
    try:
        if not await asyncio.shield(starting):
            return job.outputs(None)
        if not settings.wait:
            await context.info(f"started {job.name}; not waiting for it to end (wait: false)")
            return job.outputs(None)
        await context.info(f"started {job.name}")
        final = await _wait_for_end(job, settings, context)
    except _OutOfTime:
        stopped = await stop(job, context, cancel_timeout_s)
        limit = isodate.duration_isoformat(settings.max_duration)
        raise TaskFailed(
            f"{job.name} was still {job.status} after maxDuration ({limit}); {stopped}"
        ) from None
    except BaseException:
        # A kill, a timeout, a shutdown (CancelledError), or a failure while following:
        # the job must not run on unwatched.
        if not starting.done():  # cancelled while the start request was out
            await stop(job, context, cancel_timeout_s, starting=starting)
        elif job.id is not None and not job.finished:
            await stop(job, context, cancel_timeout_s)
        raise
    return job.outputs(final)


async def _wait_for_end(
    job: RemoteJob, settings: RemoteJobProperties, context: TaskContext
) -> Snapshot:
    """Poll until the job ends; its last snapshot, `TaskFailed` if it failed."""
    interval = settings.poll_frequency.total_seconds()
    failures = 0
    shown: str | None = None
    try:
        async with asyncio.timeout(settings.max_duration.total_seconds()) as deadline:
            while True:
                try:
                    snapshot = await job.check()
                except TransientFailure as exc:
                    failures += 1
                    if failures > MAX_POLL_FAILURES:
                        raise TaskFailed(
                            f"could not read the state of {job.name}, {MAX_POLL_FAILURES + 1}"
                            f" times in a row; the last time: {exc}"
                        ) from None
                    wait = exc.retry_after
                    if wait is None:
                        wait = min(interval * 2**failures, MAX_BACKOFF_S)
                    await context.log(
                        LogLevel.WARN,
                        f"{exc}; asking again in {wait:g} s ({failures} of {MAX_POLL_FAILURES})",
                    )
                    await asyncio.sleep(wait)
                    continue
                failures = 0
                job.status = snapshot.status
                if (snapshot.progress or snapshot.status) != shown:
                    shown = snapshot.progress or snapshot.status
                    await context.info(f"{job.name}: {shown}")
                for level, line in snapshot.lines:
                    await context.log(level, line)
                if snapshot.finished:
                    job.finished = True
                    if snapshot.error is not None:
                        raise TaskFailed(f"{job.name} {snapshot.status}: {snapshot.error}")
                    return snapshot
                await asyncio.sleep(interval)
    except TimeoutError:
        if deadline.expired():
            raise _OutOfTime from None
        raise


async def stop(
    job: RemoteJob,
    context: TaskContext,
    timeout_s: float,
    *,
    starting: asyncio.Future[bool] | None = None,
) -> str:
    """Cancel `job` on the vendor's side, at most `timeout_s` seconds; what happened, as
    logged. Safe to call from a cancelled task: the call runs in a task of its own that
    a further cancellation does not interrupt (it still ends within `timeout_s`).

    `starting`: the job's `start` if it is still under way; it gets the same `timeout_s`
    to finish, and the job it started, if any, is then cancelled."""
    stopping = asyncio.ensure_future(_stop(job, context, timeout_s, starting))
    job.stopping = stopping
    _CANCELS.add(stopping)
    stopping.add_done_callback(_CANCELS.discard)
    return await asyncio.shield(stopping)


async def _stop(
    job: RemoteJob,
    context: TaskContext,
    timeout_s: float,
    starting: asyncio.Future[bool] | None,
) -> str:
    deadline = asyncio.get_running_loop().time() + timeout_s
    if starting is not None:
        try:
            async with asyncio.timeout_at(deadline):
                started = await starting
        except TimeoutError:
            starting.cancel()
            said = (
                f"{job.vendor} did not answer the request starting the {job.noun} within"
                f" {timeout_s:g} s: if it started one, that {job.noun} goes on in {job.vendor}"
            )
            await context.log(LogLevel.WARN, said)
            return said
        except Exception as exc:  # refused: nothing started, and the task is stopped anyway
            return f"started no {job.noun}: {exc}"
        if not started or job.id is None:
            return f"started no {job.noun}"
    if not job.can_cancel:
        said = f"{job.vendor}'s API cannot cancel a {job.noun}: {job.name} goes on in {job.vendor}"
        await context.log(LogLevel.WARN, said)
        return said
    return await _cancel(job, context, timeout_s, deadline)


async def _cancel(job: RemoteJob, context: TaskContext, timeout_s: float, deadline: float) -> str:
    level = LogLevel.WARN
    try:
        async with asyncio.timeout_at(deadline):
            await job.cancel()
    except TimeoutError:
        said = f"could not cancel {job.name}: no answer within {timeout_s:g} s"
    except TaskFailed as exc:
        said = f"could not cancel {job.name}: {exc}"
    except Exception as exc:  # a bug must not hide the cancellation being delivered
        said = f"could not cancel {job.name}: {type(exc).__name__}: {exc}"
    else:
        level, said = LogLevel.INFO, f"cancelled {job.name}"
    await context.log(level, said)
    return said
