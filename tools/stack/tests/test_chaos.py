"""Replicas' names and ports, and the chaos soak's plans (no processes)."""

from __future__ import annotations

import random
import tempfile
import unittest
from pathlib import Path

from tools.stack import chaos, ports
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
        plan = chaos.schedule(random.Random(7), 1200, instances, 30, servers=True, stop=True)
        kinds = [a.kind for a in plan]
        self.assertEqual(kinds.count("kill"), kinds.count("start"))
        self.assertGreaterEqual(kinds.count("kill"), 1200 // 30 - 1)
        self.assertEqual(kinds.count("stop"), 1)
        self.assertEqual(kinds.count("resume"), 1)
        self.assertEqual(sorted(a.target for a in plan if a.kind == "restart"), sorted(chaos.SERVERS))
        self.assertEqual(plan, sorted(plan))
        self.assertTrue(all(a.at < 1200 for a in plan))
        stop = next(a for a in plan if a.kind == "stop")
        resume = next(a for a in plan if a.kind == "resume")
        self.assertGreater(resume.at - stop.at, chaos.SESSION_TIMEOUT_S)
        # The same seed draws the same plan.
        self.assertEqual(plan, chaos.schedule(random.Random(7), 1200, instances, 30, servers=True, stop=True))

    def test_the_ci_form_kills_one_instance_of_each_service_once(self):
        plan = chaos.ci_schedule(chaos.CI_DURATION_S)
        kills = [a for a in plan if a.kind == "kill"]
        self.assertEqual(sorted(ports.replica_of(a.target)[0] if ports.replica_of(a.target) else a.target
                                for a in kills), sorted(chaos.CI_KILLS))
        self.assertTrue(any(ports.replica_of(a.target) for a in kills), "second instances are killed too")
        self.assertTrue(all(a.at < chaos.CI_DURATION_S - 10 for a in plan))


if __name__ == "__main__":
    unittest.main()
