"""The storefront (/shop/) in real headless Chromium, against the running stack.

Each test signs in as a customer of its own, made in the realm for the test (so it has no
profile yet and a fresh credit of 1000.00 EUR once it registers), through Keycloak's own login
page, and orders a product made for the test. A customer registers on the first visit, orders,
and sees the order turn CONFIRMED without a reload (and finds the profile again from another
browser); an order over the credit shows REJECTED with its reason; a confirmed order is
cancelled and shows CANCELLED; a double click and a lost answer each place one order (checked
through the API); at 375 px the page does not scroll sideways and every control has an
accessible name. Any console error on the gateway's pages fails the test (support.py)."""

from __future__ import annotations

import json
import re
import unittest
import urllib.parse
import urllib.request
import uuid

from playwright.sync_api import Page, Route, expect
from support import GATEWAY, SETTLE_MS, BrowserTest

from tools.stack import demo
from tools.stack.components import keycloak

REALM_ADMIN = f"{keycloak.BASE_URL}/admin/realms/shop"
PHONE = {"width": 375, "height": 740}


def master_token() -> str:
    """A token of the master realm's bootstrap admin, for Keycloak's admin API."""
    form = urllib.parse.urlencode({"grant_type": "password", "client_id": "admin-cli",
                                   "username": keycloak.ADMIN_USER, "password": keycloak.ADMIN_PASSWORD}).encode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{keycloak.BASE_URL}/realms/master/protocol/openid-connect/token", data=form, timeout=30) as r:
        return json.loads(r.read())["access_token"]


def new_customer_user() -> tuple[str, str]:
    """A user of the realm with the customer role and no profile yet: (name = password, user id)."""
    admin = master_token()
    name = f"shopper-{uuid.uuid4().hex[:10]}"
    demo.request("POST", f"{REALM_ADMIN}/users", {
        "username": name, "enabled": True, "email": f"{name}@shop.test", "emailVerified": True,
        "firstName": "Sam", "lastName": "Shopper", "requiredActions": [],
        "credentials": [{"type": "password", "value": name, "temporary": False}]}, bearer=admin)
    _, found = demo.request("GET", f"{REALM_ADMIN}/users?exact=true&username={name}", bearer=admin)
    user_id = found[0]["id"]
    _, role = demo.request("GET", f"{REALM_ADMIN}/roles/customer", bearer=admin)
    demo.request("POST", f"{REALM_ADMIN}/users/{user_id}/role-mappings/realm", [role], bearer=admin)
    return name, user_id


def delete_user(user_id: str) -> None:
    demo.request("DELETE", f"{REALM_ADMIN}/users/{user_id}", bearer=master_token(), accept=(404,))


def new_product(price_cents: int, stock: int) -> dict:
    """A product of its own for the test: {id, name, ...}."""
    tag = uuid.uuid4().hex[:8]
    product = {"sku": f"SHOP-UI-{tag}", "name": f"Storefront test item {tag}", "price_cents": price_cents,
               "currency": "EUR", "stock": stock}
    _, created = demo.request("POST", f"{GATEWAY}/api/products", product, bearer=demo.token("admin"))
    return {**product, "id": created["id"]}


