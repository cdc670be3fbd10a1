"""The local stack's components, ports and service settings, from ports.toml beside this file: the
one table that the launcher, the consistency tests, the Rust services' defaults (runtime::config
embeds the file) and the end-to-end tests all read.
"""

import tomllib
from pathlib import Path

_TABLE = tomllib.loads((Path(__file__).with_name("ports.toml")).read_text(encoding="utf-8"))

# component name -> main loopback port (as named by `./stack status`, `restart NAME`, `logs NAME`)
INFRA_PORTS: dict[str, int] = dict(_TABLE["infra"])
MAILPIT_SMTP_PORT: int = _TABLE["other"]["mailpit_smtp"]
KAFKA_CONTROLLER_PORT: int = _TABLE["other"]["kafka_controller"]
ETCD_PEER_PORT: int = _TABLE["other"]["etcd_peer"]
ETCD_TLS_PORT: int = _TABLE["other"]["etcd_tls"]
KEYCLOAK_MANAGEMENT_PORT: int = _TABLE["other"]["keycloak_management"]
KAFKA_SASL_SSL_PORT: int = _TABLE["other"]["kafka_sasl_ssl"]
KEYCLOAK_HTTPS_PORT: int = _TABLE["other"]["keycloak_https"]
MONGO_TLS_PORT: int = _TABLE["other"]["mongo_tls"]
KAFKA_CUT_PORT: int = _TABLE["other"]["kafka_cut"]
# `./stack chaos`: the fault proxy of the instance it cuts off listens this far above each port
CUT_OFFSET: int = _TABLE["chaos"]["cut_offset"]

# component name -> (cargo binary name, port)
SERVICES: dict[str, tuple[str, int]] = {name: (s["binary"], s["port"]) for name, s in _TABLE["services"].items()}

# PostgreSQL: one superuser for the local stack; each service owns its database
PG_USER: str = _TABLE["postgres"]["user"]
PG_PASSWORD: str = _TABLE["postgres"]["password"]
# logins that work only over TLS: PostgreSQL's (refused without TLS) and Kafka's SCRAM login
PG_TLS_USER: str = _TABLE["tls"]["postgres_user"]
PG_TLS_PASSWORD: str = _TABLE["tls"]["postgres_password"]
KAFKA_SCRAM_USER: str = _TABLE["tls"]["kafka_user"]
KAFKA_SCRAM_PASSWORD: str = _TABLE["tls"]["kafka_password"]
# component name -> its own PostgreSQL database (services create theirs if missing)
SERVICE_DATABASES: dict[str, str] = {name: s["database"] for name, s in _TABLE["services"].items() if "database" in s}

# Every port by name: services, servers and their other ports (the Rust side's `default_port`).
PORTS: dict[str, int] = {**{name: port for name, (_, port) in SERVICES.items()}, **INFRA_PORTS, **_TABLE["other"]}

# Services that `./stack up --replicas N` runs N instances of (the gateway is the one entry point).
REPLICATED: tuple[str, ...] = tuple(name for name in SERVICES if name != "gateway")
# Instance i (from 1) of a service listens on its port + REPLICA_PORT_STEP * (i - 1): 9081-9087 for
# the second instances, clear of every port above.
REPLICA_PORT_STEP = 1000
MAX_REPLICAS = 4


def instance_name(service: str, instance: int) -> str:
    """`order` for the first instance, `order-2` for the second, ..."""
    return service if instance == 1 else f"{service}-{instance}"


def instance_port(service: str, instance: int) -> int:
    return SERVICES[service][1] + REPLICA_PORT_STEP * (instance - 1)


def replica_of(name: str) -> tuple[str, int] | None:
    """(service, instance) of an instance name beyond the first (`order-2`), else None."""
    base, _, number = name.rpartition("-")
    if base in REPLICATED and number.isdigit() and int(number) >= 2:
        return base, int(number)
    return None
