"""
L{teredonode.counters.CounterSet}: the declared names are what may be counted and what status
shows; each role's tables are built from its declarations.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from teredonode.counters import CounterSet
from teredonode.roles import client, relay, server, tunnel
from teredonode.roles.discovery import DISCOVERY_COUNTERS, DISCOVERY_DROPS


class CounterSetTests(SynchronousTestCase):
    def test_declaredNamesFromZero(self) -> None:
        """
        Every declared name is present from zero, in declaration order, groups one after
        the other.
        """
        counts = CounterSet(("b", "a"), ("c",))
        self.assertEqual(list(counts.snapshot().items()), [("b", 0), ("a", 0), ("c", 0)])
        self.assertEqual(counts.names, ("b", "a", "c"))

    def test_incrementDeclared(self) -> None:
        counts = CounterSet(("sent", "received"))
        counts["sent"] += 1
        counts["sent"] += 2
        self.assertEqual(counts.snapshot(), {"sent": 3, "received": 0})

    def test_undeclaredRefused(self) -> None:
        """
        Incrementing (or reading) a name nobody declared raises C{KeyError}, and adds nothing:
        a count cannot go where status never looks.
        """
        counts = CounterSet(("sent",))
        with self.assertRaises(KeyError) as caught:
            counts["snet"] += 1
        self.assertIn("snet", str(caught.exception))
        self.assertEqual(counts.snapshot(), {"sent": 0})

    def test_declaredTwiceRefused(self) -> None:
        """
        A name in two groups is a declaration made twice: refused when the set is built.
        """
        with self.assertRaises(ValueError) as caught:
            CounterSet(("malformed", "sent"), ("malformed",))
        self.assertIn("malformed", str(caught.exception))

    def test_copyIsIndependent(self) -> None:
        counts = CounterSet(("a", "b"))
        counts["a"] += 1
        other = counts.copy()
        other["b"] += 5
        self.assertIsInstance(other, CounterSet)
        self.assertEqual((counts.snapshot(), other.snapshot()), ({"a": 1, "b": 0}, {"a": 1, "b": 5}))
        with self.assertRaises(KeyError):
            other["c"] += 1


class RoleDeclarationTests(SynchronousTestCase):
    """
    Each role's tables are its own names followed by the shared parts' (the status order),
    every name once.
    """

    def test_server(self) -> None:
        for names in (server.COUNTERS, server.DROP_REASONS, server.STRIP_REASONS):
            CounterSet(names)

    def test_relay(self) -> None:
        self.assertEqual(relay.COUNTERS, relay.RELAY_COUNTERS + tunnel.COUNTERS + tunnel.UNNUMBERED_COUNTERS)
        self.assertEqual(
            relay.DROP_REASONS, relay.RELAY_DROPS + tunnel.DROP_REASONS + tunnel.UNNUMBERED_DROP_REASONS
        )
        CounterSet(relay.COUNTERS)
        CounterSet(relay.DROP_REASONS)

    def test_client(self) -> None:
        self.assertEqual(
            client.COUNTERS,
            client.CLIENT_COUNTERS + tunnel.COUNTERS + tunnel.NUMBERED_COUNTERS + DISCOVERY_COUNTERS,
        )
        self.assertEqual(client.DROP_REASONS, client.CLIENT_DROPS + tunnel.DROP_REASONS + DISCOVERY_DROPS)
        CounterSet(client.COUNTERS)
        CounterSet(client.DROP_REASONS)
