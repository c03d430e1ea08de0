"""Follow headrace's public streams, the `logs` and `executions` topics, from Kafka.

Needs aiokafka, fastavro and headrace's Avro schemas (the `schemas/` folder of the
repository, or of the installed `headrace` package): not headrace itself. A downstream
system (a log shipper, an audit store, a dashboard) reads the streams the same way.

    python examples/consume_logs.py --bootstrap 127.0.0.1:9092 --from-beginning
    python examples/consume_logs.py --execution 4Xq1... --topic logs

Each value is Avro single-object encoded: the marker C3 01, the 8-byte CRC-64-AVRO
fingerprint of the schema it was written with (little-endian), then the Avro body. The
fingerprint picks the schema among the `.avsc` files, older versions included, so a
consumer keeps reading while producers upgrade. docs/streams.md describes the records.

Delivery is at least once: a line may come twice after a crash. Log lines carry a
stable `id`, execution events a `seq` that grows per executor step; both drop repeats
here. Press Ctrl-C to stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
DEFAULT_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def load_schemas(folder: Path) -> dict[bytes, Any]:
    """Every schema in `folder` by its fingerprint (named types it refers to, such as
    `io.headrace.State.avsc`, are found in the same folder by fastavro)."""
    schemas = {}
    for path in sorted(folder.glob("*.avsc")):
        parsed = fastavro.schema.load_schema(str(path))
        canonical = fastavro.schema.to_parsing_canonical_form(parsed)
        schemas[bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))] = parsed
    if not schemas:
        raise SystemExit(f"no .avsc files in {folder}: pass --schemas")
    return schemas


def decode(value: bytes, schemas: dict[bytes, Any]) -> dict[str, Any]:
    if value[:2] != MAGIC:
        raise ValueError("not an Avro single-object encoded value")
    schema = schemas.get(value[2:HEADER_SIZE])
    if schema is None:
        raise ValueError(f"written with a schema not in --schemas ({value[2:HEADER_SIZE].hex()})")
    return fastavro.schemaless_reader(io.BytesIO(value[HEADER_SIZE:]), schema)


def log_line(record: dict[str, Any]) -> str:
    where = record["task_id"] or "(execution)"
    if record["attempt"] is not None:
        where += f" #{record['attempt']}"
    time = record["time"].isoformat(timespec="milliseconds")
    return f"{time} {record['execution_id']} {where} {record['level']:<5} {record['message']}"


def event_lines(record: dict[str, Any]) -> list[str]:
    time = record["time"].isoformat(timespec="milliseconds")
    prefix = f"{time} {record['execution_id']}"
    # Records of older executors carry one task run in `task_run`.
    task_runs = record.get("task_runs") or ([record["task_run"]] if record.get("task_run") else [])
    lines = [f"{prefix} {run['task_id']} -> {run['state']}" for run in task_runs]
    if record.get("execution") is not None:
        execution = record["execution"]
        flow = f"{execution['namespace']}/{execution['flow_id']}"
        lines.append(f"{prefix} execution of {flow} -> {execution['state']}")
        if execution["state"] in ("SUCCESS", "WARNING", "FAILED", "KILLED", "CANCELLED"):
            outputs = json.loads(execution["outputs"])
            if outputs:
                lines.append(f"{prefix} outputs {json.dumps(outputs, sort_keys=True)}")
    if record.get("command") is not None:
        command = record["command"]
        lines.append(f"{prefix} command {command['kind']}: {command['status']}")
    return lines


class Repeats:
    """Drops what at-least-once delivery repeats: a log id seen, an event not newer."""

    def __init__(self) -> None:
        self.log_ids: set[str] = set()  # a real consumer would bound this
        self.seqs: dict[str, int] = {}

    def new_log(self, record: dict[str, Any]) -> bool:
        if record["id"] in self.log_ids:
            return False
        self.log_ids.add(record["id"])
        return True

    def new_event(self, record: dict[str, Any]) -> bool:
        if record.get("command") is not None:
            return True  # it repeats a seq (0 when unheld): it orders nothing
        # A big step is split into records of the same seq: those all count.
        if record["seq"] < self.seqs.get(record["execution_id"], -1):
            return False
        self.seqs[record["execution_id"]] = record["seq"]
        return True


async def follow(options: argparse.Namespace) -> None:
    schemas = load_schemas(options.schemas)
    topics = ["logs", "executions"] if options.topic == "both" else [options.topic]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=options.bootstrap,
        # No group: this reader commits nothing and does not share partitions.
        group_id=None,
        auto_offset_reset="earliest" if options.from_beginning else "latest",
    )
    try:
        await consumer.start()
    except KafkaError:
        await consumer.stop()  # closes what the failed start opened
        raise
    repeats = Repeats()
    try:
        await consumer.topics()  # the cluster's metadata, every topic's partitions
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            raise SystemExit(f"no topic {' or '.join(topics)} on {options.bootstrap}")
        consumer.assign(partitions)
        for partition in partitions:
            await consumer.position(partition)  # where reading starts, fixed now
        print(f"following {', '.join(topics)} on {options.bootstrap}", file=sys.stderr, flush=True)
        async for message in consumer:
            if options.execution and message.key != options.execution.encode():
                continue  # every record of an execution is keyed by its id
            try:
                record = decode(message.value, schemas)
            except ValueError as exc:
                print(f"skipped {message.topic}@{message.offset}: {exc}", file=sys.stderr)
                continue
            if message.topic == "logs":
                lines = [log_line(record)] if repeats.new_log(record) else []
            else:
                lines = event_lines(record) if repeats.new_event(record) else []
            for line in lines:
                print(line, flush=True)
    finally:
        await consumer.stop()


async def follow_or_say_why(options: argparse.Namespace) -> None:
    try:
        await follow(options)
    except KafkaError as exc:
        raise SystemExit(f"cannot read from Kafka at {options.bootstrap}: {exc}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--topic", choices=["logs", "executions", "both"], default="both")
    parser.add_argument("--execution", help="only this execution's records")
    parser.add_argument(
        "--from-beginning", action="store_true", help="read what the topics hold, then follow"
    )
    parser.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS, help="the .avsc folder")
    options = parser.parse_args()
    # aiokafka logs each failed connection attempt; the failure is said once, below.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def run() -> None:
        task = asyncio.ensure_future(follow_or_say_why(options))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):  # Ctrl-C: a quiet stop
            await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
