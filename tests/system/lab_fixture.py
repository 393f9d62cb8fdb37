"""
The one fixture every system test uses to get a lab: create it, hand it over, always destroy it.

Destruction is guaranteed three ways, because a leaked namespace outlives the test run:
  - the context manager's C{finally} (normal end, failure, KeyboardInterrupt inside the test);
  - an C{atexit} hook for labs still alive when the interpreter exits (e.g. Ctrl-C caught by
    the runner between the test and its cleanups);
  - each lab is recorded under its own temporary state directory, so C{teredo lab down --all}
    with C{TEREDO_LAB_STATE_DIR} pointing there can still remove it after a hard kill.

Tests skip, with the reason, wherever a lab cannot run (not root, no TUN, missing tools).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from unittest import SkipTest, TestCase

from teredonode.errors import LabError
from teredonode.lab.proc import which
from teredonode.lab.lab import Lab, preflight

_alive: dict[str, Lab] = {}


def skip_reason(need_miredo: bool = False) -> str | None:
    """
    Why a lab cannot run here, or None if it can.
    """
    for tool in ("ip", "nft", "conntrack"):
        if which(tool) is None:
            return f"{tool} not installed"
    if need_miredo:
        for tool in ("miredo", "miredo-server"):
            if which(tool) is None:
                return f"{tool} not installed (apt-get install miredo miredo-server)"
    try:
        preflight()
    except LabError as e:
        return str(e)
    return None


@contextmanager
def lab_fixture(scenario: str = "default", *, need_miredo: bool = False) -> Iterator[Lab]:
    """
    A freshly built lab for C{scenario}; raises C{SkipTest} where labs cannot run.
    """
    reason = skip_reason(need_miredo)
    if reason:
        raise SkipTest(reason)
    base = Path(tempfile.mkdtemp(prefix="teredo-lab-test-"))
    os.chmod(base, 0o755)  # Miredo drops to its own user and must still read its config
    lab = None
    try:
        lab = Lab.up(scenario, base=base)
        _alive[lab.prefix] = lab
        yield lab
    finally:
        try:
            if lab is not None:
                _alive.pop(lab.prefix, None)
                lab.down()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def use_lab(testcase, scenario: str = "default", *, need_miredo: bool = False) -> Lab:
    """
    Enter L{lab_fixture} for a TestCase, leaving its exit to the case's cleanups.
    """
    manager = lab_fixture(scenario, need_miredo=need_miredo)
    lab = manager.__enter__()
    testcase.addCleanup(manager.__exit__, None, None, None)
    return lab


@atexit.register
def _destroy_leftovers() -> None:
    for lab in list(_alive.values()):
        try:
            lab.down()
        except Exception:
            pass
    _alive.clear()


# The type checker sees the TestCase this mixin is always combined with.
if TYPE_CHECKING:
    _TestCase = TestCase
else:
    _TestCase = object


class LabAssertions(_TestCase):
    """
    Mixin for TestCases holding a lab in C{self.lab}: waiting on our nodes and pinging, with
    failures that carry the nodes' logs.
    """

    lab: Lab

    def waitStatus(
        self, node: str, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """
        Poll C{node}'s status until C{predicate(status)} holds; fail after C{timeout} s or
        when the node exits.
        """
        status, ok = self.lab.wait_node_status(node, predicate, timeout)
        if not ok:
            handle = self.lab.nodes.get(node)
            log = handle.log_tail(15) if handle else []
            self.fail(f"{node}: not {what} within {timeout} s; status {status}; log {log}")
        assert status is not None
        return status

    def assertPings(self, src: str, dst: str, count: int = 5, *, logs: tuple[str, ...] = ()) -> None:
        """
        C{src} pings C{dst}; at most the first echo may be lost (it can wait behind bubbles).
        """
        received, output = self.lab.ping6(src, dst, count)
        if received < count - 1:
            tails = {n: self.lab.nodes[n].log_tail(15) for n in logs if n in self.lab.nodes}
            self.fail(f"{src} -> {dst}: {received}/{count}\n{output}\nlogs: {tails}")
