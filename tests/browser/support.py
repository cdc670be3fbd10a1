"""What the browser tests share: where the gateway and Chromium are, one headless Chromium per
test class, a fresh browser context per page, sign-in through Keycloak's own login page, and the
rule that any console error on the gateway's pages (a script error, a failed request, a
Content-Security-Policy violation) fails the test."""

from __future__ import annotations

import os
import unittest
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

GATEWAY = os.environ.get("SHOP_GATEWAY", "http://127.0.0.1:8080")
CHROMIUM = os.environ.get("SHOP_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("SHOP_BROWSER_ARTIFACTS", ".stack-data/browser"))
# Chromium on a machine without outside network: no background traffic, no sandbox as root.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
SETTLE_MS = 60_000
DESKTOP = {"width": 1400, "height": 900}


class BrowserTest(unittest.TestCase):
    """`self.page` is a fresh page at `viewport`; `open_page()` gives more, each in its own context
    (its own sessionStorage and localStorage: another browser, as far as the pages can tell)."""

    viewport = DESKTOP

    @classmethod
    def setUpClass(cls):
        cls.playwright = sync_playwright().start()
        cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.playwright.stop()

    def setUp(self):
        self.errors: list[str] = []
        self.tolerated: list[str] = []
        self.pages: list[Page] = []
        self.page = self.open_page(self.viewport)

    def open_page(self, viewport: dict | None = None) -> Page:
        context = self.browser.new_context(viewport=viewport or self.viewport)
        page = context.new_page()
        ours = lambda url: (url or "").startswith(GATEWAY)  # noqa: E731 - Keycloak's pages are not ours
        page.on("console", lambda m: self.errors.append(m.text)
                if m.type == "error" and ours(m.location.get("url")) else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.pages.append(page)
        return page

    def tolerate(self, error: str) -> None:
        """One console error containing `error` may appear: this test provokes it on purpose."""
        self.tolerated.append(error)

    def tearDown(self):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for i, page in enumerate(self.pages):
            suffix = f"-{i + 1}" if i else ""
            page.screenshot(path=str(ARTIFACTS / f"{self._testMethodName}{suffix}.png"), full_page=True)
            page.context.close()
        errors = list(self.errors)
        for expected in self.tolerated:
            match = next((e for e in errors if expected in e), None)
            if match is not None:
                errors.remove(match)
        self.assertEqual(errors, [], "console errors on the gateway's pages")

    def sign_in(self, page: Page, user: str, path: str = "/dashboard/", password: str | None = None) -> None:
        """Open `path`, sign in through Keycloak's login page and come back to `path`."""
        page.goto(f"{GATEWAY}{path}")
        page.get_by_role("button", name="Sign in with Keycloak").click()
        page.wait_for_url("**/realms/shop/protocol/openid-connect/auth**")
        page.fill("#username", user)
        page.fill("#password", password or user)
        page.click("#kc-login")
        page.wait_for_url(f"{GATEWAY}{path}**")
