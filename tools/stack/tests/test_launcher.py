"""The launcher's own logic: config rendering, pid records, process control, start order, demo data.

The last test drives the Launcher end to end over a throwaway component (Python's http.server on a
free port) in a temporary data folder: up, status, restart, down, and a process that dies."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import unittest
from pathlib import Path

from tools.stack import demo, ports, procs
from tools.stack.components.base import Component, Context, StackError, http_ok
from tools.stack.components.kafka import new_cluster_id, render_server_properties
from tools.stack.components.mongo import bson_ping, op_msg, reply_ok
from tools.stack.components.prometheus import render_config
from tools.stack.launcher import Launcher, stop_layers


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


class KafkaConfigTest(unittest.TestCase):
    def test_single_node_kraft(self):
        props = properties(render_server_properties(9092, 9093, Path("/data/kafka/logs"),
                                                    Path("/data/tls/server.pem")))
        self.assertEqual(props["process.roles"], "broker,controller")
        self.assertEqual(props["controller.quorum.bootstrap.servers"], "127.0.0.1:9093")
        self.assertNotIn("controller.quorum.voters", props)  # refused together with --standalone
        self.assertEqual(props["listeners"],
                         "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,SASL_SSL://127.0.0.1:9094,"
                         "CUT://127.0.0.1:9095")
        self.assertTrue(props["advertised.listeners"].endswith(",CUT://127.0.0.1:19095"))
        self.assertEqual(props["listener.name.sasl_ssl.sasl.enabled.mechanisms"], "SCRAM-SHA-512")
        self.assertEqual(props["listener.name.sasl_ssl.ssl.keystore.location"], "/data/tls/server.pem")
        self.assertEqual(props["auto.create.topics.enable"], "false")
        self.assertEqual(props["group.initial.rebalance.delay.ms"], "0")
        self.assertEqual(props["log.dirs"], "/data/kafka/logs")
        for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                    "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                    "share.coordinator.state.topic.min.isr"):
            self.assertEqual(props[key], "1", key)

    def test_cluster_id_is_a_base64url_uuid(self):
        cluster_id = new_cluster_id()
        self.assertEqual(len(cluster_id), 22)
        self.assertEqual(len(base64.urlsafe_b64decode(cluster_id + "==")), 16)
        self.assertNotEqual(cluster_id, new_cluster_id())
        # Never read as an option by kafka-storage (one random id in 64 would start with "-").
        self.assertFalse(any(new_cluster_id().startswith("-") for _ in range(2000)))


class PrometheusConfigTest(unittest.TestCase):
    def test_services_come_from_the_registry_through_the_gateway(self):
        text = render_config(9090)
        self.assertIn(f"'http://127.0.0.1:{ports.SERVICES['gateway'][1]}/internal/sd'", text)
        self.assertIn("'127.0.0.1:9090'", text)
        self.assertIn(f"'127.0.0.1:{ports.INFRA_PORTS['etcd']}'", text)

    def test_is_valid_yaml(self):
        try:
            import yaml
        except ImportError:
            self.skipTest("PyYAML not installed")
        config = yaml.safe_load(render_config(9090, gateway_port=18080))
        services = next(j for j in config["scrape_configs"] if j["job_name"] == "services")
        self.assertNotIn("static_configs", services)
        self.assertEqual(services["http_sd_configs"],
                         [{"url": "http://127.0.0.1:18080/internal/sd", "refresh_interval": "5s"}])
        jobs = {j["job_name"] for j in config["scrape_configs"]}
        self.assertEqual(jobs, {"services", "prometheus", "etcd"})


class MongoWireTest(unittest.TestCase):
    def test_ping_message_layout(self):
        msg = op_msg(bson_ping(), request_id=7)
        length, request_id, response_to, opcode = struct.unpack_from("<iiii", msg)
        self.assertEqual((length, request_id, response_to, opcode), (len(msg), 7, 0, 2013))
        self.assertIn(b"ping\x00", msg)
        self.assertIn(b"admin\x00", msg)

    @staticmethod
    def reply(elements: bytes) -> bytes:
        doc = struct.pack("<i", 4 + len(elements) + 1) + elements + b"\x00"
        return op_msg(doc)

    def test_reply_ok(self):
        self.assertTrue(reply_ok(self.reply(b"\x01ok\x00" + struct.pack("<d", 1.0))))
        self.assertTrue(reply_ok(self.reply(b"\x02note\x00" + struct.pack("<i", 3) + b"hi\x00"
                                            + b"\x10ok\x00" + struct.pack("<i", 1))))
        self.assertFalse(reply_ok(self.reply(b"\x01ok\x00" + struct.pack("<d", 0.0))))
        self.assertFalse(reply_ok(self.reply(b"")))
        self.assertFalse(reply_ok(b"short"))


class PidRecordTest(unittest.TestCase):
    def setUp(self):
        self.run_dir = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.run_dir)

    def test_round_trip(self):
        record = procs.PidRecord(pid=os.getpid(), start_ticks=procs.proc_stat(os.getpid()).start_ticks,
                                 log_offset=12, command=["x"], started_at=1.5)
        procs.write_record(self.run_dir, "kafka", record)
        self.assertEqual(procs.read_record(self.run_dir, "kafka"), record)
        self.assertEqual(procs.recorded_names(self.run_dir), ["kafka"])
        self.assertTrue(record.alive())
        procs.remove_record(self.run_dir, "kafka")
        self.assertIsNone(procs.read_record(self.run_dir, "kafka"))

    def test_torn_file_is_no_record(self):
        procs.record_path(self.run_dir, "etcd").write_text('{"pid": 12')
        self.assertIsNone(procs.read_record(self.run_dir, "etcd"))

    def test_members_follow_children_that_leave_the_session(self):
        # postgres' children call setsid(): they are still the component's processes
        leader = procs.spawn(["sh", "-c", "setsid sleep 60 & wait"], env=dict(os.environ), cwd=self.run_dir,
                             log_path=self.run_dir / "log")
        def detached() -> list[int]:
            # the forked child is in the leader's session until setsid() has run: wait for that
            return [p for p in procs.members(leader)
                    if p != leader.pid and (st := procs.proc_stat(p)) is not None and st.session != leader.pid]

        deadline = time.monotonic() + 5
        while not detached() and time.monotonic() < deadline:
            time.sleep(0.05)
        children = detached()
        self.assertTrue(children, "the child that called setsid() is not among the component's processes")
        child = children[0]
        procs.kill(leader)
        stat = procs.proc_stat(child)
        self.assertTrue(stat is None or not stat.live)  # gone, or a zombie waiting for init

    def test_reused_pid_is_not_ours(self):
        mine = procs.proc_stat(os.getpid())
        other = procs.PidRecord(pid=os.getpid(), start_ticks=mine.start_ticks + 1)
        self.assertFalse(other.alive())
        self.assertEqual(procs.rss_bytes(other), 0)

    def test_spawn_stop_and_kill(self):
        log = self.run_dir / "sleep.log"
        env = dict(os.environ)
        # a leader that ignores SIGTERM, with a child in its session: both must go, by SIGKILL
        stubborn = procs.spawn(["sh", "-c", "trap '' TERM; sleep 60 & wait"], env=env, cwd=self.run_dir,
                               log_path=log)
        polite = procs.spawn(["sleep", "60"], env=env, cwd=self.run_dir, log_path=log)
        time.sleep(0.2)
        self.assertTrue(stubborn.alive() and polite.alive())
        self.assertGreaterEqual(len(procs.members(stubborn)), 2)
        self.assertGreater(procs.rss_bytes(polite), 0)
        killed = procs.stop([(stubborn, signal.SIGTERM, 1.0), (polite, signal.SIGTERM, 1.0)])
        self.assertEqual(killed, [stubborn])
        self.assertFalse(stubborn.alive() or polite.alive())
        self.assertEqual(procs.members(stubborn), {})
        self.assertIn("start: sleep 60", log.read_text())


class Fake(Component):
    depends_on: tuple[str, ...] = ()

    def __init__(self, ctx, name, depends_on=()):
        super().__init__(ctx)
        self.name = name
        self.depends_on = tuple(depends_on)
        self._port = free_port()
        self.start_timeout = 15.0
        self.stop_grace = 5.0
        self.prepared = 0

    @property
    def port(self):
        return self._port

    def prepare_once(self):
        self.prepared += 1

    def command(self):
        return [sys.executable, "-m", "http.server", str(self._port), "--bind", "127.0.0.1"]

    def health(self):
        return http_ok(f"http://127.0.0.1:{self._port}/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StopOrderTest(unittest.TestCase):
    def test_dependents_stop_first(self):
        ctx = Context(repo=Path("."), data=Path("/nonexistent"), cache=Path("/nonexistent"))
        pg, mongo, registry, kafka = (Fake(ctx, "postgres"), Fake(ctx, "mongo", ["postgres"]),
                                      Fake(ctx, "registry", ["postgres"]), Fake(ctx, "kafka"))
        layers = stop_layers([kafka, pg, mongo, registry])
        self.assertEqual([[c.name for c in layer] for layer in layers],
                         [["kafka", "mongo", "registry"], ["postgres"]])


class LauncherTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.ctx = Context(repo=self.tmp, data=self.tmp / "data", cache=self.tmp / "cache")
        self.ctx.say = lambda msg: None
        self.base = Fake(self.ctx, "base")
        self.app = Fake(self.ctx, "app", ["base"])
        self.launcher = Launcher(self.ctx, [self.base, self.app])
        self.addCleanup(shutil.rmtree, self.tmp)
        self.addCleanup(self.launcher.down)

    def test_up_status_restart_down(self):
        launcher = self.launcher
        with contextlib.redirect_stdout(io.StringIO()):
            launcher.up(infra_only=True)
        self.assertEqual([launcher.health(c) for c in (self.base, self.app)], ["up", "up"])
        first = launcher.record(self.app).pid

        with contextlib.redirect_stdout(io.StringIO()):  # twice: left alone
            launcher.up(infra_only=True)
        self.assertEqual(launcher.record(self.app).pid, first)
        self.assertEqual(self.app.prepared, 1)

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            launcher.status()
        self.assertRegex(out.getvalue(), rf"app\s+{first}\s+{self.app.port}\s+up\s+\d+ MiB")
        self.assertIn("total memory (PSS", out.getvalue())

        launcher.restart("app")
        self.assertNotEqual(launcher.record(self.app).pid, first)
        self.assertEqual(launcher.health(self.app), "up")

        # a component that died is reported as dead, then started again by up
        os.kill(launcher.record(self.base).pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while launcher.health(self.base) != "dead" and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(launcher.health(self.base), "dead")
        with contextlib.redirect_stdout(io.StringIO()):
            launcher.up(infra_only=True)
        self.assertEqual(launcher.health(self.base), "up")

        pids = [launcher.record(c).pid for c in (self.base, self.app)]
        launcher.down(wipe=True)
        self.assertFalse(any(procs.proc_stat(p) for p in pids))
        self.assertFalse(self.ctx.data.exists())

    def test_priority_reaches_process_and_session(self):
        self.app.niceness = 7
        with contextlib.redirect_stdout(io.StringIO()):
            self.launcher.up(infra_only=True)
        # Whether this kernel lets a session be ranked (autogroup, and a /proc that takes it): asked
        # of a process of our own, not of the components.
        probe = procs.spawn(["sleep", "30"], env=dict(os.environ), cwd=self.tmp, log_path=self.tmp / "probe.log")
        self.addCleanup(procs.kill, probe)
        sessions_ranked = procs.set_priority(probe.pid, 1)
        for c, want in ((self.base, 0), (self.app, 7)):
            pid = self.launcher.record(c).pid
            self.assertEqual(os.getpriority(os.PRIO_PROCESS, pid), want)
            if sessions_ranked:
                autogroup = Path(f"/proc/{pid}/autogroup").read_text()
                self.assertTrue(autogroup.rstrip().endswith(f"nice {want}"), autogroup)

    def test_port_taken_by_a_stranger(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", self.base.port))
            s.listen()
            with self.assertRaisesRegex(StackError, "already taken"):
                self.launcher.start_all([self.base])

    def test_start_failure_names_component_and_log(self):
        self.base.command = lambda: [sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"]
        with self.assertRaises(StackError) as caught:
            self.launcher.start_all([self.base])
        self.assertIn("base exited during start-up (exit 3)", str(caught.exception))
        self.assertIn("boom: bad config", str(caught.exception))

    def test_wipe_refuses_foreign_folder(self):
        self.ctx.data.mkdir(parents=True)
        (self.ctx.data / "precious.txt").write_text("keep me")
        with self.assertRaisesRegex(StackError, "not wiping"):
            self.launcher.wipe()


class DemoDataTest(unittest.TestCase):
    def test_only_missing_entries(self):
        existing = [{"id": "1", "email": "ALICE@example.com"}]
        profiles = [profile for _user, profile in demo.CUSTOMERS]
        self.assertEqual([c["email"] for c in demo.missing(profiles, existing, "email")], ["bob@example.com"])
        self.assertEqual(demo.missing(demo.PRODUCTS, demo.PRODUCTS, "sku"), [])

    def test_each_profile_belongs_to_a_dev_user(self):
        self.assertEqual([user for user, _ in demo.CUSTOMERS], ["alice", "bob"])
        self.assertTrue(demo.token_url().endswith("/realms/shop/protocol/openid-connect/token"))

    def test_listing_shapes(self):
        self.assertEqual(demo.items([{"sku": "a"}]), [{"sku": "a"}])
        self.assertEqual(demo.items({"items": [{"sku": "a"}]}), [{"sku": "a"}])
        self.assertEqual(demo.items(None), [])

    def test_products_follow_the_contract(self):
        for product in demo.PRODUCTS:
            self.assertEqual(set(product), {"sku", "name", "price_cents", "currency", "stock"})
            self.assertIsInstance(product["price_cents"], int)
            self.assertEqual(product["currency"], "EUR")


if __name__ == "__main__":
    unittest.main()


class TestCounts(unittest.TestCase):
    """The closing `tests: N passed, M failed` line of `./stack test` sums the runners' own lines."""

    def test_cargo_result_lines_are_summed(self):
        from tools.stack.launcher import count_cargo_results

        out = ("test result: ok. 20 passed; 0 failed; 0 ignored; 0 measured\n"
               "test result: FAILED. 3 passed; 2 failed; 0 ignored\n"
               "running 0 tests\ntest result: ok. 0 passed; 0 failed; 0 ignored\n")
        self.assertEqual(count_cargo_results(out), (23, 2))

    def test_unittest_failures_and_skips_are_not_counted_as_passed(self):
        from tools.stack.launcher import count_unittest_results

        self.assertEqual(count_unittest_results("Ran 47 tests in 5.1s\n\nOK\n"), (47, 0))
        self.assertEqual(count_unittest_results("Ran 10 tests in 1s\n\nFAILED (failures=2, errors=1, skipped=3)\n"),
                         (4, 3))


class TestLockOwner(unittest.TestCase):
    """Crash tests run by `./stack test` may restart components under its lock."""

    def test_our_own_parent_chain_is_found(self):
        from tools.stack import cli

        chain = cli.ancestors(os.getpid())
        self.assertIn(os.getppid(), chain)

    def test_only_an_ancestor_counts_as_owner(self):
        from tools.stack import cli

        old = os.environ.get(cli.LOCK_OWNER_ENV)
        try:
            os.environ[cli.LOCK_OWNER_ENV] = str(os.getppid())
            self.assertTrue(cli.lock_held_by_ancestor())
            os.environ[cli.LOCK_OWNER_ENV] = str(os.getpid() + 1_000_000)
            self.assertFalse(cli.lock_held_by_ancestor())
            os.environ[cli.LOCK_OWNER_ENV] = "not-a-pid"
            self.assertFalse(cli.lock_held_by_ancestor())
        finally:
            if old is None:
                os.environ.pop(cli.LOCK_OWNER_ENV, None)
            else:
                os.environ[cli.LOCK_OWNER_ENV] = old
