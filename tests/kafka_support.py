"""A real Kafka broker for the tests: from the environment, a container, or a local JVM.

Order (``TURBINE_TEST_KAFKA`` = auto | env | container | local forces one):
1. ``KAFKA_BOOTSTRAP_SERVERS`` when set;
2. testcontainers' Kafka module when a Docker engine answers (the image named by
   ``TURBINE_KAFKA_IMAGE``);
3. the project's own local broker (``deploy/kafka/kafka.sh``) on a free port.
With none available the Kafka tests skip with the reason, and fail under CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"


class NoBroker(RuntimeError):
    """No way to get a broker here (the reason is the message)."""


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free TCP port below the kernel's ephemeral range (so no client steals it)."""
    import random

    for _ in range(200):
        port = random.randint(low, high)  # noqa: S311 (not security)
        if all(_port_free(p) for p in (port, port + 1)):
            return port
    raise NoBroker("no free port pair found")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def image_present() -> bool:
    """Whether the Kafka image is there to run (nothing can be pulled on some machines)."""
    proc = subprocess.run(
        ["docker", "image", "inspect", kafka_image()], capture_output=True, timeout=30
    )
    return proc.returncode == 0


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


class LocalBroker:
    """The project's own single-node KRaft broker (deploy/kafka/kafka.sh) on a free port.

    ``down()`` and ``up()`` stop and restart it on the same data (a broker outage);
    ``purge()`` stops it and deletes everything.
    """

    def __init__(self) -> None:
        if shutil.which("java") is None and os.geteuid() != 0:
            raise NoBroker("no java, and not root to install it (deploy/kafka/kafka.sh)")
        self.port = free_port()
        self.data = Path(tempfile.mkdtemp(prefix="turbine-kafka-"))
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_DATA_DIR": str(self.data / "broker"),
        }
        self.servers = f"127.0.0.1:{self.port}"

    def up(self) -> str:
        proc = subprocess.run(
            ["bash", str(KAFKA_SH), "up"], capture_output=True, text=True, env=self.env
        )
        if proc.returncode != 0:
            raise NoBroker(f"deploy/kafka/kafka.sh up failed: {proc.stderr.strip()[-600:]}")
        return self.servers

    def down(self) -> None:
        subprocess.run(
            ["bash", str(KAFKA_SH), "down"], capture_output=True, env=self.env, check=True
        )

    def purge(self) -> None:
        subprocess.run(
            ["bash", str(KAFKA_SH), "down", "--purge"], capture_output=True, env=self.env
        )
        shutil.rmtree(self.data, ignore_errors=True)


@contextmanager
def local_broker() -> Iterator[str]:
    """A LocalBroker for the duration of the block, purged afterwards."""
    broker = LocalBroker()
    try:
        yield broker.up()
    finally:
        broker.purge()


def kafka_image() -> str:
    """The Kafka image setting shared with docker-compose.yml (the official image by default)."""
    return os.environ.get("KAFKA_IMAGE", "apache/kafka:4.1.1")


@contextmanager
def container_broker() -> Iterator[str]:
    """A single-node KRaft broker in a container, through testcontainers.

    Configured by the official ``apache/kafka`` image's ``KAFKA_*`` settings, the
    same as docker-compose.yml, so it runs the official image and the local
    stand-in alike (testcontainers' own KafkaContainer expects Confluent's image).
    The host port is chosen first so the broker can advertise it on 127.0.0.1.
    Ryuk cannot be pulled here: the container is removed by this context manager.
    """
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
    from testcontainers.core.container import DockerContainer

    port = free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:29092",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://localhost:9092,HOST://127.0.0.1:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
            "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,HOST:PLAINTEXT"
        ),
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_MESSAGE_MAX_BYTES": "16777216",
        "KAFKA_NUM_PARTITIONS": "6",
    }
    container = DockerContainer(kafka_image())
    # Published on 127.0.0.1 only (with_bind_ports would bind every address): the
    # docker SDK takes an (address, port) pair.
    container.ports["29092/tcp"] = ("127.0.0.1", port)  # type: ignore[assignment]
    for key, value in env.items():
        container = container.with_env(key, value)
    try:
        container.start()
    except Exception as exc:  # the docker SDK's errors: no image, no engine...
        raise NoBroker(f"could not start {kafka_image()} with testcontainers: {exc}") from None
    try:
        servers = f"127.0.0.1:{port}"
        wait_for_metadata(servers, timeout=120)
        yield servers
    finally:
        container.stop()


@contextmanager
def any_broker() -> Iterator[str]:
    mode = os.environ.get("TURBINE_TEST_KAFKA", "auto")
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if mode in ("auto", "env") and given:
        yield given
        return
    if mode == "env":
        raise NoBroker("TURBINE_TEST_KAFKA=env but KAFKA_BOOTSTRAP_SERVERS is not set")
    if mode == "container" or (mode == "auto" and docker_answers() and image_present()):
        with container_broker() as servers:
            yield servers
        return
    with local_broker() as servers:
        yield servers


def wait_for_metadata(servers: str, timeout: float = 60.0) -> None:
    from kafka import KafkaAdminClient

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000)
            admin.list_topics()
            admin.close()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
