"""
The client role against our own server on the in-memory network (requirements digest
section 3.1: CL-Q-*, CL-SQ-*, CL-M-*, CL-RX-*, CL-TX-*, CL-B-*, CL-DT-*), behind each NAT
kind, deterministic on a Clock with seeded randomness.
"""

from __future__ import annotations

import ipaddress
import os
import random
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from teredonode.config import ClientSettings, ServerSettings
from teredonode.interfaces import IDiscoveryHost, ILocalPeers, IPortMapping, ITeredoRole
from teredonode.portmap.base import Mapping, PortMapError
from teredonode.roles import client as client_module
from teredonode.roles.client import DROP_REASONS, TeredoClient, hostHasOtherIPv6
from teredonode.roles.server import TeredoServer
from teredonode.testing import Datagram, FakeHost, FakeInternet, FakeNetworkConfigurator, FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import (
    CLIENT_LINK_LOCAL_RESTRICTED,
    RANDOM_MASK,
    TeredoAddress,
    server_link_local,
)
from teredonode.wire.teredo import AuthIndicator, OriginIndication, classify, encode_payload

PRIMARY, SECONDARY = "203.0.113.10", "203.0.113.11"
V6HOST = ipaddress.IPv6Address("2001:db8::5").packed
RELAY = ("192.0.2.200", 3544)
CONE_KINDS = ("none", "full-cone", "address-restricted", "port-restricted")


def echo(src: bytes, dst: bytes, data: bytes = b"ping", reply: bool = False, ident: int = 7) -> bytes:
    cls = ipv6.EchoReply if reply else ipv6.EchoRequest
    return ipv6.icmpv6_packet(src, dst, cls(ident, 1, data), 64)


def raw(address: Any) -> bytes:
    return TeredoAddress.parse(str(address)).to_bytes()


class Endpoint(DatagramProtocol):
    """
    A bare UDP endpoint (a relay, an attacker) recording what it receives.
    """

    transport: IUDPTransport  # set by listenUDP before any use

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))


class ClientTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.serverTun = FakeTunDevice("teredo-srv")
        self.server = self.makeServer()
        self._nats = 0
        self._devices: dict[int, tuple[FakeTunDevice, FakeNetworkConfigurator, FakeHost]] = {}

    def makeServer(self, **overrides: Any) -> TeredoServer:
        host = self.net.host(PRIMARY, SECONDARY)
        server = TeredoServer(
            ServerSettings(primary=PRIMARY, secondary=SECONDARY, **overrides), host, tun=self.serverTun
        )
        server.privilegedStartService()
        server.startService()
        self.addCleanup(server.stopService)
        return server

    def makeClient(
        self,
        kind: str = "port-restricted",
        seed: int = 1,
        hasOtherIPv6: bool | list[bool] = False,
        start: bool = True,
        natTimeout: float = 120.0,
        host: FakeHost | None = None,
        portMapping: Any = None,
        localAddress: Any = None,
        **overrides: Any,
    ) -> TeredoClient:
        self._nats += 1
        if host is not None:
            pass
        elif kind == "none":
            host = self.net.nat("none").host(f"192.0.2.{100 + self._nats}")
        else:
            nat = self.net.nat(kind, public=f"198.51.100.{self._nats}", timeout=natTimeout,
                               rng=random.Random(seed))
            host = nat.host("10.0.0.2")
        settings = ClientSettings(server=PRIMARY, secondary=SECONDARY, **overrides)
        rng = random.Random(seed)
        tun, netconfig = FakeTunDevice("teredo"), FakeNetworkConfigurator()
        client = TeredoClient(
            settings,
            host,
            tun,
            netconfig,
            hasOtherIPv6=(
                (lambda: hasOtherIPv6[0]) if isinstance(hasOtherIPv6, list) else (lambda: hasOtherIPv6)
            ),
            rng=rng,
            randbytes=rng.randbytes,
            portMapping=portMapping,
            localAddress=localAddress,
        )
        self._devices[id(client)] = (tun, netconfig, host)
        if start:
            client.privilegedStartService()
            client.startService()
            self.addCleanup(client.stopService)
        return client

    def tunOf(self, client: TeredoClient) -> FakeTunDevice:
        return self._devices[id(client)][0]

    def confOf(self, client: TeredoClient) -> FakeNetworkConfigurator:
        return self._devices[id(client)][1]

    def hostOf(self, client: TeredoClient) -> FakeHost:
        return self._devices[id(client)][2]

    def socketOf(self, client: TeredoClient) -> Any:
        """
        The fake socket C{client} bound, found on the host it was given.
        """
        host = self.hostOf(client)
        return next(port for (_, number), port in host.ports.items() if number == client.localPort())

    def assertDropped(self, client: TeredoClient, reason: str, count: int = 1) -> None:
        drops = client.status()["drops"]
        self.assertEqual(drops[reason], count, {k: v for k, v in drops.items() if v})

    def publicEndpoint(self, ip: str, port: int = 3544) -> Endpoint:
        endpoint = Endpoint()
        self.net.host(ip).listenUDP(port, endpoint, interface=ip)
        return endpoint


