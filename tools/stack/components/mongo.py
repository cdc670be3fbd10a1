"""FerretDB v1 as the MongoDB wire server, on our PostgreSQL (database `ferretdb`).

`go install .../cmd/ferretdb` builds a binary that panics at start (the module archive lacks its
generated version file), so tools/stack/ferretdb/ is a small program of ours that embeds the public
`ferretdb` package; it is built once into the cache.

Patches are applied to a copy of the module before the build ([`patch_module`]): FerretDB
v1's PostgreSQL backend turns `{_id: X}` into `_jsonb->'_id' @> X`, which the unique btree index
on `_jsonb->'_id'` cannot serve, so every lookup, update and upsert by id scanned the whole
table (19 ms per lookup at 16 000 documents, growing with the collection); and it does not push
`{_id: {$in: [...]}}` down at all, so a lookup of several documents by id (the order service's
long-polls ask for all the orders they wait for at once) read the whole collection. The patched
filters are the equality and the `IN` list the index serves; FerretDB still checks every
fetched document against the full filter, so results are unchanged. The third: writing one
document (an update, or an insert of one batch) was one statement wrapped in BEGIN and COMMIT,
three round trips to PostgreSQL where one does the same, as one statement is atomic by itself;
the projectors write about ten documents per order this way. The fourth turns off the lifetime
tracking of iterators (see `RESOURCE_GO`), a leak detector for FerretDB's own tests that cost an
eighth of its CPU in stack walks alone. Real MongoDB (compose/) needs none of this.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import struct
from pathlib import Path

from tools.stack import ports, tls
from tools.stack.components.base import Component, StackError, go_build, run_cmd, which

SOURCES = ("go.mod", "go.sum", "main.go")
MODULE = "github.com/FerretDB/FerretDB"
MODULE_VERSION = "v1.24.2"
QUERY_GO = "internal/backends/postgresql/query.go"
# The string-valued case of filterEqual (query.go): `_jsonb->'_id' @> X` becomes `_jsonb->'_id' = X`.
PATCH_ANCHOR = """\tcase string, types.ObjectID, time.Time:
\t\t// merge with the case below?
\t\t// TODO https://github.com/FerretDB/FerretDB/issues/3626

\t\t// don't change the default eq query
"""
PATCH_INSERT = """\t\t// shop stack: `_id` equality as `=`, which the unique btree index on `_jsonb->'_id'` serves
\t\t// (`@>` cannot use it and scanned the table); documents are still matched in full afterwards.
\t\tif key, ok := k.(string); ok && key == "_id" && operator == "->" {
\t\t\tif _, isTime := v.(time.Time); !isTime {
\t\t\t\tfilter = fmt.Sprintf(`%s->'_id' = %s`, metadata.DefaultColumn, p.Next())
\t\t\t\targs = append(args, string(must.NotFail(sjson.MarshalSingleValue(v))))
\t\t\t\tbreak
\t\t\t}
\t\t}

"""


# The operators of a field's sub-document (prepareWhereClause): `_id: {$in: [strings]}` becomes
# `_jsonb->'_id' IN (...)`; any other `$in` is still left to FerretDB's own filtering.
IN_ANCHOR = """				default:
					// $gt and $lt
"""
IN_INSERT = """				case "$in":
					// shop stack: `_id` in a list of strings as an `IN` list the unique index serves
					// (FerretDB pushed no `$in` down and read the whole table); matched in full afterwards.
					if k, ok := key.(string); !ok || k != "_id" || keyOperator != "->" {
						continue
					}
					list, ok := v.(*types.Array)
					if !ok || list.Len() == 0 || list.Len() > 1000 {
						continue
					}
					ids := make([]string, 0, list.Len())
					for i := 0; i < list.Len(); i++ {
						if id, isString := must.NotFail(list.Get(i)).(string); isString {
							ids = append(ids, id)
						}
					}
					if len(ids) != list.Len() {
						continue
					}
					places := make([]string, len(ids))
					for i, id := range ids {
						places[i] = p.Next()
						args = append(args, string(must.NotFail(sjson.MarshalSingleValue(id))))
					}
					filters = append(filters, fmt.Sprintf(`%s->'_id' IN (%s)`, metadata.DefaultColumn, strings.Join(places, ", ")))

