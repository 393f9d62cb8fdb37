"""
Defences shared by the roles: per-source rate limiting with bounded memory, and the
authentication value of secure qualification.

A public Teredo server or relay answers anyone.  Without a per-source limit one flooding
host starves every other client; without a bound on the limiter's own table an attacker
spraying spoofed sources exhausts memory instead; without a global budget a spray of
spoofed sources still reflects one answer per source.  L{RateLimiter} is all three: token
buckets per key, at most C{max_keys} of them, least recently used evicted first, new keys
starting nearly empty, and an optional global L{TokenBucket}.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from typing import Hashable

from twisted.internet.interfaces import IReactorTime

__all__ = [
    "RateLimiter",
    "TokenBucket",
    "source_key",
    "PASS",
    "OVER_SOURCE",
    "OVER_GLOBAL",
    "teredo_auth_value",
    "auth_matches",
]


def source_key(ip: str, prefix_len: int = 32) -> int:
    """
    The limiter key of an IPv4 source: its address as an integer with all but the first
    C{prefix_len} bits cleared (32: the address itself; 24: its /24).  Never the port: an
    attacker spoofing a victim's address picks any port, so a port in the key would hand
    each spoofed port a fresh bucket.
    """
    a, b, c, d = ip.split(".")
    value = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
    return value & (0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF


class TokenBucket:
    """
    One token bucket: C{rate} tokens per second, at most C{burst} saved up, starting full.
    The server's global Router Advertisement budget.
    """

    def __init__(self, clock: IReactorTime, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate and burst must be positive")
        self._clock = clock
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = clock.seconds()

    def allow(self) -> bool:
        """
        Take one token; C{False} when none is left.
        """
        now = self._clock.seconds()
        tokens = self._tokens + (now - self._stamp) * self._rate
        if tokens > self._burst:
            tokens = self._burst
        self._stamp = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


#: L{RateLimiter.check} verdicts.
PASS, OVER_SOURCE, OVER_GLOBAL = 0, 1, 2


class RateLimiter:
    """
    Token buckets keyed by source, with bounded memory and an optional global budget.

    Exact semantics (a kernel fast path mirrors them; change both together):

      - the key is chosen by the caller; the server uses L{source_key}, the source IPv4
        address masked to C{rs-limit-prefix} bits (never the port);
      - each key has a token bucket refilled at C{rate} tokens per second up to C{burst},
        computed lazily from the time the key was last seen:
        C{tokens = min(burst, tokens + (now - last) * rate)};
      - a key seen for the first time starts with C{initial} tokens (C{initial <= burst});
        new keys are deliberately NOT full, so spraying fresh keys (spoofed addresses)
        yields at most C{initial} each instead of a whole burst;
      - a packet passes its key's bucket when C{tokens >= 1}, and then takes one token; a
        packet refused by its key's bucket takes nothing (from the key or the budget);
      - when the table already holds C{max_keys} keys, the least recently seen key is
        evicted before a new one is added (a packet that refreshes a key makes it the most
        recently seen, passed or not);
      - with a C{budget} (the global RA budget, a L{TokenBucket} of C{ra-rate} tokens per
        second up to C{ra-burst}, starting full), a packet that passed its key's bucket
        also needs one token of the budget; when the budget is empty the packet is refused
        and the key's token stays spent.

    L{check} says which limit refused; L{allow} is C{check(key) == PASS}.
    """

    def __init__(
        self,
        clock: IReactorTime,
        rate: float,
        burst: int,
        max_keys: int = 65536,
        initial: int | None = None,
        budget: TokenBucket | None = None,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate, burst and max_keys must be positive")
        if initial is None:
            initial = burst
        if not 0 <= initial <= burst:
            raise ValueError("initial must be between 0 and burst")
        self._clock = clock
        self._rate = float(rate)
        self._burst = float(burst)
        self._initial = float(initial)
        self._max = max_keys
        self._budget = budget
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable) -> bool:
        """
        Take one token for C{key}; C{False} when it (or the global budget) has none left.
        """
        return self.check(key) == PASS

    def check(self, key: Hashable) -> int:
        """
        Apply the limits to one packet from C{key}: L{PASS}, L{OVER_SOURCE} or L{OVER_GLOBAL}.
        """
        now = self._clock.seconds()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._max:
                buckets.popitem(last=False)
            bucket = buckets[key] = [self._initial, now]
            tokens = self._initial
        else:
            buckets.move_to_end(key)
            tokens = bucket[0] + (now - bucket[1]) * self._rate
            if tokens > self._burst:
                tokens = self._burst
            bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return OVER_SOURCE
        bucket[0] = tokens - 1.0
        if self._budget is not None and not self._budget.allow():
            return OVER_GLOBAL
        return PASS


def teredo_auth_value(secret: bytes, nonce: bytes, confirmation: int, origin: bytes, ipv6: bytes) -> bytes:
    """
    The default authentication value of RFC 4380 section 5.2.2: HMAC-SHA1 keyed with the
    shared secret over the nonce, the confirmation byte, the origin indication (when present)
    and the IPv6 packet, "without any additional padding".  The RFC does not say to truncate,
    so the full 20-byte digest is carried (AU-len 20).
    """
    return hmac.new(secret, nonce + bytes((confirmation,)) + origin + ipv6, hashlib.sha1).digest()


def auth_matches(secret: bytes, value: bytes, nonce: bytes, confirmation: int, origin: bytes, ipv6: bytes) -> bool:
    """
    Constant-time check of a received authentication value.
    """
    return hmac.compare_digest(teredo_auth_value(secret, nonce, confirmation, origin, ipv6), value)
