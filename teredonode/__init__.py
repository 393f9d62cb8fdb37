"""
teredonode: Teredo (RFC 4380, updated by RFC 5991 and RFC 6081) on Twisted.

Four roles -- client, server, relay, host-specific relay -- share one pure wire codec
(L{teredonode.wire}) and a set of zope interfaces (L{teredonode.interfaces}) so that every
role can be driven by real sockets and TUN devices or by the in-memory fakes of
L{teredonode.testing}.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
