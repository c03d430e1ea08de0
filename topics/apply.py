"""Create or reconcile the topics of `definitions.py` on a broker.

Idempotent: missing topics are created, too few partitions are raised (Kafka cannot
lower them: that is reported, not hidden), drifted configs are altered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import IncompatibleBrokerVersion

from headrace.errors import HeadraceError
from headrace.topics.definitions import ALL_TOPICS, TopicSpec


class TopicsError(HeadraceError):
    """The broker refused to create or reconcile a topic."""


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    repartitioned: list[str] = field(default_factory=list)
    reconfigured: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


async def apply_topics(
    bootstrap: str,
    partitions: int,
    specs: tuple[TopicSpec, ...] = ALL_TOPICS,
    replication_factor: int = 1,
    progress: Callable[[str], None] = lambda _: None,
) -> ApplyReport:
    report = ApplyReport()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = await _partition_counts(admin)
        missing = [s for s in specs if s.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        s.name,
                        s.partitions or partitions,
                        replication_factor,
                        topic_configs=s.config(),
                    )
                    for s in missing
                ]
            )
            _raise_topic_errors(response)
            report.created += [s.name for s in missing]
            for spec in missing:
                progress(f"created {spec.name} ({spec.partitions or partitions} partitions)")
        for spec in specs:
            if spec.name not in existing:
                continue
            changed = False
            have = existing[spec.name]
            if spec.partitions is not None:
                if have != spec.partitions:
                    report.warnings.append(
                        f"{spec.name} has {have} partitions, {spec.partitions} expected: its"
                        " readers refuse to start until it is made again (delete it, then"
                        " apply the topics again)"
                    )
            elif have != partitions and spec.fixed_partitions:
                report.warnings.append(
                    f"{spec.name} has {have} partitions, {partitions} asked: keeping {have}. "
                    "The executor's state is partitioned like this topic; changing its "
                    "partition count would move running executions away from their state"
                )
            elif have < partitions:
                try:
                    await admin.create_partitions({spec.name: NewPartitions(partitions)})
                except IncompatibleBrokerVersion:
                    report.warnings.append(
                        f"{spec.name} has {have} partitions, {partitions} asked, and this "
                        "broker cannot add partitions (no CreatePartitions API); keeping them"
                    )
                else:
                    report.repartitioned.append(spec.name)
                    progress(f"{spec.name}: {have} -> {partitions} partitions")
                    changed = True
            elif have > partitions:
                report.warnings.append(
                    f"{spec.name} has {have} partitions, more than the {partitions} asked; "
                    "Kafka cannot remove partitions, keeping them"
                )
            if await _config_drifted(admin, spec):
                await admin.alter_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, spec.name, configs=spec.config())]
                )
                report.reconfigured.append(spec.name)
                progress(f"{spec.name}: config reconciled")
                changed = True
            if not changed:
                report.unchanged.append(spec.name)
        await _await_metadata(admin, [s.name for s in specs])
    finally:
        await admin.close()
    return report


def _raise_topic_errors(response: object) -> None:
    # Error code 36 is TOPIC_ALREADY_EXISTS: a concurrent `topics apply` won the race.
    errors = [
        f"{topic}: {message or code}"
        for topic, code, *rest in getattr(response, "topic_errors", [])
        for message in [rest[0] if rest else None]
        if code not in (0, 36)
    ]
    if errors:
        raise TopicsError("the broker refused to create topics: " + "; ".join(errors))


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    metadata = await admin.describe_topics(await admin.list_topics())
    return {t["topic"]: len(t["partitions"]) for t in metadata if t["error_code"] == 0}


async def _config_drifted(admin: AIOKafkaAdminClient, spec: TopicSpec) -> bool:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name)])
    have: dict[str, str] = {}
    for response in responses:
        for resource in response.resources:
            for entry in resource[4]:
                have[entry[0]] = entry[1]
    return any(have.get(key) not in (None, value) for key, value in spec.config().items())


async def _await_metadata(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Topic creation is asynchronous on some brokers: wait until all are visible."""
    for _ in range(100):
        counts = await _partition_counts(admin)
        if all(counts.get(name, 0) > 0 for name in names):
            return
        await asyncio.sleep(0.05)
    raise TopicsError(f"topics not visible after creation: {names}")
