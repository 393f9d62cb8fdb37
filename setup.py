"""
Build step for the XDP fast path (everything else is in pyproject.toml).

A wheel carries C{bpf/*.bpf.c} (and the C{bpf/*.h} they include) beside
C{teredonode/fastpath/} and, when clang is on the
building host, the compiled C{*.bpf.o} too, so the server loads it without a compiler.
Without clang (or if it fails) the build still succeeds: the server compiles the shipped
source on first use when clang appears later, and otherwise runs the Python path
(teredonode.fastpath.program says why in one log line).  Editable installs build nothing:
the source tree's C{bpf/} is found and compiled on first use.
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithBPF(build_py):  # type: ignore[misc]
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        spec = importlib.util.spec_from_file_location("_fastpath_build", ROOT / "teredonode" / "fastpath" / "build.py")
        assert spec is not None and spec.loader is not None
        build = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(build)
        target = Path(self.build_lib) / "teredonode" / "fastpath"
        for header in sorted((ROOT / "bpf").glob("*.h")):  # included by the sources, beside them
            self.copy_file(str(header), str(target / header.name))
        for source in sorted((ROOT / "bpf").glob("*.bpf.c")):
            self.copy_file(str(source), str(target / source.name))
            try:
                build.compile_object(source, target / (source.name[:-2] + ".o"))
            except build.CompileError as e:
                self.warn(f"{e}; the server will run the Python path")


setup(cmdclass={"build_py": BuildWithBPF})
