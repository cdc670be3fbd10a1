"""Mailpit: SMTP on loopback for the notification service, REST API (and a blank UI: the module
archive carries no web assets) to read what was sent."""

from __future__ import annotations

from pathlib import Path

from tools.stack import ports, tls
from tools.stack.components.base import BACKGROUND, Component, go_build, http_ok

VERSION = "v1.33.1"


class Mailpit(Component):
    name = "mailpit"
    niceness = BACKGROUND
    start_timeout = 30.0

    @property
    def binary(self) -> Path:
        return self.cache_dir / VERSION / "mailpit"

    def installed(self) -> bool:
        return self.binary.exists()

    def install(self) -> None:
        go_build(self.ctx, self.name, ["install", f"github.com/axllent/mailpit@{VERSION}"],
                 env={"GOBIN": str(self.binary.parent)})

    def command(self) -> list[str]:
        certs = tls.ensure(self.ctx)
        return [str(self.binary), "--smtp", f"127.0.0.1:{ports.MAILPIT_SMTP_PORT}",
                "--listen", f"127.0.0.1:{self.port}", "--database", str(self.data_dir / "mail.db"),
                "--smtp-auth-accept-any", "--smtp-auth-allow-insecure", "--disable-version-check",
                # Mailpit keeps 500 messages by default; a benchmark's audit counts every e-mail of
                # tens of thousands of orders, so keep them all (`./stack down --wipe` clears them).
                "--max", "0",
                # The receiving end of "e-mail once": notification names every e-mail after its
                # event (`Message-ID: <event id@notification.shop>`), so a send repeated after a
                # crash between the server's acceptance and the sent log lands once in the mailbox.
                "--ignore-duplicate-ids",
                # Chaos lets a test make the SMTP server refuse (`PUT /api/v1/chaos`): the browser
                # test parks a notification on a DLQ that way. Off until set; loopback only.
                "--enable-chaos",
                # STARTTLS on offer (not required) with the data folder's certificate, for the
                # mailer's TLS test; the notification service's plain host:port never asks for it.
                "--smtp-tls-cert", str(certs.cert), "--smtp-tls-key", str(certs.key)]

    def env(self) -> dict[str, str | None]:
        return {key: None for key in ("MP_DATABASE", "MP_SMTP_BIND_ADDR", "MP_UI_BIND_ADDR")}

    def health(self) -> bool:
        return http_ok(f"http://127.0.0.1:{self.port}/readyz")

    def urls(self) -> list[tuple[str, str]]:
        return [("API", f"http://127.0.0.1:{self.port}/api/v1/messages"),
                ("SMTP", f"127.0.0.1:{ports.MAILPIT_SMTP_PORT}")]


COMPONENT = Mailpit
