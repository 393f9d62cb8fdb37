"""
The pure wire codec: bytes in, typed immutable values out, and back.

No Twisted, no I/O, no logging.  Every decoder raises L{ParseError} (and only that) on
malformed input, with a short reason usable as a drop counter key.

  - L{teredonode.wire.address}: Teredo addresses and the link-local forms;
  - L{teredonode.wire.ipv4}: the "global unicast IPv4" predicate;
  - L{teredonode.wire.ipv6}: IPv6 header, ICMPv6 messages, checksums, bubbles;
  - L{teredonode.wire.teredo}: the UDP payload: authentication, origin indication,
    RFC 6081 trailers, and the one classifier for received datagrams.
"""

from teredonode.wire.errors import ParseError

__all__ = ["ParseError"]
