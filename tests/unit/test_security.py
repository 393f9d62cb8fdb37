"""
Per-source rate limiting with bounded memory.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from teredonode.security import OVER_GLOBAL, OVER_SOURCE, PASS, RateLimiter, TokenBucket, source_key


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


class LimiterSemanticsTests(SynchronousTestCase):
    """
    The exact semantics in the RateLimiter docstring (a kernel fast path mirrors them).
    """

    def test_new_key_starts_with_initial(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, rate=1.0, burst=10, initial=2)
        self.assertEqual([limiter.allow("a") for _ in range(4)], [True, True, False, False])
        clock.advance(1.0)
        self.assertTrue(limiter.allow("a"))
        self.assertFalse(limiter.allow("a"))
        clock.advance(100.0)
        self.assertEqual(sum(limiter.allow("a") for _ in range(20)), 10)

    def test_initial_zero(self) -> None:
        clock = Clock()
        limiter = RateLimiter(clock, rate=1.0, burst=3, initial=0)
        self.assertFalse(limiter.allow("a"))
        clock.advance(1.0)
        self.assertTrue(limiter.allow("a"))

    def test_initial_bounds(self) -> None:
        self.assertRaises(ValueError, RateLimiter, Clock(), 1.0, 3, 10, 4)
        self.assertRaises(ValueError, RateLimiter, Clock(), 1.0, 3, 10, -1)

    def test_lru_eviction(self) -> None:
        limiter = RateLimiter(Clock(), rate=1.0, burst=5, max_keys=2, initial=1)
        limiter.allow("a")
        limiter.allow("b")
        limiter.allow("a")  # refused, but "a" is now the most recently seen
        limiter.allow("c")  # evicts "b"
        self.assertEqual(len(limiter), 2)
        self.assertFalse(limiter.allow("a"))
        self.assertTrue(limiter.allow("b"))  # new again: initial tokens

    def test_global_budget(self) -> None:
        """
        A key over its own limit takes no global token; a key that passed and meets an
        empty budget has spent its own token.
        """
        clock = Clock()
        budget = TokenBucket(clock, rate=1.0, burst=2)
        limiter = RateLimiter(clock, rate=1.0, burst=2, initial=1, budget=budget)
        self.assertEqual(limiter.check("a"), PASS)
        self.assertEqual(limiter.check("a"), OVER_SOURCE)
        self.assertEqual(limiter.check("a"), OVER_SOURCE)
        self.assertEqual(limiter.check("b"), PASS)
        self.assertEqual(limiter.check("c"), OVER_GLOBAL)
        clock.advance(1.0)
        self.assertEqual(limiter.check("c"), PASS)  # c's token refilled, budget refilled
        self.assertEqual(limiter.check("d"), OVER_GLOBAL)

    def test_source_key(self) -> None:
        self.assertEqual(source_key("192.0.2.45"), 0xC000022D)
        self.assertEqual(source_key("192.0.2.45", 24), 0xC0000200)
        self.assertEqual(source_key("192.0.2.200", 24), source_key("192.0.2.1", 24))


class TokenBucketTests(SynchronousTestCase):
    def test_starts_full_refills_to_burst(self) -> None:
        clock = Clock()
        bucket = TokenBucket(clock, rate=2.0, burst=3)
        self.assertEqual([bucket.allow() for _ in range(4)], [True, True, True, False])
        clock.advance(0.5)
        self.assertTrue(bucket.allow())
        self.assertFalse(bucket.allow())
        clock.advance(60)
        self.assertEqual(sum(bucket.allow() for _ in range(10)), 3)

    def test_invalid(self) -> None:
        self.assertRaises(ValueError, TokenBucket, Clock(), 0, 1)
        self.assertRaises(ValueError, TokenBucket, Clock(), 1, 0)
