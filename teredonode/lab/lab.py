"""
L{Lab}: one running lab -- build it, reach into its hosts, start nodes, tear it down.

Teardown is the part that must never fail: it works from the on-disk state alone (so another
process, or a later run after a crash, can do it), tolerates half-built labs, and removes
processes first (so nothing holds a namespace), then the namespaces (which take their links,
bridges, nft tables and conntrack tables with them).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from teredonode.errors import LabError
from teredonode.lab import bgp, nat, nodes, probe, topology
from teredonode.lab.proc import in_ns, run, which
from teredonode.lab.scenario import get_scenario
from teredonode.lab.state import LabState, recorded_labs, state_dir

KEEP_LOGS_ENV = "TEREDO_LAB_KEEP_LOGS"
REQUIRED_TOOLS = ("ip", "nft", "conntrack", "sysctl")


def preflight() -> None:
    """
    Refuse, in one line, to build a lab where it cannot work: not root, no TUN, missing tools.
    """
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, nftables, TUN devices)")
    try:
        if not stat.S_ISCHR(os.stat("/dev/net/tun").st_mode):
            raise LabError("/dev/net/tun is not a character device")
    except FileNotFoundError:
        raise LabError("/dev/net/tun is missing (TUN devices are needed by every Teredo node)") from None
    for tool in REQUIRED_TOOLS:
        if which(tool) is None:
            raise LabError(f"{tool} not found (the lab needs iproute2, nftables, conntrack)")


class Lab:
    """
    A built lab.  Host names are logical (C{"server"}, C{"client1"}, C{"nat1"}, ...);
    L{ns} gives the real namespace name.
    """

    def __init__(self, state: LabState, plan: topology.Plan) -> None:
        self.state = state
        self.plan = plan
        self.nodes: dict[str, nodes.Node] = {}

    # ------------------------------------------------------------ life cycle

    @classmethod
    def up(cls, scenario: str = "default", base: Path | None = None) -> "Lab":
        """
        Build a lab for C{scenario}.  Any failure, including Ctrl-C, removes whatever was
        already made before the exception propagates.
        """
        preflight()
        spec = get_scenario(scenario)
        plan = topology.make_plan(spec)
        state = LabState.create(scenario, base)
        lab = cls(state, plan)
        try:
            def record(ns: str) -> None:
                state.namespaces.append(ns)
                state.save()

            topology.build(state.prefix, plan, record)
            for name, host in plan.hosts.items():
                if host.kind == "nat" and host.nat_mode:
                    lab.start_nat_daemons(name, host.nat_mode)
            if plan.anycast:
                lab.nodes.update(bgp.start_routing(state, plan, lab.ns))
        except BaseException:
            lab.down()
            raise
        return lab

    @classmethod
    def attach(cls, state: LabState) -> "Lab":
        return cls(state, topology.make_plan(get_scenario(state.scenario)))

    def down(self) -> None:
        """
        Remove every process, namespace and file of this lab (see L{destroy}).
        """
        destroy(self.state, {name: n.popen for name, n in self.nodes.items()})
        self.nodes.clear()

    # ------------------------------------------------------------ handles

    @property
    def prefix(self) -> str:
        return self.state.prefix

    def host(self, name: str) -> topology.Host:
        try:
            return self.plan.hosts[name]
        except KeyError:
            raise LabError(f"no host {name!r} in this lab (hosts: {', '.join(self.plan.hosts)})") from None

    def ns(self, name: str) -> str:
        self.host(name)
        return topology.ns_name(self.prefix, name)

    def ipv4(self, name: str) -> str:
        addrs = self.host(name).ipv4
        if not addrs:
            raise LabError(f"host {name} has no IPv4 address")
        return addrs[0]

    def ipv6(self, name: str) -> str:
        addrs = self.host(name).ipv6
        if not addrs:
            raise LabError(f"host {name} has no native IPv6 address")
        return addrs[0]

    def public_ipv4(self, name: str) -> str:
        """
        The address the Internet sees for C{name}: its NAT's WAN address if it is behind one.
        """
        host = self.host(name)
        return self.ipv4(host.behind) if host.behind else self.ipv4(name)

    def exec(
        self, name: str, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{argv} on host C{name} and wait for it (bounded by C{timeout}).
        """
        return run(in_ns(self.ns(name), argv), timeout=timeout, check=check)

    def popen(self, name: str, argv: Sequence[str], **kwargs: Any) -> "subprocess.Popen[Any]":
        """
        Start C{argv} on host C{name} without waiting (the caller owns and must reap it).
        """
        return subprocess.Popen(in_ns(self.ns(name), argv), **kwargs)

    def agent(self, name: str, port: int, lifetime: float = 120.0, address: str | None = None) -> "probe.Agent":
        """
        A UDP probe agent (L{teredonode.lab.probe}) bound to C{port} on host C{name} (and to
        C{address}, one of its addresses, when given).
        """
        import sys

        env = nodes.tree_env()
        argv = [sys.executable, "-m", "teredonode.lab.probe", "agent", "--port", str(port), "--lifetime", str(lifetime)]
        if address is not None:
            argv += ["--address", address]
        return probe.Agent(in_ns(self.ns(name), argv), env)

    # ------------------------------------------------------------ NATs

    def set_nat_mode(self, router: str, mode: str) -> None:
        """
        Switch NAT router C{router} to C{mode} (conntrack is flushed).
        """
        host = self.host(router)
        if host.kind != "nat":
            raise LabError(f"{router} is not a NAT router")
        client = next(h for h in self.plan.hosts.values() if h.behind == router)
        for name in nat.daemon_names(router):
            if name in self.nodes or name in self.state.processes:
                self.stop_node(name)
        wan_ips = host.ipv4
        if mode == "address-symmetric":
            wan_ips = nat.address_pool(host.ipv4[0])
            for address in wan_ips:
                self.exec(router, ["ip", "addr", "replace", f"{address}/24", "dev", "wan"], check=True)
        nat.apply(
            self.ns(router), mode, wan="wan", client_ip=client.ipv4[0], wan_ips=wan_ips,
            server_ip=self.host("server").ipv4[0],
        )
        self.start_nat_daemons(router, mode, wan_ips)

    def start_nat_daemons(self, router: str, mode: str, wan_ips: tuple[str, ...] | None = None) -> None:
        """
        Start the processes NAT kind C{mode} needs on C{router} (L{nat.start_daemons}).
        """
        host = self.host(router)
        self.nodes.update(
            nat.start_daemons(
                self.state, router, self.ns(router), mode,
                wan_ips=wan_ips or host.ipv4, lan_net=topology.lan_net(host),
            )
        )

    # ------------------------------------------------------------ nodes

    def start_miredo(self, node: str, host: str, role: str, conf: str | None = None) -> nodes.Node:
        """
        Start Miredo as C{role} on C{host}; the config defaults to the lab's plan.
        """
        if conf is None:
            server = self.host("server").ipv4
            if role == "server":
                conf = nodes.miredo_server_conf(server[0], server[1])
            elif role == "client":
                conf = nodes.miredo_client_conf(server[0])
            elif role == "relay":
                conf = nodes.miredo_relay_conf()
            else:
                raise LabError(f"Miredo cannot play role {role!r} (it plays server, relay, client)")
        node_ = nodes.start_miredo(self.state, node, self.ns(host), role, conf)
        self.nodes[node] = node_
        return node_

    def start_teredonode(
        self,
        node: str,
        host: str,
        role: str,
        settings: dict[str, object] | None = None,
        node_settings: dict[str, object] | None = None,
        *,
        drop: str = "config",
    ) -> nodes.Node:
        """
        Start our node as C{role} on C{host} with the lab's settings for that role, each
        overridden (or extended) by C{settings} (e.g. C{{"refresh": 10}} for a client), and
        C{node_settings} added to its C{[node]} table (e.g. C{{"metrics": "127.0.0.1:9544"}}).
        The node runs as C{nobody} once open (C{drop}: see L{nodes.start_teredonode}).
        """
        defaults = nodes.role_settings(role, server_ipv4=self.host("server").ipv4[:2])  # type: ignore[arg-type]
        if role == "relay" and self.plan.anycast:
            defaults["health-table"] = bgp.HEALTH_TABLE  # what the host's BIRD announces from
        if role == "client":
            # Only the UPnP NAT kinds run a port mapping daemon: elsewhere the client's
            # search for one (PCP, NAT-PMP, SSDP) would only hold qualification back ~5 s.
            mode = self.plan.hosts[host].nat_mode or ""
            defaults["port-mapping"] = mode.startswith("upnp")
        settings = {**defaults, **(settings or {})}
        node_ = nodes.start_teredonode(self.state, node, self.ns(host), role, settings, node_settings, drop=drop)
        self.nodes[node] = node_
        return node_

    def bgp_route(self, prefix: str = topology.TEREDO_PREFIX) -> list[str]:
        """
        The next hops the router's kernel has for C{prefix} (anycast scenario): one per
        relay currently announcing it.
        """
        out = self.exec("inet", ["ip", "-6", "route", "show", prefix], timeout=10).stdout
        return sorted(re.findall(r"via (\S+)", out))

    def wait_bgp_route(self, predicate: Callable[[list[str]], bool], timeout: float) -> tuple[list[str], bool]:
        """
        Poll L{bgp_route} until C{predicate(next hops)} holds or C{timeout} s pass.
        """
        deadline = time.monotonic() + timeout
        while True:
            hops = self.bgp_route()
            if predicate(hops):
                return hops, True
            if time.monotonic() > deadline:
                return hops, False
            time.sleep(0.05)

    def kill_node(self, node: str, sig: int = 9) -> None:
        """
        Send C{sig} (default SIGKILL) to node C{node}'s process and reap it, keeping its
        record so that it can be started again under the same name by L{stop_node} first.
        """
        handle = self.nodes[node]
        os.kill(handle.record.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM) and handle.popen is not None:
            handle.popen.wait(timeout=nodes.STOP_TIMEOUT + 60)

    def stop_node(self, node: str) -> None:
        record = self.state.processes.pop(node, None)
        handle = self.nodes.pop(node, None)
        if record is not None:
            nodes.stop(record, handle.popen if handle else None)
            self.state.save()

    def node_status(self, node: str) -> dict[str, Any]:
        """
        The status document of our node C{node}, read over its UNIX socket (a filesystem
        path, so reachable from outside the node's namespace).  Raises
        L{teredonode.status.StatusUnavailable} while the node is not serving it.
        """
        from teredonode.status import read_status

        return read_status(str(nodes.status_socket(self.state, node)), timeout=5)

    def wait_node_status(
        self, node: str, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> tuple[dict[str, Any] | None, bool]:
        """
        Poll L{node_status} until C{predicate} holds, the node exits, or C{timeout} s pass.
        Returns the last status seen (C{None} if none) and whether the predicate held.
        """
        from teredonode.status import StatusUnavailable

        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = self.node_status(node)
                if predicate(last):
                    return last, True
            except (StatusUnavailable, KeyError):
                pass
            handle = self.nodes.get(node)
            if time.monotonic() > deadline or (handle is not None and handle.exit_code() is not None):
                return last, False
            time.sleep(0.1)

    def ping6(self, host: str, target: str, count: int = 5, interval: float = 0.3) -> tuple[int, str]:
        """
        Ping C{target} from C{host}: (replies received, output).  Bounded by count and -W.
        """
        result = self.exec(
            host,
            ["ping", "-6", "-n", "-c", str(count), "-i", str(interval), "-W", "2", target],
            timeout=int(count * interval + 20),
        )
        match = re.search(r"(\d+) received", result.stdout)
        return (int(match.group(1)) if match else 0), result.stdout + result.stderr

    def capture(
        self, host: str, expression: Sequence[str] = (), *, interface: str = "eth0", seconds: int = 30, count: int = 2000
    ) -> "subprocess.Popen[Any]":
        """
        Start tcpdump on C{host}'s C{interface}, bounded by C{seconds} and C{count} packets,
        and return once it is attached (it says "listening on"), so nothing sent afterwards
        is missed.  The caller reads C{stdout} (one line per packet) and reaps the process;
        L{down} kills it anyway.
        """
        proc = self.popen(
            host,
            ["timeout", str(seconds), "tcpdump", "-i", interface, "-nn", "-l", "-c", str(count), *expression],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        for line in proc.stderr:  # ends at the latest when tcpdump exits, after C{seconds}
            if "listening on" in line:
                break
        return proc

    def wait_udp_listening(self, host: str, port: int, timeout: float) -> bool:
        """
        Wait up to C{timeout} s until something listens on UDP C{port} on C{host}: start
        clients only once their server listens, or their first Router Solicitation is lost
        (Miredo then waits 4 s before its next one).
        """
        deadline = time.monotonic() + timeout
        while True:
            listening = self.exec(host, ["ss", "-Hnlu", "sport", "=", f":{port}"], timeout=10).stdout
            if listening.strip():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def teredo_address(self, host: str, interface: str = "teredo") -> str | None:
        """
        The global address on C{host}'s C{interface} in the Teredo prefix, if it has one yet.
        """
        result = self.exec(host, ["ip", "-6", "-o", "addr", "show", "dev", interface, "scope", "global"], timeout=10)
        for line in result.stdout.splitlines():
            fields = line.split()
            if "inet6" in fields:
                addr = fields[fields.index("inet6") + 1].split("/")[0]
                if addr.lower().startswith("2001:0:") or addr.lower().startswith("2001::"):
                    return addr
        return None

    def wait_teredo_address(self, host: str, timeout: float, interface: str = "teredo") -> str | None:
        """
        Poll for L{teredo_address} up to C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            addr = self.teredo_address(host, interface)
            if addr or time.monotonic() >= deadline:
                return addr
            time.sleep(0.25)


def destroy(state: LabState, popens: "dict[str, subprocess.Popen[Any] | None] | None" = None) -> None:
    """
    Remove everything C{state} records: node processes, any other process left in the lab's
    namespaces, the namespaces themselves, and the state directory (logs are kept when
    C{$TEREDO_LAB_KEEP_LOGS} is set, under the same directory, without the state file).
    """
    popens = popens or {}
    for name, record in list(state.processes.items()):
        nodes.stop(record, popens.get(name))
    existing = topology.existing_namespaces()
    for ns in state.namespaces:
        if ns not in existing:
            continue
        leftovers = topology.namespace_pids(ns)
        if leftovers:
            nodes.kill_pids(leftovers)
        topology.delete_namespace(ns)
    # Namespaces carrying the prefix but not recorded (e.g. a crash mid-record) go too.
    for ns in topology.existing_namespaces():
        if ns.startswith(state.prefix + "-"):
            nodes.kill_pids(topology.namespace_pids(ns))
            topology.delete_namespace(ns)
    if os.environ.get(KEEP_LOGS_ENV):
        (state.path / "state.json").unlink(missing_ok=True)
    else:
        shutil.rmtree(state.path, ignore_errors=True)


def find_lab(name: str | None = None, base: Path | None = None) -> LabState:
    """
    The recorded lab called C{name}, or the only/newest one when C{name} is None.
    """
    labs = recorded_labs(base)
    if name is not None:
        for lab in labs:
            if lab.prefix == name:
                return lab
        raise LabError(f"no lab named {name} under {base or state_dir()}")
    if not labs:
        raise LabError(f"no lab is up (nothing recorded under {base or state_dir()})")
    return labs[-1]
