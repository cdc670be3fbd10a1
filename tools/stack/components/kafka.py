"""Apache Kafka 4.x, one KRaft node in combined mode (broker + controller), from Maven Central jars.

The jars are resolved from tools/stack/kafka/pom.xml (the broker, its tools and a log4j2 SLF4J binding:
the published poms carry none, and without one the broker logs nothing). Application topics are not
created here: the services create their own at start-up.

Two client listeners: PLAINTEXT on `ports.INFRA_PORTS["kafka"]` (what the local stack's services
use) and SASL_SSL on `ports.KAFKA_SASL_SSL_PORT`: TLS with the data folder's server certificate
(tools/stack/tls.py) and SCRAM-SHA-512 logins; the login `ports.KAFKA_SCRAM_USER` is made once
per data folder, after the first start.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from pathlib import Path

from tools.stack import ports, tls
from tools.stack.components.base import (
    Component, StackError, java_bin, maven_copy_dependencies, tcp_ok)

HEAP = "-Xmx512m"
# The serial collector: on a machine of a few cores the broker's short-lived request garbage is
# cheapest to collect without G1's concurrent threads and write barriers.
GC = "-XX:+UseSerialGC"
STARTED = "Kafka Server started"
SCRAM = "SCRAM-SHA-512"

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = info
# chatty at info: one line per request/fetch session
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = warn
"""


class Kafka(Component):
    name = "kafka"
    start_timeout = 120.0
    stop_grace = 30.0  # a controlled shutdown takes a few seconds

    @property
    def pom(self) -> Path:
        return self.ctx.repo / "tools/stack/kafka/pom.xml"

    @property
    def libs(self) -> Path:
        # Keyed by the pom's content: changing a version resolves a fresh set of jars.
        digest = hashlib.sha256(self.pom.read_bytes()).hexdigest()[:12]
        return self.cache_dir / f"libs-{digest}"

    @property
    def properties(self) -> Path:
        return self.data_dir / "server.properties"

    def installed(self) -> bool:
        return (self.libs / ".complete").exists()

    def install(self) -> None:
        maven_copy_dependencies(self.ctx, self.name, self.pom, self.libs)
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise StackError(f"kafka: no kafka_2.13 jar in {self.libs} after resolving {self.pom}")
        (self.libs / ".complete").touch()

    def configure(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties.write_text(render_server_properties(self.port, ports.KAFKA_CONTROLLER_PORT,
                                                            self.data_dir / "logs", tls.ensure(self.ctx).pem))
        (self.data_dir / "log4j2.properties").write_text(LOG4J2)

    def prepare_once(self) -> None:
        self.configure()
        self.run(self.java("kafka.tools.StorageTool") + [
            "format", "-t", new_cluster_id(), "-c", str(self.properties), "--standalone",
            "--ignore-formatted"])

    def java(self, main_class: str) -> list[str]:
        return [java_bin(), HEAP, "-Xms64m", GC,
                "-Djava.awt.headless=true", "-Dlog4j2.formatMsgNoLookups=true",
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.data_dir / 'app-logs'}",
                "-cp", f"{self.libs}/*", main_class]

    def command(self) -> list[str]:
        return self.java("kafka.Kafka") + [str(self.properties)]

    def env(self) -> dict[str, str | None]:
        return {"KAFKA_HEAP_OPTS": None, "KAFKA_OPTS": None, "JAVA_TOOL_OPTIONS": None}

    def health(self) -> bool:
        return tcp_ok(self.port) and STARTED in self.log_since_start()

    @property
    def scram_marker(self) -> Path:
        return self.data_dir / "scram-users"

    def post_start(self) -> None:
        # SCRAM logins live in the cluster's metadata: made once, through the running broker.
        if self.scram_marker.exists() and self.scram_marker.read_text().split() == [ports.KAFKA_SCRAM_USER]:
            return
        self.run(self.java("kafka.admin.ConfigCommand") + [
            "--bootstrap-server", f"127.0.0.1:{self.port}", "--alter", "--entity-type", "users",
            "--entity-name", ports.KAFKA_SCRAM_USER,
            "--add-config", f"{SCRAM}=[iterations=8192,password={ports.KAFKA_SCRAM_PASSWORD}]"], timeout=120)
        self.scram_marker.write_text(ports.KAFKA_SCRAM_USER + "\n")

    def urls(self) -> list[tuple[str, str]]:
        return [("bootstrap", f"127.0.0.1:{self.port}"),
                ("sasl_ssl", f"127.0.0.1:{ports.KAFKA_SASL_SSL_PORT} ({SCRAM}, CA {tls.files(self.ctx).ca})")]


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64url without padding (22 characters), never starting
    with `-` (one in 64 would: `kafka-storage format -t -Wm...` then reads it as an option, which is
    why Kafka's own random ids skip those too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def render_server_properties(port: int, controller_port: int, log_dir: Path, keystore: Path) -> str:
    sasl_ssl = f"SASL_SSL://127.0.0.1:{ports.KAFKA_SASL_SSL_PORT}"
    # Plain text again for `./stack chaos`, advertised at its fault proxy's port (see faultproxy).
    cut = (f"CUT://127.0.0.1:{ports.KAFKA_CUT_PORT}", f"CUT://127.0.0.1:{ports.KAFKA_CUT_PORT + ports.CUT_OFFSET}")
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},{sasl_ssl},{cut[0]}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},"
                                f"{sasl_ssl},{cut[1]}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CUT:PLAINTEXT",
        # the SASL_SSL listener: TLS with the local CA's server certificate, SCRAM logins
        "listener.name.sasl_ssl.sasl.enabled.mechanisms": SCRAM,
        f"listener.name.sasl_ssl.{SCRAM.lower()}.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
        "listener.name.sasl_ssl.ssl.keystore.location": str(keystore),
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": "0",
        # one node: every internal topic with replication factor 1 and min ISR 1
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "log.retention.hours": "24",
        # Threads for a machine of a few cores (the defaults, 3 network and 8 I/O threads and
        # 10 background ones, are sized for a server): fewer threads switch less.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


COMPONENT = Kafka
