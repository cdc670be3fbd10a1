"""The registry component's pure logic: where the jar is in each assembly layout, JDK choice, settings."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path
from unittest import mock

from tools.stack import ports
from tools.stack.components import registry
from tools.stack.components.base import Context, StackError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


class LauncherJarTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())

    def test_nothing_unpacked(self):
        self.assertIsNone(registry.launcher_jar(self.tmp / "missing"))
        self.assertIsNone(registry.launcher_jar(self.tmp))

    def test_layout_3_3_root(self):
        jar = touch(self.tmp / "quarkus-run.jar")
        touch(self.tmp / "lib" / "main" / "x.jar")
        self.assertEqual(registry.launcher_jar(self.tmp), jar)

    def test_layout_3_2_quarkus_app(self):
        jar = touch(self.tmp / "quarkus-app" / "quarkus-run.jar")
        self.assertEqual(registry.launcher_jar(self.tmp), jar)

    def test_layout_3_0_runner(self):
        jar = touch(self.tmp / "apicurio-registry-app-3.0.9-runner.jar")
        self.assertEqual(registry.launcher_jar(self.tmp), jar)


class FindJavaTest(unittest.TestCase):
    def test_picks_oldest_supported_major(self):
        def fake(major):
            if major in (25, 21):
                return f"/jdk{major}/bin/java"
            raise StackError("none")
        with mock.patch.object(registry, "java_bin", side_effect=fake):
            self.assertEqual(registry.find_java(), "/jdk21/bin/java")

    def test_java_17_only_is_an_error(self):
        def fake(major):
            raise StackError("none")
        with mock.patch.object(registry, "java_bin", side_effect=fake):
            with self.assertRaises(StackError):
                registry.find_java()


class SettingsTest(unittest.TestCase):
    def setUp(self):
        tmp = Path(tempfile.mkdtemp())
        self.comp = registry.COMPONENT(Context(repo=tmp, data=tmp / "data", cache=tmp / "cache"))

    def test_env_points_at_stack_postgres_on_loopback(self):
        env = self.comp.env()
        self.assertEqual(env["QUARKUS_HTTP_HOST"], "127.0.0.1")
        self.assertEqual(env["QUARKUS_HTTP_PORT"], str(ports.INFRA_PORTS["registry"]))
        self.assertNotEqual(env["QUARKUS_MANAGEMENT_PORT"], "9000")
        self.assertNotIn(int(env["QUARKUS_MANAGEMENT_PORT"]), ports.INFRA_PORTS.values())
        self.assertNotIn(int(env["QUARKUS_MANAGEMENT_PORT"]), [p for _, p in ports.SERVICES.values()])
        self.assertEqual(env["APICURIO_STORAGE_SQL_KIND"], "postgresql")
        self.assertEqual(env["APICURIO_DATASOURCE_URL"],
                         f"jdbc:postgresql://127.0.0.1:{ports.INFRA_PORTS['postgres']}/registry?sslmode=disable")
        self.assertEqual(env["APICURIO_DATASOURCE_USERNAME"], ports.PG_USER)
        self.assertLessEqual(int(env["APICURIO_DATASOURCE_JDBC_MAX_SIZE"]), 10)

    def test_command_caps_heap_and_runs_installed_jar(self):
        jar = touch(self.comp.home / "quarkus-run.jar")
        self.assertTrue(self.comp.installed())
        with mock.patch.object(registry, "find_java", return_value="/jdk/bin/java"):
            argv = self.comp.command()
        self.assertEqual(argv[0], "/jdk/bin/java")
        self.assertIn("-Xmx384m", argv)
        self.assertEqual(argv[-2:], ["-jar", str(jar)])

    def test_command_without_install_is_an_error(self):
        self.assertFalse(self.comp.installed())
        with self.assertRaises(StackError):
            self.comp.command()


if __name__ == "__main__":
    unittest.main()
