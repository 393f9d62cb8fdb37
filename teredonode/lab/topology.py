"""
The lab's address plan and the namespaces, links and routes that realise it.

    "Internet" namespace (inet): bridge br0 = 198.51.100.1/24, 203.0.113.1/24, 2001:db8::1/64,
    forwarding on, and the route 2001::/32 via the relay (the IPv6 network routes Teredo to it).
    Every public host hangs off br0 by a veth pair; NAT routers have a private 10.N.0.0/24 LAN
    with their client behind it.

All veth pairs are created directly between lab namespaces (C{ip -n A link add ... peer ...
netns B}), so no link ever appears, even briefly, in the host's own namespace, and no lab
namespace has any path out of the lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from teredonode.lab import nat
from teredonode.lab.proc import in_ns, run
from teredonode.lab.scenario import Scenario

BRIDGE = "br0"
INET_V4 = ("198.51.100.1", "203.0.113.1")
INET_V6 = "2001:db8::1"
TEREDO_PREFIX = "2001::/32"

# Sysctls every namespace gets before any interface exists: no DAD (seconds of delay before an
# address is usable), no RAs/redirects (the lab's routes are static and must stay the ones we set).
BASE_SYSCTLS = (
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.accept_ra=0",
    "net.ipv6.conf.default.accept_ra=0",
    "net.ipv6.conf.all.accept_redirects=0",
    "net.ipv6.conf.default.accept_redirects=0",
    "net.ipv4.conf.all.accept_redirects=0",
    "net.ipv4.conf.default.accept_redirects=0",
    "net.ipv4.conf.all.send_redirects=0",
    "net.ipv4.conf.default.send_redirects=0",
)


@dataclass(frozen=True)
class Host:
    """
    One lab host (namespace).  Addresses are bare; the plan's prefix lengths are fixed (/24, /64).

    C{kind}: "inet" (the bridge), "host" (public server-side host), "nat" (NAT router),
    "client" (behind a NAT, or public when its NAT mode is "none").
    """

    name: str
    kind: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    nat_mode: str | None = None
    behind: str | None = None  # a client's NAT router
    lan_ipv4: str | None = None  # a NAT router's LAN address
    gateway: str | None = None  # a client on a subnet of its own: the router's address there
    ipv4_forwarding: bool = False
    ipv6_forwarding: bool = False
    sysctls: tuple[str, ...] = ()  # more, set with the base ones


@dataclass
class Plan:
    """
    Every host of a scenario, by logical name (C{"server"}, C{"nat1"}, C{"client1"}, ...).
    """

    hosts: dict[str, Host] = field(default_factory=dict)
    relays: tuple[str, ...] = ("relay",)

    @property
    def anycast(self) -> bool:
        return len(self.relays) > 1

    def add(self, host: Host) -> None:
        self.hosts[host.name] = host

    def clients(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.kind == "client"]


def make_plan(scenario: Scenario) -> Plan:
    """
    The addresses of every host in C{scenario}.

    Fixed hosts: server 203.0.113.10 and .11 (a Teredo server needs two consecutive addresses)
    and 2001:db8::10; relay 203.0.113.20, 2001:db8::20; v6host 2001:db8::30 only; dualhost
    203.0.113.40, 2001:db8::40.  Client N behind NAT natN: NAT WAN 198.51.100.(10+N), LAN
    10.N.0.1, client 10.N.0.2; a client with NAT mode "none" is public at 198.51.100.(100+N).
    A client sharing natN on a subnet of its own (C{own_subnet}) is 10.N.K.2 behind the
    router's 10.N.K.1, K = 1, 2, ...
    An address-symmetric NAT has more WAN addresses after the first (L{nat.address_pool}).
    """
    plan = Plan(relays=scenario.relays)
    # Anycast: the router hashes IPv6 flows on addresses only (policy 3, fields src|dst),
    # not on the flow label, so that one native host's packets to one client always take
    # the same relay: the client accepts a native peer only from the relay it proved.
    router_sysctls = (
        ("net.ipv6.fib_multipath_hash_policy=3", "net.ipv6.fib_multipath_hash_fields=0x0003")
        if scenario.anycast
        else ()
    )
    plan.add(
        Host("inet", "inet", INET_V4, (INET_V6,), ipv4_forwarding=True, ipv6_forwarding=True, sysctls=router_sysctls)
    )
    # IPv6 forwarding on the server: our server hands clients' echo tests to the IPv6 side
    # through a TUN (teredo-srv), which the kernel must then forward (Miredo uses a raw socket
    # and does not care).
    plan.add(
        Host("server", "host", ("203.0.113.10", "203.0.113.11"), ("2001:db8::10",), ipv6_forwarding=True)
    )
    if not scenario.anycast:
        plan.add(Host("relay", "host", ("203.0.113.20",), ("2001:db8::20",), ipv6_forwarding=True))
    for k, name in enumerate(scenario.relays if scenario.anycast else (), start=1):
        # Each relay of an anycast group keeps its own unicast IPv4 address (clients' trust
        # is per relay endpoint); only the IPv6 side is anycast.  gc_interval 1: an expired
        # health route is removed (and BIRD told) within a second.
        plan.add(
            Host(
                name, "host", (f"203.0.113.{20 + k}",), (f"2001:db8::{20 + k}",), ipv6_forwarding=True,
                sysctls=("net.ipv6.route.gc_interval=1",),
            )
        )
    plan.add(Host("v6host", "host", (), ("2001:db8::30",)))
    plan.add(Host("dualhost", "host", ("203.0.113.40",), ("2001:db8::40",)))
    for n, spec in enumerate(scenario.clients, start=1):
        if spec.lan_of is not None:
            router = plan.hosts[spec.lan_of].behind
            assert router is not None
            lan = plan.hosts[router].lan_ipv4
            assert lan is not None
            if spec.own_subnet:
                k = 1 + sum(1 for h in plan.clients() if h.behind == router and h.gateway is not None)
                base = lan.rsplit(".", 2)[0]
                plan.add(
                    Host(
                        spec.name, "client", (f"{base}.{k}.2",), nat_mode=spec.nat, behind=router,
                        gateway=f"{base}.{k}.1",
                    )
                )
                continue
            taken = sum(1 for h in plan.clients() if h.behind == router and h.gateway is None)
            address = lan.rsplit(".", 1)[0] + f".{2 + taken}"
            plan.add(Host(spec.name, "client", (address,), nat_mode=spec.nat, behind=router))
            continue
        if spec.nat == "none":
            plan.add(Host(spec.name, "client", (f"198.51.100.{100 + n}",), nat_mode="none"))
            continue
        router = f"nat{n}"
        wan = f"198.51.100.{10 + n}"
        plan.add(
            Host(
                router,
                "nat",
                nat.address_pool(wan) if spec.nat == "address-symmetric" else (wan,),
                nat_mode=spec.nat,
                lan_ipv4=f"10.{n}.0.1",
                ipv4_forwarding=True,
            )
        )
        plan.add(Host(spec.name, "client", (f"10.{n}.0.2",), nat_mode=spec.nat, behind=router))
    return plan


def inet_port(host: str) -> str:
    """The name of inet's bridge port toward public host C{host} (an interface name: 15 bytes)."""
    return f"to-{host}"[:15]


