"""Browser safety: refuse what a web page could make a visitor's browser send here.

Two attacks reach a gateway that only its operator's machine can connect to:

- DNS rebinding: a page at `evil.example` makes its name resolve to 127.0.0.1, and its
  scripts then read and write the API as if same-origin. Their requests carry
  `Host: evil.example`, so every route checks the Host header: loopback names, IP
  addresses (a page can only have an IP origin if that IP served it), the bind address
  and `HEADRACE_ALLOWED_HOSTS` (exact names, `.example.com` for a domain and its
  subdomains, `*` for any) pass; anything else is refused.
- Cross-site requests: any page can make the browser POST a form, or a "simple"
  `fetch`, to any URL, with the credentials the browser holds for it (basic auth it
  cached, cookies). On routes that change something (POST, PUT, PATCH, DELETE), except
  webhooks whose URL key is made to be called from anywhere, refused are: an `Origin`
  other than the server's own, `Sec-Fetch-Site: cross-site` or `same-site`, and a POST
  that is not authenticated by a bearer token (which a browser never adds on its own)
  unless its body is JSON, YAML or raw bytes (application/octet-stream). A page can
  send a POST without a CORS preflight only with no body, a form or text/plain; the
  gateway answers no preflight (no CORS headers), so a page cannot send any of those.
  PUT, PATCH and DELETE always need a preflight.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from headrace.config import Settings
from headrace.services.gateway.auth import route_of
from headrace.services.gateway.responses import error_response

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK_NAMES = frozenset({"localhost"})  # and any name under .localhost (RFC 6761)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Bodies a page cannot send cross-site without a preflight (which gets no CORS answer).
# Fetch names the other way round, the types a page may send: form-urlencoded,
# multipart/form-data, text/plain, or none; anything outside this list counts as those.
PREFLIGHTED_BODY_TYPES = frozenset(
    {
        "application/json",
        "application/x-yaml",
        "application/yaml",
        "text/yaml",
        "text/x-yaml",
        "application/octet-stream",  # raw uploads (namespace files), as the web UI sends them
    }
)
# `same-site` too: a page on another port of localhost is same-site with the gateway.
FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """The host names the gateway answers to (lower-case, no port)."""

    names: frozenset[str]
    domains: tuple[str, ...] = ()  # ".example.com": the domain and its subdomains
    any_host: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        names = set(LOOPBACK_NAMES)
        bind = settings.gateway_host.lower()
        if bind not in WILDCARD_HOSTS:  # bound to all interfaces: no name to add
            names.add(bind)
        domains = []
        for entry in settings.allowed_hosts:
            if entry.startswith("."):
                domains.append(entry)
            elif entry != "*":
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(domains), "*" in settings.allowed_hosts)

    def allows(self, hostname: str) -> bool:
        hostname = hostname.rstrip(".")
        if self.any_host or hostname in self.names or hostname.endswith(".localhost"):
            return True
        if any(hostname == d[1:] or hostname.endswith(d) for d in self.domains):
            return True
        try:
            ipaddress.ip_address(hostname)
        except ValueError:
            return False
        return True


def _host_port(value: str) -> tuple[str, int | None] | None:
    """`name[:port]` or `[v6][:port]` split, lower-cased; None when it is no host."""
    try:
        parts = urlsplit("//" + value)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query:
        return None
    return parts.hostname, port


def same_origin(origin: str, host: str) -> bool:
    """Whether `Origin` names the server the request was sent to (its `Host`). The
    scheme is not compared: behind a TLS proxy the page is https, the gateway http."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # "null" (sandboxed frames, files) and the like
    target = _host_port(host)
    if target is None:
        return False
    default = 443 if parts.scheme == "https" else 80
    try:
        origin_port = parts.port or default
    except ValueError:
        return False
    return (parts.hostname, origin_port) == (target[0], target[1] or default)


def _bearer(request: web.Request) -> bool:
    return request.headers.get(hdrs.AUTHORIZATION, "").lstrip().lower().startswith("bearer ")


def _preflighted(request: web.Request) -> bool:
    """Whether the body's type is one a page cannot send without a preflight."""
    media_type = request.headers.get(hdrs.CONTENT_TYPE, "").split(";", 1)[0].strip().lower()
    return media_type in PREFLIGHTED_BODY_TYPES or media_type.endswith("+json")


def refuse(message: str) -> web.Response:
    return error_response(403, message)


def browser_checks(
    policy: HostPolicy, exempt: frozenset[str]
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware; `exempt` routes (webhooks) skip the cross-site checks, not Host."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get(hdrs.HOST, "")
        target = _host_port(host)
        if target is None or not policy.allows(target[0]):
            return refuse(
                f"host {host!r} is not one this gateway answers to (a DNS rebinding "
                "defence): use localhost or an IP address, or add the name to "
                "HEADRACE_ALLOWED_HOSTS on the gateway (see docs/security.md)"
            )
        if request.method not in STATE_CHANGING or route_of(request) in exempt:
            return await handler(request)
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not same_origin(origin, host):
            return refuse(
                f"cross-origin request refused: Origin {origin!r} is not this server "
                f"({host!r}); web pages of other sites cannot change anything here"
            )
        fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
        if fetch_site in FOREIGN_FETCH_SITES:
            return refuse(f"cross-site request refused (Sec-Fetch-Site: {fetch_site})")
        if request.method == "POST" and not (_bearer(request) or _preflighted(request)):
            return refuse(
                "a POST without a body, or with a form or text body, is what any web page "
                "can make a browser send, with the basic-auth credentials it cached: "
                "authenticate with `Authorization: Bearer <token>`, or send a JSON body "
                "(Content-Type: application/json, `{}` when there is nothing to say)"
            )
        return await handler(request)

    return middleware
