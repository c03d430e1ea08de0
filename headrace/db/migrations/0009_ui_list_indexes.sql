-- The web UI's executions list and dashboard, fast at 100,000 executions and more
-- (benchmarks/executions_list.py measures each query with and without these; the
-- clauses they serve are headrace/db/executions.py's `ExecutionFilter.where`).

-- `labels=key:value` filters by containment (`labels @> '{"key": "value"}'`).
CREATE INDEX executions_labels_idx ON executions USING gin (labels jsonb_path_ops);

-- A namespace and those below it: one range in byte order (`namespace_clause`),
-- whatever the database's collation.
CREATE INDEX executions_namespace_c_created_idx
    ON executions ((namespace COLLATE "C"), created_at DESC);

-- The dashboard's window (counts per bucket and state, failures per flow) read from the
-- index alone; it also orders the list newest first (scanned backwards), so it takes
-- the place of the index on `created_at` alone.
CREATE INDEX executions_created_covering_idx
    ON executions (created_at) INCLUDE (state, namespace, flow_id);
DROP INDEX executions_created_idx;
-- The dashboard's failures by flow: the window's FAILED executions alone.
CREATE INDEX executions_failed_created_idx ON executions (created_at) INCLUDE (namespace, flow_id)
    WHERE state = 'FAILED';

-- The search box (`q`) has no index: it scans (about 0.2 s at 100,000 executions,
-- docs/benchmarks.md). Every index here costs each write of an execution's row, which
-- the indexer makes at every state change; a search box is not worth that.
