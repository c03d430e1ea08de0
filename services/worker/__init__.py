"""The worker service: runs task attempts from `task-requests` (see `service.run_worker`)."""

from headrace.services.worker.service import run_worker

__all__ = ["run_worker"]
