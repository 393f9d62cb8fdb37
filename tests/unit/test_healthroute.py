"""
The health route's rtnetlink messages (L{teredonode.healthroute}), without a kernel.
"""

from __future__ import annotations

import ipaddress
import struct

from twisted.trial.unittest import SynchronousTestCase

from teredonode import healthroute as hr

NET = ipaddress.IPv6Network("2001::/32")


def reply(routes: list[bytes], error: int | None = None, done: bool = False) -> bytes:
    out = b""
    for body in routes:
        out += struct.pack("=IHHII", 16 + len(body), hr.RTM_NEWROUTE, 2, 1, 0) + body
    if error is not None:
        out += struct.pack("=IHHII", 36, hr.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -error) + bytes(16)
    if done:
        out += struct.pack("=IHHII", 20, hr.NLMSG_DONE, 2, 1, 0) + bytes(4)
    return out


class EncodeParseTests(SynchronousTestCase):
    def test_newRouteLayout(self) -> None:
        """
        RTM_NEWROUTE: header length right, IPv6 /32, table attribute (the rtmsg byte
        saturates at 255), destination, interface, metric and lifetime attributes.
        """
        msg = hr.encodeRoute(hr.RTM_NEWROUTE, 0x505, 7, NET, 1000, ifindex=3, metric=1024, expires=3)
        length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
        self.assertEqual((length, kind, flags, seq), (len(msg), hr.RTM_NEWROUTE, 0x505, 7))
        family, dstLen, _, _, table = struct.unpack_from("=BBBBB", msg, 16)
        self.assertEqual((family, dstLen, table), (10, 32, 255))
        # The kernel's own reply format parses back to the same route.
        body = msg[16:]
        routes, error, done = hr.parseRoutes(reply([body]))
        self.assertEqual(routes[0]["table"], 1000)
        self.assertEqual(routes[0]["dst"], NET.network_address.packed)
        self.assertEqual(routes[0]["oif"], 3)
        self.assertEqual((error, done), (None, False))

    def test_dumpRequestFiltersOnTableOnly(self) -> None:
        msg = hr.encodeRoute(hr.RTM_GETROUTE, 0x301, 1, NET, 100)
        self.assertEqual(struct.unpack_from("=BBBBBBBBI", msg, 16), (10, 0, 0, 0, 100, 0, 0, 0, 0))

    def test_cacheinfoExpires(self) -> None:
        """
        The seconds left come from rta_cacheinfo.rta_expires, in USER_HZ ticks.
        """
        cache = struct.pack("=IIiIIIII", 0, 0, 250, 0, 0, 0, 0, 0)
        body = struct.pack("=BBBBBBBBI", 10, 32, 0, 0, 100, 4, 0, 1, 0)
        body += struct.pack("=HH", 4 + len(cache), hr.RTA_CACHEINFO) + cache
        routes, _, done = hr.parseRoutes(reply([body], done=True))
        self.assertEqual(routes[0]["expires"], 2.5)
        self.assertTrue(done)

    def test_errorsAndAcks(self) -> None:
        self.assertEqual(hr.parseRoutes(reply([], error=3))[1], 3)
        self.assertEqual(hr.parseRoutes(reply([], error=0))[1], 0)

    def test_garbageNeverRaises(self) -> None:
        import random

        rng = random.Random(4)
        good = reply([hr.encodeRoute(hr.RTM_NEWROUTE, 0, 1, NET, 100, ifindex=2)[16:]], done=True)
        for _ in range(2000):
            data = bytearray(good)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            hr.parseRoutes(bytes(data[: rng.randint(0, len(data))]))


class HealthSettingsTests(SynchronousTestCase):
    """
    The [relay] health keys (teredonode.config): defaults off, kernel tables refused, a
    lifetime that cannot outlive the refresh interval refused, one line each.
    """

    def parse(self, text: str):
        from teredonode.config import parse_config

        return parse_config("[relay]\nenabled = true\n" + text, "x.toml").roles["relay"]

    def test_defaults(self) -> None:
        relay = self.parse("")
        self.assertEqual(
            (relay.health_table, relay.health_interval, relay.health_lifetime, relay.drain_time), (0, 1, 3, 5)
        )

    def test_kernelTablesRefused(self) -> None:
        from teredonode.errors import ConfigError

        for table in (253, 254, 255):
            with self.assertRaises(ConfigError) as e:
                self.parse(f"health-table = {table}\n")
            self.assertIn("[relay] health-table", str(e.exception))
            self.assertNotIn("\n", str(e.exception))
        self.assertEqual(self.parse("health-table = 100\n").health_table, 100)

    def test_lifetimeMustExceedInterval(self) -> None:
        from teredonode.errors import ConfigError

        with self.assertRaises(ConfigError) as e:
            self.parse("health-interval = 3\nhealth-lifetime = 3\n")
        self.assertIn("[relay] health-lifetime: must exceed health-interval", str(e.exception))
