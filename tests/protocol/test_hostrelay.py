"""
The host-specific relay on the in-memory network (requirements digest section 3.4:
HR-01..08, G-03/G-05), with our server and our client behind a NAT.  "dualhost" is a
public IPv4 host whose native IPv6 address is L{DUAL6}; L{DualHostStack} plays its kernel:
echo requests to DUAL6 (from our server's IPv6 side or from the host-relay's TUN) are
answered into the host-relay's TUN, where the host routes 2001::/32.
"""

from __future__ import annotations

import ipaddress
import os
import random
import tempfile
from typing import Any

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from teredonode.config import HostRelaySettings
from teredonode.interfaces import ITeredoRole
from teredonode.roles import hostrelay as hostrelay_module
from teredonode.roles.hostrelay import (
    ADDRESS_REFRESH,
    HostSpecificRelay,
    NoNativeIPv6,
    nativeAddresses,
)
from teredonode.roles.relay import TeredoRelay
from teredonode.testing import FakeIPv6Network, FakeNetworkConfigurator, FakeTunDevice
from teredonode.wire import ipv6
from tests.protocol.tunnelroles import PRIMARY, SECONDARY, UnnumberedTestBed, UnnumberedTunnelBehaviour, fakeNetconfig, fakeTun, withFakes
from tests.protocol.test_client import echo, raw

DUAL_IP = "203.0.113.40"
DUAL6 = ipaddress.IPv6Address("2001:db8::40").packed
V6HOST = ipaddress.IPv6Address("2001:db8::30").packed


class DualHostStack(FakeIPv6Network):
    """
    dualhost's kernel and the IPv6 network around it: what our server's TUN emits for
    DUAL6 and what the host-relay's TUN delivers to DUAL6 arrive here; echo requests are
    answered when C{answer} is set, the answer routed into the host-relay's TUN (2001::/32).
    """

    def __init__(self, hrTun: FakeTunDevice, serverTun: FakeTunDevice) -> None:
        super().__init__(hrTun, serverTun)
        self.hrTun = hrTun
        self.received: list[bytes] = []
        self.elsewhere: list[bytes] = []
        self.answer = True

    def route(self, packet: bytes) -> None:
        if packet[24:40] != DUAL6:
            self.elsewhere.append(packet)
            return
        self.received.append(packet)
        reply = self.echoReply(packet) if self.answer else None
        if reply is not None:
            self.hrTun.inject(reply)


class HostRelayTestCase(UnnumberedTestBed):
    def setUp(self) -> None:
        super().setUp()
        self.addresses = {DUAL6}
        self.hr = self.makeHostRelay(**self.roleSettings)
        self.tun = fakeTun(self.hr)
        self.stack = DualHostStack(self.tun, self.serverTun)

    def makeHostRelay(self, start: bool = True, ip: str = DUAL_IP, **overrides: Any) -> HostSpecificRelay:
        hr = withFakes("teredo-hr", lambda tun, conf: HostSpecificRelay(
            HostRelaySettings(**overrides), self.net.host(ip), tun, conf, lambda: set(self.addresses),
            randbytes=random.Random(3).randbytes,
        ))
        if start:
            hr.privilegedStartService()
            hr.startService()
            self.addCleanup(hr.stopService)
        return hr

    @property
    def endpoint(self) -> tuple[str, int]:
        host = self.net.owner(DUAL_IP)
        assert host is not None
        [(_, port)] = host.ports  # the host relay's one socket
        return (DUAL_IP, port)

    # The hooks of L{UnnumberedTunnelBehaviour}.

    @property
    def role(self) -> TeredoRelay:
        return self.hr

    @property
    def roleEndpoint(self) -> tuple[str, int]:
        return self.endpoint

    @property
    def hostAddress(self) -> bytes:
        return DUAL6

    @property
    def ipv6Network(self) -> DualHostStack:
        return self.stack

    @property
    def hostReceived(self) -> list[bytes]:
        return self.stack.received

    def silenceHost(self) -> None:
        self.stack.answer = False

    def makeRole(self, ip: str, **overrides: Any) -> TeredoRelay:
        return self.makeHostRelay(ip=ip, **overrides)

    def unservedNative(self) -> list[bytes]:
        """
        HR-04/05: another host's native address, which a relay would serve.
        """
        return [V6HOST]


