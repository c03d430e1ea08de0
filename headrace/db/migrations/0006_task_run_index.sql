-- Executors now publish one event per step, and the task runs one step creates share its
-- seq: their place among the execution's task runs (creation order) orders them.
ALTER TABLE task_runs ADD COLUMN first_index integer NOT NULL DEFAULT 0;
