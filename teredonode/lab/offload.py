"""
Checksum offload and GRO on the lab's and the benchmarks' veth devices, without the ethtool
binary (the legacy C{SIOCETHTOOL} commands, which every kernel still takes).

Why the lab needs it: a datagram a local socket sends over a veth keeps a *partial* UDP
checksum (the kernel leaves the sum to a NIC that, on a veth, never comes), and it stays
partial through forwarding, NAT and the bridge, up to the receiving host.  A real wire
delivers complete checksums.  The kernel fast paths verify the UDP checksum in XDP, where
they cannot tell "partial" from "wrong", so they hand such datagrams to Python: in a lab
left as it is, the fast paths would carry nothing that came from a client.  Switching
transmit checksum offload off on the bridge ports toward the public hosts makes the bridge
complete the checksum as it forwards, as a NIC would have.

Run inside the device's namespace: C{python3 -m teredonode.lab.offload --tx off DEV...}.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import socket
import struct
from collections.abc import Sequence

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
ETHTOOL_SGRO = 0x2C


def _set(sock: socket.socket, dev: str, command: int, value: int) -> None:
    buf = ctypes.create_string_buffer(struct.pack("II", command, value))
    ifr = struct.pack("16sP", dev.encode(), ctypes.addressof(buf)) + bytes(16)
    fcntl.ioctl(sock, SIOCETHTOOL, ifr)


def set_offloads(devices: Sequence[str], tx_checksum: bool | None = None, gro: bool | None = None) -> None:
    """
    Set transmit checksum offload and GRO (where not C{None}) on C{devices} of this
    namespace.  Raises C{OSError} for a device that does not exist or refuses.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for dev in devices:
            if gro is not None:
                _set(sock, dev, ETHTOOL_SGRO, int(gro))
            if tx_checksum is not None:
                _set(sock, dev, ETHTOOL_STXCSUM, int(tx_checksum))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m teredonode.lab.offload")
    parser.add_argument("--tx", choices=("on", "off"), help="transmit checksum offload")
    parser.add_argument("--gro", choices=("on", "off"), help="generic receive offload")
    parser.add_argument("devices", nargs="+")
    args = parser.parse_args(argv)
    try:
        set_offloads(
            args.devices,
            None if args.tx is None else args.tx == "on",
            None if args.gro is None else args.gro == "on",
        )
    except OSError as e:
        parser.exit(1, f"offload: {e.strerror or e}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
