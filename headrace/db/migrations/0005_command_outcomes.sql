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
-- (NULL: something will), when the executor last answered a probe, when the last probe
-- was sent, and when the next one is due. Any later change of the execution clears the
-- reason and the due time (it is probed again once quiet).
ALTER TABLE executions
    ADD COLUMN stuck_reason  text,
    ADD COLUMN checked_at    timestamptz,
    ADD COLUMN probed_at     timestamptz,
    ADD COLUMN next_probe_at timestamptz;
CREATE INDEX executions_stuck_idx ON executions (created_at DESC)
    WHERE stuck_reason IS NOT NULL;
-- The watchdog's two scans (services/scheduler/watchdog.py): unended executions never
-- probed since they last changed, by their last change; and those probed, by when the
-- next probe is due.
CREATE INDEX executions_unprobed_idx ON executions (updated_at)
    WHERE next_probe_at IS NULL
      AND state NOT IN ('SUCCESS', 'WARNING', 'FAILED', 'KILLED', 'CANCELLED', 'SKIPPED');
CREATE INDEX executions_probe_due_idx ON executions (next_probe_at)
    WHERE state NOT IN ('SUCCESS', 'WARNING', 'FAILED', 'KILLED', 'CANCELLED', 'SKIPPED');
