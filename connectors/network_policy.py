"""Addresses the workers' operator forbids connectors to reach (`HEADRACE_HTTP_DENY`).

A flow author chooses the URLs a task calls; the operator decides which networks a
worker may reach on their behalf. Without such a list, a flow could read a cloud's
metadata service (169.254.169.254) or an internal admin port through the worker. The
list is empty by default: a fresh install calls what it is asked to call.

`HEADRACE_HTTP_DENY` is a comma-separated list of:
- networks or addresses: `10.0.0.0/8`, `169.254.169.254`, `fd00::/8`;
- `private`: loopback, private (RFC 1918, unique local), link-local (cloud metadata),
  shared (100.64.0.0/10) and unspecified addresses;
- host names: `metadata.google.internal` (refused whatever they resolve to).

Names are checked, then every address they resolve to is checked before connecting
(the resolver below), so a name pointing at a denied address is refused too; each
redirect is checked the same way.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from headrace.connectors.base import TaskFailed

DENY_ENV = "HEADRACE_HTTP_DENY"
PRIVATE = "private"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DeniedAddress(TaskFailed):
    """The task asked for an address the workers' operator denies."""


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _forms(address: IpAddress) -> list[IpAddress]:
    """`address`, and the IPv4 address an IPv6 one carries (mapped, NAT64, 6to4): each
    reaches the same host, so each is checked."""
    forms: list[IpAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            forms.append(address.sixtofour)
        if address in _NAT64:
            forms.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return forms


def _is_private(address: IpAddress) -> bool:
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address in ipaddress.ip_network("100.64.0.0/10")
    )


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    networks: tuple[IpNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    deny_private: bool = False

    @classmethod
    def parse(cls, text: str) -> NetworkPolicy:
        """The policy `text` (the variable's syntax) describes; raises `ValueError`."""
        networks: list[IpNetwork] = []
        hosts: set[str] = set()
        deny_private = False
        for item in filter(None, (part.strip() for part in text.split(","))):
            if item.lower() == PRIVATE:
                deny_private = True
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                if "/" in item or not item.replace("-", "").replace(".", "").isalnum():
                    raise ValueError(
                        f"{DENY_ENV}: {item!r} is neither a network, an address, a host name"
                        f" nor {PRIVATE!r}"
                    ) from None
                hosts.add(item.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts), deny_private)

    @classmethod
    def from_environment(cls) -> NetworkPolicy:
        try:
            return cls.parse(os.environ.get(DENY_ENV, ""))
        except ValueError as exc:
            # The operator's mistake: fail the task saying so, rather than allow everything.
            raise TaskFailed(f"the worker's network policy is invalid: {exc}") from None

    def check_address(self, address: str, host: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is not an address
        for form in _forms(ip):
            if (self.deny_private and _is_private(form)) or any(
                form in net for net in self.networks
            ):
                shown = host if host == address else f"{host} ({address})"
                raise DeniedAddress(f"{shown} is an address the workers may not reach ({DENY_ENV})")

    def check_url(self, url: URL) -> None:
        """Refuse a denied host name, or a denied address written in the URL itself (the
        resolver never sees those)."""
        host = (url.host or "").lower().rstrip(".")
        if host in self.hosts:
            raise DeniedAddress(f"{host} is a host the workers may not reach ({DENY_ENV})")
        literal = host.strip("[]")
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            # `2130706433`, `0x7f.1`, `127.1`: IPv4 in forms some libraries connect to
            # without resolving. Read them as the C library does, and check that.
            try:
                literal = socket.inet_ntoa(socket.inet_aton(literal))
            except OSError:
                return  # a name: the resolver checks what it resolves to
        self.check_address(literal, host)

    def denies_this_machine(self) -> bool:
        """Whether the worker's own loopback addresses are denied: then so is anything
        else that reaches its machine, as a Unix socket does."""
        if "localhost" in self.hosts:
            return True
        try:
            for loopback in ("127.0.0.1", "::1"):
                self.check_address(loopback, loopback)
        except DeniedAddress:
            return True
        return False

    def resolver(self) -> AbstractResolver:
        return _CheckingResolver(self)

    async def check_hosts(self, hosts: Iterable[tuple[str, int]], what: str) -> None:
        """Refuse a denied host, or one whose name resolves to a denied address, for
        clients that resolve names themselves (Kafka's, PostgreSQL's): checked before
        they connect. `what` names the server in errors ("Kafka broker")."""
        if self == NetworkPolicy():
            return  # nothing is denied: no need to resolve
        resolver = self.resolver()
        try:
            for host, port in hosts:
                self.check_url(URL.build(scheme="tcp", host=host, port=port))
                try:
                    await resolver.resolve(host, port, family=socket.AF_UNSPEC)
                except OSError as exc:
                    raise TaskFailed(f"cannot resolve {what} {host}: {exc}") from None
        finally:
            await resolver.close()


class _CheckingResolver(AbstractResolver):
    """Resolves like aiohttp's default, then refuses if any address found is denied."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self._policy = policy
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._resolver.resolve(host, port, family)
        for entry in found:
            self._policy.check_address(entry["host"], host)
        return found

    async def close(self) -> None:
        await self._resolver.close()