class Storefront(BrowserTest):
    def setUp(self):
        super().setUp()
        self.user, user_id = new_customer_user()
        self.addCleanup(delete_user, user_id)

    # --- steps ---------------------------------------------------------------------------------

    def open_shop(self, page: Page) -> None:
        self.sign_in(page, self.user, path="/shop/")
        self.assertNotIn("code=", page.url, "the code is removed from the address after the sign-in")

    def register(self, page: Page) -> None:
        """The first visit asks for a profile; afterwards the shop shows."""
        form = page.locator("#register")
        expect(form).to_be_visible()
        expect(page.locator("#store")).to_be_hidden()
        page.get_by_label("Name").fill("Sam Shopper")
        page.get_by_label("E-mail").fill(f"{self.user}@example.com")
        page.get_by_role("button", name="Create profile").click()
        expect(page.locator("#store")).to_be_visible()
        expect(form).to_be_hidden()
        expect(page.locator("#profile")).to_contain_text("Sam Shopper")

    def add(self, page: Page, product: dict) -> None:
        page.get_by_role("button", name=f"Add to basket: {product['name']}").click()
        expect(page.locator(f'#basket-lines li[data-id="{product["id"]}"]')).to_be_visible()

    def stock(self, page: Page, product: dict):
        return page.locator(f'#products li[data-id="{product["id"]}"] .stock')

    def order_status(self, page: Page, order_id: str):
        return page.locator(f'#orders li[data-id="{order_id}"] .badge')

    def placed_order(self, page: Page) -> str:
        """The id of the order the status line speaks of, once there is one."""
        status = page.locator("#order-status[data-order]")
        expect(status).to_have_count(1, timeout=SETTLE_MS)
        return status.get_attribute("data-order")

    def customer_id(self, page: Page) -> str:
        return page.evaluate("""() => Object.entries(localStorage)
            .find(([k]) => k.startsWith("shop.customer:"))[1]""")

    def orders_through_the_api(self, customer_id: str) -> list[dict]:
        _, orders = demo.request("GET", f"{GATEWAY}/api/orders?customer_id={customer_id}",
                                 bearer=demo.token(self.user))
        return orders

    # --- tests ---------------------------------------------------------------------------------

    def test_a_customer_registers_orders_and_sees_it_confirmed_without_a_reload(self):
        product = new_product(price_cents=1250, stock=5)
        page = self.page
        self.open_shop(page)
        self.register(page)
        page.evaluate("() => { window.sameDocument = true; }")

        expect(self.stock(page, product)).to_have_text("5 in stock")
        self.add(page, product)
        self.add(page, product)
        expect(page.locator("#basket-total")).to_have_text("25.00 EUR")
        quantity = page.get_by_label(f"Quantity of {product['name']}")
        quantity.fill("1")
        quantity.press("Enter")
        expect(page.locator("#basket-total")).to_have_text("12.50 EUR")

        page.get_by_role("button", name="Place order").click()
        order_id = self.placed_order(page)
        status = page.locator("#order-status")
        expect(status).to_contain_text("CONFIRMED", timeout=SETTLE_MS)
        expect(self.order_status(page, order_id)).to_have_text("CONFIRMED")
        expect(page.locator("#basket-lines")).to_contain_text("Your basket is empty")
        # Once the order settled the catalog was read again: one fewer in stock.
        expect(self.stock(page, product)).to_have_text("4 in stock")
        self.assertTrue(page.evaluate("() => window.sameDocument === true"), "the page was reloaded")

        # Another browser: no profile remembered there, the one of the user's orders is found.
        elsewhere = self.open_page()
        self.open_shop(elsewhere)
        expect(elsewhere.locator("#store")).to_be_visible()
        expect(elsewhere.locator("#register")).to_be_hidden()
        expect(self.order_status(elsewhere, order_id)).to_have_text("CONFIRMED")

    def test_an_order_over_the_credit_is_rejected_with_its_reason(self):
        # 2 x 600.00 EUR is over the new customer's credit of 1000.00 EUR: payment declined.
        product = new_product(price_cents=60_000, stock=10)
        page = self.page
        self.open_shop(page)
        self.register(page)
        self.add(page, product)
        self.add(page, product)
        expect(page.locator("#basket-total")).to_have_text("1200.00 EUR")
        page.get_by_role("button", name="Place order").click()
        order_id = self.placed_order(page)
        expect(page.locator("#order-status")).to_contain_text("REJECTED", timeout=SETTLE_MS)
        expect(page.locator("#order-status")).to_contain_text("credit")
        order = page.locator(f'#orders li[data-id="{order_id}"]')
        expect(order.locator(".badge")).to_have_text("REJECTED")
        expect(order.locator(".reason")).to_contain_text("credit")
        expect(order.get_by_role("button", name="Cancel order")).to_have_count(0)

    def test_a_confirmed_order_is_cancelled(self):
        product = new_product(price_cents=990, stock=3)
        page = self.page
        self.open_shop(page)
        self.register(page)
        self.add(page, product)
        page.get_by_role("button", name="Place order").click()
        order_id = self.placed_order(page)
        order = page.locator(f'#orders li[data-id="{order_id}"]')
        expect(order.locator(".badge")).to_have_text("CONFIRMED", timeout=SETTLE_MS)
        expect(self.stock(page, product)).to_have_text("2 in stock")

        order.get_by_role("button", name="Cancel order").click()
        expect(order.locator(".badge")).to_have_text("CANCELLED", timeout=SETTLE_MS)
        expect(page.locator("#order-status")).to_contain_text("CANCELLED")
        expect(order.get_by_role("button", name="Cancel order")).to_have_count(0)
        # The stock came back before the order was cancelled, and the catalog is read again (the
        # catalog's projection may show it a moment after the order's).
        expect(self.stock(page, product)).to_have_text("3 in stock", timeout=SETTLE_MS)

    def test_a_double_click_places_one_order(self):
        product = new_product(price_cents=500, stock=10)
        page = self.page
        self.open_shop(page)
        self.register(page)
        self.add(page, product)
        page.get_by_role("button", name="Place order").dblclick()
        order_id = self.placed_order(page)
        expect(self.order_status(page, order_id)).to_have_text("CONFIRMED", timeout=SETTLE_MS)
        orders = self.orders_through_the_api(self.customer_id(page))
        self.assertEqual([o["id"] for o in orders], [order_id])
        expect(page.locator("#orders > li[data-id]")).to_have_count(1)

    def test_an_answer_lost_on_the_way_is_asked_again_with_the_same_key(self):
        product = new_product(price_cents=700, stock=10)
        page = self.page
        self.open_shop(page)
        self.register(page)
        self.add(page, product)

        # The first POST reaches the gateway, which places the order, but its answer is lost.
        keys: list[str] = []

        def lose_the_first_answer(route: Route) -> None:
            if route.request.method != "POST":
                route.fallback()
                return
            keys.append(route.request.headers.get("idempotency-key", ""))
            if len(keys) == 1:
                route.fetch()
                route.abort("connectionreset")
            else:
                route.fallback()

        page.route(lambda url: urllib.parse.urlparse(url).path == "/api/orders", lose_the_first_answer)
        self.tolerate("ERR_CONNECTION_RESET")
        page.get_by_role("button", name="Place order").click()
        order_id = self.placed_order(page)
        expect(self.order_status(page, order_id)).to_have_text("CONFIRMED", timeout=SETTLE_MS)
        self.assertEqual(len(keys), 2, keys)
        self.assertEqual(keys[0], keys[1], "the retry carries the first attempt's Idempotency-Key")
        self.assertRegex(keys[0], r"^[0-9a-f-]{36}$")
        orders = self.orders_through_the_api(self.customer_id(page))
        self.assertEqual([o["id"] for o in orders], [order_id])

    def test_a_press_that_spans_a_catalog_refresh_still_adds(self):
        product = new_product(price_cents=450, stock=10)
        page = self.page
        self.open_shop(page)
        self.register(page)
        button = page.get_by_role("button", name=f"Add to basket: {product['name']}")
        button.scroll_into_view_if_needed()  # the catalog may be longer than the window
        box = button.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        # The catalog is read again and shown while the button is held (as the stock timer or a
        # settled order would have it): the button under the pointer must stay the same element.
        with page.expect_response(lambda r: urllib.parse.urlparse(r.url).path == "/api/products"):
            page.evaluate("() => document.dispatchEvent(new Event('visibilitychange'))")
        expect(self.stock(page, product)).to_have_text("10 in stock")
        page.wait_for_timeout(200)  # the answer rendered
        page.mouse.up()
        expect(page.locator(f'#basket-lines li[data-id="{product["id"]}"]')).to_be_visible()
        expect(page.locator("#basket-total")).to_have_text("4.50 EUR")

    def test_at_phone_width_nothing_scrolls_sideways_and_every_control_is_named(self):
        product = new_product(price_cents=1999, stock=10)
        page = self.page
        page.set_viewport_size(PHONE)
        self.open_shop(page)
        expect(page.locator("#register")).to_be_visible()
        self.assert_fits_and_named(page)
        self.register(page)

        # With the keyboard only: the controls are buttons, Enter works them.
        page.get_by_role("button", name=f"Add to basket: {product['name']}").focus()
        page.keyboard.press("Enter")
        expect(page.locator(f'#basket-lines li[data-id="{product["id"]}"]')).to_be_visible()
        page.get_by_role("button", name="Place order").focus()
        page.keyboard.press("Enter")
        order_id = self.placed_order(page)
        expect(self.order_status(page, order_id)).to_have_text("CONFIRMED", timeout=SETTLE_MS)
        self.add(page, product)  # a basket line with its inputs, next to the history
        self.assert_fits_and_named(page)
        self.assertEqual(page.locator("#order-status").get_attribute("aria-live"), "polite")

    def assert_fits_and_named(self, page: Page) -> None:
        overflow = page.evaluate("""() => ({ page: document.documentElement.scrollWidth,
            view: document.documentElement.clientWidth,
            wide: [...document.querySelectorAll("body *")]
                .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
                .map((e) => e.id || e.className || e.tagName) })""")
        self.assertLessEqual(overflow["page"], overflow["view"], f"scrolls sideways: {overflow}")
        controls = page.locator("input:visible, button:visible, select:visible, textarea:visible")
        self.assertGreater(controls.count(), 0)
        for i in range(controls.count()):
            expect(controls.nth(i)).to_have_accessible_name(re.compile(r"\S"))


if __name__ == "__main__":
    unittest.main()
