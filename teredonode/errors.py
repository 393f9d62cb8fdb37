"""
The exceptions teredonode raises on purpose.

Each carries a short, one-line, operator-readable message: the twistd plugin and the
C{teredo} command print C{str(error)} and exit non-zero, never a traceback.
"""

from teredonode.wire.errors import ParseError

__all__ = ["ParseError", "TeredoError", "ConfigError", "NetConfigError", "LabError"]


class TeredoError(Exception):
    """
    Base of the errors meant to be shown to an operator as one line.
    """


class ConfigError(TeredoError):
    """
    The configuration file or command line is wrong.  The message names file, table, key.
    """


class NetConfigError(TeredoError):
    """
    Setting up an interface, address, route or sysctl failed.
    """


class LabError(TeredoError):
    """
    The network lab could not be built or driven (not root, no /dev/net/tun, missing tool).
    """
