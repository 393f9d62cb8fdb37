"""
What an interface does with checksums a packet still leaves to offload, which decides what
the relay's and the client's TC programs may encapsulate (bpf/teredo_client.bpf.c explains
the partial checksums and super-packets involved).

Two facts, read through the ethtool ioctl and sysfs (no process):

  - L{Offloads.checksumming}: the interface offloads transmit checksums.  When it does not,
    the kernel completes every checksum in software before the packet leaves, whatever the
    packet carries.
  - L{Offloads.hardware}: the interface is backed by a device (a NIC, a virtual machine's
    network device): whatever it cannot complete in hardware the kernel completes in
    software before its driver gets the packet, including an encapsulated packet's inner
    checksum.  A veth, by contrast, hands the packet to another network stack on the same
    host with its checksum still partial, and a receiver there that takes it as a frame
    (XDP) never completes it.
"""

from __future__ import annotations

import os
import socket
import struct

__all__ = ["Offloads"]


class Offloads:
    """
    Interface offloads, read through the ethtool ioctl and sysfs.
    """

    SIOCETHTOOL = 0x8946
    GTXCSUM = 0x16

    def _call(self, name: str, cmd: int, data: int = 0) -> int:
        import ctypes
        import fcntl

        value = ctypes.create_string_buffer(struct.pack("=II", cmd, data), 8)
        request = struct.pack("16sP", name.encode()[:15], ctypes.addressof(value)).ljust(40, b"\x00")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s.fileno(), self.SIOCETHTOOL, request)
        result: int = struct.unpack("=II", value.raw)[1]
        return result

    def checksumming(self, index: int) -> bool:
        """Does interface C{index} offload transmit checksums (or is that unknown)?"""
        try:
            return bool(self._call(socket.if_indextoname(index), self.GTXCSUM))
        except OSError:
            return True

    def hardware(self, index: int) -> bool:
        """Is interface C{index} backed by a device (C{/sys/class/net/IF/device})?"""
        try:
            return os.path.exists(f"/sys/class/net/{socket.if_indextoname(index)}/device")
        except OSError:
            return False

    def completesSegments(self, index: int) -> bool:
        """
        Does what the programs send out of C{index} as a UDP tunnel packet leave with its
        inner checksums complete, a packet's partial one and those of every segment cut from
        a super-packet: the interface computes checksums in software, or is a device (see the
        module docstring)?
        """
        return bool(index) and (not self.checksumming(index) or self.hardware(index))
