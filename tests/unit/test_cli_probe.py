"""
C{teredo probe}'s command line: server arguments, output formats, exit statuses.  The probe
itself is tested on the in-memory network (tests/protocol/test_probe.py) and in the lab.
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from teredonode import cli
from teredonode.probe import nat_verdict

SERVER = {
    "server": "192.0.2.1", "secondary": "192.0.2.2", "answers": True, "secondary-answers": True,
    "rtt-ms": 12.5, "secondary-rtt-ms": 13.0, "local-port": 4000, "mapped": "198.51.100.1:4000",
    "mapped-secondary": "198.51.100.1:4000", "cone-test": False, "mapping-per-destination": False,
    "filtering": "address-and-port-dependent",
    "mappings": [[4000, "198.51.100.1:4000", "192.0.2.1"], [4000, "198.51.100.1:4000", "192.0.2.2"]],
}


class ProbeCommandTests(SynchronousTestCase):
    def run_probe(self, argv: list[str]) -> tuple[int, str, str, list[Any]]:
        calls: list[Any] = []

        def runner(targets, timeout, attempts, upnp):
            calls.append((targets, timeout, attempts, upnp))
            report = nat_verdict([dict(SERVER)], upnp or None)
            report["packets"] = {"sent": 7, "received": 5}
            return report

        args = cli.build_parser().parse_args(["probe", *argv])
        out, err = io.StringIO(), io.StringIO()
        code = cli.probe_command(args, out, err, runner)
        return code, out.getvalue(), err.getvalue(), calls

    def test_text_and_targets(self) -> None:
        code, out, err, calls = self.run_probe(["192.0.2.1", "192.0.2.9,192.0.2.20", "--timeout", "1"])
        self.assertEqual(code, 0, err)
        self.assertEqual(calls, [([("192.0.2.1", "192.0.2.2"), ("192.0.2.9", "192.0.2.20")], 1.0, 2, True)])
        self.assertIn("NAT: port-restricted", out)
        self.assertIn("RFC 6081 Figure 1: UPnP Port-restricted", out)
        self.assertIn("datagrams: 7 sent, 5 received", out)
        self.assertIn("mapped address: 198.51.100.1:4000", out)
        self.assertIn("port-preserving: yes", out)
        self.assertIn("12.5 ms", out)

    def test_json(self) -> None:
        code, out, _, calls = self.run_probe(["192.0.2.1", "--json", "--no-upnp"])
        report = json.loads(out)
        self.assertEqual(calls[0][3], False)
        self.assertEqual(
            (code, report["nat"], report["kind"], report["upnp"], report["best"], report["packets"]["sent"]),
            (0, "port-restricted", "port-restricted", None, "192.0.2.1", 7),
        )

    def test_no_upnp_says_not_checked(self) -> None:
        _, out, _, _ = self.run_probe(["192.0.2.1", "--no-upnp"])
        self.assertIn("UPnP: not checked", out)

    def test_bad_arguments_are_one_line(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(cli.main(["probe", "a,b,c"], out, err), 1)
        self.assertEqual(err.getvalue().count("\n"), 1)
        self.assertIn("PRIMARY,SECONDARY", err.getvalue())
        err = io.StringIO()
        self.assertEqual(cli.main(["probe", "192.0.2.1", "--attempts", "0"], out, err), 2)
        err = io.StringIO()
        self.assertEqual(cli.main(["probe", "--config", "/nonexistent/teredo.toml"], out, err), 1)
        self.assertIn("no such file", err.getvalue())
