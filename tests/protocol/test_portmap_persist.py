"""
The Persisted UPnP-Mapped Port (RFC 6081 sections 5.3.1, 5.3.3, 5.3.5.1; X-UPNP-02, -03,
-13): L{GatewayPortMapping} with its state file, against the fake router of
L{tests.protocol.test_portmap} (PCP/NAT-PMP on port 5351, SSDP and a fake IGD), and the
client qualifying behind it.  A "restart" is a second L{GatewayPortMapping} (a new process)
on the same file; a "crash" is a first one never told to unmap.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from teredonode.config import ClientSettings, parse_config
from teredonode.errors import ConfigError
from teredonode.portmap import igd
from teredonode.portmap.client import GatewayPortMapping
from teredonode.portmap.mappers import AutoMapper, NatPmpMapper, PcpMapper, UpnpMapper
from teredonode.portmap.persist import PersistedMapping, decode, encode
from teredonode.roles.client import TeredoClient
from teredonode.testing import FakeNetworkConfigurator, FakeTunDevice
from tests.protocol.test_client import PRIMARY, SECONDARY, ClientTestCase
from tests.protocol.test_portmap import CLIENT, EXTERNAL, GATEWAY, LOCATION, FakeIgd, FakeSsdp, Network

LOCAL_PORT = 40000


def scratch(test: SynchronousTestCase) -> str:
    """A private directory for the state file, removed after C{test}."""
    directory = tempfile.mkdtemp(prefix="teredo-portmap-")
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


class Router:
    """
    The fake router of test_portmap: PCP/NAT-PMP (or not) and UPnP, one IGD for all
    "processes" (the router outlives the client).
    """

    def __init__(self, pcp: bool = False, natpmp: bool = False) -> None:
        self.n = Network(pcp=pcp, natpmp=natpmp, gatewayListens=pcp or natpmp)
        self.n.router.listenMulticast(igd.SSDP_PORT, FakeSsdp([LOCATION]))
        self.igd = FakeIgd()

    def mappers(self, reactor: Any, protocol: str, gateway: str | None, bindAddress: str = "") -> AutoMapper:
        """The production combinator, on the fake router (the gateway given, not looked up)."""
        return AutoMapper(
            [PcpMapper(reactor, GATEWAY), NatPmpMapper(reactor, GATEWAY), UpnpMapper(reactor, http=self.igd)]
        )

    def process(self, path: str | None) -> GatewayPortMapping:
        """One client process's port mapping on the state file C{path}."""
        return GatewayPortMapping(self.n.client, bind=CLIENT, routes="/nonexistent", state=path, mappers=self.mappers)

    def actions(self) -> list[str]:
        return [action for action, _ in self.igd.actions()]


class PersistedPortTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.join(scratch(self), "client-port-mapping.json")
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def lines(self) -> list[str]:
        return [
            e["log_format"].format(**e)
            for e in self.events
            if e.get("log_namespace", "").startswith("teredonode.portmap") and "log_format" in e
        ]

    def persisted(self) -> dict[str, Any] | None:
        if not os.path.exists(self.path):
            return None
        with open(self.path, "rb") as f:
            value: dict[str, Any] = json.loads(f.read())
            return value

    def test_cleanRestart(self) -> None:
        """
        X-UPNP-02, X-UPNP-06: the mapped port is persisted once mapped; X-UPNP-13: the clean shutdown
        deletes the mapping and then the file (zero); the next start has nothing to delete
        and maps at once.
        """
        router = Router()
        first = router.process(self.path)
        mapping = router.n.outcome(first.map(LOCAL_PORT))
        self.assertEqual((mapping.protocol, mapping.externalPort), ("upnp", LOCAL_PORT))
        self.assertEqual(self.persisted(), {"protocol": "upnp", "port": LOCAL_PORT, "local-port": LOCAL_PORT})
        self.assertIsNone(router.n.outcome(first.unmap()))
        self.assertEqual(router.actions(), ["AddPortMapping", "GetExternalIPAddress", "DeletePortMapping"])
        self.assertIsNone(self.persisted())

        second = router.process(self.path)
        router.n.outcome(second.map(LOCAL_PORT))
        self.assertEqual(router.actions()[3:], ["AddPortMapping", "GetExternalIPAddress"])
        self.assertEqual(self.persisted(), {"protocol": "upnp", "port": LOCAL_PORT, "local-port": LOCAL_PORT})
        self.assertEqual(self.lines(), [])

    def test_crashThenRestartDeletesFirst(self) -> None:
        """
        X-UPNP-03: the first process dies without deleting; the next one calls
        DeletePortMapping("", persisted port, UDP) before AddPortMapping, and the record
        then names the new mapping.  Renewals of the new mapping delete nothing.
        """
        router = Router()
        router.n.outcome(router.process(self.path).map(LOCAL_PORT))
        crashedAt = len(router.igd.actions())

        second = router.process(self.path)
        router.n.outcome(second.map(LOCAL_PORT))
        self.assertEqual(
            router.igd.actions()[crashedAt:],
            [
                ("DeletePortMapping", {"NewRemoteHost": "", "NewExternalPort": str(LOCAL_PORT), "NewProtocol": "UDP"}),
                ("AddPortMapping", router.igd.actions()[0][1]),
                ("GetExternalIPAddress", {}),
            ],
        )
        self.assertEqual(self.persisted(), {"protocol": "upnp", "port": LOCAL_PORT, "local-port": LOCAL_PORT})
        self.assertEqual(self.lines(), [f"Deleted the port mapping left by an earlier run (upnp port {LOCAL_PORT})"])

        router.n.outcome(second.map(LOCAL_PORT))  # a renewal
        self.assertNotIn("DeletePortMapping", router.actions()[crashedAt + 3:])

    def test_persistedBeforeGetExternalIPAddress(self) -> None:
        """
        X-UPNP-06's order: the persisted copy is set when AddPortMapping succeeds, before
        GetExternalIPAddress; a process that dies waiting for that answer still leaves the
        record, and its successor deletes the mapping first (X-UPNP-03).
        """
        router = Router()
        igdHttp = router.igd
        hung: list[Deferred[tuple[int, bytes]]] = []

        def http(method: bytes, url: str, headers: dict[str, str], body: bytes | None) -> Deferred[tuple[int, bytes]]:
            if body is not None and b"GetExternalIPAddress" in body and not hung:
                hung.append(Deferred())
                igdHttp.calls.append((method, url, headers, body))
                return hung[0]
            return igdHttp(method, url, headers, body)

        dying = GatewayPortMapping(
            router.n.client, bind=CLIENT, routes="/nonexistent", state=self.path,
            mappers=lambda reactor, *_, **__: UpnpMapper(reactor, http=http),
        )
        dying.map(LOCAL_PORT)
        router.n.net.run(30)
        self.assertEqual(router.actions(), ["AddPortMapping", "GetExternalIPAddress"])
        self.assertEqual(self.persisted(), {"protocol": "upnp", "port": LOCAL_PORT, "local-port": LOCAL_PORT})
        router.n.outcome(router.process(self.path).map(LOCAL_PORT))
        self.assertEqual(router.actions()[2:], ["DeletePortMapping", "AddPortMapping", "GetExternalIPAddress"])

    def test_crashThenRestartPcpNonce(self) -> None:
        """
        A PCP mapping is persisted with its nonce and its external port; the next process
        deletes it with that nonce (RFC 6887 section 15: the fake router refuses any other),
        then maps anew.
        """
        router = Router(pcp=True)
        mapping = router.n.outcome(router.process(self.path).map(LOCAL_PORT))
        self.assertEqual(mapping.protocol, "pcp")
        record = self.persisted()
        assert record is not None
        self.assertEqual((record["port"], record["local-port"]), (mapping.externalPort, LOCAL_PORT))
        self.assertEqual(bytes.fromhex(record["nonce"]), router.n.gateway.nonces[LOCAL_PORT])
        start = len(router.n.gateway.requests)

        router.n.outcome(router.process(self.path).map(LOCAL_PORT))
        lifetimes = [int.from_bytes(data[4:8], "big") for data, _, _ in router.n.gateway.requests[start:]]
        self.assertEqual(lifetimes, [0, 3600], "a delete, then the new mapping")
        self.assertEqual(router.n.gateway.requests[start][0][24:36], bytes.fromhex(record["nonce"]))
        self.assertIn(f"Deleted the port mapping left by an earlier run (pcp port {mapping.externalPort})", self.lines())
        self.assertEqual(router.actions(), [], "UPnP is not asked")

    def test_corruptFile(self) -> None:
        """
        Garbage in the file: one log line, taken as zero (nothing deleted), the mapping made
        and persisted over it.
        """
        with open(self.path, "wb") as f:
            f.write(b'{"protocol": "upnp", "port": 0, "local-port": 40000}')
        router = Router()
        router.n.outcome(router.process(self.path).map(LOCAL_PORT))
        self.assertEqual(router.actions(), ["AddPortMapping", "GetExternalIPAddress"])
        self.assertEqual(self.lines(), [f"Persisted port mapping {self.path} ignored: a port is an integer 1..65535"])
        self.assertEqual(self.persisted(), {"protocol": "upnp", "port": LOCAL_PORT, "local-port": LOCAL_PORT})

    def test_unreadableFile(self) -> None:
        """
        A path that cannot be read (here a directory): one line, zero, no crash; the mapping
        is still made, only not persisted (one more line).
        """
        os.mkdir(self.path)
        router = Router()
        mapping = router.n.outcome(router.process(self.path).map(LOCAL_PORT))
        self.assertEqual(mapping.protocol, "upnp")
        lines = self.lines()
        self.assertEqual(len(lines), 2, lines)
        self.assertTrue(lines[0].startswith(f"Persisted port mapping {self.path} unreadable ("), lines)
        self.assertTrue(lines[1].startswith(f"Port mapping not persisted to {self.path}: "), lines)
        self.assertEqual(router.actions(), ["AddPortMapping", "GetExternalIPAddress"])

    def test_disabled(self) -> None:
        """
        No state file (C{port-mapping-state = ""}): nothing is written, and a record that
        exists is not read, so nothing is deleted before mapping.
        """
        with open(self.path, "wb") as f:
            f.write(encode(PersistedMapping("upnp", LOCAL_PORT, LOCAL_PORT)))
        router = Router()
        process = router.process(None)
        router.n.outcome(process.map(LOCAL_PORT))
        router.n.outcome(process.unmap())
        self.assertEqual(router.actions(), ["AddPortMapping", "GetExternalIPAddress", "DeletePortMapping"])
        self.assertEqual(self.persisted(), {"protocol": "upnp", "port": LOCAL_PORT, "local-port": LOCAL_PORT})
        self.assertEqual(os.listdir(os.path.dirname(self.path)), [os.path.basename(self.path)])

    def test_failedDeletionKeptForNextStart(self) -> None:
        """
        A shutdown whose DeletePortMapping fails keeps the record (the port is still
        mapped), so the next start deletes it (X-UPNP-03).
        """
        router = Router()
        first = router.process(self.path)
        router.n.outcome(first.map(LOCAL_PORT))
        router.igd.answers["DeletePortMapping"] = (500, b"not SOAP")
        self.assertIsNone(router.n.outcome(first.unmap()))
        self.assertIsNotNone(self.persisted())
        router.igd.answers["DeletePortMapping"] = FakeIgd().answers["DeletePortMapping"]
        router.n.outcome(router.process(self.path).map(LOCAL_PORT))
        self.assertEqual(router.actions()[3:], ["DeletePortMapping", "AddPortMapping", "GetExternalIPAddress"])

    def test_staleDeletionFailsMappingGoesOn(self) -> None:
        """
        X-UPNP-05 spirit: a router that refuses the stale deletion does not stop the new
        mapping; one line says so.
        """
        with open(self.path, "wb") as f:
            f.write(encode(PersistedMapping("upnp", 41000, 41000)))
        router = Router()
        router.igd.answers["DeletePortMapping"] = (500, b"not SOAP")
        mapping = router.n.outcome(router.process(self.path).map(LOCAL_PORT))
        self.assertEqual(mapping.externalPort, LOCAL_PORT)
        self.assertEqual(router.actions(), ["DeletePortMapping", "AddPortMapping", "GetExternalIPAddress"])
        [line] = self.lines()
        self.assertTrue(line.startswith("Port mapping left by an earlier run (upnp port 41000) not deleted: upnp: "), line)


class RecordCodecTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        for record in (PersistedMapping("upnp", 1, 1), PersistedMapping("pcp", 65535, 4000, bytes(range(12)))):
            self.assertEqual(decode(encode(record)), record)

    def test_refused(self) -> None:
        """Anything but the exact layout is a one-line ValueError, never another error."""
        for data in (
            b"", b"\xff", b"[]", b"null", b"[" * 100000, b"{}" + b" " * 5000,
            b'{"protocol": "upnp", "port": 1, "local-port": 1, "extra": 1}',
            b'{"protocol": "ftp", "port": 1, "local-port": 1}',
            b'{"protocol": "upnp", "port": true, "local-port": 1}',
            b'{"protocol": "upnp", "port": 1.0, "local-port": 1}',
            b'{"protocol": "upnp", "port": 65536, "local-port": 1}',
            b'{"protocol": "pcp", "port": 1, "local-port": 1, "nonce": "zz"}',
            b'{"protocol": "pcp", "port": 1, "local-port": 1, "nonce": "' + b"g" * 24 + b'"}',
        ):
            with self.assertRaises(ValueError, msg=data[:40]) as caught:
                decode(data)
            self.assertNotIn("\n", str(caught.exception))


class ClientRestartTests(ClientTestCase):
    """
    The client with the production port mapping on the fake router: the stale mapping is
    deleted before the mapping is asked and before qualification starts (X-UPNP-03).
    """

    def test_staleMappingDeletedBeforeQualifying(self) -> None:
        """
        X-UPNP-03: the stale mapping is deleted before AddPortMapping and the first RS;
        X-UPNP-06: the UPnP-Mapped Port, and its persisted copy, is the local port;
        X-UPNP-07: GetExternalIPAddress is called and its answer is the UPnP-Mapped Address
        (status C{port-mapping.external}).
        """
        path = os.path.join(scratch(self), "state.json")
        with open(path, "wb") as f:
            f.write(encode(PersistedMapping("upnp", 4096, 4096)))
        nat = self.net.nat("port-restricted", public="198.51.100.9", rng=random.Random(1))
        host, router = nat.host("10.0.0.2"), nat.host("10.0.0.1")
        router.listenMulticast(igd.SSDP_PORT, FakeSsdp([LOCATION.replace(GATEWAY, "10.0.0.1")]))
        fake = FakeIgd()
        seen: list[tuple[str, int]] = []

        def http(method: bytes, url: str, headers: dict[str, str], body: bytes | None) -> Any:
            url = url.replace("10.0.0.1", GATEWAY)
            if method == b"POST":
                action = headers["SOAPAction"].strip('"').rpartition("#")[2]
                seen.append((action, self.server.status()["counters"]["received"]))
            return fake(method, url, headers, body)

        mapping = GatewayPortMapping(
            host, bind="10.0.0.2", routes="/nonexistent", state=path,
            mappers=lambda reactor, *_, **__: UpnpMapper(reactor, http=http),
        )
        rng = random.Random(1)
        client = TeredoClient(
            ClientSettings(server=PRIMARY, secondary=SECONDARY, port=4096),
            host, FakeTunDevice("teredo"), FakeNetworkConfigurator(),
            rng=rng, randbytes=rng.randbytes, portMapping=mapping,
        )
        client.privilegedStartService()
        client.startService()
        self.addCleanup(client.stopService)
        self.net.run(30)
        self.assertEqual(client.state, "qualified")
        self.assertEqual(
            seen, [("DeletePortMapping", 0), ("AddPortMapping", 0), ("GetExternalIPAddress", 0)],
            "the stale mapping is deleted first, all before the first RS",
        )
        self.assertEqual(client.status()["port-mapping"]["external"], f"{EXTERNAL}:4096")
        with open(path, "rb") as record:
            self.assertEqual(decode(record.read()), PersistedMapping("upnp", 4096, 4096))
        self.net.run(0)
        client.stopService()
        self.net.run(5)
        self.assertEqual(seen[-1][0], "DeletePortMapping")
        self.assertFalse(os.path.exists(path), "a clean stop zeroes the persisted port")


