"""The local stack's certificate authority and the servers' certificate, made with the openssl CLI.

`<data>/tls/` holds a CA made for this data folder (`ca.crt`, `ca.key`) and one server certificate
signed by it for `127.0.0.1` and `localhost` (`server.crt`, `server.key`; `server.pem` is the key and
the certificate in one file, the way Kafka's PEM keystore takes them). PostgreSQL and Kafka's
SASL_SSL listener present it; clients verify it with `ca.crt` (`sslrootcert=`, `ssl.ca.location=`).
Made once per data folder, kept across restarts; nothing here leaves the machine.
"""

from __future__ import annotations

import secrets
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from tools.stack.components.base import Context, StackError

DAYS_CA = 3650
DAYS_SERVER = 825  # the longest a server certificate may live for common clients
# Components are prepared in parallel threads: one makes the files, the others wait for them.
_LOCK = threading.Lock()
SERVER_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
"""


@dataclass(frozen=True)
class Files:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def cert(self) -> Path:
        return self.folder / "server.crt"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    @property
    def pem(self) -> Path:
        """Key and certificate in one file (Kafka's `ssl.keystore.type=PEM`)."""
        return self.folder / "server.pem"

    def complete(self) -> bool:
        return all(p.exists() for p in (self.ca, self.ca_key, self.cert, self.key, self.pem))


def files(ctx: Context) -> Files:
    return Files(ctx.data / "tls")


def ensure(ctx: Context) -> Files:
    """The data folder's CA and server certificate, made now if missing (about a second)."""
    with _LOCK:
        return _ensure(ctx)


def _ensure(ctx: Context) -> Files:
    out = files(ctx)
    if out.complete():
        return out
    out.folder.mkdir(parents=True, exist_ok=True)
    out.folder.chmod(0o755)  # the postgres system user reads its copy of the key from elsewhere
    ext = out.folder / "server.ext"
    ext.write_text(SERVER_EXTENSIONS)
    csr = out.folder / "server.csr"
    _openssl(ctx, "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-sha256",
             "-days", str(DAYS_CA), "-subj", "/CN=shop local stack CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(out.ca_key), "-out", str(out.ca))
    _openssl(ctx, "req", "-new", "-nodes", "-newkey", "rsa:2048", "-sha256", "-subj", "/CN=localhost",
             "-keyout", str(out.key), "-out", str(csr))
    _openssl(ctx, "x509", "-req", "-in", str(csr), "-CA", str(out.ca), "-CAkey", str(out.ca_key),
             "-set_serial", "0x" + secrets.token_hex(16), "-days", str(DAYS_SERVER), "-sha256",
             "-extfile", str(ext), "-out", str(out.cert))
    out.pem.write_text(out.key.read_text() + out.cert.read_text())
    for secret in (out.ca_key, out.key, out.pem):
        secret.chmod(0o600)
    csr.unlink()
    ext.unlink()
    ctx.say(f"tls: made a CA and a server certificate for 127.0.0.1 in {out.folder}")
    return out


def _openssl(ctx: Context, *args: str) -> None:
    try:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise StackError("tls: `openssl` not found (it makes the local stack's certificates): "
                         "install OpenSSL (Debian: apt-get install openssl)") from None
    if done.returncode != 0:
        raise StackError(f"tls: openssl {args[0]} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    if ctx.verbose and done.stderr.strip():
        print(done.stderr.strip())
