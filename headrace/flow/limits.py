"""The largest flow, and the largest number in one, that headrace accepts.

A flow is checked against these when it is loaded (the CLI's `flow validate`, the
gateway, every service), so that nothing stored can later fail to load, overflow a
date, or not fit the 32-bit integers of the Kafka messages. docs/flows.md ("Limits")
lists them for flow authors; the reasons are beside each value.
"""

from __future__ import annotations

from datetime import timedelta

# The largest flow text, in UTF-8 bytes: the gateway's request body limit, so a file the
# CLI validates can also be applied. 10,000 tasks written one per line fit.
MAX_FLOW_BYTES = 256 * 1024
# Mappings and lists inside one another; a real flow nests a dozen levels.
MAX_DEPTH = 64
# Values once aliases are expanded: a real flow has a few thousand; an alias can make a
# tiny text expand exponentially ("billion laughs"), so this bounds the work of any text.
MAX_NODES = 100_000
# `*alias` uses in one flow: flows seldom need any.
MAX_ALIASES = 1_000
# Tasks in one flow, nested ones and `errors`/`finally` included. As many as for-each
# items (headrace.core.tree.MAX_FOREACH_ITEMS): the executor keeps every task run of an
# execution in one state record, sized for that many.
MAX_TASKS = 10_000

# Integers in a flow: what JSON readers and orjson (which encodes every message) hold.
MIN_INTEGER, MAX_INTEGER = -(2**63), 2**63 - 1
# Attempts of one task run: each is kept in the execution's state (~200 B) and numbered
# in 32-bit fields of the task messages; a thousand is already a retry storm.
MAX_ATTEMPTS = 1_000
# Any duration (retry waits, timeouts, pause delays, windows, batches): added to the
# current time, a longer one could pass the year 9999 that dates end at.
MAX_DURATION = timedelta(days=366)
# Concurrency limits (flow `concurrency.limit`, `flow.parallel`/`flow.dag` `concurrency`,
# `flow.foreach` `concurrencyLimit`) and a Kafka trigger's `batch.maxRecords`: more than
# a flow can have tasks or a for-each items would mean "no limit", which has its own
# spelling; they also travel in 32-bit message fields.
MAX_CONCURRENCY = 10_000
