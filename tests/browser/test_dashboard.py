"""The saga dashboard in real headless Chromium, against the running stack.

An admin signs in through Keycloak's own login page (authorization code + PKCE), sees the saga
of an order placed just before appear on its own, follows it to CONFIRMED, and opens its steps
and history; a declined order shows the failed step and the compensation that ran; a customer
is told the dashboard needs the admin role. Any console error on the gateway's pages (a script
error, a failed request, a Content-Security-Policy violation) fails the test."""

from __future__ import annotations

import os
import unittest
import uuid
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from tools.stack import demo

GATEWAY = os.environ.get("SHOP_GATEWAY", "http://127.0.0.1:8080")
CHROMIUM = os.environ.get("SHOP_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("SHOP_BROWSER_ARTIFACTS", ".stack-data/browser"))
# Chromium on a machine without outside network: no background traffic, no sandbox as root.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SETTLE_MS = 60_000


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


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.playwright = sync_playwright().start()
        cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.playwright.stop()

    def setUp(self):
        self.context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        ours = lambda url: (url or "").startswith(GATEWAY)  # noqa: E731 - Keycloak's pages are not ours
        self.page.on("console", lambda m: self.errors.append(m.text)
                     if m.type == "error" and ours(m.location.get("url")) else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def tearDown(self):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self._testMethodName}.png"), full_page=True)
        self.context.close()
        self.assertEqual(self.errors, [], "console errors on the gateway's pages")

    def sign_in(self, page: Page, user: str) -> None:
        page.goto(f"{GATEWAY}/dashboard/")
        page.get_by_role("button", name="Sign in with Keycloak").click()
        page.wait_for_url("**/realms/shop/protocol/openid-connect/auth**")
        page.fill("#username", user)
        page.fill("#password", user)
        page.click("#kc-login")
        page.wait_for_url(f"{GATEWAY}/dashboard/**")

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
