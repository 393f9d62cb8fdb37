"""
A userspace UDP NAT for the lab's C{address-symmetric} kind (RFC 6081 section 2: "a
symmetric NAT that has multiple external IP addresses and that assigns different IP
addresses and ports when communicating with different external hosts").

Why userspace: the kernel's NAT keys a mapping on the whole 5-tuple, so it cannot give every
port of one destination host the same mapping while the next host gets another external
address *and* port; nftables has no way to allocate a fresh address per destination host.
Here a mapping is keyed on (inside address, inside port, destination address):

  - outbound: a packet socket on the LAN interface sees the clients' UDP (nat.py drops it at
    the raw hook right after, so the kernel never forwards it); the first packet toward a new
    destination host opens a mapping: a UDP socket bound to the next address of the pool
    (round robin) and a port the kernel picks at random among those no other mapping uses;
    the payload leaves from it;
  - inbound: a datagram on a mapping's socket is accepted only from an (address, port) the
    inside endpoint has sent to through that mapping (address- and port-dependent filtering,
    the symmetric NAT's), then handed to the client as a raw IPv4/UDP packet whose source is
    the remote endpoint;
  - a mapping idle (no accepted packet either way) for C{--timeout} seconds is closed.

No hairpinning, no fragments, no ICMP translation: the lab needs none of them.

Run in the NAT router's namespace: C{python -m teredonode.lab.usernat --lan-net 10.N.0.0/24
--pool A,B,C,D [--lan lan] [--timeout 120]}; it prints "usernat: ready" once it sees the LAN.
"""

from __future__ import annotations

import argparse
import ipaddress
import selectors
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

ETH_P_IP = 0x0800
PACKET_HOST = 0

Endpoint = tuple[str, int]


def checksum(data: bytes) -> int:
    """
    The Internet checksum (RFC 1071) of C{data}.
    """
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_packet(src: Endpoint, dst: Endpoint, payload: bytes, ttl: int = 64) -> bytes:
    """
    An IPv4 packet carrying C{payload} in UDP from C{src} to C{dst}, both checksums set.
    """
    s, d = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_UDP, length)
    header = struct.pack("!HHHH", src[1], dst[1], length, 0)
    csum = checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", src[1], dst[1], length, csum) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, ttl, socket.IPPROTO_UDP, 0, s, d)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + udp


def parse_udp(packet: bytes) -> tuple[Endpoint, Endpoint, bytes] | None:
    """
    (source, destination, payload) of an unfragmented IPv4/UDP packet, else None.
    """
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack("!H", packet[2:4])[0]
    flags_offset = struct.unpack("!H", packet[6:8])[0]
    if flags_offset & 0x3FFF or total > len(packet) or total < ihl + 8:
        return None
    sport, dport, length = struct.unpack("!HHH", packet[ihl:ihl + 6])
    if length < 8 or ihl + length > total:
        return None
    src = socket.inet_ntoa(packet[12:16])
    dst = socket.inet_ntoa(packet[16:20])
    return (src, sport), (dst, dport), packet[ihl + 8:ihl + length]


@dataclass
class Mapping:
    inside: Endpoint
    sock: socket.socket
    external: Endpoint
    peers: set[Endpoint] = field(default_factory=set)
    last: float = 0.0


class AddressSymmetricNat:
    """
    The mapping table and its policy; the sockets are real, the packet I/O is L{serve}'s.
    """

    def __init__(self, pool: list[str], lan_net: str, timeout: float) -> None:
        self.pool = pool
        self.lan_net = ipaddress.ip_network(lan_net)
        self.timeout = timeout
        self.mappings: dict[tuple[str, int, str], Mapping] = {}
        self._next = 0
        self.selector = selectors.DefaultSelector()
        self.raw: socket.socket | None = None  # opened by L{serve} (root only)

    def wants(self, dst: Endpoint) -> bool:
        """
        Whether a LAN packet to C{dst} is ours to translate (not for the LAN, the router,
        a multicast group or a broadcast).
        """
        address = ipaddress.ip_address(dst[0])
        return not (
            address in self.lan_net or address.is_multicast or dst[0] == "255.255.255.255" or dst[0] in self.pool
        )

    def outbound(self, src: Endpoint, dst: Endpoint, payload: bytes, now: float) -> None:
        key = (src[0], src[1], dst[0])
        mapping = self.mappings.get(key)
        if mapping is None:
            address = self.pool[self._next % len(self.pool)]
            self._next += 1
            sock = self._bind(address)
            mapping = Mapping(src, sock, sock.getsockname())
            self.mappings[key] = mapping
            self.selector.register(sock, selectors.EVENT_READ, mapping)
        mapping.peers.add(dst)
        mapping.last = now
        try:
            mapping.sock.sendto(payload, dst)
        except OSError:
            pass

    def _bind(self, address: str) -> socket.socket:
        """
        A socket on C{address} and a random port no other mapping uses on any address of the
        pool, so that every new mapping differs in address and port (RFC 6081 section 2).
        """
        used = {m.external[1] for m in self.mappings.values()}
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((address, 0))
            if sock.getsockname()[1] not in used:
                sock.setblocking(False)
                return sock
            sock.close()

    def inbound(self, mapping: Mapping, now: float) -> None:
        try:
            payload, remote = mapping.sock.recvfrom(65535)
        except OSError:
            return
        if remote not in mapping.peers:
            return  # address- and port-dependent filtering
        mapping.last = now
        if self.raw is None:
            return
        try:
            self.raw.sendto(udp_packet(remote, mapping.inside, payload), (mapping.inside[0], 0))
        except OSError:
            pass

    def expire(self, now: float) -> None:
        for key, mapping in list(self.mappings.items()):
            if now - mapping.last > self.timeout:
                self.selector.unregister(mapping.sock)
                mapping.sock.close()
                del self.mappings[key]


def serve(lan: str, pool: list[str], lan_net: str, timeout: float) -> int:
    nat = AddressSymmetricNat(pool, lan_net, timeout)
    nat.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    capture.bind((lan, ETH_P_IP))
    capture.setblocking(False)
    nat.selector.register(capture, selectors.EVENT_READ, None)
    print(f"usernat: ready on {lan}, pool {', '.join(pool)}", flush=True)
    while True:
        for key, _events in nat.selector.select(timeout=1.0):
            now = time.monotonic()
            if key.data is None:
                while True:
                    try:
                        packet, address = capture.recvfrom(65535)
                    except BlockingIOError:
                        break
                    if address[2] != PACKET_HOST:
                        continue  # our own injected packets, other hosts' frames
                    parsed = parse_udp(packet)
                    if parsed is not None and nat.wants(parsed[1]):
                        nat.outbound(parsed[0], parsed[1], parsed[2], now)
            else:
                nat.inbound(key.data, now)
        nat.expire(time.monotonic())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m teredonode.lab.usernat")
    parser.add_argument("--lan", default="lan", help="LAN interface (default lan)")
    parser.add_argument("--lan-net", required=True, help="the LAN's prefix, e.g. 10.1.0.0/24")
    parser.add_argument("--pool", required=True, help="external addresses, comma-separated")
    parser.add_argument("--timeout", type=float, default=120.0, help="idle mapping lifetime, s")
    args = parser.parse_args(argv)
    return serve(args.lan, args.pool.split(","), args.lan_net, args.timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