class QualificationTests(ClientTestCase):
    def test_qualifiesBehindConeAndRestrictedNATs(self) -> None:
        """
        CL-Q-02..09: behind every non-symmetric kind the client qualifies, learns the mapping
        the server saw, builds prefix + random flags + obfuscated mapping, and puts the
        address (/32), a link-local (/64), MTU 1280 and (no other IPv6) a default route on
        the TUN.
        """
        for kind in CONE_KINDS:
            client = self.makeClient(kind)
            self.net.flush()
            status = client.status()
            self.assertEqual(status["state"], "qualified", kind)
            self.assertEqual(status["nat"], "restricted-or-cone")
            address = TeredoAddress.parse(status["address"])
            self.assertEqual(address.server, PRIMARY)
            self.assertEqual(f"{address.client}:{address.port}", status["mapping"])
            self.assertEqual(address.flags & ~RANDOM_MASK, 0)
            conf = self.confOf(client)
            self.assertEqual(conf.links["teredo"].mtu, 1280)
            self.assertIn((status["address"], 32), conf.addresses["teredo"])
            self.assertIn((status["link-local"], 64), conf.addresses["teredo"])
            self.assertIn(("teredo", "::/0", 2048), conf.routes)
            self.assertEqual(status["counters"]["ra-accepted"], 2, kind)  # primary, secondary

    def test_routerSolicitationFormat(self) -> None:
        """
        CL-Q-02/03, RFC 5991: RS from the restricted link-local (cone bit 0) to ff02::2, hop
        limit 255, auth indicator with a fresh 8-byte nonce every attempt, 4 s apart,
        3 attempts, then offline.
        """
        self.net.addDropFilter(lambda d: d.dst[0] in (PRIMARY, SECONDARY))
        client = self.makeClient()
        self.net.run(11.9)
        sent = [classify(d.data) for d in self.net.capture]
        self.assertEqual(len(sent), 3)
        for packet in sent:
            self.assertEqual(packet.header.src, CLIENT_LINK_LOCAL_RESTRICTED)
            self.assertEqual(packet.header.dst, ipv6.ALL_ROUTERS)
            self.assertEqual(packet.header.hop_limit, 255)
            self.assertIsInstance(
                ipv6.decode_icmpv6(packet.ipv6[40:], packet.header.src, packet.header.dst),
                ipv6.RouterSolicitation,
            )
            assert packet.auth is not None
            self.assertEqual(len(packet.auth.nonce), 8)
            self.assertEqual(packet.auth.client_id, b"")
        self.assertEqual(len({p.auth.nonce for p in sent if p.auth is not None}), 3)
        self.assertEqual(client.state, "probing")
        self.net.run(0.2)
        self.assertEqual(client.state, "offline")
        self.assertIn("no answer", client.status()["offline-reason"])

    def test_CL_Q_09_addressBits(self) -> None:
        """
        CL-Q-09: the address is the RA's /64 (2001:0000 and the server's IPv4), the flags
        (cone bit 0 as RFC 5991 wants, z 0, the rest random and different per client:
        U-02..U-04), the mapped port and the mapped IPv4 each with every bit inverted.
        """
        flags = set()
        for seed, kind in ((1, "full-cone"), (2, "port-restricted")):
            client = self.makeClient(kind, seed=seed)
            self.net.flush()
            assert client.mapping is not None
            ip, port = client.mapping
            address = raw(client.address)
            self.assertEqual(address[:8], b"\x20\x01\x00\x00" + ipaddress.IPv4Address(PRIMARY).packed)
            value = int.from_bytes(address[8:10], "big")
            self.assertEqual(value & ~RANDOM_MASK, 0, hex(value))
            flags.add(value)
            self.assertEqual(int.from_bytes(address[10:12], "big"), port ^ 0xFFFF)
            self.assertEqual(address[12:], bytes(b ^ 0xFF for b in ipaddress.IPv4Address(ip).packed))
        self.assertEqual(len(flags), 2)

    def test_D7_threeAttemptsFourSecondsApart(self) -> None:
        """
        D7 (RFC 4380 section 5.2.1, "N repetitions" read as N = 3 attempts): an unanswered
        Router Solicitation is sent again after 4 s, three in all, then the client is offline.
        """
        self.net.addDropFilter(lambda d: d.dst[0] in (PRIMARY, SECONDARY))
        client = self.makeClient()
        counts = []
        for until in (0.1, 3.9, 4.1, 7.9, 8.1, 11.9):
            self.net.run(until - self.clock.seconds())
            counts.append(len(self.net.capture))
        self.assertEqual(counts, [1, 1, 2, 2, 3, 3])
        self.net.run(0.3)
        self.assertEqual((len(self.net.capture), client.state), (3, "offline"))

    def test_symmetricQualifiesWithSNS(self) -> None:
        """
        X-SNS-11: with Symmetric NAT Support (the default) a symmetric result qualifies, with
        the primary server's mapping, and says so.
        """
        client = self.makeClient("symmetric")
        self.net.flush()
        status = client.status()
        self.assertEqual((status["state"], status["nat"]), ("qualified", "symmetric"))
        self.assertEqual(status["nat-flags"]["symmetric"], True)

    def test_symmetricDetectedStaysOffline(self) -> None:
        """
        CL-Q-08: the secondary address sees another mapping -> symmetric; without RFC 6081
        Symmetric NAT Support: offline, no address configured.
        """
        client = self.makeClient("symmetric", symmetric_nat_support=False)
        self.net.flush()
        status = client.status()
        self.assertEqual((status["state"], status["nat"]), ("offline", "symmetric"))
        self.assertIn("symmetric", status["offline-reason"])
        self.assertEqual(self.confOf(client).addresses["teredo"], set())
        self.assertIsNone(status["address"])

    def test_symmetricAllowed(self) -> None:
        client = self.makeClient("symmetric", allow_symmetric=True)
        self.net.flush()
        self.assertEqual((client.state, client.nat), ("qualified", "symmetric"))

    def test_silentSecondaryQualifiesUnknown(self) -> None:
        """
        Decision (docs/client.md): a silent secondary address qualifies with NAT "unknown".
        """
        self.net.addDropFilter(lambda d: d.dst[0] == SECONDARY)
        client = self.makeClient()
        self.net.run(12)
        self.assertEqual((client.state, client.nat), ("qualified", "unknown"))

    def test_natFlags(self) -> None:
        """
        X-PP-06 / CL-Q-11 and the secondary check: status says whether the NAT is symmetric
        and whether it kept our local port.
        """
        cone = self.makeClient("port-restricted", port=40000)
        preserving = self.makeClient("symmetric-port-preserving", allow_symmetric=True, port=40001)
        random_ports = self.makeClient("symmetric", allow_symmetric=True, port=40002)
        self.net.flush()
        flags = [c.status()["nat-flags"] for c in (cone, preserving, random_ports)]
        self.assertEqual(flags[0]["symmetric"], False)
        self.assertEqual(flags[1], {"symmetric": True, "port-preserving": True})
        self.assertEqual(flags[2]["symmetric"], True)
        self.assertEqual(flags[2]["port-preserving"], random_ports.mapping is not None and random_ports.mapping[1] == 40002)
        offline = self.makeClient("symmetric", symmetric_nat_support=False)
        self.net.flush()
        self.assertEqual(offline.status()["nat-flags"], {"symmetric": True, "port-preserving": None})

    def test_silentSecondaryStrict(self) -> None:
        """
        CL-Q-08 as written (strict-secondary): a silent secondary address keeps the client
        offline, saying why.
        """
        self.net.addDropFilter(lambda d: d.dst[0] == SECONDARY)
        client = self.makeClient(strict_secondary=True)
        self.net.run(12)
        self.assertEqual(client.state, "offline")
        self.assertIn("strict-secondary", client.status()["offline-reason"])
        self.assertIsNone(client.address)

    def test_dormantWhileNativeIPv6(self) -> None:
        """
        G-03 / SEC-20: with native IPv6 the client sends no RS and holds no address; when the
        native route goes away it qualifies within a minute; when it comes back the Teredo
        address goes.
        """
        sent: list[Any] = []

        def record(d: Datagram) -> bool:
            sent.append(d)
            return False

        self.net.addDropFilter(record)
        native = [True]
        client = self.makeClient(hasOtherIPv6=native)
        self.net.run(120)
        self.assertEqual(client.state, "dormant")
        self.assertEqual(client.status()["offline-reason"], None)
        self.assertEqual(sent, [])
        self.assertEqual(self.confOf(client).addresses.get("teredo", set()), set())
        native[0] = False
        self.net.run(61)
        self.assertEqual(client.state, "qualified")
        self.assertEqual(len(self.confOf(client).addresses["teredo"]), 2)
        native[0] = True
        self.net.run(31)
        self.assertEqual(client.state, "dormant")
        self.assertEqual(self.confOf(client).addresses.get("teredo", set()), set())
        self.assertEqual(self.tunOf(client).written, [])

    def test_raWithWrongNonceOrUnexpectedIgnored(self) -> None:
        """
        CL-SQ-03: an RA whose nonce is not the outstanding one is discarded; an RA while no
        RS is outstanding too.
        """
        client = self.makeClient("full-cone")
        self.net.flush()
        mapping = client.mapping
        assert mapping is not None
        forged = self.forgedRA(b"WRONGNON", OriginIndication("192.0.2.66", 1))
        self.net.inject((PRIMARY, 3544), mapping, forged)
        self.net.flush()
        self.assertDropped(client, "ra-unexpected")
        # During a refresh, with the nonce wrong.
        self.net.addDropFilter(lambda d: d.src[0] == PRIMARY and d.data != forged)
        self.net.run(30)
        self.net.inject((PRIMARY, 3544), mapping, forged)
        self.net.flush()
        self.assertDropped(client, "ra-bad-nonce")
        self.assertEqual(client.mapping, mapping)

    def test_CL_M_04_maintenanceRAValidated(self) -> None:
        """
        CL-M-04: a maintenance RA is checked like a qualification RA: with the outstanding
        nonce but no origin indication, two prefixes or a bad checksum it is dropped and
        changes nothing; a valid one is taken.  CL-RX-12: either way the RA is consumed,
        never handed to the host.
        """
        client = self.makeClient("full-cone")
        self.net.flush()
        mapping, address = client.mapping, client.address
        assert mapping is not None
        # Silence the server so that the next maintenance RS stays unanswered, then answer it.
        unplug = self.net.addDropFilter(lambda d: d.src[0] == PRIMARY)
        start = len(self.net.capture)
        self.net.run(31)
        rs = [d for d in self.net.capture[start:] if d.dst == (PRIMARY, 3544)][-1]
        auth = classify(rs.data).auth
        assert auth is not None
        unplug()
        good = self.forgedRA(auth.nonce, OriginIndication(*rs.src))
        badSum = bytearray(good)
        badSum[-1] ^= 1
        for data in (
            self.forgedRA(auth.nonce, None),  # type: ignore[arg-type]  # deliberately no origin indication
            self.forgedRA(auth.nonce, OriginIndication(*rs.src), prefixes=2),
            bytes(badSum),
        ):
            self.net.inject((PRIMARY, 3544), mapping, data)
        self.net.flush()
        self.assertDropped(client, "ra-no-origin")
        self.assertDropped(client, "ra-prefix")
        self.assertDropped(client, "ra-invalid")
        self.assertEqual((client.state, client.mapping, client.address), ("qualified", mapping, address))
        accepted = client.status()["counters"]["ra-accepted"]
        self.net.inject((PRIMARY, 3544), mapping, good)
        self.net.flush()
        self.assertEqual(client.status()["counters"]["ra-accepted"], accepted + 1)
        self.assertEqual((client.state, client.mapping), ("qualified", mapping))
        self.assertEqual(self.tunOf(client).written, [])

    def forgedRA(self, nonce: bytes, origin: OriginIndication, prefixes: int = 1) -> bytes:
        prefix = bytes.fromhex("20010000cb00710a") + b"\x00" * 8
        ra = ipv6.RouterAdvertisement(prefixes=(ipv6.PrefixInformation(prefix, 64),) * prefixes, mtu=1280)
        packet = ipv6.icmpv6_packet(server_link_local(PRIMARY), CLIENT_LINK_LOCAL_RESTRICTED, ra, 255)
        return encode_payload(packet, AuthIndicator(nonce), origin)

    def test_raChecks(self) -> None:
        """
        CL-Q-05: no origin, two PIOs, bad checksum: each discarded, qualification still
        waits for the real RA.
        """
        unplug = self.net.addDropFilter(lambda d: d.src[0] == PRIMARY)
        client = self.makeClient("full-cone")
        self.net.flush()
        unplug()
        [rs] = [d for d in self.net.capture if d.dst[0] == PRIMARY]
        auth = classify(rs.data).auth
        assert auth is not None
        nonce = auth.nonce
        good = self.forgedRA(nonce, OriginIndication(*rs.src))
        noOrigin = self.forgedRA(nonce, None)  # type: ignore[arg-type]  # deliberately no origin indication
        twoPrefixes = self.forgedRA(nonce, OriginIndication(*rs.src), prefixes=2)
        badSum = bytearray(good)
        badSum[-1] ^= 1
        for data in (noOrigin, twoPrefixes, bytes(badSum)):
            self.net.inject((PRIMARY, 3544), rs.src, data)
        self.net.flush()
        self.assertDropped(client, "ra-no-origin")
        self.assertDropped(client, "ra-prefix")
        self.assertDropped(client, "ra-invalid")
        self.assertEqual(client.state, "probing")
        # D15: the RA may come from the secondary address too.
        self.net.inject((SECONDARY, 3544), rs.src, good)
        self.net.flush()
        self.assertEqual(client.state, "qualified")

    def test_secureQualification(self) -> None:
        """
        CL-SQ-01..06: identifier and HMAC-SHA1 value in the RS, verified in the RA.
        """
        self.server.stopService()
        self.net = FakeInternet(self.clock)
        self.serverTun = FakeTunDevice("teredo-srv")
        # accept-unknown-clients: the RFC 4380 answer to an unknown identifier (an RA the
        # client must reject), which our server only sends when told to.
        self.server = self.makeServer(
            secure=True, clients=(("alice", "s3cret", None),), accept_unknown_clients=True
        )
        good = self.makeClient("port-restricted", client_id="alice", secret="s3cret")
        wrong = self.makeClient("port-restricted", client_id="alice", secret="guess")
        unknown = self.makeClient("port-restricted", client_id="mallory", secret="s3cret")
        self.net.flush()
        self.assertEqual(good.state, "qualified")
        self.assertTrue(good.status()["secure"])
        self.net.run(12)
        self.assertEqual(wrong.state, "offline")
        self.assertEqual(self.server.status()["drops"]["auth-failed"], 3)
        self.assertEqual(unknown.state, "offline")
        self.assertDropped(unknown, "ra-auth-rejected", 3)

    def test_defaultRouteSetting(self) -> None:
        """
        RFC 4380 section 5.5: "auto" adds no default route when the host has other IPv6;
        true and false force it.
        """
        auto = self.makeClient(hasOtherIPv6=True, dormant_with_native=False)
        forced = self.makeClient(hasOtherIPv6=True, default_route=True, dormant_with_native=False)
        never = self.makeClient(default_route=False)
        self.net.flush()
        self.assertEqual(self.confOf(auto).routes, set())
        self.assertEqual(self.confOf(forced).routes, {("teredo", "::/0", 2048)})
        self.assertEqual(self.confOf(never).routes, set())
        self.assertFalse(never.status()["default-route"])

    def test_nothingBeforeQualification(self) -> None:
        """
        CL-Q-01: packets from the TUN before qualification are dropped.
        """
        self.net.addDropFilter(lambda d: True)
        client = self.makeClient()
        self.tunOf(client).inject(echo(b"\x20\x01" + b"\x00" * 14, V6HOST))
        self.assertDropped(client, "not-qualified")


