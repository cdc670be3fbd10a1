"""Replicas' names and ports, and the chaos soak's plans (no processes)."""

from __future__ import annotations

import random
import tempfile
import unittest
from pathlib import Path

from tools.stack import chaos, faultproxy, ports
from tools.stack.components import load
from tools.stack.components.base import Context


class ReplicaTest(unittest.TestCase):
    def test_second_instances_have_their_own_ports_clear_of_every_other(self):
        taken = set(ports.PORTS.values())
        seen = set()
        for instance in range(2, ports.MAX_REPLICAS + 1):
            for service in ports.REPLICATED:
                port = ports.instance_port(service, instance)
                self.assertNotIn(port, taken, f"{service} #{instance}")
                self.assertNotIn(port, seen)
                seen.add(port)
        self.assertNotIn("gateway", ports.REPLICATED)

    def test_instance_names_round_trip(self):
        self.assertEqual(ports.instance_name("order", 1), "order")
        self.assertEqual(ports.instance_name("saga-orchestrator", 2), "saga-orchestrator-2")
        self.assertEqual(ports.replica_of("saga-orchestrator-2"), ("saga-orchestrator", 2))
        self.assertIsNone(ports.replica_of("order"))
        self.assertIsNone(ports.replica_of("gateway-2"))
        self.assertIsNone(ports.replica_of("order-1"))

    def test_the_replica_count_declares_the_instances(self):
        with tempfile.TemporaryDirectory() as tmp:
            ctx = Context(repo=Path.cwd(), data=Path(tmp), cache=Path(tmp) / "cache")
            one = {c.name for c in load(ctx, warn=lambda _m: None)}
            ctx.set_replicas(2)
            two = load(ctx, warn=lambda _m: None)
            added = {c.name: c for c in two if c.name not in one}
            self.assertEqual(set(added), {f"{s}-2" for s in ports.REPLICATED})
            order2 = added["order-2"]
            self.assertEqual((order2.service, order2.instance, order2.port), ("order", 2, 9083))
            self.assertEqual(order2.env()["SHOP_HTTP_ADDR"], "127.0.0.1:9083")
            self.assertNotIn("SHOP_HTTP_ADDR", next(c for c in two if c.name == "order").env())


