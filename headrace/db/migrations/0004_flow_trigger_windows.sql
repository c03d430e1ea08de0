-- Progress of flow triggers that wait for several upstream flows (a `preconditions.flows`
-- list of more than one condition): which conditions each time window has met and by
-- which upstream end, and every end such a trigger counted, with the downstream
-- execution it completed, so a re-delivered end counts once and re-publishes that id.

CREATE TABLE flow_trigger_windows (
    namespace    text        NOT NULL,
    flow_id      text        NOT NULL,
    trigger_id   text        NOT NULL,
    window_start timestamptz NOT NULL,  -- a SLIDING_WINDOW's one record: 1970-01-01
    window_end   timestamptz,           -- exclusive; NULL: a sliding window, never closed
    satisfied    jsonb       NOT NULL DEFAULT '{}',  -- condition key -> upstream end
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, flow_id, trigger_id, window_start)
);

CREATE INDEX flow_trigger_windows_end ON flow_trigger_windows (window_end);

CREATE TABLE flow_trigger_ends (
    namespace    text        NOT NULL,
    flow_id      text        NOT NULL,
    trigger_id   text        NOT NULL,
    upstream_end text        NOT NULL,  -- upstream execution id '#' its end number
    window_start timestamptz NOT NULL,
    execution_id text,                  -- the downstream execution this end completed
    upstreams    jsonb,                 -- that execution's upstream ends, in listed order
    seen_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, flow_id, trigger_id, upstream_end)
);

CREATE INDEX flow_trigger_ends_seen_at ON flow_trigger_ends (seen_at);
