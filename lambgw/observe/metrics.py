"""The gateway's Prometheus metrics, exported with prometheus_client.

Counters and histograms moved by every request are kept by the reactor thread in plain
dictionaries (no lock, no per-sample object: a request costs a few dictionary updates) and
handed to prometheus_client as metric families when ``/metrics`` is scraped; gauges are
prometheus_client's own, set afresh before each scrape.  One registry per gateway holds them
all, and prometheus_client writes the text exposition format.  :class:`GatewayMetrics`
names every metric the gateway exports.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate

from attrs import define, field, frozen
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

#: Latency buckets of S3 requests, in seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Latency buckets of network calls, in seconds.
NETWORK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The content type of the exposition format the metrics are written in.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[str, ...]


@define(eq=False)  # hashed by identity: the registry keys its collectors
class _Family:
    """A metric family kept by the gateway: its name, help text and label names."""

    name: str
    help: str
    labelnames: Labels = ()

    def _refuse(self, labels: Labels) -> None:
        raise ValueError(f"{self.name} takes labels {self.labelnames}, not {labels}")


@define(eq=False)
class Counter(_Family):
    """A value that only goes up, per label values, exported as a prometheus_client counter."""

    _values: dict[Labels, float] = field(factory=dict)

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the counter of ``labels``."""
        if len(labels) != len(self.labelnames):
            self._refuse(labels)
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        """The current value for ``labels``."""
        return self._values.get(labels, 0.0)

    def collect(self) -> Iterator[Metric]:
        """The family, with one ``NAME_total`` sample per label values."""
        family = CounterMetricFamily(self.name, self.help, labels=self.labelnames)
        for labels, value in sorted(self._values.items()):
            family.add_metric(labels, value)
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without its samples (for the registry's check of names)."""
        yield CounterMetricFamily(self.name, self.help, labels=self.labelnames)


@define(eq=False)
class Histogram(_Family):
    """Observations counted in buckets, exported as a prometheus_client histogram."""

    buckets: Sequence[float] = REQUEST_BUCKETS
    #: Per label values, how many observations fell in each bucket (not cumulative).
    _counts: dict[Labels, list[int]] = field(factory=dict)
    _sums: dict[Labels, float] = field(factory=dict)

    def observe(self, value: float, *labels: str) -> None:
        """Count ``value`` for ``labels``, in the first bucket that holds it."""
        if len(labels) != len(self.labelnames):
            self._refuse(labels)
        counts = self._counts.get(labels)
        if counts is None:
            counts = self._counts[labels] = [0] * (len(self.buckets) + 1)
        counts[bisect_left(self.buckets, value)] += 1
        self._sums[labels] = self._sums.get(labels, 0.0) + value

    def count(self, *labels: str) -> int:
        """How many values were observed for ``labels``."""
        return sum(self._counts.get(labels, ()))

    def collect(self) -> Iterator[Metric]:
        """The family: cumulative buckets (``le``), sum and count per label values."""
        family = HistogramMetricFamily(self.name, self.help, labels=self.labelnames)
        bounds = [*(floatToGoString(b) for b in self.buckets), "+Inf"]
        for labels, counts in sorted(self._counts.items()):
            cumulative = list(accumulate(counts))
            family.add_metric(
                labels, list(zip(bounds, cumulative, strict=True)), self._sums[labels]
            )
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without its samples (for the registry's check of names)."""
        yield HistogramMetricFamily(self.name, self.help, labels=self.labelnames)


@frozen
class Rates:
    """Requests answered over the last window, and how many of them failed."""

    window: float
    requests: int
    client_errors: int
    server_errors: int

    def per_minute(self, count: int) -> float:
        """``count`` as a rate per minute over the window."""
        return count * 60.0 / self.window if self.window else 0.0


@define
class RateWindow:
    """Counts of the requests of the last ``window`` seconds, in one-second slots."""

    clock: Callable[[], float]
    window: int = 300
    _slots: deque[list[int]] = field(factory=deque)

    def _slot(self) -> list[int]:
        now = int(self.clock())
        while self._slots and self._slots[0][0] <= now - self.window:
            self._slots.popleft()
        if not self._slots or self._slots[-1][0] != now:
            self._slots.append([now, 0, 0, 0])
        return self._slots[-1]

    def record(self, status: int) -> None:
        """Count one answered request with ``status``."""
        slot = self._slot()
        slot[1] += 1
        if 400 <= status < 500:
            slot[2] += 1
        elif status >= 500:
            slot[3] += 1

    def rates(self) -> Rates:
        """The counts over the window."""
        self._slot()
        return Rates(
            float(self.window),
            sum(s[1] for s in self._slots),
            sum(s[2] for s in self._slots),
            sum(s[3] for s in self._slots),
        )


class GatewayMetrics:
    """Every metric of one gateway process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lambgw_requests", "S3 requests answered.", ("operation", "status"))
        self.request_seconds = Histogram(
            "lambgw_request_duration_seconds",
            "Time from a request's headers to its last response byte.",
            ("operation",),
        )
        self.received_bytes = Counter(
            "lambgw_received_bytes", "Request body bytes received.", ("operation",)
        )
        self.sent_bytes = Counter("lambgw_sent_bytes", "Response body bytes sent.", ("operation",))
        for collector in (
            self.requests,
            self.request_seconds,
            self.received_bytes,
            self.sent_bytes,
        ):
            self.registry.register(collector)
        self.in_flight = self._gauge(
            "lambgw_requests_in_flight", "S3 requests being received or served."
        )
        self.uploads_open = self._gauge("lambgw_multipart_uploads_open", "Open multipart uploads.")
        self.spool_bytes = self._gauge(
            "lambgw_spool_bytes", "Bytes on disk in the spool, by area.", ("area",)
        )
        self.spool_free = self._gauge(
            "lambgw_spool_free_bytes", "Bytes free on the file system of the spool."
        )
        self.order_capacity = self._gauge(
            "lambgw_order_capacity_bytes", "Capacity of an order.", ("order",)
        )
        self.order_used = self._gauge(
            "lambgw_order_used_bytes", "Bytes used in an order.", ("order",)
        )
        self.order_expires = self._gauge(
            "lambgw_order_expiry_timestamp_seconds", "When an order expires.", ("order",)
        )
        self.network_seconds = Histogram(
            "lambgw_network_call_duration_seconds",
            "Time taken by calls to the storage network.",
            ("call",),
            NETWORK_BUCKETS,
        )
        self.network_errors = Counter(
            "lambgw_network_call_errors",
            "Calls to the storage network that failed (not its ordinary answers, such as "
            "no such key).",
            ("call", "error"),
        )
        self.registry.register(self.network_seconds)
        self.registry.register(self.network_errors)
        self.connections_open = self._gauge(
            "lambgw_connections_open", "Connections open on the S3 API."
        )
        self.connections_closed = Counter(
            "lambgw_connections_closed",
            "Connections the gateway closed: a request head or body too slow "
            "(header_timeout, slow_body), or one over the cap (at_cap).",
            ("reason",),
        )
        self.registry.register(self.connections_closed)
        self.spliced_bytes = Counter(
            "lambgw_upload_spliced_bytes",
            "Upload body bytes the kernel moved from a client's socket to the network's "
            "(splice), never read into the gateway.",
        )
        self.registry.register(self.spliced_bytes)

    def _gauge(self, name: str, help: str, labelnames: Labels = ()) -> Gauge:
        return Gauge(name, help, labelnames, registry=self.registry)

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format."""
        return generate_latest(self.registry).decode("utf-8")
