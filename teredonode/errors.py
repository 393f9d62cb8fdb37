"""
The exceptions teredonode raises on purpose.

Each carries a short, one-line, operator-readable message: the twistd plugin and the
C{teredo} command print C{str(error)} and exit non-zero, never a traceback.
"""

from collections.abc import Mapping

from teredonode.wire.errors import ParseError

__all__ = ["ParseError", "TeredoError", "ConfigError", "NetConfigError", "LabError", "os_error_line"]


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


def os_error_line(error: OSError, known: Mapping[type[OSError], str] = {}, otherwise: str = "") -> str:
    """
    Why a system call failed, as the end of a one-line message: the text C{known} gives for
    the first class C{error} is an instance of (what that failure means here, in the
    operator's words), else C{otherwise} then the system's own text (C{strerror}, without the
    errno and file name Python's C{str} adds).
    """
    for kind, text in known.items():
        if isinstance(error, kind):
            return text
    return f"{otherwise}{error.strerror or error}"
