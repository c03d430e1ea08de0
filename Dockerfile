# One image for every service: `docker compose` picks the service by command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY headrace ./headrace
COPY services ./services
COPY topics ./topics
COPY schemas ./schemas
COPY connectors ./connectors
COPY examples ./examples
# The dbt extra: workers run dbt tasks (dbt-core and its PostgreSQL adapter).
RUN pip install --no-cache-dir ".[dbt]" && useradd --create-home headrace
# Where docker-compose.yml mounts the shared file storage: a named volume mounted on a
# folder of the image copies its owner at first use, so the services (not root) can
# write it.
RUN mkdir -p /var/lib/headrace/storage && chown headrace:headrace /var/lib/headrace/storage
USER headrace
# 8080: the gateway's API (with its /healthz, /readyz, /metrics); 9100: the metrics and
# probes of every other service, when HEADRACE_METRICS_PORT=9100 (docker-compose.yml sets
# it). Probes need no curl: docker-compose.yml's health checks ask with Python.
EXPOSE 8080 9100
ENTRYPOINT ["headrace"]
