"""
L{teredonode.probe.classify_nat} and L{nat_verdict}: the NAT kind (RFC 6081 section 2) from a
probe's observations, a pure function; and the SSDP answer parsing behind the UPnP verdict.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from teredonode.probe import (
    FIGURE1,
    KINDS,
    classify_nat,
    format_probe,
    nat_verdict,
    ssdp_names_gateway,
    ssdp_search,
)

P, S = "192.0.2.1", "192.0.2.2"
WAN = "198.51.100.7"


def server(
    mappings: list[tuple[int, str, str]],
    *,
    filtering: str | None = None,
    primary: str = P,
    secondary: str = S,
    rtt: float = 10.0,
) -> dict[str, Any]:
    """
    One server's observations as L{Prober.server} makes them: C{mappings} are (local port,
    "address:port", destination) in the order made; socket A's two come first.
    """
    a = [m for m in mappings if m[0] == mappings[0][0]]
    toward = {dst: mapped for _, mapped, dst in a}
    mapped, second = toward.get(primary), toward.get(secondary)
    return {
        "server": primary, "secondary": secondary, "answers": mapped is not None,
        "secondary-answers": second is not None, "rtt-ms": rtt if mapped else None,
        "secondary-rtt-ms": rtt if second else None, "local-port": mappings[0][0],
        "mapped": mapped, "mapped-secondary": second, "mappings": [list(m) for m in mappings],
        "cone-test": None if filtering in (None, "none") else filtering == "endpoint-independent",
        "mapping-per-destination": None if second is None else (filtering == "none" or mapped != second) and filtering != "none",
        "filtering": filtering,
    }


def eim(filtering: str | None, local: int = 40000, port: int = 40000, fresh: int = 40001) -> dict[str, Any]:
    """
    An endpoint-independent mapping, socket B's mapping preserved when C{port == local}.
    """
    b = fresh if port == local else fresh + 7000
    return server([(local, f"{WAN}:{port}", P), (local, f"{WAN}:{port}", S), (fresh, f"{WAN}:{b}", P)], filtering=filtering)


def symmetric(ports: list[int], addresses: list[str] | None = None, locals_: tuple[int, int] = (40000, 40001)) -> dict[str, Any]:
    """
    Four mappings: socket A toward primary and secondary, then socket B likewise.
    """
    addresses = addresses or [WAN] * 4
    owners = [locals_[0], locals_[0], locals_[1], locals_[1]]
    destinations = [P, S, P, S]
    return server([(o, f"{a}:{p}", d) for o, a, p, d in zip(owners, addresses, ports, destinations)])


class ClassifyTests(SynchronousTestCase):
    def kind(self, *results: dict[str, Any]) -> str:
        verdict = classify_nat(list(results))
        return str(verdict["kind"])

    def test_no_nat(self) -> None:
        observed = eim("none", port=40000)
        self.assertEqual(self.kind(observed), "none")

    def test_cone_and_restricted(self) -> None:
        self.assertEqual(self.kind(eim("endpoint-independent")), "cone")
        self.assertEqual(self.kind(eim("address-dependent")), "address-restricted")
        self.assertEqual(self.kind(eim("address-and-port-dependent")), "port-restricted")
        self.assertEqual(self.kind(eim(None)), "restricted", "filtering tests inconclusive")

    def test_the_most_permissive_filtering_seen_wins(self) -> None:
        """
        A server whose cone answer got lost must not hide another server's cone result.
        """
        self.assertEqual(self.kind(eim("address-and-port-dependent"), eim("endpoint-independent")), "cone")

    def test_port_preservation_on_a_cone_nat(self) -> None:
        self.assertTrue(classify_nat([eim("address-and-port-dependent")])["port-preserving"])
        verdict = classify_nat([eim("address-and-port-dependent", port=61000)])
        self.assertFalse(verdict["port-preserving"])
        self.assertEqual(verdict["kind"], "port-restricted")
        self.assertIsNone(verdict["sequential"], "sequential is a symmetric NAT's property")

    def test_port_preserving_symmetric(self) -> None:
        """
        Each socket's first mapping keeps its port; the others do not.
        """
        verdict = classify_nat([symmetric([40000, 52011, 40001, 60123])])
        self.assertEqual((verdict["kind"], verdict["port-preserving"]), ("port-preserving-symmetric", True))

    def test_only_the_first_socket_preserved_is_not_port_preserving(self) -> None:
        verdict = classify_nat([symmetric([40000, 52011, 33333, 60123])])
        self.assertEqual((verdict["kind"], verdict["port-preserving"]), ("port-symmetric", False))

    def test_sequential_delta_one_and_two(self) -> None:
        for delta in (1, 2):
            ports = [20000 + k * delta for k in range(4)]
            verdict = classify_nat([symmetric(ports)])
            self.assertEqual((verdict["kind"], verdict["sequential"], verdict["port-delta"]), ("sequential-symmetric", True, delta))

    def test_sequential_across_servers_in_probe_order(self) -> None:
        """
        The mappings run on from one server to the next (the order they were made), not
        the order of the ranking.
        """
        first = symmetric([20000, 20001, 20002, 20003])
        second = symmetric([20004, 20005, 20006, 20007])
        second["server"], second["rtt-ms"] = "192.0.2.9", 1.0  # ranks first
        report = nat_verdict([first, second])
        self.assertEqual([s["server"] for s in report["servers"]], ["192.0.2.9", P])
        self.assertEqual((report["kind"], report["port-delta"]), ("sequential-symmetric", 1))

    def test_random_ports(self) -> None:
        for ports in ([31001, 58211, 1200, 44001], [20000, 20001, 20002, 20010], [20000, 20003, 20006, 20009]):
            verdict = classify_nat([symmetric(ports)])
            self.assertEqual((verdict["kind"], verdict["sequential"]), ("port-symmetric", False), ports)

    def test_too_few_mappings_for_sequential(self) -> None:
        """
        Socket B got no answer: two mappings, one delta, which says nothing.
        """
        observed = server([(40000, f"{WAN}:20000", P), (40000, f"{WAN}:20001", S)])
        report = nat_verdict([observed])
        self.assertEqual((report["kind"], report["sequential"]), ("port-symmetric", None))
        self.assertIn("too few mappings", report["detail"])

    def test_address_symmetric(self) -> None:
        """
        Another external address toward the secondary address: address-symmetric, whatever
        the ports do (here they even look sequential).
        """
        addresses = [WAN, "198.51.100.160", "198.51.100.161", "198.51.100.162"]
        verdict = classify_nat([symmetric([20000, 20001, 20002, 20003], addresses)])
        self.assertEqual(verdict["kind"], "address-symmetric")
        self.assertIsNone(verdict["port-preserving"])

    def test_nothing_answered(self) -> None:
        silent = server([(40000, "", "x")])
        silent.update({"answers": False, "secondary-answers": False, "mapped": None, "mappings": []})
        report = nat_verdict([silent])
        self.assertEqual((report["kind"], report["nat"], report["best"], report["figure1"]), ("unknown", "unknown", None, None))
        self.assertIn("no server answered", report["detail"])

    def test_secondary_silent(self) -> None:
        observed = server([(40000, f"{WAN}:40000", P)])
        report = nat_verdict([observed])
        self.assertEqual((report["kind"], report["best"]), ("unknown", P))
        self.assertIn("no secondary", report["detail"])


class VerdictTests(SynchronousTestCase):
    def test_coarse_class_and_figure1_row(self) -> None:
        cases = [
            (eim("endpoint-independent"), False, "cone", "cone", "Cone"),
            (eim("address-dependent"), None, "address-restricted", "restricted", "Address restricted"),
            (eim("address-and-port-dependent"), False, "port-restricted", "port-restricted", "Port restricted"),
            (eim("address-and-port-dependent"), True, "port-restricted", "port-restricted", "UPnP Port-restricted"),
            (symmetric([31001, 58211, 1200, 44001]), True, "port-symmetric", "symmetric", "UPnP Port symmetric"),
            (symmetric([20000, 20001, 20002, 20003]), False, "sequential-symmetric", "symmetric", "Sequential Port-symmetric"),
            (symmetric([40000, 52011, 40001, 60123]), False, "port-preserving-symmetric", "symmetric", "Port-preserving Port-symmetric"),
        ]
        for observed, upnp, kind, coarse, row in cases:
            report = nat_verdict([observed], upnp)
            self.assertEqual((report["kind"], report["nat"], report["figure1"], report["upnp"]), (kind, coarse, row, upnp))
            self.assertEqual(report["servers"][0]["kind"], kind, "each server's own verdict")

    def test_every_kind_is_described_and_rowed(self) -> None:
        self.assertLessEqual(set(FIGURE1), set(KINDS))
        for kind in set(KINDS) - {"unknown"}:
            self.assertTrue(KINDS[kind], kind)

    def test_each_server_keeps_its_own_verdict(self) -> None:
        """
        Two servers that disagree: the report says so per server; the overall verdict
        takes the stronger evidence (a mapping per destination).
        """
        report = nat_verdict([eim("address-and-port-dependent"), symmetric([31001, 58211, 1200, 44001])])
        self.assertEqual({s["kind"] for s in report["servers"]}, {"port-restricted", "port-symmetric"})
        self.assertEqual(report["kind"], "port-symmetric")

    def test_text_output(self) -> None:
        report = nat_verdict([symmetric([20000, 20001, 20002, 20003])], None)
        report["packets"] = {"sent": 4, "received": 4}
        text = format_probe(report)
        self.assertIn("NAT: sequential-symmetric", text)
        self.assertIn("RFC 6081 Figure 1: Sequential Port-symmetric", text)
        self.assertIn("UPnP: not checked", text)
        self.assertIn("sequential: yes (port delta 1)", text)
        self.assertIn("datagrams: 4 sent, 4 received", text)
        report = nat_verdict([eim("endpoint-independent")], False)
        self.assertIn("UPnP: no gateway answered", format_probe(report))
        report = nat_verdict([eim("endpoint-independent")], True)
        report["upnp-gateway"] = "10.1.0.1"
        self.assertIn("UPnP: an Internet Gateway Device answered (10.1.0.1)", format_probe(report))


class SsdpTests(SynchronousTestCase):
    def test_search(self) -> None:
        search = ssdp_search().decode("ascii")
        self.assertTrue(search.startswith("M-SEARCH * HTTP/1.1\r\n"))
        self.assertIn("\r\nMAN: \"ssdp:discover\"\r\n", search)
        self.assertIn("\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n", search)
        self.assertTrue(search.endswith("\r\n\r\n"))

    def test_gateway_answer(self) -> None:
        answer = (
            b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\n"
            b"st: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\n"
            b"LOCATION: http://10.1.0.1:43951/rootDesc.xml\r\n\r\n"
        )
        self.assertTrue(ssdp_names_gateway(answer))

    def test_other_answers(self) -> None:
        for data in (
            b"HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:MediaServer:1\r\n\r\n",
            b"NOTIFY * HTTP/1.1\r\nNT: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n",
            b"\xff\xfe garbage",
            b"",
        ):
            self.assertFalse(ssdp_names_gateway(data), data)
