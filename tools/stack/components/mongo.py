"""FerretDB v1 as the MongoDB wire server, on our PostgreSQL (database `ferretdb`).

`go install .../cmd/ferretdb` builds a binary that panics at start (the module archive lacks its
generated version file), so tools/stack/ferretdb/ is a small program of ours that embeds the public
`ferretdb` package; it is built once into the cache.
"""

from __future__ import annotations

import hashlib
import socket
import struct
from pathlib import Path

from tools.stack import ports
from tools.stack.components.base import Component, go_build

SOURCES = ("go.mod", "go.sum", "main.go")


class Mongo(Component):
    name = "mongo"
    depends_on = ("postgres",)
    start_timeout = 60.0

    @property
    def source_dir(self) -> Path:
        return self.ctx.repo / "tools/stack/ferretdb"

    @property
    def binary(self) -> Path:
        digest = hashlib.sha256()
        for name in SOURCES:
            digest.update((self.source_dir / name).read_bytes())
        return self.cache_dir / f"ferretdb-{digest.hexdigest()[:12]}"

    def installed(self) -> bool:
        return self.binary.exists()

    def install(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = self.binary.with_suffix(".partial")
        go_build(self.ctx, self.name, ["build", "-trimpath", "-o", str(partial), "."], cwd=self.source_dir)
        partial.rename(self.binary)

    def command(self) -> list[str]:
        return [str(self.binary)]

    def env(self) -> dict[str, str | None]:
        pg_port = ports.INFRA_PORTS["postgres"]
        return {
            "FERRETDB_LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "FERRETDB_HANDLER": "postgresql",
            "FERRETDB_POSTGRESQL_URL":
                f"postgres://{ports.PG_USER}:{ports.PG_PASSWORD}@127.0.0.1:{pg_port}/ferretdb",
        }

    def health(self) -> bool:
        return wire_ping(self.port)

    def urls(self) -> list[tuple[str, str]]:
        return [("", f"mongodb://127.0.0.1:{self.port}/?directConnection=true&retryWrites=false")]


# --- a MongoDB `ping` over OP_MSG, stdlib only ---------------------------------------------------
OP_MSG = 2013


def bson_ping() -> bytes:
    elements = (b"\x10ping\x00" + struct.pack("<i", 1)
                + b"\x02$db\x00" + struct.pack("<i", 6) + b"admin\x00")
    return struct.pack("<i", 4 + len(elements) + 1) + elements + b"\x00"


def op_msg(document: bytes, request_id: int = 1) -> bytes:
    body = struct.pack("<I", 0) + b"\x00" + document
    return struct.pack("<iiii", 16 + len(body), request_id, 0, OP_MSG) + body


def reply_ok(reply: bytes) -> bool:
    """Whether an OP_MSG reply's body document has ok == 1 (double or int32)."""
    if len(reply) < 21 or struct.unpack_from("<i", reply, 12)[0] != OP_MSG or reply[20] != 0:
        return False
    doc = reply[21:]
    pos, end = 4, struct.unpack_from("<i", doc, 0)[0] - 1
    while pos < end:
        kind = doc[pos]
        name_end = doc.index(b"\x00", pos + 1)
        name = doc[pos + 1:name_end]
        pos = name_end + 1
        if name == b"ok":
            if kind == 0x01:
                return struct.unpack_from("<d", doc, pos)[0] == 1.0
            if kind == 0x10:
                return struct.unpack_from("<i", doc, pos)[0] == 1
            return False
        size = {0x01: 8, 0x08: 1, 0x09: 8, 0x10: 4, 0x11: 8, 0x12: 8, 0x0A: 0}.get(kind)
        if kind in (0x02, 0x0D, 0x0E):
            size = 4 + struct.unpack_from("<i", doc, pos)[0]
        elif kind in (0x03, 0x04):
            size = struct.unpack_from("<i", doc, pos)[0]
        if size is None:
            return False  # a type we do not walk over; a ping reply has none before `ok`
        pos += size
    return False


def wire_ping(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(op_msg(bson_ping()))
            reply = _recv_exact(sock, 4)
            reply += _recv_exact(sock, struct.unpack("<i", reply)[0] - 4)
            return reply_ok(reply)
    except (OSError, ValueError, struct.error):
        return False


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ValueError("connection closed")
        data += chunk
    return data


COMPONENT = Mongo
