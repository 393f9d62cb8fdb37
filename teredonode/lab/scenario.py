"""
Named lab scenarios: which clients exist and which kind of NAT each one sits behind.

The fixed hosts (server, relay, v6host, dualhost, the Internet) are in every scenario; only the
NATs vary, because NAT behaviour is what makes Teredo succeed or fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from teredonode.errors import LabError
from teredonode.lab.nat import NAT_MODES


@dataclass(frozen=True)
class ClientSpec:
    """
    One client host and the NAT in front of it (C{nat="none"}: the client is public).
    C{lan_of} names an earlier client whose NAT and LAN this one shares (then C{nat} must
    match it): two Teredo clients on one LAN, for local discovery.
    """

    name: str
    nat: str
    lan_of: str | None = None


@dataclass(frozen=True)
class Scenario:
    """
    C{relays}: the relay hosts.  One ("relay") gets a static route for the Teredo prefix in
    the Internet router; several form an anycast group: each runs BIRD, the Internet router
    runs BIRD too and spreads the prefix over them with ECMP (docs/anycast.md).
    """

    name: str
    description: str
    clients: tuple[ClientSpec, ...]
    relays: tuple[str, ...] = ("relay",)

    @property
    def anycast(self) -> bool:
        return len(self.relays) > 1


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "default",
            "two clients behind different NATs (port-restricted, cone); used by the demo",
            (ClientSpec("client1", "port-restricted"), ClientSpec("client2", "cone")),
        ),
        Scenario(
            "miredo-reference",
            "one client behind a port-restricted NAT: the Miredo reference scenario",
            (ClientSpec("client1", "port-restricted"),),
        ),
        Scenario(
            "shared-lan",
            "two clients on one LAN behind one port-restricted NAT (local discovery)",
            (ClientSpec("client1", "port-restricted"), ClientSpec("client2", "port-restricted", lan_of="client1")),
        ),
        Scenario(
            "anycast",
            "two relays announcing 2001::/32 by BGP, ECMP in the Internet router; two clients "
            "behind port-restricted and cone NATs",
            (ClientSpec("client1", "port-restricted"), ClientSpec("client2", "cone")),
            relays=("relay1", "relay2"),
        ),
        Scenario(
            "nat-modes",
            "one client behind each NAT mode (none, cone, port-restricted, masquerade, symmetric)",
            (
                ClientSpec("client1", "none"),
                ClientSpec("client2", "cone"),
                ClientSpec("client3", "port-restricted"),
                ClientSpec("client4", "masquerade"),
                ClientSpec("client5", "symmetric"),
            ),
        ),
    )
}


def get_scenario(name: str) -> Scenario:
    """
    The scenario called C{name}, or a one-line L{LabError} listing the known ones.
    """
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise LabError(
            f"unknown scenario {name!r} (known: {', '.join(sorted(SCENARIOS))})"
        ) from None
    seen: dict[str, ClientSpec] = {}
    for client in scenario.clients:
        if client.nat not in NAT_MODES:
            raise LabError(f"scenario {name}: unknown NAT mode {client.nat!r}")
        if client.lan_of is not None:
            other = seen.get(client.lan_of)
            if other is None or other.nat != client.nat or client.nat == "none":
                raise LabError(f"scenario {name}: {client.name} cannot share the LAN of {client.lan_of!r}")
        seen[client.name] = client
    return scenario
