"""
RFC 6081 Figure 1 as data (L{teredonode.lab.matrix}), the expectation it gives each cell for a
client's set of extensions, and the rendering of a measured matrix.  No lab: results are built
by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from twisted.trial import unittest

from teredonode.errors import LabError
from teredonode.lab import matrix
from teredonode.lab.matrix import (
    FIGURE1_MATRIX,
    KINDS,
    MatrixResult,
    Trial,
    expectation,
    parse_cell,
    replace_between_markers,
)
from teredonode.lab.nat import FIGURE1

DOC = Path(__file__).resolve().parents[2] / "docs" / "nat-traversal.md"


def _result(kinds: tuple[str, ...], trials: list[Trial], impls: tuple[str, ...] = ("teredonode",)) -> MatrixResult:
    result = MatrixResult(kinds, impls, {"server": "teredonode", "relay": "teredonode"}, started="2026-01-01 00:00 UTC")
    for t in trials:
        result.trials[(t.impl, t.src, t.dst)] = t
    return result


def _trial(src: str, dst: str, received: int, first: float | None = 0.012, impl: str = "teredonode") -> Trial:
    return Trial(src, dst, impl, sent=3, received=received, first_reply=first if received else None, measured=True)


class Figure1DataTests(unittest.TestCase):
    """
    The figure as printed in RFC 6081 section 3.
    """

    def test_square_over_the_lab_kinds(self) -> None:
        self.assertEqual(KINDS, tuple(kind for _, kind in FIGURE1))
        self.assertEqual(len(FIGURE1_MATRIX), 81)

    def test_counts(self) -> None:
        """
        16 cells RFC 4380 alone serves (the 4 x 4 of cone and restricted NATs), 18 SNS alone,
        9 that need a second extension, 38 without connectivity.
        """
        values = list(FIGURE1_MATRIX.values())
        self.assertEqual(sum(v == frozenset() for v in values), 16)
        self.assertEqual(sum(v == frozenset({"SNS"}) for v in values), 18)
        self.assertEqual(sum(v is not None and len(v) == 2 for v in values), 9)
        self.assertEqual(sum(v is None for v in values), 38)

    def test_cells_from_the_figure(self) -> None:
        self.assertEqual(FIGURE1_MATRIX[("cone", "address-symmetric")], frozenset({"SNS"}))
        self.assertIsNone(FIGURE1_MATRIX[("address-restricted", "address-symmetric")])
        self.assertEqual(FIGURE1_MATRIX[("port-restricted", "port-preserving-symmetric")], frozenset({"SNS", "PP"}))
        self.assertEqual(FIGURE1_MATRIX[("upnp-port-symmetric", "upnp-port-restricted")], frozenset({"SNS", "UPnP"}))
        self.assertIsNone(FIGURE1_MATRIX[("upnp-port-symmetric", "port-restricted")])

    def test_not_symmetric_where_the_figure_is_not(self) -> None:
        """
        Port-preserving -> sequential is SNS+SS, sequential -> port-preserving is No.
        """
        self.assertEqual(
            FIGURE1_MATRIX[("port-preserving-symmetric", "sequential-symmetric")], frozenset({"SNS", "SS"})
        )
        self.assertIsNone(FIGURE1_MATRIX[("sequential-symmetric", "port-preserving-symmetric")])

    def test_parse_cell(self) -> None:
        self.assertEqual(parse_cell("Yes"), frozenset())
        self.assertIsNone(parse_cell("No"))
        self.assertEqual(parse_cell("SNS+SS"), frozenset({"SNS", "SS"}))
        self.assertRaises(ValueError, parse_cell, "SNS+XYZ")

    def test_doc_table_is_the_data(self) -> None:
        """
        docs/nat-traversal.md section 4 prints the same figure.
        """
        text = DOC.read_text()
        section = text[text.index("## 4. The connectivity matrix"):text.index("## 5.")]
        rows = [
            line for line in section.splitlines()
            if line.startswith("| ") and line.count("|") == 11 and "source" not in line
        ]
        self.assertEqual(len(rows), 9)
        for i, line in enumerate(rows):
            cells = [c.strip() for c in line.strip("|").split("|")][1:]
            self.assertEqual(tuple(cells), matrix.FIGURE1_CELLS[i], line)


class ExpectationTests(unittest.TestCase):
    """
    What a cell demands of a client, given the extensions it has.
    """

    def test_plain_rfc4380_cell_must_work(self) -> None:
        e = expectation("cone", "port-restricted", frozenset())
        self.assertTrue(e.must_work)
        self.assertEqual(e.label, "Yes")

    def test_missing_extension_does_not_fail(self) -> None:
        e = expectation("port-restricted", "sequential-symmetric", frozenset())
        self.assertFalse(e.must_work)
        self.assertEqual(e.label, "needs SNS+SS")
        partial = expectation("port-restricted", "sequential-symmetric", frozenset({"SNS"}))
        self.assertEqual(partial.label, "needs SS")
        self.assertFalse(partial.must_work)

    def test_expectation_tightens_when_extensions_land(self) -> None:
        e = expectation("port-restricted", "sequential-symmetric", frozenset({"SNS", "SS", "PP"}))
        self.assertTrue(e.must_work)
        self.assertEqual(e.label, "SNS+SS")

    def test_no_cell(self) -> None:
        e = expectation("port-symmetric", "port-symmetric", frozenset(matrix.EXTENSIONS))
        self.assertFalse(e.must_work)
        self.assertEqual(e.label, "No")

    def test_unknown_kind(self) -> None:
        self.assertRaises(LabError, expectation, "masquerade", "cone", frozenset())

    def test_client_extensions_are_known_names(self) -> None:
        """
        Whatever the client declares, only Figure 1's names count; Miredo has none.
        """
        self.assertLessEqual(matrix.client_extensions("teredonode"), frozenset(matrix.EXTENSIONS))
        self.assertEqual(matrix.client_extensions("miredo"), frozenset())

    def test_parse_kinds(self) -> None:
        self.assertEqual(matrix.parse_kinds(None, True), matrix.QUICK_KINDS)
        self.assertEqual(matrix.parse_kinds(None, False), KINDS)
        self.assertEqual(matrix.parse_kinds("port-symmetric, cone", False), ("cone", "port-symmetric"))
        self.assertRaises(LabError, matrix.parse_kinds, "masquerade", False)
        self.assertRaises(LabError, matrix.parse_kinds, "nonsense", False)


class VerdictTests(unittest.TestCase):
    def test_verdicts(self) -> None:
        must = expectation("cone", "cone", frozenset())
        needs = expectation("cone", "port-symmetric", frozenset())
        no = expectation("port-symmetric", "port-symmetric", frozenset())
        self.assertEqual(matrix.verdict(must, _trial("cone", "cone", 3)), ("ok 12 ms (Yes)", False))
        self.assertEqual(matrix.verdict(must, _trial("cone", "cone", 0)), ("FAIL (Yes)", True))
        self.assertEqual(matrix.verdict(needs, _trial("cone", "port-symmetric", 0)), ("no (needs SNS)", False))
        self.assertEqual(
            matrix.verdict(needs, _trial("cone", "port-symmetric", 2, 2.5)), ("ok 2.5 s (without SNS)", False)
        )
        self.assertEqual(matrix.verdict(no, _trial("port-symmetric", "port-symmetric", 0)), ("no (No)", False))
        self.assertEqual(matrix.verdict(no, _trial("port-symmetric", "port-symmetric", 1)), ("ok 12 ms (unexpected)", False))

    def test_unmeasured_cell_that_must_work_fails(self) -> None:
        must = expectation("cone", "cone", frozenset())
        text, failed = matrix.verdict(must, Trial("cone", "cone", "teredonode", note="not run: time budget"))
        self.assertEqual(text, "not run: time budget (Yes)")
        self.assertTrue(failed)
        self.assertFalse(matrix.verdict(expectation("cone", "port-symmetric", frozenset()), None)[1])

    def test_unqualified_client(self) -> None:
        must = expectation("cone", "cone", frozenset())
        trial = Trial("cone", "cone", "teredonode", note="not qualified: B (cone)", measured=True)
        self.assertEqual(matrix.verdict(must, trial), ("FAIL not qualified: B (cone) (Yes)", True))


class RenderTests(unittest.TestCase):
    """
    Rendering, for a client with no RFC 6081 extension (whatever ours declares today).
    """

    kinds = ("cone", "port-restricted", "port-symmetric")

    def setUp(self) -> None:
        self.patch(matrix, "client_extensions", lambda impl: frozenset())

    def full(self) -> MatrixResult:
        trials = []
        for src in self.kinds:
            for dst in self.kinds:
                works = "port-symmetric" not in (src, dst)
                trials.append(_trial(src, dst, 3 if works else 0))
        return _result(self.kinds, trials)

    def test_table_shape(self) -> None:
        lines = matrix.render_table(self.full(), "teredonode").splitlines()
        self.assertEqual(len(lines), 2 + len(self.kinds))
        self.assertEqual(lines[0], "| source ↓ / destination → | Cone | Port restricted | Port-symmetric |")
        self.assertEqual(lines[1], "|---|---|---|---|")
        self.assertEqual(
            lines[3], "| Port restricted | ok 12 ms (Yes) | ok 12 ms (Yes) | no (No) |"
        )
        self.assertEqual(lines[4], "| Port-symmetric | no (needs SNS) | no (No) | no (No) |")

    def test_failures_and_report(self) -> None:
        result = self.full()
        self.assertEqual(result.failures(), [])
        result.trials[("teredonode", "cone", "port-restricted")] = _trial("cone", "port-restricted", 0)
        self.assertEqual(result.failures(), [("teredonode", "cone", "port-restricted")])
        report = matrix.render_report(result)
        self.assertIn("FAIL (Yes)", report)
        self.assertIn("1 cell(s) that must work failed: teredonode cone -> port-restricted", report)
        self.assertIn("3/4 cells that must work work", report)

    def test_json(self) -> None:
        doc = json.loads(json.dumps(self.full().to_json()))
        self.assertEqual(len(doc["cells"]), 9)
        cell = next(c for c in doc["cells"] if c["src"] == "cone" and c["dst"] == "port-symmetric")
        self.assertEqual(
            (cell["figure1"], cell["expected"], cell["must_work"], cell["ok"], cell["failed"]),
            ("SNS", "needs SNS", False, False, False),
        )
        self.assertEqual(doc["failed"], 0)

    def test_two_implementations(self) -> None:
        trials = [_trial(s, d, 1, impl=i) for i in ("teredonode", "miredo") for s in self.kinds for d in self.kinds]
        report = matrix.render_report(_result(self.kinds, trials, ("teredonode", "miredo")))
        self.assertIn("teredonode clients:", report)
        self.assertIn("miredo clients:", report)
        self.assertIn("18/18 cells measured", report)


class DocMarkerTests(unittest.TestCase):
    def test_replace_between_markers(self) -> None:
        text = "a\n<!-- matrix:begin -->\nold\n<!-- matrix:end -->\nb\n"
        self.assertEqual(
            replace_between_markers(text, "new table\n"),
            "a\n<!-- matrix:begin -->\nnew table\n<!-- matrix:end -->\nb\n",
        )

    def test_no_markers(self) -> None:
        self.assertRaises(LabError, replace_between_markers, "no markers here", "x")

    def test_doc_section_names_date_and_versions(self) -> None:
        result = RenderTests().full()
        result.versions = {"teredonode": "0.1.0"}
        section = matrix.render_doc_section(result)
        self.assertIn("Measured 2026-01-01 00:00 UTC", section)
        self.assertIn("teredonode 0.1.0", section)
        self.assertTrue(re.search(r"^\| Cone \| ok 12 ms \(Yes\)", section, re.M))

    def test_the_doc_has_markers(self) -> None:
        text = DOC.read_text()
        self.assertEqual(text.count(matrix.MARK_BEGIN), 1)
        self.assertEqual(text.count(matrix.MARK_END), 1)


class CommandLineTests(unittest.TestCase):
    """
    C{teredo lab matrix} refuses bad input in one line, before building anything.
    """

    def run_lab(self, *argv: str) -> tuple[int, str]:
        import io
        import sys

        from teredonode.lab import cli

        err = io.StringIO()
        self.patch(sys, "stderr", err)
        return cli.main(list(argv)), err.getvalue()

    def test_unknown_kind(self) -> None:
        code, err = self.run_lab("matrix", "--kinds", "cone,bogus")
        self.assertEqual(code, 1)
        self.assertIn("--kinds: 'bogus' is not a kind of RFC 6081 Figure 1", err)

    def test_unknown_miredo_role(self) -> None:
        code, err = self.run_lab("matrix", "--quick", "--with-miredo", "host-relay")
        self.assertEqual(code, 1)
        self.assertIn("--with-miredo: unknown role 'host-relay'", err)


class SavedResultTests(unittest.TestCase):
    """
    C{--json} output read back by C{--from-json} renders the same.
    """

    def test_round_trip(self) -> None:
        result = RenderTests().full()
        result.trials[("teredonode", "cone", "cone")] = Trial(
            "cone", "cone", "teredonode", note="not qualified: B (cone)", measured=True
        )
        result.trials[("teredonode", "cone", "port-symmetric")] = Trial(
            "cone", "port-symmetric", "teredonode", note="not run: time budget"
        )
        result.seconds, result.labs, result.versions = 12.5, 3, {"teredonode": "0.1.0"}
        again = MatrixResult.from_json(json.loads(json.dumps(result.to_json())))
        self.assertEqual(matrix.render_report(again), matrix.render_report(result))
        self.assertEqual(again.failures(), result.failures())
        self.assertEqual(matrix.render_doc_section(again), matrix.render_doc_section(result))

    def test_not_a_result(self) -> None:
        self.assertRaises(LabError, MatrixResult.from_json, {"kinds": ["cone"]})
        doc = RenderTests().full().to_json()
        doc["kinds"] = ["masquerade"]
        self.assertRaises(LabError, MatrixResult.from_json, doc)


class _PingOutput:
    def __init__(self, stdout: str) -> None:
        self.stdout = stdout


class _FakeLab:
    """
    Just enough of a lab for the port-guessing ping: records the command, answers with
    canned iputils output.
    """

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.argv: list[str] = []

    def exec(self, host: str, argv: list[str], timeout: float) -> _PingOutput:
        self.argv = argv
        return _PingOutput(self.stdout)


GUESS_HIT = """PING 2001:0:cb00:710a::2 from 2001:0:cb00:710a::1 : 56 data bytes
64 bytes from 2001:0:cb00:710a::2: icmp_seq=8 ttl=64 time=0.512 ms
64 bytes from 2001:0:cb00:710a::2: icmp_seq=9 ttl=64 time=0.301 ms

