"""Zipkin 3.x, the exec jar from Maven Central, in-memory storage."""

from __future__ import annotations

import os
from pathlib import Path

from tools.stack.components.base import BACKGROUND, Component, http_ok, java_bin, maven_copy

VERSION = "3.6.1"
ARTIFACT = f"io.zipkin:zipkin-server:{VERSION}:jar:exec"
# Each second's new spans push as many kept ones (below) out: with 256 MB the old generation filled
# every few seconds at 100 orders/s and the serial collector's full collections were half of
# Zipkin's CPU. 512 MB gives the garbage room; more room than that (the whole heap from the start)
# made collections rarer at 30 orders/s but did not lower Zipkin's CPU (`bench-results/zipkin-heap/`).
HEAP = "512m"
# In-memory storage keeps this many spans, dropping the oldest traces beyond. Zipkin's default
# (500 000) does not fit the capped heap: a long test run filled it and the server died of
# OutOfMemoryError. At 30 orders/s the old generation held about 4 kB per kept span (spans and
# the garbage promoted with them, `bench-results/zipkin-heap/`): 60 000 spans about 240 MB.
MAX_SPANS = 60_000
# Any of these in the environment makes zipkin start a collector of its own (Kafka, RabbitMQ, ...).
COLLECTOR_VARIABLES = ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID", "KAFKA_STREAMS",
                       "RABBIT_ADDRESSES", "RABBIT_URI", "RABBIT_QUEUE", "ACTIVEMQ_URL",
                       "ACTIVEMQ_QUEUE", "SCRIBE_ENABLED", "STORAGE_TYPE")


class Zipkin(Component):
    name = "zipkin"
    niceness = BACKGROUND
    start_timeout = 120.0

    @property
    def jar(self) -> Path:
        return self.cache_dir / f"zipkin-server-{VERSION}-exec.jar"

    def installed(self) -> bool:
        return self.jar.exists()

    def install(self) -> None:
        maven_copy(self.ctx, self.name, ARTIFACT, self.cache_dir)

    def command(self) -> list[str]:
        # C1 only (`TieredStopAtLevel=1`): with C2, Zipkin's JIT took 0.5 s of a 20/s minute and
        # 80 MB more, to save some 15% of its CPU after (`bench-results/tracing-cost/`).
        return [java_bin(), f"-Xmx{HEAP}", "-Xms32m", "-XX:+UseSerialGC", "-Xss512k",
                "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true", "-jar", str(self.jar),
                # replaces the default port list (all interfaces): port, address and protocol together
                f"--armeria.ports[0].port={self.port}", "--armeria.ports[0].ip=127.0.0.1",
                "--armeria.ports[0].protocols[0]=http"]

    def env(self) -> dict[str, str | None]:
        changes: dict[str, str | None] = {key: None for key in COLLECTOR_VARIABLES}
        changes.update({key: None for key in os.environ if key.startswith(("KAFKA_", "RABBIT_"))})
        changes.update({"QUERY_PORT": str(self.port), "STORAGE_TYPE": "mem", "MEM_MAX_SPANS": str(MAX_SPANS),
                        "JAVA_TOOL_OPTIONS": None})
        return changes

    def health(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/health")

    def urls(self) -> list[tuple[str, str]]:
        return [("UI", f"http://127.0.0.1:{self.port}/zipkin/")]


COMPONENT = Zipkin
