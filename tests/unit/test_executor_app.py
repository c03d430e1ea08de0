"""The executor's Faust app as built: the limits a big execution state needs."""

from __future__ import annotations

from headrace.config import Settings
from headrace.services.executor.app import create_app
from headrace.topics.definitions import (
    EXECUTION_STATE_CHANGELOG,
    FLOW_SLOTS_CHANGELOG,
    MAX_MESSAGE_BYTES,
    MAX_STATE_BYTES,
)

# A for-each of MAX_FOREACH_ITEMS items stores ~2 MB (about 195 B per task run).
BIG_FOREACH_STATE_BYTES = 10_000 * 195


def test_a_state_record_of_a_big_foreach_can_be_written_and_recovered():
    assert MAX_STATE_BYTES > 2 * BIG_FOREACH_STATE_BYTES > MAX_MESSAGE_BYTES
    app = create_app(Settings(partitions=3))
    assert app.conf.producer_max_request_size == MAX_STATE_BYTES  # the changelog write
    assert app.conf.consumer_max_fetch_size == MAX_STATE_BYTES  # recovery reads it back

    tables = {table.changelog_topic.get_topic_name(): table for table in app.tables.values()}
    # `topics apply` reconciles the same topics, with the same config, as Faust creates.
    assert set(tables) == {EXECUTION_STATE_CHANGELOG.name, FLOW_SLOTS_CHANGELOG.name}
    for table in tables.values():
        assert table.changelog_topic.config["max.message.bytes"] == str(MAX_STATE_BYTES)
        assert table.changelog_topic.partitions == 3
