"""The saga dashboard in real headless Chromium, against the running stack.

An admin signs in through Keycloak's own login page (authorization code + PKCE), sees the saga
of an order placed just before appear on its own, follows it to CONFIRMED, and opens its steps
and history; a declined order shows the failed step and the compensation that ran; an admin
finds an order by its id and opens its trace in Zipkin from the dashboard; with the payment
service stalled, an admin retries one saga and compensates a customer's sagas in bulk, each
recorded in the saga's history with who and why; a customer is told
the dashboard needs the admin role; the list follows the sagas by server-sent events, not a
timer. Any console error on the gateway's pages (a script
error, a failed request, a Content-Security-Policy violation) fails the test (support.py)."""

from __future__ import annotations

import re
import subprocess
import unittest
import uuid

from playwright.sync_api import expect
from support import GATEWAY, SETTLE_MS, BrowserTest

from tools.stack import demo, ports


def place_orders(price_cents: int, quantity: int, count: int) -> tuple[str, list[str]]:
    """A new product and customer (so a fresh credit of 100000 cents), and `count` orders of it:
    the customer's id and the orders' ids."""
    admin, alice = demo.token("admin"), demo.token("alice")
    tag = uuid.uuid4().hex[:8]
    _, product = demo.request("POST", f"{GATEWAY}/api/products", {
        "sku": f"UI-{tag}", "name": f"Dashboard test item {tag}", "price_cents": price_cents, "currency": "EUR",
        "stock": 10 * count}, bearer=admin)
    _, customer = demo.request("POST", f"{GATEWAY}/api/customers",
                               {"name": "Alice", "email": f"alice-{tag}@example.com"}, bearer=alice)
    orders = [demo.request("POST", f"{GATEWAY}/api/orders", {
        "customer_id": customer["id"], "items": [{"product_id": product["id"], "quantity": quantity}]},
        bearer=alice)[1]["order_id"] for _ in range(count)]
    return customer["id"], orders


def place_order(price_cents: int, quantity: int) -> str:
    """A new product and customer, and one order; its id."""
    return place_orders(price_cents, quantity, 1)[1][0]


