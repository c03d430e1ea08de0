-- Live followers read an execution's lines stored after the last one they sent
-- (`n > $last ORDER BY n`): without this index each read scans all its lines.
CREATE INDEX logs_execution_n_idx ON logs (execution_id, n);