def lan_net(router: Host) -> str:
    """
    The prefix of NAT router C{router}'s LAN (10.N.0.0/24).
    """
    assert router.lan_ipv4 is not None
    return router.lan_ipv4.rsplit(".", 1)[0] + ".0/24"


def ns_name(prefix: str, host: str) -> str:
    return f"{prefix}-{host}"


def _ip(ns: str, *args: str) -> None:
    run(["ip", "-n", ns, *args])


def _batch(ns: str, commands: list[str]) -> None:
    """
    Run many C{ip} commands in C{ns} with one process (C{ip -batch}): far faster than one each.
    """
    if commands:
        run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")


def create_namespace(ns: str, host: Host) -> None:
    """
    Create C{ns} with loopback up and the lab's sysctls set before any interface exists.
    """
    run(["ip", "netns", "add", ns])
    sysctls = list(BASE_SYSCTLS)
    sysctls.append(f"net.ipv4.ip_forward={int(host.ipv4_forwarding)}")
    # all.forwarding=1 also turns the namespace into an IPv6 router (a Miredo relay forwards
    # nothing without it).
    sysctls.append(f"net.ipv6.conf.all.forwarding={int(host.ipv6_forwarding)}")
    sysctls += host.sysctls
    run(in_ns(ns, ["sysctl", "-q", "-w", *sysctls]))
    _ip(ns, "link", "set", "lo", "up")


