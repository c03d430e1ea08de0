"""Kafka topics as code."""

from headrace.topics.definitions import (
    ALL_TOPICS,
    EXECUTION_COMMANDS,
    EXECUTIONS,
    FLOW_SLOTS,
    FLOWS,
    LOGS,
    TASK_CONTROL,
    TASK_REQUESTS,
    TASK_RESULTS,
    TRIGGERS,
    TopicSpec,
)

__all__ = [
    "ALL_TOPICS",
    "EXECUTIONS",
    "EXECUTION_COMMANDS",
    "FLOWS",
    "FLOW_SLOTS",
    "LOGS",
    "TASK_CONTROL",
    "TASK_REQUESTS",
    "TASK_RESULTS",
    "TRIGGERS",
    "TopicSpec",
]
