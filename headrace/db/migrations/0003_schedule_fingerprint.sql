-- The schedule (cron and time zone) a watermark was kept for. A schedule row whose cron
-- or zone changed, or whose trigger went away (flow deleted or disabled in YAML, trigger
-- removed), starts again from the time it is next seen instead of catching up on ticks
-- of a schedule that was not in force. NULL on rows that are not a schedule's.
ALTER TABLE trigger_state ADD COLUMN schedule text;
