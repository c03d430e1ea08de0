"""Authentication and roles: every route needs credentials but webhooks and `/healthz`.

A request carries `Authorization: Bearer <token>` or, when the credentials file lists
users, `Authorization: Basic <user:password>`. No credentials, or wrong ones, answer 401
with a `WWW-Authenticate` challenge and a message saying what to send; a reader calling
a route that changes something answers 403. The caller is stored on the request
(`PRINCIPAL`) for handlers that answer readers differently (webhook keys are masked).

Tokens are checked by their SHA-256, compared in constant time against every configured
token. Passwords are checked with scrypt off the event loop, a few at a time (each takes
16 MiB and tenths of a second); a user name:password pair that passed is remembered (by
its SHA-256) so that a user pays that once per gateway process. An unknown user name
costs a check against a dummy hash, so the time taken does not tell names apart.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from headrace.passwords import PasswordHash, hash_password
from headrace.services.gateway.credentials import Credentials, Role
from headrace.services.gateway.responses import error_response

REALM = "headrace"
# Users whose password passed, remembered by SHA-256 of user:password; bounded memory.
PASSWORD_CACHE_SIZE = 1024
# scrypt checks at once: each holds 16 MiB and a core for ~0.2 s (2 cores machines).
MAX_PASSWORD_CHECKS = 2
HOW_TO_AUTHENTICATE = (
    "send `Authorization: Bearer <token>`: the gateway's HEADRACE_TOKEN, or a token of its "
    "credentials file (`headrace server local` prints its token and the file it keeps it in; "
    "the CLI finds it there, or takes --token / HEADRACE_TOKEN)"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made the request, as its credential names it."""

    name: str
    role: Role
    scheme: str  # "bearer" or "basic"

    @property
    def can_write(self) -> bool:
        return self.role is Role.WRITER

    def __str__(self) -> str:
        return f"{'user' if self.scheme == 'basic' else 'token'} {self.name!r}"


PRINCIPAL = web.RequestKey("principal", Principal)


class Unauthenticated(Exception):
    """No credentials, or credentials that are not valid: a 401 with this reason."""


class Authenticator:
    def __init__(self, credentials: Credentials) -> None:
        self._tokens = credentials.tokens
        self._users = credentials.users
        self._passed: OrderedDict[bytes, Principal] = OrderedDict()
        self._checks = asyncio.Semaphore(MAX_PASSWORD_CHECKS)
        # Checked when the user name is unknown, for the same cost as a known one.
        self._dummy = PasswordHash(hash_password(secrets.token_urlsafe())) if self._users else None

    @property
    def challenge(self) -> str:
        """The `WWW-Authenticate` value: Basic only when there are users (a browser that
        sees it asks for a password)."""
        schemes = [f'Bearer realm="{REALM}"']
        if self._users:
            schemes.append(f'Basic realm="{REALM}", charset="UTF-8"')
        return ", ".join(schemes)

    async def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise Unauthenticated(f"authentication required: {HOW_TO_AUTHENTICATE}")
        scheme, _, value = header.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and value:
            return self._bearer(value)
        if scheme == "basic" and value and self._users:
            return await self._basic(value)
        accepted = "Bearer or Basic" if self._users else "Bearer"
        raise Unauthenticated(
            f"unsupported Authorization scheme {scheme!r}: this gateway takes {accepted}; "
            + HOW_TO_AUTHENTICATE
        )

    def _bearer(self, token: str) -> Principal:
        # Header bytes that are not UTF-8 arrive as surrogates, which strict UTF-8 cannot
        # encode; such a token matches no configured one (those are text) and gets a 401.
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found = None
        for credential in self._tokens:  # every one: the time does not tell which matched
            if hmac.compare_digest(credential.digest, digest) and found is None:
                found = credential
        if found is None:
            raise Unauthenticated(f"the bearer token is not valid: {HOW_TO_AUTHENTICATE}")
        return Principal(found.name, found.role, "bearer")

    async def _basic(self, value: str) -> Principal:
        try:
            pair = base64.b64decode(value, validate=True).decode("utf-8")
        except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8 inside
            raise Unauthenticated("malformed Basic credentials: base64 of user:password") from None
        name, sep, password = pair.partition(":")
        if not sep:
            raise Unauthenticated("malformed Basic credentials: base64 of user:password")
        remembered = hashlib.sha256(pair.encode()).digest()
        principal = self._passed.get(remembered)
        if principal is not None:
            self._passed.move_to_end(remembered)
            return principal
        user = self._users.get(name)
        stored = user.password if user is not None else self._dummy
        assert stored is not None  # users exist, so the dummy does
        async with self._checks:
            matched = await asyncio.to_thread(stored.matches, password)
        if user is None or not matched:
            raise Unauthenticated("wrong user name or password")
        principal = Principal(user.name, user.role, "basic")
        self._passed[remembered] = principal
        if len(self._passed) > PASSWORD_CACHE_SIZE:
            self._passed.popitem(last=False)
        return principal


def route_of(request: web.Request) -> str | None:
    """The matched route's pattern (`/api/v1/flows/{namespace}/{id}`), None when none."""
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def require_credentials(
    authenticator: Authenticator, public: frozenset[str], read_only: frozenset[str]
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The middleware: `public` routes pass as they are; a reader may call GET and HEAD
    routes and the POST routes in `read_only` (they change nothing)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        if route in public:
            return await handler(request)
        try:
            principal = await authenticator.authenticate(request.headers.get(hdrs.AUTHORIZATION))
        except Unauthenticated as exc:
            response = error_response(401, str(exc))
            response.headers[hdrs.WWW_AUTHENTICATE] = authenticator.challenge
            return response
        reads = request.method in ("GET", "HEAD") or route in read_only
        if not (principal.can_write or reads):
            return error_response(
                403,
                f"{principal} is a reader: {request.method} {request.path} needs the writer role",
            )
        request[PRINCIPAL] = principal
        return await handler(request)

    return middleware


def can_write(request: web.Request) -> bool:
    """Whether the caller holds the writer role (public routes have no caller: no)."""
    principal = request.get(PRINCIPAL)
    return principal is not None and principal.can_write