class PaymentsHeld:
    """The payment service's event store locked (`LOCK TABLE events IN SHARE MODE` in an open
    transaction of psql's): its handler blocks on the append, so sagas wait at authorize_payment
    until the lock is released, as when the payment database stalls."""

    def __enter__(self) -> "PaymentsHeld":
        url = (f"postgresql://{ports.PG_USER}:{ports.PG_PASSWORD}@127.0.0.1:{ports.INFRA_PORTS['postgres']}/"
               f"{ports.SERVICE_DATABASES['payment']}")
        self.psql = subprocess.Popen(["psql", "-qAt", "-v", "ON_ERROR_STOP=1", url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.psql.stdin.write("SET lock_timeout = '10s'; BEGIN; LOCK TABLE events IN SHARE MODE; SELECT 'locked';\n")
        self.psql.stdin.flush()
        if self.psql.stdout.readline().strip() != "locked":
            self.psql.kill()
            raise AssertionError("could not lock the payment service's event store")
        return self

    def __exit__(self, *_) -> None:
        self.psql.communicate("ROLLBACK;\n", timeout=10)


class Dashboard(BrowserTest):
    def test_an_admin_watches_an_order_saga_confirm(self):
        order_id = place_order(price_cents=1200, quantity=1)
        page = self.page
        self.sign_in(page, "admin")
        expect(page.locator("#board")).to_be_visible()
        self.assertNotIn("code=", page.url, "the code is removed from the address after the sign-in")

        # The flow is drawn from the orchestrator's definition, step for step.
        definition = demo.request("GET", f"{GATEWAY}/api/sagas/definition", bearer=demo.token("admin"))[1]
        names = [s["name"] for s in definition["steps"]]
        expect(page.locator("#definition [data-step]")).to_have_count(len(names))
        self.assertEqual(page.locator("#definition [data-step]").evaluate_all(
            "nodes => nodes.map(n => n.dataset.step)"), names)

        # The order's saga shows up and finishes while the page refreshes itself.
        row = page.locator(f'#sagas tr[data-id="{order_id}"]')
        expect(row.locator(".badge")).to_have_text("CONFIRMED", timeout=SETTLE_MS)
        row.click()
        detail = page.locator("#detail")
        expect(detail).to_contain_text(order_id)
        expect(detail.locator(".node.done[data-step]")).to_have_count(len(names))
        expect(detail.locator("ol.timeline li").first).to_contain_text("saga started")
        expect(detail.locator("ol.timeline")).to_contain_text("order confirmed")

        # The status filter keeps only its own status.
        page.locator('#counts button[data-status="CONFIRMED"]').click()
        badges = page.locator("#sagas tbody .badge").all_inner_texts()
        self.assertTrue(badges and set(badges) == {"CONFIRMED"}, badges)

    def test_a_declined_payment_shows_the_failed_step_and_the_compensation(self):
        # 2 x 60000 cents is over the new customer's credit of 100000: stock is reserved, the
        # payment is declined, the reservation is released and the order rejected.
        order_id = place_order(price_cents=60_000, quantity=2)
        page = self.page
        self.sign_in(page, "admin")
        row = page.locator(f'#sagas tr[data-id="{order_id}"]')
        expect(row.locator(".badge")).to_have_text("REJECTED", timeout=SETTLE_MS)
        row.click()
        detail = page.locator("#detail")
        expect(detail.locator('.node.failed[data-step="authorize_payment"]')).to_have_count(1)
        expect(detail.locator('.node.done[data-step="reserve_stock"] .undo.ran')).to_contain_text("ReleaseStock")
        # The declined payment was never taken, so there was nothing to refund.
        expect(detail.locator('[data-step="authorize_payment"] .undo.ran')).to_have_count(0)
        expect(detail.locator("ol.timeline")).to_contain_text("payment declined")
        expect(detail.locator("ol.timeline")).to_contain_text("stock released")

    def test_an_admin_finds_an_order_by_its_id_and_opens_its_trace_in_zipkin(self):
        order_id = place_order(price_cents=60_000, quantity=2)
        page = self.page
        self.sign_in(page, "admin")
        page.locator('#search [name="order_id"]').fill(order_id)
        page.locator('#search button[type="submit"]').click()
        rows = page.locator("#sagas tbody tr[data-id]")
        expect(rows).to_have_count(1, timeout=SETTLE_MS)
        expect(rows.first).to_have_attribute("data-id", order_id)
        expect(rows.first.locator(".badge")).to_have_text("REJECTED", timeout=SETTLE_MS)
        rows.first.click()
        detail = page.locator("#detail")
        expect(detail.locator('.node.done[data-step="reserve_stock"] .undo.ran')).to_contain_text("ReleaseStock")
        link = detail.locator("a.trace")
        expect(link).to_be_visible()
        listed = demo.request("GET", f"{GATEWAY}/api/sagas?order_id={order_id}", bearer=demo.token("admin"))[1]
        trace_id = listed["items"][0]["trace_id"]
        self.assertRegex(trace_id, r"^[0-9a-f]{32}$")
        self.assertTrue(link.get_attribute("href").endswith(f"/zipkin/traces/{trace_id}"), link.get_attribute("href"))

        # The link opens Zipkin's page of that trace, which shows the order's path through the
        # services (spans reach Zipkin in batches: the page is reloaded until they are there).
        with page.context.expect_page() as opened:
            link.click()
        zipkin = opened.value
        zipkin.wait_for_load_state()
        for _ in range(30):
            if zipkin.get_by_text("saga-orchestrator", exact=False).count() > 0:
                break
            zipkin.wait_for_timeout(1000)
            zipkin.reload()
        expect(zipkin.get_by_text("saga-orchestrator", exact=False).first).to_be_visible()
        expect(zipkin.get_by_text("gateway", exact=False).first).to_be_visible()
        zipkin.close()

    def test_an_admin_retries_one_held_saga_and_compensates_every_one_of_a_customer_in_bulk(self):
        page = self.page
        self.sign_in(page, "admin")
        expect(page.locator("#board")).to_be_visible()
        # Signed in first: the sagas wait at a step with a 30 s timeout, which the operator beats.
        with PaymentsHeld():
            customer_id, orders = place_orders(price_cents=700, quantity=1, count=3)
            page.locator('#search [name="customer_id"]').fill(customer_id)
            page.locator('#search button[type="submit"]').click()
            rows = page.locator("#sagas tbody tr[data-id]")
            expect(rows).to_have_count(3, timeout=SETTLE_MS)
            for order_id in orders:
                row = page.locator(f'#sagas tr[data-id="{order_id}"]')
                expect(row.locator(".badge")).to_have_text("RUNNING")
                expect(row.locator("td").nth(4)).to_have_text("authorize_payment", timeout=SETTLE_MS)

            # One saga retried from its panel, with a reason its history keeps.
            page.locator(f'#sagas tr[data-id="{orders[0]}"]').click()
            detail = page.locator("#detail")
            detail.locator('input[name="reason"]').fill("payments look stuck, sending again")
            detail.get_by_role("button", name="Retry").click()
            expect(detail.locator(".actions [role=status]")).to_have_text("Sent again.")
            timeline = detail.locator("ol.timeline")
            expect(timeline).to_contain_text("retried by admin (", timeout=SETTLE_MS)
            expect(timeline).to_contain_text("): payments look stuck, sending again")

            # All three compensated at once over the search: a preview counts them first.
            bulk = page.locator("#bulk")
            bulk.locator('select[name="action"]').select_option("compensate")
            bulk.locator('input[name="reason"]').fill("payment database stalled; releasing their stock")
            page.locator("#bulk-preview").click()
            expect(page.locator("#bulk-outcome")).to_have_text("3 saga(s) match.")
            expect(page.locator("#bulk-apply")).to_have_text("Apply to 3")
            page.locator("#bulk-apply").click()
            expect(page.locator("#bulk-outcome")).to_have_text("Applied to 3.")

        # With the payment service moving again, each saga finishes rejected, its history saying
        # who compensated it and why.
        for order_id in orders:
            expect(page.locator(f'#sagas tr[data-id="{order_id}"] .badge')).to_have_text("REJECTED", timeout=SETTLE_MS)
        expect(detail.locator("ol.timeline")).to_contain_text(
            "compensated by admin: payment database stalled; releasing their stock", timeout=SETTLE_MS)
        admin = demo.token("admin")
        for order_id in orders:
            history = demo.request("GET", f"{GATEWAY}/api/sagas/{order_id}", bearer=admin)[1]["history"]
            self.assertTrue(any(h["what"].endswith("compensated by admin: payment database stalled; releasing their "
                                                   "stock") for h in history), history)

    def test_the_list_follows_the_sagas_by_server_sent_events_not_a_timer(self):
        page = self.page
        lists: list[str] = []
        page.on("request", lambda r: lists.append(r.url) if "/api/sagas?" in r.url else None)
        self.sign_in(page, "admin")
        status = page.locator("#live-status")
        expect(status).to_contain_text("live:")
        moved = lambda: int(re.search(r"live: (\d+) changes", status.inner_text()).group(1))  # noqa: E731
        page.wait_for_timeout(2000)

        # The list is read again only when a saga moved: with nothing moving, not at all.
        moved_before, lists_before = moved(), len(lists)
        page.wait_for_timeout(7000)
        self.assertLessEqual(len(lists) - lists_before, moved() - moved_before,
                             "the list was read without a saga moving: a timer, not the event stream")

        # An order placed now is announced by the stream and followed to its end.
        quiet = moved()
        order_id = place_order(price_cents=1100, quantity=1)
        expect(page.locator(f'#sagas tr[data-id="{order_id}"] .badge')).to_have_text("CONFIRMED", timeout=SETTLE_MS)
        self.assertGreater(moved(), quiet)

    def test_a_customer_is_told_the_dashboard_needs_the_admin_role(self):
        page = self.page
        self.sign_in(page, "alice")
        expect(page.locator("#error")).to_contain_text("lacks the admin role")
        expect(page.locator("#board")).to_be_hidden()
        expect(page.locator("#user")).to_contain_text("alice")

    def test_signed_out_the_page_offers_sign_in_and_shows_no_data(self):
        page = self.page
        page.goto(f"{GATEWAY}/dashboard/")
        expect(page.get_by_role("button", name="Sign in with Keycloak")).to_be_visible()
        expect(page.locator("#board")).to_be_hidden()


if __name__ == "__main__":
    unittest.main()