"""
# One document written in one statement, without BEGIN/COMMIT (collection.go: UpdateAll, InsertAll).
UPDATE_ANCHOR = """	err = pool.InTransaction(ctx, p, func(tx pgx.Tx) error {
		for _, doc := range params.Docs {
"""
UPDATE_INSERT = """	// shop stack: one document is one UPDATE, atomic by itself: no BEGIN/COMMIT round trips.
	if len(params.Docs) == 1 {
		doc := params.Docs[0]
		b, err := sjson.Marshal(doc)
		if err != nil {
			return nil, lazyerrors.Error(err)
		}
		id, _ := doc.Get("_id")
		must.NotBeZero(id)
		tag, err := p.Exec(ctx, q, b, must.NotFail(sjson.MarshalSingleValue(id)))
		if err != nil {
			return nil, lazyerrors.Error(err)
		}
		res.Updated = int32(tag.RowsAffected())
		return &res, nil
	}

"""
INSERT_ANCHOR = """	err = pool.InTransaction(ctx, p, func(tx pgx.Tx) error {
		batchSize := c.r.BatchSize
"""
INSERT_INSERT = """	// shop stack: documents that fit one INSERT go in that statement alone, atomic by itself.
	if batchSize := c.r.BatchSize; batchSize >= 1 && len(params.Docs) <= batchSize {
		q, args, err := prepareInsertStatement(c.dbName, meta.TableName, meta.Capped(), params.Docs)
		if err != nil {
			return nil, lazyerrors.Error(err)
		}
		if _, err = p.Exec(ctx, q, args...); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation {
				return nil, backends.NewError(backends.ErrorCodeInsertDuplicateID, err)
			}
			return nil, lazyerrors.Error(err)
		}
		return new(backends.InsertAllResult), nil
	}

"""
COLLECTION_GO = "internal/backends/postgresql/collection.go"
# Lifetime tracking of iterators, cursors and connections (resource.go) is a leak detector for
# FerretDB's own tests: every tracked object adds its stack to a pprof profile (a stack walk and a
# locked map) and gets a finalizer that panics if it was never closed. Every document iteration is
# tracked: at 100 orders/s an eighth of FerretDB's CPU went to those stack walks, and more to the
# collector's finalizer work. Debug builds keep it; ours skip it, which only drops the deliberate
# panic.
RESOURCE_GO = "internal/util/resource/resource.go"
TRACK_ANCHOR = """func Track(obj any, token *Token) {
\tcheckArgs(obj, token)
"""
UNTRACK_ANCHOR = """func Untrack(obj any, token *Token) {
\tcheckArgs(obj, token)
"""
UNTRACKED = """
\t// shop stack: lifetime tracking is for debug builds (FerretDB's tests) only.
\tif !debugbuild.Enabled {
\t\treturn
\t}
"""
# (what, file, anchor, what replaces it)
PATCHES = (("_id equality", QUERY_GO, PATCH_ANCHOR, PATCH_ANCHOR + PATCH_INSERT),
           ("_id $in", QUERY_GO, IN_ANCHOR, IN_INSERT + IN_ANCHOR),
           ("one-document update", COLLECTION_GO, UPDATE_ANCHOR, UPDATE_INSERT + UPDATE_ANCHOR),
           ("one-statement insert", COLLECTION_GO, INSERT_ANCHOR, INSERT_INSERT + INSERT_ANCHOR),
           ("tracking off (Track)", RESOURCE_GO, TRACK_ANCHOR, TRACK_ANCHOR + UNTRACKED),
           ("tracking off (Untrack)", RESOURCE_GO, UNTRACK_ANCHOR, UNTRACK_ANCHOR + UNTRACKED))


def patch_module(module_dir: Path) -> None:
    """Apply the patches above to a writable copy of the FerretDB module."""
    for what, name, anchor, replacement in PATCHES:
        path = module_dir / name
        text = path.read_text()
        if text.count(anchor) != 1:
            raise StackError(f"mongo: {name} of FerretDB {MODULE_VERSION} does not look as expected; "
                             f"the {what} patch does not apply")
        path.write_text(text.replace(anchor, replacement))


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
        for _, _, _, replacement in PATCHES:
            digest.update(replacement.encode())
        return self.cache_dir / f"ferretdb-{digest.hexdigest()[:12]}"

    def installed(self) -> bool:
        return self.binary.exists()

    def install(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # The module from the proxy, copied (the module cache is read-only) and patched.
        go = which("go", "/usr/local/go/bin") or "go"
        out = run_cmd(self.ctx, self.name, [go, "mod", "download", "-json", f"{MODULE}@{MODULE_VERSION}"],
                      cwd=self.source_dir, capture=True)
        info = json.loads(out[out.index("{"):out.rindex("}") + 1])
        patched = self.cache_dir / f"FerretDB-{MODULE_VERSION}-patched"
        shutil.rmtree(patched, ignore_errors=True)
        shutil.copytree(info["Dir"], patched)
        for root, dirs, files in os.walk(patched):
            for name in dirs + files:
                path = Path(root) / name
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
        patch_module(patched)
        # Build against the copy: a go.mod (and go.sum) of our own that replaces the module.
        modfile = self.cache_dir / "ferretdb-build.mod"
        modfile.write_text((self.source_dir / "go.mod").read_text() + f"\nreplace {MODULE} => {patched}\n")
        shutil.copyfile(self.source_dir / "go.sum", modfile.with_suffix(".sum"))
        partial = self.binary.with_suffix(".partial")
        go_build(self.ctx, self.name, ["build", f"-modfile={modfile}", "-trimpath", "-o", str(partial), "."],
                 cwd=self.source_dir)
        partial.rename(self.binary)

    def command(self) -> list[str]:
        return [str(self.binary)]

    def configure(self) -> None:
        tls.ensure(self.ctx)

    def env(self) -> dict[str, str | None]:
        pg_port = ports.INFRA_PORTS["postgres"]
        certs = tls.files(self.ctx)
        return {
            "FERRETDB_LISTEN_ADDR": f"127.0.0.1:{self.port}",
            # the same server over TLS with the data folder's certificate, for the TLS tests
            "FERRETDB_LISTEN_TLS": f"127.0.0.1:{ports.MONGO_TLS_PORT}",
            "FERRETDB_LISTEN_TLS_CERT_FILE": str(certs.cert),
            "FERRETDB_LISTEN_TLS_KEY_FILE": str(certs.key),
            "FERRETDB_HANDLER": "postgresql",
            # The heap is small (tens of MB) and churns with every document: collecting at three
            # times the live heap rather than twice halves the collections for a few MB more.
            "GOGC": "200",
            "FERRETDB_POSTGRESQL_URL":
                f"postgres://{ports.PG_USER}:{ports.PG_PASSWORD}@127.0.0.1:{pg_port}/ferretdb?sslmode=disable",
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
