"""
Counters and drop reasons declared once: a role's tuples of names are both what it may count
and what its status shows.

A role builds one L{CounterSet} per table (counters, drops by reason, ...) from its declared
name tuples, in status order.  Every declared name starts at zero, so that an operator reads a
zero as "checked and never happened"; an increment of a name nobody declared raises
C{KeyError} instead of counting where status never looks, so a test that reaches the
increment fails and a name cannot go missing from status.

The cost per increment is that of C{collections.Counter}: a plain C{dict} lookup for every
declared name (they are all present); only a missing key reaches C{__missing__}.  Nothing
else is checked per increment: code assigns to a name only through C{+=}, which reads it
first.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CounterSet"]


class CounterSet(dict[str, int]):
    """
    Counts under declared names only.

    @ivar names: the declared names, in declaration (status) order.
    """

    __slots__ = ("names",)

    def __init__(self, *groups: Iterable[str]) -> None:
        names = tuple(name for group in groups for name in group)
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"counter names declared twice: {', '.join(twice)}")
        super().__init__(dict.fromkeys(names, 0))
        self.names: tuple[str, ...] = names

    def __missing__(self, key: str) -> int:
        raise KeyError(f"undeclared counter {key!r} (declare it with the role's counters or drop reasons)")

    def snapshot(self) -> dict[str, int]:
        """
        Every declared name with its count, in declaration order (a status table).
        """
        return dict(self)

    def copy(self) -> CounterSet:
        """
        An independent L{CounterSet} with the same names and counts.
        """
        other = CounterSet(self.names)
        dict.update(other, self)
        return other
