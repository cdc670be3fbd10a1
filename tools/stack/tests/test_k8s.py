"""deploy/k8s/base stays in line with tools/stack/ports.toml and with the code's topics and groups.

Reads the base manifests as YAML (no kustomize needed): every service of ports.toml has its
Deployment, Service and PodDisruptionBudget on its port, the shared settings point at the
in-cluster Services, each service's database is bootstrapped by a CloudNativePG Cluster, every
topic of schemas/src/topics.rs (and its DLQ) is a KafkaTopic, and
every consumer group the code starts has a KEDA ScaledObject and a KafkaUser that may read it.
deploy/k8s/validate.sh (a step of `./stack test`) checks the rendered overlays against the
Kubernetes and CRD schemas.
"""

from __future__ import annotations

import re
import unittest
from pathlib import Path

import yaml

from tools.stack import ports
from tools.stack.components.service import MALLOC_ARENA_MAX

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_resources() -> list[dict]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return [d for f in kustomization["resources"] for d in load(BASE / f)]


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def env_of(deployment: dict) -> dict[str, dict]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def mounted_secret(deployment: dict, file: str) -> tuple[str, str] | None:
    """(Secret, key) that `file` in the container comes from, if a Secret volume holds it."""
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in pod["containers"][0].get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret and file.startswith(mount["mountPath"].rstrip("/") + "/"):
            name = file[len(mount["mountPath"].rstrip("/")) + 1:]
            keys = {i["path"]: i["key"] for i in secret.get("items", [])}
            return secret["secretName"], keys.get(name, "(every key)")
    return None


def code_topics() -> set[str]:
    text = (REPO / "schemas" / "src" / "topics.rs").read_text()
    return set(re.findall(r'Topic::\w+ => "([a-z][a-z.-]*)"', text))


def code_groups() -> set[str]:
    groups = set()
    for path in REPO.glob("*/**/src/**/*.rs"):
        if "target" in path.parts:
            continue
        text = path.read_text(errors="replace")
        groups.update(re.findall(r'spawn_consumer\(\s*"([^"]+)"', text))
        if "spawn_consumer_with" in text:
            groups.update(re.findall(r'pub const (?:CONSUMER_)?GROUP: &str = "([^"]+)"', text))
            groups.update(re.findall(r'\bgroup: "([^"]+)"', text))  # projectors::LIVE_CONSUMERS
    return groups


