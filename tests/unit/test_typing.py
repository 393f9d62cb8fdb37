"""
The package, the benchmarks and the tools type-check under mypy --strict with mypy-zope, and
the tests type-check with their bodies checked (the settings, files included, live in
pyproject.toml), so interfaces, fakes, roles and the tests using them cannot drift apart
unnoticed.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]


class TypingTests(SynchronousTestCase):
    def test_package_is_strictly_typed(self) -> None:
        """
        mypy, run on the files pyproject.toml names, reports no error.
        """
        try:
            import mypy  # noqa: F401
            import mypy_zope  # noqa: F401
        except ImportError:
            raise SkipTest("mypy and mypy-zope not installed (pip install '.[test]')")
        with tempfile.TemporaryDirectory() as cache:
            result = subprocess.run(
                [sys.executable, "-m", "mypy", "--cache-dir", cache, "--config-file", str(ROOT / "pyproject.toml")],
                cwd=ROOT, capture_output=True, text=True, timeout=600,
            )
        self.assertEqual(result.returncode, 0, result.stdout[-4000:] + result.stderr[-2000:])
