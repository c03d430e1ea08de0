-- Runtime state of declared triggers, one row per (flow, trigger): the schedule's
-- watermark (`last_tick`, advanced by compare-and-set so two schedulers never both do a
-- tick's work), what it last started, and the runtime on/off switch of the API and CLI.

CREATE TABLE trigger_state (
    namespace         text        NOT NULL,
    flow_id           text        NOT NULL,
    trigger_id        text        NOT NULL,
    last_tick         timestamptz,           -- every tick up to this one is done
    next_tick         timestamptz,           -- the next tick after last_tick (for readers)
    last_execution_id text,
    disabled          boolean     NOT NULL DEFAULT false,  -- set by the API, not the YAML
    last_error        text,                  -- why the latest tick was skipped, if it was
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, flow_id, trigger_id)
);
