"""Keycloak (realm `shop`): declared so `status` lists it; another change enables it."""

from tools.stack.components.base import Component


class Keycloak(Component):
    name = "keycloak"
    enabled = False
    disabled_note = "not yet enabled"


COMPONENT = Keycloak
