"""
Defences shared by the roles: per-source rate limiting with bounded memory, and the
authentication value of secure qualification.

A public Teredo server or relay answers anyone.  Without a per-source limit one flooding
host starves every other client; without a bound on the limiter's own table an attacker
spraying spoofed sources exhausts memory instead.  L{RateLimiter} is both: token buckets per
key, at most C{max_keys} of them, least recently used evicted first.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from typing import Hashable

from twisted.internet.interfaces import IReactorTime

__all__ = ["RateLimiter", "teredo_auth_value", "auth_matches"]


class RateLimiter:
    """
    Token buckets keyed by source: C{rate} tokens per second, at most C{burst} saved up.

    A new key starts full (a client's first qualification is never delayed).  Evicting the
    least recently seen key when full can only ever let an evicted source send a fresh
    burst, never block a legitimate one.
    """

    def __init__(self, clock: IReactorTime, rate: float, burst: int, max_keys: int = 65536) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate, burst and max_keys must be positive")
        self._clock = clock
        self._rate = float(rate)
        self._burst = float(burst)
        self._max = max_keys
        self._buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, key: Hashable) -> bool:
        """
        Take one token for C{key}; C{False} when it has none left.
        """
        now = self._clock.seconds()
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._max:
                buckets.popitem(last=False)
            buckets[key] = [self._burst - 1.0, now]
            return True
        buckets.move_to_end(key)
        tokens = bucket[0] + (now - bucket[1]) * self._rate
        if tokens > self._burst:
            tokens = self._burst
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True


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
