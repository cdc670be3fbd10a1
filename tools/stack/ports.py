"""The one table of the local stack's components, ports and service settings.

The launcher (`./stack`), the compose consistency test and the docs read this
table; the Rust services' defaults (runtime::config) use the same values.
"""

# component name -> main loopback port (as named by `./stack status`, `restart NAME`, `logs NAME`)
INFRA_PORTS = {
    "kafka": 9092,
    "postgres": 5432,
    "mongo": 27017,
    "registry": 8090,
    "zipkin": 9411,
    "keycloak": 8180,
    "mailpit": 8025,  # web/API; SMTP on MAILPIT_SMTP_PORT
    "etcd": 2379,
    "prometheus": 9090,
}
MAILPIT_SMTP_PORT = 1025
KAFKA_CONTROLLER_PORT = 9093
ETCD_PEER_PORT = 2380
KEYCLOAK_MANAGEMENT_PORT = 8181  # health (Keycloak's default 9000 clashes too easily)

# component name -> (cargo binary name, port)
SERVICES = {
    "gateway": ("gateway", 8080),
    "customer": ("customer-service", 8081),
    "product": ("product-service", 8082),
    "order": ("order-service", 8083),
    "payment": ("payment-service", 8084),
    "notification": ("notification-service", 8085),
    "saga-orchestrator": ("saga-orchestrator", 8086),
    "projectors": ("projectors", 8087),
}

# PostgreSQL: one superuser for the local stack; each service owns its database
PG_USER = "shop"
PG_PASSWORD = "shop"
# component name -> its own PostgreSQL database (services create theirs if missing)
SERVICE_DATABASES = {
    "customer": "shop_customer",
    "product": "shop_product",
    "order": "shop_order",
    "payment": "shop_payment",
    "notification": "shop_notification",
    "saga-orchestrator": "shop_saga",
}
