"""
No reaching into another object's privates, in code or tests (CONTRIBUTING.md, "Privates").

A name with one leading underscore belongs to the object or module that defines it.  This
test reads every Python file of C{teredonode/}, C{tests/}, C{tools/} and C{benchmarks/} and
fails on:

  - an attribute C{x._name} where C{x} is not C{self}, C{cls} or C{super()};
  - C{from a._b import c} or C{import a._b} (a private module used from outside it);
  - C{from a import _name} (a module-private name used from another module).

Dunder names (C{__init__}) are not private.  What the language or a third-party library
makes public under an underscore, or what cannot be reached otherwise, is in L{ALLOWED},
each with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]
TREES = ("teredonode", "tests", "tools", "benchmarks")

#: (file, what is reached) -> why it is allowed.  Keep it short; each entry is a debt.
ALLOWED: dict[tuple[str, str], str] = {
    # The standard library's documented API under an underscore.
    ("teredonode/logs.py", "sys._getframe"): "the documented way to find the caller's frame",
    ("tests/strategies.py", "header._replace"): "namedtuple's public _replace",
    # twisted.pair.testing's in-memory TUN has no public hook for these; the tests of our TUN
    # wrapper need them to simulate the kernel closing or swapping a descriptor.
    ("tests/unit/test_tun.py", "Tunnel._DEVICE_NAME"): "twisted.pair.testing, no public name",
    ("tests/unit/test_tun.py", "self.system._openFiles"): "twisted.pair.testing, no public hook",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def reaches(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """
    The places in the Python C{source} that use another object's or module's private name,
    as C{(line, text)}.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            found.append((node.lineno, f"{ast.unparse(owner)}.{node.attr}"))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if any(_private(part) for part in module.split(".")):
                found.append((node.lineno, f"from {module}"))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names if _private(alias.name))
        elif isinstance(node, ast.Import):
            found.extend(
                (node.lineno, alias.name)
                for alias in node.names
                if any(_private(part) for part in alias.name.split("."))
            )
    return found


def everyReach() -> list[str]:
    """
    Every use of a private name from outside its owner in the project, as
    C{"file:line: text"}, less L{ALLOWED}.
    """
    lines = []
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for line, text in reaches(path.read_text(), relative):
                if (relative, text) not in ALLOWED:
                    lines.append(f"{relative}:{line}: {text}")
    return lines


class PrivatesTests(SynchronousTestCase):
    def test_noneReached(self) -> None:
        """
        No code or test uses another object's or module's private names.
        """
        self.assertEqual(everyReach(), [])

    def test_allowListLive(self) -> None:
        """
        Every allow-list entry still names a real use: a stale one is removed.
        """
        used: set[tuple[str, str]] = set()
        for relative, _ in ALLOWED:
            used.update((relative, text) for _, text in reaches((ROOT / relative).read_text()))
        self.assertEqual(sorted(set(ALLOWED) - used), [])

    def test_catches(self) -> None:
        """
        The check itself: it finds each kind of reach, and lets C{self}/C{cls}/C{super()}
        and dunders pass.
        """
        source = (
            "from a._b import c\nimport a._b\nfrom a import _d\nx._e\nself.f._g\n"
            "self._h\ncls._i\nsuper()._j\nx.__k__\n"
        )
        self.assertEqual(
            [text for _, text in reaches(source)],
            ["from a._b", "a._b", "a._d", "x._e", "self.f._g"],
        )
