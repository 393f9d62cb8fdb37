"""
System tests of the network lab itself: it leaves no trace, its NATs behave as named, and
Miredo alone makes Teredo work across it (the reference scenario every role test builds on).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any
from pathlib import Path
from unittest import mock

from twisted.trial import unittest

from teredonode.errors import LabError
from teredonode.lab import nat
from teredonode.lab.lab import Lab
from teredonode.lab.nodes import REPO_ROOT

from tests.system.lab_fixture import lab_fixture, skip_reason, use_lab
from tests.system.bpf_support import fast_path_skip_reason

OTHER_LAB = re.compile(r"^tn[0-9a-f]{5}-")


def host_snapshot(include_labs: bool = False) -> tuple[set[str], set[str]]:
    """
    The host namespace's view: namespace names and links (name and flags).  Namespaces of
    other concurrently running labs are ignored; everything else must be identical.
    """
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    names = {line.split()[0] for line in netns.splitlines() if line.strip()}
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, timeout=10).stdout
    return {n for n in names if include_labs or not OTHER_LAB.match(n)}, {" ".join(line.split()) for line in links.splitlines()}


def lab_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teredonode.lab.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO_ROOT),
    )


class TopologyTests(unittest.TestCase):
    """
    The lab builds, connects what it should, and disappears without a trace.
    """

    def test_up_down_leaves_no_trace(self) -> None:
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        before = host_snapshot()
        with lab_fixture("default") as lab:
            prefix = lab.prefix
            during_ns, during_links = host_snapshot(include_labs=True)
            self.assertTrue({lab.ns(h) for h in lab.plan.hosts} <= during_ns)
            # Nothing of the lab ever appears among the host's own links.
            self.assertEqual(during_links, before[1])
        after = host_snapshot()
        self.assertEqual(after, before)
        self.assertFalse([n for n in after[0] if n.startswith(prefix)])

    def test_reachability(self) -> None:
        lab = use_lab(self, "default")
        # Behind a NAT, the client reaches the server's public address...
        ok = lab.exec("client1", ["ping", "-c", "1", "-W", "2", lab.ipv4("server")], timeout=10)
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        # ... both server addresses answer (Teredo needs primary and primary + 1) ...
        ok = lab.exec("dualhost", ["ping", "-c", "1", "-W", "2", lab.host("server").ipv4[1]], timeout=10)
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        # ... the IPv6 network connects v6host and the native hosts ...
        ok = lab.exec("v6host", ["ping", "-c", "1", "-W", "2", lab.ipv6("dualhost")], timeout=10)
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        # ... routes Teredo's prefix to the relay ...
        route = lab.exec("inet", ["ip", "-6", "route", "get", "2001:0:cb00:710a::1"], timeout=10)
        self.assertIn(f"via {lab.ipv6('relay')}", route.stdout)
        # ... and nothing has a way out of the lab: no default route leaves the bridge namespace.
        routes = lab.exec("inet", ["ip", "route", "show", "default"], timeout=10)
        self.assertEqual(routes.stdout.strip(), "")
        # Private addresses exist only behind NATs; the accept_dad/accept_ra settings are applied.
        self.assertTrue(lab.ipv4("client1").startswith("10."))
        sysctl = lab.exec("client1", ["sysctl", "-n", "net.ipv6.conf.all.accept_dad", "net.ipv6.conf.eth0.accept_ra"], timeout=10)
        self.assertEqual(sysctl.stdout.split(), ["0", "0"])

    def test_failed_build_leaves_no_trace(self) -> None:
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        before = host_snapshot()
        base = Path(tempfile.mkdtemp(prefix="teredo-lab-test-"))
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", str(base)], timeout=10))
        with mock.patch.object(nat, "apply", side_effect=LabError("injected failure")):
            self.assertRaises(LabError, Lab.up, "default", base)
        with mock.patch.object(nat, "apply", side_effect=KeyboardInterrupt):
            self.assertRaises(KeyboardInterrupt, Lab.up, "default", base)
        self.assertEqual(host_snapshot(), before)
        self.assertEqual(list(base.iterdir()), [])

    def test_cli_up_then_down_from_another_process(self) -> None:
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        before = host_snapshot()
        base = tempfile.mkdtemp(prefix="teredo-lab-test-")
        env = dict(os.environ, TEREDO_LAB_STATE_DIR=base)
        self.addCleanup(lambda: (lab_cli(["down", "--all"], env), subprocess.run(["rm", "-rf", base], timeout=10)))
        started = time.monotonic()
        up = lab_cli(["up", "--scenario", "miredo-reference"], env)
        self.assertEqual(up.returncode, 0, up.stderr)
        found = re.search(r"lab (tn[0-9a-f]{5}) is up", up.stdout)
        assert found is not None, up.stdout
        prefix = found.group(1)
        status = lab_cli(["status"], env)
        self.assertIn(f"{prefix}-client1", status.stdout)
        ran = lab_cli(["exec", "client1", "--", "ping", "-c", "1", "-W", "2", "203.0.113.10"], env)
        self.assertEqual(ran.returncode, 0, ran.stdout + ran.stderr)
        down = lab_cli(["down"], env)
        self.assertEqual(down.returncode, 0, down.stderr)
        self.assertLess(time.monotonic() - started, 30)
        self.assertEqual(host_snapshot(), before)
        again = lab_cli(["down"], env)
        self.assertEqual(again.returncode, 1)
        self.assertEqual(len(again.stderr.strip().splitlines()), 1)


class NatModeTests(unittest.TestCase):
    """
    Each NAT mode behaves as its name says, observed with UDP probes from both sides.
    """

    def setUp(self) -> None:
        self.lab = use_lab(self, "nat-modes")

    def observe(self, client: str) -> dict[str, Any]:
        """
        From C{client} port 40000: the mapping seen by the relay, whether an unsolicited packet
        from dualhost to that mapping gets in, then the mappings seen by dualhost and server.
        """
        lab = self.lab
        with lab.agent(client, 40000, 30) as c, lab.agent("relay", 5000, 30), lab.agent(
            "dualhost", 6000, 30
        ) as d, lab.agent("server", 5001, 30):

            def seenBy(host: str, port: int) -> tuple[str, int] | None:
                # Each agent needs a moment to bind (more on a loaded machine): ask again
                # until it answers, 10 s at most.
                for _ in range(20):
                    mapping = c.mapping_seen_by(lab.ipv4(host), port, timeout=0.5)
                    if mapping:
                        return mapping
                return None

            first = seenBy("relay", 5000)
            self.assertIsNotNone(first, f"{client}: no answer from the relay's probe")
            assert isinstance(first, tuple)
            d.send(first[0], first[1], "unsolicited")
            unsolicited = c.recv(1.0)
            return {
                "first": first,
                "unsolicited_in": unsolicited is not None and unsolicited[1] == "unsolicited",
                "dualhost": seenBy("dualhost", 6000),
                "server": seenBy("server", 5001),
            }

    def test_none_is_public(self) -> None:
        seen = self.observe("client1")
        self.assertEqual(seen["first"], (self.lab.ipv4("client1"), 40000))
        self.assertTrue(seen["unsolicited_in"])

    def test_cone_is_endpoint_independent(self) -> None:
        seen = self.observe("client2")
        public = (self.lab.ipv4("nat2"), 40000)
        self.assertEqual(seen["first"], public)
        self.assertTrue(seen["unsolicited_in"], "a cone NAT lets anyone reach the mapping")
        self.assertEqual(seen["dualhost"], public)
        self.assertEqual(seen["server"], public)

    def test_port_restricted_drops_unsolicited_and_keeps_port(self) -> None:
        seen = self.observe("client3")
        public = (self.lab.ipv4("nat3"), 40000)
        self.assertEqual(seen["first"], public)
        self.assertFalse(seen["unsolicited_in"], "unsolicited inbound UDP must be dropped")
        # The dropped packet left no conntrack state: the later mapping keeps the port.
        self.assertEqual(seen["dualhost"], public)
        self.assertEqual(seen["server"], public)

    def test_masquerade_clashes_after_unsolicited(self) -> None:
        seen = self.observe("client4")
        self.assertEqual(seen["first"], (self.lab.ipv4("nat4"), 40000))
        self.assertFalse(seen["unsolicited_in"])
        # The unsolicited packet's confirmed conntrack entry forces a different port.
        self.assertEqual(seen["dualhost"][0], self.lab.ipv4("nat4"))
        self.assertNotEqual(seen["dualhost"][1], 40000)

    def test_symmetric_changes_port_per_destination(self) -> None:
        seen = self.observe("client5")
        ports = {seen["first"][1], seen["dualhost"][1], seen["server"][1]}
        self.assertEqual(len(ports), 3, f"one port per destination expected, got {seen}")
        self.assertFalse(seen["unsolicited_in"])

    def test_switching_modes_flushes_state(self) -> None:
        # The port-restricted router, made a cone: unsolicited inbound now gets in.
        self.lab.set_nat_mode("nat3", "cone")
        seen = self.observe("client3")
        self.assertTrue(seen["unsolicited_in"])
        rules = self.lab.exec("nat3", ["nft", "list", "ruleset"], timeout=10).stdout
        self.assertIn("dnat to", rules)
        self.assertNotIn("inbound_filter", rules)


def _server_hex(ipv4: str) -> str:
    a, b, c, d = (int(x) for x in ipv4.split("."))
    return f"{a << 8 | b:x}:{c << 8 | d:x}"


def _tun_packets(lab: Lab, host: str, interface: str) -> int:
    """
    Packets through C{interface} on C{host}, both directions (from its sysfs counters).
    """
    out = lab.exec(
        host,
        ["cat", f"/sys/class/net/{interface}/statistics/rx_packets", f"/sys/class/net/{interface}/statistics/tx_packets"],
        timeout=10,
    ).stdout.split()
    return sum(int(x) for x in out)


class MiredoReferenceTests(unittest.TestCase):
    """
    The lab proven with Miredo alone: a Miredo client behind a port-restricted NAT qualifies
    against miredo-server and reaches v6host through a Miredo relay, and back.
    """

    QUALIFY_TIMEOUT = 20.0

    def test_client_behind_port_restricted_nat_reaches_v6host_via_relay(self) -> None:
        lab = use_lab(self, "miredo-reference", need_miredo=True)
        self.assertEqual(lab.host("nat1").nat_mode, "port-restricted")
        nodes = [
            lab.start_miredo("server", "server", "server"),
            lab.start_miredo("relay", "relay", "relay"),
        ]
        self.assertTrue(lab.wait_udp_listening("server", 3544, 10), nodes[0].log_tail())
        started = time.monotonic()
        nodes.append(lab.start_miredo("client1", "client1", "client"))
        address = lab.wait_teredo_address("client1", self.QUALIFY_TIMEOUT)
        for node in nodes:
            self.assertIsNone(node.exit_code(), f"{node.record.node} exited: {node.log_tail()}")
        assert address is not None, f"no qualification within {self.QUALIFY_TIMEOUT:g}s: {nodes[2].log_tail()}"
        # One RS/RA exchange; Miredo's retry after a lost RS alone would take 4 s.
        self.assertLess(time.monotonic() - started, 4.0)
        # 2001:0:<server IPv4 in hex>:<flags>:<~port>:<~ip>, server 203.0.113.10 = cb00:710a.
        self.assertTrue(
            address.startswith(f"2001:0:{_server_hex(lab.ipv4('server'))}:"), address
        )
        # The obfuscated mapped address is the NAT's public address (bits inverted).
        groups = address.split(":")
        mapped = int(groups[6], 16) << 16 | int(groups[7], 16)
        mapped ^= 0xFFFFFFFF
        self.assertEqual(".".join(str(mapped >> s & 0xFF) for s in (24, 16, 8, 0)), lab.ipv4("nat1"))

        relay_before = _tun_packets(lab, "relay", "teredo-relay")
        ping = lab.exec("client1", ["ping", "-6", "-c", "3", "-i", "0.2", "-w", "10", lab.ipv6("v6host")], timeout=15)
        self.assertEqual(ping.returncode, 0, ping.stdout + ping.stderr)
        self.assertIn("3 received", ping.stdout)
        # The replies came back through the Miredo relay's tunnel.
        self.assertGreater(_tun_packets(lab, "relay", "teredo-relay"), relay_before)

        back = lab.exec("v6host", ["ping", "-6", "-c", "3", "-i", "0.2", "-w", "10", address], timeout=15)
        self.assertEqual(back.returncode, 0, back.stdout + back.stderr)


class DemoTests(unittest.TestCase):
    """
    The demo's table on a fixture lab: with Miredo in every role it can play, every Miredo
    path works; the dualhost row is "n/a" or, once our host-specific relay exists, a real row.
    """

    def test_demo_with_miredo(self) -> None:
        import io

        from teredonode.lab.demo import demo_on

        lab = use_lab(self, "default", need_miredo=True)
        out = io.StringIO()
        ok, rows = demo_on(lab, ["server", "relay", "client"], out)
        table = out.getvalue()
        by_path = {r.path: r for r in rows}
        for path in (
            "client1 -> v6host",
            "v6host -> client1",
            "client2 -> v6host",
            "v6host -> client2",
            "client1 -> client2 (across both NATs)",
            "client2 -> client1 (across both NATs)",
        ):
            self.assertTrue(by_path[path].ok, f"{path}: {by_path[path].result}\n{table}")
        self.assertTrue(by_path["client1 -> v6host"].via.startswith("relay"), table)
        self.assertEqual(by_path["client1 -> client2 (across both NATs)"].via, "direct", table)
        dual = by_path["dualhost -> client1 (host-specific relay)"]
        if not dual.counts:
            self.assertIn("Miredo has no host-specific relay", dual.result)
        self.assertEqual(ok, all(r.ok for r in rows if r.counts), table)

    def test_demo_ours_on_the_fast_path(self) -> None:
        """
        Our roles alone (the README's main job): every path works, and where BPF can be
        loaded the server and relay carried the demo's traffic in the kernel, as the
        demo's closing lines say.
        """
        import io

        from teredonode.lab.demo import demo_on

        lab = use_lab(self, "default")
        out = io.StringIO()
        ok, rows = demo_on(lab, [], out)
        table = out.getvalue()
        self.assertTrue(ok, table)
        self.assertTrue(all(r.ok for r in rows if r.counts), table)
        clients = [f"client{k}" for k in range(1, 5)]
        lines = {line.split(":")[0]: line for line in table.splitlines()
                 if line.startswith(tuple(f"{n}:" for n in ("server", "relay", *clients)))}
        self.assertEqual(sorted(lines), sorted(["relay", "server", *clients]), table)
        if fast_path_skip_reason() is not None:
            self.assertEqual(lines["server"], "server: Python path", table)
            return
        # client1 (port-restricted NAT) reaches v6host through the relay and client2 directly.
        for role, what in (("server", "RAs answered"), ("relay", "packets carried"), ("client1", "packets carried")):
            found = re.search(rf"kernel fast path on .+: (\d+) {what} in the kernel", lines[role])
            assert found is not None, table
            self.assertGreater(int(found.group(1)), 0, table)

    def test_demo_reports_missing_roles_per_row(self) -> None:
        import io

        from teredonode.lab.demo import demo_on

        lab = use_lab(self, "miredo-reference")
        out = io.StringIO()
        ok, rows = demo_on(lab, [], out)
        for row in rows:
            # Every row either ran (a result with a count) or names why not, per role.
            self.assertTrue(
                row.result.startswith(("ok ", "FAIL ")) or "role not built yet" in row.result
                or "failed" in row.result or "not qualified" in row.result,
                row.result,
            )
        if any("role not built yet" in r.result for r in rows):
            self.assertFalse(ok)


class PreflightTests(unittest.TestCase):
    """
    Where a lab cannot run, C{teredo lab} says why in one line and exits non-zero (runs anywhere).
    """

    def run_main(self, argv: list[str]) -> tuple[int, str]:
        import contextlib
        import io

        from teredonode.lab.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        return code, err.getvalue()

    def test_not_root(self) -> None:
        with mock.patch("os.geteuid", return_value=1000):
            code, err = self.run_main(["up"])
        self.assertEqual(code, 1)
        self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertIn("needs root", err)

    def test_no_tun(self) -> None:
        real_stat = os.stat

        def fake_stat(path, *args, **kwargs):
            if str(path) == "/dev/net/tun":
                raise FileNotFoundError(path)
            return real_stat(path, *args, **kwargs)

        with mock.patch("os.geteuid", return_value=0), mock.patch("os.stat", side_effect=fake_stat):
            code, err = self.run_main(["up"])
        self.assertEqual(code, 1)
        self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertIn("/dev/net/tun", err)

    def test_unknown_scenario(self) -> None:
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        code, err = self.run_main(["up", "--scenario", "nope"])
        self.assertEqual(code, 1)
        self.assertIn("unknown scenario 'nope'", err)
