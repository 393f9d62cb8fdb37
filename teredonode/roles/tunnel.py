# -*- test-case-name: tests.protocol.test_client -*-
"""
The Teredo interface shared by the client, the relay and the host-specific relay.

RFC 4380 describes one algorithm three times: how a Teredo node decides where an IPv6
packet goes over UDP (section 5.2.4 for clients, 5.4.1 for relays), how it checks what
arrives (5.2.3, 5.4.2), how it punches holes with bubbles (5.2.6) and how it finds the
relay of a native IPv6 host (the direct IPv6 connectivity test, 5.2.9).  L{TeredoTunnel}
is that algorithm once, over a L{teredonode.peers.PeerList}; what differs between the roles
is a handful of yes/no answers collected in a L{TunnelPolicy}:

  - may a native IPv6 destination be reached (by an echo test through our server)?
  - may a packet from a native IPv6 source be accepted once an echo test proves it?
  - may a packet from an unknown Teredo peer create an entry (section 5.2.3 case 3), or
    only refresh one we created (Miredo's relay rule: no state from unsolicited traffic)?
  - are direct bubbles sent as well as indirect ones (section 5.2.4 case 5)?
  - is an entry whose bubbles went unanswered removed (relays, section 5.4.1 case 3)?
  - is an idle path refreshed with direct solicitation bubbles (RFC 6081 section 5.7,
    Server Load Reduction, clients only)?

A relay's interface is unnumbered: it has no Teredo address and stands for a set of native
addresses instead (the network it serves, or the host's own addresses for a host-specific
relay).  The owner then passes C{serves}, which replaces "is it our address?" on both sides
(sources from the host, destinations from peers), and names the bubble source with
L{TeredoTunnel.setUnnumbered}.

The owner (the client role today) does the I/O: it hands in C{send(data, endpoint)} and
C{deliver(packet)} (toward the host's stack), feeds packets with L{TeredoTunnel.fromHost},
L{TeredoTunnel.fromPeer} and L{TeredoTunnel.fromServer}, and sets the identity (own address,
own server) with L{TeredoTunnel.setIdentity}.

Nothing here logs per packet: every decision is a counter in C{counters} or a drop in
C{drops} under a reason from L{DROP_REASONS}.

Peer states.  Each entry of the peer list is in one state, read from its fields by
L{peerState}; L{TeredoTunnel.setState} is the only code that changes one, and refuses
(L{PeerStateError}) any change that is not a row of this table (L{PEER_TRANSITIONS}):

  ==================================  =================  =====================================
  from                                to                 when (RFC 4380 section)
  ==================================  =================  =====================================
  (none)                              untrusted          created: a packet to or from an
                                                         unknown peer
  untrusted, local                    probing            an exchange starts: bubbles (5.2.4
                                                         cases 4/5; a local peer's, case 3),
                                                         an echo test (5.2.4 case 2, 5.2.3
                                                         case 6)
  probing                             probing            a retry; or local discovery hears the
                                                         peer meanwhile (it becomes local too)
  probing                             untrusted, local   the retries ran out (5.2.6); relays
                                                         then remove the entry (5.4.1 case 3)
  untrusted, probing, local           trusted            the mapping is proven: an echo reply
                                                         with our nonce (5.2.3 case 2), a
                                                         packet from the mapping its address
                                                         embeds (case 3) or from its LAN
                                                         endpoint (case 5); or a trusted
                                                         entry the sweep forgot is restored,
                                                         to be solicited (RFC 6081 5.7)
  trusted                             trusted            heard or proven again; an exchange
                                                         starts, retries or ends on a trusted
                                                         entry (its relay checked again, for
                                                         a native peer, 5.2.9; an idle path
                                                         solicited, RFC 6081 5.7.4.1)
  untrusted, local, trusted           local              a discovery bubble from it (5.2.8,
                                                         5.2.3 case 4); a trusted entry heard
                                                         at another endpoint is trusted no
                                                         more
  trusted                             probing            the same while an exchange runs;
                                                         or three solicitations went
                                                         unanswered (RFC 6081 5.7.2): bubbles
                                                         as for a peer never reached; or a
                                                         random-port peer (RFC 6081 5.4.4.5)
                                                         turned up at another mapping after
                                                         30 s of silence
  untrusted, probing, local, trusted  removed            evicted, expired, forgotten (identity
                                                         lost), or its probes failed (relays)
  ==================================  =================  =====================================

  - B{untrusted}: no mapping proven, no exchange running (new, or its probes failed);
  - B{probing}: not trusted, a bubble or echo exchange running (C{timer}), packets queued;
  - B{local}: learned by local discovery (5.2.8) at C{local_endpoint}, not yet proven there;
  - B{trusted}: C{mapping} proven; packets go straight to it while the entry is valid
    (heard within 30 s, 600 s for a local one); an exchange may still run, to re-prove a
    native peer's relay, without leaving this state.

The exchange's own data (nonce, attempts, bubble times) belongs to the probes, not to the
state.

Retries (sections 5.2.4 cases 2 and 5, 5.2.6, 5.2.9): one probe (a bubble pair or an echo
request) at once, then one every 2 s, up to 3 repetitions, each subject to the two MUST
NOTs of section 5.2.6 (L{teredonode.peers.Peer.may_bubble}); echo requests obey the same
limits, as Miredo's do.  When the repetitions run out the queued packets are dropped and
the host gets an ICMPv6 destination unreachable (code 3, address unreachable) per packet,
at most L{ICMP_ERRORS_PER_SECOND} a second.

Server Load Reduction (RFC 6081 section 5.7, X-SLR-01..05; clients): a packet for a trusted
peer with whom nothing was exchanged for 30 s is queued and, instead of the bubble pair,
the peer's known mapping gets a direct bubble with a Neighbor Discovery Option trailer
soliciting an answer (X-SLR-03), again every 2 s; the Count of Solicitations Transmitted
travels with the retry call.  The third one unanswered for 2 s, the exchange starts over as
for a peer never reached (X-SLR-04): the entry is no longer trusted and gets the RFC 4380
bubble pair.  [INFERRED] The fallback waits those 2 s instead of going out with the third
solicitation because section 5.2.6 forbids two bubbles to a peer within 2 s; the
solicitations count as bubbles under its limits too, so after three of them one fallback
round may go within 300 s.  A solicitation received on an accepted direct bubble is
answered with an advertisement (X-SLR-05), paced like the answers to indirect bubbles and
paid from the inbound budget.  The advertisement, a direct packet from the mapping, proves
it (section 5.2.3 case 1) and releases the queue.  The sweep forgets an entry 30 s after its
last traffic (L{teredonode.peers.PeerList.expire}), so the tunnel remembers the mapping of
each trusted Teredo peer it forgets for L{SLR_MEMORY} (bounded like the peer list) and, when
the host sends to that peer again, restores the entry as it was (trusted, last heard then)
for the solicitations to refresh.

Hairpinning (RFC 6081 section 5.6, X-HP-05..07; clients): indirect bubbles to a peer not
reached yet carry our local endpoint (and a UPnP mapping the server did not see) in an
Alternate Address trailer after the nonce; the addresses a peer behind our own NAT advertises
get a direct bubble each, echoing its nonce, within the bounds of L{teredonode.roles.hairpin}
and the inbound budget; the peer's answer from such an address is accepted by the SNS nonce
rule.  The UPnP extension's bubble rules (section 5.3.4, X-UPNP-10..12): a peer heard from a
global mapping its address does not embed is a Symmetric Peer, and behind a single
UPnP-enabled symmetric NAT (L{TeredoTunnel.upnpSymmetric}) bubbles and data go to such a
peer's embedded mapping.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from hmac import compare_digest
from typing import Any, Callable

from twisted.internet.task import LoopingCall

from zope.interface import implementer

from teredonode.counters import CounterSet
from teredonode.interfaces import Endpoint, IGuessSockets, ILocalPeers, IPeerObserver, IRandomPorts, NoPeerObserver
from teredonode.logs import Logger
from teredonode.metrics import observe
from teredonode.peers import BUBBLE_WINDOW, Peer, PeerList
from teredonode.roles import hairpin
from teredonode.security import RateLimiter
from teredonode.wire import ipv4
from teredonode.wire.address import GLOBAL_PREFIX, TEREDO_PORT, is_global_teredo, mapping_of, server_of
from teredonode.wire.errors import ParseError
from teredonode.wire.ipv6 import (
    ICMP_ECHO_REPLY,
    ICMP_ERROR_MAX,
    NH_ICMPV6,
    DestinationUnreachable,
    EchoReply,
    EchoRequest,
    bubble,
    decode_icmpv6,
    icmpv6_packet,
    is_link_local,
    ipv6_text,
    is_multicast,
    parse_ipv6,
)
from teredonode.wire.teredo import (
    DISCOVERY_ADVERTISEMENT,
    DISCOVERY_SOLICITATION,
    RANDOM_PORT_SEND_TYPE,
    NeighborDiscoveryTrailer,
    NonceTrailer,
    TeredoPacket,
    Trailer,
    encode_trailers,
)
from teredonode.roles import portguessing, randomport
from teredonode.roles.portguess import GuessLimits
from teredonode.roles.portguessing import PortGuessing
from teredonode.roles.randomport import PortPreserving

__all__ = [
    "TunnelPolicy",
    "CLIENT_POLICY",
    "TeredoTunnel",
    "DROP_REASONS",
    "UNNUMBERED_DROP_REASONS",
    "COUNTERS",
    "NUMBERED_COUNTERS",
    "UNNUMBERED_COUNTERS",
    "PROBE_INTERVAL",
    "PROBE_REPEATS",
    "ECHO_NONCE_BYTES",
    "SNS_NONCE_BYTES",
    "ICMP_ERRORS_PER_SECOND",
    "ProbeBudget",
    "PeerStateError",
    "peerState",
    "PEER_TRANSITIONS",
    "UNTRUSTED",
    "PROBING",
    "LOCAL",
    "TRUSTED",
    "REMOVED",
    "SUPPRESSION_REASONS",
    "RELAY_SILENCE",
    "RELAY_RECHECKS",
    "SLR_SOLICITATIONS",
    "SLR_MEMORY",
]

#: Sections 5.2.4 and 5.2.9: 2 s time-out, repeated up to 3 times.
PROBE_INTERVAL = 2.0
PROBE_REPEATS = 3
#: Section 5.2.9 recommends "a random number at least 64 bits long".
ECHO_NONCE_BYTES = 8
#: RFC 6081 section 4.2: the Nonce Trailer of a bubble carries 4 bytes.
SNS_NONCE_BYTES = 4
#: ICMPv6 errors toward the host (Miredo: 10 a second).
ICMP_ERRORS_PER_SECOND = 10.0
#: A trusted native peer sent to but silent this long has its relay re-proven by an echo
#: test (the relay may have died or been replaced by another one of an anycast group) ...
RELAY_SILENCE = 3.0
#: ... at most this many unanswered re-checks in a row, so that section 5.2.6's 4 probes in
#: 300 s still leave room for the ordinary test once the entry expires.
RELAY_RECHECKS = 2
#: RFC 6081 section 5.7.2 (X-SLR-04): solicitations before falling back to RFC 4380 bubbles.
SLR_SOLICITATIONS = 3
#: How long a forgotten trusted peer's mapping stays worth soliciting: RFC 4787 REQ-5 lets a
#: NAT drop an idle UDP mapping after 2 minutes, not before.  [INFERRED] RFC 6081 sets no
#: bound; past this one the solicitations would mostly delay the RFC 4380 bubbles by 6 s.
SLR_MEMORY = 120.0
#: The Neighbor Discovery Option trailers of Server Load Reduction (RFC 6081 section 4.4).
_SOLICITATION = encode_trailers((NeighborDiscoveryTrailer(DISCOVERY_SOLICITATION),))
_ADVERTISEMENT = encode_trailers((NeighborDiscoveryTrailer(DISCOVERY_ADVERTISEMENT),))
#: Peer state changes logged (relay chosen, peer unreachable): at most this many a second on
#: average, in bursts of L{LOG_BURST}; the rest are counted in C{log-suppressed}, so that a
#: flood of doomed destinations cannot flood the log.
LOG_RATE = 1.0 / 6
LOG_BURST = 10
#: How often expired peer entries are swept.
EXPIRY_INTERVAL = 10.0
#: An ICMPv6 error quotes as much of the packet as keeps it within the minimum MTU.
_ERROR_QUOTE = 1280 - 48

#: Every reason a packet can be dropped for (status lists all, zeros included).
DROP_REASONS = (
    # from the host (TUN)
    "host-malformed",  # not an IPv6 packet
    "host-foreign-source",  # source is not our address: we would be spoofing
    "host-multicast",  # multicast destinations are not carried (no multicast over Teredo)
    "non-global-destination",  # CL-TX-06/08: embedded server or mapping not global unicast
    "native-destination",  # policy: no echo test for native destinations
    "queue-full",  # per-peer queue bound (packets or bytes)
    "peer-unreachable",  # queued packets after the retries ran out
    "probe-limited",  # 5.2.6: four unanswered probes in 300 s, nothing will release it
    "evicted",  # queued packets lost with an entry evicted from the full peer list
    # from the network (UDP)
    "link-local-source",  # never let link-local packets from outside reach the host
    "wrong-destination",  # CL-RX-02: not addressed to us
    "mapping-mismatch",  # Teredo source whose embedded mapping is not the sender's
    "nonce-mismatch",  # X-SNS-09: a bubble from another mapping without our last nonce
    "echo-nonce-mismatch",  # an echo reply for a pending test with the wrong nonce
    "unverified-source",  # queued inbound packet whose sender was not the proven mapping
    "native-source",  # policy: no native sources
    "unknown-peer",  # policy: no entry from unsolicited traffic
    "non-global-origin",  # an origin indication we may not send a bubble to
    "budget-ipv4",  # a new exchange refused: the bubble budget of the embedded IPv4 is spent
    "budget-global",  # a new exchange refused: the interface's global probe budget is spent
    "budget-server",  # a new exchange refused: the budget of the embedded server IPv4 is spent
    "alternate-malformed",  # X-HP-06a: an indirect bubble whose Alternate Address trailer is not well formed
) + randomport.DROP_REASONS + portguessing.DROP_REASONS
#: Why a bubble or echo request was not sent (status C{probes-suppressed}).
SUPPRESSION_REASONS = (
    "peer-rate",  # section 5.2.6 per peer: < 2 s since the last, or 4 unanswered in 300 s
    "ipv4-budget",  # the budget of the IPv4 address embedded in the destination is spent
    "global-budget",  # the interface's global budget is spent
    "server-budget",  # the budget of the server IPv4 embedded in the destination is spent
    "no-source",  # no address or server yet to send it from or through
)
#: Reasons counted only by unnumbered interfaces (relays), listed after L{DROP_REASONS}.
UNNUMBERED_DROP_REASONS = (
    "unreachable-peer",  # RL-TX-05: a relay's entry removed after its bubbles went unanswered
)
#: What every Teredo interface counts in C{counters}, so that its role's status lists each
#: from zero (see L{NUMBERED_COUNTERS} and L{UNNUMBERED_COUNTERS} for the others).
COUNTERS = (
    "sent",  # packets sent over UDP to a peer's mapping
    "delivered",  # packets written toward the host
    "queued",  # packets queued while a mapping is being proven
    "released",  # queued packets sent once it was
    "bubbles-direct",  # to a peer's embedded mapping
    "bubbles-indirect",  # through a peer's server
    "bubbles-received",
    "bubbles-suppressed",  # not sent, by reason in probes-suppressed
    "probes-failed",  # exchanges whose retries ran out
    "sns-learned",  # X-SNS-08, X-SNS-10: a mapping proven by a bubble echoing our nonce
    "icmp-errors",  # destination unreachable to the host
    "icmp-errors-limited",
    "log-suppressed",  # peer state changes not logged (LOG_RATE)
)
#: What only an interface with an address of its own (a client) counts.
NUMBERED_COUNTERS = (
    "bubbles-answered",  # direct bubbles answering indirect or discovery ones
    "bubbles-local",  # unicast bubbles to a local peer's LAN endpoint
    "echo-tests",  # echo requests of direct IPv6 connectivity tests
    "echo-tests-ok",
    "echo-suppressed",
    "relay-rechecks",  # echo tests re-proving a silent native peer's relay
    "slr-solicitations",  # X-SLR-03/04: direct bubbles soliciting an idle peer's answer
    "slr-advertisements",  # X-SLR-05: direct bubbles answering a solicitation
    "slr-fallbacks",  # X-SLR-04: three solicitations unanswered, RFC 4380 bubbles instead
    "hp-advertised",  # X-HP-05: indirect bubbles carrying our Alternate Address trailer
    "hp-bubbles",  # X-HP-06: direct bubbles to the alternate addresses a peer advertised
    "hp-learned",  # X-HP-07: peers proven at a LAN endpoint or an address they advertised
    "hp-refused",  # alternate addresses not bubbled (own, repeated, beyond 4, foreign peer, paced)
    "upnp-symmetric-peers",  # X-UPNP-10: peers seen sending from a mapping not embedded
    "upnp-embedded",  # X-UPNP-11/12: bubbles and data sent to a symmetric peer's embedded mapping
    "held-for-proof",  # data from an endpoint we bubbled, held until our nonce proves it
) + randomport.COUNTERS + portguessing.COUNTERS
#: What only an unnumbered interface (a relay) counts.
UNNUMBERED_COUNTERS = (
    "delivered-stateless",  # from a client with no entry, its mapping checked (relays)
)


#: Peer states (the module docstring's table).
UNTRUSTED = "untrusted"
PROBING = "probing"
LOCAL = "local"
TRUSTED = "trusted"
REMOVED = "removed"

#: Every allowed (from, to) change of a peer's state: the rows of the module docstring's table.
PEER_TRANSITIONS: frozenset[tuple[str, str]] = frozenset(
    {
        (UNTRUSTED, PROBING),
        (LOCAL, PROBING),
        (PROBING, PROBING),
        (PROBING, UNTRUSTED),
        (PROBING, LOCAL),
        (UNTRUSTED, TRUSTED),
        (PROBING, TRUSTED),
        (LOCAL, TRUSTED),
        (TRUSTED, TRUSTED),
        (UNTRUSTED, LOCAL),
        (LOCAL, LOCAL),
        (TRUSTED, LOCAL),
        (TRUSTED, PROBING),
    }
    | {(state, REMOVED) for state in (UNTRUSTED, PROBING, LOCAL, TRUSTED)}
)


class PeerStateError(Exception):
    """
    A change of a peer's state that L{PEER_TRANSITIONS} does not allow: a bug in the tunnel,
    never the network's doing.
    """


def peerState(peer: Peer) -> str:
    """
    The state of a listed entry, read from its fields (the module docstring's table).
    """
    if peer.trusted:
        return TRUSTED
    if peer.timer is not None:
        return PROBING
    if peer.local:
        return LOCAL
    return UNTRUSTED


#: L{TeredoTunnel.setState}: leave the exchange (the retry timer) as it is.
_KEEP: Any = object()


#: The drop reason of a new exchange refused for each suppression reason.
_REFUSALS = {"ipv4-budget": "budget-ipv4", "server-budget": "budget-server", "global-budget": "budget-global"}


class ProbeBudget:
    """
    How many probes (bubble rounds, echo tests, answers) traffic from outside may make us
    send: token buckets per key (the IPv4 address embedded in a Teredo destination) and
    one for the whole interface.

    Why: section 5.2.6 limits bubbles per IPv6 peer, but the peer is whatever address the
    sender writes.  One IPv4 victim hides behind 2^48 Teredo addresses (flags, server,
    port), and spoofed native sources are free, so without these buckets one packet buys
    up to 8 bubbles (or 4 echo tests) toward endpoints the sender chose (RL-RX-07,
    SEC-19).

    The indirect bubble goes to the server field of the destination, which the sender
    chooses too: a second set of buckets keyed by that address (C{perServerRate}) bounds
    what a victim named as a "server" receives.  It is looser than the per-client one,
    because a real server stands for all its clients.

    @param perKeyRate: tokens a second per key; 0 for no per-key bucket.
    @param perServerRate: tokens a second per server address; 0 for none.
    @param maxKeys: keys tracked (least recently used evicted: an evicted key only gets a
        fresh burst back, and evicting one costs the attacker C{maxKeys} other keys).
    """

    def __init__(
        self,
        clock: Any,
        globalRate: float,
        globalBurst: int,
        perKeyRate: float = 0.0,
        perKeyBurst: int = 1,
        maxKeys: int = 65536,
        perServerRate: float = 0.0,
        perServerBurst: int = 1,
    ) -> None:
        self._clock = clock
        self._maxKeys = maxKeys
        self._global: RateLimiter
        self._perKey: RateLimiter | None = None
        self._perServer: RateLimiter | None = None
        #: (rate, burst) of the global, per-key and per-server buckets; none built yet.
        self._rates: tuple[tuple[float, int], ...] = ((0.0, 0),) * 3
        self.setRates(globalRate, globalBurst, perKeyRate, perKeyBurst, perServerRate, perServerBurst)

    def setRates(
        self,
        globalRate: float,
        globalBurst: int,
        perKeyRate: float = 0.0,
        perKeyBurst: int = 1,
        perServerRate: float = 0.0,
        perServerBurst: int = 1,
    ) -> None:
        """
        Apply new rates (a reload): each set of buckets whose rate or burst changed starts
        afresh, full, so a key may get one new burst; the others keep their tokens.
        """
        old = self._rates
        new = ((globalRate, globalBurst), (perKeyRate, perKeyBurst), (perServerRate, perServerBurst))
        clock, maxKeys = self._clock, self._maxKeys
        if new[0] != old[0]:
            self._global = RateLimiter(clock, globalRate, globalBurst, 1)
        if new[1] != old[1]:
            self._perKey = RateLimiter(clock, perKeyRate, perKeyBurst, maxKeys) if perKeyRate > 0 else None
        if new[2] != old[2]:
            self._perServer = (
                RateLimiter(clock, perServerRate, perServerBurst, maxKeys) if perServerRate > 0 else None
            )
        self._rates = new

    def charge(self, key: bytes, server: bytes | None = None) -> str | None:
        """
        Take one token for C{key}, one for C{server} (when given and budgeted) and one from
        the global bucket; the reason (from L{SUPPRESSION_REASONS}) when one is spent,
        L{None} when the probe may go.
        """
        if self._perKey is not None and not self._perKey.allow(key):
            return "ipv4-budget"
        if server is not None and self._perServer is not None and not self._perServer.allow(server):
            return "server-budget"
        if not self._global.allow(0):
            return "global-budget"
        return None


@dataclass(frozen=True)
class TunnelPolicy:
    """
    What distinguishes the roles sharing L{TeredoTunnel}.

    @ivar name: the role, for status.
    @ivar native_destinations: reach native IPv6 hosts through the direct IPv6
        connectivity test (client, section 5.2.4 case 2); otherwise they are dropped.
    @ivar native_sources: accept packets from native IPv6 sources once an echo test through
        our server proves their relay (client, section 5.2.3 case 6).
    @ivar learn_unsolicited: a packet from an unknown Teredo peer whose embedded mapping
        matches its sender creates a trusted entry (client, section 5.2.3 case 3).
    @ivar direct_bubbles: send a direct bubble as well as the indirect one (section 5.2.4
        case 5: whenever not behind a cone NAT; RFC 5991 makes that always).
    @ivar hardened: apply the post-RFC 4380 non-global IPv4 ranges too.
    @ivar forget_unreachable: remove the entry once its probes went unanswered, with its
        queue (relays, section 5.4.1 case 3: "the entry is removed from the list of peers").
    @ivar forward_stateless: a packet from an unknown Teredo peer whose embedded mapping
        matches its sender is delivered without creating an entry (relays: section 5.4.2
        allows the drop but does not require it; the check already authenticates the
        source, and a restarted or replacement relay then carries traffic at once).
    @ivar server_load_reduction: RFC 6081 section 5.7 (stated for clients): idle paths to
        trusted peers are refreshed with direct solicitation bubbles, and solicitations are
        answered (when the owner's switch allows it too).
    """

    name: str
    native_destinations: bool
    native_sources: bool
    learn_unsolicited: bool
    direct_bubbles: bool = True
    hardened: bool = True
    forget_unreachable: bool = False
    forward_stateless: bool = False
    server_load_reduction: bool = False


CLIENT_POLICY = TunnelPolicy(
    name="client",
    native_destinations=True,
    native_sources=True,
    learn_unsolicited=True,
    server_load_reduction=True,
)


@implementer(ILocalPeers)
class TeredoTunnel:
    """
    One Teredo interface's peer logic.

    @param clock: C{IReactorTime} (a C{Clock} in tests).
    @param policy: the role's L{TunnelPolicy}.
    @param peers: the peer list; the tunnel becomes its owner (L{PeerList.on_remove}), so
        that every entry removed has its retry cancelled and its lost packets counted.
    @param send: sends a UDP payload to an IPv4 endpoint.
    @param deliver: writes an IPv6 packet toward the host's stack.
    @param randbytes: C{n -> n random bytes} for echo nonces (C{secrets.token_bytes} in
        production, a seeded generator in tests).
    @param prefix: the Teredo service prefix (4 bytes).
    @param serves: for an unnumbered interface (relays): which IPv6 addresses it stands
        for, as host sources and as peer destinations.  L{None}: exactly C{address}.
    @param icmpRate: ICMPv6 errors per second toward the host.
    @param bubbleBudget: charged for every bubble round toward a Teredo destination, keyed
        by its embedded IPv4 address (relays: the packets come from anyone on the IPv6
        side); a new entry is created only if its first round may go.
    @param inboundBudget: charged for every probe that traffic from the network makes us
        send: echo tests toward native sources (section 5.2.3 case 6, SEC-19) and answers
        to indirect bubbles (clients).
    @param counters: where the tunnel counts what it does, by name; the owning role passes
        its own L{CounterSet} of the names it declares, so that its status shows one
        table and an undeclared name fails.  By default, every name the tunnel declares.
    @param drops: where it counts drops, by reason (L{DROP_REASONS}, and
        L{UNNUMBERED_DROP_REASONS} for relays); the owning role's, like C{counters}.
    @param symmetricNat: RFC 6081 section 5.2, the Symmetric NAT Support Extension: nonces
        in indirect bubbles (X-SNS-03), echoed in direct ones (X-SNS-04), and a direct
        bubble from a mapping other than the one its source embeds accepted only when it
        proves our last nonce, its sender then becoming the peer's mapping (X-SNS-08,
        X-SNS-09, X-SNS-10).
        On an unnumbered interface (relays) the proof may also be the nonce-bearing local
        source of our indirect bubble, which a plain RFC 4380 client (Miredo) answers to.
    @param serverLoadReduction: RFC 6081 section 5.7 (X-SLR-01), where the policy allows
        it: solicit idle trusted peers with direct bubbles, answer their solicitations.
        Off: neither, as RFC 4380 alone.
    @param hairpinning: RFC 6081 section 5.6 (X-HP-01), on a numbered interface (a client)
        with C{symmetricNat}, whose nonces it needs (X-HP-05d; X-HP-07 is the SNS rule):
        indirect bubbles carry our alternate addresses (L{setAlternates}), and those a peer
        behind our own NAT advertises get a direct bubble each (L{hairpin}).  Relays never
        send the trailer.
    @param randomPorts: RFC 6081 section 5.4, the Port-Preserving Symmetric NAT Extension
        (X-PP-01a; with Symmetric NAT Support only, X-PP-01b): who opens the random ports
        (the client), L{None} for off; C{maxRandomPorts} of them open at once at most, their
        trailer of type C{randomPortType} (D1); C{sequentialPort}: the Sequential
        Port-Symmetric NAT Extension too (section 5.5, X-SEQ-01a/b), at most
        C{echoTestRate} Echo Tests a second.  See L{teredonode.roles.randomport}.
    @param guessSockets: port guessing beyond RFC 6081 (with Symmetric NAT Support, whose
        nonce proves the prober's hit): who opens the opener's sockets (the client), L{None}
        for off; C{guessLimits} its bounds, C{guessRng} the ports probed.  See
        L{teredonode.roles.portguessing}.
    """

    log = Logger()

    def __init__(
        self,
        clock: Any,
        policy: TunnelPolicy,
        peers: PeerList,
        send: Callable[[bytes, Endpoint], None],
        deliver: Callable[[bytes], None],
        randbytes: Callable[[int], bytes],
        prefix: bytes = GLOBAL_PREFIX,
        serves: Callable[[bytes], bool] | None = None,
        icmpRate: float = ICMP_ERRORS_PER_SECOND,
        bubbleBudget: ProbeBudget | None = None,
        inboundBudget: ProbeBudget | None = None,
        counters: dict[str, int] | None = None,
        drops: dict[str, int] | None = None,
        symmetricNat: bool = True,
        serverLoadReduction: bool = True,
        hairpinning: bool = False,
        randomPorts: IRandomPorts | None = None,
        maxRandomPorts: int = 8,
        randomPortType: int = RANDOM_PORT_SEND_TYPE,
        sequentialPort: bool = False,
        echoTestRate: float = 0.2,
        guessSockets: IGuessSockets | None = None,
        guessLimits: GuessLimits | None = None,
        guessRng: Any = None,
    ) -> None:
        self._clock = clock
        self.symmetricNat = symmetricNat
        self.serverLoadReduction = serverLoadReduction and policy.server_load_reduction
        self.policy = policy
        self.peers = peers
        peers.on_remove = self._peerRemoved
        self.send = send
        self._deliver = deliver
        self.randbytes = randbytes
        self.prefix = prefix
        self.hardened = policy.hardened
        self._serves = serves
        self._bubbleBudget = bubbleBudget
        self._inboundBudget = inboundBudget
        self._icmpLimit = RateLimiter(clock, icmpRate, max(1, int(icmpRate)), 1)
        self._logLimit = RateLimiter(clock, LOG_RATE, LOG_BURST, 1)
        # Answers to indirect bubbles: at most one per 2 s per origin endpoint (section
        # 5.2.6's per-peer pace, keyed by where the answer goes, so that a pending echo
        # test toward the same IPv6 peer cannot hold back the answer that opens our NAT).
        self.answerLimit = RateLimiter(clock, 1.0 / PROBE_INTERVAL, 1, peers.max_peers)
        # forget_unreachable: when each removed peer's bubbles began, so that section 5.2.6's
        # "no more than 4 in 300 s" outlives the entry (RL-04); bounded like the peer list.
        self._unreachableSince: OrderedDict[bytes, float] = OrderedDict()
        # Server Load Reduction: trusted Teredo peers the sweep forgot, by address: their
        # mapping, when last heard, when last in touch either way; bounded like the list.
        self._forgotten: OrderedDict[bytes, tuple[Endpoint, float, float]] = OrderedDict()
        self.counters: dict[str, int] = (
            CounterSet(COUNTERS, NUMBERED_COUNTERS, UNNUMBERED_COUNTERS) if counters is None else counters
        )
        self.drops: dict[str, int] = CounterSet(DROP_REASONS, UNNUMBERED_DROP_REASONS) if drops is None else drops
        #: Bubbles and echo requests not sent, by reason (L{SUPPRESSION_REASONS}).
        self.suppressed = CounterSet(SUPPRESSION_REASONS)
        #: Our own Teredo address (16 bytes), None while we have none.
        self.address: bytes | None = None
        #: Our server's endpoint, through which echo tests go.
        self.server: Endpoint | None = None
        #: Source of the ICMPv6 errors we hand the host.
        self.errorSource: bytes | None = None
        #: Source of our bubbles: our address, or a local one on an unnumbered interface.
        self.bubbleSource: bytes | None = None
        #: Local discovery (section 5.2.8): sends a discovery bubble now, or None when off.
        #: Local discovery's on-demand announcement (L{setLocalAnnouncer}), for clients.
        self.announceLocal: Callable[[], None] | None = None
        #: Told of every state change and sweep (L{IPeerObserver}): a kernel fast path
        #: installs trusted peers from here; does nothing by default.
        self.peerObserver: IPeerObserver = NoPeerObserver()
        self._expiry = LoopingCall(self._sweep)
        self._expiry.clock = clock
        self.hairpinning = hairpinning and symmetricNat and serves is None
        #: X-HP-05: our alternate endpoints (local, then a non-zero UPnP mapping), encoded.
        self.ownAlternates: tuple[Endpoint, ...] = ()
        self._alternateTrailer = b""
        #: X-UPNP-11/12: Symmetric NAT, UPnP-Enabled NAT and a zeroed UPnP mapping (a single
        #: UPnP-enabled symmetric NAT); set by the client after qualification.
        self.upnpSymmetric = False
        #: RFC 6081 section 5.4 (X-PP-01b: it needs Symmetric NAT Support), or None when off.
        self.portPreserving: PortPreserving | None = (
            PortPreserving(
                self, randomPorts, clock, maxRandomPorts, randomPortType, sequentialPort, echoTestRate
            )
            if randomPorts is not None and symmetricNat
            else None
        )
        if self.portPreserving is not None:
            peers.keep = self.portPreserving.keeps
        #: Port guessing (beyond RFC 6081), or None when off.
        self.portGuessing: PortGuessing | None = (
            PortGuessing(self, guessSockets, clock, guessLimits or GuessLimits(), guessRng)
            if guessSockets is not None and symmetricNat and serves is None
            else None
        )

    def _sweep(self) -> None:
        self.peerObserver.sweeping()
        self.peers.expire()

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """
        Start sweeping expired peers.
        """
        if not self._expiry.running:
            self._expiry.start(EXPIRY_INTERVAL, now=False)
        if self.portPreserving is not None:
            self.portPreserving.start()

    def stop(self) -> None:
        if self._expiry.running:
            self._expiry.stop()
        self.reset()
        if self.portPreserving is not None:
            self.portPreserving.stop()
        if self.portGuessing is not None:
            self.portGuessing.stop()

    def setIdentity(
        self, address: bytes | None, server: Endpoint | None, errorSource: bytes | None = None
    ) -> None:
        """
        Our Teredo address and server.  C{None} (offline) forgets every peer: what we knew
        was tied to a mapping we no longer have.
        """
        self.address = address
        self.server = server
        self.errorSource = errorSource
        self.bubbleSource = address
        if address is None:
            self.reset()

    def setLocalAnnouncer(self, announce: Callable[[], None]) -> None:
        """
        Local discovery (a client's) announces us on the LAN at once when a local peer
        needs to hear from us (W-BUB-4).
        """
        self.announceLocal = announce

    def setUnnumbered(self, bubbleSource: bytes) -> None:
        """
        An interface without a Teredo address (relays, section 5.4.1 case 3): bubbles come
        from C{bubbleSource} ("a local IPv6 address"), ICMPv6 errors from the address that
        could not be reached (there is no address of ours the host could route back to).
        """
        self.address = None
        self.server = None
        self.errorSource = None
        self.bubbleSource = bubbleSource

    def reset(self) -> None:
        """
        Forget every peer, cancelling their retries (their queued packets are lost).
        """
        for peer in self.peers:
            self.peers.remove(peer.address)
        self._unreachableSince.clear()
        self._forgotten.clear()

    def inboundBubbleAllowed(self) -> bool:
        """
        SEC-19: a bubble that incoming traffic makes us send is paid from the inbound budget
        (clients only); without a token it is counted as suppressed, by reason.
        """
        budget = self._inboundBudget
        if budget is None:
            return True
        reason = budget.charge(b"")
        if reason is None:
            return True
        self._suppress(reason, "bubbles-suppressed")
        return False

    def _peerRemoved(self, peer: Peer) -> None:
        self.setState(peer, REMOVED, timer=None)
        if self.portPreserving is not None:
            self.portPreserving.peerRemoved(peer)
        if self.portGuessing is not None:
            self.portGuessing.peerRemoved(peer)
        if peer.queue:
            self.drops["evicted"] += len(peer.queue)
        mapping = peer.mapping
        if (
            self.serverLoadReduction
            and peer.trusted
            and not peer.local
            and mapping is not None
            and peer.address[:4] == self.prefix
        ):
            record = self._forgotten
            record[peer.address] = (mapping, peer.last_rx, max(peer.last_rx, peer.last_tx))
            record.move_to_end(peer.address)
            while len(record) > self.peers.max_peers:
                record.popitem(last=False)

    def _recall(self, address: bytes) -> Peer | None:
        """
        Server Load Reduction: the entry of a trusted peer forgotten less than L{SLR_MEMORY}
        after its last traffic, listed again as it was (trusted at its mapping, last heard
        then, so not valid), for L{_idlePath} to solicit; L{None} for any other address.
        """
        record = self._forgotten.pop(address, None)
        if record is None:
            return None
        mapping, lastRx, lastTouch = record
        if self._clock.seconds() - lastTouch >= SLR_MEMORY:
            return None
        peer = self.peers.create(address)
        self.setState(peer, TRUSTED, lastRx, mapping=mapping)
        return peer

    # -- transmission (section 5.2.4) -------------------------------------------------------

    def fromHost(self, packet: bytes) -> None:
        """
        An IPv6 packet the host routed into the tunnel.
        """
        try:
            header, end = parse_ipv6(packet)
        except ParseError:
            self.drops["host-malformed"] += 1
            return
        serves = self._serves
        if (header.src != self.address) if serves is None else not serves(header.src):
            self.drops["host-foreign-source"] += 1
            return
        dst = header.dst
        if is_multicast(dst):
            self.drops["host-multicast"] += 1
            return
        if end != len(packet):
            packet = packet[:end]
        peers = self.peers
        peer = peers.get(dst)
        if peer is None and self._forgotten:
            peer = self._recall(dst)
        # Case 1: a valid, trusted entry.
        if peer is not None and peer.trusted and peers.is_valid(peer):
            self._transmit(peer, packet)
            if peer.timer is None and self.policy.native_destinations and dst[:4] != self.prefix:
                self._recheck(peer)
            return
        # Case 3 (CL-TX-03): a local peer heard within 600 s: prove its LAN endpoint.
        if peer is not None and peer.local and peers.is_valid(peer):
            self._queueAndProbe(peer, packet, None, self._localBubble)
            return
        if peer is not None and self._idlePath(peer):
            self._queueAndProbe(peer, packet, None, self.bubble, solicit=True)
            return
        if dst[:4] == self.prefix:
            self._toTeredo(peer, dst, packet)
        elif self.policy.native_destinations:
            self._toNative(peer, dst, packet)
        else:
            # RL-TX-01: only Teredo destinations go over UDP; a route that sends anything
            # else here is a misconfiguration the sender should hear about (as Miredo does).
            self.drops["native-destination"] += 1
            self._unreachable(packet)

    def _recheck(self, peer: Peer) -> None:
        """
        A trusted native peer we keep sending to has not been heard from for
        L{RELAY_SILENCE}: its relay may be gone (restarted elsewhere, or withdrawn from an
        anycast group).  Run the direct IPv6 connectivity test again while the traffic
        keeps going to the old mapping; the reply comes back through whichever relay now
        serves the peer and moves the entry there (case 2), or from the old one (case 1).
        Paced by the probe interval, at most L{RELAY_RECHECKS} unanswered in a row.
        """
        now = self._clock.seconds()
        if (
            now - peer.last_rx < RELAY_SILENCE
            or len(peer.bubbles) >= RELAY_RECHECKS
            or not self._mayEcho(peer, now)
            or self.address is None
            or self.server is None
        ):
            return
        self._sendEcho(peer, len(peer.bubbles), now)
        self.counters["relay-rechecks"] += 1

    def _idlePath(self, peer: Peer) -> bool:
        """
        X-SLR-03: is C{peer} one whose path Server Load Reduction refreshes?  A Teredo peer
        trusted at a known mapping (communication was established), not local, with
        nothing exchanged in either direction for 30 s; or one already being solicited.
        """
        if not self.serverLoadReduction or not peer.trusted or peer.local or peer.mapping is None:
            return False
        if peer.address[:4] != self.prefix:
            return False
        now = self._clock.seconds()
        idle = self.peers.valid_for
        return now - peer.last_rx >= idle and now - peer.last_tx >= idle or peer.timer is not None

    def _transmit(self, peer: Peer, packet: bytes) -> None:
        assert peer.mapping is not None
        peer.last_tx = now = self._clock.seconds()
        self._sendPeer(peer, packet, self._upnpTarget(peer, peer.mapping))  # X-UPNP-12
        if self.portPreserving is not None:
            self.portPreserving.dataSent(peer, now)  # X-PP-07
        self.counters["sent"] += 1

    def _sendPeer(self, peer: Peer | None, data: bytes, endpoint: Endpoint) -> None:
        """
        Send to a peer's C{endpoint}: from the random port the peer was proven on, if any
        (RFC 6081 section 5.4: its NAT lets that port's packets in only), otherwise from
        the service port.
        """
        pp, pg = self.portPreserving, self.portGuessing
        if peer is not None and pg is not None and pg.sendFor(peer, data, endpoint):
            return  # a socket of a port-guessing search reached it
        if pp is None or peer is None or not pp.sendFor(peer, data, endpoint):
            self.send(data, endpoint)

    def _toTeredo(self, peer: Peer | None, dst: bytes, packet: bytes) -> None:
        """
        Cases 4/5 (the cone bit is ignored, RFC 5991 section 3.2): queue, bubble directly
        and through the peer's server.
        """
        if not is_global_teredo(dst, self.prefix, self.hardened):
            self.drops["non-global-destination"] += 1
            return
        if peer is None:
            if self._unreachableSince and self._stillUnreachable(dst):
                self.drops["probe-limited"] += 1
                self._unreachable(packet)
                return
            budget = self._bubbleBudget
            if budget is not None:
                # RL-RX-07: the first round is paid before the entry exists, so one
                # embedded IPv4 address creates no more entries than its budget allows.
                reason = budget.charge(dst[12:16], dst[4:8])
                if reason is not None:
                    self._refuse(reason, "bubbles-suppressed")
                    return
                peer = self.peers.create(dst)
                self._queueAndProbe(peer, packet, None, self._budgetedBubble, self.bubble)
                return
            peer = self.peers.create(dst)
        probe = self.bubble if self._bubbleBudget is None else self._budgetedBubble
        self._queueAndProbe(peer, packet, None, probe)

    def _stillUnreachable(self, dst: bytes) -> bool:
        """
        Was C{dst} removed after unanswered bubbles less than 300 s after they began?
        """
        since = self._unreachableSince.get(dst)
        if since is None:
            return False
        if self._clock.seconds() - since < BUBBLE_WINDOW:
            return True
        del self._unreachableSince[dst]
        return False

    def _toNative(self, peer: Peer | None, dst: bytes, packet: bytes) -> None:
        """
        Case 2: queue and run the direct IPv6 connectivity test.
        """
        if peer is None:
            peer = self.peers.create(dst)
        self._queueAndProbe(peer, packet, None, self._echo)

    def _queueAndProbe(
        self,
        peer: Peer,
        packet: bytes,
        source: Endpoint | None,
        probe: Callable[[Peer], bool],
        firstProbe: Callable[[Peer], bool] | None = None,
        solicit: bool = False,
    ) -> None:
        """
        Queue C{packet} and, unless an exchange is already running, start one: the first
        probe with C{firstProbe} (when the caller already paid for it), retries with
        C{probe}; or, with C{solicit}, Server Load Reduction's solicitations (X-SLR-03).
        """
        running = peer.timer is not None
        if not running and peer.probe_limited(self._clock.seconds()):
            # Section 5.2.6 forbids another probe for a while: nothing would release it.
            self.drops["probe-limited"] += 1
            if source is None:
                self._unreachable(packet)
            return
        if not self.peers.enqueue(peer, packet, source):
            self.drops["queue-full"] += 1
            return
        self.counters["queued"] += 1
        if not running and solicit:
            peer.attempts = 0
            self._solicit(peer)
            self.setState(peer, TRUSTED, timer=self._clock.callLater(PROBE_INTERVAL, self._resolicit, peer, 1))
        elif not running:
            peer.attempts = 0
            (probe if firstProbe is None else firstProbe)(peer)
            self.setState(
                peer,
                TRUSTED if peer.trusted else PROBING,
                timer=self._clock.callLater(PROBE_INTERVAL, self.retry, peer, probe),
            )

    def retry(self, peer: Peer, probe: Callable[[Peer], bool]) -> None:
        # peer.timer is the call that just fired: the exchange runs until this decides.
        if peer.address not in self.peers:
            return
        # A trusted entry may still have packets waiting: a native peer heard through
        # another relay (case 6) until the echo test proves that relay.
        if peer.trusted and self.peers.is_valid(peer) and not peer.queue:
            self.setState(peer, TRUSTED, timer=None)
            return
        peer.attempts += 1
        if peer.attempts > PROBE_REPEATS:
            self._fail(peer)
            return
        probe(peer)
        self.setState(
            peer, peerState(peer), timer=self._clock.callLater(PROBE_INTERVAL, self.retry, peer, probe)
        )

    def _solicit(self, peer: Peer) -> bool:
        """
        X-SLR-03/04: a direct bubble with a Neighbor Discovery Option trailer of type
        TeredoDiscoverySolicitation to the peer's known mapping, within section 5.2.6's
        limits like any bubble.
        """
        now = self._clock.seconds()
        source, mapping = self.address, peer.mapping
        if source is None or mapping is None or not peer.may_bubble(now):
            return self._suppress("no-source" if source is None else "peer-rate", "bubbles-suppressed")
        self._sendPeer(peer, bubble(source, peer.address) + _SOLICITATION, self._upnpTarget(peer, mapping))
        peer.bubble_sent(now)
        self.counters["slr-solicitations"] += 1
        return True

    def _resolicit(self, peer: Peer, count: int) -> None:
        """
        X-SLR-04, the retransmission timer: C{count} solicitations went unanswered for 2 s.
        Below L{SLR_SOLICITATIONS}, solicit again; at it, start over as for a peer never
        reached: no longer trusted, the RFC 4380 bubble pair (section 5.2.4) and its retries.
        (An advertisement from the mapping ends the exchange before: L{release}.)
        """
        if peer.address not in self.peers:
            return
        if count < SLR_SOLICITATIONS:
            self._solicit(peer)
            self.setState(
                peer, TRUSTED, timer=self._clock.callLater(PROBE_INTERVAL, self._resolicit, peer, count + 1)
            )
            return
        self.counters["slr-fallbacks"] += 1
        self.logChange("peer {peer} silent to {count} solicitations", peer=ipv6_text(peer.address), count=count)
        peer.attempts = 0
        probe = self.bubble if self._bubbleBudget is None else self._budgetedBubble
        self.setState(peer, PROBING, timer=self._clock.callLater(PROBE_INTERVAL, self.retry, peer, probe))
        probe(peer)

    def advertise(self, peer: Peer, packet: TeredoPacket, addr: Endpoint) -> None:
        """
        X-SLR-05: the direct bubble C{packet}, accepted from C{addr} (the peer's proven
        mapping), solicits an answer: a direct bubble with a Neighbor Discovery Option
        trailer of type TeredoDiscoveryAdvertisement.  The sender's IPv4 source may be
        forged, so the answer is bounded like every probe the network makes us send:
        section 5.2.6 per peer (not within 2 s of our last transmission to it), one per
        2 s per destination endpoint whatever Teredo address names it, and the inbound
        budget (SEC-19).  An answer is never larger than the solicitation.
        """
        if not self.serverLoadReduction or not any(
            isinstance(t, NeighborDiscoveryTrailer) and t.discovery_type == DISCOVERY_SOLICITATION
            for t in packet.trailers
        ):
            return
        address = self.address
        now = self._clock.seconds()
        if address is None:
            self._suppress("no-source", "bubbles-suppressed")
            return
        if not peer.may_bubble(now) or not self.answerLimit.allow(addr):
            self._suppress("peer-rate", "bubbles-suppressed")
            return
        if not self.inboundBubbleAllowed():
            return
        self._sendPeer(peer, bubble(address, peer.address) + _ADVERTISEMENT, addr)
        peer.bubble_sent(now)
        self.counters["slr-advertisements"] += 1

    def setState(
        self,
        peer: Peer,
        new: str,
        now: float = 0.0,
        mapping: Endpoint | None = None,
        lanEndpoint: Endpoint | None = None,
        timer: Any = _KEEP,
    ) -> None:
        """
        The one place a peer's state changes: refused (L{PeerStateError}) unless C{(current
        state, new)} is in L{PEER_TRANSITIONS}, and checked to have reached C{new}.

        @param mapping: the endpoint just proven (to L{TRUSTED}, at C{now}).
        @param lanEndpoint: where local discovery heard the peer (it is local from now on).
        @param timer: the exchange's next retry (an exchange starts or goes on), L{None}
            (the exchange is over: a pending retry is cancelled), or unchanged by default.
        """
        old = peerState(peer)
        if (old, new) not in PEER_TRANSITIONS:
            raise PeerStateError(f"peer {ipv6_text(peer.address)}: {old} -> {new} is not a transition")
        if lanEndpoint is not None:
            peer.local = True
            peer.local_endpoint = lanEndpoint
        if mapping is not None:
            peer.trust(mapping, now)
            # Proven: an outstanding nonce (X-SNS-03) may no longer move the mapping.
            peer.nonce_sent = None
        elif new != TRUSTED and new != REMOVED:
            peer.trusted = False
        if timer is not _KEEP:
            pending = peer.timer
            if pending is not None and pending is not timer and pending.active():
                pending.cancel()
            peer.timer = timer
        if new != REMOVED and peerState(peer) != new:
            raise PeerStateError(f"peer {ipv6_text(peer.address)}: {old} -> {new} ended in {peerState(peer)}")
        self.peerObserver.peerChanged(peer, new)

    def logChange(self, format: str, **fields: object) -> None:
        """
        One line for a peer's state change (an operator's "why can't I reach X?"), within
        L{LOG_RATE}; beyond it only counted.
        """
        if self._logLimit.allow(0):
            self.log.info(format, **fields)
        else:
            self.counters["log-suppressed"] += 1

    def _fail(self, peer: Peer) -> None:
        """
        The retries ran out: drop what waited, telling the host about its own packets.
        """
        self.counters["probes-failed"] += 1
        self.logChange(
            "peer {peer} unreachable: {probes} probes unanswered", peer=ipv6_text(peer.address),
            probes=len(peer.bubbles),
        )
        self.setState(peer, TRUSTED if peer.trusted else LOCAL if peer.local else UNTRUSTED, timer=None)
        peer.nonce = None
        for queued in self.peers.drain(peer):
            if queued.source is None:
                self.drops["peer-unreachable"] += 1
                self._unreachable(queued.packet)
            else:
                self.drops["unverified-source"] += 1
        if self.policy.forget_unreachable:
            # RL-TX-05: the entry goes; RL-04 (5.2.6 by analogy): its bubble limit stays.
            if peer.bubbles:
                record = self._unreachableSince
                record[peer.address] = peer.bubbles[0]
                record.move_to_end(peer.address)
                while len(record) > self.peers.max_peers:
                    record.popitem(last=False)
            self.peers.remove(peer.address)
            self.drops["unreachable-peer"] += 1

    def _refuse(self, reason: str, counter: str) -> None:
        """
        A new exchange refused by a budget: the packet is dropped, the probe counted.
        """
        self.drops[_REFUSALS[reason]] += 1
        self._suppress(reason, counter)

    def _suppress(self, reason: str, counter: str) -> bool:
        """
        A bubble or echo request not sent: counted by reason (L{SUPPRESSION_REASONS}) and
        under the probe's own C{counter}.  C{False}, for a probe to return.
        """
        self.suppressed[reason] += 1
        self.counters[counter] += 1
        return False

    def _paid(
        self, budget: ProbeBudget | None, key: bytes, allowed: bool, counter: str, server: bytes | None = None
    ) -> bool:
        """
        Pay one probe from C{budget}; C{False}, counted, when it is spent.  A probe that
        section 5.2.6 refuses anyway (C{allowed} false) costs nothing: the probe itself
        counts that refusal.
        """
        if budget is None or not allowed:
            return True
        reason = budget.charge(key, server)
        if reason is None:
            return True
        return self._suppress(reason, counter)

    def _budgetedBubble(self, peer: Peer) -> bool:
        """
        L{bubble}, paid from the bubble budget (relays: every round of every exchange).
        """
        allowed = peer.may_bubble(self._clock.seconds())
        return self._paid(
            self._bubbleBudget, peer.address[12:16], allowed, "bubbles-suppressed", peer.address[4:8]
        ) and self.bubble(peer)

    def _inboundEcho(self, peer: Peer) -> bool:
        """
        L{_echo} for a test a native source made us start, paid from the inbound budget.
        """
        allowed = self._mayEcho(peer, self._clock.seconds())
        return self._paid(self._inboundBudget, b"", allowed, "echo-suppressed") and self._echo(peer)

    def bubble(self, peer: Peer) -> bool:
        """
        Section 5.2.6: a direct bubble to the mapping embedded in the peer's address and an
        indirect one to its server, unless the rate limits forbid.
        """
        now = self._clock.seconds()
        source = self.bubbleSource
        if source is None or not peer.may_bubble(now):
            return self._suppress("no-source" if source is None else "peer-rate", "bubbles-suppressed")
        dst = peer.address
        if self.policy.direct_bubbles:
            direct = bubble(source, dst)
            if peer.nonce_received is not None and self.symmetricNat:
                direct += encode_trailers((NonceTrailer(peer.nonce_received),))  # X-SNS-04
            self.send(direct, mapping_of(dst))
            self.counters["bubbles-direct"] += 1
        self.sendIndirect(peer, source)
        if self.portPreserving is not None:
            self.portPreserving.secondBubble(peer, inbound=False)  # X-PP-10
        peer.bubble_sent(now)
        return True

    def sendIndirect(self, peer: Peer, source: bytes) -> None:
        """
        An indirect bubble to the peer's server.  With the Symmetric NAT Support Extension
        it carries a fresh random nonce in a Nonce Trailer, kept as the peer's Nonce Sent
        (X-SNS-03): only who received this bubble can prove a mapping the peer's address
        does not embed.  An unnumbered interface also writes the nonce into the bubble's
        local source (L{_nonceSource}), for the clients that answer with a plain bubble
        to that source and know nothing of trailers.
        """
        dst = peer.address
        if self.portPreserving is not None and self.portPreserving.deferIndirect(peer):
            return  # X-SEQ-05: an Echo Test first; its end sends this bubble
        if self.symmetricNat:
            nonce = self.randbytes(SNS_NONCE_BYTES)
            peer.nonce_sent = nonce
            if self._serves is not None:
                source = self._nonceSource(source, nonce)
            trailers: tuple[Trailer, ...] = (NonceTrailer(nonce),)
            if self.portPreserving is not None:
                trailers += self.portPreserving.indirectTrailers(peer)  # X-PP-08, X-PP-09
            if self.portGuessing is not None:
                trailers += self.portGuessing.indirectTrailers(peer)  # beyond RFC 6081
            data = bubble(source, dst) + encode_trailers(trailers) + self._hairpinTrailer(peer)
        else:
            data = bubble(source, dst)
        self.send(data, (server_of(dst), TEREDO_PORT))
        self.counters["bubbles-indirect"] += 1

    @staticmethod
    def _nonceSource(source: bytes, nonce: bytes) -> bytes:
        """
        The local source of an unnumbered interface's indirect bubble: its bubble source
        with the nonce as the last 4 bytes of the interface identifier.  A client answers
        an indirect bubble with a direct one to the bubble's source (RFC 4380 section
        5.2.3, defect D9; Miredo does so), so that answer's destination proves receipt as
        the Nonce Trailer does.
        """
        return source[:12] + nonce

    def provesNonce(self, peer: Peer, packet: TeredoPacket) -> bool:
        """
        X-SNS-08: does the bubble C{packet} prove that its sender received our last indirect
        bubble to C{peer}?  Its Nonce Trailer equals the peer's Nonce Sent, or (unnumbered
        interfaces) its destination is the source that bubble came from.
        """
        sent = peer.nonce_sent
        if sent is None or not self.symmetricNat:
            return False
        for trailer in packet.trailers:
            if isinstance(trailer, NonceTrailer) and compare_digest(trailer.nonce, sent):
                return True
        source = self.bubbleSource
        return (
            self._serves is not None
            and source is not None
            and compare_digest(packet.header.dst, self._nonceSource(source, sent))
        )

    def _localBubble(self, peer: Peer) -> bool:
        """
        Section 5.2.4 case 3: a unicast bubble to the local peer's LAN endpoint and a
        discovery bubble, whose unicast answer (section 5.2.3 case 4) proves that endpoint.
        """
        now = self._clock.seconds()
        if self.address is None or peer.local_endpoint is None or not peer.may_bubble(now):
            return self._suppress("peer-rate" if self.address else "no-source", "bubbles-suppressed")
        self.send(bubble(self.address, peer.address), peer.local_endpoint)
        self.counters["bubbles-local"] += 1
        if self.announceLocal is not None:
            self.announceLocal()
        peer.bubble_sent(now)
        return True

    @staticmethod
    def _mayEcho(peer: Peer, now: float) -> bool:
        """
        Section 5.2.6's limits on an echo test.  For a trusted entry being proven again (its
        relay went silent, or the peer spoke through another relay), the 2-s rule counts
        from our last probe, not from our data, which keeps flowing to the old relay
        meanwhile and would otherwise hold the test back for as long as it flows.
        """
        if not peer.trusted:
            return peer.may_bubble(now)
        bubbles = peer.bubbles
        return not peer.probe_limited(now) and not (bubbles and now - bubbles[-1] < PROBE_INTERVAL)

    def _echo(self, peer: Peer) -> bool:
        """
        Section 5.2.9: an ICMPv6 echo request carrying a fresh nonce, through our server.
        The nonce stays the same across the retries of one test, so a late reply to an
        earlier request still counts.
        """
        now = self._clock.seconds()
        if self.address is None or self.server is None or not self._mayEcho(peer, now):
            return self._suppress("no-source" if self.server is None else "peer-rate", "echo-suppressed")
        self._sendEcho(peer, peer.attempts, now)
        self.counters["echo-tests"] += 1
        return True

    def _sendEcho(self, peer: Peer, sequence: int, now: float) -> None:
        """
        One echo request of a direct IPv6 connectivity test (section 5.2.9) to C{peer},
        through our server, carrying the test's nonce (drawn for a new test), counted as a
        probe by section 5.2.6's limits.
        """
        address, server = self.address, self.server
        if address is None or server is None:  # the callers checked already
            return
        if peer.nonce is None:
            peer.nonce = self.randbytes(ECHO_NONCE_BYTES)
        request = EchoRequest(int.from_bytes(peer.nonce[:2], "big"), sequence, peer.nonce)
        self.send(icmpv6_packet(address, peer.address, request, 64), server)
        peer.bubble_sent(now)

    def release(self, peer: Peer) -> None:
        """
        The peer's mapping is proven: send what the host queued for it, deliver what it
        sent us from that very mapping, drop the rest (section 5.2.3, "de-queue").
        """
        if peer.timer is not None:
            self.setState(peer, TRUSTED, timer=None)
        if not peer.queue:
            return
        mapping = peer.mapping
        for queued in self.peers.drain(peer):
            if queued.source is None:
                self._transmit(peer, queued.packet)
                self.counters["released"] += 1
            elif queued.source == mapping:
                self._deliverUp(queued.packet)
            else:
                self.drops["unverified-source"] += 1

    def _unreachable(self, packet: bytes) -> None:
        """
        ICMPv6 destination unreachable (address unreachable) about C{packet} to the host,
        rate limited, never about an ICMPv6 error (RFC 4443 section 2.4 e).
        """
        source = self.errorSource
        if source is None:
            if self._serves is None or len(packet) < 40:
                return
            source = packet[24:40]
        if len(packet) < 40:
            return
        if packet[6] == NH_ICMPV6 and len(packet) > 40 and packet[40] <= ICMP_ERROR_MAX:
            return
        if not self._icmpLimit.allow(0):
            self.counters["icmp-errors-limited"] += 1
            return
        error = DestinationUnreachable(3, packet[:_ERROR_QUOTE])
        self._deliver(icmpv6_packet(source, packet[8:24], error, 64))
        self.counters["icmp-errors"] += 1

    def _deliverUp(self, packet: bytes) -> None:
        self._deliver(packet)
        self.counters["delivered"] += 1

    # -- reception (section 5.2.3) ------------------------------------------------------------

    def fromServer(self, packet: TeredoPacket, addr: Endpoint) -> None:
        """
        A packet from our own server (not a Router Advertisement).

        CL-RX-03 and defect D9: an origin indication means a peer is trying to reach us
        through our server (an indirect bubble): answer with a direct bubble to the origin,
        which opens our NAT toward it.  Bubbles stop here; anything else continues through
        the ordinary checks, because our server may also be the relay of a native host.
        """
        origin = packet.origin
        if origin is not None and not self._answerIndirect(packet, (origin.ip, origin.port)):
            return  # dropped whole (X-HP-06a)
        if packet.is_bubble:
            self.counters["bubbles-received"] += 1
            return
        self.fromPeer(packet, addr)

    def _answerIndirect(self, packet: TeredoPacket, origin: Endpoint) -> bool:
        """
        Answer an indirect bubble (or a packet with an origin indication) with a direct
        bubble to the origin, and, with the Symmetric NAT Support Extension:

          - X-SNS-04: the answer echoes the bubble's nonce (a relay's too: its bubbles come
            from a local address, not a Teredo one); X-SNS-06: a Teredo peer's is kept as
            its Nonce Received (cleared by an indirect bubble without one);
          - RFC 6081 section 6.1 step 10: a peer trusted at a mapping it proved with our
            nonce (not the one its address embeds) is answered there, the one endpoint its
            NAT lets us reach;
          - section 6.1 packet 4: a peer whose bubble carried a nonce and that we cannot
            reach yet also gets an indirect bubble with our own nonce, so that its next
            direct bubble, which may come from a mapping its address does not embed
            (a symmetric NAT), can prove itself (X-SNS-08).

        Returns C{False} when the packet is dropped whole (a malformed Alternate Address
        trailer, X-HP-06a), so that nothing else counts it; C{True} when it goes on.
        """
        address = self.address
        if address is None:
            return True
        src = packet.header.src
        alternates = self._alternatesOf(packet, src)
        if alternates is not None and alternates.malformed:
            self.drops["alternate-malformed"] += 1  # X-HP-06a: the whole packet is dropped
            return False
        if not ipv4.is_global_unicast(origin[0], self.hardened):
            self.drops["non-global-origin"] += 1
            return True
        peers = self.peers
        peer = peers.get(src)
        if not self.policy.learn_unsolicited and peer is None:
            self.drops["unknown-peer"] += 1
            return True
        nonce = None
        target = origin
        if self.symmetricNat:
            nonce = self._nonceOf(packet)
            if peer is not None and src[:4] == self.prefix:
                peer.nonce_received = nonce
                if self.portPreserving is not None:
                    self.portPreserving.indirectReceived(peer, packet)  # X-PP-11
                mapping = peer.mapping
                if (
                    peer.trusted
                    and not peer.local
                    and mapping is not None
                    and mapping != mapping_of(src)
                    and peers.is_valid(peer)
                ):
                    target = self._upnpTarget(peer, mapping)  # X-UPNP-11: maybe the embedded one
        if not self.answerLimit.allow(target):
            self._suppress("peer-rate", "bubbles-suppressed")
            return True
        if not self.inboundBubbleAllowed():
            return True
        answer = bubble(address, src)
        if nonce is not None:
            answer += encode_trailers((NonceTrailer(nonce),))
        self._sendPeer(peer, answer, target)
        self.counters["bubbles-answered"] += 1
        if alternates is not None:
            self._bubbleAlternates(peer, src, origin, nonce, alternates.entries)
        if peer is not None and self.portPreserving is not None:
            self.portPreserving.secondBubble(peer, inbound=True)  # X-PP-10
        if (
            nonce is not None
            and src[:4] == self.prefix
            and (peer is None or not (peer.trusted and peers.is_valid(peer)))
        ):
            self._indirectAnswer(peer, src, nonce, packet)
        if alternates is not None:
            self._keepAlternates(src, alternates.entries)
        if self.portGuessing is not None:
            self.portGuessing.indirectReceived(src, packet, nonce)  # beyond RFC 6081
        return True

    def _indirectAnswer(self, peer: Peer | None, src: bytes, nonce: bytes, packet: TeredoPacket) -> None:
        """
        RFC 6081 section 6.1 packet 4: an indirect bubble with our own nonce to a peer that
        spoke to us through our server with its nonce, paid like the answer (one more token
        of the inbound budget) and within section 5.2.6's per-peer limits; an entry is
        created for it (the nonce needs one) only when it may go.
        """
        if not is_global_teredo(src, self.prefix, self.hardened):
            return
        now = self._clock.seconds()
        if peer is not None and not peer.may_bubble(now):
            self._suppress("peer-rate", "bubbles-suppressed")
            return
        if not self.inboundBubbleAllowed():
            return
        if peer is None:
            peer = self.peers.create(src)
            peer.nonce_received = nonce
            if self.portPreserving is not None:
                # X-PP-11, X-PP-10: the new entry's random port, our bubble to it (6.3 packet 4).
                self.portPreserving.indirectReceived(peer, packet)
                self.portPreserving.secondBubble(peer, inbound=True)
        peer.nonce_received = nonce
        assert self.address is not None
        self.sendIndirect(peer, self.address)
        peer.bubble_sent(now)

    @staticmethod
    def _nonceOf(packet: TeredoPacket) -> bytes | None:
        """
        The nonce of the packet's first Nonce Trailer, if any.
        """
        for trailer in packet.trailers:
            if isinstance(trailer, NonceTrailer):
                return trailer.nonce
        return None

    def fromPeer(self, packet: TeredoPacket, addr: Endpoint) -> None:
        """
        A valid Teredo packet from C{addr} (not from our server, or from it but not a
        bubble): section 5.2.3 cases 1, 2, 3 and 6.
        """
        header = packet.header
        src = header.src
        if is_link_local(src):
            # Miredo's rule: forged RAs and redirects must never reach the host's stack.
            self.drops["link-local-source"] += 1
            return
        isBubble = packet.is_bubble
        dst = header.dst
        if dst != self.address:
            # An unnumbered interface takes what it serves; bubbles are never delivered,
            # so theirs may be anything (ours go to the local source of our bubbles).
            serves = self._serves
            if serves is None or not (isBubble or serves(dst)):
                self.drops["wrong-destination"] += 1
                return
        now = self._clock.seconds()
        peers = self.peers
        peer = peers.get(src)
        if isBubble and peer is not None:
            self._noteSymmetricPeer(peer, addr)  # X-UPNP-10
        # Case 1: a trusted entry whose mapping is the sender.
        if peer is not None and peer.trusted and peer.mapping == addr:
            peer.heard(now)
            self.release(peer)
            if peer.nonce is not None and self._isEchoReply(packet) and self._answersTest(peer, packet):
                # A re-check (or test) answered through the relay we already use.
                peer.nonce = None
                self.counters["echo-tests-ok"] += 1
                return
            self.accept(packet, isBubble)
            if isBubble:
                if self.portPreserving is not None:
                    self.portPreserving.primaryAccepted(peer)  # X-PP-14
                self.advertise(peer, packet, addr)
            return
        # Case 2: the answer to our direct IPv6 connectivity test.
        if peer is not None and peer.nonce is not None and self._isEchoReply(packet):
            if self._answersTest(peer, packet):
                observe("echo-test", now - peer.last_tx)
                if peer.mapping != addr:
                    self.logChange(
                        "relay for {peer}: {relay}", peer=ipv6_text(src), relay=f"{addr[0]}:{addr[1]}"
                    )
                self.setState(peer, TRUSTED, now, mapping=addr, timer=None)
                self.counters["echo-tests-ok"] += 1
                self.release(peer)
                return
            if not peer.trusted or src[:4] == self.prefix:
                self.drops["echo-nonce-mismatch"] += 1
                return
            # A trusted native peer being proven through another relay: the host's own
            # echo replies arriving that way wait for the proof like any packet (case 6).
        if src[:4] == self.prefix:
            # Case 3: a Teredo peer whose address embeds the very mapping it sends from.
            if mapping_of(src) != addr:
                # Case 5 (CL-RX-08): a local peer speaking from its LAN endpoint.
                if (
                    peer is not None
                    and peer.local
                    and peer.local_endpoint == addr
                    and peers.is_valid(peer)
                ):
                    self.setState(peer, TRUSTED, now, mapping=addr, timer=None)
                    self.release(peer)
                    self.accept(packet, isBubble)
                    return
                if isBubble and peer is not None and peer.nonce_sent is not None and self.symmetricNat:
                    if self.provesNonce(peer, packet):
                        self._learn(peer, addr, now)
                        return
                    # X-SNS-09: no nonce, a wrong one, or that of an earlier bubble.
                    self.drops["nonce-mismatch"] += 1
                    return
                if isBubble and peer is not None and self.portPreserving is not None:
                    if self.portPreserving.primaryMismatch(peer, addr):  # X-PP-13
                        return
                if not isBubble and peer is not None and self._holdForProof(peer, packet, addr):
                    return
                self.drops["mapping-mismatch"] += 1
                return
            if peer is None:
                if not self.policy.learn_unsolicited:
                    if self.policy.forward_stateless and not isBubble:
                        # Authenticated by the mapping check, allowed by the served-range
                        # check above: forwarded, no entry (memory stays bounded).
                        self.counters["delivered-stateless"] += 1
                        self._deliverUp(packet.ipv6)
                        return
                    self.drops["unknown-peer"] += 1
                    return
                peer = peers.create(src)
            self.setState(peer, TRUSTED, now, mapping=addr, timer=None)
            self.release(peer)
            self.accept(packet, isBubble)
            if isBubble:
                if self.portPreserving is not None:
                    self.portPreserving.primaryAccepted(peer)  # X-PP-12
                self.advertise(peer, packet, addr)
            return
        # Case 6: a native source.  Accept only once an echo test through our server shows
        # that this sender is the relay our own packets to that source would take.
        if not self.policy.native_sources:
            self.drops["native-source"] += 1
            return
        if isBubble:
            self.counters["bubbles-received"] += 1
            return
        budget = self._inboundBudget
        if budget is None:
            if peer is None:
                peer = peers.create(src)
            self._queueAndProbe(peer, packet.ipv6, addr, self._echo)
            return
        if peer is None or (peer.timer is None and self._mayEcho(peer, now)):
            # SEC-19: a new test is paid before any state exists, so spoofed sources buy
            # no more tests (nor entries) than the budget allows.
            reason = budget.charge(b"")
            if reason is not None:
                self._refuse(reason, "echo-suppressed")
                return
            if peer is None:
                peer = peers.create(src)
            self._queueAndProbe(peer, packet.ipv6, addr, self._inboundEcho, self._echo)
            return
        self._queueAndProbe(peer, packet.ipv6, addr, self._inboundEcho)

    def _holdForProof(self, peer: Peer, packet: TeredoPacket, addr: Endpoint) -> bool:
        """
        The first data packet after a Hairpinning or Port-Preserving/Sequential exchange,
        which the RFC's own packet order sends before its proof (6081 section 6.4 step 6C,
        section 6.5 step 9: the peer trusts us, and sends, one bubble before it answers our
        indirect bubble with our nonce from that very endpoint): queued with its source, like
        section 5.2.3 case 6's packets, and delivered by L{release} only if our nonce then
        proves that source (X-SNS-08); any other outcome drops it (C{unverified-source}).

        What keeps this from being a way in for unproven traffic: it creates no entry and
        changes neither trust nor mapping (only the nonce-proven bubble does, L{_learn}); it
        needs an entry we are bubbling with our nonce outstanding; the source must be an
        endpoint we bubbled for the peer in this exchange (an Alternate Address it
        advertised, X-HP-06c, or its Random Port at its embedded IPv4, X-PP-10, X-SEQ-07);
        one packet at a time per entry, within the queue's bounds; nothing is sent back.
        """
        if not self.symmetricNat or peer.nonce_sent is None or self.address is None:
            return False
        if addr not in self._bubbledEndpoints(peer):
            return False
        if any(queued.source is not None for queued in peer.queue):
            return False
        if not self.peers.enqueue(peer, packet.ipv6, addr):
            return False
        self.counters["queued"] += 1
        self.counters["held-for-proof"] += 1
        return True

    def _bubbledEndpoints(self, peer: Peer) -> set[Endpoint]:
        """
        The endpoints besides its embedded mapping that we bubble for C{peer}: the Alternate
        Addresses it advertised when it shares our public address (X-HP-06c's condition, in
        L{_bubbleAlternates}), and its Random Port at its embedded IPv4 (X-PP-10).
        """
        ip = mapping_of(peer.address)[0]
        endpoints: set[Endpoint] = set()
        address = self.address
        if self.hairpinning and address is not None and ip == mapping_of(address)[0]:
            endpoints.update(peer.alternates)
        if self.portPreserving is not None and peer.peer_random_port:
            endpoints.add((ip, peer.peer_random_port))
        return endpoints

    def _learn(self, peer: Peer, addr: Endpoint, now: float) -> None:
        """
        X-SNS-08, X-SNS-10: a direct bubble from C{addr}, not the mapping the peer's address
        embeds, proved our last nonce: C{addr} is the peer's mapping from now on (its NAT
        gives it one per destination).  The nonce is spent, so a copy of that bubble replayed
        from elsewhere cannot move the mapping again; only a later indirect bubble's nonce can.
        """
        peer.nonce_sent = None
        self.logChange(
            "peer {peer} reached at {mapping}: not its embedded mapping, proven by our nonce",
            peer=ipv6_text(peer.address),
            mapping=f"{addr[0]}:{addr[1]}",
        )
        self.setState(peer, TRUSTED, now, mapping=addr, timer=None)
        self.counters["sns-learned"] += 1
        self._countHairpinLearned(peer, addr)
        if self.portPreserving is not None:
            self.portPreserving.primaryAccepted(peer)  # X-PP-12
        if self.portGuessing is not None:
            self.portGuessing.learned(peer, addr)  # a probe's hit ends the search
        self.release(peer)
        self.counters["bubbles-received"] += 1

    def fromLocalPeer(self, src: bytes, addr: Endpoint) -> None:
        """
        Section 5.2.3 case 4 / 5.2.8 (CL-LD-05/06): an accepted discovery bubble from the
        Teredo address C{src} at the LAN endpoint C{addr}.  The entry becomes (or is
        created, untrusted) local at C{addr}, heard now, and gets a unicast bubble back
        (W-BUB-5), which proves our own LAN endpoint to it (its case 5).  A mapping proven
        elsewhere (through a hairpinning NAT) is no longer trusted, so that traffic moves
        to the LAN once that endpoint is proven too.
        """
        now = self._clock.seconds()
        peer = self.peers.get(src)
        if peer is None:
            peer = self.peers.create(src)
            # A newcomer does not know us yet and would drop our unicast answer (it has no
            # local entry to match it): announce first, so the answer finds one.
            if self.announceLocal is not None:
                self.announceLocal()
        if peer.trusted and peer.mapping == addr:
            new = TRUSTED
        else:
            new = PROBING if peer.timer is not None else LOCAL
        self.setState(peer, new, lanEndpoint=addr)
        peer.heard(now)
        if self.address is None or not self.answerLimit.allow(addr):
            self._suppress("peer-rate" if self.address else "no-source", "bubbles-suppressed")
            return
        self.send(bubble(self.address, src), addr)
        self.counters["bubbles-answered"] += 1

    def accept(self, packet: TeredoPacket, isBubble: bool) -> None:
        if isBubble:
            self.counters["bubbles-received"] += 1
        else:
            self._deliverUp(packet.ipv6)

    @staticmethod
    def _isEchoReply(packet: TeredoPacket) -> bool:
        ipv6 = packet.ipv6
        return packet.header.next_header == NH_ICMPV6 and len(ipv6) > 40 and ipv6[40] == ICMP_ECHO_REPLY

    @staticmethod
    def _answersTest(peer: Peer, packet: TeredoPacket) -> bool:
        """
        Is the echo reply C{packet} (checksum included) the answer to the peer's pending
        test, i.e. does it carry its nonce?
        """
        header = packet.header
        try:
            msg = decode_icmpv6(packet.ipv6[40:], header.src, header.dst)
        except ParseError:
            return False
        return isinstance(msg, EchoReply) and msg.data == peer.nonce

    # -- RFC 6081 Hairpinning (section 5.6) and the UPnP bubble rules (section 5.3.4) -----------

    def setAlternates(self, local: Endpoint | None, upnp: Endpoint | None) -> None:
        """
        X-HP-05b/c, X-HP-04: the endpoints our indirect bubbles advertise: the local address
        and port, and the UPnP mapping when it is not zero (the client zeroes it when the
        server saw that very mapping).  L{None} for what is unknown.
        """
        trailer = hairpin.advertised(local, upnp)
        self.ownAlternates = () if trailer is None else trailer.addresses
        self._alternateTrailer = b"" if trailer is None else encode_trailers((trailer,))

    def _hairpinTrailer(self, peer: Peer) -> bytes:
        """
        X-HP-05a: the Alternate Address trailer for an indirect bubble to C{peer}, while
        communication with it is not established (no valid trusted entry); the caller puts
        the Nonce Trailer first (X-HP-05d).  X-TRL-06: only a client's indirect bubbles.
        """
        trailer = self.alternateTrailerFor(peer)
        if trailer:
            self.counters["hp-advertised"] += 1
        return trailer

    def alternateTrailerFor(self, peer: Peer) -> bytes:
        """
        X-HP-05a: the Alternate Address trailer an indirect bubble to C{peer} would carry
        now (C{b""}: none, as once communication with it is established), without sending or
        counting anything: the decision on its own, for status and tests.
        """
        trailer = self._alternateTrailer
        if not self.hairpinning or not trailer or (peer.trusted and self.peers.is_valid(peer)):
            return b""
        return trailer

    def _alternatesOf(self, packet: TeredoPacket, src: bytes) -> hairpin.Alternates | None:
        """
        The alternate addresses an indirect bubble from a Teredo peer advertises (L{None}
        when hairpinning is off or it carries no trailer at all).
        """
        if not self.hairpinning or not packet.trailer_bytes or src[:4] != self.prefix:
            return None
        alternates = hairpin.read_alternates(packet.trailers, packet.malformed_trailers)
        if not alternates.entries and not alternates.malformed:
            return None
        return alternates

    def _bubbleAlternates(
        self, peer: Peer | None, src: bytes, origin: Endpoint, nonce: bytes | None, entries: tuple[Endpoint, ...]
    ) -> None:
        """
        X-HP-06c/d: besides the answer to the origin, a direct bubble echoing the peer's
        nonce to each address it advertised, so that a peer behind our own NAT, which does
        not hairpin, is reached on the inside.  Not for a peer already reached (RFC 6081
        section 6.5 step 11: one bubble, to the proven mapping).  What a forged or hostile
        trailer can make us send is bounded (L{hairpin}): only from a peer whose address
        embeds our own public IPv4, only with a nonce (the bubble is useless without one),
        at most 4 endpoints, never our own, each endpoint at most once per 2 s (the pace of
        the answers to indirect bubbles), each bubble paid from the inbound budget (SEC-19).
        Everything not sent is counted in C{hp-refused}.
        """
        address = self.address
        if address is None or (peer is not None and peer.trusted and self.peers.is_valid(peer)):
            return
        embedded = mapping_of(src)
        if nonce is None or embedded[0] != mapping_of(address)[0]:
            self.counters["hp-refused"] += len(entries)
            return
        own = (*self.ownAlternates, mapping_of(address), origin)
        chosen, refused = hairpin.choose_alternates(entries, own, embedded)
        self.counters["hp-refused"] += refused
        data = bubble(address, src) + encode_trailers((NonceTrailer(nonce),))
        for endpoint in chosen:
            if not self.answerLimit.allow(endpoint):
                self._suppress("peer-rate", "hp-refused")
                continue
            if not self.inboundBubbleAllowed():
                self.counters["hp-refused"] += 1
                continue
            self.send(data, endpoint)
            self.counters["hp-bubbles"] += 1

    def _keepAlternates(self, src: bytes, entries: tuple[Endpoint, ...]) -> None:
        """
        X-HP-06b: the peer entry keeps the list it advertised last (at most 4 entries).
        """
        peer = self.peers.get(src)
        if peer is not None:
            peer.alternates = entries[: hairpin.MAX_ALTERNATES]

    def _countHairpinLearned(self, peer: Peer, addr: Endpoint) -> None:
        """
        X-HP-07: a mapping proven by our nonce (the SNS rule) that is an address the peer
        advertised, or any LAN endpoint: what only hairpinning reaches.
        """
        if self.hairpinning and (addr in peer.alternates or not ipv4.is_global_unicast(addr[0], self.hardened)):
            self.counters["hp-learned"] += 1

    def _noteSymmetricPeer(self, peer: Peer, addr: Endpoint) -> None:
        """
        X-UPNP-10: a direct bubble from a mapping the peer's address does not embed marks it
        as behind a symmetric NAT (set even if the bubble is then dropped: RFC 6081 section
        6.2 step 2 sets it on a bubble without a nonce; a forged one only makes us use the
        embedded mapping, which needs no proof).  [INFERRED] Not for a LAN endpoint (a local
        peer, or one reached by hairpinning): that is not a symmetric NAT's mapping, and the
        embedded one would need the hairpinning the NAT lacks.  Clients only.
        """
        if (
            peer.symmetric_peer
            or self._serves is not None
            or not self.symmetricNat
            or peer.local
            or peer.address[:4] != self.prefix
            or mapping_of(peer.address) == addr
            or not ipv4.is_global_unicast(addr[0], self.hardened)
        ):
            return
        peer.symmetric_peer = True
        self.counters["upnp-symmetric-peers"] += 1

    def _upnpTarget(self, peer: Peer, learned: Endpoint) -> Endpoint:
        """
        X-UPNP-11 (direct bubbles), X-UPNP-12 (data): behind a single UPnP-enabled symmetric
        NAT (L{upnpSymmetric}), a symmetric peer is sent to at the mapping its address
        embeds, betting that its NAT reserved that one too (RFC 6081 section 5.3.4.2);
        otherwise to C{learned}.
        """
        if not (self.upnpSymmetric and peer.symmetric_peer):
            return learned
        embedded = mapping_of(peer.address)
        if embedded != learned:
            self.counters["upnp-embedded"] += 1
        return embedded

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        peers = list(self.peers)
        trusted = packets = queued = 0
        for p in peers:  # one pass: a relay may hold a million entries
            trusted += p.trusted
            packets += len(p.queue)
            queued += p.queued_bytes
        return {
            "peers": len(peers),
            "trusted-peers": trusted,
            "queued-packets": packets,
            "queued-bytes": queued,
            "evicted-peers": self.peers.evicted,
            "expired-peers": self.peers.expired,
            "probes-suppressed": self.suppressed.snapshot(),
        }
