"""Schema registry: Apicurio Registry 3.x, serving the Confluent-compatible API.

Installed from Maven Central (`io.apicurio:apicurio-registry-app:<version>:tar.gz:all`, the assembly of a
Quarkus fast-jar), run as `java -jar quarkus-run.jar` on 127.0.0.1. Storage is the stack's PostgreSQL
(database `registry`, which the postgres component guarantees), so schemas survive restarts.

Clients (the Rust `schema_registry_converter`) use `http://127.0.0.1:8090/apis/ccompat/v7` as the
Confluent base URL. Ids are content ids: the same schema gets the same integer id, under any subject,
as in Confluent Schema Registry. The global compatibility defaults to BACKWARD, as Confluent's does
(Apicurio's own default is NONE).

Apicurio 3.3 is compiled for Java 21 (class files v65): it does not start on Java 17, so the newest
such release runs on the machine's newer JDK (21 or later).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tools.stack import ports
from tools.stack.components.base import Component, StackError, http_ok, java_bin, maven_copy

VERSION = "3.3.3"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all"
ARCHIVE = f"apicurio-registry-app-{VERSION}-all.tar.gz"
MIN_JAVA = 21
MAX_JAVA = 30  # highest major version looked for under /usr/lib/jvm
HEAP = "384m"
MANAGEMENT_PORT = 8091  # health and metrics; Quarkus' default 9000 clashes with other components
CCOMPAT_PATH = "/apis/ccompat/v7"
DATABASE = "registry"
# JDBC pool: Apicurio's defaults (20 initial, 100 max) are far too many for a shared local PostgreSQL
POOL_INITIAL, POOL_MIN, POOL_MAX = 1, 1, 8


def launcher_jar(home: Path) -> Path | None:
    """The jar to run in an unpacked assembly: 3.3+ has `quarkus-run.jar` at the root, 3.1.5-3.2 under
    `quarkus-app/`, 3.0-3.1.4 a `*-runner.jar` beside `lib/`. None when nothing is unpacked there."""
    for candidate in (home / "quarkus-run.jar", home / "quarkus-app" / "quarkus-run.jar"):
        if candidate.is_file():
            return candidate
    runners = sorted(home.glob("*-runner.jar")) if home.is_dir() else []
    return runners[0] if runners else None


def find_java() -> str:
    """`java` of the oldest installed JDK that can run this release (major >= MIN_JAVA)."""
    for major in range(MIN_JAVA, MAX_JAVA + 1):
        try:
            return java_bin(major)
        except StackError:
            continue
    raise StackError(f"registry: Apicurio Registry {VERSION} needs Java {MIN_JAVA} or later "
                     f"(none found under /usr/lib/jvm)")


class Registry(Component):
    name = "registry"
    depends_on = ("postgres",)
    start_timeout = 120.0

    @property
    def home(self) -> Path:
        return self.cache_dir / f"apicurio-registry-app-{VERSION}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    # --- install -----------------------------------------------------------------------------------
    def installed(self) -> bool:
        return launcher_jar(self.home) is not None

    def install(self) -> None:
        self.ctx.say(f"registry: fetching Apicurio Registry {VERSION} (~160 MB) from Maven Central")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        maven_copy(self.ctx, self.name, ARTIFACT, self.cache_dir)
        archive = self.cache_dir / ARCHIVE
        if not archive.is_file():
            raise StackError(f"registry: {ARTIFACT} did not arrive as {archive}; log {self.log_path}")
        # unpack beside, then move into place, so an interrupted unpack never looks installed
        staging = self.cache_dir / f".unpack-{VERSION}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self.run(["tar", "-xzf", archive, "-C", staging, "--no-same-owner"])
        root = staging
        if launcher_jar(root) is None:  # tolerate an assembly wrapped in one top-level folder
            children = [p for p in staging.iterdir() if p.is_dir()]
            if len(children) == 1 and launcher_jar(children[0]) is not None:
                root = children[0]
            else:
                shutil.rmtree(staging, ignore_errors=True)
                raise StackError(f"registry: no quarkus-run.jar / *-runner.jar in {archive.name}")
        shutil.rmtree(self.home, ignore_errors=True)
        root.rename(self.home)
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)  # the local Maven repository keeps a copy

    # --- run ---------------------------------------------------------------------------------------
    def configure(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        jar = launcher_jar(self.home)
        if jar is None:
            raise StackError(f"registry: not installed under {self.home}")
        return [find_java(), "-Xms32m", f"-Xmx{HEAP}", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
                "-jar", str(jar)]

    def env(self) -> dict[str, str | None]:
        pg_port = ports.INFRA_PORTS["postgres"]
        return {
            "QUARKUS_HTTP_HOST": "127.0.0.1",
            "QUARKUS_HTTP_PORT": str(self.port),
            "QUARKUS_MANAGEMENT_HOST": "127.0.0.1",
            "QUARKUS_MANAGEMENT_PORT": str(MANAGEMENT_PORT),
            "APICURIO_STORAGE_KIND": "sql",
            "APICURIO_STORAGE_SQL_KIND": "postgresql",
            "APICURIO_DATASOURCE_URL": f"jdbc:postgresql://127.0.0.1:{pg_port}/{DATABASE}?sslmode=disable",
            "APICURIO_DATASOURCE_USERNAME": ports.PG_USER,
            "APICURIO_DATASOURCE_PASSWORD": ports.PG_PASSWORD,
            "APICURIO_DATASOURCE_JDBC_INITIAL_SIZE": str(POOL_INITIAL),
            "APICURIO_DATASOURCE_JDBC_MIN_SIZE": str(POOL_MIN),
            "APICURIO_DATASOURCE_JDBC_MAX_SIZE": str(POOL_MAX),
            # Confluent Schema Registry's default; applies to subjects without their own config
            "APICURIO_RULES_GLOBAL_COMPATIBILITY": "BACKWARD",
            "APICURIO_STORAGE_SNAPSHOT_LOCATION": str(self.data_dir),
            # JVM options meant for other tools must not leak into this JVM
            "JAVA_TOOL_OPTIONS": None,
            "JDK_JAVA_OPTIONS": None,
        }

    def health(self) -> bool:
        # readiness includes the PostgreSQL check; the management port's requests are not access-logged
        return http_ok(f"http://127.0.0.1:{MANAGEMENT_PORT}/health/ready")

    def urls(self) -> list[tuple[str, str]]:
        return [("confluent API", self.base_url),
                ("health", f"http://127.0.0.1:{MANAGEMENT_PORT}/health")]


COMPONENT = Registry
