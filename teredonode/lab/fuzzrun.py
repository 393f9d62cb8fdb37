"""
Fuzzing a running node in the lab: hostile datagrams on real sockets, then the checks.

One module serves both the benchmark (C{benchmarks/fuzz.py}, a million datagrams per role)
and the attack test (C{tests/attack/test_fuzz.py}, a sample), so both measure the same thing:

  1. the node process is still alive, and its log holds no traceback;
  2. its resident memory grew by less than L{RSS_GROWTH_LIMIT};
  3. every datagram is accounted for: what the node took in (UDP C{received} plus the
     packets it read from its TUN, which the kernel counts as the TUN's C{tx_packets}) equals
     the sum of its outcomes (drops by reason, answers, deliveries, sends, and packets still
     queued) -- see L{account};
  4. a freshly started legitimate client qualifies and every path of the lab pings.

The datagrams come from L{teredonode.lab.fuzz}, sent by its own process inside the fuzzer
host's namespace (C{python -m teredonode.lab.fuzz send ...}).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from teredonode.lab.fuzz import DEFAULT_RATE, FuzzTarget, target_spec, teredo_address
from teredonode.wire.address import TEREDO_PORT, server_link_local

__all__ = [
    "ROLES",
    "RSS_GROWTH_LIMIT",
    "NODES",
    "Accounting",
    "account",
    "rss_bytes",
    "tun_tx_packets",
    "udp_rcvbuf_errors",
    "log_tracebacks",
    "FuzzReport",
    "start_nodes",
    "fuzz_role",
    "legit_check",
]

#: The roles the harness can fuzz.
ROLES = ("server", "relay", "client", "host-relay")
#: Property 2: resident memory may grow by less than this over a run.
RSS_GROWTH_LIMIT = 50 * 1024 * 1024


@dataclass
class Accounting:
    """
    Property 3 for one status document.

    @ivar taken_in: datagrams received on the role's UDP port plus packets read from its TUN.
    @ivar accounted: the sum of every outcome (see L{account}).
    @ivar outcomes: the non-zero terms of C{accounted}, by name.
    """

    taken_in: int
    accounted: int
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        return self.taken_in == self.accounted


#: Outcomes counted once per input, besides the drops, per role.  For the tunnel roles a
#: queued packet gets a second count when its fate is known (sent, delivered or dropped), so
#: the packets still queued balance the equation at any instant:
#:   received + TUN reads == drops + delivered + bubbles-received + echo-tests-ok + sent
#:                           (+ ra-accepted for a client) + packets queued now.
_OUTCOMES = {
    "server": ("rs", "forwarded", "forwarded-ipv6", "echo-replies"),
    "client": ("delivered", "bubbles-received", "echo-tests-ok", "sent", "ra-accepted"),
    "relay": ("delivered", "bubbles-received", "echo-tests-ok", "sent"),
    "host-relay": ("delivered", "bubbles-received", "echo-tests-ok", "sent"),
}


#: Drop reasons that count something other than packets, left out of the sum: a relay's
#: C{unreachable-peer} counts peer entries removed after unanswered bubbles (RL-TX-05); the
#: packets queued for them are counted once each as C{peer-unreachable}.
#: A client's C{non-global-origin} counts origin indications from its server that it did not
#: answer with a bubble; the packet carrying one goes on and is counted by its own outcome.
NOT_PACKETS = frozenset({"unreachable-peer", "non-global-origin"})


def account(role: str, status: dict[str, Any], tun_reads: int) -> Accounting:
    """
    Balance C{role}'s table of a node status document: inputs against outcomes.

    C{tun_reads} is the role TUN's C{tx_packets} (L{tun_tx_packets}): the kernel counts a
    packet there when the node reads it, so it is exactly the node's input from its TUN,
    except for what a relay's kernel fast path took from the TUN first (its C{from-tun}) or
    took before the TUN (its C{from-native}).
    """
    table = status[role]
    counters = table["counters"]
    outcomes = {f"drop:{k}": v for k, v in table["drops"].items() if v and k not in NOT_PACKETS}
    for key in _OUTCOMES[role]:
        if counters.get(key):
            outcomes[key] = counters[key]
    if role != "server":
        queued = table["peers"]["queued-packets"]
        if queued:
            outcomes["still-queued"] = queued
    fast = table.get("fast-path") or {}
    taken = counters["received"] + tun_reads + fast.get("from-tun", 0) + fast.get("from-native", 0)
    return Accounting(taken, sum(outcomes.values()), outcomes)


def rss_bytes(pid: int) -> int:
    """
    Resident set size of C{pid} from C{/proc/<pid>/status} (VmRSS).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def tun_tx_packets(lab: Any, host: str, interface: str) -> int:
    """
    Packets the kernel handed to the node through TUN C{interface} on C{host}.
    """
    out = lab.exec(host, ["ip", "-s", "-j", "link", "show", "dev", interface], timeout=10, check=True).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["packets"])