class MaintenanceTests(ClientTestCase):
    def rsTimes(self) -> list[float]:
        times: list[float] = []

        def note(d: Any) -> bool:
            if d.dst == (PRIMARY, 3544):
                times.append(self.clock.seconds())
            return False

        self.net.addDropFilter(note)
        return times

    def test_refreshRandomised(self) -> None:
        """
        CL-M-01, CL-M-06: maintenance runs for as long as the client is qualified, an RS
        every refresh x [0.75, 1].
        """
        times = self.rsTimes()
        client = self.makeClient()
        self.net.run(600)
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertGreater(len(gaps), 18)
        for gap in gaps:
            self.assertTrue(22.5 <= gap <= 30.0, gap)
        self.assertGreater(len(set(round(g, 3) for g in gaps)), 5)
        self.assertEqual(client.state, "qualified")
        self.assertEqual(client.status()["counters"]["address-changes"], 0)

    def test_serverTrafficPostponesRefresh(self) -> None:
        """
        CL-M-02: no maintenance RS while packets keep coming from the server within the
        refresh interval; once it falls silent, the next RS comes one interval after its
        last packet.
        """
        times = self.rsTimes()
        client = self.makeClient()
        self.net.flush()
        qualified = len(times)
        assert client.mapping is not None
        assert client.address is not None
        # Packets from the server's address (bubbles it relays) every 10 s for 100 s.
        bubble = ipv6.bubble(raw("2001:0:cb00:7163::1"), client.address.to_bytes())
        for _ in range(10):
            self.net.inject((PRIMARY, 3544), client.mapping, bubble)
            self.net.run(10)
        self.assertEqual(len(times), qualified)
        self.net.run(31)
        self.assertEqual(len(times), qualified + 1)

    def test_refreshDetermination(self) -> None:
        """
        RFC 4380 section 5.2.7 behind a NAT that keeps idle mappings 80 s: the secondary port
        finds a working interval of 75 s, the client refreshes that much less often and stays
        qualified with the same address, and the secondary port is closed (CL-I-05).
        """
        times = self.rsTimes()
        client = self.makeClient(natTimeout=80, refresh_determination=True)
        self.net.run(1400)
        status = client.status()
        self.assertEqual(status["refresh-determination"], {"state": "done", "reason": "concluded", "refresh": 75.0})
        self.assertEqual(status["refresh-interval"], 75.0)
        self.assertEqual(status["state"], "qualified")
        self.assertEqual(status["counters"]["address-changes"], 0)
        late = [t for t in times if t > 900]
        gaps = [b - a for a, b in zip(late, late[1:])]
        self.assertTrue(gaps and all(56.25 - 4 <= gap <= 75.0 + 4 for gap in gaps), gaps)

    def test_refreshDeterminationOffByDefault(self) -> None:
        client = self.makeClient()
        self.net.run(300)
        self.assertEqual(client.status()["refresh-determination"], {"state": "off"})
        self.assertEqual(client.status()["counters"]["interval-probes"], 0)

    def test_mappingChangeSwapsAddress(self) -> None:
        """
        CL-M-05: the NAT forgets the mapping between refreshes (timeout shorter than the
        refresh); the next RA carries a new one and the address is swapped, no restart.
        """
        client = self.makeClient("port-restricted", natTimeout=20)
        self.net.flush()
        before = client.status()
        self.net.run(31)
        after = client.status()
        self.assertEqual(after["state"], "qualified")
        self.assertNotEqual(before["mapping"], after["mapping"])
        self.assertNotEqual(before["address"], after["address"])
        self.assertEqual(after["counters"]["address-changes"], 1)
        addresses = self.confOf(client).addresses["teredo"]
        self.assertEqual(addresses, {(after["address"], 32), (after["link-local"], 64)})
        self.assertEqual(after["counters"]["qualifications"], 1)

    def test_mappingChangeForgetsPeers(self) -> None:
        """
        After an address change no peer stays trusted: they knew us by the old address and
        mapping, and a relay drops packets from a mapping it does not know (Miredo's does),
        so a kept entry would send straight into a drop until it expired.
        """
        client = self.makeClient("port-restricted", natTimeout=20)
        self.net.flush()
        relay = ipaddress.IPv6Address("2001:db8::99").packed
        peer = client.tunnel.peers.create(relay, ("203.0.113.20", 3544))
        peer.trust(("203.0.113.20", 3544), self.clock.seconds())
        for _ in range(31):
            # The relay keeps talking to us, so the entry never expires by itself.
            if client.tunnel.peers.get(relay) is peer:
                peer.heard(self.clock.seconds())
            self.net.run(1)
        self.assertEqual(client.status()["counters"]["address-changes"], 1)
        self.assertIsNone(client.tunnel.peers.get(relay))

    def test_serverLossAndRecovery(self) -> None:
        """
        CL-M-03 and CL-Q-10: three unanswered refreshes -> server lost, address removed,
        qualification again, then offline with backoff, TUN still up; when the server is
        back the client qualifies again by itself.
        """
        client = self.makeClient()
        self.net.flush()
        unplug = self.net.addDropFilter(lambda d: PRIMARY in (d.src[0], d.dst[0]))
        self.net.run(30 + 12 + 12 + 1)
        status = client.status()
        self.assertEqual(status["state"], "offline")
        self.assertEqual(status["counters"]["server-lost"], 1)
        self.assertIsNone(status["address"])
        self.assertEqual(self.confOf(client).addresses["teredo"], set())
        self.assertEqual(self.confOf(client).routes, set())
        self.assertFalse(self.tunOf(client).closed)
        self.net.run(600)
        self.assertEqual(client.state, "offline")
        unplug()
        self.net.run(300)
        self.assertEqual(client.state, "qualified")
        self.assertEqual(client.status()["counters"]["qualifications"], 2)

    def test_backoffGrows(self) -> None:
        times = self.rsTimes()
        self.net.addDropFilter(lambda d: d.dst[0] == PRIMARY)
        self.makeClient()
        self.net.run(2000)
        starts = [t for i, t in enumerate(times) if i % 3 == 0]
        waits = [b - a - 8 for a, b in zip(starts, starts[1:])]
        self.assertTrue(all(w >= 4 for w in waits))
        self.assertLessEqual(max(waits), 300 + 4)
        self.assertGreater(waits[4], waits[0])


