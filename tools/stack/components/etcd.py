"""etcd from Debian (etcd-server): one member on loopback, data under <data>/etcd."""

from __future__ import annotations

import os

from tools.stack import ports, tls
from tools.stack.components.base import Component, StackError, apt_install, http_ok, which


class Etcd(Component):
    name = "etcd"
    start_timeout = 60.0

    def installed(self) -> bool:
        return which("etcd") is not None

    def install(self) -> None:
        apt_install(self.ctx, self.name, ["etcd-server"])

    def command(self) -> list[str]:
        etcd = which("etcd")
        if etcd is None:
            raise StackError("etcd: no `etcd` binary on PATH after installing etcd-server")
        # Clients in plain text, and over TLS on a second port with the data folder's certificate
        # (for the discovery client's TLS test).
        certs = tls.ensure(self.ctx)
        client = f"http://127.0.0.1:{self.port},https://127.0.0.1:{ports.ETCD_TLS_PORT}"
        peer = f"http://127.0.0.1:{ports.ETCD_PEER_PORT}"
        return [etcd, "--name", "n1", "--data-dir", str(self.data_dir / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--cert-file", str(certs.cert), "--key-file", str(certs.key),
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"n1={peer}", "--initial-cluster-state", "new",
                "--initial-cluster-token", "shop-stack"]

    def env(self) -> dict[str, str | None]:
        # ETCD_* variables would override the flags (or clash with them): start from none.
        return {key: None for key in os.environ if key.startswith("ETCD_")}

    def health(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/health")

    def urls(self) -> list[tuple[str, str]]:
        return [("", f"http://127.0.0.1:{self.port}")]


COMPONENT = Etcd
