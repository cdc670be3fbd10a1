"""Demo data, loaded through the gateway's public API (DESIGN.md, "Gateway API"). Idempotent: a
customer whose email or a product whose sku already exists is left as it is.

Requests carry tokens of the realm's dev users, fetched from Keycloak by password grant: the
admin lists customers and creates products; each demo customer's profile is registered by the
user it belongs to (alice, bob), so they see it when they sign in."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

from tools.stack import ports
from tools.stack.components.base import StackError

# (the dev user the profile belongs to, the profile)
CUSTOMERS = [
    ("alice", {"name": "Alice Martin", "email": "alice@example.com"}),
    ("bob", {"name": "Bob Schmidt", "email": "bob@example.com"}),
]
PRODUCTS = [
    {"sku": "COFFEE-1KG", "name": "Espresso beans, 1 kg", "price_cents": 2490, "currency": "EUR",
     "stock": 100},
    {"sku": "MUG-CERAMIC", "name": "Ceramic mug", "price_cents": 1290, "currency": "EUR", "stock": 50},
    {"sku": "GRINDER-HAND", "name": "Hand grinder", "price_cents": 5990, "currency": "EUR", "stock": 20},
    {"sku": "KETTLE-GOOSENECK", "name": "Gooseneck kettle", "price_cents": 7900, "currency": "EUR",
     "stock": 10},
    {"sku": "FILTERS-100", "name": "Paper filters, 100 pcs", "price_cents": 490, "currency": "EUR",
     "stock": 200},
]


def token_url() -> str:
    return f"http://127.0.0.1:{ports.INFRA_PORTS['keycloak']}/realms/shop/protocol/openid-connect/token"


def token(user: str) -> str:
    """An access token of a dev user (the password is the name), client `shop-web`."""
    form = urllib.parse.urlencode({"grant_type": "password", "client_id": "shop-web",
                                   "username": user, "password": user}).encode()
    req = urllib.request.Request(token_url(), data=form, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as resp:
            return json.loads(resp.read())["access_token"]
    except (OSError, KeyError, ValueError) as e:
        raise StackError(f"demo data: no token for {user} from {token_url()}: {e}") from None


def request(method: str, url: str, body: dict | None = None, timeout: float = 10.0,
            accept: tuple[int, ...] = (), bearer: str | None = None):
    """(status, decoded JSON body); an error status not in `accept` raises StackError. A 503 with
    `Retry-After` (the shop shedding load) is sent again when told, for up to a minute."""
    give_up = time.monotonic() + 60
    while True:
        try:
            return _request_once(method, url, body, timeout, accept, bearer)
        except _Busy as busy:
            if time.monotonic() + busy.seconds > give_up:
                raise StackError(f"demo data: {method} {url} answered 503 (busy) for a minute") from None
            time.sleep(busy.seconds)


class _Busy(Exception):
    def __init__(self, seconds: float):
        super().__init__(f"busy for {seconds} s")
        self.seconds = seconds


def _request_once(method: str, url: str, body: dict | None, timeout: float, accept: tuple[int, ...],
                  bearer: str | None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        retry_after = e.headers.get("Retry-After", "") if e.headers else ""
        if e.code == 503 and retry_after.strip().isdigit():
            raise _Busy(float(retry_after.strip())) from None
        if e.code in accept:
            raw = e.read()
            try:
                return e.code, json.loads(raw) if raw else None
            except ValueError:
                return e.code, None
        raise StackError(f"demo data: {method} {url} answered {e.code}: "
                         f"{e.read().decode('utf-8', 'replace')[:500]}") from None
    except OSError as e:
        raise StackError(f"demo data: {method} {url} failed: {e}") from None


def items(listing) -> list[dict]:
    """A listing as a list, whether the API answers a bare array or wraps it ({"items": [...]})."""
    if isinstance(listing, list):
        return listing
    if isinstance(listing, dict):
        for key in ("items", "data", "results", "customers", "products"):
            if isinstance(listing.get(key), list):
                return listing[key]
    return []


def missing(wanted: list[dict], existing: list[dict], key: str) -> list[dict]:
    have = {str(e.get(key, "")).lower() for e in existing}
    return [w for w in wanted if w[key].lower() not in have]


def load(base: str, say=print) -> None:
    admin = token("admin")
    owned = {user: token(user) for user, _ in CUSTOMERS}
    wanted_customers = [(owned[user], entry) for user, entry in CUSTOMERS]
    wanted_products = [(admin, entry) for entry in PRODUCTS]
    for kind, path, wanted, key in (("customer", "/api/customers", wanted_customers, "email"),
                                    ("product", "/api/products", wanted_products, "sku")):
        _status, listing = request("GET", base + path, bearer=admin)
        todo = missing([entry for _, entry in wanted], items(listing), key)
        if not todo:
            say(f"demo: all demo {kind}s exist")
        for bearer, entry in wanted:
            if entry not in todo:
                continue
            # 409: created a moment ago and not in the (eventually consistent) listing yet
            status, answer = request("POST", base + path, entry, accept=(409,), bearer=bearer)
            if status == 409:
                say(f"demo: {kind} {entry[key]} exists")
            elif status != 201:
                raise StackError(f"demo data: POST {path} {entry[key]} answered {status}, expected 201")
            else:
                say(f"demo: created {kind} {entry[key]} ({(answer or {}).get('id', '?')})")
