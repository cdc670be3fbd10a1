"""One of this repository's Rust binaries (ports.SERVICES), run from the cargo build of the stack's
profile (`debug`, or `release` after `./stack up --release`)."""

from __future__ import annotations

import os
from pathlib import Path

from tools.stack import ports
from tools.stack.components.base import BACKGROUND, Component, Context, StackError, http_ok


# The saga's step timeout on the local stack (milliseconds).
SAGA_STEP_TIMEOUT_MS = 8000
DEBUG_ADMISSION_TARGET_MS = 6000
# glibc malloc arenas per service process (compose and k8s set the same).
MALLOC_ARENA_MAX = "2"


class Service(Component):
    kind = "service"
    # Every service needs the infrastructure (the disabled or absent parts are skipped).
    depends_on = tuple(ports.INFRA_PORTS)
    start_timeout = 90.0
    stop_grace = 10.0

    def __init__(self, ctx: Context, service: str, binary: str, port: int, instance: int = 1):
        super().__init__(ctx)
        self.service = service
        self.instance = instance
        self.name = ports.instance_name(service, instance)
        self.binary = binary
        self._port = port
        # Settings over the usual ones (`./stack chaos` routes an instance through its fault proxy).
        self.extra_env: dict[str, str] = {}
        # The notification service only follows events: an e-mail may wait, an order's path not.
        if service == "notification":
            self.niceness = BACKGROUND

    @property
    def port(self) -> int:
        return self._port

    @property
    def executable(self) -> Path:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or self.ctx.repo / "target")
        return target / self.ctx.profile / self.binary

    def installed(self) -> bool:
        return self.executable.exists()

    def install(self) -> None:
        # `up` builds the whole workspace at once; a single service is not built on its own.
        release = " --release" if self.ctx.profile == "release" else ""
        raise StackError(f"{self.name}: no binary {self.executable}: run `cargo build{release} --workspace "
                         f"--bins` (or `./stack up{release}`)")

    def command(self) -> list[str]:
        return [str(self.executable)]

    def cwd(self) -> Path:
        return self.ctx.repo

    def env(self) -> dict[str, str | None]:
        env: dict[str, str | None] = {"RUST_LOG": os.environ.get("RUST_LOG", "info"), "RUST_BACKTRACE": "1",
                                      # glibc's malloc serves librdkafka (and, but in the projectors, our
                                      # code): two arenas, not one per thread, so what a burst freed is not
                                      # spread over sixteen arenas that no trim can shrink.
                                      "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX)}
        if self.instance > 1:
            # Its own port (advertised in the service registry); the same database, topics and
            # consumer groups as the first instance.
            env["SHOP_HTTP_ADDR"] = f"127.0.0.1:{self.port}"
        if self.service == "saga-orchestrator":
            # A short step timeout locally, so the fault tests (tests/faults) see a step time out
            # within seconds; the code's default (30 s) is for real deployments.
            env["SHOP_SAGA_STEP_TIMEOUT_MS"] = os.environ.get("SHOP_SAGA_STEP_TIMEOUT_MS", str(SAGA_STEP_TIMEOUT_MS))
        if self.service == "order" and self.ctx.profile != "release":
            # Debug builds take several times longer per order: the order service's admission
            # target (2 s, for release builds) would turn orders away from a debug stack that is
            # merely slow. Still below the local step timeout.
            env["SHOP_ADMISSION_TARGET_MS"] = os.environ.get("SHOP_ADMISSION_TARGET_MS", str(DEBUG_ADMISSION_TARGET_MS))
        return env | self.extra_env

    def health(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/health")

    def urls(self) -> list[tuple[str, str]]:
        base = f"http://127.0.0.1:{self.port}"
        if self.service == "gateway":
            return [("saga dashboard (admin/admin)", f"{base}/dashboard/"), ("API", f"{base}/api/products"),
                    ("docs", f"{base}/docs/"), ("OpenAPI", f"{base}/api/openapi.json")]
        return [("", f"{base}/")]
