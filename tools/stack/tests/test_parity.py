"""compose/ runs the system `./stack` runs: the same component versions, settings and Prometheus labels.

The launcher (tools/stack/) is the source of truth. Each side is read from its own files, never from
a table copied into this test:

  versions     kafka.version of tools/stack/kafka/pom.xml, VERSION / MODULE_VERSION of the component
               modules, and for what the launcher takes from Debian (etcd, Prometheus, PostgreSQL's
               major) the package it installs, as apt or dpkg knows it on this machine;
  settings     the environment, flags and config files the component classes produce;
  labels       compose/prometheus/prometheus.yml, the launcher's render_config, the labels the
               gateway's /internal/sd hands the launcher's Prometheus, and the labels the services'
               metrics carry (the metrics::counter!/gauge!/histogram! calls in the Rust sources);
  SHOP_*       each service's environment in compose against the launcher's (Service.env()) plus
               the defaults the Rust code falls back to, which is all the launcher relies on.

Values may differ where a container differs from a loopback process: host names (a compose service
name, or 0.0.0.0 to bind), a container port published as the launcher's port, and paths in data
directories. No Docker is needed.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import tomllib
import shlex
import shutil
import subprocess
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import yaml

from tools.stack import ports
from tools.stack.components import base, load
from tools.stack.components import etcd as etcd_component
from tools.stack.components import kafka as kafka_component
from tools.stack.components import keycloak as keycloak_component
from tools.stack.components import mailpit as mailpit_component
from tools.stack.components import mongo as mongo_component
from tools.stack.components import postgres as postgres_component
from tools.stack.components import prometheus as prometheus_component
from tools.stack.components import registry as registry_component
from tools.stack.components import zipkin as zipkin_component
from tools.stack.components.base import Context
from tools.stack.components.service import Service
from tools.stack.tests.test_compose import environment, published

REPO = Path(__file__).resolve().parents[3]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
COMPOSE_PROMETHEUS = COMPOSE_DIR / "prometheus" / "prometheus.yml"
COMPOSE_README = COMPOSE_DIR / "README.md"
DASHBOARD_DIR = COMPOSE_DIR / "grafana" / "dashboards"
KAFKA_POM = REPO / "tools" / "stack" / "kafka" / "pom.xml"


# --- reading both sides ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def compose() -> dict:
    with COMPOSE_FILE.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def compose_service(name: str) -> dict:
    return compose()["services"][name]


def text(value) -> str:
    """A YAML scalar as the container sees it (`true`, not `True`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compose_env(name: str) -> dict[str, str]:
    return {key: text(value) for key, value in environment(compose_service(name)).items()}


def compose_command(name: str) -> list[str]:
    command = compose_service(name).get("command") or []
    return shlex.split(command) if isinstance(command, str) else [text(c) for c in command]


def image(name: str) -> tuple[str, str]:
    """(repository, tag) of a compose service's image."""
    repository, _, tag = compose_service(name)["image"].rpartition(":")
    return repository, tag


def context(tmp: Path, profile: str = "debug") -> Context:
    ctx = Context(repo=REPO, data=tmp / "data", cache=tmp / "cache")
    ctx.set_profile(profile)
    return ctx


def clean_environ() -> dict[str, str]:
    """This process's environment without the variables the launcher would pass on to a component."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "RUST_", "KC_", "MP_", "KAFKA_"))}


def to_loopback(value: str) -> str:
    """A compose value as the launcher would write it: every `<compose service>:<port>` (and a bind
    on 0.0.0.0) becomes 127.0.0.1, with the host port that compose publishes the container port as."""
    services = compose()["services"]

    def swap(m: re.Match) -> str:
        lead, host, port = m.group(1), m.group(2), int(m.group(3))
        if host == "0.0.0.0":
            return f"{lead}127.0.0.1:{port}"
        if host not in services:
            return m.group(0)
        host_ports = {container: host_port for host_port, container in published(services[host]).items()}
        return f"{lead}127.0.0.1:{host_ports.get(port, port)}"

    return re.sub(r"(^|//|@)([A-Za-z0-9][A-Za-z0-9.-]*):(\d+)", swap, value)


def pom_property(name: str) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    found = ET.parse(KAFKA_POM).getroot().find(f"m:properties/m:{name}", ns)
    if found is None or not (found.text or "").strip():
        raise AssertionError(f"{KAFKA_POM} has no <{name}>")
    return found.text.strip()


def apt_packages(module, component_class) -> list[str]:
    """The Debian packages a component installs (its install() with apt_install caught)."""
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(module, "apt_install") as apt:
        component_class(context(Path(tmp))).install()
    (_ctx, _name, packages), _kwargs = apt.call_args
    return list(packages)


def debian_version(package: str) -> str | None:
    """The upstream version of a Debian package as the launcher would install it here: apt's
    candidate, else the installed one; None on a machine without apt/dpkg data for it."""
    version = None
    if shutil.which("apt-cache"):
        out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True).stdout
        m = re.search(r"Candidate:\s*(\S+)", out)
        if m and m.group(1) != "(none)":
            version = m.group(1)
    if version is None and shutil.which("dpkg-query"):
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
        version = out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
    if version is None:
        return None
    # [epoch:]upstream[+ds...][-debian revision]
    m = re.match(r"(?:\d+:)?(\d+(?:\.\d+)*)", version)
    return m.group(1) if m else None


# --- the Rust side ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def rust_sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted(REPO.glob("**/src/**/*.rs"))
            if "target" not in p.relative_to(REPO).parts and not p.relative_to(REPO).parts[0].startswith(".")}


def rust_file(*needles: str) -> tuple[Path, str]:
    """The one Rust source file holding all of `needles`."""
    found = [(p, t) for p, t in rust_sources().items() if all(n in t for n in needles)]
    if len(found) != 1:
        raise AssertionError(f"expected one Rust source with {needles}, found {[str(p) for p, _ in found]}")
    return found[0]


def fn_body(source: str, name: str) -> str:
    start = source.index(f"fn {name}(")
    return source[start:source.index("\n}\n", start)]


@functools.lru_cache(maxsize=None)
def rust_defaults(service: str) -> dict[str, str]:
    """The value each SHOP_* setting takes in `service` when its variable is unset: what the
    launcher relies on for everything it does not set. Read from the Rust sources."""
    _path, config = rust_file("fn from_values", 'or("')
    # Settings are read by key (`database.url`); its variable is SHOP_ and the key in capitals, dots
    # as underscores (runtime::live_config::env_var).
    var = lambda key: "SHOP_" + key.upper().replace(".", "_").replace("-", "_")  # noqa: E731
    defaults = {var(k): v for k, v in re.findall(r'\bor\(\s*"([\w.]+)"\s*,\s*"([^"]*)"\s*\)', config)}
    # Addresses come from the same table as ours (runtime::config embeds tools/stack/ports.toml):
    # `local(x)` is 127.0.0.1 and x's port, `url(x)` that over http.
    local = {"local": lambda c: f"127.0.0.1:{ports.PORTS[c]}", "url": lambda c: f"http://127.0.0.1:{ports.PORTS[c]}"}
    for key, fn, arg in re.findall(r'\bor\(\s*"([\w.]+)"\s*,\s*(local|url)\(\s*"([\w-]+)"\s*\)\s*\)', config):
        defaults[var(key)] = local[fn](arg)
    for key in re.findall(r'\bor\(\s*"([\w.]+)"\s*,\s*local\(service\)\s*\)', config):
        defaults[var(key)] = local["local"](service)
    for key, before, after, arg in re.findall(
            r'\bor\(\s*"([\w.]+)"\s*,\s*format!\(\s*"([^"{]*)\{\}([^"]*)"\s*,\s*local\(\s*"([\w-]+)"\s*\)\s*\)\s*,?\s*\)',
            config):
        defaults[var(key)] = before + local["local"](arg) + after
    # Read from the environment alone: `var("SHOP_PROFILE").as_deref().unwrap_or("dev")`.
    defaults.update(re.findall(r'\bvar\(\s*"(SHOP_\w+)"\s*\)\.as_deref\(\)\.unwrap_or\(\s*"([^"]*)"\s*\)', config))
    # Numbers and switches: `parse(&values, "snapshot.every", 50)`, `switch(&values, "discovery", true)`.
    for fn, key, value in re.findall(r'\b(parse|switch)\(\s*&values\s*,\s*"([\w.]+)"\s*,\s*(\w+)\s*\)', config):
        defaults[var(key)] = value
    database = re.search(r'\bor\(\s*"([\w.]+)"\s*,\s*default_database\(service\)\s*\)', config)
    if database:
        db = ports.SERVICE_DATABASES.get(service, f"shop_{service}")
        defaults[var(database.group(1))] = (f"postgres://{ports.PG_USER}:{ports.PG_PASSWORD}@127.0.0.1:"
                                            f"{ports.INFRA_PORTS['postgres']}/{db}?sslmode=disable")
    if 'get("advertise.url")' in config and 'format!("http://{http_addr}")' in config:
        defaults["SHOP_ADVERTISE_URL"] = f"http://{defaults['SHOP_HTTP_ADDR']}"
    # A service's own settings: their defaults are in config/defaults.toml, [global] and its scope.
    files = tomllib.loads((REPO / "config" / "defaults.toml").read_text(encoding="utf-8"))
    for scope in ("global", service):
        for key, value in flatten(files.get(scope, {})).items():
            defaults.setdefault(var(key), value)
    # `const DEFAULT_X: &str = "..."` beside the variable SHOP_X that falls back to it
    for source in rust_sources().values():
        for suffix, value in re.findall(r'const DEFAULT_(\w+): &str = "([^"]*)"', source):
            if f'"SHOP_{suffix}"' in source:
                defaults[f"SHOP_{suffix}"] = value
    # The gateway's token settings: the issuer of the local Keycloak, the JWKS under it.
    _path, auth = rust_file('"SHOP_JWT_ISSUER"')
    names = dict(re.findall(r'(\w+)_VAR: &str = "(SHOP_\w+)"', auth))
    issuer = re.search(r'for_issuer\("([^"]+)"\)', auth).group(1)
    defaults[names["ISSUER"]] = issuer
    defaults[names["JWKS_URL"]] = issuer + re.search(r'format!\("\{issuer\}(/[^"]*)"\)', auth).group(1)
    return defaults


def flatten(table: dict, prefix: str = "") -> dict[str, str]:
    """A config file's scope as runtime::live_config reads it: nested tables as dotted keys, values
    as text (`3000`, `true`)."""
    out: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    return out


def metric_labels() -> set[str]:
    """Labels the services' own metrics carry: the names given to metrics::counter!/gauge!/histogram!,
    as `"name" => value` or through a `let <var> = [("name", value), ...]` array; `le` for histograms."""
    labels: set[str] = set()
    for source in rust_sources().values():
        for m in re.finditer(r"\bmetrics::(counter|gauge|histogram)!\(", source):
            depth, end = 1, m.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(source[end], 0)
                end += 1
            args = source[m.end():end - 1]
            labels.update(re.findall(r'"(\w+)"\s*=>', args))
            for var in re.findall(r"&(\w+)\s*$", args.strip()):
                arrays = re.findall(rf"let {var}\s*=\s*\[(.*?)\];", source[:m.start()], re.S)
                if arrays:
                    labels.update(re.findall(r'\(\s*"(\w+)"\s*,', arrays[-1]))
            if m.group(1) == "histogram":
                labels.add("le")
    return labels


def sd_labels() -> tuple[str, set[str]]:
    """The route of the gateway's Prometheus service discovery and the labels it gives each target."""
    _path, sd = rust_file('"/internal/sd"', '"labels"')
    route = re.search(r'route\(\s*"([^"]+)"', sd).group(1)
    keys = set()
    for group in re.findall(r'"labels"\s*:\s*\{([^}]*)\}', sd):
        keys.update(re.findall(r'"(\w+)"\s*:', group))
    return route, keys


# --- Prometheus target labels on both sides --------------------------------------------------------
def static_and_relabel_labels(job: dict) -> set[str]:
    labels = {"job", "instance"}
    for group in job.get("static_configs") or []:
        labels.update((group.get("labels") or {}).keys())
    for rule in job.get("relabel_configs") or []:
        if rule.get("action", "replace") in ("replace", "hashmod") and rule.get("target_label"):
            labels.add(rule["target_label"])
        if rule.get("action") == "labelmap":
            raise AssertionError(f"job {job['job_name']}: labelmap relabelling is not understood by this test")
    return labels


def compose_job_labels() -> dict[str, set[str]]:
    config = yaml.safe_load(COMPOSE_PROMETHEUS.read_text(encoding="utf-8"))
    return {job["job_name"]: static_and_relabel_labels(job) for job in config["scrape_configs"]}


def launcher_config() -> dict:
    return yaml.safe_load(prometheus_component.render_config(ports.INFRA_PORTS["prometheus"]))


def launcher_job_labels() -> dict[str, set[str]]:
    route, keys = sd_labels()
    jobs = {}
    for job in launcher_config()["scrape_configs"]:
        labels = static_and_relabel_labels(job)
        for sd in job.get("http_sd_configs") or []:
            if not sd["url"].endswith(route):
                raise AssertionError(f"the launcher discovers targets at {sd['url']}, the gateway serves {route}")
            labels |= keys
        jobs[job["job_name"]] = labels
    return jobs


# --- the dashboard ---------------------------------------------------------------------------------
def panels(items: list[dict]):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels") or [])


def dashboard_targets() -> list[tuple[str, str, dict]]:
    """(dashboard file, panel title, target) of every query of every dashboard."""
    out = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in panels(dashboard.get("panels") or []):
            for target in panel.get("targets") or []:
                if target.get("expr"):
                    out.append((path.name, panel.get("title", "?"), target))
    return out


def matcher_labels(expr: str) -> set[str]:
    """Labels in selectors: `{status=~"5.."}`."""
    labels = set()
    for block in re.findall(r"\{([^}]*)\}", expr):
        labels.update(re.findall(r'([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*"', block))
    return labels


def grouping_labels(expr: str) -> set[str]:
    """Labels in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`, `group_left/right (...)`."""
    labels = set()
    for names in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels.update(n.strip() for n in names.split(",") if n.strip())
    return labels


def legend_labels(target: dict) -> set[str]:
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat") or ""))


# --- tests -----------------------------------------------------------------------------------------
def launcher_versions() -> dict[str, tuple[str, str]]:
    """component -> (the launcher's version, where it comes from). PostgreSQL: its major version."""
    pg_major = re.search(r"/postgresql/(\d+)/", str(postgres_component.BIN)).group(1)
    return {
        "kafka": (pom_property("kafka.version"), "kafka.version in tools/stack/kafka/pom.xml"),
        "postgres": (pg_major, f"postgres.BIN {postgres_component.BIN}"),
        "mongo": (mongo_component.MODULE_VERSION.lstrip("v"), "mongo.MODULE_VERSION (FerretDB)"),
        "registry": (registry_component.VERSION, "registry.VERSION (Apicurio)"),
        "zipkin": (zipkin_component.VERSION, "zipkin.VERSION"),
        "keycloak": (keycloak_component.VERSION, "keycloak.VERSION"),
        "mailpit": (mailpit_component.VERSION.lstrip("v"), "mailpit.VERSION"),
    }


# component -> the image compose runs it from and how that project writes its release tags
IMAGES = {
    "kafka": ("apache/kafka", "{}"),
    "postgres": ("postgres", "{}"),
    "mongo": ("ghcr.io/ferretdb/ferretdb", "{}"),
    "registry": ("apicurio/apicurio-registry", "{}"),
    "zipkin": ("openzipkin/zipkin", "{}"),
    "keycloak": ("quay.io/keycloak/keycloak", "{}"),
    "mailpit": ("axllent/mailpit", "v{}"),
    "etcd": ("quay.io/coreos/etcd", "v{}"),
    "prometheus": ("prom/prometheus", "v{}"),
}
# components the launcher installs from Debian: their version is the package's
DEBIAN = {
    "etcd": (etcd_component, etcd_component.Etcd),
    "prometheus": (prometheus_component, prometheus_component.Prometheus),
}
EXACT_TAG = re.compile(r"v?\d+\.\d+\.\d+")
EXACT_POSTGRES_TAG = re.compile(r"\d+\.\d+")  # PostgreSQL releases are major.minor


class VersionsTest(unittest.TestCase):
    """Every infrastructure image is the launcher's version of that component."""

    def test_every_component_has_an_image(self):
        self.assertEqual(set(IMAGES), set(ports.INFRA_PORTS))

    def test_image_tags_are_the_launchers_versions(self):
        versions = launcher_versions()
        for name in ports.INFRA_PORTS:
            with self.subTest(component=name):
                repository, tag = image(name)
                expected_repository, tag_format = IMAGES[name]
                self.assertEqual(repository, expected_repository)
                if name in DEBIAN:
                    module, cls = DEBIAN[name]
                    package = apt_packages(module, cls)[0]
                    version = debian_version(package)
                    if version is None:
                        self.skipTest(f"no apt/dpkg data for Debian's {package} here: "
                                      f"cannot tell the launcher's {name}")
                    self.assertEqual(tag, tag_format.format(version),
                                     f"the launcher installs Debian's {package} {version}; compose runs {name} {tag}")
                elif name == "postgres":
                    major, source = versions[name]
                    self.assertRegex(tag, rf"^{major}\.\d+$", f"the launcher runs PostgreSQL {major} ({source})")
                else:
                    version, source = versions[name]
                    self.assertEqual(tag, tag_format.format(version), f"the launcher's version: {source}")

    def test_postgres_major_is_debians_package(self):
        major, _source = launcher_versions()["postgres"]
        self.assertEqual(apt_packages(postgres_component, postgres_component.Postgres), [f"postgresql-{major}"])

    def test_no_floating_tags(self):
        for name, service in compose()["services"].items():
            if "build" in service:
                continue
            with self.subTest(service=name):
                _repository, tag = image(name)
                pattern = EXACT_POSTGRES_TAG if name == "postgres" else EXACT_TAG
                self.assertRegex(tag, rf"^{pattern.pattern}$", f"{name}: pin an exact release, not {tag!r}")

    def test_readme_names_every_image(self):
        readme = COMPOSE_README.read_text(encoding="utf-8")
        for name, service in compose()["services"].items():
            if "build" not in service:
                with self.subTest(service=name):
                    named = f"`{service['image']}`"
                    self.assertTrue(named in readme, f"compose/README.md does not name {named}")


class InfrastructureSettingsTest(unittest.TestCase):
    """The settings the launcher starts each component with, in compose's form (variables, flags)."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.ctx = context(self.tmp)
        patcher = mock.patch.dict(os.environ, clean_environ(), clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_kafka_broker_settings(self):
        props = dict(line.split("=", 1) for line in kafka_component.render_server_properties(
            ports.INFRA_PORTS["kafka"], ports.KAFKA_CONTROLLER_PORT, self.tmp, self.tmp / "server.pem").splitlines()
            if line)
        # Addresses: compose has a listener for containers and one for the host, and gives the quorum
        # as voters (the image formats storage without --standalone); the log folder is the volume's.
        differ = {"listeners", "advertised.listeners", "listener.security.protocol.map",
                  "inter.broker.listener.name", "controller.quorum.bootstrap.servers", "log.dirs"}
        env = compose_env("kafka")
        for key, value in props.items():
            # The SASL_SSL listener is the local stack's, for the TLS tests with the CA it makes.
            if key in differ or key.startswith("listener.name.sasl_ssl."):
                continue
            with self.subTest(setting=key):
                variable = "KAFKA_" + key.upper().replace(".", "_")
                self.assertEqual(env.get(variable), value, f"{variable} (launcher: {key}={value})")
        self.assertIn(kafka_component.HEAP, env["KAFKA_HEAP_OPTS"].split())
        self.assertIn(kafka_component.GC, env["KAFKA_JVM_PERFORMANCE_OPTS"].split())

    def test_postgres_server_settings(self):
        argv = postgres_component.Postgres(self.ctx).command()
        launcher = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-c")
        command = compose_command("postgres")
        ours = dict(command[i + 1].split("=", 1) for i, a in enumerate(command) if a == "-c")
        for key, value in launcher.items():
            # addresses; and the TLS the local stack turns on for its TLS tests, with the CA it makes
            if key in ("listen_addresses", "port", "unix_socket_directories", "hba_file", "ssl", "ssl_cert_file",
                       "ssl_key_file"):
                continue
            with self.subTest(setting=key):
                self.assertEqual(ours.get(key), value)
        extra = set(ours) - set(launcher) - {"shared_preload_libraries"}  # the launcher's only when installed
        self.assertEqual(extra, set(), "compose sets server settings the launcher does not")
        initdb = re.findall(r"--(?:encoding|locale)=[\w.-]+",
                            inspect.getsource(postgres_component.Postgres.prepare_once))
        self.assertTrue(initdb)
        self.assertEqual(sorted(initdb), sorted(compose_env("postgres")["POSTGRES_INITDB_ARGS"].split()))

    def test_ferretdb_settings(self):
        launcher = mongo_component.Mongo(self.ctx).env()
        env = compose_env("mongo")
        for key, value in launcher.items():
            if key == "FERRETDB_LISTEN_ADDR":  # a bind address
                continue
            if key.startswith("FERRETDB_LISTEN_TLS"):  # TLS with the local stack's CA, for its TLS tests
                continue
            with self.subTest(setting=key):
                self.assertEqual(to_loopback(env.get(key, "")), value)

    def test_registry_settings(self):
        launcher = registry_component.Registry(self.ctx).env()
        env = compose_env("registry")
        bind_or_local = {"QUARKUS_HTTP_HOST", "QUARKUS_HTTP_PORT", "QUARKUS_MANAGEMENT_HOST",
                         "APICURIO_STORAGE_SNAPSHOT_LOCATION"}
        for key, value in launcher.items():
            if key in bind_or_local or value is None:
                continue
            with self.subTest(setting=key):
                self.assertEqual(to_loopback(env.get(key, "")), value)
        self.assertIn(f"-Xmx{registry_component.HEAP}", env["JAVA_OPTS_APPEND"].split())
        test = " ".join(compose_service("registry")["healthcheck"]["test"])
        self.assertIn(f"/dev/tcp/127.0.0.1/{registry_component.MANAGEMENT_PORT}", test)
        self.assertIn("/health/ready", test)

    def test_zipkin_settings(self):
        launcher = zipkin_component.Zipkin(self.ctx).env()
        env = compose_env("zipkin")
        for key, value in launcher.items():
            if value is None:
                continue
            with self.subTest(setting=key):
                self.assertEqual(env.get(key), value)
        self.assertIn(f"-Xmx{zipkin_component.HEAP}", env["JAVA_OPTS"].split())

    @staticmethod
    def keycloak_options(command: list[str], env: dict[str, str | None]) -> dict[str, str]:
        """Keycloak's options from `--name[=value]` arguments and KC_NAME variables."""
        options = {}
        for arg in command:
            if arg.startswith("--"):
                key, _, value = arg[2:].partition("=")
                options[key] = value or "true"
        for key, value in env.items():
            if key.startswith("KC_") and value is not None:
                options[key[3:].lower().replace("_", "-")] = value
        return options

    def test_keycloak_options(self):
        comp = keycloak_component.Keycloak(self.ctx)
        with mock.patch.object(keycloak_component.Keycloak, "installed", return_value=True), \
                mock.patch.object(keycloak_component.Keycloak, "java", return_value="/jdk/bin/java"):
            argv, env = comp.command(), comp.env()
        self.assertEqual(argv[1], "start-dev")
        launcher = self.keycloak_options(argv, env)
        ours = self.keycloak_options(compose_command("keycloak"), compose_env("keycloak"))
        self.assertEqual(compose_command("keycloak")[0], "start-dev")
        for bind in ("http-host", "http-management-host"):  # the container binds every interface
            launcher.pop(bind, None)
        # HTTPS with the local stack's CA, for its TLS tests
        for https in ("https-port", "https-certificate-file", "https-certificate-key-file"):
            launcher.pop(https, None)
        self.assertEqual(ours, launcher)
        self.assertEqual(compose_env("keycloak")["JAVA_OPTS_KC_HEAP"], env["JAVA_OPTS_KC_HEAP"])

    # Mailpit's flag -> its variable (Mailpit reads both; the image is configured by variables)
    MAILPIT_VARIABLES = {
        "smtp": "MP_SMTP_BIND_ADDR", "listen": "MP_UI_BIND_ADDR", "database": "MP_DATABASE",
        "smtp-auth-accept-any": "MP_SMTP_AUTH_ACCEPT_ANY", "smtp-auth-allow-insecure": "MP_SMTP_AUTH_ALLOW_INSECURE",
        "disable-version-check": "MP_DISABLE_VERSION_CHECK", "max": "MP_MAX_MESSAGES",
        "enable-chaos": "MP_ENABLE_CHAOS", "ignore-duplicate-ids": "MP_IGNORE_DUPLICATE_IDS",
        "smtp-tls-cert": "MP_SMTP_TLS_CERT", "smtp-tls-key": "MP_SMTP_TLS_KEY",
    }

    def test_mailpit_flags(self):
        argv = mailpit_component.Mailpit(self.ctx).command()[1:]
        flags, i = {}, 0
        while i < len(argv):
            key = argv[i].lstrip("-")
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                flags[key], i = argv[i + 1], i + 2
            else:
                flags[key], i = "true", i + 1
        env = compose_env("mailpit")
        for flag, value in flags.items():
            with self.subTest(flag=flag):
                self.assertIn(flag, self.MAILPIT_VARIABLES, f"teach this test Mailpit's variable for --{flag}")
                variable = self.MAILPIT_VARIABLES[flag]
                if flag in ("smtp", "listen"):  # bind addresses: the image's defaults, every interface
                    continue
                if flag in ("smtp-tls-cert", "smtp-tls-key"):  # the local stack's CA, for its TLS tests
                    continue
                if flag == "database":  # a file of its own, on a volume
                    self.assertTrue(env.get(variable))
                    continue
                self.assertEqual(env.get(variable), value, variable)

    def test_etcd_flags(self):
        with mock.patch.object(etcd_component, "which", return_value="/usr/bin/etcd"):
            argv = etcd_component.Etcd(self.ctx).command()[1:]
        launcher = {argv[i].lstrip("-"): argv[i + 1] for i in range(0, len(argv), 2)}
        # the TLS client port with the local stack's CA, for its TLS tests
        for tls_file in ("cert-file", "key-file"):
            launcher.pop(tls_file)
        ours = dict(arg.lstrip("-").split("=", 1) for arg in compose_command("etcd")[1:])
        self.assertEqual(set(ours), set(launcher))
        for key in ("name", "initial-cluster-state", "initial-cluster-token"):
            with self.subTest(flag=key):
                self.assertEqual(ours[key], launcher[key])
        self.assertEqual(ours["initial-cluster"].split("=")[0], launcher["initial-cluster"].split("=")[0])

    def test_prometheus_retention_and_intervals(self):
        retention = [a for a in compose_command("prometheus") if a.startswith("--storage.tsdb.retention.time=")]
        self.assertEqual(retention, [f"--storage.tsdb.retention.time={prometheus_component.RETENTION}"])
        ours = yaml.safe_load(COMPOSE_PROMETHEUS.read_text(encoding="utf-8"))["global"]
        self.assertEqual(ours, launcher_config()["global"])


class PrometheusLabelsTest(unittest.TestCase):
    """compose's Prometheus and the launcher's label their targets alike, and the Grafana dashboard
    queries only labels that both give (plus those of the metrics themselves)."""

    def test_same_jobs_and_target_labels(self):
        self.assertEqual(compose_job_labels(), launcher_job_labels())

    def test_service_targets_carry_their_component_name(self):
        config = yaml.safe_load(COMPOSE_PROMETHEUS.read_text(encoding="utf-8"))
        route, keys = sd_labels()
        (launcher_job,) = [j for j in launcher_config()["scrape_configs"] if j.get("http_sd_configs")]
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == launcher_job["job_name"]]
        self.assertEqual(job.get("metrics_path", "/metrics"), launcher_job.get("metrics_path", "/metrics"))
        labelled = {}
        for group in job["static_configs"]:
            self.assertEqual(set(group.get("labels") or {}), keys, group)
            for target in group["targets"]:
                host, port = target.rsplit(":", 1)
                labelled[host] = (int(port), group["labels"])
        self.assertEqual(set(labelled), set(ports.SERVICES))
        for name, (_binary, port) in ports.SERVICES.items():
            with self.subTest(service=name):
                self.assertEqual(labelled[name][0], port)
                # the gateway labels each instance with its service's name, which is the component's
                self.assertEqual(labelled[name][1], {key: name for key in keys})

    def test_dashboard_queries_use_labels_both_sides_give(self):
        metrics = metric_labels()
        self.assertTrue({"route", "status", "group", "topic", "downstream"} <= metrics, metrics)
        sides = {
            "compose/prometheus/prometheus.yml": set().union(*compose_job_labels().values()) | metrics,
            "the launcher's render_config + /internal/sd": set().union(*launcher_job_labels().values()) | metrics,
        }
        targets = dashboard_targets()
        self.assertTrue(targets, f"no dashboard queries under {DASHBOARD_DIR}")
        for file, title, target in targets:
            used = matcher_labels(target["expr"]) | grouping_labels(target["expr"]) | legend_labels(target)
            for side, produced in sides.items():
                with self.subTest(dashboard=file, panel=title, expr=target["expr"], side=side):
                    self.assertEqual(used - produced, set(), f"no series has these labels under {side}")

    def test_legends_name_grouped_labels(self):
        for file, title, target in dashboard_targets():
            groups = grouping_labels(target["expr"])
            if not groups:
                continue
            with self.subTest(dashboard=file, panel=title, expr=target["expr"]):
                self.assertEqual(legend_labels(target) - groups, set(), "the legend names a label the query drops")


