"""PostgreSQL 15 from Debian: a cluster of our own under <data>/postgres, TCP on loopback only.

TLS is on with the data folder's certificate (tools/stack/tls.py). Our `pg_hba.conf` lets the
superuser in with or without TLS and `ports.PG_TLS_USER` only over TLS, so a client can be shown
to verify the server (`sslmode=verify-full`) and a plain-text login of that user to be refused.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tools.stack import ports, tls
from tools.stack.components.base import Component, StackError, apt_install, is_root, user_ids

BIN = Path("/usr/lib/postgresql/15/bin")
# Databases other components expect once postgres is healthy (services create their own).
DATABASES = ("registry", "ferretdb")
HBA = f"""\
# written by the launcher at every start (tools/stack/components/postgres.py)
# TYPE    DATABASE  USER  ADDRESS  METHOD
hostnossl all  {ports.PG_TLS_USER}  all  reject
hostssl   all  {ports.PG_TLS_USER}  all  scram-sha-256
host      all  all  127.0.0.1/32  scram-sha-256
"""


class Postgres(Component):
    name = "postgres"
    start_timeout = 60.0
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM would wait for every client to leave

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def installed(self) -> bool:
        return (BIN / "postgres").exists()

    def install(self) -> None:
        apt_install(self.ctx, self.name, ["postgresql-15"])

    def run_as(self) -> str | None:
        # postgres refuses to run as root: run it as the package's system user.
        return "postgres" if is_root() else None

    def prepare_once(self) -> None:
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-done initdb from an earlier failed attempt
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.data_dir)
        self._check_reachable()
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir, delete=False) as pw:
            pw.write(ports.PG_PASSWORD + "\n")
        try:
            self._own(Path(pw.name))
            self.run([BIN / "initdb", "-D", self.pgdata, "-U", ports.PG_USER, f"--pwfile={pw.name}",
                      "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                      "--encoding=UTF8", "--locale=C.UTF-8"], user=self.run_as())
        finally:
            os.unlink(pw.name)

    @property
    def server_key(self) -> Path:
        """The postgres user's own copy of the server key (it must own a key it is not to share)."""
        return self.data_dir / "server.key"

    @property
    def hba_file(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    def configure(self) -> None:
        certs = tls.ensure(self.ctx)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.hba_file.write_text(HBA)
        self.server_key.write_bytes(certs.key.read_bytes())
        self.server_key.chmod(0o600)
        for path in (self.hba_file, self.server_key):
            self._own(path)

    def command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",  # TCP only: no socket dir to own, no path-length limit
            # Each service instance holds up to 18 sessions (a pool of 16, the relay's lock, the
            # saga orchestrator's listener): `./stack up --replicas 4` needs about 450 with
            # FerretDB's and the registry's.
            "max_connections": "500",
            "shared_buffers": "128MB",
            "password_encryption": "scram-sha-256",
            "logging_collector": "off",  # log to stderr, which the launcher keeps
            "hba_file": str(self.hba_file),
            "ssl": "on",
            "ssl_cert_file": str(tls.files(self.ctx).cert),
            "ssl_key_file": str(self.server_key),
        }
        # Statement statistics for whoever measures (`CREATE EXTENSION pg_stat_statements` in a
        # database, then query the view); the server ships the module.
        if (BIN.parent / "lib" / "pg_stat_statements.so").exists():
            settings["shared_preload_libraries"] = "pg_stat_statements"
        cmd = [str(BIN / "postgres"), "-D", str(self.pgdata)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        return cmd

    def health(self) -> bool:
        try:
            return subprocess.run([BIN / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                                  timeout=5, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def post_start(self) -> None:
        for db in DATABASES:
            if not self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'").strip():
                self.run([BIN / "createdb", *self._conn_args(), db], env=self._pg_env())
        if not self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ports.PG_TLS_USER}'").strip():
            self.psql(f"CREATE ROLE {ports.PG_TLS_USER} LOGIN CREATEDB PASSWORD '{ports.PG_TLS_PASSWORD}'")

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self.run([BIN / "psql", *self._conn_args(), "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1",
                         "-c", sql], env=self._pg_env(), capture=True)

    def urls(self) -> list[tuple[str, str]]:
        return [("", f"postgres://{ports.PG_USER}:{ports.PG_PASSWORD}@127.0.0.1:{self.port}/"),
                ("tls only", f"postgres://{ports.PG_TLS_USER}:{ports.PG_TLS_PASSWORD}@127.0.0.1:{self.port}/"
                             f"postgres?sslmode=verify-full&sslrootcert={tls.files(self.ctx).ca}")]

    def _conn_args(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", ports.PG_USER]

    @staticmethod
    def _pg_env() -> dict[str, str | None]:
        return {"PGPASSWORD": ports.PG_PASSWORD, "PGCONNECT_TIMEOUT": "5"}

    def _own(self, path: Path) -> None:
        ids = user_ids(self.run_as())
        if ids:
            os.chown(path, *ids)

    def _check_reachable(self) -> None:
        """The postgres user must be able to reach the data folder (e.g. not under a 0700 home)."""
        user = self.run_as()
        if user is None:
            return
        uid, gid = user_ids(user)
        ok = subprocess.run(["test", "-w", str(self.data_dir)], user=uid, group=gid,
                            extra_groups=[]).returncode == 0
        if not ok:
            raise StackError(f"postgres: the system user `{user}` cannot write {self.data_dir}; "
                             "choose a data folder whose parents it can enter (--data DIR)")


COMPONENT = Postgres