class ServiceTests(HostRelayTestCase):
    def test_startConfiguresHost(self) -> None:
        """
        HR-01/02: forwarding left off; the status lists the host's addresses (the unnumbered
        TUN, its route, the status's drop reasons and stopping: test_statusAndStop of
        L{HostRelayTunnelTests}).
        """
        conf = fakeNetconfig(self.hr)
        self.assertFalse(conf.forwarding)
        self.assertNotIn("setForwarding", [c[0] for c in conf.calls])
        self.assertEqual(self.hr.status()["addresses"], ["2001:db8::40"])
        self.assertTrue(verifyObject(ITeredoRole, self.hr))
        self.assertEqual(self.hr.roleName, "host-relay")

    def test_refusesWithoutNativeIPv6(self) -> None:
        """
        G-03/G-05: no native IPv6, no host-specific relay: one line, nothing opened.
        """
        self.addresses = set()
        hr = self.makeHostRelay(start=False, ip="203.0.113.41")
        with self.assertRaises(NoNativeIPv6) as caught:
            hr.privilegedStartService()
        self.assertNotIn("\n", str(caught.exception))
        self.assertFalse(fakeTun(hr).opened)

    def test_makeRoleRefusesOneLine(self) -> None:
        """
        The production wiring stops twistd with one line on a host without native IPv6.
        """
        self.patch(hostrelay_module, "nativeAddresses", lambda *a, **k: frozenset())
        with self.assertRaises(SystemExit) as caught:
            hostrelay_module.makeRole(HostRelaySettings(), Clock())
        self.assertIn("no native IPv6", str(caught.exception.code))
        self.assertNotIn("\n", str(caught.exception.code))
        self.patch(hostrelay_module, "nativeAddresses", lambda *a, **k: frozenset({DUAL6}))
        role = hostrelay_module.makeRole(HostRelaySettings(), Clock())
        self.assertTrue(verifyObject(ITeredoRole, role))

    def test_nativeAddresses(self) -> None:
        """
        Global, non-Teredo addresses on other interfaces than ours; DAD failures excluded.
        """
        table = (
            "00000000000000000000000000000001 01 80 10 80       lo\n"
            "20010db8000000000000000000000040 02 40 00 80     eth0\n"
            "fe800000000000000000000000000040 02 40 20 80     eth0\n"
            "20010db8000000000000000000000041 02 40 00 88     eth0\n"
            "20010000cb00710a0000f227c633647f 03 20 00 80   teredo\n"
            "20010db8000000000000000000000099 04 40 00 80 teredo-hr\n"
            "2a000000000000000000000000000001 05 40 00 80     eth1\n"
        )
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write(table)
        self.addCleanup(os.unlink, f.name)
        found = nativeAddresses("teredo-hr", f.name)
        self.assertEqual(
            {str(ipaddress.IPv6Address(a)) for a in found}, {"2001:db8::40", "2a00::1"}
        )
        self.assertEqual(nativeAddresses("x", "/nonexistent/if_inet6"), frozenset())

    def test_addressesRefreshed(self) -> None:
        """
        An address the host gains after start is served within L{ADDRESS_REFRESH} s.
        """
        new = ipaddress.IPv6Address("2001:db8::41").packed
        self.assertFalse(self.hr.serves(new))
        self.addresses.add(new)
        self.clock.advance(ADDRESS_REFRESH)
        self.assertTrue(self.hr.serves(new))


class PathTests(HostRelayTestCase):
    def test_hostReachesOurClientDirectly(self) -> None:
        """
        HR-04, HR-06, HR-08: dualhost pings our client: the host-relay bubbles it (through
        its server and directly), sends the request from dualhost's own IPv4 endpoint; the
        client verifies that endpoint with its echo test (the reply is routed into the
        host-relay's TUN, not over IPv6) and answers directly.  No data crosses a relay.
        """
        client = self.makeClient()
        caddr = raw(client.address)
        request = echo(DUAL6, caddr, b"hi from dualhost")
        self.tun.inject(request)
        self.settle()
        self.assertIn(request, fakeTun(client).written)
        known = client.tunnel.peers.get(DUAL6)
        assert known is not None
        self.assertEqual(known.mapping, self.endpoint)
        reply = echo(caddr, DUAL6, b"hi from dualhost", reply=True)
        fakeTun(client).inject(reply)
        self.settle()
        self.assertIn(reply, self.stack.received)
        self.assertEqual(self.stack.elsewhere, [])
        # Every datagram carrying data (not a bubble) went between the two endpoints.
        data = [d for d in self.net.capture if not (d.data[6:7] == b"\x3b" and len(d.data) <= 48)]
        for d in data:
            if {d.src[0], d.dst[0]} & {PRIMARY, SECONDARY}:
                # Qualification, and the client's echo test (request) through its server.
                continue
            self.assertIn(DUAL_IP, (d.src[0], d.dst[0]), d)
        self.assertEqual(self.drops(), {})

    def test_clientReachesHostDirectly(self) -> None:
        """
        HR-06: our client pings dualhost: its echo test goes through its server over IPv6;
        dualhost's reply is routed into the host-relay, which bubbles and sends it; the
        client adopts dualhost's own endpoint and sends directly from then on.
        """
        client = self.makeClient()
        caddr = raw(client.address)
        fakeTun(client).inject(echo(caddr, DUAL6, b"ping"))
        self.settle()
        known = client.tunnel.peers.get(DUAL6)
        assert known is not None
        self.assertEqual(known.mapping, self.endpoint)
        requests = [p for p in self.stack.received if p[40] == ipv6.ICMP_ECHO_REQUEST and p[48:] == b"ping"]
        self.assertEqual(len(requests), 1)
        replies = [p for p in fakeTun(client).written if p[40] == ipv6.ICMP_ECHO_REPLY]
        self.assertEqual([r[48:] for r in replies], [b"ping"])
        forwarded = self.server.status()["counters"]
        fakeTun(client).inject(echo(caddr, DUAL6, b"again"))
        self.settle()
        self.assertEqual(self.stack.received[-1][48:], b"again")
        self.assertEqual(self.server.status()["counters"], forwarded)


class HostRelayTunnelTests(UnnumberedTunnelBehaviour, HostRelayTestCase):
    """
    What the host-specific relay shares with the relay (L{tests.protocol.tunnelroles}),
    with HR-05's difference: a packet from a client the host never sent to is dropped.
    """

    forwardsUnsolicited = False