@implementer(IPortMapping)
class FakePortMapping:
    """A router's port mapping: answers as told, records every request."""

    def __init__(self, answer: Any = None, error: str | None = None) -> None:
        self.answer, self.error = answer, error
        self.requests: list[int] = []
        self.unmapped = 0
        self.pending: Deferred[Any] | None = None

    def map(self, localPort: int) -> Deferred[Any]:
        self.requests.append(localPort)
        if self.answer is None and self.error is None:
            self.pending = Deferred()
            return self.pending
        if self.error is not None:
            return fail(PortMapError(self.error))
        return succeed(self.answer)

    def unmap(self) -> Deferred[None]:
        self.unmapped += 1
        return succeed(None)


class PortMappingTests(ClientTestCase):
    def test_mappedBeforeQualifying(self) -> None:
        """
        X-UPNP-04..07: the mapping is asked for the service port before the first RS; status
        shows it, renewed at half its lifetime and deleted at shutdown (X-UPNP-13).
        """
        mapper = FakePortMapping(Mapping("198.51.100.1", 40000, 600, "pcp"))
        client = self.makeClient(port=40000, portMapping=mapper)
        self.assertEqual(mapper.requests, [40000])
        self.net.flush()
        status = client.status()
        self.assertEqual(status["state"], "qualified")
        self.assertEqual(status["port-mapping"]["state"], "mapped")
        self.assertEqual((status["port-mapping"]["protocol"], status["port-mapping"]["external"]), ("pcp", "198.51.100.1:40000"))
        self.assertEqual(status["counters"]["port-mappings"], 1)
        self.net.run(301)
        self.assertEqual(mapper.requests, [40000, 40000])
        client.stopService()
        self.assertEqual(mapper.unmapped, 1)

    def test_refusedQualifiesAnyway(self) -> None:
        """X-UPNP-05: no mapping, one log line, qualification as usual."""
        client = self.makeClient(portMapping=FakePortMapping(error="pcp: no answer"))
        self.net.flush()
        status = client.status()
        self.assertEqual(status["state"], "qualified")
        self.assertEqual(status["port-mapping"], {"state": "none", "error": "pcp: no answer"})

    def test_silentRouterDelaysAtMostTenSeconds(self) -> None:
        """A router that never answers holds qualification back 10 s, no more."""
        mapper = FakePortMapping()
        client = self.makeClient(portMapping=mapper)
        self.net.run(9)
        self.assertEqual(client.state, "probing")
        self.assertEqual(client.status()["counters"]["rs-sent"], 0)
        self.net.run(2)
        self.assertEqual(client.state, "qualified")

    def test_settingOff(self) -> None:
        mapper = FakePortMapping(Mapping("198.51.100.1", 40000, 0, "upnp"))
        client = self.makeClient(portMapping=mapper, port_mapping=False)
        self.net.flush()
        self.assertEqual(mapper.requests, [])
        self.assertEqual(client.status()["port-mapping"], {"state": "off"})