def udp_rcvbuf_errors(lab: Any, host: str) -> int:
    """
    UDP datagrams the kernel of C{host} dropped for a full receive buffer (never reached
    any socket, so no node can count them).
    """
    text = lab.exec(host, ["cat", "/proc/net/snmp"], timeout=10, check=True).stdout
    lines = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
    header, values = lines[0], lines[1]
    return int(values[header.index("RcvbufErrors")])


# ============================================================================ one run in a lab

#: Node names, hosts and TUN names the harness uses in the lab's C{default} scenario.
NODES = {
    "server": ("server", "server", "teredo-srv"),
    "relay": ("relay", "relay", "teredo-relay"),
    "client": ("client2", "client2", "teredo"),
    "host-relay": ("hostrelay", "dualhost", "teredo-hr"),
}
#: The legitimate client, restarted after every run to show the node still serves.
LEGIT_CLIENT = "client1"
#: The client under test listens on a fixed port behind the lab's cone NAT (which keeps the
#: port), without local discovery (its multicast socket is not the service port).
CLIENT_SETTINGS = {"port": 40001, "local-discovery": False}
FUZZER_PORT = 41000
READY_TIMEOUT = 20.0
SETTLE_SECONDS = 0.5
PING_COUNT = 5


def fuzzer_host(role: str) -> str:
    """
    Where the datagrams come from: a public host with no NAT in between, running nothing
    of the role under test.
    """
    return "relay" if role == "host-relay" else "dualhost"


def start_nodes(lab: Any) -> None:
    """
    Our server, relay, client2 (the client under test), host-specific relay and client1.
    """
    lab.start_teredonode("server", "server", "server")
    if not lab.wait_udp_listening("server", TEREDO_PORT, READY_TIMEOUT):
        raise RuntimeError("server not listening")
    lab.start_teredonode("relay", "relay", "relay")
    lab.start_teredonode("client2", "client2", "client", settings=dict(CLIENT_SETTINGS))
    lab.start_teredonode("hostrelay", "dualhost", "host-relay")
    lab.start_teredonode(LEGIT_CLIENT, LEGIT_CLIENT, "client")
    for node, ready in (
        ("server", lambda s: s["server"]["state"] == "serving"),
        ("relay", lambda s: s["relay"]["state"] == "relaying"),
        ("hostrelay", lambda s: s["host-relay"]["state"] == "relaying"),
        ("client2", lambda s: s["client"]["state"] == "qualified"),
        (LEGIT_CLIENT, lambda s: s["client"]["state"] == "qualified"),
    ):
        status, ok = lab.wait_node_status(node, ready, READY_TIMEOUT)
        if not ok:
            raise RuntimeError(f"{node} not ready: {status}; log {lab.nodes[node].log_tail(10)}")


def _ipv6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text.split("/")[0])


def make_target(lab: Any, role: str) -> tuple[FuzzTarget, tuple[str, int]]:
    """
    The generator's view of C{role} in C{lab}, and the endpoint to send to.
    """
    server = lab.ipv4("server")
    mapping = (lab.ipv4(fuzzer_host(role)), FUZZER_PORT)
    native = (_ipv6(lab.ipv6("v6host")), _ipv6(lab.ipv6("dualhost")))
    stranger = teredo_address(server, "198.51.100.77", 4242)
    if role == "server":
        return FuzzTarget(role, mapping, server, (stranger, server_link_local(server)), native), (server, TEREDO_PORT)
    if role == "relay":
        return FuzzTarget(role, mapping, server, native + (stranger,), native), (lab.ipv4("relay"), TEREDO_PORT)
    if role == "client":
        table = lab.node_status("client2")["client"]
        ip, port = table["mapping"].rsplit(":", 1)
        return FuzzTarget(role, mapping, server, (_ipv6(table["address"]),), native), (ip, int(port))
    table = lab.node_status("hostrelay")["host-relay"]
    port = int(table["local"].rsplit(":", 1)[1])
    return FuzzTarget(role, mapping, server, (_ipv6(lab.ipv6("dualhost")),), native), (lab.ipv4("dualhost"), port)


