"""Faust settings for the executor (the consumer it uses is in `consumer.py`).

On the embedded broker, group timeouts are low: it answers a JoinGroup after about half
of them, and Faust's 60 s defaults cost ~30 s at start (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from headrace.config import Settings
from headrace.topics.definitions import MAX_STATE_BYTES


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `faust.App` beyond the broker and store."""
    conf: dict[str, Any] = {
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "web_enabled": False,
        "table_standby_replicas": 0,
        "consumer_auto_offset_reset": "earliest",
        "producer_linger_ms": 1,
        "stream_wait_empty": False,
        # A table record (a state, or a big execution's header) or a record batch of one
        # execution's records (together.py) may reach MAX_STATE_BYTES: Faust's producer
        # refuses records over 1,000,000 bytes by default, and recovery must fetch such a
        # record back from the changelog.
        "producer_max_request_size": MAX_STATE_BYTES,
        # Faust's 16 KiB batches hold a few state records each: a send to a partition
        # whose batch is full waits for that batch to be sent and acknowledged, one broker
        # round trip per few records under load. A batch may grow to a whole request.
        "producer_max_batch_size": MAX_STATE_BYTES,
        "consumer_max_fetch_size": MAX_STATE_BYTES,
    }
    if settings.low_latency:
        conf |= {
            "broker_session_timeout": 4.0,
            "broker_rebalance_timeout": 4.0,
            "broker_heartbeat_interval": 0.5,
        }
    return conf