--- 2001:0:cb00:710a::2 ping statistics ---
9 packets transmitted, 2 received, 77.7778% packet loss, time 8012ms
"""

GUESS_MISS = """PING 2001:0:cb00:710a::2 from 2001:0:cb00:710a::1 : 56 data bytes

--- 2001:0:cb00:710a::2 ping statistics ---
20 packets transmitted, 0 received, 100% packet loss, time 19030ms
"""


class PortGuessingTests(unittest.TestCase):
    """
    C{--port-guessing}: which cells are measured again, the ping that measures them, and how
    their results are reported, apart from Figure 1's verdict.
    """

    kinds = ("cone", "port-restricted", "port-symmetric")

    def setUp(self) -> None:
        self.patch(matrix, "client_extensions", lambda impl: frozenset({"SNS"}))

    def test_which_cells_are_guessed(self) -> None:
        no = _trial("port-restricted", "port-symmetric", 0)
        self.assertTrue(matrix.wants_guess(no, "teredonode"))
        self.assertFalse(matrix.wants_guess(no, "miredo"), "only our clients guess")
        self.assertFalse(matrix.wants_guess(_trial("port-restricted", "port-symmetric", 2), "teredonode"))
        # A cell Figure 1 holds the client to is a failure, not a job for guessing.
        self.assertFalse(matrix.wants_guess(_trial("cone", "port-symmetric", 0), "teredonode"))
        unqualified = Trial("port-restricted", "port-symmetric", "teredonode", note="not qualified: A", measured=True)
        self.assertFalse(matrix.wants_guess(unqualified, "teredonode"))
        self.assertFalse(matrix.wants_guess(Trial("port-restricted", "port-symmetric", "teredonode"), "teredonode"))

    def test_guess_ping(self) -> None:
        lab = _FakeLab(GUESS_HIT)
        trial = Trial("port-restricted", "port-symmetric", "teredonode")
        matrix.guess_ping_trial(lab, trial, "client1", "2001:0:cb00:710a::1", "2001:0:cb00:710a::2")  # type: ignore[arg-type]
        argv = lab.argv
        self.assertEqual(argv[argv.index("-c") + 1], str(matrix.GUESS_PINGS))
        self.assertEqual(argv[argv.index("-i") + 1], f"{matrix.GUESS_INTERVAL:g}")
        # What ping sent, not what was asked: it stops early once replies and errors add up.
        self.assertEqual((trial.sent, trial.received, trial.measured), (9, 2, True))
        assert trial.first_reply is not None
        self.assertAlmostEqual(trial.first_reply, 7 * matrix.GUESS_INTERVAL + 0.000512)

        trial = Trial("port-restricted", "port-symmetric", "teredonode")
        matrix.guess_ping_trial(_FakeLab(GUESS_MISS), trial, "client1", "a", "b")  # type: ignore[arg-type]
        self.assertEqual((trial.sent, trial.received, trial.first_reply, trial.ok), (20, 0, None, False))

    def result(self) -> MatrixResult:
        trials = [_trial(s, d, 0 if "port-symmetric" in (s, d) and s != "cone" and d != "cone" else 3)
                  for s in self.kinds for d in self.kinds]
        result = _result(self.kinds, trials)
        result.port_guessing = True
        for (src, dst), received, searches in (
            (("port-restricted", "port-symmetric"), 2, 2),
            (("port-symmetric", "port-restricted"), 0, 2),
            (("port-symmetric", "port-symmetric"), 0, 0),
        ):
            result.guess_trials[("teredonode", src, dst)] = Trial(
                src, dst, "teredonode", sent=9 if received else 20, received=received,
                first_reply=6.9 if received else None, measured=True, searches=searches,
            )
        return result

    def test_reported_apart_from_the_verdict(self) -> None:
        result = self.result()
        plain = _result(self.kinds, list(result.trials.values()))
        self.assertEqual(result.failures(), [])
        self.assertEqual(matrix.render_table(result, "teredonode"), matrix.render_table(plain, "teredonode"))
        self.assertIn("| Port restricted | ok 12 ms (Yes) | ok 12 ms (Yes) | no (No) |", matrix.render_table(result, "teredonode"))
        text = matrix.render_guessing(result)
        self.assertIn("of the 3 cells they did not reach with their defaults", text)
        self.assertIn("1 reached in this run:", text)
        self.assertIn("- Port restricted → Port-symmetric: ok 6.9 s (2/9 replies)", text)
        self.assertIn("- not reached, searched, missed: Port-symmetric → Port restricted\n", text)
        self.assertTrue(text.endswith("- not reached, no search started: Port-symmetric → Port-symmetric"), text)
        self.assertNotIn("after a search", text)
        # Reached, but no search started: said so, not credited to port guessing.
        result.guess_trials[("teredonode", "port-symmetric", "port-symmetric")] = Trial(
            "port-symmetric", "port-symmetric", "teredonode", sent=20, received=3, first_reply=2.1, measured=True,
            searches=0,
        )
        text = matrix.render_guessing(result)
        self.assertIn("2 reached in this run, 1 of them after a search:", text)
        self.assertIn("- Port-symmetric → Port-symmetric: ok 2.1 s (no search started) (3/20 replies)", text)
        self.assertIn(text, matrix.render_report(result))
        self.assertIn(text, matrix.render_doc_section(result))
        self.assertIn("`teredo lab matrix --port-guessing`", matrix.render_doc_section(result))
        self.assertNotIn("Port guessing", matrix.render_report(plain))

    def test_round_trip(self) -> None:
        result = self.result()
        again = MatrixResult.from_json(json.loads(json.dumps(result.to_json())))
        self.assertTrue(again.port_guessing)
        self.assertEqual(matrix.render_guessing(again), matrix.render_guessing(result))
        self.assertEqual(matrix.render_doc_section(again), matrix.render_doc_section(result))
        # A result saved before --port-guessing existed still reads.
        doc = result.to_json()
        del doc["port_guessing"], doc["guess_cells"]
        self.assertFalse(MatrixResult.from_json(doc).port_guessing)
