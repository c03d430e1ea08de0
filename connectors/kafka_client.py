"""The Kafka clients of the `kafka.*` tasks: Kafka's client properties as aiokafka settings.

A task names its cluster with Kafka's own property names, as Kestra's tasks do
(`properties: {bootstrap.servers: …}`). The names below are read; any other name is
refused by name at validation rather than ignored, since a setting that silently did
nothing (a truststore, `acks`) is a worse surprise than an error. TLS material is PEM
text in the properties themselves (Kafka's `ssl.truststore.certificates`,
`ssl.keystore.certificate.chain`, `ssl.keystore.key`): JKS and PKCS12 store files are
not read. SASL is PLAIN or SCRAM, its credentials in `sasl.jaas.config` (Kafka's form)
or `sasl.username`/`sasl.password` (librdkafka's).

The workers' deny-list (`HEADRACE_HTTP_DENY`) applies to the brokers too: a flow chooses
them as it chooses an `http.request` URL, and a Kafka client could otherwise reach
headrace's own brokers or anything else the operator keeps flows away from. The brokers
a client connects to are not only the bootstrap servers: they are whatever the cluster's
metadata names, learnt again while the client runs (a leader moves, the metadata ages,
a connection breaks). So `BrokerGuard` checks every connection as aiokafka opens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import ssl
import tempfile
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import BeforeValidator, Field, field_validator, model_validator
from yarl import URL

from headrace.connectors.base import ConnectorProperties, TaskFailed
from headrace.connectors.network_policy import DeniedAddress, NetworkPolicy

# Stopping a client flushes and closes its connections; a broker gone silent must not
# hold a killed task: after this long the client is dropped.
CLOSE_TIMEOUT_S = 5.0
# To tell why no broker answered: a plain TCP connection, each server this long at most.
DIAGNOSE_TIMEOUT_S = 3.0

_JAAS = re.compile(
    r"\s*org\.apache\.kafka\.common\.security\.(plain\.PlainLoginModule|scram\.ScramLoginModule)"
    r"\s+required\s+(?P<options>.*?);?\s*",
    re.DOTALL,
)
_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')
_PEM_HINT = (
    "give PEM text in ssl.truststore.certificates (the authorities), and"
    " ssl.keystore.certificate.chain and ssl.keystore.key (the client's certificate)"
)
_STORE_FILES = f"is a JKS or PKCS12 store, which is not read: {_PEM_HINT}"
# Kafka names refused with a reason of their own.
_REFUSED = {
    "ssl.truststore.location": _STORE_FILES,
    "ssl.truststore.password": _STORE_FILES,
    "ssl.keystore.location": _STORE_FILES,
    "ssl.keystore.password": _STORE_FILES,
    "acks": "is always `all`: a record counts as written once every in-sync replica has it",
    "enable.auto.commit": "is always false: with groupId, the task commits what it read",
    "key.serializer": "is the task's keySerializer",
    "value.serializer": "is the task's valueSerializer",
    "key.deserializer": "is the task's keyDeserializer",
    "value.deserializer": "is the task's valueDeserializer",
}


def bootstrap_hosts(text: str) -> list[tuple[str, int]]:
    """(host, port) of each server of `bootstrap.servers`; raises `ValueError`."""
    hosts = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, colon, port = item.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"write an IPv6 address in brackets, as [::1]:9092, not {item!r}")
        if not (colon and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"{item!r} is not host:port, as kafka-1:9092")
        try:
            URL.build(scheme="kafka", host=host)  # a host name or address, by URL rules
        except ValueError as exc:
            raise ValueError(f"{item!r} is not host:port: {exc}") from None
        hosts.append((host, int(port)))
    if not hosts:
        raise ValueError("names no server: write host:port, as kafka-1:9092")
    return hosts


def _pem_only(value: Any) -> Any:
    if isinstance(value, str) and value.upper() in ("JKS", "PKCS12"):
        raise ValueError(f"{value} stores are not read: {_PEM_HINT}")
    return value


PemStoreType = Annotated[Literal["PEM"], BeforeValidator(_pem_only)]

# The flow loader ends a value's error with `, got <the value>` unless the message has
# one already (as `dbt.command_words` does). These values are passwords and keys: their
# errors say what they got without showing it.
_NOT_SHOWN = "(not shown: it holds a password)"


def _secret_text(value: Any) -> Any:
    if not isinstance(value, str):
        kind = "a number" if isinstance(value, int | float) else type(value).__name__
        raise ValueError(f"must be text, got {kind} {_NOT_SHOWN}")
    return value


SecretText = Annotated[str, BeforeValidator(_secret_text)]


class ClientProperties(ConnectorProperties):
    """What producers and consumers share; the tasks use the two subclasses below."""

    TASK: ClassVar[str]
    OTHER_ROLE: ClassVar[tuple[str, frozenset[str]]]  # (its name, its properties)

    bootstrap_servers: str = Field(
        alias="bootstrap.servers", description="host:port of one or more brokers, by commas."
    )
    client_id: str = Field(default="headrace", alias="client.id")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", alias="security.protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", alias="sasl.mechanism"
    )
    sasl_jaas_config: SecretText | None = Field(
        default=None,
        alias="sasl.jaas.config",
        description="Kafka's form: `org.apache.kafka.common.security.plain.PlainLoginModule"
        ' required username="…" password="…";` (or scram.ScramLoginModule).',
    )
    sasl_username: str | None = Field(default=None, alias="sasl.username")
    sasl_password: SecretText | None = Field(default=None, alias="sasl.password")
    ssl_truststore_type: PemStoreType | None = Field(default=None, alias="ssl.truststore.type")
    ssl_truststore_certificates: str | None = Field(
        default=None,
        alias="ssl.truststore.certificates",
        description="PEM certificates of the authorities to trust (default: the system's).",
    )
    ssl_keystore_type: PemStoreType | None = Field(default=None, alias="ssl.keystore.type")
    ssl_keystore_certificate_chain: str | None = Field(
        default=None,
        alias="ssl.keystore.certificate.chain",
        description="PEM: the client's certificate (mutual TLS), then its chain.",
    )
    ssl_keystore_key: SecretText | None = Field(
        default=None, alias="ssl.keystore.key", description="PEM: the client's private key."
    )
    ssl_key_password: SecretText | None = Field(default=None, alias="ssl.key.password")
    ssl_endpoint_identification_algorithm: Literal["https", ""] = Field(
        default="https",
        alias="ssl.endpoint.identification.algorithm",
        description='"" skips checking the broker\'s name against its certificate.',
    )
    request_timeout_ms: int | None = Field(default=None, gt=0, alias="request.timeout.ms")

    @model_validator(mode="before")
    @classmethod
    def _known_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = {field.alias for field in cls.model_fields.values()}
            for name in data:
                if name not in known:
                    raise ValueError(cls._unknown(str(name), known))
        return data

    @classmethod
    def _unknown(cls, name: str, known: set[str | None]) -> str:
        other_role, other_names = cls.OTHER_ROLE
        if name in _REFUSED:
            return f"Kafka property {name} {_REFUSED[name]}"
        if name in other_names:
            return (
                f"Kafka property {name} is a {other_role} setting, which {cls.TASK} does not read"
            )
        names = ", ".join(sorted(n for n in known if n))
        return f"unknown Kafka property {name!r}: {cls.TASK} reads {names}"

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        bootstrap_hosts(value)
        return value

    @field_validator("sasl_jaas_config")
    @classmethod
    def _jaas(cls, value: str | None) -> str | None:
        if value is not None:
            _jaas_credentials(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ClientProperties:
        sasl = self.security_protocol.startswith("SASL_")
        tls = self.security_protocol.endswith("SSL")
        if self.sasl_jaas_config is not None and (self.sasl_username or self.sasl_password):
            raise ValueError("set sasl.jaas.config or sasl.username and sasl.password, not both")
        given = self.model_fields_set
        if not sasl and any(f.startswith("sasl_") for f in given):
            raise ValueError(
                f"sasl.* is only read with security.protocol SASL_SSL or SASL_PLAINTEXT, not"
                f" {self.security_protocol}"
            )
        if sasl and self.sasl_jaas_config is None and not self.sasl_username:
            raise ValueError(
                f"security.protocol {self.security_protocol} needs credentials:"
                " sasl.username and sasl.password, or sasl.jaas.config"
            )
        if not tls and any(f.startswith("ssl_") for f in given):
            raise ValueError(
                f"ssl.* is only read with security.protocol SSL or SASL_SSL, not"
                f" {self.security_protocol}"
            )
        if (self.ssl_keystore_certificate_chain is None) != (self.ssl_keystore_key is None):
            raise ValueError(
                "a client certificate needs both ssl.keystore.certificate.chain and"
                " ssl.keystore.key"
            )
        if self.sasl_jaas_config is not None:
            module = _jaas_credentials(self.sasl_jaas_config)[0]
            if (module == "PlainLoginModule") != (self.sasl_mechanism == "PLAIN"):
                raise ValueError(
                    f"sasl.jaas.config's {module} does not go with sasl.mechanism"
                    f" {self.sasl_mechanism}"
                )
        return self

    @property
    def hosts(self) -> list[tuple[str, int]]:
        return bootstrap_hosts(self.bootstrap_servers)

    def client_settings(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for the connection (both kinds of client)."""
        settings: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "ssl_context": self._ssl_context(),
        }
        if self.security_protocol.startswith("SASL_"):
            if self.sasl_jaas_config is not None:
                _, username, password = _jaas_credentials(self.sasl_jaas_config)
            else:
                username, password = self.sasl_username, self.sasl_password
            settings.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=username,
                sasl_plain_password=password or "",
            )
        if self.request_timeout_ms is not None:
            settings["request_timeout_ms"] = self.request_timeout_ms
        return settings

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.security_protocol.endswith("SSL"):
            return None
        try:
            context = ssl.create_default_context(cadata=self.ssl_truststore_certificates)
        except (ssl.SSLError, ValueError) as exc:
            raise TaskFailed(f"properties.ssl.truststore.certificates is not PEM: {exc}") from None
        context.check_hostname = self.ssl_endpoint_identification_algorithm == "https"
        if self.ssl_keystore_certificate_chain and self.ssl_keystore_key:
            _load_client_certificate(
                context,
                self.ssl_keystore_certificate_chain,
                self.ssl_keystore_key,
                self.ssl_key_password,
            )
        return context


