-- Why a trigger was switched off by its `stopAfter` (Kestra's name): the end state and
-- the execution that ended in it, and when. Cleared when the trigger is switched on
-- again; NULL on triggers never stopped that way.
ALTER TABLE trigger_state ADD COLUMN stopped_state text;
ALTER TABLE trigger_state ADD COLUMN stopped_execution_id text;
ALTER TABLE trigger_state ADD COLUMN stopped_at timestamptz;
