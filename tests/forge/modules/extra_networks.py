"""Mirrors Forge's modules/extra_networks.py: ``parse_prompt(s)`` (the A1111 stand-in's: ``<name:args>``
tags leave the prompt and become extra-network data), the registry, and ``activate`` (each
registered network gets its tag arguments, an empty list when the prompt has none)."""

from reuse import a1111

a1111("modules/extra_networks.py", globals())

extra_network_registry = {}


def register_extra_network(extra_network):
    extra_network_registry[extra_network.name] = extra_network


def activate(p, extra_network_data):
    for name, network in extra_network_registry.items():
        network.activate(p, (extra_network_data or {}).get(name, []))