class ScheduleTest(unittest.TestCase):
    def test_a_soak_kills_every_interval_stops_once_and_restarts_each_server(self):
        instances = ["order", "order-2", "product", "product-2"]
        plan = chaos.schedule(random.Random(7), 1200, instances, 30, servers=True, stop=True, cut="product-2")
        kinds = [a.kind for a in plan]
        self.assertEqual(kinds.count("kill"), kinds.count("start"))
        self.assertGreaterEqual(kinds.count("kill"), 1200 // 30 - 1)
        self.assertEqual(kinds.count("stop"), 1)
        self.assertEqual(kinds.count("resume"), 1)
        cut, heal = (next(a for a in plan if a.kind == k) for k in ("cut", "heal"))
        self.assertEqual((cut.target, heal.at - cut.at), ("product-2", chaos.CUT_FOR_S))
        self.assertEqual(sorted(a.target for a in plan if a.kind == "restart"), sorted(chaos.SERVERS))
        self.assertEqual(plan, sorted(plan))
        self.assertTrue(all(a.at < 1200 for a in plan))
        stop = next(a for a in plan if a.kind == "stop")
        resume = next(a for a in plan if a.kind == "resume")
        self.assertGreater(resume.at - stop.at, chaos.SESSION_TIMEOUT_S)
        # The same seed draws the same plan.
        self.assertEqual(plan, chaos.schedule(random.Random(7), 1200, instances, 30, servers=True, stop=True,
                                              cut="product-2"))

    def test_what_undoes_a_late_fault_waits_its_planned_time_after_it(self):
        plan = [chaos.Action(10, "cut", "payment-2"), chaos.Action(40, "heal", "payment-2"),
                chaos.Action(50, "kill", "order"), chaos.Action(54, "start", "order")]
        self.assertEqual(chaos.due(plan[1], plan, {}), 40)
        self.assertEqual(chaos.due(plan[1], plan, {("cut", "payment-2"): 10.5}), 40.5)
        self.assertEqual(chaos.due(plan[1], plan, {("cut", "payment-2"): 35}), 65)
        self.assertEqual(chaos.due(plan[3], plan, {("kill", "order"): 70}), 74)
        self.assertEqual(chaos.due(plan[2], plan, {("cut", "payment-2"): 35}), 50)

    def test_the_ci_form_kills_one_instance_of_each_service_once(self):
        plan = chaos.ci_schedule(chaos.CI_DURATION_S)
        kills = [a for a in plan if a.kind == "kill"]
        self.assertEqual(sorted(ports.replica_of(a.target)[0] if ports.replica_of(a.target) else a.target
                                for a in kills), sorted(chaos.CI_KILLS))
        self.assertTrue(any(ports.replica_of(a.target) for a in kills), "second instances are killed too")
        self.assertTrue(all(a.at < chaos.CI_DURATION_S - 10 for a in plan))


if __name__ == "__main__":
    unittest.main()


class ForwardersTest(unittest.TestCase):
    """The network cut over real sockets: an echo server behind the forwarders."""

    def setUp(self):
        import socket
        import threading
        for _ in range(50):
            self.server = socket.socket()
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.server.bind(("127.0.0.1", 0))
            self.port = self.server.getsockname()[1]
            if self.port + ports.CUT_OFFSET < 65536:
                break
            self.server.close()
        self.server.listen()

        def echo(conn):
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

        def accept():
            while True:
                try:
                    conn, _ = self.server.accept()
                except OSError:
                    return
                threading.Thread(target=echo, args=(conn,), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        self.proxy = faultproxy.Forwarders([self.port])
        self.proxy.start()

    def tearDown(self):
        self.proxy.stop()
        self.server.close()

    def connect(self):
        import socket
        s = socket.create_connection(("127.0.0.1", faultproxy.behind(self.port)), timeout=2)
        s.settimeout(0.5)
        return s

    def test_bytes_pass_until_the_cut_and_the_heal_resets_what_lived_through_it(self):
        import socket
        old = self.connect()
        old.sendall(b"ping")
        self.assertEqual(old.recv(16), b"ping")
        self.proxy.cut()
        old.sendall(b"lost")
        with self.assertRaises(socket.timeout):
            old.recv(16)
        held = self.connect()  # accepted, but nothing passes
        held.sendall(b"held")
        with self.assertRaises(socket.timeout):
            held.recv(16)
        self.proxy.heal()
        for s in (old, held):
            try:
                self.assertEqual(s.recv(16), b"", "reset, not answered")
            except ConnectionResetError:
                pass
        new = self.connect()
        new.sendall(b"again")
        self.assertEqual(new.recv(16), b"again")
        for s in (old, held, new):
            s.close()

    def test_a_stop_closes_listeners_and_connections_and_leaves_no_task(self):
        import asyncio
        open_conn = self.connect()
        open_conn.sendall(b"ping")
        self.assertEqual(open_conn.recv(16), b"ping")
        self.proxy.stop()
        try:
            self.assertEqual(open_conn.recv(16), b"", "closed by the stop")
        except ConnectionResetError:
            pass
        open_conn.close()
        with self.assertRaises(ConnectionRefusedError):
            self.connect()
        for _ in range(50):  # the loop's thread ends its last callbacks
            if not self.proxy.loop.is_running():
                break
            import time
            time.sleep(0.02)
        self.assertEqual([t for t in asyncio.all_tasks(self.proxy.loop) if not t.done()], [])

    def test_a_cut_instance_reaches_every_server_through_the_forwarders(self):
        env = faultproxy.instance_env("payment", ports.instance_port("payment", 2))
        self.assertIn(f"127.0.0.1:{ports.INFRA_PORTS['postgres'] + ports.CUT_OFFSET}/shop_payment",
                      env["SHOP_DATABASE_URL"])
        self.assertEqual(env["SHOP_KAFKA_BROKERS"], f"127.0.0.1:{ports.KAFKA_CUT_PORT + ports.CUT_OFFSET}")
        self.assertEqual(env["SHOP_ADVERTISE_URL"], f"http://127.0.0.1:{9084 + ports.CUT_OFFSET}")
        used = set(ports.PORTS.values())
        for port in list(faultproxy.SERVERS.values()):
            self.assertNotIn(faultproxy.behind(port), used)
