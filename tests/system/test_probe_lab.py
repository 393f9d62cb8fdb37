"""
C{teredo probe} in the lab: from a host behind every NAT kind of teredonode/lab/nat.py, against
our server and against miredo-server at once, the kind (RFC 6081 section 2 and Figure 1), the
UPnP gateway and the mappings come out as the NAT really built them.  No interface is
configured: the probe is UDP sockets.

One lab ("nat:cone"): client1 behind nat1, our server on "server" (203.0.113.10/.11) and
miredo-server on "dualhost", given a second address for its secondary.  nat1 is switched from
kind to kind with L{Lab.set_nat_mode} (which flushes conntrack), and after each probe the
mappings the probe reports are compared with the NAT's own conntrack table, where the reply
direction's destination is the external address and port of every flow (the kernel's NAT
flows, and the address-symmetric userspace NAT's own sockets alike).
"""

from __future__ import annotations

import json
import re
from typing import Any

from twisted.trial import unittest

from teredonode.lab import nat, nodes
from teredonode.lab.proc import which
from teredonode.lab.nodes import REPO_ROOT
from teredonode.probe import FIGURE1
from tests.system.lab_fixture import use_lab

#: miredo-server's secondary, next to dualhost's own address (RFC 4380: two consecutive).
MIREDO_SECONDARY = "203.0.113.41"

#: What the probe must call each lab kind (the "upnp-" kinds add an UPnP gateway).
EXPECTED_KIND = {
    "cone": "cone",
    "address-restricted": "address-restricted",
    "port-restricted": "port-restricted",
    "masquerade": "port-restricted",  # its quirk needs an unsolicited packet from a peer (docs)
    "symmetric": "port-symmetric",
    "port-symmetric": "port-symmetric",
    "port-preserving-symmetric": "port-preserving-symmetric",
    "sequential-symmetric": "sequential-symmetric",
    "address-symmetric": "address-symmetric",
    "upnp-port-restricted": "port-restricted",
    "upnp-port-symmetric": "port-symmetric",
}

#: Where one server sees another kind than the probe's verdict: (lab kind, server) -> kind.
#: The lab's UPnP port-symmetric NAT keeps the source port toward our server's primary
#: address, port 3544 (RFC 6081 section 3.2: the server reflects the reserved port; see
#: teredonode/lab/nat.py), so our server alone sees every socket's first mapping keep its
#: port; Miredo's server sees random ports, and the verdict over both is port-symmetric.
SERVER_KIND = {("upnp-port-symmetric", "ours"): "port-preserving-symmetric"}

_FLOW = re.compile(r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)")


def conntrack_mappings(text: str) -> list[tuple[tuple[str, int, str], str]]:
    """
    C{conntrack -L -p udp}'s flows to port 3544: ((original source address, port,
    destination), external "address:port") each.
    """
    flows = []
    for line in text.splitlines():
        found = _FLOW.findall(line)
        if len(found) != 2 or found[0][3] != "3544":
            continue
        (src, dst, sport, _), (_, rdst, _, rdport) = found
        flows.append(((src, int(sport), dst), f"{rdst}:{rdport}"))
    return flows


class ConntrackParsingTests(unittest.SynchronousTestCase):
    def test_kernel_and_userspace_flows(self) -> None:
        text = (
            "udp      17 29 src=10.1.0.2 dst=203.0.113.10 sport=40000 dport=3544 [UNREPLIED] "
            "src=203.0.113.10 dst=198.51.100.11 sport=3544 dport=20001 mark=0 use=1\n"
            "udp      17 29 src=198.51.100.160 dst=203.0.113.11 sport=33691 dport=3544 "
            "src=203.0.113.11 dst=198.51.100.160 sport=3544 dport=33691 [ASSURED] mark=0 use=1\n"
            "udp      17 29 src=10.1.0.1 dst=239.255.255.250 sport=38702 dport=1900 [UNREPLIED] "
            "src=239.255.255.250 dst=10.1.0.1 sport=1900 dport=38702 mark=0 use=1\n"
        )
        self.assertEqual(
            conntrack_mappings(text),
            [
                (("10.1.0.2", 40000, "203.0.113.10"), "198.51.100.11:20001"),
                (("198.51.100.160", 33691, "203.0.113.11"), "198.51.100.160:33691"),
            ],
        )


