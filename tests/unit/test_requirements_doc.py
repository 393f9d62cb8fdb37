"""
docs/requirements.md cannot drift from the code: re-rendered from its own rule texts and a
fresh scan of teredonode/ and tests/, it must be what is checked in, and every cited id must
have its rule there.
"""

import importlib.util
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]


def _reqdoc():
    spec = importlib.util.spec_from_file_location("reqdoc", ROOT / "tools" / "reqdoc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


class RequirementsDocTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reqdoc = _reqdoc()
        self.text = (ROOT / "docs" / "requirements.md").read_text(encoding="utf-8")

    def test_doc_matches_code(self) -> None:
        rendered = self.reqdoc.render(self.reqdoc.rules_from_doc(self.text), self.reqdoc.scan(ROOT))
        self.assertEqual(
            rendered, self.text,
            "docs/requirements.md is stale: run python3 tools/reqdoc.py [DIGEST] > docs/requirements.md",
        )

    def test_every_cited_id_documented(self) -> None:
        rules = self.reqdoc.rules_from_doc(self.text)
        missing = sorted(set(self.reqdoc.scan(ROOT)) - set(rules))
        self.assertEqual(missing, [], "cited ids without a rule in docs/requirements.md")

    def test_scan_finds_citations(self) -> None:
        cited = self.reqdoc.scan(ROOT)
        self.assertIn("teredonode/roles/server.py", cited["SV-IN-4"][0])
        self.assertGreater(len(cited), 50)

    def test_digest_tables_and_bullets(self) -> None:
        digest = (
            "### 3.2 Server (§5.3)\n"
            "4. **SV-IN-4** (**MUST**): an RS from link-local to ff02::2 is accepted.\n\n"
            "| ID | Role | RFC § | Level | Testable statement |\n|---|---|---|---|---|\n"
            "| G-07 | All | 4380 §5.1.2 | SHOULD NOT | DF never set. |\n\n"
            "| # | Where | Problem | Recommended handling |\n|---|---|---|---|\n"
            "| D1 | 6081 §4.5 | Two type values. | Accept both. |\n"
        )
        rules = self.reqdoc.rules_from_digest(digest)
        self.assertEqual(rules["G-07"].source, "4380 §5.1.2")
        self.assertEqual(rules["G-07"].level, "SHOULD NOT")
        self.assertEqual(rules["SV-IN-4"].level, "MUST")
        self.assertEqual(rules["SV-IN-4"].text, "an RS from link-local to ff02::2 is accepted.")
        self.assertEqual(rules["D1"].text, "Two type values. Handling: Accept both.")
