"""Faust settings that make the executor fast on the embedded broker (DESIGN §5).

The embedded broker answers a fetch only after about half of the consumer's
`fetch_max_wait_ms`, and a JoinGroup after about half of the group timeouts. Faust
0.15.3 hard-codes `fetch_max_wait_ms=1500` when it builds its aiokafka consumer, which
costs ~750 ms per hop; its 60 s group timeouts cost ~30 s at start. The driver looks
`aiokafka.AIOKafkaConsumer` up at call time through its module-level `aiokafka` name, so
we give that name a copy of the module whose consumer class forces our fetch wait. The
real `aiokafka` module is left untouched for everything else in the process.
"""

from __future__ import annotations

import types
from typing import Any

import aiokafka
import faust.transport.drivers.aiokafka as faust_driver

from headrace.config import Settings
from headrace.topics.definitions import MAX_STATE_BYTES


def install_fetch_wait(fetch_max_wait_ms: int) -> None:
    """Make every consumer Faust builds from now on use `fetch_max_wait_ms`."""

    class LowLatencyConsumer(aiokafka.AIOKafkaConsumer):
        def __init__(self, *topics: str, **kwargs: Any) -> None:
            kwargs["fetch_max_wait_ms"] = fetch_max_wait_ms
            super().__init__(*topics, **kwargs)

    patched = types.ModuleType("aiokafka")
    patched.__dict__.update(aiokafka.__dict__)
    patched.AIOKafkaConsumer = LowLatencyConsumer  # type: ignore[attr-defined]
    faust_driver.aiokafka = patched  # type: ignore[attr-defined]


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
        # One execution's state is one table record, up to MAX_STATE_BYTES (a big
        # for-each): Faust's producer refuses records over 1,000,000 bytes by default, and
        # recovery must fetch such a record back from the changelog.
        "producer_max_request_size": MAX_STATE_BYTES,
        "consumer_max_fetch_size": MAX_STATE_BYTES,
    }
    if settings.low_latency:
        conf |= {
            "broker_session_timeout": 4.0,
            "broker_rebalance_timeout": 4.0,
            "broker_heartbeat_interval": 0.5,
        }
    return conf
