"""
The wheel ships our dropin and nothing that would overwrite Twisted's own files: no
C{twisted/__init__.py}, no C{twisted/plugins/__init__.py}, never a C{dropin.cache}.
"""

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]


class WheelTests(SynchronousTestCase):
    def test_wheel_contents(self) -> None:
        work = Path(tempfile.mkdtemp(prefix="teredonode-wheel-"))
        self.addCleanup(shutil.rmtree, work, True)
        src = work / "src"
        # What a fresh checkout has: not the runners' own working files (trial's
        # _trial_temp holds a lock file while this very test runs under trial).
        shutil.copytree(
            ROOT, src, ignore=shutil.ignore_patterns(
                ".git", "__pycache__", "*.egg-info", "build", "dist", ".hypothesis",
                "_trial_temp*", ".pytest_cache", "lab-logs",
            )
        )
        (src / "twisted" / "plugins" / "dropin.cache").write_bytes(b"stale cache from a development run")
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"), str(src)],
            capture_output=True,
            text=True,
            timeout=180,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        [wheel] = (work / "dist").glob("teredonode-*.whl")
        names = zipfile.ZipFile(wheel).namelist()
        twisted_files = sorted(n for n in names if n.startswith("twisted/"))
        self.assertEqual(twisted_files, ["twisted/plugins/teredo_plugin.py"])
        self.assertIn("teredonode/wire/teredo.py", names)
        self.assertIn("teredonode/roles/server.py", names)
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        self.assertIn("teredo = teredonode.cli:main", zipfile.ZipFile(wheel).read(entry_points).decode())


class EditableInstallTests(SynchronousTestCase):
    def test_editable_finds_plugin(self) -> None:
        """
        The contributor set-up of CONTRIBUTING.md: a plain editable install (what every
        contributor types) in a fresh virtual environment gives a twistd that knows the teredo
        plugin.
        """
        import os
        import venv

        if os.environ.get("TEREDO_SKIP_NETWORK_TESTS"):
            raise SkipTest("TEREDO_SKIP_NETWORK_TESTS is set")
        work = Path(tempfile.mkdtemp(prefix="teredonode-editable-"))
        self.addCleanup(shutil.rmtree, work, True)
        venv.EnvBuilder(with_pip=True, system_site_packages=False).create(work / "ve")
        python = work / "ve" / "bin" / "python"
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", str(ROOT)],
            capture_output=True, text=True, timeout=300, cwd=work,
        )
        if install.returncode != 0 and ("Could not find" in install.stderr or "NewConnectionError" in install.stderr):
            raise SkipTest(f"pip cannot reach a package index: {install.stderr.strip().splitlines()[-1]}")
        self.assertEqual(install.returncode, 0, install.stderr[-2000:])
        result = subprocess.run(
            [str(work / "ve" / "bin" / "twistd"), "teredo", "--help"],
            capture_output=True, text=True, timeout=60, cwd=work,
        )
        self.assertEqual(result.returncode, 0, result.stdout[-1000:] + result.stderr[-1000:])
        self.assertIn("teredo [--config FILE]", result.stdout)
