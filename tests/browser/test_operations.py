"""The operators' pages for dead letters and projections in real headless Chromium, against the
running stack.

Mailpit's chaos switch makes the SMTP server refuse every recipient (550) while an order is
placed: the notification service cannot send its confirmation, parks the `OrderConfirmed` event
on `order.events.dlq` (a permanent SMTP error is not retried) and the page shows it decoded, with
the error. With the server accepting mail again, an admin redrives it from the page with a
reason: the page records who and why, the notification service handles the event again and the
e-mail arrives. A customer's token gets 403 from the same API.

On the projections page an admin sees every consumer group's lag per partition, starts a rebuild
of the orders read model, watches its progress and sees it end; the orders are served
throughout."""

from __future__ import annotations

import json
import time
import unittest
import urllib.parse
import urllib.request

from playwright.sync_api import expect
from support import GATEWAY, SETTLE_MS, BrowserTest
from test_dashboard import place_order

from tools.stack import demo, ports

MAILPIT = f"http://127.0.0.1:{ports.INFRA_PORTS['mailpit']}"
DLQ = "order.events.dlq"


def mailpit(method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{MAILPIT}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read() or b"{}")


def refusing_smtp(on: bool) -> None:
    """Mailpit refuses every recipient with 550 (a permanent error), or accepts mail again."""
    trigger = {"ErrorCode": 550, "Probability": 100 if on else 0}
    triggers = mailpit("PUT", "/api/v1/chaos", {"Recipient": trigger})
    assert triggers["Recipient"]["Probability"] == trigger["Probability"], triggers


def parked_confirmation(order_id: str, admin: str) -> dict | None:
    """The open dead letter of this order's `OrderConfirmed`, if it is parked yet."""
    _, dead = demo.request("GET", f"{GATEWAY}/api/dlq?limit=500", bearer=admin, timeout=30)
    queue = next((q for q in dead["queues"] if q["dlq"] == DLQ), None)
    for m in (queue or {}).get("messages", []):
        if m["key"] == order_id and (m["record"] or "").endswith("OrderConfirmed"):
            return m
    return None


def wait_for(what: str, probe, seconds: float = SETTLE_MS / 1000):
    give_up = time.monotonic() + seconds
    while (found := probe()) is None:
        if time.monotonic() > give_up:
            raise AssertionError(f"{what} within {seconds} s")
        time.sleep(1)
    return found


class DeadLetters(BrowserTest):
    def test_a_notification_parked_by_a_refusing_smtp_server_is_redriven_from_the_page_and_sent(self):
        admin, alice = demo.token("admin"), demo.token("alice")
        refusing_smtp(True)
        try:
            order_id = place_order(price_cents=1500, quantity=1)
            parked = wait_for(f"the OrderConfirmed of {order_id} parked on {DLQ}",
                              lambda: parked_confirmation(order_id, admin))
        finally:
            refusing_smtp(False)
        self.assertEqual(parked["state"], "open")
        self.assertIn("550", parked["error"])
        self.assertEqual(parked["payload"]["order_id"], order_id)
        subject = f"Your order {order_id} is confirmed"
        self.assertEqual(mailpit("GET", f"/api/v1/search?query={urllib.parse.quote(order_id)}")["messages_count"], 0)

        # Operators only, at the API itself.
        action = f"{GATEWAY}/api/dlq/{DLQ}/{parked['partition']}/{parked['offset']}/redrive"
        status, body = demo.request("POST", action, {"reason": "I am not an operator"}, bearer=alice,
                                    accept=(403,))
        self.assertEqual(status, 403, body)
        self.assertEqual(demo.request("GET", f"{GATEWAY}/api/dlq", bearer=alice, accept=(403,))[0], 403)

        page = self.page
        self.sign_in(page, "admin", path="/dashboard/dead-letters/")
        page.get_by_label("open only").uncheck()
        entry = page.locator(f'section[data-dlq="{DLQ}"] li.dead-letter[data-offset="{parked["offset"]}"]')
        expect(entry).to_have_attribute("data-state", "open", timeout=SETTLE_MS)
        expect(entry.locator(".error-text")).to_contain_text("550")
        entry.locator("summary").click()
        expect(entry.locator("pre.payload")).to_contain_text(order_id)
        entry.locator('input[name="reason"]').fill("the SMTP server accepts mail again")
        entry.get_by_role("button", name="Redrive").click()
        expect(entry).to_have_attribute("data-state", "redriven", timeout=SETTLE_MS)
        expect(entry.locator(".handled")).to_contain_text("by admin")
        expect(entry.locator(".handled")).to_contain_text("the SMTP server accepts mail again")

        # Processed: the notification service sends the e-mail it could not send before, once.
        found = wait_for(f"the e-mail {subject!r}", lambda: (
            lambda r: r if r["messages_count"] > 0 else None)(
                mailpit("GET", f"/api/v1/search?query={urllib.parse.quote(order_id)}")))
        self.assertEqual([m["Subject"] for m in found["messages"]], [subject])
        again = demo.request("POST", action, {"reason": "twice"}, bearer=admin, accept=(409,))
        self.assertEqual(again[0], 409, again)
        self.assertIn("re-driven", again[1]["error"])
        redriven = demo.request("GET", f"{GATEWAY}/api/dlq?limit=500", bearer=admin, timeout=30)[1]
        ours = [m for q in redriven["queues"] if q["dlq"] == DLQ for m in q["messages"] if m["key"] == order_id]
        self.assertEqual([(m["offset"], m["state"]) for m in ours], [(parked["offset"], "redriven")],
                         "the redriven event was handled, not parked again")
        self.assertEqual(ours[0]["handled"]["by"], "admin")

        # The payment e-mail of the same order was parked too: discarded, it stays, marked so.
        payments = [m for q in redriven["queues"] if q["dlq"] == "payment.events.dlq" for m in q["messages"]
                    if (m["payload"] or {}).get("order_id") == order_id and m["state"] == "open"]
        self.assertEqual(len(payments), 1, payments)
        discard = f"{GATEWAY}/api/dlq/payment.events.dlq/{payments[0]['partition']}/{payments[0]['offset']}/discard"
        self.assertEqual(demo.request("POST", discard, {"reason": "a test's own mail"}, bearer=admin)[0], 200)
        after = demo.request("GET", f"{GATEWAY}/api/dlq?limit=500", bearer=admin, timeout=30)[1]
        mine = [m for q in after["queues"] if q["dlq"] == "payment.events.dlq" for m in q["messages"]
                if m["offset"] == payments[0]["offset"]]
        self.assertEqual([(m["state"], m["handled"]["reason"]) for m in mine], [("discarded", "a test's own mail")])


