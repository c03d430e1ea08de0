"""headrace: an event-driven streaming workflow orchestrator.

The package is laid out like the architecture: `headrace.flow` (the YAML language),
`headrace.core` (the pure executor core), `headrace.messages` + `headrace.codec` (what
travels on Kafka), `headrace.services.*` (one package per service), `headrace.connectors`
(task types run by workers) and `headrace.topics` (topic definitions as code).
"""

__version__ = "0.1.0"