class SettingTests(SynchronousTestCase):
    """C{[client] port-mapping-state}: where the record lives, and off."""

    def state(self, extra: str = "", **overrides: Any) -> str | None:
        text = f'[client]\nenabled = true\nserver = "192.0.2.1"\n{extra}'
        settings = parse_config(text, overrides=overrides).roles["client"]
        assert isinstance(settings, ClientSettings)
        return settings.port_mapping_state

    def test_defaultInStateDir(self) -> None:
        """A file name is in [node] state-dir (the shipped unit's --state-dir included)."""
        self.assertEqual(self.state(), "/var/lib/teredonode/client-port-mapping.json")
        self.assertEqual(self.state(**{"state-dir": "/var/lib/teredonode/client"}), "/var/lib/teredonode/client/client-port-mapping.json")
        self.assertEqual(self.state('port-mapping-state = "pm"\n[node]\nstate-dir = "/srv/t"\n'), "/srv/t/pm")

    def test_absoluteAndOff(self) -> None:
        self.assertEqual(self.state('port-mapping-state = "/run/x.json"\n'), "/run/x.json")
        self.assertEqual(self.state('port-mapping-state = ""\n'), "")

    def test_refused(self) -> None:
        for value in ('"a/b"', '".."', "3"):
            with self.assertRaises(ConfigError) as caught:
                self.state(f"port-mapping-state = {value}\n")
            self.assertIn("[client] port-mapping-state", str(caught.exception))
