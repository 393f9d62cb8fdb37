"""
Every datagram is accounted for, on the in-memory network: the server and the relay take
hostile datagrams (Hypothesis: mutated Teredo payloads, bubbles and echo between chosen
addresses, from chosen senders) and their status must balance -- inputs (UDP received plus
packets read from the TUN) equal drops by reason plus the other outcomes
(L{teredonode.lab.fuzzrun.account}, the same check the lab fuzzing in tests/attack/test_fuzz.py
applies to real nodes).
"""

from __future__ import annotations

from typing import Callable

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from teredonode.lab.fuzzrun import account
from teredonode.testing import FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import CLIENT_LINK_LOCAL_CONE, server_link_local
from teredonode.wire.teredo import OriginIndication, encode_payload
from tests import strategies
from tests.protocol.test_relay import FAKE_CLIENT, PRIMARY, RELAY_IP, V6HOST, RelayTestCase, teredo
from tests.protocol.test_server import ServerTestCase

#: Senders: a public client endpoint (Teredo sources may embed it), another public host, a
#: private address, and the server's own address and port.
SENDERS = [FAKE_CLIENT, FAKE_CLIENT, ("198.51.100.9", 5000), ("10.0.0.9", 6000), (PRIMARY, 3544)]
ADDRESSES = [
    teredo(PRIMARY, *FAKE_CLIENT),
    teredo(PRIMARY, "198.51.100.9", 5000),
    teredo(PRIMARY, "10.0.0.9", 6000),
    teredo("10.1.1.1", *FAKE_CLIENT),
    V6HOST,
    server_link_local(PRIMARY),
    CLIENT_LINK_LOCAL_CONE,
    ipv6.ALL_ROUTERS,
    ipv6.ALL_NODES,
]


@st.composite
def aimed_datagram(draw):
    """
    A bubble, an echo request or reply, or an RS between addresses the roles care about,
    maybe with an origin indication; or a mutated payload (L{strategies.teredo_datagram}).
    """
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(strategies.teredo_datagram())
    # The public client's own address, half the time: the source that passes the checks.
    src = draw(st.just(ADDRESSES[0]) | st.sampled_from(ADDRESSES))
    dst = draw(st.sampled_from(ADDRESSES))
    if kind == 1:
        packet = ipv6.bubble(src, dst)
    elif kind == 2:
        packet = ipv6.icmpv6_packet(src, dst, ipv6.EchoRequest(1, 1, draw(st.binary(max_size=100))))
    elif kind == 3:
        packet = ipv6.icmpv6_packet(src, dst, ipv6.EchoReply(1, 1, draw(st.binary(max_size=8))))
    else:
        packet = ipv6.icmpv6_packet(src, ipv6.ALL_ROUTERS, ipv6.RouterSolicitation(), draw(st.sampled_from([255, 64])))
    origin = draw(st.none() | st.just(OriginIndication(*FAKE_CLIENT)))
    return encode_payload(packet, None, origin, draw(strategies.trailer_bytes))


datagrams = st.lists(st.tuples(st.sampled_from(SENDERS), aimed_datagram()), min_size=1, max_size=30)


def _counting(tun: FakeTunDevice) -> Callable[[], int]:
    """
    Count the packets handed to the role through C{tun} from now on (the kernel's
    C{tx_packets}); the result reads the count.
    """
    start = tun.delivered
    return lambda: tun.delivered - start


class ServerAccountingTests(ServerTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.reads = _counting(self.tun)

    @settings(max_examples=100, deadline=None)
    @given(datagrams, st.floats(0, 3))
    def test_balanced(self, batch, pause: float) -> None:
        """
        received + TUN reads == drops + rs + forwarded + forwarded-ipv6 + echo-replies.
        """
        for sender, data in batch:
            self.net.inject(sender, (PRIMARY, 3544), data)
        self.net.flush()
        self.clock.advance(pause)
        result = account("server", {"server": self.server.status()}, self.reads())
        self.assertTrue(result.balanced, result)


class RelayAccountingTests(RelayTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.reads = _counting(self.tun)
        # v6host writes to the public client: the relay creates its entry, queues and
        # bubbles, so the fuzzed answers from that client reach the peer logic.
        self.tun.inject(ipv6.icmpv6_packet(V6HOST, ADDRESSES[0], ipv6.EchoRequest(9, 9, b"hello")))
        self.settle()

    @settings(max_examples=100, deadline=None)
    @given(datagrams, st.floats(0, 3))
    def test_balanced(self, batch, pause: float) -> None:
        """
        received + TUN reads == drops + delivered + bubbles-received + echo-tests-ok + sent
        + packets still queued, whatever the clock does to the queues.
        """
        for sender, data in batch:
            self.net.inject(sender, (RELAY_IP, 3544), data)
        self.settle()
        self.advance(pause)
        result = account("relay", {"relay": self.relay.status()}, self.reads())
        self.assertTrue(result.balanced, result)
