"""
The lab's NAT kinds without a lab: their rule sets, address pools, scenarios, and the pure
parts of the userspace NAT and the STUN responder.  (tests/system/test_nat_kinds.py proves
the behaviour on real namespaces.)
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from twisted.trial import unittest

from teredonode.errors import LabError
from teredonode.lab import nat, topology, upnp, usernat
from teredonode.lab.cli import build_parser, scenario_of
from teredonode.lab.scenario import SCENARIOS, get_scenario

WAN = "198.51.100.11"
SERVER = "203.0.113.10"


def rules(mode: str) -> str:
    return nat.ruleset(mode, wan="wan", client_ip="10.1.0.2", wan_ips=nat.address_pool(WAN), server_ip=SERVER)


class RulesetTests(unittest.TestCase):
    def test_every_kind_has_rules_and_none_has_none(self) -> None:
        for mode in nat.NAT_MODES[1:]:
            script = rules(mode)
            # Both tables are created then deleted first: switching kinds leaves nothing behind.
            self.assertTrue(script.startswith(f"table ip {nat.TABLE}\ndelete table ip {nat.TABLE}\n"), mode)
            self.assertIn(f"delete table inet {nat.UPNP_TABLE}", script)
        self.assertRaises(LabError, rules, "none")
        self.assertRaises(LabError, rules, "full-cone")

    def test_figure1_rows_are_kinds(self) -> None:
        self.assertEqual(len(nat.FIGURE1), 9)
        for _, kind in nat.FIGURE1:
            self.assertIn(kind, nat.NAT_MODES)

    def test_symmetric_is_port_symmetric(self) -> None:
        self.assertEqual(rules("symmetric"), rules("port-symmetric"))
        self.assertIn("masquerade fully-random", rules("port-symmetric"))

    def test_restricted_kinds_drop_new_inbound_before_nat(self) -> None:
        for mode in ("port-restricted", "port-symmetric", "port-preserving-symmetric", "sequential-symmetric"):
            script = rules(mode)
            self.assertIn(f"priority {nat.INBOUND_FILTER_PRIORITY};", script)
            self.assertIn('iifname "wan" meta l4proto udp ct state new drop', script)
        self.assertNotIn("ct state new", rules("cone"))
        self.assertNotIn("ct state new", rules("masquerade"))

    def test_address_restricted_filters_on_contacted_address(self) -> None:
        script = rules("address-restricted")
        self.assertIn("update @contacted { ip daddr . udp sport }", script)
        self.assertIn("ip saddr . udp dport != @contacted drop", script)
        self.assertIn("ip saddr . udp dport @contacted dnat to 10.1.0.2", script)
        self.assertIn("priority srcnat + 10", script)  # after source NAT: the external port

    def test_sequential_map_counts_up_by_one(self) -> None:
        script = rules("sequential-symmetric")
        self.assertIn(f"numgen inc mod {len(nat.SEQUENTIAL_PORTS)} map", script)
        first = nat.SEQUENTIAL_PORTS[0]
        self.assertIn(f"0 : {first}, 1 : {first + 1}, 2 : {first + 2}", script)
        self.assertIn(f"snat to {WAN} :", script)

    def test_port_preserving_randomises_only_later_mappings(self) -> None:
        script = rules("port-preserving-symmetric")
        low, high = nat.PP_OTHER_PORTS
        self.assertIn(f"ip saddr . udp sport @pp_used masquerade to :{low}-{high} fully-random", script)
        self.assertIn("update @pp_used { ct original ip saddr . ct original proto-src }", script)

    def test_address_symmetric_leaves_udp_to_userspace(self) -> None:
        script = rules("address-symmetric")
        self.assertIn("priority raw", script)
        self.assertIn("meta l4proto udp fib daddr type != local drop", script)
        self.assertIn("ip saddr != { " + ", ".join(nat.address_pool(WAN)) + " } masquerade", script)
        self.assertRaises(LabError, nat.ruleset, "address-symmetric", wan="wan", client_ip="10.1.0.2")

    def test_upnp_kinds_filter_after_destination_nat(self) -> None:
        for mode in nat.UPNP_MODES:
            script = rules(mode)
            self.assertIn(f"priority {nat.UPNP_FILTER_PRIORITY};", script)
            self.assertIn("ct state new ct status dnat accept", script)
            self.assertIn(f"table inet {nat.UPNP_TABLE} {{", script)
            for chain in ("forward_upnp", "prerouting_upnp", "postrouting_upnp"):
                self.assertIn(f"jump {chain}", script)
        self.assertIn("fully-random", rules("upnp-port-symmetric"))
        self.assertNotIn("fully-random", rules("upnp-port-restricted"))

    def test_upnp_port_symmetric_keeps_the_port_toward_the_server_only(self) -> None:
        """
        RFC 6081 section 3.2: the server sees the reserved port, other flows stay symmetric.
        The port-keeping rule comes first and names the server's primary address only.
        """
        script = rules("upnp-port-symmetric")
        keep = f'oifname "wan" meta l4proto udp ip daddr {SERVER} udp dport 3544 masquerade\n'
        self.assertIn(keep, script)
        self.assertLess(script.index(keep), script.index("masquerade fully-random"))
        self.assertNotIn("203.0.113.11", script)
        self.assertNotIn(SERVER, rules("upnp-port-restricted"))
        self.assertNotIn(SERVER, rules("port-symmetric"))
        self.assertRaises(LabError, nat.ruleset, "upnp-port-symmetric", wan="wan", client_ip="10.1.0.2")


class PlanTests(unittest.TestCase):
    def test_address_pool(self) -> None:
        pool = nat.address_pool("198.51.100.19")
        self.assertEqual(pool, ("198.51.100.19", "198.51.100.184", "198.51.100.185", "198.51.100.186"))
        taken = {f"198.51.100.{10 + n}" for n in range(1, 32)} | {f"198.51.100.{100 + n}" for n in range(1, 32)}
        extra = [a for n in range(1, 32) for a in nat.address_pool(f"198.51.100.{10 + n}")[1:]]
        self.assertEqual(len(set(extra)), len(extra))
        self.assertFalse(set(extra) & taken)
        self.assertTrue(all(ipaddress.ip_address(a) in ipaddress.ip_network("198.51.100.0/24") for a in extra))
        self.assertRaises(LabError, nat.address_pool, "198.51.100.42")

    def test_nat_kinds_scenario_follows_figure1(self) -> None:
        scenario = get_scenario("nat-kinds")
        self.assertEqual([c.nat for c in scenario.clients], [kind for _, kind in nat.FIGURE1])
        self.assertIn("nat-kinds", SCENARIOS)

    def test_custom_scenario(self) -> None:
        scenario = get_scenario("nat:cone,address-symmetric")
        self.assertEqual([(c.name, c.nat) for c in scenario.clients], [("client1", "cone"), ("client2", "address-symmetric")])
        plan = topology.make_plan(scenario)
        self.assertEqual(plan.hosts["nat2"].ipv4, nat.address_pool("198.51.100.12"))
        self.assertEqual(plan.hosts["nat1"].ipv4, ("198.51.100.11",))
        self.assertEqual(topology.lan_net(plan.hosts["nat2"]), "10.2.0.0/24")
        self.assertRaises(LabError, get_scenario, "nat:cone,hairpin")
        self.assertRaises(LabError, get_scenario, "nat:")

    def test_cli_nat_option_builds_custom_scenario(self) -> None:
        args = build_parser().parse_args(["up", "--nat", "sequential-symmetric,upnp-port-restricted"])
        self.assertEqual(scenario_of(args), "nat:sequential-symmetric,upnp-port-restricted")
        self.assertEqual(scenario_of(build_parser().parse_args(["demo", "--scenario", "nat-kinds"])), "nat-kinds")

    def test_daemon_names_are_per_router(self) -> None:
        self.assertEqual(nat.daemon_names("nat3"), ("nat3-usernat", "nat3-stun", "nat3-upnpd"))


class UserspaceNatTests(unittest.TestCase):
    def test_packet_round_trip_and_checksums(self) -> None:
        packet = usernat.udp_packet(("203.0.113.20", 5000), ("10.1.0.2", 40000), b"hello!!")
        self.assertEqual(usernat.checksum(packet[:20]), 0)
        pseudo = packet[12:20] + struct.pack("!BBH", 0, socket.IPPROTO_UDP, len(packet) - 20)
        self.assertEqual(usernat.checksum(pseudo + packet[20:]), 0)
        self.assertEqual(
            usernat.parse_udp(packet), (("203.0.113.20", 5000), ("10.1.0.2", 40000), b"hello!!")
        )

    def test_parse_refuses_fragments_and_other_protocols(self) -> None:
        packet = bytearray(usernat.udp_packet(("10.1.0.2", 1), ("203.0.113.20", 2), b"x" * 10))
        fragment = bytes(packet[:6]) + struct.pack("!H", 0x2000) + bytes(packet[8:])
        self.assertIsNone(usernat.parse_udp(fragment))
        tcp = bytes(packet[:9]) + bytes([6]) + bytes(packet[10:])
        self.assertIsNone(usernat.parse_udp(tcp))
        self.assertIsNone(usernat.parse_udp(bytes(packet[:27])))

    def test_only_internet_destinations_are_translated(self) -> None:
        table = usernat.AddressSymmetricNat(["198.51.100.19"], "10.9.0.0/24", 120.0)
        self.assertTrue(table.wants(("203.0.113.20", 5000)))
        for dst in ("10.9.0.1", "10.9.0.255", "224.0.0.253", "255.255.255.255", "198.51.100.19"):
            self.assertFalse(table.wants((dst, 5000)), dst)


class AddressSymmetricTableTests(unittest.TestCase):
    """
    The mapping policy on loopback: one mapping per destination host, each new one on the
    next pool address and a port no other mapping uses; inbound only from peers sent to.
    """

    def setUp(self) -> None:
        self.table = usernat.AddressSymmetricNat(["127.0.0.1", "127.0.0.3"], "10.9.0.0/24", 120.0)
        self.peers = []
        for address in ("127.0.0.1", "127.0.0.2"):
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.bind((address, 0))
            peer.settimeout(5)
            self.addCleanup(peer.close)
            self.peers.append(peer)

        def close() -> None:
            for mapping in self.table.mappings.values():
                mapping.sock.close()

        self.addCleanup(close)

    def test_mapping_per_destination_host(self) -> None:
        inside = ("10.9.0.2", 40000)
        a, b = (p.getsockname() for p in self.peers)
        self.table.outbound(inside, a, b"one", 1.0)
        self.table.outbound(inside, (a[0], a[1] + 1), b"two", 2.0)
        self.table.outbound(inside, b, b"three", 3.0)
        self.assertEqual(len(self.table.mappings), 2)
        first = self.table.mappings[("10.9.0.2", 40000, a[0])]
        second = self.table.mappings[("10.9.0.2", 40000, b[0])]
        self.assertEqual((first.external[0], second.external[0]), ("127.0.0.1", "127.0.0.3"))
        self.assertNotEqual(first.external[1], second.external[1])
        self.assertEqual(self.peers[0].recvfrom(100), (b"one", first.external))
        self.assertEqual(self.peers[1].recvfrom(100), (b"three", second.external))
        self.assertEqual(first.peers, {a, (a[0], a[1] + 1)})

    def test_inbound_only_from_peers_and_idle_mappings_expire(self) -> None:
        inside = ("10.9.0.2", 40000)
        a = self.peers[0].getsockname()
        self.table.outbound(inside, a, b"out", 1.0)
        mapping = self.table.mappings[("10.9.0.2", 40000, a[0])]
        mapping.sock.setblocking(True)
        self.peers[1].sendto(b"stranger", mapping.external)
        self.table.inbound(mapping, 50.0)
        self.assertEqual(mapping.last, 1.0, "a stranger's datagram must not count")
        self.peers[0].sendto(b"answer", mapping.external)
        self.table.inbound(mapping, 60.0)
        self.assertEqual(mapping.last, 60.0)
        self.table.expire(60.0 + 120.0)
        self.assertEqual(len(self.table.mappings), 1)
        self.table.expire(60.0 + 121.0)
        self.assertEqual(self.table.mappings, {})


class StunTests(unittest.TestCase):
    def request(self) -> bytes:
        change = struct.pack("!HHI", 0x0003, 4, 0x6)
        return struct.pack("!HHI", upnp.BINDING_REQUEST, len(change), upnp.MAGIC_COOKIE) + b"T" * 12 + change

    def test_binding_response_reports_the_source(self) -> None:
        answer = upnp.binding_response(self.request(), ("198.51.100.11", 42831))
        assert answer is not None
        kind, length, cookie = struct.unpack("!HHI", answer[:8])
        self.assertEqual((kind, cookie, answer[8:20]), (upnp.BINDING_SUCCESS, upnp.MAGIC_COOKIE, b"T" * 12))
        self.assertEqual(length, len(answer) - 20)
        attr, alen, _, family, port, ip = struct.unpack("!HHBBH4s", answer[20:32])
        self.assertEqual((attr, alen, family, port, socket.inet_ntoa(ip)), (1, 8, 1, 42831, "198.51.100.11"))
        attr, _, _, _, xport, xip = struct.unpack("!HHBBH4s", answer[32:44])
        self.assertEqual(attr, upnp.XOR_MAPPED_ADDRESS)
        self.assertEqual(xport ^ 0x2112, 42831)
        self.assertEqual(socket.inet_ntoa(bytes(a ^ b for a, b in zip(xip, answer[4:8]))), "198.51.100.11")

    def test_other_messages_are_ignored(self) -> None:
        self.assertIsNone(upnp.binding_response(b"\x00\x01" + b"\0" * 10, ("192.0.2.1", 1)))
        indication = struct.pack("!HHI", 0x0011, 0, upnp.MAGIC_COOKIE) + b"T" * 12
        self.assertIsNone(upnp.binding_response(indication, ("192.0.2.1", 1)))
        old = struct.pack("!HHI", 0x0001, 0, 0x12345678) + b"T" * 12
        self.assertIsNone(upnp.binding_response(old, ("192.0.2.1", 1)))

    def test_miniupnpd_conf(self) -> None:
        conf = upnp.miniupnpd_conf("198.51.100.14", "10.4.0.0/24", nat.STUN_PORT, "u-u-i-d")
        for line in (
            "ext_ifname=wan", "listening_ip=lan", "enable_natpmp=yes", "secure_mode=yes",
            "ext_perform_stun=yes", "ext_stun_host=198.51.100.14", f"ext_stun_port={nat.STUN_PORT}",
            f"upnp_table_name={nat.UPNP_TABLE}", "allow 1024-65535 10.4.0.0/24 1024-65535",
        ):
            self.assertIn(line + "\n", conf)