_PRODUCER_ONLY = frozenset({"compression.type", "linger.ms", "enable.idempotence"})
_CONSUMER_ONLY = frozenset({"group.id", "auto.offset.reset", "isolation.level"})


class ProducerProperties(ClientProperties):
    TASK = "kafka.produce"
    OTHER_ROLE = ("consumer", _CONSUMER_ONLY)

    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none", alias="compression.type"
    )
    linger_ms: int = Field(
        default=1,  # headrace.kafka's: a burst of sends shares a batch, no visible delay
        ge=0,
        alias="linger.ms",
    )
    enable_idempotence: bool | None = Field(
        default=None,
        alias="enable.idempotence",
        description="Default: when the brokers allow it (the embedded broker does not).",
    )

    def producer_settings(self, idempotent: bool) -> dict[str, Any]:
        return {
            **self.client_settings(),
            "acks": "all",
            "enable_idempotence": idempotent,
            "linger_ms": self.linger_ms,
            "compression_type": None if self.compression_type == "none" else self.compression_type,
        }


class ConsumerProperties(ClientProperties):
    TASK = "kafka.consume"
    OTHER_ROLE = ("producer", _PRODUCER_ONLY)

    group_id: str | None = Field(
        default=None, alias="group.id", description="Kafka's spelling of the task's groupId."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        alias="auto.offset.reset",
        description="Where a group without committed offsets starts (default earliest).",
    )
    isolation_level: Literal["read_committed", "read_uncommitted"] = Field(
        default="read_committed",
        alias="isolation.level",
        description="read_committed (default): records of aborted transactions are skipped.",
    )

    def consumer_settings(self, group_id: str | None) -> dict[str, Any]:
        return {
            **self.client_settings(),
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": self.auto_offset_reset,
            "isolation_level": self.isolation_level,
        }


