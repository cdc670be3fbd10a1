"""compose/docker-compose.yml stays in line with tools/stack/ports.toml, the one table of the stack.

Reads the compose file as YAML (anchors and merge keys resolved, no engine needed) and checks that
every component and service of ports.toml is there with the same host port, the settings the services
read (SHOP_*), their databases and health checks; then, when a Compose validator is installed, runs
compose/validate.sh on it.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import unittest
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from tools.stack import ports
from tools.stack.components.service import MALLOC_ARENA_MAX

REPO = Path(__file__).resolve().parents[3]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
VALIDATE = COMPOSE_DIR / "validate.sh"
VALIDATOR_MISSING = 77  # validate.sh's "no validator available"

# SHOP_<NAME>_URL -> the component it must point at
PEER_URLS = {
    "SHOP_CUSTOMER_URL": "customer",
    "SHOP_PRODUCT_URL": "product",
    "SHOP_ORDER_URL": "order",
    "SHOP_PAYMENT_URL": "payment",
    "SHOP_SAGA_URL": "saga-orchestrator",
    "SHOP_PROJECTORS_URL": "projectors",
}
# Every service gets these; SHOP_DATABASE_URL only the services that own a database.
COMMON_ENV = (
    "SHOP_PROFILE",
    "SHOP_HTTP_ADDR",
    "SHOP_KAFKA_BROKERS",
    "SHOP_SCHEMA_REGISTRY_URL",
    "SHOP_MONGODB_URL",
    *PEER_URLS,
    "SHOP_SMTP_ADDR",
    "SHOP_ZIPKIN_URL",
    "SHOP_ETCD_URL",
    "RUST_LOG",
)

_DEFAULT = re.compile(r"\$\{(\w+):?-([^}]*)\}")


def resolve(value) -> str:
    """The value Compose uses when no variable is set: `${VAR:-default}` becomes `default`."""
    return _DEFAULT.sub(lambda m: m.group(2), str(value))


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: resolve(value) for key, value in env.items()}


def published(service: dict) -> dict[int, int]:
    """Host port -> container port for each published port of a service."""
    mapping = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            host, container = entry.get("published"), entry["target"]
        else:
            parts = str(entry).split("/")[0].rsplit(":", 2)
            if len(parts) == 1:  # container port only: published on a random host port
                continue
            host, container = parts[-2], parts[-1]
        if host not in (None, ""):
            mapping[int(host)] = int(container)
    return mapping


def host_port(address: str) -> tuple[str, int]:
    """`host:port` or a URL -> (host, port)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    return parts.hostname, parts.port


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """Kafka `NAME://host:port,...` -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, address = item.strip().split("://", 1)
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


class ComposeTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with COMPOSE_FILE.open(encoding="utf-8") as fh:
            cls.compose = yaml.safe_load(fh)
        cls.services = cls.compose["services"]

    def service(self, name: str) -> dict:
        self.assertIn(name, self.services, f"compose has no service {name!r} (named as in ports.toml)")
        return self.services[name]


class InfrastructureTest(ComposeTestCase):
    def test_every_component_publishes_its_port(self):
        for name, port in ports.INFRA_PORTS.items():
            with self.subTest(component=name):
                self.assertIn(port, published(self.service(name)), f"{name} must publish host port {port}")

    def test_mailpit_publishes_smtp(self):
        self.assertIn(ports.MAILPIT_SMTP_PORT, published(self.service("mailpit")))

    def test_postgres_superuser(self):
        env = environment(self.service("postgres"))
        self.assertEqual(env.get("POSTGRES_USER"), ports.PG_USER)
        self.assertEqual(env.get("POSTGRES_PASSWORD"), ports.PG_PASSWORD)

    def test_postgres_init_script_creates_infrastructure_databases(self):
        mounts = [str(v) for v in self.service("postgres").get("volumes", [])]
        scripts = [m.split(":")[0] for m in mounts if "/docker-entrypoint-initdb.d" in m]
        self.assertTrue(scripts, "postgres mounts no init script")
        sql = "\n".join((COMPOSE_DIR / s).read_text(encoding="utf-8") for s in scripts).lower()
        for database in ("registry", "ferretdb"):
            with self.subTest(database=database):
                self.assertRegex(sql, rf"create\s+database\s+\"?{database}\b")

    def test_registry_stores_in_its_database(self):
        env = environment(self.service("registry"))
        self.assertEqual(env.get("APICURIO_STORAGE_KIND"), "sql")
        self.assertEqual(env.get("APICURIO_DATASOURCE_URL"), "jdbc:postgresql://postgres:5432/registry?sslmode=disable")
        self.assertEqual(env.get("APICURIO_DATASOURCE_USERNAME"), ports.PG_USER)
        self.assertEqual(env.get("APICURIO_DATASOURCE_PASSWORD"), ports.PG_PASSWORD)

    def test_kafka_listeners_reach_containers_and_host(self):
        kafka = self.service("kafka")
        env = environment(kafka)
        bound = listeners(env["KAFKA_LISTENERS"])
        advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
        host_side = published(kafka)

        # Containers use SHOP_KAFKA_BROKERS: a listener must bind that port and advertise that address.
        broker = host_port(environment(self.service("order"))["SHOP_KAFKA_BROKERS"])
        internal = [name for name, address in advertised.items() if address == broker]
        self.assertTrue(internal, f"no listener advertises {broker} to containers")
        self.assertEqual(bound[internal[0]][1], broker[1])

        # The host uses ports.toml's port: a listener advertised there, bound on the container port published to it.
        port = ports.INFRA_PORTS["kafka"]
        outside = [n for n, (h, p) in advertised.items() if h in ("localhost", "127.0.0.1") and p == port]
        self.assertTrue(outside, f"no listener advertises localhost:{port} to the host")
        self.assertEqual(host_side.get(port), bound[outside[0]][1])
        self.assertNotEqual(internal[0], outside[0])


class ServicesTest(ComposeTestCase):
    def test_every_service_builds_its_binary(self):
        for name, (binary, _port) in ports.SERVICES.items():
            with self.subTest(service=name):
                build = self.service(name).get("build")
                self.assertIsInstance(build, dict, f"{name} has no build section")
                self.assertEqual((COMPOSE_DIR / build["context"]).resolve(), REPO)
                self.assertTrue((REPO / build["dockerfile"]).is_file(), build["dockerfile"])
                self.assertEqual(build.get("args", {}).get("BIN"), binary)

    def test_every_service_publishes_its_port(self):
        for name, (_binary, port) in ports.SERVICES.items():
            with self.subTest(service=name):
                self.assertEqual(published(self.service(name)).get(port), port)

    def test_http_addr_listens_on_the_port(self):
        for name, (_binary, port) in ports.SERVICES.items():
            with self.subTest(service=name):
                addr = environment(self.service(name)).get("SHOP_HTTP_ADDR", "")
                self.assertEqual(addr, f"0.0.0.0:{port}")

    def test_every_service_gets_the_settings(self):
        for name in ports.SERVICES:
            with self.subTest(service=name):
                env = environment(self.service(name))
                missing = [key for key in COMMON_ENV if not env.get(key)]
                self.assertEqual(missing, [], f"{name} lacks settings")
                self.assertIn(env["SHOP_PROFILE"], ("dev", "prod"))
                # As the launcher runs every service.
                self.assertEqual(env.get("MALLOC_ARENA_MAX"), MALLOC_ARENA_MAX)

    def test_settings_point_at_containers(self):
        expected = {
            "SHOP_KAFKA_BROKERS": ("kafka", ports.INFRA_PORTS["kafka"]),
            "SHOP_MONGODB_URL": ("mongo", ports.INFRA_PORTS["mongo"]),
            "SHOP_SMTP_ADDR": ("mailpit", ports.MAILPIT_SMTP_PORT),
            "SHOP_ZIPKIN_URL": ("zipkin", ports.INFRA_PORTS["zipkin"]),
            "SHOP_ETCD_URL": ("etcd", ports.INFRA_PORTS["etcd"]),
        }
        expected.update({key: (peer, ports.SERVICES[peer][1]) for key, peer in PEER_URLS.items()})
        # The registry listens on its container port; the host reaches it on ports.toml's port.
        registry_port = published(self.service("registry"))[ports.INFRA_PORTS["registry"]]
        expected["SHOP_SCHEMA_REGISTRY_URL"] = ("registry", registry_port)
        for name in ports.SERVICES:
            env = environment(self.service(name))
            for key, address in expected.items():
                with self.subTest(service=name, setting=key):
                    self.assertEqual(host_port(env[key]), address)
            with self.subTest(service=name, setting="SHOP_SCHEMA_REGISTRY_URL"):
                self.assertTrue(env["SHOP_SCHEMA_REGISTRY_URL"].endswith("/apis/ccompat/v7"))
            with self.subTest(service=name, setting="SHOP_ZIPKIN_URL"):
                self.assertTrue(env["SHOP_ZIPKIN_URL"].endswith("/api/v2/spans"))

    def test_database_urls_name_each_service_database(self):
        for name in ports.SERVICES:
            with self.subTest(service=name):
                url = environment(self.service(name)).get("SHOP_DATABASE_URL")
                database = ports.SERVICE_DATABASES.get(name)
                if database is None:
                    self.assertIsNone(url, f"{name} owns no database in ports.toml")
                    continue
                self.assertIsNotNone(url, f"{name} needs SHOP_DATABASE_URL")
                parts = urlsplit(url)
                self.assertIn(parts.scheme, ("postgres", "postgresql"))
                self.assertEqual((parts.username, parts.password), (ports.PG_USER, ports.PG_PASSWORD))
                self.assertEqual((parts.hostname, parts.port), ("postgres", ports.INFRA_PORTS["postgres"]))
                self.assertEqual(parts.path, f"/{database}")

    def test_healthcheck_probes_the_service_port(self):
        for name, (_binary, port) in ports.SERVICES.items():
            with self.subTest(service=name):
                check = self.service(name).get("healthcheck") or {}
                test = check.get("test")
                test = " ".join(test) if isinstance(test, list) else str(test or "")
                self.assertIn(f":{port}/health", test)

    def test_depends_on_names_services_with_conditions(self):
        for name, service in self.services.items():
            depends = service.get("depends_on") or {}
            if name in ports.SERVICES:
                self.assertIsInstance(depends, dict, f"{name}: depends_on needs conditions")
            for target in depends:
                with self.subTest(service=name, depends_on=target):
                    self.assertIn(target, self.services)
                    if isinstance(depends, dict):
                        self.assertIn(
                            depends[target].get("condition"),
                            ("service_started", "service_healthy", "service_completed_successfully"),
                        )

    def test_database_owners_wait_for_postgres(self):
        for name in ports.SERVICE_DATABASES:
            with self.subTest(service=name):
                depends = self.service(name).get("depends_on") or {}
                self.assertEqual(depends.get("postgres", {}).get("condition"), "service_healthy")

    def test_prometheus_scrapes_every_service(self):
        config = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
        targets = {
            target
            for job in config["scrape_configs"]
            if job.get("metrics_path", "/metrics") == "/metrics"
            for static in job.get("static_configs", [])
            for target in static.get("targets", [])
        }
        for name, (_binary, port) in ports.SERVICES.items():
            with self.subTest(service=name):
                self.assertIn(f"{name}:{port}", targets)


class KeycloakRealmTest(unittest.TestCase):
    """The placeholder realm matches the gateway contract in the design (realm, client, roles, users)."""

    def test_realm(self):
        realm = json.loads((COMPOSE_DIR / "keycloak" / "shop-realm.json").read_text(encoding="utf-8"))
        self.assertEqual(realm["realm"], "shop")
        self.assertTrue(realm["enabled"])
        clients = {c["clientId"]: c for c in realm["clients"]}
        self.assertTrue(clients["shop-web"]["publicClient"])
        self.assertEqual({r["name"] for r in realm["roles"]["realm"]}, {"customer", "admin"})
        users = {u["username"]: u for u in realm["users"]}
        expected = {"alice": "customer", "bob": "customer", "admin": "admin"}
        self.assertEqual(set(users), set(expected))
        for username, role in expected.items():
            with self.subTest(user=username):
                user = users[username]
                self.assertIn(role, user["realmRoles"])
                self.assertTrue(user["firstName"] and user["lastName"] and user["email"])
                self.assertTrue(user["emailVerified"])
                self.assertFalse(user.get("requiredActions"))
                self.assertEqual(user["credentials"][0]["value"], username)


class ValidateTest(unittest.TestCase):
    """compose/validate.sh with whichever Compose validator is installed."""

    def run_validate(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["bash", str(VALIDATE), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode == VALIDATOR_MISSING:
            self.skipTest(
                "no Compose validator installed (docker compose plugin, or Debian's docker-compose: "
                "apt-get install --no-install-recommends docker-compose)"
            )
        return result

    def test_compose_file_is_valid(self):
        result = self.run_validate()
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_validator_rejects_a_broken_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            broken = Path(tmp) / "docker-compose.yml"
            broken.write_text(
                "services:\n  a:\n    image: busybox\n    depends_on:\n      b:\n"
                "        condition: service_healthy\n",
                encoding="utf-8",
            )
            result = self.run_validate(str(broken))
        self.assertNotEqual(result.returncode, 0, "the validator accepted a dependency on a missing service")


if __name__ == "__main__":
    unittest.main()
