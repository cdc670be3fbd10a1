"""The component interface of the local stack, and the helpers components share.

A component is one local process on 127.0.0.1 (a database, a broker, a service). Each lives in its own
module under `tools/stack/components/` and exports its class as `COMPONENT`:

    class Zipkin(Component):
        name = "zipkin"                      # the key in ports.INFRA_PORTS; the port defaults from there
        ...
    COMPONENT = Zipkin

The launcher owns the process: it spawns `command()` in a new session (so pid == process group id),
sends stdout/stderr to `<data>/logs/<name>.log`, records the pid in `<data>/run/<name>.pid`, polls
`health()` until it answers (or `start_timeout` passes) and stops it by that pid (SIGTERM, then SIGKILL
after `stop_grace`). Components never fork daemons of their own and never write pid files.

Life cycle, as `./stack up` drives it, for each enabled component:
  1. `installed()` / `install()`   fetch binaries into `self.cache_dir` (shared by all data dirs);
                                   `install()` runs only when `installed()` is False; idempotent.
  2. `prepare_once()`              first-time state under `self.data_dir` (initdb, storage format);
                                   runs once per data dir: the launcher writes `<data_dir>/.prepared`
                                   after it succeeds, so a failure is retried on the next `up`.
  3. `configure()`                 before every start: render config files (cheap, idempotent).
  4. `command()`, `env()`, `cwd()`, `run_as()`   how to spawn the process.
  5. `health()`                    polled until True; must be quick, must not raise.
  6. `post_start()`                once healthy, every start: idempotent set-up that needs the process
                                   (create databases, ...).
A component waits for those named in `depends_on` to be healthy before it is started.

Guarantees other components may rely on: once `postgres` is healthy, the superuser
ports.PG_USER / ports.PG_PASSWORD exists and the databases `registry` and `ferretdb` exist.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tools.stack import ports


class StackError(Exception):
    """A failure to report to the user as is (no traceback): name the component and what to look at."""


@dataclass
class Context:
    """What every component may know about the run."""

    repo: Path  # the repository root
    data: Path  # all state: <data>/<name>/, <data>/logs/<name>.log, <data>/run/<name>.pid
    cache: Path  # downloads and builds, shared across data dirs (~/.cache/shop-stack)
    verbose: bool = False

    @property
    def profile_file(self) -> Path:
        return self.data / "run" / "build-profile"

    @property
    def profile(self) -> str:
        """The cargo profile the services run from: `release` after `./stack up --release`, else
        `debug`. Kept in the data folder, so `restart NAME` and the tests' restarts run the same
        binaries as the `up` that started the stack."""
        try:
            value = self.profile_file.read_text().strip()
        except FileNotFoundError:
            return "debug"
        return value if value in ("debug", "release") else "debug"

    def set_profile(self, profile: str) -> None:
        self.profile_file.parent.mkdir(parents=True, exist_ok=True)
        self.profile_file.write_text(profile + "\n")

    @property
    def replicas_file(self) -> Path:
        return self.data / "run" / "replicas"

    @property
    def replicas(self) -> int:
        """Instances of each replicated service (ports.REPLICATED): N after `./stack up --replicas N`,
        else 1. Kept in the data folder like the profile."""
        try:
            value = int(self.replicas_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return 1
        return min(max(value, 1), ports.MAX_REPLICAS)

    def set_replicas(self, n: int) -> None:
        self.replicas_file.parent.mkdir(parents=True, exist_ok=True)
        self.replicas_file.write_text(f"{n}\n")

    def say(self, msg: str) -> None:
        print(msg, flush=True)

    def log_path(self, name: str) -> Path:
        return self.data / "logs" / f"{name}.log"


# The `nice` of background components: on a busy machine they get about a tenth of what the
# order's path gets (Linux's CFS weights), on an idle one all they ask for. Set on the process and
# on its session (see procs.set_priority).
BACKGROUND = 10


class Component:
    # --- declaration -------------------------------------------------------------------------------
    name: str = ""
    kind: str = "infra"  # "infra" or "service": services start after all infra, stop before it
    enabled: bool = True
    disabled_note: str = "not yet enabled"  # what `status` shows for a disabled component
    depends_on: tuple[str, ...] = ()  # components that must be healthy before this one starts
    start_timeout: float = 120.0  # seconds from spawn until health() must be True
    stop_grace: float = 15.0  # seconds between the stop signal and SIGKILL
    stop_signal: int = signal.SIGTERM  # the graceful stop (postgres: SIGINT, its "fast" shutdown)
    # CPU priority (`nice`): work off an order's path (traces, e-mail, metrics) yields the CPU to the
    # order's path when the machine is busy, and takes what is left otherwise.
    niceness: int = 0

    def __init__(self, ctx: Context):
        self.ctx = ctx
        # Where the current run's output starts in the log (set by the launcher at spawn), so a health
        # check that looks for a "started" line never sees the previous run's.
        self.log_offset = 0

    @property
    def port(self) -> int:
        return ports.INFRA_PORTS[self.name]

    @property
    def data_dir(self) -> Path:
        return self.ctx.data / self.name

    @property
    def cache_dir(self) -> Path:
        return self.ctx.cache / self.name

    @property
    def log_path(self) -> Path:
        return self.ctx.log_path(self.name)

    # --- life cycle (override) ---------------------------------------------------------------------
    def installed(self) -> bool:
        return True

    def install(self) -> None:
        pass

    def prepare_once(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str | None]:
        """Changes to the launcher's environment: a value of None removes that variable."""
        return {}

    def cwd(self) -> Path:
        return self.data_dir

    def run_as(self) -> str | None:
        """A system user to run as (e.g. postgres refuses root); None = the invoking user."""
        return None

    def health(self) -> bool:
        return tcp_ok(self.port)

    def post_start(self) -> None:
        pass

    def urls(self) -> list[tuple[str, str]]:
        """(label, url) pairs for the table `up` prints."""
        return [("", f"127.0.0.1:{self.port}")]

    # --- helpers for subclasses --------------------------------------------------------------------
    def run(self, cmd: list[str], *, env: dict[str, str | None] | None = None, cwd: Path | None = None,
            user: str | None = None, timeout: float | None = None, capture: bool = False) -> str:
        """Run a one-shot command, its output appended to this component's log (or returned when
        `capture`). Raises StackError naming the component, with the output's tail, on failure."""
        return run_cmd(self.ctx, self.name, cmd, env=env, cwd=cwd, user=user, timeout=timeout,
                       capture=capture)

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    def log_since_start(self) -> str:
        """The log of the current run only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


# --- shared helpers -------------------------------------------------------------------------------
# Installs run in parallel threads; each tool with shared state takes its lock.
TOOL_LOCKS = {"apt": threading.Lock(), "mvn": threading.Lock(), "go": threading.Lock()}


def is_root() -> bool:
    return os.geteuid() == 0


def user_ids(user: str | None) -> tuple[int, int] | None:
    if user is None:
        return None
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def merged_env(changes: dict[str, str | None] | None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in (changes or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def run_cmd(ctx: Context, name: str, cmd: list[str], *, env=None, cwd=None, user=None, timeout=None,
            capture: bool = False) -> str:
    log = ctx.log_path(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    ids = user_ids(user)
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                [str(c) for c in cmd], env=merged_env(env), cwd=cwd, timeout=timeout,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if capture else out,
                stderr=subprocess.STDOUT if capture else out,
                user=ids[0] if ids else None, group=ids[1] if ids else None,
                extra_groups=[] if ids else None)
        except FileNotFoundError as e:
            raise StackError(f"{name}: command not found: {e.filename}") from None
        except subprocess.TimeoutExpired:
            raise StackError(f"{name}: `{' '.join(map(str, cmd))}` timed out after {timeout}s; "
                             f"log {log}:\n{tail(log)}") from None
        text = proc.stdout.decode("utf-8", "replace") if capture else ""
        if capture:
            out.write(proc.stdout)
    if proc.returncode != 0:
        shown = text[-3000:] if capture else tail(log)
        raise StackError(f"{name}: `{' '.join(map(str, cmd))}` failed (exit {proc.returncode}); "
                         f"log {log}:\n{shown}")
    return text


def tcp_ok(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET (no proxy), or None when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def http_ok(url: str, timeout: float = 2.0) -> bool:
    return http_status(url, timeout) == 200


def which(program: str, *extra_dirs: str | Path) -> str | None:
    for d in extra_dirs:
        candidate = Path(d) / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(program)


POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def apt_install(ctx: Context, name: str, packages: list[str]) -> None:
    """Install Debian packages (as root, or through sudo); `apt-get update` at most once per run.
    The packages' own services (a system postgres on 5432, etcd, prometheus) are kept from starting:
    they would take our ports."""
    with TOOL_LOCKS["apt"]:
        prefix = [] if is_root() else ["sudo", "-n"]
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        if not getattr(apt_install, "_updated", False):
            run_cmd(ctx, name, prefix + ["apt-get", "update", "-q"], env=env)
            apt_install._updated = True  # type: ignore[attr-defined]
        own_policy = is_root() and not POLICY_RC_D.exists()
        if own_policy:
            POLICY_RC_D.write_text("#!/bin/sh\n# written by ./stack while it installs packages\nexit 101\n")
            POLICY_RC_D.chmod(0o755)
        try:
            run_cmd(ctx, name, prefix + ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                         *packages], env=env)
        finally:
            if own_policy:
                POLICY_RC_D.unlink(missing_ok=True)


MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


def maven_copy(ctx: Context, name: str, artifact: str, dest: Path) -> None:
    """Copy one artifact `group:artifact:version[:type[:classifier]]` from Maven Central (through
    ~/.m2) into `dest`, with its original file name."""
    dest.mkdir(parents=True, exist_ok=True)
    with TOOL_LOCKS["mvn"]:
        run_cmd(ctx, name, ["mvn", "-B", "-q", f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
                            f"-Dartifact={artifact}", f"-DoutputDirectory={dest}",
                            "-Dmdep.overWriteReleases=true"], cwd=dest)


def maven_copy_dependencies(ctx: Context, name: str, pom: Path, dest: Path) -> None:
    """Resolve a pom's dependencies (transitively) into `dest`, one jar each."""
    dest.mkdir(parents=True, exist_ok=True)
    with TOOL_LOCKS["mvn"]:
        run_cmd(ctx, name, ["mvn", "-B", "-q", "-f", pom, f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
                            f"-DoutputDirectory={dest}", "-DincludeScope=runtime"], cwd=pom.parent)


def go_build(ctx: Context, name: str, args: list[str], *, cwd: Path | None = None,
             env: dict[str, str | None] | None = None) -> None:
    """Run `go <args>` (build / install) with the module proxy; one Go build at a time."""
    go = which("go", "/usr/local/go/bin")
    if go is None:
        raise StackError(f"{name}: Go toolchain not found (need `go` on PATH)")
    with TOOL_LOCKS["go"]:
        run_cmd(ctx, name, [go, *args], cwd=cwd, env={"CGO_ENABLED": "0", **(env or {})})


def java_bin(major: int | None = None) -> str:
    """`java` of the default JDK, or of an installed JDK of that major version (e.g. 25)."""
    if major is None:
        found = shutil.which("java")
    else:
        found = None
        for home in sorted(glob.glob("/usr/lib/jvm/*")):
            release = Path(home) / "release"
            with contextlib.suppress(OSError):
                if f'JAVA_VERSION="{major}' in release.read_text() and (Path(home) / "bin/java").exists():
                    found = str(Path(home) / "bin/java")
                    break
    if not found:
        raise StackError(f"no Java {major or ''} runtime found")
    return found