def _jaas_credentials(text: str) -> tuple[str, str | None, str | None]:
    """(login module, username, password) of a `sasl.jaas.config`; raises `ValueError`
    without showing the text, which holds a password."""
    match = _JAAS.fullmatch(text)
    if match is None:
        raise ValueError(
            "sasl.jaas.config must read"
            " org.apache.kafka.common.security.plain.PlainLoginModule (or"
            ' scram.ScramLoginModule) required username="…" password="…", got other text'
            f" {_NOT_SHOWN}"
        )
    options = {
        name: value.replace('\\"', '"').replace("\\\\", "\\")
        for name, value in _JAAS_OPTION.findall(match["options"])
    }
    if "username" not in options:
        raise ValueError(
            f'sasl.jaas.config names no username="…", got text without one {_NOT_SHOWN}'
        )
    module = match[1].rsplit(".", 1)[1]
    return module, options["username"], options.get("password")


def _load_client_certificate(
    context: ssl.SSLContext, chain: str, key: str, password: str | None
) -> None:
    # Python's ssl loads a certificate and key from files only: written to a private
    # folder for the call, removed at once.
    folder = Path(tempfile.mkdtemp(prefix="headrace-kafka-"))
    try:
        (folder / "chain.pem").write_text(chain)
        (folder / "key.pem").write_text(key)
        context.load_cert_chain(folder / "chain.pem", folder / "key.pem", password)
    except ssl.SSLError as exc:
        raise TaskFailed(
            "properties.ssl.keystore.certificate.chain and ssl.keystore.key are not a PEM"
            f" certificate and its key (or ssl.key.password is wrong): {exc}"
        ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class BrokerGuard:
    """The workers' deny-list on every connection the task's Kafka clients open.

    aiokafka's client connects in two places only: `bootstrap` (the bootstrap servers)
    and `_get_conn` (a broker the metadata names, by node id; tests pin this). A guarded
    client checks the host there, and every address its name resolves to, before
    connecting. A denied bootstrap server fails the start. A denied broker is not
    connected to, and fails the task at once: aiokafka would only retry it, in tasks of
    its own, until a timeout. The guard cancels the task that entered it and, leaving,
    turns that cancellation into the refusal (as `asyncio.timeout` turns its own into
    `TimeoutError`); a kill meanwhile stays a kill.

    Use `async with BrokerGuard(policy) as guard:` around everything the clients do,
    closing included, and `guard.protect(client)` before starting each.
    """

    def __init__(self, policy: NetworkPolicy) -> None:
        self._policy = policy
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._refused: TaskFailed | None = None
        self._cancelled_task = False

    def protect(self, client: AIOKafkaClient) -> None:
        """Check the connections of `client` (a producer's or consumer's, not started)."""
        if self._policy == NetworkPolicy():
            return  # nothing is denied
        # aiokafka's producer and consumer build their client themselves and take no
        # factory: this instance gets the checks, not aiokafka's classes, which
        # headrace's own services use too.
        client.__class__ = _GuardedClient
        assert isinstance(client, _GuardedClient)
        client.guard = self

    @property
    def refusal(self) -> TaskFailed | None:
        """Why a broker was refused, once one was."""
        return self._refused

    async def check(self, host: str, port: int) -> None:
        """Raises `DeniedAddress`, or `TaskFailed` when the name does not resolve."""
        await self._policy.check_hosts([(host, port)], "Kafka broker")

    def refuse(self, error: TaskFailed) -> None:
        if self._refused is not None:
            return
        self._refused = error
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self._cancelled_task = True

    async def __aenter__(self) -> BrokerGuard:
        task = asyncio.current_task()
        assert task is not None, "a BrokerGuard is entered by a task"
        self._task, self._cancelling = task, task.cancelling()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        task, self._task = self._task, None
        if self._refused is None or task is None:
            return
        if self._cancelled_task:
            if exc_type is not asyncio.CancelledError:
                # Refused after the block's last wait: the cancellation is still pending.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)
            if task.uncancel() > self._cancelling:
                raise asyncio.CancelledError  # killed as well: a kill wins
        raise self._refused from None


class _GuardedClient(AIOKafkaClient):
    """aiokafka's client, checking each connection with its `BrokerGuard` first."""

    guard: BrokerGuard

    async def bootstrap(self) -> None:
        for host, port, _ in self.hosts:
            await self.guard.check(host, port)
        await super().bootstrap()

    async def _get_conn(
        self, node_id: Any, *, group: Any = ConnectionGroup.DEFAULT, no_hint: bool = False
    ) -> Any:
        conn = self._conns.get((node_id, group))
        broker = self.cluster.broker_metadata(node_id)
        while broker is not None and (conn is None or not conn.connected()):
            try:
                await self.guard.check(broker.host, broker.port)
            except DeniedAddress as exc:
                self.guard.refuse(exc)
                return None
            except TaskFailed:
                return None  # a name that does not resolve: unreachable, as aiokafka sees it
            # aiokafka connects to what the metadata says when it is called: the same
            # broker, unless an update came while the name was being resolved.
            checked, broker = broker, self.cluster.broker_metadata(node_id)
            if broker == checked:
                break
        return await super()._get_conn(node_id, group=group, no_hint=no_hint)


async def connection_failure(properties: ClientProperties, exc: KafkaError) -> TaskFailed:
    """`exc`, raised while connecting, as an error that says what to check."""
    servers = properties.bootstrap_servers
    if isinstance(exc, KafkaConnectionError):
        reason = await _why_unreachable(properties.hosts)
        return TaskFailed(
            f"could not connect to Kafka at {servers} (properties.bootstrap.servers): {reason}"
        )
    return TaskFailed(f"Kafka at {servers} refused the connection: {kafka_reason(exc)}")


def kafka_reason(exc: KafkaError) -> str:
    """aiokafka's error as one line: its text names its type (`[Error 10]
    MessageSizeTooLargeError: …`), some span lines."""
    return " ".join(str(exc).split()) or type(exc).__name__


async def _why_unreachable(hosts: list[tuple[str, int]]) -> str:
    """Why no broker answered, as far as a plain TCP connection tells."""
    reasons = []
    for host, port in hosts:
        try:
            async with asyncio.timeout(DIAGNOSE_TIMEOUT_S):
                _, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            reasons.append(f"{host}:{port} did not answer")
            continue
        except OSError as exc:
            reasons.append(f"{host}:{port}: {exc.strerror or exc}")
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        reasons.append(
            f"{host}:{port} accepts connections but did not answer as a Kafka broker (is"
            " security.protocol right?)"
        )
    return "; ".join(reasons)


async def close_client(client: Any) -> None:
    """Stop an aiokafka client, even when the task is being cancelled: shielded, so a kill
    does not leave connections open, and bounded, so a silent broker cannot hold it."""

    async def stop() -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await client.stop()

    await asyncio.shield(asyncio.ensure_future(stop()))