class Projections(BrowserTest):
    def test_an_admin_rebuilds_a_read_model_from_the_page_and_watches_it_progress_and_end(self):
        admin, alice = demo.token("admin"), demo.token("alice")
        place_order(price_cents=900, quantity=1)  # the orders topic holds something to replay
        self.assertEqual(demo.request("POST", f"{GATEWAY}/api/projections/rebuild", {"read_models": ["orders"]},
                                      bearer=alice, accept=(403,))[0], 403)
        page = self.page
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/api/projections") else None)
        self.sign_in(page, "admin", path="/dashboard/projections/")
        expect(page.locator('#projections tr[data-name="orders"]')).to_be_visible()
        # Every consumer group's lag per partition: the saga orchestrator's on the order events.
        saga_rows = page.locator('#consumers tr[data-group="saga-orchestrator"][data-topic="order.events"]')
        expect(saga_rows.first).to_be_visible()
        consumers = demo.request("GET", f"{GATEWAY}/api/consumers", bearer=admin)[1]["groups"]
        saga = next(g for g in consumers if g["group"] == "saga-orchestrator")
        self.assertEqual(saga_rows.count(), len([p for p in saga["partitions"] if p["topic"] == "order.events"]))
        self.assertTrue(all(p["lag"] == p["high_watermark"] - p["committed"] for p in saga["partitions"]), saga)
        self.assertEqual(demo.request("GET", f"{GATEWAY}/api/consumers", bearer=alice, accept=(403,))[0], 403)
        done = page.locator('#rebuilds li.rebuild[data-id="orders"][data-state="done"]')
        before = done.count()

        page.get_by_label("orders").check()
        page.get_by_role("button", name="Rebuild").click()
        expect(page.locator("#rebuild-outcome")).to_have_text("Rebuild orders started.")
        running = page.locator('#rebuilds li.rebuild[data-id="orders"]:not([data-state="done"])')
        expect(running.locator("progress")).to_be_visible(timeout=SETTLE_MS)
        expect(running.locator(".progress-text")).to_contain_text("% read")
        # The orders are served while it runs.
        self.assertEqual(demo.request("GET", f"{GATEWAY}/api/orders", bearer=admin)[0], 200)

        expect(done).to_have_count(before + 1, timeout=SETTLE_MS)
        expect(running).to_have_count(0)
        self.assertRegex(done.first.inner_text(), r"[1-9]\d* events applied, started by admin")
        self.assertEqual(polls, [], "the status comes by server-sent events, not by polling")
        status = demo.request("GET", f"{GATEWAY}/api/projections", bearer=admin)[1]
        orders = next(p for p in status["projections"] if p["name"] == "orders")
        self.assertRegex(orders["active_collection"], r"^orders__rebuild_\d+$")


class Landing(BrowserTest):
    def test_the_landing_page_leads_to_every_page(self):
        page = self.page
        page.goto(f"{GATEWAY}/")
        main = page.locator("main")
        for name, path in [("Shop", "/shop/"), ("Saga dashboard", "/dashboard/"), ("Dead letters", "/dashboard/dead-letters/"),
                           ("Projections", "/dashboard/projections/"), ("API docs", "/docs/")]:
            expect(main.get_by_role("link", name=name, exact=True)).to_have_attribute("href", path)
        # Signed out, each operator page offers the sign-in and shows nothing else.
        for path in ("/dashboard/dead-letters/", "/dashboard/projections/"):
            other = self.open_page()
            other.goto(f"{GATEWAY}{path}")
            expect(other.get_by_role("button", name="Sign in with Keycloak")).to_be_visible()
            expect(other.locator("#board")).to_be_hidden()


if __name__ == "__main__":
    unittest.main()
