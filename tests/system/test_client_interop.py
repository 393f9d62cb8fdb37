"""
Our client in the lab (issue: client role), against Miredo and against our own roles.

  - behind each NAT mode it qualifies against miredo-server and against our server, and its
    status names the NAT type: C{restricted-or-cone} behind none/cone/port-restricted/
    masquerade, C{symmetric} behind the symmetric NAT (then offline, unless allow-symmetric);
  - it reaches v6host through a Miredo relay, and v6host reaches it (first packet from
    either side);
  - it and a Miredo client, each behind its own port-restricted NAT, ping each other (either
    one starting), and two of our clients do the same;
  - the NAT forgets its mappings (conntrack flushed) or changes its behaviour (nft rule set
    switched, giving the client another port) mid-run, and the client recovers by itself
    within two refresh intervals.

Every wait is a poll with a deadline; every ping is bounded by its own count and timeout.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from twisted.trial import unittest

from teredonode.wire.address import TeredoAddress
from tests.system.lab_fixture import LabAssertions, use_lab

QUALIFY_TIMEOUT = 15.0
# The shortest maintenance interval the config accepts; the client refreshes every
# REFRESH x uniform[0.75, 1] seconds.
REFRESH = 10
# "Recovers by itself within two refresh intervals".
RECOVERY_DEADLINE = 2 * REFRESH

NAT_MODE_CLIENTS = {  # the "nat-modes" scenario
    "client1": "none",
    "client2": "cone",
    "client3": "port-restricted",
    "client4": "masquerade",
    "client5": "symmetric",
}


# ------------------------------------------------------------------------------- helpers


def tun_packets(lab, host: str, interface: str) -> int:
    """
    Packets in and out of C{interface} on C{host} (the kernel's counters).
    """
    out = lab.exec(
        host,
        ["cat", f"/sys/class/net/{interface}/statistics/rx_packets", f"/sys/class/net/{interface}/statistics/tx_packets"],
        timeout=10,
    ).stdout.split()
    return sum(int(x) for x in out) if len(out) == 2 else 0


def global_addresses(lab, host: str, interface: str = "teredo") -> set[str]:
    out = lab.exec(host, ["ip", "-6", "-o", "addr", "show", "dev", interface, "scope", "global"], timeout=10).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        if "inet6" in fields:
            found.add(str(ipaddress.IPv6Address(fields[fields.index("inet6") + 1].split("/")[0])))
    return found


class LabClientMixin(LabAssertions):
    """
    Starting servers, relays and clients (ours or Miredo's) and reading our nodes' status.
    """

    serverNode = "server-node"

    def startServer(self, impl: str) -> None:
        if impl == "ours":
            # Our server forwards clients' echo tests to native IPv6 through its TUN.
            self.lab.exec("server", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
            self.lab.start_teredonode(self.serverNode, "server", "server")
        else:
            self.lab.start_miredo(self.serverNode, "server", "server")
        if not self.lab.wait_udp_listening("server", 3544, 15):
            self.fail(f"{impl} server does not listen: {self.lab.nodes[self.serverNode].log_tail(10)}")
        if impl == "ours":
            self.waitStatus(self.serverNode, lambda s: s["server"]["state"] == "serving", 15, "server serving")

    def startMiredoRelay(self) -> None:
        self.lab.exec("relay", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.lab.start_miredo("miredo-relay", "relay", "relay")
        if not self.lab.wait_udp_listening("relay", 3544, 15):
            self.fail(f"Miredo relay does not listen: {self.lab.nodes['miredo-relay'].log_tail(10)}")

    def startOurClient(self, host: str, **settings) -> str:
        node = f"ours-{host}"
        self.lab.start_teredonode(node, host, "client", settings or None)
        return node

    def startMiredoClient(self, host: str) -> str:
        node = f"miredo-{host}"
        self.lab.start_miredo(node, host, "client")
        return node

    def status(self, node: str) -> dict[str, Any]:
        return self.lab.node_status(node)

    def clientStatus(self, node: str) -> dict[str, Any]:
        client: dict[str, Any] = self.status(node)["client"]
        return client

    def waitQualified(self, node: str, host: str, timeout: float = QUALIFY_TIMEOUT) -> TeredoAddress:
        """
        Our client on C{host} is qualified and its address is on its TUN; returns the address.
        """
        status = self.waitStatus(node, lambda s: s["client"]["state"] == "qualified", timeout, "qualified")
        address = status["client"]["address"]
        deadline = time.monotonic() + 5
        while address not in global_addresses(self.lab, host):
            if time.monotonic() > deadline:
                self.fail(f"{host}: status says {address} but the TUN has {global_addresses(self.lab, host)}")
            time.sleep(0.1)
        return TeredoAddress.parse(address)

    def waitMiredoQualified(self, node: str, host: str) -> TeredoAddress:
        text = self.lab.wait_teredo_address(host, QUALIFY_TIMEOUT)
        assert text is not None, f"Miredo client on {host} did not qualify: {self.lab.nodes[node].log_tail(10)}"
        return TeredoAddress.parse(text)



# ------------------------------------------------------------------------ qualification


class QualificationMixin(LabClientMixin):
    """
    One of our clients behind every NAT mode at once (scenario "nat-modes").
    """

    serverImpl = ""

    def setUp(self) -> None:
        self.lab = use_lab(self, "nat-modes", need_miredo=True)
        self.startServer(self.serverImpl)

    def test_nat_modes(self) -> None:
        started = time.monotonic()
        # Behind the symmetric NAT, RFC 4380 alone (no RFC 6081 Symmetric NAT Support) is
        # what keeps the client offline; with it the client qualifies (test_symmetric_sns).
        nodes = {
            host: self.startOurClient(host, **({"symmetric-nat-support": False} if mode == "symmetric" else {}))
            for host, mode in NAT_MODE_CLIENTS.items()
        }
        server = self.lab.host("server").ipv4[0]
        for host, mode in NAT_MODE_CLIENTS.items():
            if mode == "symmetric":
                continue
            address = self.waitQualified(nodes[host], host)
            status = self.clientStatus(nodes[host])
            self.assertEqual(status["nat"], "restricted-or-cone", f"{host} behind {mode}: {status}")
            public = self.lab.public_ipv4(host)
            self.assertEqual(status["mapping"], f"{address.client}:{address.port}")
            self.assertEqual(address.client, public, f"{host} behind {mode}")
            self.assertEqual(address.server, server)
            self.assertEqual(status["server"], server)
            self.assertEqual(status["secondary"], self.lab.host("server").ipv4[1])
            self.assertGreaterEqual(status["counters"]["ra-accepted"], 2)  # primary and secondary
        qualified_in = time.monotonic() - started
        self.assertLess(qualified_in, QUALIFY_TIMEOUT)

        # Behind the symmetric NAT: detected, said in status and log, offline, no address.
        node = nodes["client5"]
        status = self.waitStatus(
            node, lambda s: s["client"]["state"] == "offline", QUALIFY_TIMEOUT, "offline"
        )["client"]
        self.assertEqual(status["nat"], "symmetric", status)
        self.assertIn("symmetric", status["offline-reason"])
        self.assertIsNone(status["address"])
        self.assertIsNone(status["mapping"])
        self.assertEqual(global_addresses(self.lab, "client5"), set())
        log = "\n".join(self.lab.nodes[node].log_tail(40))
        self.assertIn("Symmetric NAT", log)
        # The TUN stays up without an address while offline.
        link = self.lab.exec("client5", ["ip", "-o", "link", "show", "dev", "teredo"], timeout=10).stdout
        self.assertIn("UP", link)

    def test_symmetric_sns(self) -> None:
        """
        X-SNS-11: with Symmetric NAT Support (the default) the client qualifies behind a
        symmetric NAT, saying so.
        """
        node = self.startOurClient("client5")
        address = self.waitQualified(node, "client5")
        status = self.clientStatus(node)
        self.assertEqual(status["nat"], "symmetric", status)
        self.assertEqual(status["nat-flags"]["symmetric"], True, status)
        self.assertEqual(address.client, self.lab.public_ipv4("client5"))

    def test_symmetric_allowed(self) -> None:
        """
        allow-symmetric: without Symmetric NAT Support the client goes online anyway, saying
        the NAT is symmetric.
        """
        node = self.startOurClient("client5", **{"allow-symmetric": True, "symmetric-nat-support": False})
        address = self.waitQualified(node, "client5")
        status = self.clientStatus(node)
        self.assertEqual(status["nat"], "symmetric", status)
        self.assertEqual(address.client, self.lab.public_ipv4("client5"))


class QualificationAgainstMiredoServerTests(QualificationMixin, unittest.TestCase):
    serverImpl = "miredo"


class QualificationAgainstOurServerTests(QualificationMixin, unittest.TestCase):
    serverImpl = "ours"


# ------------------------------------------------------------------------- connectivity


class ConnectivityMixin(LabClientMixin):
    """
    Scenario "default" with both NATs port-restricted (the hardest NAT that Teredo
    traverses), a server (ours or Miredo's) and, where needed, a Miredo relay.
    """

    serverImpl = ""

    def setUp(self) -> None:
        self.lab = use_lab(self, "default", need_miredo=True)
        self.lab.set_nat_mode("nat2", "port-restricted")
        self.startServer(self.serverImpl)

    def test_v6host_via_miredo_relay(self) -> None:
        """
        client1 starts by pinging v6host; v6host starts by pinging client2; then the reverse
        of each.  Every path goes through the Miredo relay.
        """
        self.startMiredoRelay()
        one = self.startOurClient("client1")
        two = self.startOurClient("client2")
        self.waitQualified(one, "client1")
        address2 = self.waitQualified(two, "client2")
        v6host = self.lab.ipv6("v6host")
        logs = (one, two, "miredo-relay", self.serverNode)
        relay_before = tun_packets(self.lab, "relay", "teredo-relay")

        self.assertPings("client1", v6host, logs=logs)
        self.assertPings("v6host", str(address2), logs=logs)
        self.assertPings("client2", v6host, logs=logs)
        address1 = self.clientStatus(one)["address"]
        self.assertPings("v6host", address1, logs=logs)

        self.assertGreaterEqual(tun_packets(self.lab, "relay", "teredo-relay") - relay_before, 4 * 2 * 4)
        for node in (one, two):
            counters = self.clientStatus(node)["counters"]
            self.assertGreaterEqual(counters["echo-tests-ok"], 1, counters)
            self.assertGreaterEqual(counters["delivered"], 4, counters)

    def test_miredo_client_starts(self) -> None:
        """
        A Miredo client pings our client first (our NAT must be opened by bubbles), then ours
        pings back.
        """
        ours = self.startOurClient("client1")
        miredo = self.startMiredoClient("client2")
        address = self.waitQualified(ours, "client1")
        other = self.waitMiredoQualified(miredo, "client2")
        logs = (ours, miredo, self.serverNode)
        self.assertPings("client2", str(address), logs=logs)
        self.assertPings("client1", str(other), logs=logs)
        self.assertDirect(ours)

    def test_our_client_starts(self) -> None:
        """
        Our client pings a Miredo client first, then the Miredo client pings back.
        """
        ours = self.startOurClient("client1")
        miredo = self.startMiredoClient("client2")
        address = self.waitQualified(ours, "client1")
        other = self.waitMiredoQualified(miredo, "client2")
        logs = (ours, miredo, self.serverNode)
        self.assertPings("client1", str(other), logs=logs)
        self.assertPings("client2", str(address), logs=logs)
        self.assertDirect(ours)

    def test_two_of_ours(self) -> None:
        """
        Two of our clients behind two port-restricted NATs, each starting once.
        """
        one = self.startOurClient("client1")
        two = self.startOurClient("client2")
        address1 = self.waitQualified(one, "client1")
        address2 = self.waitQualified(two, "client2")
        logs = (one, two, self.serverNode)
        self.assertPings("client1", str(address2), logs=logs)
        self.assertPings("client2", str(address1), logs=logs)
        self.assertDirect(one)
        self.assertDirect(two)

    def assertDirect(self, node: str) -> None:
        """
        Our client punched through: it sent and received bubbles and delivered the echoes.
        """
        counters = self.clientStatus(node)["counters"]
        self.assertGreaterEqual(counters["delivered"], 4, counters)
        self.assertGreaterEqual(counters["sent"], 4, counters)
        self.assertGreaterEqual(
            counters["bubbles-direct"] + counters["bubbles-answered"], 1, counters
        )


class ConnectivityWithMiredoServerTests(ConnectivityMixin, unittest.TestCase):
    serverImpl = "miredo"


class ConnectivityWithOurServerTests(ConnectivityMixin, unittest.TestCase):
    serverImpl = "ours"


# --------------------------------------------------------------------------- recovery


class MappingLossTests(LabClientMixin, unittest.TestCase):
    """
    Our client (refresh 10 s) behind nat1 (port-restricted), a Miredo client behind nat2
    (cone), miredo-server and a Miredo relay.  The NAT loses its mappings mid-run.
    """

    def setUp(self) -> None:
        self.lab = use_lab(self, "default", need_miredo=True)
        self.startServer("miredo")
        self.startMiredoRelay()
        self.ours = self.startOurClient("client1", refresh=REFRESH)
        self.miredo = self.startMiredoClient("client2")
        self.address = self.waitQualified(self.ours, "client1")
        self.other = self.waitMiredoQualified(self.miredo, "client2")
        self.logs = (self.ours, self.miredo, "miredo-relay", self.serverNode)
        self.assertPings("client1", self.lab.ipv6("v6host"), logs=self.logs)

    def test_conntrack_flush(self) -> None:
        """
        After C{conntrack -F} the server cannot reach the client until the client's own
        refresh re-opens the NAT; then a peer that never talked to it before can ping it.
        """
        ra_before = self.clientStatus(self.ours)["counters"]["ra-accepted"]
        self.lab.exec("nat1", ["conntrack", "-F"], timeout=10, check=False)
        flushed = time.monotonic()
        self.waitStatus(
            self.ours,
            lambda s: s["client"]["counters"]["ra-accepted"] > ra_before,
            RECOVERY_DEADLINE,
            "refreshed",
        )
        elapsed = time.monotonic() - flushed
        status = self.clientStatus(self.ours)
        self.assertEqual(status["state"], "qualified")
        self.assertEqual(status["address"], str(self.address))
        # The Miredo client's first packet to us goes through the server (indirect bubble).
        self.assertPings("client2", str(self.address), logs=self.logs)
        self.assertPings("client1", self.lab.ipv6("v6host"), logs=self.logs)
        self.assertPings("v6host", str(self.address), logs=self.logs)
        self.assertLess(time.monotonic() - flushed, RECOVERY_DEADLINE + 15, f"refreshed after {elapsed:.1f} s")

    def test_nat_mode_switch_changes_mapping(self) -> None:
        """
        nat1 switches to the symmetric rule set (fully-random ports, conntrack flushed): the
        next refresh sees another port and the client swaps its address; back to
        port-restricted: the port changes again, another swap, and the new address is
        reachable from v6host (through the relay) and from a Teredo peer.
        """
        old = str(self.address)
        changes = self.clientStatus(self.ours)["counters"]["address-changes"]

        self.lab.set_nat_mode("nat1", "symmetric")
        switched = time.monotonic()
        status = self.waitStatus(
            self.ours, lambda s: s["client"]["address"] not in (None, old), RECOVERY_DEADLINE, "re-mapped"
        )["client"]
        first_swap = time.monotonic() - switched
        middle = status["address"]
        self.assertEqual(status["state"], "qualified")
        self.assertEqual(status["counters"]["address-changes"], changes + 1)
        self.assertNotEqual(TeredoAddress.parse(middle).port, self.address.port)
        self.assertEqual(global_addresses(self.lab, "client1"), {middle})

        self.lab.set_nat_mode("nat1", "port-restricted")
        switched = time.monotonic()
        status = self.waitStatus(
            self.ours, lambda s: s["client"]["address"] not in (None, middle), RECOVERY_DEADLINE, "re-mapped"
        )["client"]
        second_swap = time.monotonic() - switched
        new = status["address"]
        self.assertEqual(status["state"], "qualified")
        self.assertEqual(status["counters"]["address-changes"], changes + 2)
        self.assertEqual(TeredoAddress.parse(new).client, self.lab.public_ipv4("client1"))
        self.assertEqual(global_addresses(self.lab, "client1"), {new})

        # The client reaches v6host first, right after the swap: its old trust in the relay
        # was dropped with the old address, so a new echo test finds the relay again (a
        # Miredo relay drops packets from a mapping it does not know).
        self.assertPings("client1", self.lab.ipv6("v6host"), logs=self.logs)
        # The new address works from outside: v6host through the relay, and a Teredo peer.
        self.assertPings("v6host", new, logs=self.logs)
        self.assertPings("client2", new, logs=self.logs)
        self.assertPings("client1", str(self.other), logs=self.logs)
        self.assertLess(max(first_swap, second_swap), RECOVERY_DEADLINE)