class CpuPriorityTest(unittest.TestCase):
    """Compose weighs the containers as the launcher ranks the components: `cpu_shares` for what the
    launcher runs at a lower priority (`nice`), none (the default 1024) for the rest."""

    SHARES = {0: None, base.BACKGROUND: 256}

    def test_cpu_shares_follow_the_launchers_niceness(self):
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        for c in load(context(tmp), warn=lambda msg: None):
            with self.subTest(component=c.name):
                self.assertIn(c.niceness, self.SHARES)
                self.assertEqual(compose_service(c.name).get("cpu_shares"), self.SHARES[c.niceness])


class ServiceSettingsTest(unittest.TestCase):
    """Each service gets the same SHOP_* settings from compose as from the launcher. The launcher
    sets a few (Service.env()) and leaves the rest to the code's defaults, which are the loopback
    addresses; compose sets those again with container host names."""

    # compose builds the services with `cargo build --release`, so the launcher's release start counts
    PROFILE = "release"

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.ctx = context(self.tmp, self.PROFILE)
        patcher = mock.patch.dict(os.environ, clean_environ(), clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def launcher_env(self, name: str) -> dict[str, str]:
        binary, port = ports.SERVICES[name]
        return {k: v for k, v in Service(self.ctx, name, binary, port).env().items() if v is not None}

    def test_compose_builds_release_binaries(self):
        dockerfile = (COMPOSE_DIR / "Dockerfile").read_text(encoding="utf-8")
        self.assertRegex(dockerfile, r"cargo build --release\b")

    def test_same_shop_settings(self):
        for name in ports.SERVICES:
            launcher = {k: v for k, v in self.launcher_env(name).items() if k.startswith("SHOP_")}
            ours = {k: v for k, v in compose_env(name).items() if k.startswith("SHOP_")}
            defaults = rust_defaults(name)
            with self.subTest(service=name, check="names the launcher sets"):
                self.assertEqual(set(launcher) - set(ours), set(), "compose lacks settings the launcher passes")
            for key, value in ours.items():
                with self.subTest(service=name, setting=key):
                    if key in launcher:
                        self.assertEqual(to_loopback(value), launcher[key], "the launcher passes another value")
                    else:
                        self.assertIn(key, defaults, f"compose sets {key}, which the launcher neither sets nor "
                                                     "leaves to a default this test finds in the Rust sources")
                        self.assertEqual(to_loopback(value), defaults[key],
                                         "the launcher leaves this to the code's default; compose must differ "
                                         "from it in host names only")

    def test_same_rust_settings(self):
        for name in ports.SERVICES:
            with self.subTest(service=name):
                launcher = {k: v for k, v in self.launcher_env(name).items() if k.startswith("RUST_")}
                ours = {k: v for k, v in compose_env(name).items() if k.startswith("RUST_")}
                self.assertEqual(ours, launcher)


if __name__ == "__main__":
    unittest.main()