def _balance(lab: Any, role: str) -> tuple[Accounting, dict[str, Any]]:
    """
    A status document and TUN count read consistently (no TUN packet read in between).
    """
    node, host, tun = NODES[role]
    for _ in range(20):
        before = tun_tx_packets(lab, host, tun)
        status = lab.node_status(node)
        if tun_tx_packets(lab, host, tun) == before:
            return account(role, status, before), status
    return account(role, status, before), status


def _settle(lab: Any, role: str, timeout: float = 30.0) -> None:
    """
    Wait until the node has read everything sent (its C{received} stops moving).
    """
    node = NODES[role][0]
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        received = lab.node_status(node)[role]["counters"]["received"]
        if received == last:
            return
        last = received
        time.sleep(SETTLE_SECONDS)


def legit_check(lab: Any) -> dict[str, tuple[int, int]]:
    """
    Property 4: a fresh client qualifies, and every path of the lab pings (through the
    server, the relay, the client under test and the host-specific relay).
    """
    lab.stop_node(LEGIT_CLIENT)
    lab.start_teredonode(LEGIT_CLIENT, LEGIT_CLIENT, "client")
    status, ok = lab.wait_node_status(LEGIT_CLIENT, lambda s: s["client"]["state"] == "qualified", READY_TIMEOUT)
    if not ok:
        return {"qualify": (0, 1)}
    address2 = lab.node_status("client2")["client"]["address"]
    paths = {
        "client1 -> v6host": (LEGIT_CLIENT, lab.ipv6("v6host")),
        "client2 -> v6host": ("client2", lab.ipv6("v6host")),
        "client1 -> client2": (LEGIT_CLIENT, address2),
        "dualhost -> client1": ("dualhost", status["client"]["address"]),
    }
    result = {"qualify": (1, 1)}
    for name, (src, dst) in paths.items():
        received, _ = lab.ping6(src, dst, PING_COUNT, interval=0.2)
        result[name] = (received, PING_COUNT)
    return result


#: Counters of what a node sends on its own account (answers, bubbles, errors): shown so a
#: reader sees how much a flood of hostile datagrams made it send (amplification).
ANSWERS = (
    "ra", "echo-replies", "forwarded", "bubbles-answered", "bubbles-suppressed", "bubbles-direct",
    "bubbles-indirect", "echo-tests", "echo-suppressed", "icmp-errors", "icmp-errors-limited",
)


@dataclass
class FuzzReport:
    """
    The figures of one role's run and its four properties.
    """

    role: str
    target: str
    sent: int
    send_errors: int
    spoofed: int
    seconds: float
    rate: float
    received: int
    kernel_rcvbuf_drops: int
    rss_before: int
    rss_after: int
    alive: bool
    accounting: Accounting
    drops: dict[str, int]
    legit: dict[str, tuple[int, int]]
    counters: dict[str, int] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> int:
        return self.rss_after - self.rss_before

    @property
    def legit_ok(self) -> bool:
        return all(got >= want - 1 and got > 0 for got, want in self.legit.values()) and self.legit.get("qualify") == (1, 1)

    @property
    def ok(self) -> bool:
        return (
            self.alive
            and self.rss_growth < RSS_GROWTH_LIMIT
            and self.accounting.balanced
            and self.legit_ok
            and not self.log_errors
        )

    def lines(self) -> list[str]:
        mib = 1024 * 1024
        acc = self.accounting
        out = [
            f"{self.role}: {self.sent} datagrams to {self.target} in {self.seconds:.1f} s "
            f"({self.rate:.0f}/s), {self.send_errors} send errors"
            + (f", {self.spoofed} of them spoofed from the server" if self.spoofed else ""),
            f"  node received {self.received} on UDP (kernel receive-buffer drops {self.kernel_rcvbuf_drops})",
            f"  RSS {self.rss_before / mib:.1f} MiB -> {self.rss_after / mib:.1f} MiB "
            f"(growth {self.rss_growth / mib:+.1f} MiB, limit {RSS_GROWTH_LIMIT // mib})",
            f"  alive: {self.alive}; accounting: taken in {acc.taken_in}, accounted {acc.accounted}"
            f" -> {'balanced' if acc.balanced else 'UNBALANCED'}",
            "  drops: " + ", ".join(f"{k} {v}" for k, v in sorted(self.drops.items(), key=lambda kv: -kv[1]) if v),
            "  other outcomes: " + ", ".join(f"{k} {v}" for k, v in acc.outcomes.items() if not k.startswith("drop:")),
            "  packets the node sent in answer (whole run): "
            + (", ".join(f"{k} {self.counters[k]}" for k in ANSWERS if self.counters.get(k)) or "none"),
            "  legitimate traffic after: " + ", ".join(f"{k} {a}/{b}" for k, (a, b) in self.legit.items()),
            f"  tracebacks in the node's log: {len(self.log_errors)}"
            + (f" (first: {self.log_errors[0]})" if self.log_errors else ""),
            f"  => {'PASS' if self.ok else 'FAIL'}",
        ]
        return out


