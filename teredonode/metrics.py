"""
Prometheus metrics: the node's status document as series, plus a few latency histograms,
served over HTTP by twisted.web at C{GET /metrics} when C{[node] metrics} names an address.

Why from the status document: it already holds every number an operator may ask about, and
every new counter or drop reason must appear there (docs/status.md).  Translating the document
at scrape time (L{StatusCollector}) means a counter added to a role's status is a metric too,
with nothing to register twice.  The translation, per role table C{<role>} (C{host-relay}
becomes C{host_relay}):

  - C{counters}: one counter per key, C{teredonode_<role>_<key>_total};
  - C{drops}, C{peers.probes-suppressed}: C{teredonode_<role>_drops_total{reason}},
    C{teredonode_<role>_peers_probes_suppressed_total{reason}};
  - C{send-errors}, C{send-drops}, C{tun-drops}: C{teredonode_<role>_<field>_total{errno}};
  - C{rates-per-second}: C{teredonode_<role>_rate_per_second{counter}};
  - other numbers and booleans: gauges named by their path (C{teredonode_client_peers_peers});
  - strings (state, NAT type, addresses): labels of one C{teredonode_<role>_info} gauge of
    value 1 per table (nested tables get their own C{..._<table>_info});
  - lists are left out (their content is in C{teredo status}).

Latencies are not in the status document; roles report them through L{observe} (a dict
look-up and a bucket increment, no I/O).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet.interfaces import IListeningPort

from teredonode.listening import ListeningService
from twisted.web.resource import Resource
from twisted.web.server import Site

from teredonode.interfaces import IStatusSource
from teredonode.logs import Logger

__all__ = [
    "StatusCollector",
    "MetricsResource",
    "MetricsService",
    "LATENCIES",
    "observe",
    "render_metrics",
    "metricsRegistry",
]

#: Status fields holding counts keyed by something variable, and the label that key becomes.
LABELLED_COUNTERS = {
    "drops": "reason",
    "trailers-stripped": "reason",
    "send-errors": "errno",
    "send-drops": "errno",
    "tun-drops": "errno",
    "probes-suppressed": "reason",
}
#: Status fields holding gauges keyed by a counter name.
LABELLED_GAUGES = {"rates-per-second": "counter"}

_NAME = re.compile(r"[^a-zA-Z0-9_]")

# A histogram's creation time is process state, not something an operator reads.
disable_created_metrics()  # type: ignore[no-untyped-call]


def _name(*parts: str) -> str:
    return "_".join(_NAME.sub("_", p) for p in ("teredonode", *parts) if p)


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)

#: The latency histograms, by the name roles report them under.
LATENCIES: dict[str, Histogram] = {
    "qualification": Histogram(
        "teredonode_client_qualification_seconds",
        "Time from starting to qualify to qualified (client), retries and backoff included.",
        buckets=_LATENCY_BUCKETS,
        registry=None,
    ),
    "rs-ra": Histogram(
        "teredonode_client_rs_ra_seconds",
        "Round trip of an accepted Router Solicitation to the server's Router Advertisement.",
        buckets=_LATENCY_BUCKETS,
        registry=None,
    ),
    "echo-test": Histogram(
        "teredonode_client_echo_test_seconds",
        "Direct IPv6 connectivity test: last echo request sent to the nonce's echo reply.",
        buckets=_LATENCY_BUCKETS,
        registry=None,
    ),
}


def observe(name: str, seconds: float) -> None:
    """
    Record one latency under C{name} (a key of L{LATENCIES}); negative values (a clock step)
    are ignored.
    """
    if seconds >= 0:
        LATENCIES[name].observe(seconds)


class StatusCollector:
    """
    A prometheus_client collector reading C{source.status()} at each scrape.
    """

    def __init__(self, source: IStatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        document = self.source.status()
        for role, table in document.items():
            if isinstance(table, dict):
                yield from _table(_NAME.sub("_", role), table)
        if "client" in document:  # every histogram is a client's
            for histogram in LATENCIES.values():
                yield from histogram.collect()


def _table(prefix: str, table: dict[str, Any]) -> Iterator[Metric]:
    info: dict[str, str] = {}
    for key, value in table.items():
        name = _NAME.sub("_", key)
        if key == "counters" and isinstance(value, dict):
            for counter, count in value.items():
                if _number(count):
                    yield CounterMetricFamily(
                        _name(prefix, _NAME.sub("_", counter)), f"status {key}.{counter}", value=count
                    )
        elif key in LABELLED_COUNTERS and isinstance(value, dict):
            label = LABELLED_COUNTERS[key]
            counters = CounterMetricFamily(_name(prefix, name), f"status {key} by {label}", labels=[label])
            for what, count in value.items():
                if _number(count):
                    counters.add_metric([str(what)], count)
            yield counters
        elif key in LABELLED_GAUGES and isinstance(value, dict):
            label = LABELLED_GAUGES[key]
            family = GaugeMetricFamily(_name(prefix, "rate_per_second"), f"status {key}", labels=[label])
            for what, number in value.items():
                if _number(number):
                    family.add_metric([str(what)], number)
            yield family
        elif isinstance(value, dict):
            yield from _table(f"{prefix}_{name}", value)
        elif isinstance(value, bool):
            yield GaugeMetricFamily(_name(prefix, name), f"status {key} (1 true, 0 false)", value=int(value))
        elif _number(value):
            yield GaugeMetricFamily(_name(prefix, name), f"status {key}", value=value)
        elif isinstance(value, str):
            info[name] = value
    if info:
        family = GaugeMetricFamily(
            _name(prefix, "info"), "status text fields, as labels", labels=list(info)
        )
        family.add_metric(list(info.values()), 1)
        yield family


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metricsRegistry(source: IStatusSource) -> CollectorRegistry:
    """
    A registry holding only the node's collector (no process or platform collectors: the
    node exposes what it knows; node_exporter covers the host).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(source))
    return registry


def render_metrics(source: IStatusSource) -> bytes:
    """
    The Prometheus text exposition of C{source}'s status and the latency histograms.
    """
    return generate_latest(metricsRegistry(source))


class MetricsResource(Resource):
    """
    C{GET /metrics}: the exposition; everything else is 404.
    """

    isLeaf = True

    def __init__(self, source: IStatusSource) -> None:
        Resource.__init__(self)
        self._registry = metricsRegistry(source)

    def render_GET(self, request: Any) -> bytes:
        if request.path != b"/metrics":
            request.setResponseCode(404)
            return b"not found: try /metrics\n"
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


class MetricsService(ListeningService):
    """
    Listens on C{address} (C{"host:port"}, C{"[v6]:port"}) while running.  Bound in
    C{privilegedStartService} like the status socket, so a port below 1024 works too.
    """

    log = Logger()

    def __init__(self, address: str, source: IStatusSource, reactor: Any) -> None:
        host, _, port = address.rpartition(":")
        self.host = host[1:-1] if host.startswith("[") else host
        self.portNumber = int(port)
        self.source = source
        self._reactor = reactor

    def listen(self) -> IListeningPort:
        site = Site(MetricsResource(self.source))
        site.noisy = False
        port: Any = self._reactor.listenTCP(self.portNumber, site, interface=self.host)
        self.log.info("metrics on http://{address}/metrics", address=self._text(port.getHost().port))
        return cast(IListeningPort, port)

    @property
    def address(self) -> str:
        """Where it listens (the port the kernel chose, once bound)."""
        port: Any = self.port
        return self._text(port.getHost().port if port is not None else self.portNumber)

    def _text(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{port}"
