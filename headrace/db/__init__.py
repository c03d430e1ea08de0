"""The PostgreSQL layer: what users query (flows, executions, task runs, logs).

`pool` opens connections with the jsonb codec, `migrate` brings the schema up to date,
and one repository module per table family hides the SQL from the services.
"""
