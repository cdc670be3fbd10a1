"""The saga dashboard in real headless Chromium, against the running stack.

An admin signs in through Keycloak's own login page (authorization code + PKCE), sees the saga
of an order placed just before appear on its own, follows it to CONFIRMED, and opens its steps
and history; a declined order shows the failed step and the compensation that ran; a customer
is told the dashboard needs the admin role. Any console error on the gateway's pages (a script
error, a failed request, a Content-Security-Policy violation) fails the test (support.py)."""

from __future__ import annotations

import unittest
import uuid

from playwright.sync_api import expect
from support import GATEWAY, SETTLE_MS, BrowserTest

from tools.stack import demo


def place_order(price_cents: int, quantity: int) -> str:
    """A new product and customer (so a fresh credit of 100000 cents), and one order; its id."""
    admin, alice = demo.token("admin"), demo.token("alice")
    tag = uuid.uuid4().hex[:8]
    _, product = demo.request("POST", f"{GATEWAY}/api/products", {
        "sku": f"UI-{tag}", "name": f"Dashboard test item {tag}", "price_cents": price_cents, "currency": "EUR",
        "stock": 10}, bearer=admin)
    _, customer = demo.request("POST", f"{GATEWAY}/api/customers",
                               {"name": "Alice", "email": f"alice-{tag}@example.com"}, bearer=alice)
    _, order = demo.request("POST", f"{GATEWAY}/api/orders", {
        "customer_id": customer["id"], "items": [{"product_id": product["id"], "quantity": quantity}]}, bearer=alice)
    return order["order_id"]


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
