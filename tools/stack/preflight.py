"""What `./stack up` and `./stack test` need on the machine before they install or build anything.

Checked in seconds, before the first download: a missing toolchain stops the command at once with one
line naming what to install. What Debian's packages provide (protoc for the etcd client's build,
OpenSSL's headers for librdkafka's and the openssl program for the local CA,
Chromium for the browser tests, python3-venv for the test tools) is installed through apt when we run
as root or have password-less sudo; otherwise it is named the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from tools.stack.components.base import Context, StackError, apt_install, is_root, java_bin, which
from tools.stack.components.keycloak import JAVA_MAJOR as KEYCLOAK_JAVA


@dataclass(frozen=True)
class Need:
    """One program the stack needs: found on PATH (or by `find`), else installed from `debian`, else
    named in `hint`."""

    program: str
    why: str
    hint: str
    debian: tuple[str, ...] = ()


TOOLCHAINS = (
    Need("cargo", "builds the services", "Rust through rustup (https://rustup.rs)"),
    Need("go", "builds FerretDB and Mailpit", "Go 1.24 or newer"),
    Need("mvn", "fetches Kafka, the registry, Zipkin and Keycloak from Maven Central", "Maven 3",
         ("maven",)),
    Need("java", "runs Kafka, the registry and Zipkin", "a JDK 17 or newer", ("openjdk-17-jre-headless",)),
    Need("cc", "builds librdkafka (rdkafka's bundled C library)", "a C compiler and make",
         ("build-essential",)),
    Need("make", "builds librdkafka", "make", ("build-essential",)),
    Need("protoc", "compiles the etcd client's protobuf definitions", "protoc",
         ("protobuf-compiler", "libprotobuf-dev")),
    Need("libssl-dev", "builds librdkafka with TLS (it links OpenSSL)", "OpenSSL's headers and pkg-config",
         ("libssl-dev", "pkg-config")),
    Need("openssl", "makes the local stack's TLS certificates", "OpenSSL", ("openssl",)),
)

TEST_TOOLS = (
    Need("chromium", "runs the browser tests", "Chromium (or set SHOP_CHROMIUM)", ("chromium",)),
)


def can_apt() -> bool:
    if shutil.which("apt-get") is None:
        return False
    if is_root():
        return True
    return shutil.which("sudo") is not None and subprocess.run(
        ["sudo", "-n", "true"], capture_output=True).returncode == 0


def found(need: Need) -> bool:
    if need.program == "go":
        return which("go", "/usr/local/go/bin") is not None
    if need.program == "protoc" and os.environ.get("PROTOC"):
        return os.access(os.environ["PROTOC"], os.X_OK)
    if need.program == "libssl-dev":
        return shutil.which("pkg-config") is not None and subprocess.run(
            ["pkg-config", "--exists", "openssl"], capture_output=True).returncode == 0
    if need.program == "chromium" and os.environ.get("SHOP_CHROMIUM"):
        return True
    return shutil.which(need.program) is not None or (
        need.program == "chromium" and shutil.which("chromium-browser") is not None)


def venv_works() -> bool:
    """Debian's python3 makes venvs only with python3-venv (ensurepip)."""
    return subprocess.run(["python3", "-c", "import ensurepip, venv"], capture_output=True).returncode == 0


def check(ctx: Context, *, tests: bool = False, services: bool = True) -> None:
    """Install what apt can, then stop with one line per missing thing (StackError)."""
    needs = [n for n in TOOLCHAINS if services or n.program in ("mvn", "java", "go")]
    if tests:
        needs += TEST_TOOLS
    missing = [n for n in needs if not found(n)]
    packages = sorted({p for n in missing for p in n.debian})
    if tests and not venv_works():
        packages.append("python3-venv")
    if packages and can_apt():
        ctx.say(f"installing Debian packages: {' '.join(packages)} "
                f"(for {', '.join(n.program for n in missing) or 'python venvs'})")
        apt_install(ctx, "preflight", packages)
        missing = [n for n in missing if not found(n)]
    problems = [f"`{n.program}` not found ({n.why}): install {n.hint}"
                + (f" (Debian: apt-get install {' '.join(n.debian)})" if n.debian else "")
                for n in missing]
    try:
        java_bin(KEYCLOAK_JAVA)
    except StackError:
        problems.append(f"Keycloak needs Java {KEYCLOAK_JAVA}: no JDK {KEYCLOAK_JAVA} under /usr/lib/jvm "
                        f"(install one, e.g. Eclipse Temurin {KEYCLOAK_JAVA}; Debian 12 has none)")
    if tests and not venv_works():
        problems.append("python3 cannot make virtualenvs (the test tools live in one): "
                        "install python3-venv")
    if problems:
        raise StackError("missing on this machine:\n  " + "\n  ".join(problems))
