"""Zipkin 3.x, the exec jar from Maven Central, in-memory storage."""

from __future__ import annotations

import os
from pathlib import Path

from tools.stack.components.base import Component, http_ok, java_bin, maven_copy

VERSION = "3.6.1"
ARTIFACT = f"io.zipkin:zipkin-server:{VERSION}:jar:exec"
# Any of these in the environment makes zipkin start a collector of its own (Kafka, RabbitMQ, ...).
COLLECTOR_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID", "KAFKA_STREAMS",
                       "RABBIT_ADDRESSES", "RABBIT_URI", "RABBIT_QUEUE", "ACTIVEMQ_URL",
                       "ACTIVEMQ_QUEUE", "SCRIBE_ENABLED", "STORAGE_TYPE")


class Zipkin(Component):
    name = "zipkin"
    start_timeout = 120.0

    @property
    def jar(self) -> Path:
        return self.cache_dir / f"zipkin-server-{VERSION}-exec.jar"

    def installed(self) -> bool:
        return self.jar.exists()

    def install(self) -> None:
        maven_copy(self.ctx, self.name, ARTIFACT, self.cache_dir)

    def command(self) -> list[str]:
        return [java_bin(), "-Xmx256m", "-Xms32m", "-XX:+UseSerialGC", "-Xss512k",
                "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true", "-jar", str(self.jar),
                # replaces the default port list (all interfaces): port, address and protocol together
                f"--armeria.ports[0].port={self.port}", "--armeria.ports[0].ip=127.0.0.1",
                "--armeria.ports[0].protocols[0]=http"]

    def env(self) -> dict[str, str | None]:
        changes: dict[str, str | None] = {key: None for key in COLLECTOR_VARIABLES}
        changes.update({key: None for key in os.environ if key.startswith(("KAFKA_", "RABBIT_"))})
        changes.update({"QUERY_PORT": str(self.port), "STORAGE_TYPE": "mem", "JAVA_TOOL_OPTIONS": None})
        return changes

    def health(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/health")

    def urls(self) -> list[tuple[str, str]]:
        return [("UI", f"http://127.0.0.1:{self.port}/zipkin/")]


COMPONENT = Zipkin
