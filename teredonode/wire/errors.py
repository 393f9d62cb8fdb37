"""
The one exception the wire codec raises.
"""


class ParseError(ValueError):
    """
    Malformed wire input.  C{reason} is a short, stable phrase usable as a drop-counter key
    (e.g. C{"truncated ipv6 header"}); nothing else ever escapes a decoder.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
