"""
Tests for L{teredonode.tun}: on Twisted's in-memory I/O system always, and on a real TUN
device inside a private network namespace when running as root.
"""

from __future__ import annotations

import errno

from twisted.internet.testing import MemoryReactorClock
from twisted.pair.testing import MemoryIOSystem, Tunnel
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from teredonode.interfaces import ITunDevice
from teredonode.tun import TunDevice
from tests.unit.test_netconfig import rootSkipReason, runIsolated

# An IPv6 header with no payload (next header 59), 2001:db8::2 -> 2001:db8::1.
PACKET = bytes.fromhex("6000000000003b40" "20010db8000000000000000000000002" "20010db8000000000000000000000001")


class MemoryTunTests(SynchronousTestCase):
    def setUp(self):
        self.system = MemoryIOSystem()
        self.system.registerSpecialDevice(Tunnel._DEVICE_NAME, Tunnel)
        self.reactor = MemoryReactorClock()
        self.tun = TunDevice("teredo", reactor=self.reactor, system=self.system)

    def _open(self):
        self.tun.open()
        return self.system.getTunnel(self.tun.port)

    def test_provides(self):
        self.assertTrue(verifyObject(ITunDevice, self.tun))

    def test_opensTunWithoutPacketInfo(self):
        """
        The device is opened in TUN mode with IFF_NO_PI, and the name is the kernel's.
        """
        tunnel = self._open()
        self.assertEqual(tunnel.tunnelMode, 0x0001 | 0x1000)
        self.assertEqual(self.tun.name, "teredo")

    def test_notReadingUntilAsked(self):
        """
        open() leaves packets in the kernel queue; startReading() starts delivery.
        """
        tunnel = self._open()
        self.assertNotIn(self.tun.port, self.reactor.getReaders())
        got: list[bytes] = []
        self.tun.startReading(got.append)
        self.assertIn(self.tun.port, self.reactor.getReaders())
        tunnel.readBuffer.append(PACKET)
        tunnel.readBuffer.append(PACKET[:40])
        assert self.tun.port is not None
        self.tun.port.doRead()
        self.assertEqual(got, [PACKET, PACKET[:40]])

    def test_write(self):
        tunnel = self._open()
        self.tun.write(PACKET)
        self.assertEqual(list(tunnel.writeBuffer), [PACKET])
        self.assertEqual(self.tun.drops, {})

    def test_writeErrorsCounted(self):
        """
        ENOBUFS (the fake's answer to a too-big write) and EBADF are counted, not raised;
        writing before open or after close counts "closed".
        """
        self.tun.write(PACKET)
        tunnel = self._open()
        self.tun.write(b"\x60" + bytes(Tunnel.SEND_BUFFER_SIZE))
        assert self.tun.port is not None
        self.system._openFiles.pop(self.tun.port.fileno())
        self.tun.write(PACKET)
        self.system._openFiles[self.tun.port.fileno()] = tunnel
        self.tun.close()
        self.tun.write(PACKET)
        self.assertEqual(self.tun.drops, {"closed": 2, "enobufs": 1, "ebadf": 1})

    def test_openFailure(self):
        """
        Permission denied becomes an OSError naming the device, with the errno kept.
        """
        self.system.permissions.discard("ioctl")
        exc = self.assertRaises(OSError, self.tun.open)
        self.assertEqual(exc.errno, errno.EPERM)
        self.assertIn("cannot open TUN device teredo", str(exc))
        self.assertIsNone(self.tun.port)

    def test_closeReleasesNow(self):
        tunnel = self._open()
        assert self.tun.port is not None
        fd = self.tun.port.fileno()
        self.tun.startReading(lambda p: None)
        self.tun.close()
        self.assertIsNone(self.tun.port)
        self.assertNotIn(fd, self.system._openFiles)
        self.assertEqual(self.reactor.getReaders(), [])
        self.tun.close()  # idempotent
        self.assertRaises(RuntimeError, self.tun.startReading, lambda p: None)
        del tunnel

    def test_closeAfterReactorShutdown(self):
        """
        At shutdown the reactor disconnects every reader itself; close() afterwards is
        harmless, and late writes are counted.
        """
        self._open()
        self.tun.startReading(lambda p: None)
        port = self.tun.port
        assert port is not None
        port.connectionLost(None)
        self.tun.write(PACKET)
        self.tun.close()
        self.assertFalse(port.connected)
        self.assertEqual(self.tun.drops, {"ebadf": 1})


_REAL_SCRIPT = r"""
import json, socket, struct
from twisted.internet import reactor
from teredonode.netconfig import NetlinkConfigurator
from teredonode.tun import TunDevice

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

def udp6(src, dst, sport, dport, payload):
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    length = 8 + len(payload)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    pseudo = s + d + struct.pack("!I3xB", length, 17)
    csum = checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, length, csum) + payload
    return struct.pack("!IHBB", 6 << 28, length, 17, 64) + s + d + udp

tun = TunDevice("tntest%d")
tun.open()
cfg = NetlinkConfigurator()
cfg.linkUp(tun.name, 1280)
cfg.addAddress(tun.name, "2001:db8::1", 64)

result = {"name": tun.name, "read": None, "received": None}
receiver = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
receiver.bind(("2001:db8::1", 0))
receiver.setblocking(False)
rport = receiver.getsockname()[1]

def deliver(packet):
    # the kernel routed our socket's datagram to 2001:db8::2 into the tunnel
    if packet[6] == 17 and packet[48:] == b"into-tun":
        result["read"] = {"src": socket.inet_ntop(socket.AF_INET6, packet[8:24]),
                          "dst": socket.inet_ntop(socket.AF_INET6, packet[24:40]),
                          "dport": struct.unpack("!H", packet[42:44])[0]}

sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
polls = [0]

def send():
    # Again every 0.2 s until both arrive: while the new address is still tentative
    # (duplicate address detection) the kernel drops what goes to or from it.
    if not result["read"]:
        sender.sendto(b"into-tun", ("2001:db8::2", 9))
    if not result["received"]:
        tun.write(udp6("2001:db8::2", "2001:db8::1", 7777, rport, b"out-of-tun"))

def poll():
    try:
        data, addr = receiver.recvfrom(2048)
        result["received"] = {"data": data.decode(), "src": addr[0], "sport": addr[1]}
    except BlockingIOError:
        pass
    if result["read"] and result["received"]:
        reactor.stop()
        return
    polls[0] += 1
    if polls[0] % 10 == 0:
        send()
    reactor.callLater(0.02, poll)

def start():
    tun.startReading(deliver)
    send()
    tun.write(bytes(40))  # version 0: the kernel refuses it with EINVAL
    poll()

reactor.callWhenRunning(start)
reactor.callLater(10, reactor.stop)
reactor.run()
tun.close()
result["drops"] = tun.drops
print(json.dumps(result))
"""


class RealTunTests(SynchronousTestCase):
    """
    A real device, in a network namespace that exists only for the test's subprocess.
    """

    skip = rootSkipReason(needTun=True)

    def test_packetsBothWays(self):
        result = runIsolated(_REAL_SCRIPT)
        self.assertEqual(result["name"], "tntest0")
        self.assertEqual(result["read"], {"src": "2001:db8::1", "dst": "2001:db8::2", "dport": 9})
        self.assertEqual(
            result["received"], {"data": "out-of-tun", "src": "2001:db8::2", "sport": 7777}
        )
        self.assertEqual(result["drops"], {"einval": 1})
