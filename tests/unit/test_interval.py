"""
The refresh interval determination procedure (RFC 4380 section 5.2.7, CL-I-01..05): the
search arithmetic and one test per row of the machine's table, by plain calls.
"""

from __future__ import annotations

import itertools

from twisted.trial.unittest import SynchronousTestCase

from teredonode.roles.interval import (
    BUBBLE_ATTEMPTS,
    MAXIMUM,
    RS_ATTEMPTS,
    Conclude,
    Done,
    Idle,
    IntervalProbe,
    Qualifying,
    Search,
    SendBubble,
    SolicitSecondary,
    Listening,
    UseRefresh,
    Waiting,
)

MAPPING = ("198.51.100.7", 41000)
PREFIX = bytes.fromhex("20010000cb00710a")


class SearchTests(SynchronousTestCase):
    def test_starting(self) -> None:
        """CL-I-03: max 120 s, candidate twice the 30 s interval."""
        self.assertEqual(Search.starting(30.0), Search(30.0, 60.0, MAXIMUM))

    def test_success(self) -> None:
        """CL-I-04 (4): refresh = candidate; candidate = min(2 refresh, (refresh + max) / 2)."""
        self.assertEqual(Search(30.0, 60.0).succeeded(), Search(60.0, 90.0))
        self.assertEqual(Search(60.0, 90.0).succeeded(), Search(90.0, 105.0))

    def test_failure(self) -> None:
        """CL-I-04 (5): max = candidate; candidate = (refresh + max) / 2."""
        self.assertEqual(Search(60.0, 90.0).failed(), Search(60.0, 75.0, 90.0))

    def test_concluded(self) -> None:
        """CL-I-04 (5): done once refresh >= 75 % of max."""
        self.assertFalse(Search(30.0, 60.0).concluded)
        self.assertTrue(Search(90.0, 105.0).concluded)
        self.assertTrue(Search(60.0, 75.0, 80.0).concluded)


class ProbeTests(SynchronousTestCase):
    def setUp(self) -> None:
        counter = itertools.count(1)
        self.probe = IntervalProbe(30.0, lambda: next(counter).to_bytes(8, "big"))

    def qualify(self) -> None:
        state = self.probe.state
        assert isinstance(state, Qualifying)
        self.assertEqual(self.probe.answer(state.nonce, MAPPING, PREFIX), [])

    def test_start(self) -> None:
        """Idle --start--> Qualifying: an RS from the secondary port (CL-I-02)."""
        self.assertIsInstance(self.probe.state, Idle)
        self.assertEqual(self.probe.start(), [SolicitSecondary((1).to_bytes(8, "big"))])
        self.assertEqual(self.probe.state.timeout, 4.0)
        self.assertEqual(self.probe.start(), [])

    def test_answerWaitsForCandidate(self) -> None:
        """Qualifying --valid RA--> Waiting the candidate interval (CL-I-04 (1))."""
        self.probe.start()
        self.assertEqual(self.probe.answer(b"wrong!!!", MAPPING, PREFIX), [])
        self.assertIsInstance(self.probe.state, Qualifying)
        self.qualify()
        state = self.probe.state
        assert isinstance(state, Waiting)
        self.assertEqual(state.timeout, 60.0)

    def test_qualificationRetriesThenGivesUp(self) -> None:
        """Qualifying --timer--> retry with a new nonce; after 3, Done with 30 s."""
        self.probe.start()
        self.assertEqual(self.probe.timer(), [SolicitSecondary((2).to_bytes(8, "big"))])
        for _ in range(RS_ATTEMPTS - 2):
            self.probe.timer()
        self.assertEqual(self.probe.timer(), [Conclude(30.0, "secondary port not qualified")])
        self.assertIsInstance(self.probe.state, Done)

    def test_waitingSendsBubble(self) -> None:
        """Waiting --timer--> Listening: the bubble through the server (CL-I-04 (2))."""
        self.probe.start()
        self.qualify()
        self.assertEqual(self.probe.timer(), [SendBubble(PREFIX, MAPPING)])
        self.assertIsInstance(self.probe.state, Listening)
        self.assertEqual(self.probe.state.timeout, 2.0)

    def test_bubbleHeardIsSuccess(self) -> None:
        """Listening --bubble--> UseRefresh(candidate), then the secondary port again (6)."""
        self.probe.start()
        self.qualify()
        self.probe.timer()
        effects = self.probe.bubble()
        self.assertEqual(effects[0], UseRefresh(60.0))
        self.assertIsInstance(effects[1], SolicitSecondary)
        self.assertEqual(self.probe.refresh, 60.0)

    def test_bubbleRetriedThenFailure(self) -> None:
        """Listening --timer--> resend (3 in all); then the candidate failed."""
        self.probe.start()
        self.qualify()
        self.probe.timer()
        for _ in range(BUBBLE_ATTEMPTS - 1):
            self.assertEqual(self.probe.timer(), [SendBubble(PREFIX, MAPPING)])
        effects = self.probe.timer()
        self.assertIsInstance(effects[0], SolicitSecondary)  # not concluded: 30 < 0.75 x 60
        state = self.probe.state
        assert isinstance(state, Qualifying)
        self.assertEqual(state.search, Search(30.0, 45.0, 60.0))

    def test_wholeSearchAgainstALifetime(self) -> None:
        """
        Against a NAT keeping idle mappings 80 s: 60 works, 90 fails, 75 works, then done
        (75 >= 0.75 x 90) with 75 s.
        """
        self.probe.start()
        lifetime = 80.0
        for _ in range(10):
            if isinstance(self.probe.state, Done):
                break
            self.qualify()
            state = self.probe.state
            assert isinstance(state, Waiting)
            candidate = state.wait
            self.probe.timer()
            if candidate < lifetime:
                self.probe.bubble()
            else:
                for _ in range(BUBBLE_ATTEMPTS):
                    self.probe.timer()
        self.assertEqual(self.probe.state, Done(75.0, "concluded"))

    def test_stop(self) -> None:
        """* --stop--> Done with what is known so far."""
        self.probe.start()
        self.assertEqual(self.probe.stop(), [Conclude(30.0, "stopped")])
        self.assertEqual(self.probe.stop(), [])
