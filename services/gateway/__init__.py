"""The gateway: the REST API under `/api/v1` and `/healthz` (aiohttp).

Public entry: `run_gateway(settings, stop, ready=None)`; `make_app(gateway, authenticator,
hosts)` builds the application around already-open resources.
"""

from headrace.services.gateway.app import make_app, run_gateway

__all__ = ["make_app", "run_gateway"]
