"""The keycloak component and the realm it imports, offline: command line, environment, the data dir's
Keycloak home, and the clients / roles / users of compose/keycloak/shop-realm.json that the gateway's
tests rely on. No network, no JVM."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import yaml

from tools.stack import ports
from tools.stack.components import keycloak
from tools.stack.components.base import Context, StackError

REPO = Path(__file__).resolve().parents[3]
REALM_FILE = REPO / "compose" / "keycloak" / "shop-realm.json"
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
ISSUER = "http://127.0.0.1:8180/realms/shop"
JDK25 = Path("/usr/lib/jvm/temurin-25-jdk-amd64")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def options(cmd: list[str]) -> dict[str, str]:
    """`--name=value` and `-Dname=value` arguments -> {name: value} (flags map to "")."""
    out = {}
    for arg in cmd:
        if arg.startswith("-"):
            name, _, value = arg.partition("=")
            out[name] = value
    return out


class ComponentTestCase(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        repo = self.tmp / "repo"
        realm = repo / "compose" / "keycloak" / "shop-realm.json"
        realm.parent.mkdir(parents=True)
        shutil.copyfile(REALM_FILE, realm)
        self.ctx = Context(repo=repo, data=self.tmp / "data", cache=self.tmp / "cache")
        self.ctx.say = mock.Mock()
        self.comp = keycloak.COMPONENT(self.ctx)

    def fake_install(self):
        touch(self.comp.dist / "bin" / "kc.sh")
        touch(self.comp.dist / "lib" / "quarkus-run.jar")
        for name in keycloak.SHARED_DIRS:
            (self.comp.dist / name).mkdir(parents=True, exist_ok=True)


class InstallTest(ComponentTestCase):
    def test_installed_needs_the_script_and_the_jar(self):
        self.assertFalse(self.comp.installed())
        touch(self.comp.dist / "bin" / "kc.sh")
        self.assertFalse(self.comp.installed())
        touch(self.comp.dist / "lib" / "quarkus-run.jar")
        self.assertTrue(self.comp.installed())

    def test_distribution_is_under_the_cache_not_the_data(self):
        self.assertEqual(self.comp.dist.parent, self.ctx.cache / "keycloak")
        self.assertIn(keycloak.VERSION, self.comp.dist.name)

    def test_artifact_is_the_quarkus_distribution(self):
        self.assertEqual(keycloak.ARTIFACT, f"org.keycloak:keycloak-quarkus-dist:{keycloak.VERSION}:tar.gz")
        self.assertTrue(keycloak.VERSION.startswith("26."))

    def test_component_is_enabled(self):
        self.assertTrue(keycloak.COMPONENT.enabled)
        self.assertGreaterEqual(keycloak.COMPONENT.start_timeout, 300)


class CommandTest(ComponentTestCase):
    def test_not_installed_is_an_error(self):
        with self.assertRaises(StackError):
            self.comp.command()

    def test_start_dev_on_loopback_with_fixed_issuer_and_realm_import(self):
        self.fake_install()
        cmd = self.comp.command()
        self.assertEqual(cmd[0], str(self.comp.dist / "bin" / "kc.sh"))
        self.assertEqual(cmd[1], "start-dev")
        opts = options(cmd)
        self.assertEqual(opts["--http-host"], "127.0.0.1")
        self.assertEqual(opts["--http-port"], str(ports.INFRA_PORTS["keycloak"]))
        self.assertEqual(opts["--hostname"], "http://127.0.0.1:8180")
        self.assertEqual(f"{opts['--hostname']}/realms/{keycloak.REALM}", ISSUER)
        self.assertIn("--import-realm", opts)
        self.assertEqual(opts["--db"], "dev-file")

    def test_state_lives_in_the_data_dir(self):
        self.fake_install()
        opts = options(self.comp.command())
        self.assertEqual(Path(opts["-Dkc.home.dir"]), self.comp.data_dir)
        self.assertTrue(self.comp.database.is_relative_to(self.comp.data_dir))
        self.assertTrue(self.comp.import_dir.is_relative_to(self.comp.data_dir))

    def test_management_port_is_moved_off_9000_to_a_free_port(self):
        self.fake_install()
        opts = options(self.comp.command())
        port = int(opts["--http-management-port"])
        self.assertEqual(port, ports.KEYCLOAK_MANAGEMENT_PORT)
        self.assertNotEqual(port, 9000)
        taken = [*ports.INFRA_PORTS.values(), *(p for _, p in ports.SERVICES.values()),
                 ports.MAILPIT_SMTP_PORT, ports.KAFKA_CONTROLLER_PORT, ports.ETCD_PEER_PORT]
        self.assertNotIn(port, taken)
        self.assertEqual(opts["--http-management-host"], "127.0.0.1")


class EnvTest(ComponentTestCase):
    def env(self, **outside):
        with mock.patch.object(keycloak, "java_bin", return_value="/opt/jdk25/bin/java") as java_bin, \
                mock.patch.dict(os.environ, outside):
            env = self.comp.env()
        java_bin.assert_called_with(25)
        return env

    def test_runs_on_java_25(self):
        env = self.env()
        self.assertEqual(env["JAVA"], "/opt/jdk25/bin/java")
        self.assertEqual(env["JAVA_HOME"], "/opt/jdk25")

    def test_heap_capped_and_admin_bootstrapped(self):
        env = self.env()
        self.assertIn("-Xmx", env["JAVA_OPTS_KC_HEAP"])
        self.assertIsNone(env["JAVA_OPTS"])  # else kc.sh ignores JAVA_OPTS_KC_HEAP
        self.assertEqual(env["KC_BOOTSTRAP_ADMIN_USERNAME"], "admin")
        self.assertEqual(env["KC_BOOTSTRAP_ADMIN_PASSWORD"], "admin")

    def test_outside_keycloak_and_jvm_settings_do_not_leak(self):
        env = self.env(KC_DB="postgres", KC_HOSTNAME="http://elsewhere", DEBUG="true",
                       JAVA_TOOL_OPTIONS="-Xmx4g")
        for key in ("KC_DB", "KC_HOSTNAME", "DEBUG", "JAVA_TOOL_OPTIONS"):
            with self.subTest(variable=key):
                self.assertIn(key, env)
                self.assertIsNone(env[key])

    @unittest.skipUnless((JDK25 / "bin" / "java").exists(), "no JDK 25 at the expected place")
    def test_finds_the_installed_jdk_25(self):
        self.assertEqual(Path(self.comp.java()).resolve().parent.parent, JDK25.resolve())


class ConfigureTest(ComponentTestCase):
    def test_data_dir_becomes_a_keycloak_home(self):
        self.fake_install()
        for _ in range(2):  # idempotent
            self.comp.configure()
        for name in keycloak.SHARED_DIRS:
            with self.subTest(link=name):
                link = self.comp.data_dir / name
                self.assertTrue(link.is_symlink())
                self.assertEqual(link.resolve(), (self.comp.dist / name).resolve())
        copied = self.comp.import_dir / "shop-realm.json"
        self.assertEqual(copied.read_bytes(), REALM_FILE.read_bytes())

    def test_realm_file_copied_again_before_every_start(self):
        self.fake_install()
        self.comp.configure()
        source = self.comp.realm_source
        source.write_text(source.read_text().replace('"Shop"', '"Shop 2"'))
        self.comp.configure()
        self.assertIn('"Shop 2"', (self.comp.import_dir / "shop-realm.json").read_text())

    def test_links_follow_a_new_version(self):
        self.fake_install()
        self.comp.data_dir.mkdir(parents=True)
        (self.comp.data_dir / "lib").symlink_to(self.tmp / "old-version-lib")
        self.comp.configure()
        self.assertEqual((self.comp.data_dir / "lib").resolve(), (self.comp.dist / "lib").resolve())

    def test_missing_realm_file_is_an_error(self):
        self.fake_install()
        self.comp.realm_source.unlink()
        with self.assertRaises(StackError):
            self.comp.configure()

    def test_changed_realm_after_import_is_reported(self):
        self.fake_install()
        self.comp.configure()  # empty database: this start imports
        self.assertTrue(self.comp.fresh_database)
        self.comp.post_start()
        touch(self.comp.database)
        self.comp.configure()
        self.assertFalse(self.comp.fresh_database)
        self.comp.post_start()
        self.ctx.say.assert_not_called()
        self.comp.realm_source.write_text(self.comp.realm_source.read_text() + "\n")
        self.comp.configure()
        self.comp.post_start()
        self.ctx.say.assert_called_once()
        self.assertIn("changed", self.ctx.say.call_args[0][0])


class HealthAndUrlsTest(ComponentTestCase):
    def test_health_is_the_realm_discovery_document(self):
        with mock.patch.object(keycloak, "http_ok", return_value=True) as http_ok:
            self.assertTrue(self.comp.health())
        http_ok.assert_called_once_with(f"{ISSUER}/.well-known/openid-configuration")

    def test_urls_name_admin_console_and_account(self):
        urls = [url for _label, url in self.comp.urls()]
        self.assertIn("http://127.0.0.1:8180/admin/master/console/", urls)
        self.assertIn(f"{ISSUER}/account", urls)


class RealmTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.realm = json.loads(REALM_FILE.read_text(encoding="utf-8"))
        cls.clients = {c["clientId"]: c for c in cls.realm["clients"]}

    def audiences(self, client: dict) -> list[str]:
        return [m["config"]["included.custom.audience"] for m in client.get("protocolMappers", [])
                if m["protocolMapper"] == "oidc-audience-mapper"
                and m["config"].get("access.token.claim") == "true"]

    def test_three_public_clients_with_password_grant(self):
        self.assertEqual(set(self.clients), {"shop-web", "shop-other", "shop-short"})
        for client_id, client in self.clients.items():
            with self.subTest(client=client_id):
                self.assertTrue(client["enabled"])
                self.assertTrue(client["publicClient"])
                self.assertEqual(client["protocol"], "openid-connect")
                self.assertTrue(client["directAccessGrantsEnabled"])
                self.assertFalse(client.get("implicitFlowEnabled", False))
                self.assertNotEqual(client.get("fullScopeAllowed"), False)  # realm roles in tokens
                # profile -> preferred_username, roles -> realm_access.roles, basic -> sub
                self.assertLessEqual({"basic", "profile", "roles"}, set(client["defaultClientScopes"]))

    def test_shop_web_code_flow_with_pkce(self):
        web = self.clients["shop-web"]
        self.assertTrue(web["standardFlowEnabled"])
        self.assertEqual(web["attributes"]["pkce.code.challenge.method"], "S256")
        self.assertTrue(web["redirectUris"])

    def test_audience_shop_api_only_where_expected(self):
        self.assertEqual(self.audiences(self.clients["shop-web"]), ["shop-api"])
        self.assertEqual(self.audiences(self.clients["shop-short"]), ["shop-api"])
        # a real audience, only not this API's: the gateway's "wrong audience" case
        self.assertEqual(self.audiences(self.clients["shop-other"]), ["other-api"])

    def test_shop_short_tokens_live_two_seconds(self):
        self.assertEqual(self.clients["shop-short"]["attributes"]["access.token.lifespan"], "2")
        for client_id in ("shop-web", "shop-other"):
            with self.subTest(client=client_id):
                self.assertNotIn("access.token.lifespan", self.clients[client_id].get("attributes", {}))

    def test_roles_and_users(self):
        self.assertEqual(self.realm["realm"], "shop")
        self.assertEqual({r["name"] for r in self.realm["roles"]["realm"]}, {"customer", "admin"})
        users = {u["username"]: u for u in self.realm["users"]}
        expected = {"alice": ["customer"], "bob": ["customer"], "admin": ["admin"]}
        self.assertEqual({name: users[name]["realmRoles"] for name in users}, expected)
        for name, user in users.items():
            with self.subTest(user=name):
                self.assertTrue(user["enabled"])
                self.assertEqual(user["credentials"], [{"type": "password", "value": name, "temporary": False}])


class ComposeTest(unittest.TestCase):
    """The compose service imports the same realm file and issues tokens with the same `iss`."""

    @classmethod
    def setUpClass(cls):
        with COMPOSE_FILE.open(encoding="utf-8") as fh:
            cls.service = yaml.safe_load(fh)["services"]["keycloak"]

    def test_same_hostname_as_the_local_stack(self):
        self.assertEqual(self.service["environment"]["KC_HOSTNAME"], "http://127.0.0.1:8180")
        self.assertEqual(f"{self.service['environment']['KC_HOSTNAME']}/realms/shop", ISSUER)

    def test_imports_the_same_realm_file(self):
        self.assertIn("--import-realm", self.service["command"])
        mounts = [str(v).split(":") for v in self.service["volumes"]]
        sources = [(COMPOSE_FILE.parent / m[0]).resolve() for m in mounts if m[1] == "/opt/keycloak/data/import"]
        self.assertEqual(sources, [REALM_FILE.parent.resolve()])

    def test_image_is_keycloak_26(self):
        image = self.service["image"]
        self.assertTrue(image.startswith("quay.io/keycloak/keycloak:26."), image)


if __name__ == "__main__":
    unittest.main()