def build(prefix: str, plan: Plan, record_namespace: Callable[[str], None]) -> None:
    """
    Create every namespace, link, address and route of C{plan}, and the NAT rules.

    C{record_namespace(ns)} is called before each namespace is created (see L{state}).
    """
    names = {name: ns_name(prefix, name) for name in plan.hosts}
    for name, host in plan.hosts.items():
        record_namespace(names[name])
        create_namespace(names[name], host)

    inet = names["inet"]
    inet_cmds = [
        f"link add {BRIDGE} type bridge mcast_snooping 0",
        *(f"addr add {a}/24 dev {BRIDGE}" for a in INET_V4),
        f"addr add {INET_V6}/64 dev {BRIDGE} nodad",
        f"link set {BRIDGE} up",
    ]
    _batch(inet, inet_cmds)

    for name, host in plan.hosts.items():
        if host.kind == "inet" or host.behind is not None:
            continue
        ns = names[name]
        inner = "wan" if host.kind == "nat" else "eth0"
        outer = inet_port(name)
        _batch(
            inet,
            [
                f"link add {outer} type veth peer name {inner} netns {ns}",
                f"link set {outer} master {BRIDGE}",
                f"link set {outer} up",
            ],
        )
        cmds = [f"addr add {a}/24 dev {inner}" for a in host.ipv4]
        cmds += [f"addr add {a}/64 dev {inner} nodad" for a in host.ipv6]
        cmds.append(f"link set {inner} up")
        if host.ipv4:
            gw = INET_V4[0] if host.ipv4[0].startswith("198.51.100.") else INET_V4[1]
            cmds.append(f"route add default via {gw} dev {inner}")
        if host.ipv6:
            cmds.append(f"route add default via {INET_V6} dev {inner}")
        _batch(ns, cmds)

    lans: dict[str, list[str]] = {}
    subnets: dict[str, list[str]] = {}  # clients on subnets of their own, by router
    for name, host in plan.hosts.items():
        if host.behind is not None:
            (lans if host.gateway is None else subnets).setdefault(host.behind, []).append(name)
    for router_name, members in lans.items():
        router = plan.hosts[router_name]
        rns = names[router_name]
        if len(members) == 1:
            # One client: a plain veth pair is the whole LAN.
            _batch(
                rns,
                [
                    f"link add lan type veth peer name eth0 netns {names[members[0]]}",
                    f"addr add {router.lan_ipv4}/24 dev lan",
                    "link set lan up",
                ],
            )
        else:
            # Several clients share one LAN: a bridge in the router, one port per client.
            cmds = ["link add lan type bridge", f"addr add {router.lan_ipv4}/24 dev lan", "link set lan up"]
            for k, member in enumerate(members):
                cmds += [
                    f"link add lan{k} type veth peer name eth0 netns {names[member]}",
                    f"link set lan{k} master lan",
                    f"link set lan{k} up",
                ]
            _batch(rns, cmds)
        for member in members:
            host = plan.hosts[member]
            _batch(
                names[member],
                [
                    f"addr add {host.ipv4[0]}/24 dev eth0",
                    "link set eth0 up",
                    f"route add default via {router.lan_ipv4} dev eth0",
                ],
            )
        for k, member in enumerate(subnets.get(router_name, ()), start=1):
            host = plan.hosts[member]
            # One more LAN segment, routed (not translated: the NAT's rules match the WAN
            # interface only) to the first one by the router.
            _batch(
                rns,
                [
                    f"link add sub{k} type veth peer name eth0 netns {names[member]}",
                    f"addr add {host.gateway}/24 dev sub{k}",
                    f"link set sub{k} up",
                ],
            )
            _batch(
                names[member],
                [
                    f"addr add {host.ipv4[0]}/24 dev eth0",
                    "link set eth0 up",
                    f"route add default via {host.gateway} dev eth0",
                ],
            )
        first = plan.hosts[members[0]]
        nat.apply(
            rns, router.nat_mode or "masquerade", wan="wan", client_ip=first.ipv4[0], wan_ips=router.ipv4,
            server_ip=plan.hosts["server"].ipv4[0],
        )

    # Complete checksums toward every public host, as a wire delivers them (see
    # teredonode.lab.offload: the kernel fast paths hand partial ones to Python).
    _complete_checksums(inet, [inet_port(name) for name, host in plan.hosts.items()
                               if host.kind != "inet" and host.behind is None])

    if not plan.anycast:
        relay = plan.hosts["relay"]
        _batch(inet, [f"route add {TEREDO_PREFIX} via {relay.ipv6[0]} dev {BRIDGE}"])
    # Anycast: the route comes from BGP (teredonode.lab.bgp), started once the links exist.


def _complete_checksums(ns: str, devices: list[str]) -> None:
    """
    Transmit checksum offload off on C{devices} of C{ns}, in one process.
    """
    if not devices:
        return
    import sys

    from teredonode.lab.nodes import tree_env

    run(in_ns(ns, [sys.executable, "-m", "teredonode.lab.offload", "--tx", "off", *devices]), env=tree_env())


def namespace_pids(ns: str) -> list[int]:
    """
    The processes whose network namespace is C{ns} (only lab processes can be there).
    """
    result = run(["ip", "netns", "pids", ns], check=False, timeout=10)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def existing_namespaces() -> set[str]:
    result = run(["ip", "netns", "list"], check=False, timeout=10)
    return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}


def delete_namespace(ns: str) -> None:
    """
    Delete C{ns}; its veth ends (and so their peers), bridge and nft tables go with it.
    """
    run(["ip", "netns", "delete", ns], check=False, timeout=10)