def fuzz_role(
    lab: Any,
    role: str,
    count: int,
    rate: float = DEFAULT_RATE,
    seed: int = 0,
    max_seconds: float = 600.0,
) -> FuzzReport:
    """
    Fuzz C{role}'s node (started by L{start_nodes}) with C{count} datagrams at C{rate}/s
    from L{fuzzer_host}, then measure the four properties.
    """
    import subprocess

    from teredonode.lab.nodes import tree_env

    node, host, _ = NODES[role]
    handle = lab.nodes[node]
    pid = handle.record.pid
    target, dst = make_target(lab, role)
    rss_before = rss_bytes(pid)
    received_before = lab.node_status(node)[role]["counters"]["received"]
    rcvbuf_before = udp_rcvbuf_errors(lab, host)
    env = tree_env()
    argv = [
        sys.executable, "-m", "teredonode.lab.fuzz", "send",
        "--target", f"{dst[0]}:{dst[1]}",
        "--bind", f"{target.mapping[0]}:{target.mapping[1]}",
        "--spec", target_spec(target),
        "--count", str(count), "--rate", str(rate), "--max-seconds", str(max_seconds), "--seed", str(seed),
    ]
    if role == "client":
        # A share of the datagrams poses as the client's server (RAs, origin indications).
        argv += ["--spoof", f"{target.server}:{TEREDO_PORT}"]
    proc = lab.popen(fuzzer_host(role), argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        out, err = proc.communicate(timeout=max_seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"fuzz sender failed: {err.strip().splitlines()[-1:] or proc.returncode}")
    sent = json.loads(out.strip().splitlines()[-1])
    alive = handle.exit_code() is None
    if alive:
        _settle(lab, role)
        accounting, status = _balance(lab, role)
        alive = handle.exit_code() is None
    else:
        accounting, status = Accounting(-1, 0), {role: {"drops": {}, "counters": {"received": 0}}}
    rss_after = rss_bytes(pid) if alive else 0
    received = status[role]["counters"]["received"] - received_before
    legit = legit_check(lab) if alive else {}
    log_errors = log_tracebacks(handle.record.log)
    return FuzzReport(
        role=role,
        target=f"{dst[0]}:{dst[1]}",
        sent=sent["sent"],
        send_errors=sent["send_errors"],
        spoofed=sent.get("spoofed", 0),
        seconds=sent["seconds"],
        rate=sent["sent"] / sent["seconds"] if sent["seconds"] else 0.0,
        received=received,
        kernel_rcvbuf_drops=udp_rcvbuf_errors(lab, host) - rcvbuf_before,
        rss_before=rss_before,
        rss_after=rss_after,
        alive=alive,
        accounting=accounting,
        drops=dict(status[role]["drops"]),
        legit=legit,
        counters=dict(status[role]["counters"]),
        log_errors=log_errors,
    )


def log_tracebacks(path: str) -> list[str]:
    """
    The line after each traceback in a node's log (Twisted's "Unhandled Error" has one): an exception in any
    handler (UDP, TUN, timers) shows there even where the accounting cannot see it.
    """
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return []
    found = []
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            found.append(lines[i + 1].strip() if i + 1 < len(lines) else line.strip())
    return found
