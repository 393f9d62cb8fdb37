"""
Our server in the lab, serving Miredo clients (issue: server role).

  - a Miredo client behind a port-restricted NAT qualifies against our server;
  - two Miredo clients behind different NATs reach each other through bubbles our server
    forwards;
  - a Miredo client reaches v6host through a Miredo relay, our server forwarding the echo test;
  - 10 000 random and mutated datagrams do not stop our server serving a client that
    qualifies right after.
"""

from __future__ import annotations

import textwrap
from typing import Any

from twisted.trial import unittest

from teredonode.wire.address import TeredoAddress
from tests.system.lab_fixture import LabAssertions, use_lab

QUALIFY_TIMEOUT = 25.0


class ServerInteropTests(LabAssertions, unittest.TestCase):
    def setUp(self) -> None:
        # The lab's server host forwards IPv6; our server does not need it (its echo tests
        # leave through a raw IPv6 socket), test_echo_test_without_forwarding turns it off.
        self.lab = use_lab(self, "default", need_miredo=True)
        self.server = self.lab.start_teredonode("our-server", "server", "server")
        self.waitStatus("our-server", lambda s: s["server"]["state"] == "serving", 15, "serving")

    def qualify(self, client: str) -> TeredoAddress:
        self.lab.start_miredo(f"miredo-{client}", client, "client")
        text = self.lab.wait_teredo_address(client, QUALIFY_TIMEOUT)
        assert text is not None, f"{client} did not qualify; server log: {self.server.log_tail(10)}"
        return TeredoAddress.parse(text)

    def serverStatus(self) -> dict[str, Any]:
        return self.lab.node_status("our-server")

    def test_miredo_client_qualifies(self) -> None:
        """
        The Miredo client's address carries our server's IPv4 and its NAT's public mapping.
        """
        address = self.qualify("client1")
        self.assertEqual(address.server, self.lab.host("server").ipv4[0])
        self.assertEqual(address.client, self.lab.public_ipv4("client1"))
        status = self.serverStatus()["server"]
        self.assertGreaterEqual(status["counters"]["ra"], 1)

    def test_miredo_clients_reach_each_other(self) -> None:
        """
        Client to client across two NATs: the bubbles go through our server.
        """
        self.qualify("client1")
        other = self.qualify("client2")
        received, output = self.lab.ping6("client1", str(other), count=6)
        self.assertGreater(received, 0, output)
        self.assertGreater(self.serverStatus()["server"]["counters"]["forwarded"], 0)

    def test_miredo_client_reaches_v6host_via_miredo_relay(self) -> None:
        """
        The echo test goes through our server's IPv6 side; traffic then flows via the relay.
        """
        self.lab.exec("relay", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.lab.start_miredo("miredo-relay", "relay", "relay")
        self.qualify("client1")
        received, output = self.lab.ping6("client1", self.lab.ipv6("v6host"), count=6)
        self.assertGreater(received, 0, output)
        self.assertGreater(self.serverStatus()["server"]["counters"]["forwarded-ipv6"], 0)

    def test_echo_test_without_forwarding(self) -> None:
        """
        On a server host that does not forward IPv6 (set up like a Miredo server host), a
        Miredo client still reaches v6host through a relay: the server sends the client's
        echo test through its raw IPv6 socket, not into the kernel's forwarding path.
        """
        self.lab.exec("server", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=0"], check=True)
        self.lab.exec("relay", ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"], check=True)
        self.lab.start_miredo("miredo-relay", "relay", "relay")
        self.qualify("client1")
        received, output = self.lab.ping6("client1", self.lab.ipv6("v6host"), count=6)
        self.assertGreater(received, 0, output)
        status = self.serverStatus()["server"]
        self.assertGreater(status["counters"]["forwarded-ipv6"], 0)
        self.assertEqual(status["send-errors"], {}, status)

    def test_fuzz_then_serve(self) -> None:
        """
        10 000 random and mutated datagrams from a public host, then a client qualifies.
        """
        target = self.lab.host("server").ipv4[0]
        script = textwrap.dedent(
            f"""
            import os, random, socket, sys, time
            sys.path.insert(0, {str(self._repo())!r})
            from teredonode.wire import ipv6, teredo, address
            rng = random.Random(4380)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rs = teredo.encode_payload(
                ipv6.icmpv6_packet(address.CLIENT_LINK_LOCAL_RESTRICTED, ipv6.ALL_ROUTERS, ipv6.RouterSolicitation(), 255),
                teredo.AuthIndicator(b"12345678"))
            bubble = ipv6.bubble(bytes(16), bytes(16))
            sent = 0
            for i in range(10000):
                if i % 2:
                    data = bytearray(rng.choice([rs, bubble, b"\\x00\\x00" + bytes(6) + bubble]))
                    for _ in range(rng.randint(1, 4)):
                        data[rng.randrange(len(data))] = rng.randrange(256)
                    data = bytes(data) + os.urandom(rng.randint(0, 20))
                else:
                    data = os.urandom(rng.randint(0, 1400))
                try:
                    s.sendto(data, ({target!r}, 3544))
                    sent += 1
                except OSError:
                    pass
                if i % 50 == 49:
                    time.sleep(0.005)  # bounded pace: this checks robustness, not load
            print(sent)
            """
        )
        out = self.lab.exec("dualhost", ["python3", "-c", script], timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(int(out.stdout.strip()), 10000)
        self.assertIsNone(self.server.exit_code(), self.server.log_tail(20))
        self.qualify("client1")
        status = self.serverStatus()["server"]
        self.assertGreater(status["counters"]["received"], 1000)
        self.assertGreater(sum(status["drops"].values()), 1000)

    def _repo(self):
        from teredonode.lab.nodes import REPO_ROOT

        return REPO_ROOT


class DemoWithOurServerTests(unittest.TestCase):
    """
    The demo's rows that need only our server: Miredo relay and clients, our server.
    """

    def test_demo_rows(self) -> None:
        import io

        from teredonode.lab.demo import demo_on

        lab = use_lab(self, "default", need_miredo=True)
        out = io.StringIO()
        ok, rows = demo_on(lab, ["relay", "client"], out)
        table = out.getvalue()
        self.assertIn("teredonode on server", table)
        for row in rows:
            if row.counts:
                self.assertTrue(row.ok, f"{row.path}: {row.result}\n{table}")
        self.assertTrue(ok, table)
