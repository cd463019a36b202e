"""Prometheus metrics written in the text exposition format, with no client library.

Counters and histograms are kept in memory by the reactor thread; gauges are set afresh
before each scrape.  :class:`GatewayMetrics` names every metric the gateway exports.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate

from attrs import define, field, frozen

#: Latency buckets of S3 requests, in seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Latency buckets of network calls, in seconds.
NETWORK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Labels = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _sample(name: str, names: Sequence[str], values: Sequence[str], value: float) -> str:
    if not names:
        return f"{name} {_number(value)}"
    labels = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return f"{name}{{{labels}}} {_number(value)}"


@define
class Metric:
    """A metric family: a name, its help text, its type and its label names."""

    name: str
    help: str
    labelnames: Labels = ()

    kind = "untyped"

    def _check(self, labels: Labels) -> Labels:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, not {labels}")
        return labels

    def lines(self) -> Iterator[str]:
        """The family's samples, one exposition line each."""
        return iter(())

    def render(self) -> str:
        """The family in the text exposition format."""
        head = [f"# HELP {self.name} {_escape(self.help)}", f"# TYPE {self.name} {self.kind}"]
        return "\n".join([*head, *self.lines()]) + "\n"


@define
class Counter(Metric):
    """A value that only goes up, per label values."""

    _values: dict[Labels, float] = field(factory=dict)
    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the counter of ``labels``."""
        key = self._check(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, *labels: str) -> float:
        """The current value for ``labels``."""
        return self._values.get(labels, 0.0)

    def lines(self) -> Iterator[str]:
        """One ``NAME_total`` line per label values."""
        for labels, value in sorted(self._values.items()):
            yield _sample(self.name + "_total", self.labelnames, labels, value)


@define
class Gauge(Metric):
    """A value that is set, per label values; :meth:`clear` forgets them all."""

    _values: dict[Labels, float] = field(factory=dict)
    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        """Set the gauge of ``labels`` to ``value``."""
        self._values[self._check(labels)] = value

    def clear(self) -> None:
        """Forget every value (before setting the current ones)."""
        self._values.clear()

    def lines(self) -> Iterator[str]:
        """One line per label values."""
        for labels, value in sorted(self._values.items()):
            yield _sample(self.name, self.labelnames, labels, value)


@define
class Histogram(Metric):
    """Observations counted in cumulative buckets, with their sum and count."""

    buckets: Sequence[float] = REQUEST_BUCKETS
    #: Per label values, how many observations fell in each bucket (not cumulative).
    _counts: dict[Labels, list[int]] = field(factory=dict)
    _sums: dict[Labels, float] = field(factory=dict)
    kind = "histogram"

    def observe(self, value: float, *labels: str) -> None:
        """Count ``value`` for ``labels``, in the first bucket that holds it."""
        key = self._check(labels)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = [0] * (len(self.buckets) + 1)
        counts[bisect_left(self.buckets, value)] += 1
        self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, *labels: str) -> int:
        """How many values were observed for ``labels``."""
        return sum(self._counts.get(labels, ()))

    def lines(self) -> Iterator[str]:
        """The buckets (``le``), the sum and the count of each label values."""
        names = (*self.labelnames, "le")
        for labels, counts in sorted(self._counts.items()):
            bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
            cumulative = list(accumulate(counts))
            for bound, count in zip(bounds, cumulative, strict=True):
                yield _sample(self.name + "_bucket", names, (*labels, bound), count)
            yield _sample(self.name + "_sum", self.labelnames, labels, self._sums[labels])
            yield _sample(self.name + "_count", self.labelnames, labels, cumulative[-1])


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


@define
class GatewayMetrics:
    """Every metric of one gateway process."""

    requests: Counter = field(
        factory=lambda: Counter("lambgw_requests", "S3 requests answered.", ("operation", "status"))
    )
    request_seconds: Histogram = field(
        factory=lambda: Histogram(
            "lambgw_request_duration_seconds",
            "Time from a request's headers to its last response byte.",
            ("operation",),
        )
    )
    received_bytes: Counter = field(
        factory=lambda: Counter(
            "lambgw_received_bytes", "Request body bytes received.", ("operation",)
        )
    )
    sent_bytes: Counter = field(
        factory=lambda: Counter("lambgw_sent_bytes", "Response body bytes sent.", ("operation",))
    )
    in_flight: Gauge = field(
        factory=lambda: Gauge("lambgw_requests_in_flight", "S3 requests being received or served.")
    )
    uploads_open: Gauge = field(
        factory=lambda: Gauge("lambgw_multipart_uploads_open", "Open multipart uploads.")
    )
    spool_bytes: Gauge = field(
        factory=lambda: Gauge(
            "lambgw_spool_bytes", "Bytes on disk in the spool, by area.", ("area",)
        )
    )
    spool_free: Gauge = field(
        factory=lambda: Gauge(
            "lambgw_spool_free_bytes", "Bytes free on the file system of the spool."
        )
    )
    order_capacity: Gauge = field(
        factory=lambda: Gauge("lambgw_order_capacity_bytes", "Capacity of an order.", ("order",))
    )
    order_used: Gauge = field(
        factory=lambda: Gauge("lambgw_order_used_bytes", "Bytes used in an order.", ("order",))
    )
    order_expires: Gauge = field(
        factory=lambda: Gauge(
            "lambgw_order_expiry_timestamp_seconds", "When an order expires.", ("order",)
        )
    )
    network_seconds: Histogram = field(
        factory=lambda: Histogram(
            "lambgw_network_call_duration_seconds",
            "Time taken by calls to the storage network.",
            ("call",),
            NETWORK_BUCKETS,
        )
    )
    network_errors: Counter = field(
        factory=lambda: Counter(
            "lambgw_network_call_errors", "Failed calls to the storage network.", ("call", "error")
        )
    )

    def families(self) -> list[Metric]:
        """Every metric family, in the order they are exported."""
        return [
            self.requests,
            self.request_seconds,
            self.received_bytes,
            self.sent_bytes,
            self.in_flight,
            self.uploads_open,
            self.spool_bytes,
            self.spool_free,
            self.order_capacity,
            self.order_used,
            self.order_expires,
            self.network_seconds,
            self.network_errors,
        ]

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format."""
        return "".join(family.render() for family in self.families())
