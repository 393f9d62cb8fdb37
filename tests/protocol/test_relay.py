"""
The relay role on the in-memory network (requirements digest section 3.3: RL-01..04,
RL-TX-01..08, RL-RX-01..07), against our server and our client behind NATs, plus bare
UDP endpoints playing clients and attackers.  The IPv6 side is L{IPv6Side}: 2001::/32
routed to the relay's TUN, v6host answering echo requests.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from teredonode.config import RelaySettings, parse_config
from teredonode.interfaces import IPeerObserver, ITeredoRole
from teredonode.metrics import render_metrics
from teredonode.roles import relay as relay_module
from teredonode.roles.relay import TeredoRelay, servedBy
from teredonode.status import StaticStatus
from teredonode.testing import FakeIPv6Network, FakeNetworkConfigurator, FakeTunDevice
from teredonode.wire import ipv6
from teredonode.wire.address import GLOBAL_PREFIX
from teredonode.wire.teredo import OriginIndication, classify
from tests.protocol.tunnelroles import UnnumberedTestBed, UnnumberedTunnelBehaviour
# Re-exported: the other relay test modules take them from here.
from tests.protocol.tunnelroles import (
    FAKE_CLIENT as FAKE_CLIENT,
    PRIMARY as PRIMARY,
    SECONDARY as SECONDARY,
    fakeNetconfig as fakeNetconfig,
    fakeTun as fakeTun,
    withFakes as withFakes,
    teredo as teredo,
)
from tests.protocol.test_client import echo, raw

RELAY_IP = "203.0.113.20"
V6HOST = ipaddress.IPv6Address("2001:db8::30").packed


class IPv6Side(FakeIPv6Network):
    """
    The native IPv6 network between our server's TUN, the relay's TUN and v6host:
    2001::/32 is routed to the relay; v6host answers echo requests when C{answer} is set.
    """

    def __init__(self, relayTun: FakeTunDevice, *others: FakeTunDevice) -> None:
        super().__init__(relayTun, *others)
        self.relayTun = relayTun
        self.received: list[bytes] = []
        self.answer = True

    def route(self, packet: bytes) -> None:
        dst = packet[24:40]
        if dst[:4] == GLOBAL_PREFIX:
            self.relayTun.inject(packet)
        elif dst == V6HOST:
            self.received.append(packet)
            reply = self.echoReply(packet) if self.answer else None
            if reply is not None:
                self.relayTun.inject(reply)


class RelayTestCase(UnnumberedTestBed):
    def setUp(self) -> None:
        super().setUp()
        self.relay = self.makeRelay(**self.roleSettings)
        self.tun = fakeTun(self.relay)
        self.side = IPv6Side(self.tun, self.serverTun)

    def makeRelayOn(self, ip: str, rngSeed: int = 1, **overrides: Any) -> TeredoRelay:
        """
        A started relay on the public IPv4 address C{ip}, its settings' defaults overridden.
        """
        relay = withFakes("teredo-relay", lambda tun, conf: TeredoRelay(
            RelaySettings(**overrides), self.net.host(ip), tun, conf,
            randbytes=random.Random(rngSeed).randbytes,
        ))
        relay.privilegedStartService()
        relay.startService()
        self.addCleanup(relay.stopService)
        return relay

    def makeRelay(self, **overrides: Any) -> TeredoRelay:
        """
        The relay under test, at L{RELAY_IP}.
        """
        return self.makeRelayOn(RELAY_IP, 7, **overrides)

    # The hooks of L{UnnumberedTunnelBehaviour}.

    @property
    def role(self) -> TeredoRelay:
        return self.relay

    @property
    def roleEndpoint(self) -> tuple[str, int]:
        return (RELAY_IP, 3544)

    @property
    def hostAddress(self) -> bytes:
        return V6HOST

    @property
    def ipv6Network(self) -> IPv6Side:
        return self.side

    @property
    def hostReceived(self) -> list[bytes]:
        return self.side.received

    def silenceHost(self) -> None:
        self.side.answer = False

    def makeRole(self, ip: str, **overrides: Any) -> TeredoRelay:
        return self.makeRelayOn(ip, **overrides)


class ServiceTests(RelayTestCase):
    def test_startConfiguresRelay(self) -> None:
        """
        RL-01, RL-03: the TUN is up with MTU 1280, forwarding is on, UDP 3544 is bound (the
        route, the status's drop reasons and stopping: test_statusAndStop of
        L{RelayTunnelTests}).
        """
        conf = fakeNetconfig(self.relay)
        self.assertEqual(conf.links["teredo-relay"].mtu, 1280)
        self.assertTrue(conf.forwarding)
        status = self.relay.status()
        self.assertEqual(status["local"], "0.0.0.0:3544")
        self.assertTrue(status["bubble-source"].startswith("fe80::"))

    def test_makeRoleAndConfig(self) -> None:
        """
        The production wiring, and the bounds' defaults (1 M peers, LRU; 1280 bytes queued).
        """
        config = parse_config("[relay]\nenabled = true\n", "x.toml", None, None)
        settings = config.roles["relay"]
        assert isinstance(settings, RelaySettings)
        self.assertEqual((settings.max_peers, settings.peer_queue_bytes, settings.icmp_rate, settings.serve),
                         (1_048_576, 1280, 10.0, ("2000::/3",)))
        role = relay_module.makeRole(settings, Clock())
        self.assertTrue(verifyObject(ITeredoRole, role))
        self.assertEqual(role.roleName, "relay")


class EndToEndTests(RelayTestCase):
    def test_ourClientReachesV6Host(self) -> None:
        """
        Our client's echo test goes through our server to v6host; the reply is routed to the
        relay, which bubbles the client (through its server and directly), gets its answer,
        releases the reply; the client adopts the relay and its queued packet flows through
        it; v6host's answer comes back through the relay.  RL-TX-03/05/06, RL-RX-03/04/05.
        """
        client = self.makeClient()
        caddr = raw(client.address)
        ping = echo(caddr, V6HOST, b"hello")
        fakeTun(client).inject(ping)
        self.advance(1)
        self.assertIn(ping, self.side.received)
        replies = [p for p in fakeTun(client).written if p[40] == ipv6.ICMP_ECHO_REPLY]
        self.assertEqual([r[48:] for r in replies], [b"hello"])
        peer = client.tunnel.peers.get(V6HOST)
        assert peer is not None
        self.assertEqual(peer.mapping, (RELAY_IP, 3544))
        counters = self.counters()
        self.assertGreaterEqual(counters["bubbles-indirect"], 1)
        self.assertGreaterEqual(counters["released"], 1)
        self.assertGreaterEqual(counters["delivered"], 1)
        self.assertEqual(self.drops(), {})
        # From now on, straight through the relay, nothing through the server.
        forwarded = self.server.status()["counters"]["forwarded"]
        fakeTun(client).inject(echo(caddr, V6HOST, b"again"))
        self.settle()
        self.assertEqual(self.side.received[-1][48:], b"again")
        self.assertEqual(self.server.status()["counters"]["forwarded"], forwarded)

    def test_v6HostReachesOurClient(self) -> None:
        """
        v6host first: the relay queues its packet and bubbles; the client answers, gets
        the packet from a native source, verifies that relay by its own echo test (through
        our server, answered through the relay) and delivers it.
        """
        client = self.makeClient("address-restricted", seed=2)
        caddr = raw(client.address)
        hello = echo(V6HOST, caddr, b"from v6host")
        self.tun.inject(hello)
        self.advance(1)
        self.assertIn(hello, fakeTun(client).written)
        known = self.relay.tunnel.peers.get(caddr)
        assert known is not None
        self.assertEqual(known.mapping, client.mapping)

    def test_echoRepliesOfDirectTestsFlowBack(self) -> None:
        """
        A client's direct connectivity test: the echo reply reaches it from the relay's
        endpoint, carrying its nonce, which is how it discovers the relay.
        """
        endpoint, udp, address = self.fakeClient()
        request = echo(address, V6HOST, b"nonce-64", ident=9)
        # As our server would forward it to the IPv6 side.
        self.side.route(request)
        self.settle()
        # The relay bubbled the client first (indirectly through its server: an origin).
        [(bubbled, src)] = [(d, s) for d, s in endpoint.received if s[0] == PRIMARY]
        packet = classify(bubbled)
        self.assertTrue(packet.is_bubble)
        self.assertEqual(packet.origin, OriginIndication(RELAY_IP, 3544))
        udp.write(ipv6.bubble(address, packet.header.src), (RELAY_IP, 3544))
        self.settle()
        [reply] = [d for d, s in endpoint.received if s == (RELAY_IP, 3544) and d[6] == ipv6.NH_ICMPV6]
        self.assertEqual(reply[8:24], V6HOST)
        self.assertEqual(reply[48:], b"nonce-64")


@implementer(IPeerObserver)
class RecordingObserver:
    """
    Records what the tunnel tells a fast path: (address, state, has a retry timer).
    """

    def __init__(self) -> None:
        self.changes: list[tuple[bytes, str, bool]] = []
        self.sweeps = 0

    def peerChanged(self, peer: Any, state: str) -> None:
        self.changes.append((peer.address, state, peer.timer is not None))

    def sweeping(self) -> None:
        self.sweeps += 1


class FakeFastPath(RecordingObserver):
    """
    A started fast path as L{teredonode.fastpath.relay.start} returns it.
    """

    interfaces = ["eth0", "teredo-relay"]
    segments = True
    native = True

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def counts(self) -> dict[str, int]:
        return {
            "received": 5, "delivered": 4, "sent": 3, "passed-udp": 2, "passed-tun": 1, "super-packets": 1,
            "from-native": 1,
        }

    def start(self, settings: Any, tun: str, port: int) -> bool:
        self.started = (tun, port)
        if settings.fast_path == "on":
            from teredonode.fastpath.program import FastPathUnavailable

            raise FastPathUnavailable("no BPF here")
        return True

    def close(self) -> None:
        self.closed = True


class FastPathControlTests(RelayTestCase):
    """
    The relay as the fast path's control plane: the tunnel tells it every peer state change
    and sweep; its counters show in the relay's; C{fast-path = "on"} without it refuses.
    """

    def test_observerSeesTrustAndSweeps(self) -> None:
        observer = RecordingObserver()
        self.relay.tunnel.peerObserver = observer
        client = self.makeClient("address-restricted", seed=2)
        caddr = raw(client.address)
        self.tun.inject(echo(V6HOST, caddr, b"from v6host"))
        self.advance(1)
        states = [(state, timer) for address, state, timer in observer.changes if address == caddr]
        self.assertEqual(states[0], ("probing", True))
        self.assertIn(("trusted", False), states)
        self.advance(11)
        self.assertGreaterEqual(observer.sweeps, 1)

    def makeWithFastPath(self, fast: Any, mode: str = "auto") -> tuple[TeredoRelay, list[Any]]:
        calls: list[Any] = []

        def loader(settings: Any, reactor: Any, peers: Any) -> Any:
            calls.append((settings, peers))
            return fast

        relay = TeredoRelay(
            RelaySettings(fast_path=mode), self.net.host("203.0.113.21"), FakeTunDevice("teredo-fast"),
            FakeNetworkConfigurator(), randbytes=random.Random(3).randbytes, fastpath=loader,
        )
        return relay, calls

    def test_startedAndMerged(self) -> None:
        fast = FakeFastPath()
        relay, calls = self.makeWithFastPath(fast)
        relay.privilegedStartService()
        relay.startService()
        self.assertEqual(fast.started, ("teredo-fast", 3544))
        self.assertIs(calls[0][1], relay.tunnel.peers)
        self.assertIs(relay.tunnel.peerObserver, fast)
        status = relay.status()
        self.assertEqual(
            status["fast-path"],
            {
                "interfaces": ["eth0", "teredo-relay"], "carried": 7, "from-tun": 2, "from-native": 1,
                "passed-to-python": 3, "super-packets": 1, "tunnel-offload": True, "native-xdp": True,
            },
        )
        self.assertEqual((status["counters"]["received"], status["counters"]["delivered"]), (5, 4))
        self.assertEqual(status["counters"]["sent"], 3)
        relay.stopService()
        self.assertTrue(fast.closed)
        self.assertIsNone(relay.status()["fast-path"])

    def test_onRefusesToStart(self) -> None:
        relay, _ = self.makeWithFastPath(FakeFastPath(), "on")
        with self.assertRaises(SystemExit) as caught:
            relay.privilegedStartService()
        self.assertIn("no BPF here", str(caught.exception))
        relay.stopService()


class BatchingHost:
    """
    A fake host whose UDP ports offer C{enableBatching}, as L{teredonode.udpbatch}'s real
    ports do, answering C{reason} and recording the calls; its ports count C{reads} and
    C{datagrams} as a batching port does (C{port} is the last one opened).
    """

    def __init__(self, host: Any, reason: str | None) -> None:
        self.host = host
        self.reason = reason
        self.calls = 0
        self.port: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.host, name)

    def listenUDP(self, *args: Any, **kwargs: Any) -> Any:
        port = self.host.listenUDP(*args, **kwargs)

        def enableBatching() -> str | None:
            self.calls += 1
            return self.reason

        port.enableBatching = enableBatching
        port.reads = port.datagrams = 0
        self.port = port
        return port


class ReceiveBatchingTests(RelayTestCase):
    """
    The relay batches its reads (UDP GRO) only while no kernel fast path reads first.
    """

    def start(self, reason: str | None, fast: Any = None) -> tuple[TeredoRelay, BatchingHost]:
        host = BatchingHost(self.net.host("203.0.113.22"), reason)
        relay = TeredoRelay(
            RelaySettings(fast_path="off" if fast is None else "auto"), host, FakeTunDevice("teredo-gro"),
            FakeNetworkConfigurator(), randbytes=random.Random(3).randbytes,
            fastpath=None if fast is None else (lambda settings, reactor, peers: fast),
        )
        relay.privilegedStartService()
        relay.startService()
        self.addCleanup(relay.stopService)
        return relay, host

    def test_onWithoutFastPath(self) -> None:
        """
        Batching on: the status shows it with the port's reads and datagrams, as they grow.
        """
        relay, host = self.start(None)
        self.assertEqual(host.calls, 1)
        block = relay.status()["receive-batching"]
        self.assertEqual(block, {"on": True, "reason": None, "reads": 0, "datagrams": 0})
        host.port.reads, host.port.datagrams = 3, 41
        block = relay.status()["receive-batching"]
        self.assertEqual(block, {"on": True, "reason": None, "reads": 3, "datagrams": 41})
        text = render_metrics(StaticStatus({"relay": relay.status()})).decode()
        for line in ("on 1.0", "reads 3.0", "datagrams 41.0"):
            self.assertRegex(text, rf"(?m)^teredonode_relay_receive_batching_{line}$")
        self.assertNotIn("teredonode_relay_receive_batching_info", text)

    def test_refusedIsHarmless(self) -> None:
        """
        A kernel refusing the option leaves the relay running as before; the status says
        why batching is off, and counts nothing.
        """
        relay, host = self.start("Protocol not available")
        self.assertEqual(host.calls, 1)
        self.assertEqual(relay.state, relay.status()["state"])
        host.port.reads = 5  # not a batching port's reads: not shown
        block = relay.status()["receive-batching"]
        self.assertEqual(block, {"on": False, "reason": "Protocol not available", "reads": 0, "datagrams": 0})
        text = render_metrics(StaticStatus({"relay": relay.status()})).decode()
        self.assertRegex(text, r"(?m)^teredonode_relay_receive_batching_on 0\.0$")
        self.assertIn('teredonode_relay_receive_batching_info{reason="Protocol not available"} 1.0', text)

    def test_offWithFastPath(self) -> None:
        relay, host = self.start(None, FakeFastPath())
        self.assertEqual(host.calls, 0)
        block = relay.status()["receive-batching"]
        self.assertEqual(block["reason"], "the kernel fast path reads first")
        self.assertFalse(block["on"])

    def test_offOnPortsThatCannotBatch(self) -> None:
        """
        The in-memory network's ports read one datagram at a time: off, with the reason.
        """
        block = self.relay.status()["receive-batching"]
        self.assertEqual(block, {"on": False, "reason": "this port cannot batch", "reads": 0, "datagrams": 0})

    def test_stopped(self) -> None:
        relay, host = self.start(None)
        host.port.reads, host.port.datagrams = 1, 2
        relay.stopService()
        self.assertEqual(relay.status()["receive-batching"], {"on": False, "reason": "stopped", "reads": 0, "datagrams": 0})


class RelayTunnelTests(UnnumberedTunnelBehaviour, RelayTestCase):
    """
    What the relay shares with the host-specific relay (L{tests.protocol.tunnelroles}).
    """

    forwardsUnsolicited = True


class ReceptionTests(RelayTestCase):
    def test_servedRangeConfigurable(self) -> None:
        """
        RL-RX-07: an operator may narrow the served range (here to 2001:db8::/48).
        """
        relay = TeredoRelay(
            RelaySettings(serve=("2001:db8::/48",)), self.net.host("203.0.113.21"),
            FakeTunDevice("teredo-relay"), FakeNetworkConfigurator(),
        )
        self.assertTrue(relay.serves(V6HOST))
        self.assertFalse(relay.serves(ipaddress.IPv6Address("2001:db8:1::1").packed))

class ServedByTests(SynchronousTestCase):
    def test_default(self) -> None:
        serves = servedBy(("2000::/3",), GLOBAL_PREFIX)
        yes = ("2001:db8::1", "2a00::1", "3fff::1", "2002:c000:201::1")
        no = ("2001::1", "2001:0:ffff::1", "fd00::1", "fe80::1", "ff02::1", "::1", "4000::1")
        for text in yes:
            self.assertTrue(serves(ipaddress.IPv6Address(text).packed), text)
        for text in no:
            self.assertFalse(serves(ipaddress.IPv6Address(text).packed), text)

    def test_longerPrefixes(self) -> None:
        serves = servedBy(("2001:db8::/32", "2a00::/12"), GLOBAL_PREFIX)
        self.assertTrue(serves(ipaddress.IPv6Address("2001:db8:5::1").packed))
        self.assertTrue(serves(ipaddress.IPv6Address("2a0f::1").packed))
        self.assertFalse(serves(ipaddress.IPv6Address("2a10::1").packed))
        self.assertFalse(serves(ipaddress.IPv6Address("2001:0:1::1").packed))
        everything = servedBy(("::/0",), GLOBAL_PREFIX)
        self.assertFalse(everything(ipaddress.IPv6Address("ff02::1").packed))
        self.assertFalse(everything(ipaddress.IPv6Address("2001::1").packed))
