"""
docs/config.md cannot drift from the declarations in teredonode/config.py: its tables of keys,
re-rendered by tools/configdoc.py, must be what is checked in, and what they show as defaults
must load back as the settings' defaults.
"""

import importlib.util
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import REQUIRED, ROLE_NAMES, SCHEMA, parse_config

ROOT = Path(__file__).resolve().parents[2]


def _configdoc():
    spec = importlib.util.spec_from_file_location("configdoc", ROOT / "tools" / "configdoc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class ConfigDocTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.configdoc = _configdoc()
        self.text = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")

    def test_docMatchesDeclarations(self) -> None:
        self.assertEqual(
            self.configdoc.render(self.text), self.text,
            "docs/config.md is stale: run python3 tools/configdoc.py",
        )

    def test_handWrittenProseKept(self) -> None:
        """
        Only the marked sections are rendered: prose around them survives as written.
        """
        edited = self.text.replace("## Rules\n", "## Rules\n\nA hand-written line.\n")
        self.assertIn("A hand-written line.", self.configdoc.render(edited))

    def test_staleSectionRendered(self) -> None:
        """
        A hand edit inside a generated section is undone, so the drift test sees it.
        """
        edited = self.text.replace("| `mtu` |", "| `mtu-typo` |")
        self.assertNotEqual(edited, self.text)
        self.assertEqual(self.configdoc.render(edited), self.text)

    def test_everyTableNeedsASection(self) -> None:
        with self.assertRaises(ValueError) as caught:
            self.configdoc.render("# Configuration\n")
        self.assertIn("[node]", str(caught.exception))
        self.assertIn("[host-relay]", str(caught.exception))

    def test_unknownSection(self) -> None:
        text = self.text + (
            "\n<!-- BEGIN GENERATED [nodes] by tools/configdoc.py from teredonode/config.py -->\n"
            "<!-- END GENERATED [nodes] -->\n"
        )
        self.assertRaises(ValueError, self.configdoc.render, text)

    def test_rows(self) -> None:
        """
        Type, default and override come from the check, the default and the overrides table.
        """
        server = self.configdoc.render_table("server")
        self.assertIn(
            "| `primary` | IPv4, global unicast | **required** | Primary IPv4 address (clients' "
            "server).", server,
        )
        self.assertIn("Override: `--primary`. |", server)
        self.assertIn("| `secondary` | IPv4, global unicast | primary + 1 |", server)
        self.assertIn("| `clients` | table | `{}` |", server)
        self.assertIn("`burst` is no longer a key: replaced by rs-burst", server)
        self.assertIn('| `status-mode` | octal string', self.configdoc.render_table("node"))
        self.assertIn('| `"0660"` |', self.configdoc.render_table("node"))
        relay = self.configdoc.render_table("relay")
        self.assertIn('| `serve` | array of IPv6 prefixes | `["2000::/3"]` |', relay)
        self.assertIn("| `port` | integer 0..65535 (port) | `3544` |", relay)
        self.assertIn("Override: `--relay-interface` (or `--interface`).", relay)
        self.assertIn("| `secret` | string, ≤ 255 bytes | unset |", self.configdoc.render_table("client"))

    def test_shownDefaultsLoadBack(self) -> None:
        """
        Every default the doc shows, written into a file as shown, loads as the declared
        default: the doc's TOML is right and every default passes its own check.
        """
        required = {"server": 'primary = "192.0.2.1"', "client": 'server = "192.0.2.9"'}
        lines = []
        for table, keys in SCHEMA.items():
            lines += [f"[{table}]", required.get(table, "")]
            for key in keys:
                if key.default is REQUIRED or key.default is None or key.name == "enabled":
                    continue
                shown = self.configdoc.default_text(key)
                self.assertTrue(shown.startswith("`") and shown.endswith("`"), shown)
                lines.append(f"{key.name} = {shown[1:-1]}")
        text = "\n".join(lines)
        config = parse_config(text, "t.toml", roles=list(ROLE_NAMES))
        for table, keys in SCHEMA.items():
            settings = config.node if table == "node" else config.roles[table]
            for key in keys:
                if key.default is REQUIRED or key.default is None or key.name == "enabled":
                    continue
                self.assertEqual(getattr(settings, key.attr), key.default, f"[{table}] {key.name}")
