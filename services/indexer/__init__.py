"""The indexer: copies the `executions` and `logs` topics into PostgreSQL, in batches.

Public entry: `run_indexer(settings, stop, ready=None)`.
"""

from headrace.services.indexer.service import run_indexer

__all__ = ["run_indexer"]
