"""
The anycast scenario's plan and BIRD configurations, without building anything.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from teredonode.lab import bgp
from teredonode.lab.anycast import PingRun
from teredonode.lab.scenario import get_scenario
from teredonode.lab.topology import make_plan


class PlanTests(SynchronousTestCase):
    def test_relaysHaveOwnUnicastIPv4(self) -> None:
        """
        Two relay hosts, each with its own IPv4 and IPv6 address, the route gc sysctl;
        the router hashes on addresses only; no single "relay" host.
        """
        plan = make_plan(get_scenario("anycast"))
        self.assertTrue(plan.anycast)
        self.assertNotIn("relay", plan.hosts)
        r1, r2 = plan.hosts["relay1"], plan.hosts["relay2"]
        self.assertNotEqual(r1.ipv4, r2.ipv4)
        self.assertNotEqual(r1.ipv6, r2.ipv6)
        self.assertIn("net.ipv6.route.gc_interval=1", r1.sysctls)
        self.assertIn("net.ipv6.fib_multipath_hash_policy=3", plan.hosts["inet"].sysctls)

    def test_defaultScenarioUnchanged(self) -> None:
        plan = make_plan(get_scenario("default"))
        self.assertFalse(plan.anycast)
        self.assertEqual(plan.hosts["relay"].ipv4, ("203.0.113.20",))
        self.assertEqual(plan.hosts["inet"].sysctls, ())


class BirdConfigTests(SynchronousTestCase):
    def test_router(self) -> None:
        conf = bgp.router_conf([("relay1", "2001:db8::21"), ("relay2", "2001:db8::22")])
        self.assertIn("merge paths on;", conf)
        self.assertIn("neighbor 2001:db8::21 as 65001", conf)
        self.assertIn("neighbor 2001:db8::22 as 65001", conf)
        self.assertIn("if net = 2001::/32 then accept", conf)

    def test_relayAnnouncesOnlyFromHealthTable(self) -> None:
        conf = bgp.relay_conf("203.0.113.21", "2001:db8::21")
        self.assertIn(f"kernel table {bgp.HEALTH_TABLE};", conf)
        self.assertIn("learn;", conf)
        self.assertIn("table health;", conf)
        self.assertIn("import none;", conf)
        self.assertIn("next hop self;", conf)


class PingRunTests(SynchronousTestCase):
    def test_gapsAndLosses(self) -> None:
        run = PingRun({1: 10.0, 2: 10.1, 3: 10.2, 7: 11.0, 8: 11.1, 10: 11.3}, sent=40)
        self.assertAlmostEqual(run.largest_gap(), 0.8)
        self.assertEqual(run.first_after(10.5), 11.0)
        self.assertEqual(run.lost_after(10.5, tail=0)[:3], [9, 11, 12])
        self.assertEqual(run.lost(tail=0)[:3], [4, 5, 6])
        self.assertEqual(run.lost(tail=3.7), [])  # only seqs 1-2 are old enough to count
        self.assertEqual(run.first_after(20.0), None)
        self.assertEqual(run.lost_after(20.0), [-1])
