"""
The C{teredo} twistd plugin: C{twistd -n teredo --role=server --config etc/teredo.toml}.

Kept to one line of work so that C{twistd --help}, which imports every dropin, stays cheap;
the real module is imported only when the C{teredo} subcommand is used.
"""

from twisted.application.service import ServiceMaker

Teredo = ServiceMaker(
    "Teredo",
    "teredonode.tap",
    "Teredo (RFC 4380) client, server, relay and host-specific relay",
    "teredo",
)
