-- What the executor did with each kill, resume, restart and replay: the gateway waits for
-- the row of the command it sent and tells its caller (the watchdog's probes are not
-- kept here: they only update `executions` below). Rows older than a week are deleted by
-- the scheduler's watchdog.
CREATE TABLE execution_commands (
    id           text        PRIMARY KEY,
    execution_id text        NOT NULL,
    kind         text        NOT NULL,
    status       text        NOT NULL,  -- APPLIED, IGNORED or UNKNOWN
    reason       text,
    state        text,                  -- the execution's state as the executor held it
    answered_at  timestamptz NOT NULL
);
CREATE INDEX execution_commands_answered_idx ON execution_commands (answered_at);

-- What the watchdog learnt of a non-terminal execution: why nothing can move it any more
-- (NULL: something will), when the executor last answered its probe, and when it last
-- sent one. Any later change of the execution clears the reason.
ALTER TABLE executions
    ADD COLUMN stuck_reason text,
    ADD COLUMN checked_at timestamptz,
    ADD COLUMN probed_at timestamptz;
CREATE INDEX executions_stuck_idx ON executions (updated_at DESC) WHERE stuck_reason IS NOT NULL;
-- The watchdog's scan: non-terminal executions, oldest change first.
CREATE INDEX executions_unended_idx ON executions (updated_at)
    WHERE state NOT IN ('SUCCESS', 'WARNING', 'FAILED', 'KILLED', 'CANCELLED', 'SKIPPED');