class DataPathTests(ClientTestCase):
    def twoClients(self) -> tuple[TeredoClient, TeredoClient]:
        a = self.makeClient("port-restricted", seed=1)
        b = self.makeClient("address-restricted", seed=2)
        self.net.flush()
        return a, b

    def test_twoClientsBehindDifferentNATs(self) -> None:
        """
        CL-TX-05, CL-RX-03 (D9), CL-RX-06: A queues, bubbles B directly and through B's
        server; B answers the indirect bubble with a direct one; A's queue is released; B
        accepts and delivers; B's reply goes straight back.
        """
        a, b = self.twoClients()
        aaddr, baddr = raw(a.address), raw(b.address)
        request = echo(aaddr, baddr, b"hello")
        self.tunOf(a).inject(request)
        self.net.flush()
        self.assertEqual(self.tunOf(b).written, [request])
        self.assertEqual(a.status()["counters"]["released"], 1)
        self.assertEqual(b.status()["counters"]["bubbles-answered"], 1)
        reply = echo(baddr, aaddr, b"hello", reply=True)
        self.tunOf(b).inject(reply)
        self.net.flush()
        self.assertEqual(self.tunOf(a).written, [reply])
        # Both directions now direct: nothing more through the server.
        forwarded = self.server.status()["counters"]["forwarded"]
        self.tunOf(a).inject(request)
        self.net.flush()
        self.assertEqual(self.server.status()["counters"]["forwarded"], forwarded)
        self.assertEqual(len(self.tunOf(b).written), 2)

    def test_bubbleRateLimits(self) -> None:
        """
        CL-B-03/04, CL-TX-05: toward a silent peer, a bubble pair at once and every 2 s,
        4 in all, never closer than 2 s; then the queue is dropped with an ICMPv6
        unreachable; no more bubbles for 300 s.
        """
        a = self.makeClient("port-restricted")
        self.net.flush()
        silent = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 4000, "192.0.2.99").to_bytes()
        times: list[float] = []

        def record(d: Datagram) -> bool:
            if d.dst == ("192.0.2.99", 4000) and d.src[0] != PRIMARY:
                times.append(self.clock.seconds())
                return True
            return False

        self.net.addDropFilter(record)
        aaddr = raw(a.address)
        self.tunOf(a).inject(echo(aaddr, silent))
        self.net.run(1)
        self.tunOf(a).inject(echo(aaddr, silent, b"again"))
        self.net.run(20)
        self.assertEqual(times, [times[0], times[0] + 2, times[0] + 4, times[0] + 6])
        self.assertDropped(a, "peer-unreachable", 2)
        errors = [p for p in self.tunOf(a).written if p[40] == 1]
        self.assertEqual(len(errors), 2)
        error = ipv6.decode_icmpv6(errors[0][40:], errors[0][8:24], errors[0][24:40])
        assert isinstance(error, ipv6.DestinationUnreachable)
        self.assertEqual(error.code, 3)
        # Within 300 s of the first bubble: refused at once, no bubble.
        self.tunOf(a).inject(echo(aaddr, silent, b"third"))
        self.net.run(10)
        self.assertEqual(len(times), 4)
        self.assertDropped(a, "probe-limited")
        self.net.run(300)
        self.tunOf(a).inject(echo(aaddr, silent, b"later"))
        self.net.run(1)
        self.assertEqual(len(times), 5)

    def test_queueBounds(self) -> None:
        """
        Per-peer queue bounded in packets and bytes; the excess is dropped and counted.
        """
        a = self.makeClient("port-restricted", peer_queue=2)
        b = self.makeClient("port-restricted", peer_queue=8, peer_queue_bytes=200, seed=3)
        self.net.flush()
        self.net.addDropFilter(lambda d: d.dst[0] == "192.0.2.99" or d.dst[0] == PRIMARY)
        silent = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 4000, "192.0.2.99").to_bytes()
        for _ in range(3):
            self.tunOf(a).inject(echo(raw(a.address), silent))
        self.assertDropped(a, "queue-full")
        big = b"x" * 100
        for _ in range(2):
            self.tunOf(b).inject(echo(raw(b.address), silent, big))
        self.assertDropped(b, "queue-full")
        self.assertEqual(b.status()["peers"]["queued-packets"], 1)

    def test_nonGlobalDestinationDropped(self) -> None:
        """
        CL-TX-06/08: a Teredo destination embedding a private mapping or server.
        """
        a = self.makeClient()
        self.net.flush()
        for server, client in ((PRIMARY, "10.1.2.3"), ("192.168.1.1", "192.0.2.5")):
            dst = TeredoAddress(b"\x20\x01\x00\x00", server, 0, 4000, client).to_bytes()
            self.tunOf(a).inject(echo(raw(a.address), dst))
        self.assertDropped(a, "non-global-destination", 2)
        self.assertEqual(a.status()["counters"]["bubbles-direct"], 0)

    def test_foreignSourceAndMulticastFromHost(self) -> None:
        a = self.makeClient()
        self.net.flush()
        self.tunOf(a).inject(echo(V6HOST, V6HOST))
        self.tunOf(a).inject(echo(raw(a.address), ipv6.ALL_NODES))
        self.tunOf(a).inject(b"\x45" + b"\x00" * 30)
        self.assertDropped(a, "host-foreign-source")
        self.assertDropped(a, "host-multicast")
        self.assertDropped(a, "host-malformed")

    def test_linkLocalFromOutsideNeverReachesHost(self) -> None:
        """
        CL-RX-12, forged RA defence: link-local sources from a peer are dropped (never
        reach the host), as is anything not for our address, or from a Teredo source whose
        mapping is not the sender's.
        """
        a = self.makeClient("full-cone")
        self.net.flush()
        mapping = a.mapping
        assert mapping is not None
        aaddr = raw(a.address)
        ra = ipv6.icmpv6_packet(
            server_link_local("192.0.2.7"), CLIENT_LINK_LOCAL_RESTRICTED,
            ipv6.RouterAdvertisement(), 255,
        )
        spoofed = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 9, "192.0.2.9").to_bytes()
        for data in (
            ra,
            echo(server_link_local("192.0.2.7"), aaddr),
            echo(V6HOST, V6HOST),
            echo(spoofed, aaddr),
        ):
            self.net.inject(("192.0.2.7", 3544), mapping, data)
        self.net.flush()
        self.assertEqual(self.tunOf(a).written, [])
        self.assertDropped(a, "link-local-source", 2)
        self.assertDropped(a, "wrong-destination")
        self.assertDropped(a, "mapping-mismatch")


class ReceiveRuleTests(ClientTestCase):
    """
    RFC 4380 section 5.2.3's first checks, each on its own: what is not a Teredo payload
    (CL-RX-01), and what is one but not for us or not a valid IPv6 packet (CL-RX-02), is
    dropped, counted, and leaves no entry.
    """

    def setUp(self) -> None:
        super().setUp()
        self.a = self.makeClient("full-cone")
        self.net.flush()
        assert self.a.mapping is not None
        self.peer = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 5000, "192.0.2.50").to_bytes()

    def inject(self, data: bytes) -> None:
        """From the peer's own mapping, the one its address embeds (so case 3 would apply)."""
        assert self.a.mapping is not None
        self.net.inject(("192.0.2.50", 5000), self.a.mapping, data)
        self.net.flush()

    def assertNothing(self) -> None:
        self.assertEqual(self.tunOf(self.a).written, [])
        self.assertIsNone(self.a.tunnel.peers.get(self.peer))

    def test_CL_RX_01_notATeredoPayload(self) -> None:
        """
        CL-RX-01: an IPv4 packet, garbage after an origin-indication-like start, a lone
        byte, an authentication indicator cut short: silently discarded (C{malformed}).
        """
        good = echo(self.peer, raw(self.a.address))
        for data in (b"\x45" + bytes(39), b"\x00\x02garbage", b"\x60", b"\x00\x01\x00\x00", b"\x00\x00" + good[:6]):
            self.inject(data)
        self.assertDropped(self.a, "malformed", 5)
        self.assertNothing()
        self.inject(good)  # the same peer, well formed: accepted (case 3)
        self.assertEqual(self.tunOf(self.a).written, [good])

    def test_CL_RX_02_notValidOrNotForUs(self) -> None:
        """
        CL-RX-02: an IPv6 packet whose version is not 6, one whose payload length runs past
        the datagram (a length inconsistency), and one for another destination (our prefix,
        another host): discarded; the first two as C{malformed}, the last as
        C{wrong-destination}.
        """
        ours = raw(self.a.address)
        good = echo(self.peer, ours, b"data")
        version4 = bytes([0x40 | (good[0] & 0x0F)]) + good[1:]
        longer = good[:4] + (int.from_bytes(good[4:6], "big") + 8).to_bytes(2, "big") + good[6:]
        other = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 6000, "192.0.2.51").to_bytes()
        for data in (version4, longer):
            self.inject(data)
        self.assertDropped(self.a, "malformed", 2)
        self.inject(echo(self.peer, other, b"data"))
        self.assertDropped(self.a, "wrong-destination", 1)
        self.assertNothing()


