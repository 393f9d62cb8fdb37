"""
The server role on the in-memory network (requirements digest section 3.2: SV-IN-*, SV-FW-*,
SV-RA-*), deterministic on a Clock.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet.interfaces import IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import ServerSettings
from teredonode.roles.server import DROP_REASONS, TeredoServer
from teredonode.testing import FakeInternet, FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import (
    CLIENT_LINK_LOCAL_CONE,
    CLIENT_LINK_LOCAL_RESTRICTED,
    TeredoAddress,
    server_link_local,
)
from teredonode.wire.teredo import (
    AuthIndicator,
    NonceTrailer,
    OriginIndication,
    RandomPortTrailer,
    classify,
    encode_payload,
    encode_trailers,
)

PRIMARY, SECONDARY = "203.0.113.10", "203.0.113.11"
OTHER_SERVER = "203.0.113.50"
V6HOST = ipaddress.IPv6Address("2001:db8::5").packed


def rs(src: bytes = CLIENT_LINK_LOCAL_RESTRICTED, nonce: bytes | None = b"N0NCE123") -> bytes:
    packet = ipv6.icmpv6_packet(src, ipv6.ALL_ROUTERS, ipv6.RouterSolicitation(), 255)
    return encode_payload(packet, AuthIndicator(nonce) if nonce is not None else None)


def teredo(mapping: tuple[str, int], server: str = PRIMARY) -> bytes:
    return TeredoAddress(b"\x20\x01\x00\x00", server, 0, mapping[1], mapping[0]).to_bytes()


class Peer(DatagramProtocol):
    """
    A bare UDP endpoint recording what it receives.
    """

    transport: IUDPTransport  # set by listenUDP before any use

    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))

    def send(self, data: bytes, to: tuple[str, int] = (PRIMARY, 3544)) -> None:
        self.transport.write(data, to)


def _origin_of(peer: Peer, ipv6_packet: bytes) -> bytes:
    """
    What the server sends a client of its own: an origin indication of C{peer}, the packet.
    """
    host = peer.transport.getHost()
    return OriginIndication(host.host, host.port).to_bytes() + ipv6_packet


class ServerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.net = FakeInternet(self.clock)
        self.host = self.net.host(PRIMARY, SECONDARY)
        self.tun = FakeTunDevice("teredo-srv")
        self.server = self.makeServer()

    def makeServer(self, **overrides: Any) -> TeredoServer:
        settings = ServerSettings(primary=PRIMARY, secondary=SECONDARY, **overrides)
        server = TeredoServer(settings, self.host, tun=self.tun)
        server.privilegedStartService()
        server.startService()
        self.addCleanup(server.stopService)
        return server

    def peer(self, ip: str, port: int = 40000) -> Peer:
        p = Peer()
        self.net.host(ip).listenUDP(port, p, interface=ip)
        return p

    def natPeer(self, kind: str, public: str) -> Peer:
        p = Peer()
        self.net.nat(kind, public=public).host("10.0.0.2").listenUDP(5000, p)
        return p

    def remakeServer(self, **overrides: Any) -> TeredoServer:
        """
        Replace the server with one built from other settings.
        """
        self.server.stopService()
        self.tun = FakeTunDevice("teredo-srv")
        self.server = self.makeServer(**overrides)
        return self.server

    def assertDropped(self, reason: str, count: int = 1) -> None:
        self.assertEqual(self.server.status()["drops"][reason], count, self.server.status()["drops"])


class RouterSolicitationTests(ServerTestCase):
    def test_ra_contents(self) -> None:
        """
        SV-RA-01..05, 09, 10: origin = the RS's outer source; exactly one PIO for
        2001:0:<primary>::/64; MTU 1280; from the server link-local to the RS source, hop
        limit 255; nonce echoed; valid checksum.
        """
        client = self.natPeer("port-restricted", "198.51.100.7")
        client.send(rs())
        self.net.flush()
        [(data, source)] = client.received
        self.assertEqual(source, (PRIMARY, 3544))
        packet = classify(data)
        mapping = self.net.capture[0].src
        self.assertEqual(packet.origin, OriginIndication(*mapping))
        self.assertEqual(packet.auth, AuthIndicator(b"N0NCE123"))
        header = packet.header
        self.assertEqual(header.src, server_link_local(PRIMARY))
        self.assertEqual(header.dst, CLIENT_LINK_LOCAL_RESTRICTED)
        self.assertEqual(header.hop_limit, 255)
        ra = ipv6.decode_icmpv6(packet.ipv6[40:], header.src, header.dst)
        assert isinstance(ra, ipv6.RouterAdvertisement)
        self.assertEqual(len(ra.prefixes), 1)
        self.assertEqual(ra.prefixes[0].prefix, ipaddress.IPv6Address("2001:0:cb00:710a::").packed)
        self.assertEqual(ra.prefixes[0].prefix_length, 64)
        self.assertEqual(ra.mtu, 1280)
        self.assertEqual(self.server.status()["counters"]["ra"], 1)

    def test_cone_bit_answers_from_other_address(self) -> None:
        """
        SV-RA-06 / RFC 5991 3.2: cone bit 1 -> RA from the other address.  A full-cone NAT
        lets it in; a port-restricted one filters it (which is what the cone test detects).
        """
        cone = self.natPeer("full-cone", "198.51.100.7")
        cone.send(rs(CLIENT_LINK_LOCAL_CONE))
        restricted = self.natPeer("port-restricted", "198.51.100.8")
        restricted.send(rs(CLIENT_LINK_LOCAL_CONE))
        self.net.flush()
        self.assertEqual([a for _, a in cone.received], [(SECONDARY, 3544)])
        self.assertEqual(restricted.received, [])
        self.assertEqual(self.server.status()["counters"]["ra"], 2)

    def test_secondary_same_address_prefix_is_primary(self) -> None:
        """
        Cone bit 0 on the secondary: answered from the secondary, advertising the primary's
        prefix (defect D15).
        """
        client = self.peer("192.0.2.45")
        client.send(rs(), (SECONDARY, 3544))
        self.net.flush()
        [(data, source)] = client.received
        self.assertEqual(source, (SECONDARY, 3544))
        packet = classify(data)
        ra = ipv6.decode_icmpv6(packet.ipv6[40:], packet.header.src, packet.header.dst)
        assert isinstance(ra, ipv6.RouterAdvertisement)
        self.assertEqual(ra.prefixes[0].prefix[:8], bytes.fromhex("20010000cb00710a"))

    def test_ra_cache_is_bounded_and_correct(self) -> None:
        """
        RAs are cached per RS source; attacker-chosen sources cannot grow the cache, and each
        RA is still addressed to its own solicitor.
        """
        for i in range(100):
            client = self.peer(f"192.0.2.{i + 1}")
            src = ipaddress.IPv6Address(f"fe80::{i + 1}").packed
            client.send(rs(src))
            self.net.flush()
            packet = classify(client.received[0][0])
            self.assertEqual(packet.header.dst, src)
            ipv6.decode_icmpv6(packet.ipv6[40:], packet.header.src, packet.header.dst)
        self.assertLessEqual(self.server.raCached, 64)

    def test_without_auth(self) -> None:
        client = self.peer("192.0.2.45")
        client.send(rs(nonce=None))
        self.net.flush()
        packet = classify(client.received[0][0])
        self.assertIsNone(packet.auth)
        self.assertEqual(packet.origin, OriginIndication("192.0.2.45", 40000))

    def test_invalid_rs(self) -> None:
        """
        RFC 4861 6.1.1 validity: hop limit 255 and a correct checksum.
        """
        client = self.peer("192.0.2.45")
        bad_hop = ipv6.icmpv6_packet(CLIENT_LINK_LOCAL_RESTRICTED, ipv6.ALL_ROUTERS, ipv6.RouterSolicitation(), 64)
        client.send(bad_hop)
        good = bytearray(rs(nonce=None))
        good[-1] ^= 0xFF
        client.send(bytes(good))
        self.net.flush()
        self.assertEqual(client.received, [])
        self.assertDropped("bad-router-solicitation", 2)

    def test_rs_rate_limit(self) -> None:
        """
        A new source gets C{rs-initial} RAs at once, then C{rs-rate} per second; others are
        served.
        """
        flood = self.peer("192.0.2.45")
        for _ in range(25):
            flood.send(rs())
        other = self.peer("192.0.2.46")
        other.send(rs())
        self.net.flush()
        self.assertEqual(len(flood.received), 4)
        self.assertEqual(len(other.received), 1)
        self.assertDropped("rate-limited-rs", 21)
        self.clock.advance(2.0)
        flood.send(rs())
        self.net.flush()
        self.assertEqual(len(flood.received), 5)


class RateLimitTests(ServerTestCase):
    """
    The RS limiter keyed by source IPv4 (or its /24), new sources not full, a global RA
    budget; the forward limiter keyed by source IPv4.
    """

    def spoof(self, source: tuple[str, int], data: bytes) -> None:
        self.net.inject(source, (PRIMARY, 3544), data)

    def ras_to(self, ip: str) -> int:
        return sum(1 for p in self.net.capture if p.dst[0] == ip and p.src[1] == 3544)

    def test_port_does_not_reset_the_bucket(self) -> None:
        """
        Spoofing a victim's address with a new port each time gets C{rs-initial} RAs, not a
        fresh bucket per port.
        """
        for port in range(1024, 1124):
            self.spoof(("192.0.2.45", port), rs())
        self.net.flush()
        self.assertEqual(self.ras_to("192.0.2.45"), 4)
        self.assertDropped("rate-limited-rs", 96)

    def test_refill_up_to_burst(self) -> None:
        """
        Tokens come back at C{rs-rate} per second up to C{rs-burst}, whatever the port.
        """
        for port in range(1024, 1028):
            self.spoof(("192.0.2.45", port), rs())
        self.net.flush()
        self.clock.advance(100.0)
        for port in range(2000, 2020):
            self.spoof(("192.0.2.45", port), rs())
        self.net.flush()
        self.assertEqual(self.ras_to("192.0.2.45"), 4 + 10)

    def test_prefix_24_key(self) -> None:
        """
        With rs-limit-prefix = 24 the whole /24 shares one bucket; by default each address
        has its own.
        """
        for host in range(1, 51):
            self.spoof((f"192.0.2.{host}", 4000), rs())
        self.net.flush()
        self.assertEqual(len(self.net.capture) - 50, 50)
        server = self.remakeServer(rs_limit_prefix=24)
        for host in range(1, 51):
            self.net.inject((f"198.51.100.{host}", 4000), (PRIMARY, 3544), rs())
        self.net.flush()
        self.assertEqual(server.status()["counters"]["ra"], 4)
        self.assertDropped("rate-limited-rs", 46)

    def test_global_budget(self) -> None:
        """
        Past C{ra-burst} RAs at once the server answers C{ra-rate} per second, all sources
        together; a source over its own limit takes no global token.
        """
        self.remakeServer(ra_rate=2.0, ra_burst=5)
        over = ("192.0.2.99", 1000)
        for _ in range(4):
            self.net.inject(over, (PRIMARY, 3544), rs())
        self.net.flush()
        for _ in range(10):
            self.net.inject(over, (PRIMARY, 3544), rs())  # over its own limit: no global token
        for host in range(1, 11):
            self.net.inject((f"198.51.100.{host}", 4000), (PRIMARY, 3544), rs())
        self.net.flush()
        status = self.server.status()
        self.assertEqual(status["counters"]["ra"], 5)
        self.assertEqual(status["drops"]["rate-limited-ra-budget"], 9)
        self.assertEqual(status["drops"]["rate-limited-rs"], 10)
        self.clock.advance(1.0)
        for host in range(11, 16):
            self.net.inject((f"198.51.100.{host}", 4000), (PRIMARY, 3544), rs())
        self.net.flush()
        self.assertEqual(self.server.status()["counters"]["ra"], 7)

    def test_legitimate_client_schedule(self) -> None:
        """
        The defaults serve a client's qualification (primary then secondary) and its refresh
        every 30 s, for several clients behind one NAT address starting 4 s apart (a
        client's RS timeout).
        """
        for client in range(3):
            port = 5000 + client
            self.spoof(("192.0.2.45", port), rs())
            self.net.inject(("192.0.2.45", port), (SECONDARY, 3544), rs(CLIENT_LINK_LOCAL_CONE))
            self.net.flush()
            self.clock.advance(4.0)
        for _ in range(20):
            self.clock.advance(30.0)
            for client in range(3):
                self.spoof(("192.0.2.45", 5000 + client), rs())
            self.net.flush()
        self.assertEqual(self.ras_to("192.0.2.45"), 6 + 60)
        self.assertDropped("rate-limited-rs", 0)

    def test_forward_limit_keyed_by_address(self) -> None:
        """
        Changing the source port does not reset the forward bucket.
        """
        bob = self.peer("198.51.100.20", 6000)
        for port in range(40000, 40030):
            bubble = ipv6.bubble(teredo(("192.0.2.45", port)), teredo(("198.51.100.20", 6000)))
            self.net.inject(("192.0.2.45", port), (PRIMARY, 3544), bubble)
        self.net.flush()
        self.assertEqual(len(bob.received), 20)
        self.assertDropped("rate-limited-forward", 10)


class ValidityTests(ServerTestCase):
    """
    SV-IN-1..8, each drop counted by its reason.
    """

    def test_own_address(self) -> None:
        self.net.inject((SECONDARY, 3544), (PRIMARY, 3544), rs())
        self.net.flush()
        self.assertDropped("own-address")

    def test_malformed(self) -> None:
        for junk in [b"", b"\x00", b"\x00\x02garbage", b"\x60" + bytes(20), rs()[:-3]]:
            self.net.inject(("192.0.2.45", 1), (PRIMARY, 3544), junk)
        self.net.flush()
        self.assertDropped("malformed", 5)

    def test_not_bubble_or_icmpv6(self) -> None:
        a = teredo(("192.0.2.45", 40000))
        udp = ipv6.build_ipv6(a, V6HOST, 17, bytes(8))
        self.peer("192.0.2.45").send(udp)
        self.net.flush()
        self.assertDropped("not-bubble-or-icmpv6")

    def test_non_global_source(self) -> None:
        for src in ["10.1.2.3", "127.0.0.1", "192.168.1.1", "100.64.0.1", "240.0.0.1"]:
            self.net.inject((src, 5000), (PRIMARY, 3544), rs())
        self.net.flush()
        self.assertDropped("non-global-source", 5)
        self.assertEqual(self.server.status()["counters"]["ra"], 0)

    def test_spoofed_teredo_source(self) -> None:
        """
        SV-IN-5: the IPv6 source must embed the sender's own mapping.
        """
        victim = self.peer("192.0.2.99")
        spoofed = ipv6.bubble(teredo(("192.0.2.77", 1234)), teredo(("192.0.2.99", 40000)))
        self.peer("192.0.2.45").send(spoofed)
        self.net.flush()
        self.assertDropped("source-mismatch")
        self.assertEqual(victim.received, [])

    def test_native_source_to_foreign_client(self) -> None:
        """
        SV-IN-6/7: a native source may only reach a client of this server.
        """
        pkt = ipv6.icmpv6_packet(V6HOST, teredo(("192.0.2.99", 1), OTHER_SERVER), ipv6.EchoReply(1, 1))
        self.peer("192.0.2.45").send(pkt)
        self.net.flush()
        self.assertDropped("source-mismatch")

    def test_oversized(self) -> None:
        """
        SV-IN-8: non-bubble payloads above max-payload are not relayed (no open relay).
        """
        self.assertEqual(self.server.settings.max_payload, 88)
        a = teredo(("192.0.2.45", 40000))
        big = ipv6.icmpv6_packet(a, V6HOST, ipv6.EchoRequest(1, 1, bytes(200)))
        self.peer("192.0.2.45").send(big)
        self.net.flush()
        self.assertDropped("oversized")
        self.assertEqual(self.tun.written, [])

    def test_icmpv6_not_relayed(self) -> None:
        a = teredo(("192.0.2.45", 40000))
        err = ipv6.icmpv6_packet(a, V6HOST, ipv6.DestinationUnreachable(1, b""))
        self.peer("192.0.2.45").send(err)
        self.net.flush()
        self.assertDropped("icmpv6-not-relayed")

    def test_non_global_destination(self) -> None:
        a = teredo(("192.0.2.45", 40000))
        alice = self.peer("192.0.2.45")
        for dst in ["ff0e::1", "fe80::1", "::1"]:
            pkt = ipv6.icmpv6_packet(a, ipaddress.IPv6Address(dst).packed, ipv6.EchoRequest(1, 1))
            alice.send(pkt)
        self.net.flush()
        self.assertDropped("non-global-destination", 3)

    def test_non_global_mapping(self) -> None:
        """
        SV-FW-4: a Teredo destination whose mapping is private is not forwarded to.
        """
        a = teredo(("192.0.2.45", 40000))
        self.peer("192.0.2.45").send(ipv6.bubble(a, teredo(("10.0.0.1", 5000))))
        self.net.flush()
        self.assertDropped("non-global-mapping")

    def test_rates_per_second(self) -> None:
        """
        The status reports what happened during the last whole second.
        """
        for i in range(5):
            self.peer(f"192.0.2.{50 + i}").send(rs())
        self.net.inject(("10.0.0.1", 1), (PRIMARY, 3544), rs())
        self.net.flush()
        self.clock.advance(1.0)
        rates = self.server.status()["rates-per-second"]
        self.assertEqual((rates["received"], rates["rs"], rates["ra"], rates["dropped"]), (6.0, 5.0, 5.0, 1.0))
        self.clock.advance(1.0)
        self.assertEqual(self.server.status()["rates-per-second"]["rs"], 0.0)

    def test_status_lists_every_reason(self) -> None:
        status = self.server.status()
        self.assertEqual(set(status["drops"]), set(DROP_REASONS))
        self.assertEqual(status["state"], "serving")
        self.assertEqual(status["prefix"], "2001:0:cb00:710a::/64")


class ForwardingTests(ServerTestCase):
    """
    SV-FW-1..7.
    """

    def test_indirect_bubble_to_own_client(self) -> None:
        """
        A bubble for one of our clients goes from the primary address to its mapping, with
        an origin indication of the sender; RFC 6081 trailers are carried unchanged.
        """
        alice, bob = self.peer("192.0.2.45"), self.peer("198.51.100.20", 6000)
        trailers = encode_trailers([NonceTrailer(b"\x01\x02\x03\x04"), RandomPortTrailer(1201)])
        bubble = ipv6.bubble(teredo(("192.0.2.45", 40000)), teredo(("198.51.100.20", 6000)))
        alice.send(bubble + trailers, (SECONDARY, 3544))
        self.net.flush()
        [(data, source)] = bob.received
        self.assertEqual(source, (PRIMARY, 3544))
        packet = classify(data)
        self.assertEqual(packet.origin, OriginIndication("192.0.2.45", 40000))
        self.assertEqual(packet.ipv6, bubble)
        self.assertEqual(packet.trailer_bytes, trailers)
        self.assertEqual(self.server.status()["counters"]["forwarded"], 1)

    def test_sns_bubble_from_other_mapping(self) -> None:
        """
        D11: an RFC 6081 indirect bubble whose Teredo source embeds another port than the one
        the server sees (the client is behind a symmetric NAT) is dropped by default (RFC 4380
        section 5.3.1 rule 5) and relayed with relax-bubble-source -- only a bubble, only
        with a Nonce trailer, only to one of this server's clients.
        """
        alice, bob = self.peer("192.0.2.45", 40001), self.peer("198.51.100.20", 6000)
        nonce = encode_trailers([NonceTrailer(b"\x01\x02\x03\x04")])
        bubble = ipv6.bubble(teredo(("192.0.2.45", 40000)), teredo(("198.51.100.20", 6000)))
        alice.send(bubble + nonce)
        self.net.flush()
        self.assertDropped("source-mismatch")
        self.assertEqual(bob.received, [])

        self.remakeServer(relax_bubble_source=True)
        alice.send(bubble + nonce)
        alice.send(bubble)  # no nonce
        foreign = ipv6.bubble(teredo(("192.0.2.45", 40000)), teredo(("198.51.100.20", 6000), OTHER_SERVER))
        alice.send(foreign + nonce)  # not our client
        data = ipv6.icmpv6_packet(teredo(("192.0.2.45", 40000)), teredo(("198.51.100.20", 6000)), ipv6.EchoRequest(1, 1, b"x"), 64)
        alice.send(data + nonce)  # not a bubble
        self.net.flush()
        [(received, source)] = bob.received
        self.assertEqual(source, (PRIMARY, 3544))
        packet = classify(received)
        self.assertEqual(packet.ipv6, bubble)
        self.assertEqual(packet.origin, OriginIndication("192.0.2.45", 40001))
        self.assertEqual(packet.trailer_bytes, nonce)
        self.assertEqual(self.server.status()["counters"]["relaxed-bubbles"], 1)
        self.assertDropped("source-mismatch", 3)

    def test_junk_after_bubble_is_stripped(self) -> None:
        """
        SV-FW-7 (D12 corrected): bytes after a bubble that are not entirely known trailers
        never leave the server; the bubble itself still does, and the strip is counted.
        """
        alice, bob = self.peer("192.0.2.45"), self.peer("198.51.100.20", 6000)
        bubble = ipv6.bubble(teredo(("192.0.2.45", 40000)), teredo(("198.51.100.20", 6000)))
        nonce = encode_trailers([NonceTrailer(b"\x01\x02\x03\x04")])
        for junk in (b"\xaa" * 1000, nonce + b"\x00", nonce + nonce, b"\x80\x02ab"):
            alice.send(bubble + junk)
        self.net.flush()
        self.assertEqual([data for data, _ in bob.received], [_origin_of(alice, bubble)] * 4)
        self.assertEqual(self.server.status()["trailers-stripped"], {"non-bubble": 0, "invalid": 4})

    def test_no_trailers_on_non_bubbles(self) -> None:
        """
        An echo request with trailers is forwarded without them.
        """
        alice, bob = self.peer("192.0.2.45"), self.peer("198.51.100.20", 6000)
        echo = ipv6.icmpv6_packet(
            teredo(("192.0.2.45", 40000)), teredo(("198.51.100.20", 6000)), ipv6.EchoRequest(1, 1, b"x"), 64
        )
        alice.send(echo + encode_trailers([NonceTrailer(b"abcd")]))
        self.net.flush()
        [(data, _)] = bob.received
        self.assertEqual(classify(data).trailer_bytes, b"")
        self.assertEqual(self.server.status()["trailers-stripped"]["non-bubble"], 1)

    def test_destination_embeds_own_address_or_port_zero(self) -> None:
        """
        Nothing is forwarded to the server's own addresses (any port) or to port 0.
        """
        alice = self.peer("192.0.2.45")
        src = teredo(("192.0.2.45", 40000))
        for mapping in ((PRIMARY, 3544), (SECONDARY, 9), (PRIMARY, 1234)):
            alice.send(ipv6.bubble(src, teredo(mapping, OTHER_SERVER)))
        alice.send(ipv6.bubble(src, teredo(("198.51.100.20", 0))))
        self.net.flush()
        self.assertDropped("own-destination", 3)
        self.assertDropped("zero-port-destination", 1)
        self.assertEqual(self.server.status()["counters"]["forwarded"], 0)

    def test_to_other_servers_client_without_origin(self) -> None:
        """
        SV-FW-6: the origin indication is only for our own clients.
        """
        alice, carol = self.peer("192.0.2.45"), self.peer("198.51.100.30", 7000)
        bubble = ipv6.bubble(teredo(("192.0.2.45", 40000)), teredo(("198.51.100.30", 7000), OTHER_SERVER))
        alice.send(bubble)
        self.net.flush()
        [(data, _)] = carol.received
        self.assertIsNone(classify(data).origin)
        self.assertEqual(data, bubble)

    def test_echo_test_to_native_and_reply(self) -> None:
        """
        SV-FW-3: a client's echo request to a native host goes to the IPv6 side; the reply
        coming back for the client is encapsulated toward its mapping.
        """
        alice = self.peer("192.0.2.45")
        a = teredo(("192.0.2.45", 40000))
        request = ipv6.icmpv6_packet(a, V6HOST, ipv6.EchoRequest(7, 1, b"12345678"))
        alice.send(request)
        self.net.flush()
        self.assertEqual(self.tun.written, [request])
        reply = ipv6.icmpv6_packet(V6HOST, a, ipv6.EchoReply(7, 1, b"12345678"))
        self.tun.inject(reply)
        self.net.flush()
        [(data, source)] = alice.received
        self.assertEqual((data, source), (reply, (PRIMARY, 3544)))

    def test_native_side_refuses_others(self) -> None:
        foreign = ipv6.icmpv6_packet(V6HOST, teredo(("192.0.2.45", 1), OTHER_SERVER), ipv6.EchoReply(1, 1))
        self.tun.inject(foreign)
        tcp = ipv6.build_ipv6(V6HOST, teredo(("192.0.2.45", 40000)), 6, bytes(20))
        self.tun.inject(tcp)
        self.tun.inject(b"\x60junk")
        self.net.flush()
        self.assertEqual(self.net.capture, [])
        self.assertDropped("source-mismatch")
        self.assertDropped("icmpv6-not-relayed")
        self.assertDropped("malformed")

    def test_no_ipv6_side(self) -> None:
        """
        Without an IPv6 side, echo tests to native hosts are dropped and counted.
        """
        host = self.net.host("203.0.113.20", "203.0.113.21")
        server = TeredoServer(ServerSettings(primary="203.0.113.20", secondary="203.0.113.21"), host)
        server.privilegedStartService()
        server.startService()
        self.addCleanup(server.stopService)
        a = teredo(("192.0.2.45", 40000), "203.0.113.20")
        self.peer("192.0.2.45").send(ipv6.icmpv6_packet(a, V6HOST, ipv6.EchoRequest(1, 1)), ("203.0.113.20", 3544))
        self.net.flush()
        self.assertEqual(server.status()["drops"]["no-ipv6-side"], 1)
        self.assertIsNone(server.status()["ipv6-side"])

    def test_local_echo(self) -> None:
        """
        SV-FW-1: an echo request to the server's link-local address is answered.
        """
        alice = self.peer("192.0.2.45")
        a = teredo(("192.0.2.45", 40000))
        alice.send(ipv6.icmpv6_packet(a, server_link_local(PRIMARY), ipv6.EchoRequest(3, 4, b"hi")))
        self.net.flush()
        [(data, _)] = alice.received
        packet = classify(data)
        msg = ipv6.decode_icmpv6(packet.ipv6[40:], packet.header.src, packet.header.dst)
        self.assertEqual(msg, ipv6.EchoReply(3, 4, b"hi"))

    def test_local_echo_bounded(self) -> None:
        """
        An echo request to the server from an unverified source: above max-payload it is
        dropped; otherwise the reply is no larger than the request, and the source's
        forward-rate bucket bounds how many it gets.
        """
        alice = self.peer("192.0.2.45")
        a = teredo(("192.0.2.45", 40000))
        alice.send(ipv6.icmpv6_packet(a, server_link_local(PRIMARY), ipv6.EchoRequest(3, 4, b"x" * 200)))
        self.net.flush()
        self.assertEqual(alice.received, [])
        self.assertDropped("oversized")
        request = ipv6.icmpv6_packet(a, server_link_local(PRIMARY), ipv6.EchoRequest(3, 4, b"x" * 80))
        for _ in range(30):
            alice.send(request)
        self.net.flush()
        self.assertEqual(len(alice.received), 20)
        self.assertTrue(all(len(data) <= len(request) for data, _ in alice.received))
        self.assertDropped("rate-limited-forward", 10)

    def test_forward_rate_limit(self) -> None:
        alice, bob = self.peer("192.0.2.45"), self.peer("198.51.100.20", 6000)
        bubble = ipv6.bubble(teredo(("192.0.2.45", 40000)), teredo(("198.51.100.20", 6000)))
        for _ in range(30):
            alice.send(bubble)
        self.net.flush()
        self.assertEqual(len(bob.received), 20)
        self.assertDropped("rate-limited-forward", 10)


def secure_rs(client_id: bytes, secret: bytes, nonce: bytes = b"SECURE!!", tamper: bool = False) -> bytes:
    """
    An RS with an authentication indicator computed as RFC 4380 section 5.2.2 says.
    """
    from teredonode.security import teredo_auth_value

    packet = ipv6.icmpv6_packet(CLIENT_LINK_LOCAL_RESTRICTED, ipv6.ALL_ROUTERS, ipv6.RouterSolicitation(), 255)
    value = teredo_auth_value(secret, nonce, 0, b"", packet)
    if tamper:
        value = bytes([value[0] ^ 1]) + value[1:]
    return encode_payload(packet, AuthIndicator(nonce, client_id, value, 0))


class SecureQualificationTests(ServerTestCase):
    """
    SV-IN-4 and SV-RA-08: secure qualification with HMAC-SHA1 shared secrets.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.net = FakeInternet(self.clock)
        self.host = self.net.host(PRIMARY, SECONDARY)
        self.tun = FakeTunDevice("teredo-srv")
        self.server = self.makeServer(
            secure=True,
            clients=(("alice", "correct horse", None), ("old", "battery", 1_000_100.0)),
            rs_initial=10,
        )

    def verify(self, data: bytes, secret: bytes) -> tuple[int, bool]:
        from teredonode.security import auth_matches

        packet = classify(data)
        auth = packet.auth
        assert auth is not None and packet.origin is not None
        return auth.confirmation, auth_matches(
            secret, auth.auth_value, auth.nonce, auth.confirmation, packet.origin.to_bytes(), packet.ipv6
        )

    def test_valid(self) -> None:
        client = self.peer("192.0.2.45")
        client.send(secure_rs(b"alice", b"correct horse"))
        self.net.flush()
        [(data, _)] = client.received
        packet = classify(data)
        assert packet.auth is not None
        self.assertEqual(packet.auth.client_id, b"alice")
        self.assertEqual(packet.auth.nonce, b"SECURE!!")
        self.assertEqual(self.verify(data, b"correct horse"), (0, True))

    def test_wrong_value_or_missing(self) -> None:
        client = self.peer("192.0.2.45")
        client.send(secure_rs(b"alice", b"correct horse", tamper=True))
        client.send(secure_rs(b"alice", b"wrong secret"))
        client.send(rs())  # an identifier-less auth indicator
        client.send(rs(nonce=None))
        self.net.flush()
        self.assertEqual(client.received, [])
        self.assertDropped("auth-failed", 2)
        self.assertDropped("auth-required", 2)

    def test_unknown_identifier_dropped(self) -> None:
        """
        An unknown client identifier gets nothing (no prefix, no reflected RA).
        """
        client = self.peer("192.0.2.45")
        client.send(secure_rs(b"mallory", b"whatever"))
        self.net.flush()
        self.assertEqual(client.received, [])
        self.assertDropped("auth-failed")
        self.assertEqual(self.server.status()["counters"]["ra"], 0)

    def test_unknown_identifier_gets_confirmation_when_accepted(self) -> None:
        """
        accept-unknown-clients = true: RFC 4380's behaviour, an RA with a non-zero
        confirmation and no authentication value.
        """
        self.remakeServer(secure=True, clients=(("alice", "x", None),), accept_unknown_clients=True)
        client = self.peer("192.0.2.45")
        client.send(secure_rs(b"mallory", b"whatever"))
        self.net.flush()
        [(data, _)] = client.received
        auth = classify(data).auth
        assert auth is not None
        self.assertNotEqual(auth.confirmation, 0)
        self.assertEqual(auth.auth_value, b"")

    def test_expired_identifier(self) -> None:
        """
        Before expiry: confirmation 0; after: still authenticated, confirmation non-zero.
        """
        client = self.peer("192.0.2.45")
        client.send(secure_rs(b"old", b"battery"))
        self.net.flush()
        self.assertEqual(self.verify(client.received[-1][0], b"battery"), (0, True))
        self.clock.advance(200)
        client.send(secure_rs(b"old", b"battery", nonce=b"SECOND!!"))
        self.net.flush()
        self.assertEqual(self.verify(client.received[-1][0], b"battery"), (1, True))
