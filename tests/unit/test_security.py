"""
Per-source rate limiting with bounded memory.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.security import RateLimiter


class RateLimiterTests(SynchronousTestCase):
    def test_burst_then_rate(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, rate=2.0, burst=3)
        self.assertEqual([limiter.allow("a") for _ in range(4)], [True, True, True, False])
        clock.advance(0.5)
        self.assertEqual([limiter.allow("a") for _ in range(2)], [True, False])
        clock.advance(10)
        self.assertEqual([limiter.allow("a") for _ in range(4)], [True, True, True, False])

    def test_sources_independent(self) -> None:
        limiter = RateLimiter(Clock(), rate=1.0, burst=1)
        self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"))
        self.assertTrue(limiter.allow("b"))

    def test_bounded(self) -> None:
        """
        At most max_keys buckets; the least recently seen is evicted.
        """
        limiter = RateLimiter(Clock(), rate=1.0, burst=1, max_keys=100)
        for i in range(1000):
            limiter.allow(i)
        self.assertEqual(len(limiter), 100)
        self.assertFalse(limiter.allow(999))
        self.assertTrue(limiter.allow(0))

    def test_invalid(self) -> None:
        self.assertRaises(ValueError, RateLimiter, Clock(), 0, 1)
        self.assertRaises(ValueError, RateLimiter, Clock(), 1, 0)
