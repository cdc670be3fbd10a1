"""The stack's components, in start order: the infrastructure of ports.INFRA_PORTS (one module each,
named after the component and exporting `COMPONENT`), then one Service per entry of ports.SERVICES,
then the further instances of the replicated ones (`order-2`, ...) when the stack runs replicas."""

from __future__ import annotations

import importlib

from tools.stack import ports
from tools.stack.components.base import Component, Context
from tools.stack.components.service import Service


def load(ctx: Context, warn=print) -> list[Component]:
    found: list[Component] = []
    for name in ports.INFRA_PORTS:
        module_name = f"{__name__}.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            warn(f"warning: component {name}: no module {name}.py yet, skipped")
            continue
        found.append(module.COMPONENT(ctx))
    for name, (binary, port) in ports.SERVICES.items():
        found.append(Service(ctx, name, binary, port))
    for instance in range(2, ctx.replicas + 1):
        for name in ports.REPLICATED:
            binary = ports.SERVICES[name][0]
            found.append(Service(ctx, name, binary, ports.instance_port(name, instance), instance=instance))
    return found
