"""
C{teredo lab matrix --quick} on real labs: every cell RFC 6081 Figure 1 says plain RFC 4380,
or the extensions our client has, serves works between two of our clients, the report has one row and column per kind, and the
labs it built are gone afterwards.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path

from twisted.trial import unittest

from teredonode.lab import matrix
from teredonode.lab.topology import existing_namespaces

from tests.system.lab_fixture import skip_reason


class QuickMatrixTests(unittest.TestCase):
    def test_quick_matrix(self) -> None:
        reason = skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        base = Path(tempfile.mkdtemp(prefix="teredo-lab-test-"))
        os.chmod(base, 0o755)
        self.addCleanup(shutil.rmtree, base, True)
        progress = io.StringIO()

        result = matrix.run_matrix(matrix.QUICK_KINDS, progress=progress, base=base)

        # Other labs may come and go meanwhile: look only for those this run built.
        prefixes = re.findall(r"^lab (\S+) for row ", progress.getvalue(), re.M)
        self.assertEqual(len(prefixes), len(matrix.QUICK_KINDS), progress.getvalue())
        left = [ns for ns in existing_namespaces() if any(ns.startswith(p + "-") for p in prefixes)]
        self.assertEqual(left, [], "the matrix left namespaces behind")
        self.assertFalse(result.budget_exhausted, progress.getvalue())
        self.assertEqual(result.labs, len(matrix.QUICK_KINDS))
        must = []
        for src in matrix.QUICK_KINDS:
            for dst in matrix.QUICK_KINDS:
                expect, trial, text, failed = result.cell("teredonode", src, dst)
                self.assertIsNotNone(trial)
                assert trial is not None
                self.assertTrue(trial.measured, f"{src} -> {dst}: {text}")
                if expect.must_work:
                    must.append((src, dst))
                    self.assertTrue(trial.ok, f"{src} -> {dst}: {text}\n{progress.getvalue()}")
                    self.assertIsNotNone(trial.first_reply)
                self.assertFalse(failed, text)
        # cone and port-restricted, both ways and each with itself: RFC 4380 alone; with
        # Symmetric NAT Support, cone <-> port-symmetric and cone <-> port-preserving
        # symmetric both ways; with Port-Preserving too, port-restricted <-> port-preserving
        # symmetric both ways and port-preserving symmetric with itself.
        pps = "port-preserving-symmetric"
        plain = {(a, b) for a in ("cone", "port-restricted") for b in ("cone", "port-restricted")}
        sns = {("cone", "port-symmetric"), ("port-symmetric", "cone"), ("cone", pps), (pps, "cone")}
        pp = {("port-restricted", pps), (pps, "port-restricted"), (pps, pps)}
        ours = matrix.client_extensions("teredonode")
        self.assertEqual(
            set(must),
            plain | (sns if "SNS" in ours else set()) | (pp if {"SNS", "PP"} <= ours else set()),
        )
        self.assertEqual(result.failures(), [])

        table = matrix.render_table(result, "teredonode").splitlines()
        names = [matrix.FIGURE1_NAMES[k] for k in matrix.QUICK_KINDS]
        self.assertEqual(len(table), 2 + len(names))
        self.assertEqual(table[0], "| source ↓ / destination → | " + " | ".join(names) + " |")
        for line, name in zip(table[2:], names):
            cells = [c.strip() for c in line.strip("|").split("|")]
            self.assertEqual(cells[0], name)
            self.assertEqual(len(cells), 1 + len(names))
            for cell in cells[1:]:
                self.assertRegex(cell, r"^(ok \d+(\.\d)? m?s|no) \(.+\)$")
        report = matrix.render_report(result)
        n = len(matrix.QUICK_KINDS)
        self.assertIn(f"{n * n}/{n * n} cells measured on {n} labs", report)
        self.assertIn("every cell that must work works", report)
