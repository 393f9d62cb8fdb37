"""
C{teredo portmap}: arguments, output, one-line errors.  The network side is replaced by a
runner (the mappers have their own tests; the lab test runs the real command).
"""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from teredonode import cli
from teredonode.portmap import Mapping, PortMapError


def run(argv: list[str], runner: Any) -> tuple[int, str, str, Any]:
    out, err = io.StringIO(), io.StringIO()
    args = cli.build_parser().parse_args(["portmap", *argv])
    code = cli.portmap_command(args, out, err, runner)
    return code, out.getvalue(), err.getvalue(), args


class PortmapCliTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        seen = []

        def runner(args: Any) -> Any:
            seen.append(args)
            return Mapping("198.51.100.7", 3544, 3600, "natpmp"), None

        code, out, err, _ = run([], runner)
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out, "natpmp: 198.51.100.7:3544 -> port 3544 (3600 s)\n")
        self.assertEqual((seen[0].protocol, seen[0].port, seen[0].delete), ("auto", 3544, False))

    def test_json_with_pcp_nonce(self) -> None:
        code, out, _, _ = run(
            ["--protocol", "pcp", "--port", "40000", "--json"],
            lambda args: (Mapping("198.51.100.7", 40001, 120, "pcp"), "00" * 12),
        )
        self.assertEqual(code, 0)
        self.assertEqual(
            json.loads(out),
            {"protocol": "pcp", "external-address": "198.51.100.7", "external-port": 40001, "lifetime": 120,
             "pcp-nonce": "00" * 12},
        )

    def test_upnp_until_deleted(self) -> None:
        _, out, _, _ = run(["--protocol", "upnp"], lambda args: (Mapping("198.51.100.7", 3544, 0, "upnp"), None))
        self.assertEqual(out, "upnp: 198.51.100.7:3544 -> port 3544 (until deleted)\n")

    def test_delete(self) -> None:
        code, out, _, _ = run(["--delete", "--port", "40000", "--protocol", "upnp"], lambda args: (None, None))
        self.assertEqual((code, out), (0, "deleted the mapping of port 40000 (upnp)\n"))

    def test_failure_one_line(self) -> None:
        def runner(args: Any) -> Any:
            raise PortMapError("no port mapping: pcp: x; natpmp: y; upnp: z")

        code, out, err, _ = run([], runner)
        self.assertEqual((code, out, err), (1, "", "teredo portmap: no port mapping: pcp: x; natpmp: y; upnp: z\n"))

    def test_bad_port(self) -> None:
        code, _, err, _ = run(["--port", "0"], lambda args: self.fail("must not run"))
        self.assertEqual(code, 2)
        self.assertIn("--port must be 1..65535", err)

    def test_bad_protocol(self) -> None:
        err = io.StringIO()
        self.assertEqual(cli.main(["portmap", "--protocol", "stun"], io.StringIO(), err), 2)
