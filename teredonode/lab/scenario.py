"""
Named lab scenarios: which clients exist and which kind of NAT each one sits behind.

The fixed hosts (server, relay, v6host, dualhost, the Internet) are in every scenario; only the
NATs vary, because NAT behaviour is what makes Teredo succeed or fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from teredonode.errors import LabError
from teredonode.lab.nat import FIGURE1, NAT_MODES

#: A scenario name "nat:KIND,KIND,..." is built on the fly: one client behind each kind.
CUSTOM_PREFIX = "nat:"


@dataclass(frozen=True)
class ClientSpec:
    """
    One client host and the NAT in front of it (C{nat="none"}: the client is public).
    C{lan_of} names an earlier client whose NAT and LAN this one shares (then C{nat} must
    match it): two Teredo clients on one LAN, for local discovery.  With C{own_subnet} too,
    the client shares that client's NAT but sits on a subnet of its own behind it (the
    router forwards between them, untranslated): local discovery's multicast does not
    cross, and the NAT, which does not hairpin, is the only way between the two Teredo
    addresses unless RFC 6081 Hairpinning finds the local ones.
    """

    name: str
    nat: str
    lan_of: str | None = None
    own_subnet: bool = False


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
            "three clients behind different NATs (port-restricted, cone, port-symmetric), and a "
            "fourth behind client1's NAT on another subnet (hairpinning); used by the demo",
            (
                ClientSpec("client1", "port-restricted"),
                ClientSpec("client2", "cone"),
                ClientSpec("client3", "port-symmetric"),
                ClientSpec("client4", "port-restricted", lan_of="client1", own_subnet=True),
            ),
        ),
        Scenario(
            "hairpin",
            "two clients behind one port-restricted NAT that does not hairpin, on two subnets",
            (
                ClientSpec("client1", "port-restricted"),
                ClientSpec("client2", "port-restricted", lan_of="client1", own_subnet=True),
            ),
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
        Scenario(
            "nat-kinds",
            "one client behind each NAT kind of RFC 6081 Figure 1, in its order: "
            + ", ".join(kind for _, kind in FIGURE1),
            tuple(ClientSpec(f"client{n}", kind) for n, (_, kind) in enumerate(FIGURE1, start=1)),
        ),
    )
}


def custom_scenario(kinds: list[str]) -> Scenario:
    """
    One client behind each of C{kinds} (client1 behind the first, ...), named
    C{"nat:KIND,..."} so that a lab built from it can be found again by that name.
    """
    if not kinds:
        raise LabError("no NAT kind given")
    return Scenario(
        CUSTOM_PREFIX + ",".join(kinds),
        "one client behind each NAT kind given",
        tuple(ClientSpec(f"client{n}", kind) for n, kind in enumerate(kinds, start=1)),
    )


def get_scenario(name: str) -> Scenario:
    """
    The scenario called C{name} (or described by C{"nat:KIND,..."}), or a one-line
    L{LabError} listing the known ones.
    """
    try:
        if name.startswith(CUSTOM_PREFIX):
            scenario = custom_scenario([k.strip() for k in name[len(CUSTOM_PREFIX):].split(",") if k.strip()])
        else:
            scenario = SCENARIOS[name]
    except KeyError:
        raise LabError(
            f"unknown scenario {name!r} (known: {', '.join(sorted(SCENARIOS))}, or nat:KIND,...)"
        ) from None
    seen: dict[str, ClientSpec] = {}
    for client in scenario.clients:
        if client.nat not in NAT_MODES:
            raise LabError(
                f"scenario {name}: unknown NAT mode {client.nat!r} (NAT modes: {', '.join(NAT_MODES)})"
            )
        if client.lan_of is not None:
            other = seen.get(client.lan_of)
            if other is None or other.nat != client.nat or client.nat == "none":
                raise LabError(f"scenario {name}: {client.name} cannot share the LAN of {client.lan_of!r}")
        elif client.own_subnet:
            raise LabError(f"scenario {name}: {client.name} has a subnet of its own behind no one's NAT")
        seen[client.name] = client
    return scenario
