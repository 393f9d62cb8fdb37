"""
The relay and the host-specific relay serving clients behind symmetric NATs (RFC 6081
section 5.2 applied to an unnumbered interface: X-SNS-03, X-SNS-08, X-SNS-09, X-SNS-10).

A client behind a symmetric NAT answers the relay's indirect bubble from a mapping of its
own for the relay, not the one its Teredo address embeds.  The relay accepts that mapping
only when the answer proves it received the relay's indirect bubble: the Nonce Trailer
echoes the bubble's nonce (an RFC 6081 client), or the answer's destination is the
bubble's source, whose last 4 bytes are that nonce (a plain RFC 4380 client such as
Miredo's answers there).  Everything else from a mapping a source does not embed is
dropped, creates nothing and reaches nobody.

Every test here is a mixin run twice: on the relay's test bed (v6host behind it) and on the
host-specific relay's (the host itself), which share the rule through the tunnel core.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from teredonode.config import ClientSettings
from teredonode.roles.client import TeredoClient
from teredonode.testing import FakeHost, FakeNetworkConfigurator, FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import mapping_of
from teredonode.wire.teredo import NonceTrailer, classify, encode_trailers
from tests.protocol.tunnelroles import UnnumberedTestBed, fakeTun, withFakes
from tests.protocol.test_client import Endpoint, echo, raw
from tests.protocol.test_hostrelay import HostRelayTestCase
from tests.protocol.test_relay import FAKE_CLIENT, PRIMARY, SECONDARY, RelayTestCase

OTHER_PORT = 41000


def nonceTrailer(nonce: bytes) -> bytes:
    return encode_trailers((NonceTrailer(nonce),))


if TYPE_CHECKING:
    _Base = UnnumberedTestBed
else:
    _Base = object


class SymmetricNATBehaviour(_Base):
    """
    Mixed into an unnumbered role's test bed (L{UnnumberedTestBed}): helpers for its
    symmetric-NAT tests, whose C{hostAddress} plays v6host.
    """

    def makeSymmetricClient(self, seed: int = 1, **overrides: Any) -> TeredoClient:
        """
        Our client behind a (port-)symmetric NAT: a new external port per destination.
        """
        self._nats += 1
        nat = self.net.nat("symmetric", public=f"198.51.100.{self._nats}", rng=random.Random(seed))
        host = nat.host("10.0.0.2")
        rng = random.Random(seed)
        client = withFakes("teredo", lambda tun, conf: TeredoClient(
            ClientSettings(server=PRIMARY, secondary=SECONDARY, allow_symmetric=True, **overrides),
            host, tun, conf, rng=rng, randbytes=rng.randbytes,
        ))
        client.privilegedStartService()
        client.startService()
        self.addCleanup(client.stopService)
        self.settle()
        self.assertEqual((client.state, client.nat), ("qualified", "symmetric"))
        return client

    def pingThroughRelay(self, client: TeredoClient, count: int = 5) -> int:
        """
        C{count} echo requests from C{client} to v6host, one a second; how many replies the
        client's host got back.
        """
        tun = fakeTun(client)
        caddr = raw(client.address)
        replies = 0
        for i in range(count):
            before = len(tun.written)
            tun.inject(echo(caddr, self.hostAddress, b"ping %d" % i))
            self.advance(1)
            replies += sum(1 for p in tun.written[before:] if p[8:24] == self.hostAddress and p[40] == ipv6.ICMP_ECHO_REPLY)
        return replies

    def bubbledFakeClient(self) -> tuple[Endpoint, Any, bytes, bytes, Any]:
        """
        A bare public endpoint (a plain RFC 4380 client) with a packet from v6host waiting at
        the relay: the relay has bubbled it.  Returns the endpoint, its socket, its Teredo
        address, the relay's indirect bubble and a second socket on another port of the same
        address (its NAT's mapping toward the relay).
        """
        endpoint, udp, address = self.fakeClient()
        other = Endpoint()
        otherHost = self.net.owner(FAKE_CLIENT[0])
        assert isinstance(otherHost, FakeHost)
        otherUdp = otherHost.listenUDP(OTHER_PORT, other, interface=FAKE_CLIENT[0])
        self.tun.inject(echo(self.hostAddress, address, b"waiting"))
        self.settle()
        indirect = [d for d, s in endpoint.received if s == (PRIMARY, 3544)]
        self.assertEqual(len(indirect), 1)
        del endpoint.received[:]
        return endpoint, udp, address, indirect[0], (other, otherUdp)

    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self.role.status()["counters"]
        return counters


class ServesSymmetricNATBehaviour(SymmetricNATBehaviour):
    def test_ourSymmetricClientReachesV6Host(self) -> None:
        """
        Our client behind a symmetric NAT pings v6host through the relay, both ways, 5/5:
        the relay learns the client's mapping toward it from the client's answer, which
        echoes the nonce of the relay's indirect bubble (X-SNS-08, X-SNS-10).
        """
        client = self.makeSymmetricClient()
        self.assertEqual(self.pingThroughRelay(client), 5)
        self.assertEqual(len([p for p in self.hostReceived if p[48:52] == b"ping"]), 5)
        self.assertEqual(self.counters()["sns-learned"], 1)
        peer = self.role.tunnel.peers.get(raw(client.address))
        assert peer is not None and peer.mapping is not None
        self.assertTrue(peer.trusted)
        self.assertNotEqual(peer.mapping, mapping_of(raw(client.address)))
        self.assertIsNone(peer.nonce_sent)

    def test_ourClientEchoesBothProofs(self) -> None:
        """
        Our client's answer to the relay's indirect bubble carries both proofs: the Nonce
        Trailer (X-SNS-04) and the bubble's source as destination.
        """
        client = self.makeSymmetricClient()
        indirect: list[bytes] = []
        answers: list[bytes] = []

        def watch(d: Any) -> bool:
            packet = classify(d.data)
            if packet.is_bubble and d.src == (PRIMARY, 3544) and packet.origin == self.roleEndpoint:
                indirect.append(d.data)  # the relay's indirect bubble, forwarded by the server
            elif packet.is_bubble and d.dst == self.roleEndpoint:
                answers.append(d.data)
            return False

        self.net.addDropFilter(watch)
        self.pingThroughRelay(client, 1)
        self.assertGreaterEqual(len(indirect), 1)
        sent = classify(indirect[0])
        answer = classify(answers[0])
        self.assertEqual(answer.header.dst, sent.header.src)
        self.assertEqual(answer.trailers, sent.trailers)
        self.assertIsInstance(answer.trailers[0], NonceTrailer)

    def test_ourSymmetricClientWithoutExtension(self) -> None:
        """
        The same with the client's symmetric-nat-support off: its plain RFC 4380 answer goes
        to the source of the relay's indirect bubble, which carries the nonce, so it proves
        receipt as well.
        """
        client = self.makeSymmetricClient(symmetric_nat_support=False)
        self.assertEqual(self.pingThroughRelay(client), 5)
        self.assertEqual(self.counters()["sns-learned"], 1)

    def test_withoutTheRuleTheRelayDrops(self) -> None:
        """
        The failure the rule fixes: with the extension off on the relay's tunnel, the
        symmetric client's answers come from a mapping its address does not embed and are
        dropped as spoofed; not one ping gets through.
        """
        self.role.tunnel.symmetricNat = False
        client = self.makeSymmetricClient()
        self.assertEqual(self.pingThroughRelay(client), 0)
        self.assertGreater(self.role.status()["drops"]["mapping-mismatch"], 0)
        self.assertEqual(self.counters()["sns-learned"], 0)

    def test_indirectBubbleCarriesNonce(self) -> None:
        """
        X-SNS-03 on a relay: the indirect bubble has a Nonce Trailer, kept as the peer's Nonce
        Sent and written in the bubble's link-local source; each retry draws a new one.  The
        direct bubble has none (X-SNS-05) and comes from the plain bubble source.
        """
        endpoint, udp, address = self.fakeClient()
        self.tun.inject(echo(self.hostAddress, address, b"x"))
        self.settle()
        self.advance(2)
        indirect = [classify(d) for d, s in endpoint.received if s == (PRIMARY, 3544)]
        direct = [classify(d) for d, s in endpoint.received if s == self.roleEndpoint]
        self.assertEqual(len(indirect), 2)
        nonces = [p.trailers[0].nonce for p in indirect]  # type: ignore[union-attr]
        self.assertNotEqual(nonces[0], nonces[1])
        peer = self.role.tunnel.peers.get(address)
        assert peer is not None
        self.assertEqual(peer.nonce_sent, nonces[1])
        for packet, nonce in zip(indirect, nonces):
            self.assertEqual(packet.header.src[12:], nonce)
            self.assertTrue(ipv6.is_link_local(packet.header.src))
        for packet in direct:
            self.assertEqual(packet.trailers, ())
            self.assertEqual(packet.header.src, self.role.tunnel.bubbleSource)

    def test_plainClientAnswerToBubbleSource(self) -> None:
        """
        A plain RFC 4380 client (Miredo's answers an indirect bubble with a direct one whose
        destination is the indirect bubble's source) answering from another mapping: the
        relay learns that mapping, delivers the waiting packet there, and forwards what the
        client sends from it.
        """
        endpoint, udp, address, indirect, (other, otherUdp) = self.bubbledFakeClient()
        source = classify(indirect).header.src
        otherUdp.write(ipv6.bubble(address, source), self.roleEndpoint)
        self.settle()
        self.assertEqual(self.counters()["sns-learned"], 1)
        self.assertEqual([classify(d).ipv6[48:] for d, s in other.received], [b"waiting"])
        data = echo(address, self.hostAddress, b"up")
        otherUdp.write(data, self.roleEndpoint)
        self.settle()
        self.assertIn(data, self.hostReceived)

    def test_nonceTrailerAnswer(self) -> None:
        """
        An RFC 6081 client's answer: a Nonce Trailer echoing the relay's nonce, whatever its
        destination, proves the new mapping (X-SNS-08).
        """
        endpoint, udp, address, indirect, (other, otherUdp) = self.bubbledFakeClient()
        nonce = classify(indirect).trailers[0].nonce  # type: ignore[union-attr]
        assert self.role.tunnel.bubbleSource is not None
        otherUdp.write(ipv6.bubble(address, self.role.tunnel.bubbleSource) + nonceTrailer(nonce), self.roleEndpoint)
        self.settle()
        self.assertEqual(self.counters()["sns-learned"], 1)
        self.assertEqual(len(other.received), 1)


class DropRuleBehaviour(SymmetricNATBehaviour):
    """
    X-SNS-09 on a relay: a bubble from a mapping its source does not embed that does not
    prove the relay's last nonce is dropped (C{nonce-mismatch}), and changes nothing.
    """

    def assertDropped(self, answer: bytes, sender: Any, address: bytes) -> None:
        peer = self.role.tunnel.peers.get(address)
        assert peer is not None
        before = (peer.trusted, peer.mapping, peer.nonce_sent)
        sender.write(answer, self.roleEndpoint)
        self.settle()
        self.assertEqual(self.role.status()["drops"]["nonce-mismatch"], 1)
        self.assertEqual((peer.trusted, peer.mapping, peer.nonce_sent), before)
        self.assertEqual(self.counters()["sns-learned"], 0)
        self.assertEqual(self.counters()["sent"], 0)

    def test_wrongNonce(self) -> None:
        endpoint, udp, address, indirect, (other, otherUdp) = self.bubbledFakeClient()
        nonce = classify(indirect).trailers[0].nonce  # type: ignore[union-attr]
        wrong = bytes(b ^ 1 for b in nonce)
        source = self.role.tunnel.bubbleSource
        assert source is not None
        self.assertDropped(ipv6.bubble(address, source) + nonceTrailer(wrong), otherUdp, address)
        self.assertEqual(other.received, [])

    def test_wrongSourceEcho(self) -> None:
        endpoint, udp, address, indirect, (other, otherUdp) = self.bubbledFakeClient()
        source = bytearray(classify(indirect).header.src)
        source[15] ^= 1
        self.assertDropped(ipv6.bubble(address, bytes(source)), otherUdp, address)

    def test_noNonce(self) -> None:
        """
        A plain bubble to the relay's plain bubble source (what answering its direct bubble
        would give) proves nothing.
        """
        endpoint, udp, address, indirect, (other, otherUdp) = self.bubbledFakeClient()
        source = self.role.tunnel.bubbleSource
        assert source is not None
        self.assertDropped(ipv6.bubble(address, source), otherUdp, address)

    def test_staleNonce(self) -> None:
        """
        The nonce of an earlier indirect bubble, once a retry sent another, no longer counts
        (Nonce Sent is the last one's); the current one then does.
        """
        endpoint, udp, address, first, (other, otherUdp) = self.bubbledFakeClient()
        self.advance(2)
        second = [d for d, s in endpoint.received if s == (PRIMARY, 3544)]
        self.assertEqual(len(second), 1)
        stale = classify(first)
        self.assertDropped(
            ipv6.bubble(address, stale.header.src) + nonceTrailer(stale.trailers[0].nonce),  # type: ignore[union-attr]
            otherUdp, address,
        )
        current = classify(second[0])
        otherUdp.write(ipv6.bubble(address, current.header.src), self.roleEndpoint)
        self.settle()
        self.assertEqual(self.counters()["sns-learned"], 1)

    def test_dataPacketProvesNothing(self) -> None:
        """
        Only a bubble may prove a mapping: a data packet with the right Nonce Trailer from
        the other mapping is a spoofed source (C{mapping-mismatch}) and is not forwarded.
        """
        endpoint, udp, address, indirect, (other, otherUdp) = self.bubbledFakeClient()
        nonce = classify(indirect).trailers[0].nonce  # type: ignore[union-attr]
        data = echo(address, self.hostAddress, b"spoof")
        otherUdp.write(data + nonceTrailer(nonce), self.roleEndpoint)
        self.settle()
        self.assertEqual(self.role.status()["drops"]["mapping-mismatch"], 1)
        self.assertNotIn(data, self.hostReceived)
        peer = self.role.tunnel.peers.get(address)
        assert peer is not None
        self.assertFalse(peer.trusted)

    def test_replayedProofCannotMoveMapping(self) -> None:
        """
        A proof is spent once accepted: the same bubble replayed from a third endpoint (an
        attacker who saw it) does not move the mapping away from the client.
        """
        endpoint, udp, address, indirect, (other, otherUdp) = self.bubbledFakeClient()
        answer = ipv6.bubble(address, classify(indirect).header.src)
        otherUdp.write(answer, self.roleEndpoint)
        self.settle()
        self.net.inject((FAKE_CLIENT[0], 42000), self.roleEndpoint, answer)
        self.settle()
        peer = self.role.tunnel.peers.get(address)
        assert peer is not None
        self.assertEqual(peer.mapping, (FAKE_CLIENT[0], OTHER_PORT))
        self.assertEqual(self.role.status()["drops"]["mapping-mismatch"], 1)

    def test_trustedPeerNotRedirected(self) -> None:
        """
        A client trusted at its embedded mapping: an attacker elsewhere guessing the proof
        (no indirect bubble is outstanding) cannot move its traffic.
        """
        endpoint, udp, address = self.trustedFakeClient()
        source = self.role.tunnel.bubbleSource
        assert source is not None
        for guess in (b"\x00\x00\x00\x00", b"\x01\x02\x03\x04"):
            self.net.inject(
                ("192.0.2.66", 5000), self.roleEndpoint,
                ipv6.bubble(address, source[:12] + guess) + nonceTrailer(guess),
            )
        self.settle()
        peer = self.role.tunnel.peers.get(address)
        assert peer is not None
        self.assertEqual(peer.mapping, FAKE_CLIENT)
        self.assertEqual(self.role.status()["drops"]["mapping-mismatch"], 2)
        self.tun.inject(echo(self.hostAddress, address, b"still here"))
        self.settle()
        self.assertEqual(len(endpoint.received), 1)


class UnsolicitedBehaviour(SymmetricNATBehaviour):
    def test_unknownMappingCreatesNothing(self) -> None:
        """
        RL-RX-04 still holds: bubbles and data with any nonce from a mapping the source does
        not embed, for a client the relay never bubbled, create no entry and reach nobody.
        """
        address = self.fakeClient()[2]
        source = self.role.tunnel.bubbleSource
        assert source is not None
        for i in range(20):
            nonce = i.to_bytes(4, "big")
            spoof = ("192.0.2.66", 6000 + i)
            self.net.inject(spoof, self.roleEndpoint, ipv6.bubble(address, source[:12] + nonce) + nonceTrailer(nonce))
            self.net.inject(spoof, self.roleEndpoint, echo(address, self.hostAddress, b"data") + nonceTrailer(nonce))
        self.settle()
        self.assertEqual(len(self.role.tunnel.peers), 0)
        self.assertEqual(self.hostReceived, [])
        self.assertEqual(self.role.status()["drops"]["mapping-mismatch"], 40)
        self.assertEqual(self.counters()["sent"] + self.counters()["bubbles-indirect"], 0)


class RelayServesSymmetricNATTests(ServesSymmetricNATBehaviour, RelayTestCase):
    pass


class HostRelayServesSymmetricNATTests(ServesSymmetricNATBehaviour, HostRelayTestCase):
    """
    The host-specific relay shares the rule: a symmetric-NAT client reaches the host.
    """


class RelayDropRuleTests(DropRuleBehaviour, RelayTestCase):
    pass


class HostRelayDropRuleTests(DropRuleBehaviour, HostRelayTestCase):
    pass


class RelayUnsolicitedTests(UnsolicitedBehaviour, RelayTestCase):
    pass


class HostRelayUnsolicitedTests(UnsolicitedBehaviour, HostRelayTestCase):
    pass
