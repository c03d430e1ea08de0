-- The tables users query: flows (every revision, as written), executions, task runs, logs.
-- Written by the gateway (flows) and the indexer (the rest); read by the gateway.

CREATE TABLE flows (
    namespace  text        NOT NULL,
    id         text        NOT NULL,
    revision   integer     NOT NULL,
    source     text        NOT NULL,  -- the YAML exactly as the user wrote it
    deleted    boolean     NOT NULL DEFAULT false,  -- a tombstone revision
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, id, revision)
);

CREATE TABLE executions (
    id            text        PRIMARY KEY,
    namespace     text        NOT NULL,
    flow_id       text        NOT NULL,
    flow_revision integer     NOT NULL,
    state         text        NOT NULL,
    histories     jsonb       NOT NULL DEFAULT '[]',
    inputs        jsonb       NOT NULL DEFAULT '{}',
    outputs       jsonb       NOT NULL DEFAULT '{}',
    labels        jsonb       NOT NULL DEFAULT '{}',
    trigger       jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    start_date    timestamptz,
    end_date      timestamptz,
    -- seq of the ExecutionEvent this row reflects: older or replayed events are ignored
    last_seq      bigint      NOT NULL
);
CREATE INDEX executions_created_idx ON executions (created_at DESC);
CREATE INDEX executions_flow_created_idx ON executions (namespace, flow_id, created_at DESC);
CREATE INDEX executions_state_created_idx ON executions (state, created_at DESC);

CREATE TABLE task_runs (
    id                 text        PRIMARY KEY,
    execution_id       text        NOT NULL,
    task_id            text        NOT NULL,
    parent_task_run_id text,
    value              text,
    state              text        NOT NULL,
    histories          jsonb       NOT NULL DEFAULT '[]',
    attempts           jsonb       NOT NULL DEFAULT '[]',
    outputs            jsonb       NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL,
    start_date         timestamptz,
    end_date           timestamptz,
    -- the lowest seq seen: orders task runs created at the same instant
    first_seq          bigint      NOT NULL,
    last_seq           bigint      NOT NULL
);
CREATE INDEX task_runs_execution_idx ON task_runs (execution_id, created_at, first_seq);
CREATE INDEX task_runs_state_end_idx ON task_runs (state, end_date);

CREATE TABLE logs (
    id           text        PRIMARY KEY,
    -- insertion order: breaks ties between lines logged in the same microsecond
    n            bigint      GENERATED ALWAYS AS IDENTITY,
    execution_id text        NOT NULL,
    namespace    text        NOT NULL,
    flow_id      text        NOT NULL,
    task_run_id  text,
    task_id      text,
    attempt      integer,
    time         timestamptz NOT NULL,
    level        text        NOT NULL,
    message      text        NOT NULL
);
CREATE INDEX logs_execution_time_idx ON logs (execution_id, time, n);
