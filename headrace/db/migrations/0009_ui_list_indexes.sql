-- The web UI's executions list and dashboard, fast at 100,000 executions and more
-- (benchmarks/executions_list.py measures each query with and without these; the
-- clauses they serve are headrace/db/executions.py's `ExecutionFilter.where`).

-- `labels=key:value` filters by containment (`labels @> '{"key": "value"}'`).
CREATE INDEX executions_labels_idx ON executions USING gin (labels jsonb_path_ops);

-- A namespace and those below it: one range in byte order (`namespace_clause`),
-- whatever the database's collation.
CREATE INDEX executions_namespace_c_created_idx
    ON executions ((namespace COLLATE "C"), created_at DESC);

-- A flow by its id alone (the list's flow filter may come without its namespace).
CREATE INDEX executions_flow_id_created_idx ON executions (flow_id, created_at DESC);

-- The dashboard's window (counts per bucket and state, failures per flow) read from the
-- index alone; it also orders the list newest first (scanned backwards), so it takes
-- the place of the index on `created_at` alone.
CREATE INDEX executions_created_covering_idx
    ON executions (created_at) INCLUDE (state, namespace, flow_id);
DROP INDEX executions_created_idx;
-- The dashboard's failures by flow: the window's FAILED executions alone.
CREATE INDEX executions_failed_created_idx ON executions (created_at) INCLUDE (namespace, flow_id)
    WHERE state = 'FAILED';

-- The search box (`q`): an id's start, any case, as a range in byte order...
CREATE INDEX executions_id_lower_idx ON executions ((lower(id) COLLATE "C"));

-- ...and text within flow ids and namespaces, through trigrams. pg_trgm ships with
-- PostgreSQL (contrib; the official images and managed services have it) and is a
-- trusted extension: the database's owner may create it. Where it cannot be created,
-- the search still works by scanning the table; docs/operations.md says how to add
-- these two indexes later.
DO $$
DECLARE
    trgm_schema text;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_trgm is not available (%): searches of executions by text will scan', SQLERRM;
    END;
    SELECT n.nspname INTO trgm_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX executions_flow_id_trgm_idx ON executions '
            'USING gin (lower(flow_id) %I.gin_trgm_ops)', trgm_schema);
        EXECUTE format(
            'CREATE INDEX executions_namespace_trgm_idx ON executions '
            'USING gin (lower(namespace) %I.gin_trgm_ops)', trgm_schema);
    END IF;
END
$$;