class EchoTestTests(ClientTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.a = self.makeClient("port-restricted")
        self.net.flush()
        self.aaddr = raw(self.a.address)

    def echoTest(self) -> tuple[bytes, ipv6.EchoRequest]:
        """
        The echo request the server wrote to its IPv6 side for the client's test.
        """
        [test] = self.serverTun.written
        msg = ipv6.decode_icmpv6(test[40:], test[8:24], test[24:40])
        assert isinstance(msg, ipv6.EchoRequest)
        return test, msg

    def test_echoThroughOurServer(self) -> None:
        """
        CL-TX-02, CL-DT-02/03, CL-RX-05: a native destination -> queued, echo request with
        an 8-byte nonce through our server; the reply (relayed by our server) makes the
        server the peer's relay; the queue is released to it; replies are delivered.
        """
        ping = echo(self.aaddr, V6HOST, b"x" * 16)
        self.tunOf(self.a).inject(ping)
        self.net.flush()
        test, msg = self.echoTest()
        self.assertEqual((test[8:24], test[24:40]), (self.aaddr, V6HOST))
        self.assertEqual(len(msg.data), 8)
        self.server.ipv6Received(echo(V6HOST, self.aaddr, msg.data, reply=True, ident=msg.identifier))
        self.net.flush()
        self.assertEqual(self.serverTun.written[1:], [ping])
        self.assertEqual(self.a.status()["counters"]["echo-tests-ok"], 1)
        self.assertEqual(self.tunOf(self.a).written, [])
        pong = echo(V6HOST, self.aaddr, b"x" * 16, reply=True)
        self.server.ipv6Received(pong)
        self.net.flush()
        self.assertEqual(self.tunOf(self.a).written, [pong])

    def test_nonceMismatchRejected(self) -> None:
        """
        CL-RX-05: a reply with the wrong data is dropped; the test fails after its retries
        and the host gets address unreachable.
        """
        self.tunOf(self.a).inject(echo(self.aaddr, V6HOST))
        self.net.flush()
        _, msg = self.echoTest()
        forged = bytes(b ^ 1 for b in msg.data)
        self.server.ipv6Received(echo(V6HOST, self.aaddr, forged, reply=True, ident=msg.identifier))
        self.net.flush()
        self.assertDropped(self.a, "echo-nonce-mismatch")
        self.assertEqual(len(self.serverTun.written), 1)
        self.net.run(10)
        self.assertEqual(len(self.serverTun.written), 4)  # 1 + 3 retries, same nonce
        self.assertEqual({p[48:] for p in self.serverTun.written}, {msg.data})
        self.assertDropped(self.a, "peer-unreachable")
        [error] = self.tunOf(self.a).written
        self.assertEqual((error[40], error[41]), (1, 3))

    def test_thirdPartyRelay(self) -> None:
        """
        The native host's relay is another machine: it first bubbles us through our server
        (origin indication), we open our NAT with a direct bubble (D9), then its echo reply
        arrives from it and it becomes the mapping (CL-DT-03).
        """
        relay = self.publicEndpoint(*RELAY)
        ping = echo(self.aaddr, V6HOST)
        self.tunOf(self.a).inject(ping)
        self.net.flush()
        _, msg = self.echoTest()
        # The relay's indirect bubble through our server (native source: SV-IN-6 allows it
        # toward one of the server's own clients).
        relayHost = self.net.owner(RELAY[0])
        assert isinstance(relayHost, FakeHost)
        relayHost.ports[RELAY].write(ipv6.bubble(V6HOST, self.aaddr), (PRIMARY, 3544))
        self.net.flush()
        [(answer, _)] = relay.received
        self.assertTrue(classify(answer).is_bubble)
        relayHost.ports[RELAY].write(echo(V6HOST, self.aaddr, msg.data, reply=True), self.a.mapping)
        self.net.flush()
        self.assertEqual(relay.received[-1][0], ping)

    def test_nativeSourceVerifiedByEchoTest(self) -> None:
        """
        CL-RX-09 case 6: a packet from a native source through an unknown relay is held
        until an echo test shows that relay is the way back; then delivered.
        """
        a = self.makeClient("full-cone", seed=5)
        self.net.flush()
        self.serverTun.written.clear()
        aaddr = raw(a.address)
        relay = self.publicEndpoint(*RELAY)
        relayHost = self.net.owner(RELAY[0])
        assert isinstance(relayHost, FakeHost)
        relayPort = relayHost.ports[RELAY]
        hello = echo(V6HOST, aaddr, b"unsolicited")
        relayPort.write(hello, a.mapping)
        self.net.flush()
        self.assertEqual(self.tunOf(a).written, [])
        _, msg = self.echoTest()
        relayPort.write(echo(V6HOST, aaddr, msg.data, reply=True), a.mapping)
        self.net.flush()
        self.assertEqual(self.tunOf(a).written, [hello])
        self.assertEqual(relay.received, [])


GROUP = ("224.0.0.253", 3544)


class LocalDiscoveryTests(ClientTestCase):
    """
    RFC 4380 section 5.2.8 (CL-LD-01..06, CL-RX-07/08, CL-TX-03, W-BUB-4/5): clients behind
    one NAT that does not hairpin find each other on the LAN and talk there.
    """

    def setUp(self) -> None:
        super().setUp()
        self.nat = self.net.nat("port-restricted", public="198.51.100.77", hairpin=False,
                                rng=random.Random(5))

    def lanClient(self, ip: str, seed: int, **overrides: Any) -> TeredoClient:
        return self.makeClient(host=self.nat.host(ip), seed=seed, **overrides)

    def listener(self, ip: str = "10.0.0.9") -> Endpoint:
        """
        A plain LAN member of 224.0.0.253:3544 recording announcements.
        """
        endpoint = Endpoint()
        self.nat.host(ip).listenMulticast(3544, endpoint, interface=GROUP[0]).joinGroup(GROUP[0])
        return endpoint

    def publicTraffic(self, start: int) -> list[Any]:
        """
        Internet datagrams since C{start} other than the clients' exchanges with the server.
        """
        servers = (PRIMARY, SECONDARY)
        return [d for d in self.net.capture[start:] if d.src[0] not in servers and d.dst[0] not in servers]

    def test_twoClientsBehindOneNATTalkOverTheLAN(self) -> None:
        """
        The two discover each other, and IPv6 packets both ways go LAN endpoint to LAN
        endpoint: nothing crosses the public side, no hairpinning, nothing via the server.
        """
        a = self.lanClient("10.0.0.2", seed=1)
        b = self.lanClient("10.0.0.3", seed=2)
        self.net.flush()
        self.assertEqual((a.state, b.state), ("qualified", "qualified"))
        assert a.mapping is not None and b.mapping is not None
        self.assertEqual(a.mapping[0], b.mapping[0])
        self.assertEqual(a.status()["local-discovery"]["local-peers"], 1)
        self.assertEqual(b.status()["local-discovery"]["local-peers"], 1)
        start, forwarded = len(self.net.capture), self.server.status()["counters"]["forwarded"]
        aaddr, baddr = raw(a.address), raw(b.address)
        request = echo(aaddr, baddr, b"over the LAN")
        self.tunOf(a).inject(request)
        self.net.run(5)
        self.assertEqual(self.tunOf(b).written, [request])
        reply = echo(baddr, aaddr, b"over the LAN", reply=True)
        self.tunOf(b).inject(reply)
        self.net.flush()
        self.assertEqual(self.tunOf(a).written, [reply])
        self.assertEqual(self.publicTraffic(start), [])
        self.assertEqual((self.nat.hairpinned, self.nat.dropped["hairpin"]), (0, 0))
        self.assertEqual(self.server.status()["counters"]["forwarded"], forwarded)
        peer = a.tunnel.peers.get(baddr)
        assert peer is not None
        self.assertEqual((peer.trusted, peer.local, peer.mapping), (True, True, ("10.0.0.3", b.localPort())))
        for client in (a, b):
            self.assertEqual(client.status()["counters"]["bubbles-direct"], 0)
            self.assertEqual({k: v for k, v in client.status()["drops"].items() if v}, {})

    def test_CL_RX_08_caseFiveLocalPeer(self) -> None:
        """
        CL-RX-08 (case 5): a packet from a local peer's LAN endpoint (not the mapping its
        address embeds) makes the local entry trusted and is accepted; from another LAN
        endpoint it is not (C{mapping-mismatch}), and a bubble from the LAN endpoint is
        consumed, not delivered.
        """
        a = self.lanClient("10.0.0.2", seed=1)
        b = self.lanClient("10.0.0.3", seed=2)
        self.net.flush()
        aaddr, baddr = raw(a.address), raw(b.address)
        peer = a.tunnel.peers.get(baddr)
        assert peer is not None and peer.local and peer.local_endpoint is not None
        lan = peer.local_endpoint
        self.assertNotEqual(lan, b.mapping)
        peer.trusted = False
        a.datagramReceived(echo(baddr, aaddr, b"elsewhere"), ("10.0.0.3", lan[1] + 1))
        self.assertDropped(a, "mapping-mismatch")
        self.assertFalse(peer.trusted)
        a.datagramReceived(ipv6.bubble(baddr, aaddr), lan)
        self.assertEqual(self.tunOf(a).written, [])
        self.assertTrue(peer.trusted)
        peer.trusted = False
        hello = echo(baddr, aaddr, b"from the LAN")
        a.datagramReceived(hello, lan)
        self.assertEqual(self.tunOf(a).written, [hello])
        self.assertEqual((peer.trusted, peer.mapping), (True, lan))

    def test_lateJoinerAndOnDemandProbe(self) -> None:
        """
        CL-RX-07 then CL-TX-03: B starts after A announced.  B's announcement makes A
        greet it (announcement, then the W-BUB-5 unicast answer, which B's new local entry
        accepts: case 5).  A packet from B to A then goes straight over the LAN.
        """
        a = self.lanClient("10.0.0.2", seed=1)
        self.net.run(60)
        b = self.lanClient("10.0.0.3", seed=2)
        self.net.flush()
        aaddr, baddr = raw(a.address), raw(b.address)
        self.assertEqual(a.status()["counters"]["bubbles-answered"], 1)
        entry = b.tunnel.peers.get(aaddr)
        assert entry is not None
        self.assertTrue(entry.local and entry.trusted)
        start = len(self.net.capture)
        hello = echo(baddr, aaddr, b"hi")
        self.tunOf(b).inject(hello)
        self.net.run(5)
        self.assertEqual(self.tunOf(a).written, [hello])
        self.assertEqual(self.publicTraffic(start), [])

    def test_untrustedLocalPeerProbedOnTheLAN(self) -> None:
        """
        CL-TX-03: a local peer not yet proven gets the packet queued, a unicast bubble to
        its LAN endpoint and a discovery bubble; its answer releases the queue (case 5).
        """
        a = self.lanClient("10.0.0.2", seed=1)
        b = self.lanClient("10.0.0.3", seed=2)
        self.net.flush()
        aaddr, baddr = raw(a.address), raw(b.address)
        peer = a.tunnel.peers.get(baddr)
        assert peer is not None
        peer.trusted = False
        sent = a.status()["counters"]["discovery-sent"]
        self.net.run(3)  # past the on-demand announcement pace
        self.tunOf(a).inject(echo(aaddr, baddr, b"queued"))
        self.assertEqual(a.status()["peers"]["queued-packets"], 1)
        self.net.flush()
        counters = a.status()["counters"]
        self.assertEqual((counters["bubbles-local"], counters["discovery-sent"]), (1, sent + 1))
        self.assertEqual(counters["released"], 1)
        self.assertEqual(len(self.tunOf(b).written), 1)

    def test_discoveryBubbleFormat(self) -> None:
        """
        W-BUB-4: from the service port's LAN endpoint to 224.0.0.253:3544 (TTL 1, loopback
        off), IPv6 source our global Teredo address, destination ff02::1, hop limit 1, a
        bare bubble; never on the Internet, and none before qualification.
        """
        listener = self.listener()
        unblock = self.net.addDropFilter(lambda d: d.dst[0] in (PRIMARY, SECONDARY))
        a = self.lanClient("10.0.0.2", seed=1)
        self.net.run(20)
        self.assertEqual((a.state, listener.received), ("offline", []))
        self.net.dropped.clear()
        unblock()
        self.net.run(20)
        self.assertEqual(a.state, "qualified")
        self.assertEqual(len(listener.received), 1)
        data, src = listener.received[0]
        self.assertEqual(src, ("10.0.0.2", a.localPort()))
        packet = classify(data)
        header = packet.header
        self.assertEqual(header.src, raw(a.address))
        self.assertEqual(header.dst, ipv6.ALL_NODES)
        self.assertEqual(
            (header.hop_limit, header.next_header, header.payload_length, len(data)), (1, 59, 0, 40)
        )
        self.assertIsNone(packet.origin)
        self.assertEqual((self.socketOf(a).getTTL(), self.socketOf(a).getLoopbackMode()), (1, False))
        self.assertEqual([d for d in self.net.capture if d.dst[0] == GROUP[0]], [])
        self.assertDropped(a, "discovery-self", 0)
        self.assertEqual(a.status()["local-discovery"]["state"], "listening")

    def test_announcementsRandomised(self) -> None:
        """
        CL-LD-02: one at qualification, then at uniform [200, 300] s intervals, not a fixed
        period; they stop while offline.
        """
        listener = self.listener()
        times: list[float] = []
        original = listener.datagramReceived

        def record(data: bytes, addr: tuple[str, int]) -> None:
            times.append(self.clock.seconds())
            original(data, addr)

        listener.datagramReceived = record  # type: ignore[method-assign]  # spies on each arrival
        a = self.lanClient("10.0.0.2", seed=1)
        self.net.run(5000)
        gaps = [round(later - earlier, 6) for earlier, later in zip(times, times[1:])]
        self.assertGreater(len(gaps), 15)
        self.assertTrue(all(200 <= gap <= 300 for gap in gaps), gaps)
        self.assertGreater(len(set(gaps)), 10)
        self.net.addDropFilter(lambda d: d.dst[0] in (PRIMARY, SECONDARY))
        self.net.run(60)
        self.assertEqual(a.state, "offline")
        count = len(times)
        self.net.run(1000)
        self.assertEqual(a.state, "offline")
        self.assertEqual(len(times), count)

    def test_localEntryExpiresAfter600s(self) -> None:
        """
        D6: a local entry lives 600 s after the last thing heard; a peer that keeps
        announcing keeps it, a silent one loses it.
        """
        a = self.lanClient("10.0.0.2", seed=1)
        b = self.lanClient("10.0.0.3", seed=2)
        self.net.flush()
        baddr = raw(b.address)
        self.net.run(1000)
        self.assertIn(baddr, a.tunnel.peers)
        b.stopService()
        known = a.tunnel.peers.get(baddr)
        assert known is not None
        heard = known.last_rx
        self.net.run(heard + 599 - self.clock.seconds())
        self.assertIn(baddr, a.tunnel.peers)
        self.net.run(12)
        self.assertNotIn(baddr, a.tunnel.peers)
        self.assertEqual(a.status()["local-discovery"]["local-peers"], 0)

    def test_discoveryOff(self) -> None:
        """
        CL-LD-01 is a MAY: with local-discovery = false there is no group socket, nothing
        is announced, and two clients behind a non-hairpinning NAT cannot meet.
        """
        listener = self.listener()
        a = self.lanClient("10.0.0.2", seed=1, local_discovery=False)
        b = self.lanClient("10.0.0.3", seed=2, local_discovery=False)
        self.net.flush()
        self.assertEqual(listener.received, [])
        self.assertEqual(a.status()["local-discovery"], {"state": "off"})
        self.assertNotIn(("224.0.0.253", 3544), self.hostOf(a).ports)
        self.tunOf(a).inject(echo(raw(a.address), raw(b.address)))
        self.net.run(10)
        self.assertEqual(self.tunOf(b).written, [])
        self.assertGreater(self.nat.dropped["hairpin"], 0)

    def test_serviceOn3544DisablesDiscovery(self) -> None:
        a = self.lanClient("10.0.0.2", seed=1, port=3544)
        self.net.flush()
        self.assertEqual((a.state, a.status()["local-discovery"]), ("qualified", {"state": "off"}))

    def test_CL_LD_05_entryCreatedThenUpdated(self) -> None:
        """
        CL-LD-05b: an accepted discovery bubble from a peer without an entry creates an
        untrusted local one (last reception now, last transmission 30 s ago, no bubbles);
        CL-LD-05a: the next one, from another LAN endpoint, updates its local address and
        port.
        """
        a = self.lanClient("10.0.0.2", seed=1, local_discovery_address="10.0.0.2/29")
        self.net.flush()
        assert a.mapping is not None
        ours = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 1234, a.mapping[0]).to_bytes()
        first, second = Endpoint(), Endpoint()
        self.nat.host("10.0.0.4").listenUDP(4000, first)
        self.nat.host("10.0.0.5").listenUDP(4001, second)
        first.transport.write(ipv6.bubble(ours, ipv6.ALL_NODES, 1), GROUP)
        self.net.flush()
        peer = a.tunnel.peers.get(ours)
        assert peer is not None
        now = self.clock.seconds()
        self.assertEqual((peer.local, peer.trusted, peer.local_endpoint), (True, False, ("10.0.0.4", 4000)))
        self.assertEqual((peer.last_rx, peer.last_tx, len(peer.bubbles)), (now, now - 30, 0))
        self.clock.advance(1)
        second.transport.write(ipv6.bubble(ours, ipv6.ALL_NODES, 1), GROUP)
        self.net.flush()
        self.assertIs(a.tunnel.peers.get(ours), peer)
        self.assertEqual((peer.local_endpoint, peer.last_rx), (("10.0.0.5", 4001), now + 1))

    def test_badDiscoveryBubblesDropped(self) -> None:
        """
        CL-LD-03, CL-LD-04a (not a Teredo source, an IPv4 source off the subnet), CL-LD-04b
        (a Teredo source not behind our NAT: spoofed), over unicast, not a bubble: each
        dropped and counted, no entry, nothing to the host.
        """
        a = self.lanClient("10.0.0.2", seed=1, local_discovery_address="10.0.0.2/29")
        self.net.flush()
        assert a.mapping is not None
        mapped = a.mapping[0]
        ours = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 1234, mapped).to_bytes()
        foreign = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 1234, "192.0.2.50").to_bytes()
        private = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 1234, "10.0.0.3").to_bytes()
        inside, outside = Endpoint(), Endpoint()
        self.nat.host("10.0.0.4").listenUDP(4000, inside)
        self.nat.host("10.0.0.9").listenUDP(4000, outside)
        bubble = ipv6.bubble
        for data in (
            bubble(V6HOST, ipv6.ALL_NODES, 1),  # not Teredo
            bubble(private, ipv6.ALL_NODES, 1),  # Teredo prefix, non-global mapping
            bubble(foreign, ipv6.ALL_NODES, 1),  # another NAT's client: spoofed
            echo(ours, ipv6.ALL_NODES),  # not a bubble
            bubble(ours, raw(a.address), 1),  # not to ff02::1
            b"\x00\x02garbage",
        ):
            inside.transport.write(data, GROUP)
        outside.transport.write(bubble(ours, ipv6.ALL_NODES, 1), GROUP)  # off the /29
        inside.transport.write(bubble(ours, ipv6.ALL_NODES, 1), ("10.0.0.2", a.localPort()))
        self.net.flush()
        self.assertDropped(a, "discovery-not-teredo", 2)
        self.assertDropped(a, "discovery-foreign-mapping")
        self.assertDropped(a, "discovery-invalid", 2)
        self.assertDropped(a, "malformed")
        self.assertDropped(a, "discovery-off-subnet")
        self.assertDropped(a, "discovery-unicast")
        self.assertEqual(len(a.tunnel.peers), 0)
        self.assertEqual(self.tunOf(a).written, [])
        self.assertEqual((inside.received, outside.received), ([], []))
        # The same bubble from inside the subnet is a legitimate local peer.
        inside.transport.write(bubble(ours, ipv6.ALL_NODES, 1), GROUP)
        self.net.flush()
        self.assertEqual(a.status()["local-discovery"]["local-peers"], 1)
        self.assertEqual(len(inside.received), 1)  # W-BUB-5: the unicast answer
        answer = classify(inside.received[0][0]).header
        self.assertEqual((answer.src, answer.dst), (raw(a.address), ours))

    def test_defaultSubnetRuleIsPrivateSources(self) -> None:
        """
        Without a configured subnet, a LAN source with a global address is refused.
        """
        a = self.lanClient("10.0.0.2", seed=1)
        self.net.flush()
        assert a.mapping is not None
        ours = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 1234, a.mapping[0]).to_bytes()
        odd = Endpoint()
        self.nat.host("192.0.2.77").listenUDP(4000, odd)
        odd.transport.write(ipv6.bubble(ours, ipv6.ALL_NODES, 1), GROUP)
        self.net.flush()
        self.assertDropped(a, "discovery-off-subnet")

    def test_discoveryMovesAPublicPeerToTheLAN(self) -> None:
        """
        A peer proven at its public mapping (a hairpinning NAT) that announces itself on
        the LAN becomes local and untrusted until its LAN endpoint is proven.
        """
        a = self.lanClient("10.0.0.2", seed=1)
        self.net.flush()
        assert a.mapping is not None
        ours = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 1234, a.mapping[0]).to_bytes()
        peer = a.tunnel.peers.create(ours)
        peer.trust((a.mapping[0], 1234), self.clock.seconds())
        lan = Endpoint()
        self.nat.host("10.0.0.4").listenUDP(4000, lan)
        lan.transport.write(ipv6.bubble(ours, ipv6.ALL_NODES, 1), GROUP)
        self.net.flush()
        self.assertEqual(
            (peer.local, peer.trusted, peer.local_endpoint), (True, False, ("10.0.0.4", 4000))
        )
        lan.transport.write(ipv6.bubble(ours, raw(a.address)), ("10.0.0.2", a.localPort()))
        self.net.flush()
        self.assertEqual((peer.trusted, peer.mapping), (True, ("10.0.0.4", 4000)))

    def test_notQualifiedDropsDiscovery(self) -> None:
        self.net.addDropFilter(lambda d: d.dst[0] in (PRIMARY, SECONDARY))
        a = self.lanClient("10.0.0.2", seed=1)
        sender = Endpoint()
        self.nat.host("10.0.0.4").listenUDP(4000, sender)
        spoof = TeredoAddress(b"\x20\x01\x00\x00", PRIMARY, 0, 1234, "198.51.100.77").to_bytes()
        sender.transport.write(ipv6.bubble(spoof, ipv6.ALL_NODES, 1), GROUP)
        self.net.flush()
        self.assertDropped(a, "not-qualified")
        self.assertEqual(len(a.tunnel.peers), 0)