class ProbeLabTests(unittest.TestCase):
    def setUp(self) -> None:
        self.lab = use_lab(self, "nat:cone", need_miredo=True)
        self.ours = tuple(self.lab.host("server").ipv4[:2])
        dualhost = self.lab.ipv4("dualhost")
        self.miredo = (dualhost, MIREDO_SECONDARY)
        self.lab.exec("dualhost", ["ip", "addr", "add", f"{MIREDO_SECONDARY}/24", "dev", "eth0"], check=True)
        self.start_ours()
        self.lab.start_miredo("miredo-server", "dualhost", "server", conf=nodes.miredo_server_conf(*self.miredo))
        for host, node in (("server", "server-node"), ("dualhost", "miredo-server")):
            if not self.lab.wait_udp_listening(host, 3544, 15):
                self.fail(f"{node} does not listen: {self.lab.nodes[node].log_tail(10)}")

    def start_ours(self) -> None:
        """
        (Re)start our server with its default settings: a new process knows no source, so
        each probe meets the RS budget of a new source, as the probe assumes.
        """
        if "server-node" in self.lab.nodes:
            self.lab.stop_node("server-node")
        self.lab.start_teredonode("server-node", "server", "server")
        if not self.lab.wait_udp_listening("server", 3544, 15):
            self.fail(f"our server does not listen: {self.lab.nodes['server-node'].log_tail(10)}")

    def probe(self, host: str) -> dict[str, Any]:
        out = self.lab.exec(
            host,
            ["env", f"PYTHONPATH={REPO_ROOT}", "python3", "-m", "teredonode.cli", "probe",
             ",".join(self.ours), ",".join(self.miredo), "--timeout", "1", "--json"],
            timeout=60,
        )
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        report: dict[str, Any] = json.loads(out.stdout)
        return report

    def check_kind(self, mode: str) -> list[str]:
        """
        Switch nat1 to C{mode}, probe from client1, and return what is wrong (nothing, if the
        probe told the truth).
        """
        self.lab.set_nat_mode("nat1", mode)
        self.start_ours()
        report = self.probe("client1")
        wrong = []
        limited = self.lab.node_status("server-node")["server"]["drops"]["rate-limited-rs"]
        if limited:
            wrong.append(f"{mode}: our server rate-limited {limited} RSs: the probe's pacing is off")
        upnp = mode in nat.UPNP_MODES
        kind = EXPECTED_KIND[mode]
        figure1 = dict((lab, row) for row, lab in nat.FIGURE1).get(mode) or FIGURE1[kind][upnp]
        got = (report["kind"], report["upnp"], report["figure1"])
        if got != (kind, upnp, figure1):
            wrong.append(f"{mode}: kind, UPnP, Figure 1 row {got}, expected {(kind, upnp, figure1)}")
        servers = {s["server"]: s for s in report["servers"]}
        for name, (primary, secondary) in (("ours", self.ours), ("miredo", self.miredo)):
            s = servers[primary]
            if not (s["answers"] and s["secondary-answers"] and s["rtt-ms"] > 0):
                wrong.append(f"{mode}/{name}: server answers {s}")
            elif s["kind"] != SERVER_KIND.get((mode, name), kind):
                wrong.append(f"{mode}/{name}: kind {s['kind']}, expected {SERVER_KIND.get((mode, name), kind)}: {s}")
        packets = report["packets"]
        if not 0 < packets["sent"] <= 2 * (5 * 2 + 1) + 1:  # two servers, --attempts 2, SSDP
            wrong.append(f"{mode}: {packets['sent']} datagrams sent")
        wrong += self.check_mappings(mode, report)
        return wrong

    def check_mappings(self, mode: str, report: dict[str, Any]) -> list[str]:
        """
        Every mapping the probe reports is one the NAT made toward that destination; where
        the kernel translates, exactly the one it made for that local port.
        """
        flows = conntrack_mappings(self.lab.exec("nat1", ["conntrack", "-L", "-p", "udp"], timeout=10).stdout)
        client = self.lab.ipv4("client1")
        userspace = mode in nat.USERSPACE_MODES
        pool = nat.address_pool(self.lab.ipv4("nat1")) if userspace else (self.lab.ipv4("nat1"),)
        wrong = []
        for s in report["servers"]:
            if len(s["mappings"]) < 2:
                wrong.append(f"{mode}: {s['server']} reports {len(s['mappings'])} mappings")
            for local, mapped, destination in s["mappings"]:
                if userspace:
                    truth = {ext for (_, _, dst), ext in flows if dst == destination}
                    ok = mapped in truth and mapped.split(":")[0] in pool
                else:
                    truth = {ext for key, ext in flows if key == (client, local, destination)}
                    ok = truth == {mapped}
                if not ok:
                    wrong.append(f"{mode}: {local}->{destination} reported {mapped}, NAT made {sorted(truth)}")
        first = report["servers"][0]
        if report["mapped"] != first["mapped"] or first["mappings"][0][1] != first["mapped"]:
            wrong.append(f"{mode}: the mapped address {report['mapped']} is not the best server's {first}")
        return wrong

    def test_every_nat_kind(self) -> None:
        modes = [m for m in nat.NAT_MODES if m != "none"]
        self.assertEqual(set(modes), set(EXPECTED_KIND), "a lab NAT kind without an expected verdict")
        if which("miniupnpd") is None:
            modes = [m for m in modes if m not in nat.UPNP_MODES]
        wrong: list[str] = []
        for mode in modes:
            wrong += self.check_kind(mode)
        self.assertEqual(wrong, [], "\n".join(wrong))
        if which("miniupnpd") is None:
            raise unittest.SkipTest("UPnP kinds not probed: miniupnpd not installed")

    def test_no_nat(self) -> None:
        """
        A host on the Internet itself: no NAT, its own address, no UPnP gateway.
        """
        report = self.probe("relay")
        self.assertEqual((report["kind"], report["nat"], report["upnp"]), ("none", "none", False), report)
        self.assertEqual(report["mapped"].split(":")[0], self.lab.ipv4("relay"))
        self.assertEqual({s["kind"] for s in report["servers"]}, {"none"})
