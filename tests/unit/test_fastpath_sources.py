"""
The fast paths' C sources as files: each helper is written once (the programs share
C{bpf/teredo_common.h}), and a change to that header changes the cached object's name, so
an object built before it is never loaded.  (The programs themselves are tested against the
Python paths in tests/system/test_fastpath_*.py.)
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

BPF = Path(__file__).resolve().parents[2] / "bpf"

#: A function (static inline) or function-like macro definition, and its name.
_DEFINITION = re.compile(
    r"^(?:static\s+__always_inline\s+[\w\s]+?\**\s*(\w+)\s*\(|#define\s+(\w+)\()", re.M
)


def definitions(text: str) -> list[str]:
    return [a or b for a, b in _DEFINITION.findall(text)]


class SharedHelperTests(SynchronousTestCase):
    def test_definitionsAreFound(self) -> None:
        """
        The pattern finds what it is meant to (so the next test cannot pass vacuously).
        """
        self.assertEqual(
            definitions(
                "static __always_inline void count(void *m, __u32 i)\n"
                "static __always_inline __u64 sum_bytes(void *s)\n"
                "static __always_inline const __u8 *at(int x)\n"
                "#define SUM_FIXED(p, n) x\n#define MAX 8\n"
            ),
            ["count", "sum_bytes", "at", "SUM_FIXED"],
        )

    def test_eachHelperWrittenOnce(self) -> None:
        """
        No helper is defined in more than one of the programs and their shared header.
        """
        where: dict[str, list[str]] = defaultdict(list)
        files = sorted(BPF.glob("*.bpf.c")) + sorted(BPF.glob("*.h"))
        self.assertGreaterEqual(len(files), 4)
        for path in files:
            for name in definitions(path.read_text()):
                where[name].append(path.name)
        twice = {name: places for name, places in where.items() if len(places) > 1}
        self.assertEqual(twice, {})
        self.assertIn("teredo_common.h", where["count"])
        self.assertIn("teredo_common.h", where["local_address"])

    def test_everyProgramIncludesTheHeader(self) -> None:
        for path in sorted(BPF.glob("*.bpf.c")):
            self.assertIn('#include "teredo_common.h"', path.read_text(), path.name)


class CachedObjectTests(SynchronousTestCase):
    """
    L{object_path} names a compiled object after the source and the headers beside it.
    """

    def setUp(self) -> None:
        from teredonode.fastpath import program

        if (Path(program.__file__).parent / program.OBJECT_NAME).is_file():
            self.skipTest("a prebuilt object is installed")
        self.program = program
        self.tmp = Path(tempfile.mkdtemp(prefix="teredo-fastpath-sources-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.src = self.tmp / "bpf"
        self.src.mkdir()
        for path in list(BPF.glob("*.bpf.c")) + list(BPF.glob("*.h")):
            shutil.copy(path, self.src / path.name)
        self.built: list[Path] = []

        def compile_object(source: Path, output: Path) -> None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(b"")
            self.built.append(output)

        self.patch(program, "compile_object", compile_object)
        self.patch(program, "source_path", lambda name=program.SOURCE_NAME: self.src / name)

    def test_headerChangeRebuilds(self) -> None:
        cache = self.tmp / "cache"
        name = "teredo_relay.bpf.c"
        first = self.program.object_path(cache, name)
        self.assertEqual(self.program.object_path(cache, name), first)
        self.assertEqual(self.built, [first])
        header = self.src / "teredo_common.h"
        header.write_text(header.read_text() + "\n/* changed */\n")
        second = self.program.object_path(cache, name)
        self.assertNotEqual(second, first)
        self.assertEqual(self.built, [first, second])
