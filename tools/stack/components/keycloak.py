"""Keycloak 26.x (realm `shop`), the Quarkus distribution from Maven Central, in dev mode.

Installed from Maven Central (`org.keycloak:keycloak-quarkus-dist:<version>:tar.gz`), unpacked under the
cache, run with `bin/kc.sh start-dev` on the machine's Java 25 (kc.sh honours `JAVA`).

State: Keycloak keeps everything it writes (the dev-file H2 database, the realm import folder, the
transaction log) under `<kc.home.dir>/data`, and kc.sh points kc.home.dir at the unpacked distribution,
which all data dirs share. So the component's data dir is made a Keycloak home of its own: `lib`,
`conf`, `providers` and `themes` are symlinks into the distribution (through `lib`, Keycloak finds the
build it augmented, so a warm start does not augment again) and `data/` is real. A `-Dkc.home.dir=...`
argument to kc.sh comes after kc.sh's own and wins. The build itself (`lib/quarkus/`, written on the
first start and again only when a build option changes) stays in the shared distribution.

    <data_dir>/data/h2/keycloakdb.mv.db     the database (`--db=dev-file`)
    <data_dir>/data/import/shop-realm.json  compose/keycloak/shop-realm.json, copied before every start

`--import-realm` creates realm `shop` on the first start (an empty database); later starts skip a realm
that exists, so an edited realm file reaches only new data dirs. The hash of the file imported is kept
beside it; when the file has changed since, start-up says how to import it again.

Tokens: `--hostname` is a full URL, so every token's `iss` is exactly ISSUER whichever host name the
client used. Keycloak's own health endpoints are on the management port (KEYCLOAK_MANAGEMENT_PORT, not
Keycloak's 9000); the launcher's health check is the realm's discovery document on the main port.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from tools.stack import ports, tls
from tools.stack.components.base import Component, StackError, http_ok, java_bin, maven_copy

VERSION = "26.7.3"
ARTIFACT = f"org.keycloak:keycloak-quarkus-dist:{VERSION}:tar.gz"
ARCHIVE = f"keycloak-quarkus-dist-{VERSION}.tar.gz"
JAVA_MAJOR = 25
REALM = "shop"
REALM_FILE = Path("compose") / "keycloak" / "shop-realm.json"  # relative to the repository
ADMIN_USER = ADMIN_PASSWORD = "admin"  # the master realm's bootstrap admin (dev only)
HEAP = "-Xms128m -Xmx512m"
MANAGEMENT_PORT = ports.KEYCLOAK_MANAGEMENT_PORT
BASE_URL = f"http://127.0.0.1:{ports.INFRA_PORTS['keycloak']}"
ISSUER = f"{BASE_URL}/realms/{REALM}"
# Parts of the distribution a data dir's Keycloak home links to; its `data/` is its own.
SHARED_DIRS = ("lib", "conf", "providers", "themes")
IMPORT_STAMP = ".imported-sha256"  # in the import folder: the hash of the realm file last imported
# Variables kc.sh, the JVM or Keycloak read that would change this run (debug agent, heap, legacy admin).
JVM_VARIABLES = ("JAVA_OPTS", "JAVA_OPTS_APPEND", "JAVA_ADD_OPENS", "JAVA_LOCALE", "JAVA_TOOL_OPTIONS",
                 "JDK_JAVA_OPTIONS", "DEBUG", "DEBUG_PORT", "DEBUG_SUSPEND", "PRINT_ENV",
                 "KEYCLOAK_ADMIN", "KEYCLOAK_ADMIN_PASSWORD")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Keycloak(Component):
    name = "keycloak"
    # The first start augments the distribution (a Quarkus build, about a minute on two idle cores,
    # several while cargo builds); later starts take about half a minute.
    start_timeout = 600.0
    stop_grace = 30.0

    def __init__(self, ctx):
        super().__init__(ctx)
        self.fresh_database = False  # set by configure(): this start imports the realm

    # --- layout ------------------------------------------------------------------------------------
    @property
    def dist(self) -> Path:
        """The unpacked distribution (bin/kc.sh, lib/, ...)."""
        return self.cache_dir / f"keycloak-{VERSION}"

    @property
    def kc_sh(self) -> Path:
        return self.dist / "bin" / "kc.sh"

    @property
    def import_dir(self) -> Path:
        return self.data_dir / "data" / "import"

    @property
    def realm_source(self) -> Path:
        return self.ctx.repo / REALM_FILE

    @property
    def database(self) -> Path:
        return self.data_dir / "data" / "h2" / "keycloakdb.mv.db"

    # --- install -----------------------------------------------------------------------------------
    def installed(self) -> bool:
        return self.kc_sh.is_file() and (self.dist / "lib" / "quarkus-run.jar").is_file()

    def install(self) -> None:
        self.ctx.say(f"keycloak: fetching Keycloak {VERSION} (~170 MB) from Maven Central")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        maven_copy(self.ctx, self.name, ARTIFACT, self.cache_dir)
        archive = self.cache_dir / ARCHIVE
        if not archive.is_file():
            raise StackError(f"keycloak: {ARTIFACT} did not arrive as {archive}; log {self.log_path}")
        # unpack beside, then move into place, so an interrupted unpack never looks installed
        staging = self.cache_dir / f".unpack-{VERSION}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        self.run(["tar", "-xzf", archive, "-C", staging, "--no-same-owner"])
        root = staging / f"keycloak-{VERSION}"
        if not (root / "bin" / "kc.sh").is_file():
            shutil.rmtree(staging, ignore_errors=True)
            raise StackError(f"keycloak: no keycloak-{VERSION}/bin/kc.sh in {archive.name}")
        shutil.rmtree(self.dist, ignore_errors=True)
        root.rename(self.dist)
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)  # the local Maven repository keeps a copy

    # --- run ---------------------------------------------------------------------------------------
    def configure(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name in SHARED_DIRS:
            link, target = self.data_dir / name, self.dist / name
            if link.is_symlink():
                if Path(os.readlink(link)) == target:
                    continue
                link.unlink()  # another version's distribution
            elif link.exists():
                raise StackError(f"keycloak: {link} should be a link to {target}; move it away")
            link.symlink_to(target, target_is_directory=True)
        if not self.realm_source.is_file():
            raise StackError(f"keycloak: realm file {self.realm_source} is missing")
        self.import_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.realm_source, self.import_dir / self.realm_source.name)
        self.fresh_database = not self.database.exists()

    def java(self) -> str:
        return java_bin(JAVA_MAJOR)

    def command(self) -> list[str]:
        if not self.installed():
            raise StackError(f"keycloak: not installed under {self.dist}")
        certs = tls.ensure(self.ctx)
        return [str(self.kc_sh), "start-dev",
                f"-Dkc.home.dir={self.data_dir}",
                "--db=dev-file",
                "--http-host=127.0.0.1", f"--http-port={self.port}",
                f"--hostname={BASE_URL}",
                # back-channel URLs in the discovery document follow the host asked (as in compose)
                "--hostname-backchannel-dynamic=true",
                "--health-enabled=true",
                "--http-management-host=127.0.0.1", f"--http-management-port={MANAGEMENT_PORT}",
                # HTTPS too, with the data folder's certificate, for the HTTP clients' TLS test
                f"--https-port={ports.KEYCLOAK_HTTPS_PORT}",
                f"--https-certificate-file={certs.cert}", f"--https-certificate-key-file={certs.key}",
                "--import-realm"]

    def env(self) -> dict[str, str | None]:
        java = self.java()
        # Keycloak reads any KC_* variable as an option: only ours may reach it.
        changes: dict[str, str | None] = {key: None for key in os.environ if key.startswith("KC_")}
        changes.update({key: None for key in JVM_VARIABLES})
        changes.update({
            "JAVA": java,
            "JAVA_HOME": str(Path(java).resolve().parent.parent),
            "JAVA_OPTS_KC_HEAP": HEAP,
            "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USER,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
        })
        return changes

    def health(self) -> bool:
        return http_ok(f"{ISSUER}/.well-known/openid-configuration")

    def post_start(self) -> None:
        stamp = self.import_dir / IMPORT_STAMP
        current = sha256(self.realm_source)
        if self.fresh_database:
            # healthy means the import is done: remember which realm file it was
            stamp.write_text(current + "\n")
            self.fresh_database = False
        elif stamp.is_file() and stamp.read_text().strip() != current:
            self.ctx.say(f"keycloak: warning: {REALM_FILE} changed since realm {REALM} was imported; an "
                         f"existing realm is not imported again. To import it: stop keycloak, delete "
                         f"{self.database.parent} (users made by hand are lost) and start it again")

    def urls(self) -> list[tuple[str, str]]:
        return [("admin console (admin/admin)", f"{BASE_URL}/admin/master/console/"),
                ("account (alice/alice)", f"{ISSUER}/account"),
                ("issuer", ISSUER)]


COMPONENT = Keycloak