class RoleTests(ClientTestCase):
    def test_statusListsEveryDropReason(self) -> None:
        client = self.makeClient()
        self.net.flush()
        status = client.status()
        self.assertEqual(list(status["drops"]), list(DROP_REASONS))
        self.assertEqual(status["server"], PRIMARY)
        self.assertIsNotNone(status["last-server-contact"])

    def test_statusCountsNetconfigErrors(self) -> None:
        """
        A failed interface command is logged and counted, and the count shows in status.
        """
        client = self.makeClient(start=False)
        self.confOf(client).failNext("addAddress")
        client.privilegedStartService()
        client.startService()
        self.net.flush()
        self.assertEqual(client.status()["counters"]["netconfig-errors"], 1)
        self.flushLoggedErrors()

    def test_stopRemovesEverything(self) -> None:
        client = self.makeClient(start=False)
        client.privilegedStartService()
        client.startService()
        self.net.flush()
        client.stopService()
        self.server.stopService()
        self.assertEqual(self.confOf(client).addresses["teredo"], set())
        self.assertTrue(self.tunOf(client).closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_discoveryCollaboratorsProvideTheirInterfaces(self) -> None:
        """
        Local discovery gets the client and the tunnel through interfaces, not lambdas or
        privates.
        """
        client = self.makeClient()
        self.assertTrue(verifyObject(IDiscoveryHost, client))
        self.assertTrue(verifyObject(ILocalPeers, client.tunnel))
        self.assertFalse(client.isQualified() and client.mappedAddress() is None)
        self.net.flush()
        self.assertTrue(client.isQualified())
        assert client.mapping is not None
        self.assertEqual(client.mappedAddress(), client.mapping[0])

    def test_makeRole(self) -> None:
        settings = ClientSettings(server=PRIMARY, secondary=SECONDARY)
        role = client_module.makeRole(settings, Clock())
        self.assertTrue(verifyObject(ITeredoRole, role))
        self.assertEqual(role.roleName, "client")

    def test_hostHasOtherIPv6(self) -> None:
        table = (
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
            "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n"
            "20010db8000000000000000000000000 40 00000000000000000000000000000000 00 "
            "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
        )
        default = (
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
            "fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n"
        )
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write(table)
        self.addCleanup(os.unlink, f.name)
        self.assertFalse(hostHasOtherIPv6("teredo", f.name))
        with open(f.name, "a") as g:
            g.write(default)
        self.assertTrue(hostHasOtherIPv6("teredo", f.name))
        self.assertFalse(hostHasOtherIPv6("eth0", f.name))
        self.assertFalse(hostHasOtherIPv6("teredo", "/nonexistent/route"))

    def test_configKeys(self) -> None:
        """
        The client's keys: default-route is "auto", true or false.
        """
        from teredonode.config import parse_config
        from teredonode.errors import ConfigError

        base = '[client]\nenabled = true\nserver = "203.0.113.10"\n'
        settings = parse_config(base, "x.toml", None, None).roles["client"]
        assert isinstance(settings, ClientSettings)
        self.assertEqual(
            (settings.default_route, settings.allow_symmetric, settings.peer_queue_bytes),
            ("auto", False, 10240),
        )
        self.assertEqual((settings.local_discovery, settings.local_discovery_address), (True, ""))
        lan = parse_config(base + 'local-discovery-address = "192.168.1.10/24"\n', "x.toml", None, None)
        lanClient = lan.roles["client"]
        assert isinstance(lanClient, ClientSettings)
        self.assertEqual(lanClient.local_discovery_address, "192.168.1.10/24")
        for bad in ('"10.0.0.2/40"', '"224.0.0.1"', "5", '"eth0"', "true"):
            self.assertRaises(
                ConfigError, parse_config, base + f"local-discovery-address = {bad}\n", "x.toml", None, None
            )
        forced = parse_config(base + "default-route = true\n", "x.toml", None, None)
        forcedClient = forced.roles["client"]
        assert isinstance(forcedClient, ClientSettings)
        self.assertIs(forcedClient.default_route, True)
        self.assertRaises(ConfigError, parse_config, base + 'default-route = "yes"\n', "x.toml", None, None)
