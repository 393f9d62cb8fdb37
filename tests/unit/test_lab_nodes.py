"""
The TOML the lab writes for its own nodes (L{teredonode.lab.nodes}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import ClientSettings, parse_config
from teredonode.lab.nodes import toml_value


class TomlValueTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        self.assertEqual(toml_value(True), "true")
        self.assertEqual(toml_value(7), "7")
        self.assertEqual(toml_value(0.5), "0.5")
        self.assertEqual(toml_value('a"b'), r'"a\"b"')

    def test_floatSettingAccepted(self) -> None:
        """A float setting (a rate) reaches the node as a TOML float, which its check takes."""
        text = '[client]\nserver = "192.0.2.1"\nport-guessing-rate = %s\n' % toml_value(100.0)
        settings = parse_config(text, roles="client").roles["client"]
        assert isinstance(settings, ClientSettings)
        self.assertEqual(settings.port_guessing_rate, 100.0)