class K8sManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = base_resources()
        cls.deployments = by_kind(cls.docs, "Deployment")
        cls.config = dict(kv.split("=", 1) for kv in yaml.safe_load(
            (BASE / "kustomization.yaml").read_text())["configMapGenerator"][0]["literals"])

    def test_every_service_has_deployment_service_and_pdb_on_its_port(self):
        services, pdbs = by_kind(self.docs, "Service"), by_kind(self.docs, "PodDisruptionBudget")
        for name, (binary, port) in ports.SERVICES.items():
            with self.subTest(service=name):
                deployment = self.deployments[name]
                container = deployment["spec"]["template"]["spec"]["containers"][0]
                self.assertEqual(container["image"], f"shop/{binary}")
                self.assertEqual(container["ports"][0]["containerPort"], port)
                env = env_of(deployment)
                self.assertEqual(env["SHOP_HTTP_ADDR"]["value"], f"0.0.0.0:{port}")
                self.assertEqual(env["SHOP_ADVERTISE_URL"]["value"], f"http://$(POD_IP):{port}")
                self.assertEqual(services[name]["spec"]["ports"][0]["port"], port)
                self.assertIn(name, pdbs)

    def test_peer_urls_point_at_the_services(self):
        peers = {"SHOP_CUSTOMER_URL": "customer", "SHOP_PRODUCT_URL": "product", "SHOP_ORDER_URL": "order",
                 "SHOP_PAYMENT_URL": "payment", "SHOP_SAGA_URL": "saga-orchestrator",
                 "SHOP_PROJECTORS_URL": "projectors"}
        for var, name in peers.items():
            self.assertEqual(self.config[var], f"http://{name}:{ports.SERVICES[name][1]}")

    def test_each_database_is_a_cnpg_cluster_the_service_points_at(self):
        clusters = by_kind(self.docs, "Cluster")
        for name, database in ports.SERVICE_DATABASES.items():
            with self.subTest(service=name):
                url = env_of(self.deployments[name])["SHOP_DATABASE_URL"]["value"]
                host, db, root = re.fullmatch(
                    r"postgres://([a-z0-9-]+)-rw:5432/(\w+)\?sslmode=verify-full&sslrootcert=(/\S+)", url).groups()
                self.assertEqual(db, database)
                # the root certificate is the cluster's CA, from the Secret CNPG writes, and only it
                self.assertEqual(mounted_secret(self.deployments[name], root), (f"{host}-ca", "ca.crt"))
                initdb = clusters[host]["spec"]["bootstrap"]["initdb"]
                self.assertEqual(initdb["database"], database)
                secret = env_of(self.deployments[name])["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
                self.assertEqual(initdb["secret"]["name"], secret)
        others = set(self.deployments) - set(ports.SERVICE_DATABASES)
        for name in others:
            self.assertNotIn("SHOP_DATABASE_URL", env_of(self.deployments[name]), name)

    def test_services_run_with_the_launchers_malloc_arenas(self):
        self.assertEqual(self.config["MALLOC_ARENA_MAX"], MALLOC_ARENA_MAX)

    def test_services_log_in_to_kafka_over_tls(self):
        brokers = self.config["SHOP_KAFKA_BROKERS"]
        host, ca = re.fullmatch(r"sasl_ssl://([a-z0-9.-]+:9093)\?ssl\.ca\.location=(/\S+)", brokers).groups()
        self.assertEqual(host, "shop-kafka-bootstrap:9093")
        kafka = by_kind(self.docs, "Kafka")["shop"]["spec"]["kafka"]
        self.assertEqual([(l["port"], l["tls"], l["authentication"]["type"]) for l in kafka["listeners"]],
                         [(9093, True, "scram-sha-512")], "one listener: TLS with SCRAM logins")
        self.assertNotIn("superUsers", kafka["authorization"])
        patch = load(BASE / "services" / "kafka-ca.yaml")[0]
        self.assertEqual(mounted_secret(patch, ca), ("shop-cluster-ca-cert", "ca.crt"))
        users = by_kind(self.docs, "KafkaUser")
        for name in ports.SERVICES:
            if name == "gateway":
                continue
            with self.subTest(service=name):
                env = env_of(self.deployments[name])
                secret = env["SHOP_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
                self.assertEqual(env["SHOP_KAFKA_SASL_USERNAME"]["valueFrom"]["secretKeyRef"]["name"], secret)
                self.assertEqual(users[name]["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]
                                 ["name"], secret)

    def test_every_topic_of_the_code_is_a_kafka_topic(self):
        topics = code_topics()
        self.assertGreaterEqual(len(topics), 8)
        wanted = topics | {f"{t}.dlq" for t in topics}
        self.assertEqual(set(by_kind(self.docs, "KafkaTopic")), wanted)

    def test_every_consumer_group_scales_on_lag_and_has_a_kafka_user(self):
        groups = code_groups()
        self.assertGreaterEqual(len(groups), 6)
        scaled = {t["metadata"]["consumerGroup"] for so in by_kind(self.docs, "ScaledObject").values()
                  for t in so["spec"]["triggers"] if t["type"] == "kafka"}
        self.assertEqual(scaled, groups)
        readable = {acl["resource"]["name"] for user in by_kind(self.docs, "KafkaUser").values()
                    for acl in user["spec"]["authorization"]["acls"]
                    if acl["resource"]["type"] == "group" and "Read" in acl["operations"]}
        self.assertLessEqual(groups, readable)

    def test_scaled_deployments_leave_replicas_to_keda(self):
        for name, so in by_kind(self.docs, "ScaledObject").items():
            target = so["spec"]["scaleTargetRef"]["name"]
            self.assertNotIn("replicas", self.deployments[target]["spec"], target)

    def test_dev_realm_is_composes(self):
        self.assertEqual((K8S / "overlays" / "dev" / "keycloak" / "shop-realm.json").read_bytes(),
                         (REPO / "compose" / "keycloak" / "shop-realm.json").read_bytes())


if __name__ == "__main__":
    unittest.main()
