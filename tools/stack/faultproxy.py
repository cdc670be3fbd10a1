"""A network cut for one service instance, without Docker or iptables: the instance reaches every
server, and is reached by the other services, through TCP forwarders that `./stack chaos` can cut.

Each forwarder listens on 127.0.0.1:<port + ports.CUT_OFFSET> and passes bytes to 127.0.0.1:<port>.
The instance is started with its servers' addresses moved up by the offset (`instance_env`): its
database, Kafka, the MongoDB-wire server, the schema registry, etcd and SMTP; and it advertises its
own HTTP port moved up the same way, so the calls of others come through a forwarder too. Kafka
answers a client with the addresses of the listener it reached: the broker's `CUT` listener
(ports.KAFKA_CUT_PORT) advertises the forwarder's port, so the instance never learns a direct one.
Only its traces (Zipkin) go around the forwarders.

`cut()` is a partition: nothing passes either way, open connections hang, new ones are accepted and
held. `heal()` resets every connection that lived through the cut (as TCP keepalives or timeouts
would have) and lets new ones through.
"""

from __future__ import annotations

import asyncio
import threading

from tools.stack import ports

# The servers a cut instance reaches through the forwarders: name -> port.
SERVERS = {
    "postgres": ports.INFRA_PORTS["postgres"],
    "kafka": ports.KAFKA_CUT_PORT,
    "mongo": ports.INFRA_PORTS["mongo"],
    "registry": ports.INFRA_PORTS["registry"],
    "etcd": ports.INFRA_PORTS["etcd"],
    "mailpit_smtp": ports.MAILPIT_SMTP_PORT,
}
CHUNK = 64 * 1024


def behind(port: int) -> int:
    return port + ports.CUT_OFFSET


def instance_env(service: str, port: int) -> dict[str, str]:
    """The settings that route an instance of `service` (HTTP on `port`) through the forwarders."""
    database = ports.SERVICE_DATABASES.get(service, f"shop_{service}")
    pg = behind(SERVERS["postgres"])
    return {
        "SHOP_DATABASE_URL": f"postgres://{ports.PG_USER}:{ports.PG_PASSWORD}@127.0.0.1:{pg}/{database}?sslmode=disable",
        "SHOP_KAFKA_BROKERS": f"127.0.0.1:{behind(SERVERS['kafka'])}",
        "SHOP_MONGODB_URL": f"mongodb://127.0.0.1:{behind(SERVERS['mongo'])}/?directConnection=true&retryWrites=false",
        "SHOP_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{behind(SERVERS['registry'])}/apis/ccompat/v7",
        "SHOP_ETCD_URL": f"http://127.0.0.1:{behind(SERVERS['etcd'])}",
        "SHOP_SMTP_ADDR": f"127.0.0.1:{behind(SERVERS['mailpit_smtp'])}",
        "SHOP_ADVERTISE_URL": f"http://127.0.0.1:{behind(port)}",
    }


class Forwarders:
    """The forwarders of one instance, on an event loop of their own (a daemon thread)."""

    def __init__(self, targets: list[int]):
        self.targets = targets
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.open: asyncio.Event | None = None
        self.conns: set[asyncio.StreamWriter] = set()
        self.servers: list[asyncio.base_events.Server] = []
        self.counts = {"connections": 0, "reset_by_heal": 0}

    # --- control, from any thread ---------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._run, name="faultproxy", daemon=True).start()
        self.started.wait(10)
        if self.error:
            raise OSError(f"fault proxy: {self.error}")

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self.loop).result(5)

    def heal(self) -> None:
        asyncio.run_coroutine_threadsafe(self._heal(), self.loop).result(5)

    def stop(self) -> None:
        """Close every listener and connection and end every task, then the loop: nothing is left
        pending for the interpreter to complain about at exit."""
        if self.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(5)
            except Exception:  # noqa: BLE001 - stopping regardless
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)

    # --- the loop -----------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._listen())
        except BaseException as e:  # noqa: BLE001 - reported to start()
            self.error = e
            self.started.set()
            return
        self.started.set()
        self.loop.run_forever()

    async def _listen(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        for target in self.targets:
            self.servers.append(await asyncio.start_server(
                lambda r, w, t=target: self._serve(r, w, t), "127.0.0.1", behind(target), reuse_address=True))

    async def _close(self) -> None:
        for server in self.servers:
            server.close()
        for w in list(self.conns):
            w.transport.abort()
        self.conns.clear()
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _cut(self) -> None:
        self.open.clear()

    async def _heal(self) -> None:
        for w in list(self.conns):
            w.transport.abort()
            self.counts["reset_by_heal"] += 1
        self.conns.clear()
        self.open.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: int) -> None:
        self.counts["connections"] += 1
        self.conns.add(writer)
        try:
            await self.open.wait()  # accepted during a cut: held until the heal resets it
            if writer.transport.is_closing():
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            writer.transport.abort()
            self.conns.discard(writer)
            return
        self.conns.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.conns.discard(writer)
        self.conns.discard(up_writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                if not self.open.is_set():
                    await self.open.wait()
                    if writer.transport.is_closing():
                        return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if self.open.is_set():
                writer.close()
            else:
                writer.transport.abort()
