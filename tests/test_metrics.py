"""Tests of the metrics text format, the timed network, requests in flight and the status page."""

from __future__ import annotations

import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lambgw.network.errors import NetworkUnavailable, NoSuchOrder, NoSuchPath
from lambgw.network.interface import Order
from lambgw.observe.admin import Monitor
from lambgw.observe.inflight import InFlight
from lambgw.observe.metrics import Counter, GatewayMetrics, Histogram, Rates, RateWindow
from lambgw.observe.network import TimedNetwork
from lambgw.observe.status import OpenUpload, StatusSnapshot, render_status
from lambgw.spooldir import SpoolDirectory

ORDER = "D9A585E80A92439D5DFFB384901F359A572F4E1F"


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``text`` as prometheus_client parses it, by name and labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def exposition(*collectors: Any) -> str:
    """The text prometheus_client writes for ``collectors``, in a registry of their own."""
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode("utf-8")


class TextFormatTests(SynchronousTestCase):
    """The metrics are written in the Prometheus text format."""

    def test_counter_parses(self) -> None:
        """A counter comes back from the parser as one counter family with its samples."""
        counter = Counter("lambgw_requests", "Requests.", ("operation", "status"))
        counter.inc("GetObject", "200")
        counter.inc("GetObject", "200", amount=2)
        (family,) = text_string_to_metric_families(exposition(counter))
        self.assertEqual((family.name, family.type), ("lambgw_requests", "counter"))
        self.assertEqual(
            [(s.name, s.labels, s.value) for s in family.samples],
            [("lambgw_requests_total", {"operation": "GetObject", "status": "200"}, 3.0)],
        )

    def test_label_escaping(self) -> None:
        """Quotes, backslashes and newlines in label values survive the round trip."""
        counter = Counter("lambgw_x", "X.", ("key",))
        value = 'a "quoted"\\path\nnext'
        counter.inc(value)
        self.assertEqual(parse(exposition(counter))[("lambgw_x_total", (("key", value),))], 1.0)

    def test_histogram_buckets(self) -> None:
        """Histogram buckets are cumulative, with the sum and the count."""
        histogram = Histogram("lambgw_t_seconds", "T.", ("op",), (0.1, 1.0))
        for value in (0.05, 0.5, 5.0):
            histogram.observe(value, "Get")
        (family,) = text_string_to_metric_families(exposition(histogram))
        self.assertEqual(family.type, "histogram")
        samples = parse(exposition(histogram))
        buckets = [
            samples[("lambgw_t_seconds_bucket", (("le", b), ("op", "Get")))]
            for b in ("0.1", "1.0", "+Inf")
        ]
        self.assertEqual(buckets, [1.0, 2.0, 3.0])
        self.assertEqual(samples[("lambgw_t_seconds_count", (("op", "Get"),))], 3.0)
        self.assertAlmostEqual(samples[("lambgw_t_seconds_sum", (("op", "Get"),))], 5.55)

    def test_histogram_bound_inclusive(self) -> None:
        """A value equal to a bucket's bound counts in that bucket (``le``)."""
        histogram = Histogram("lambgw_t_seconds", "T.", ("op",), (0.1, 1.0))
        histogram.observe(1.0, "Get")
        samples = parse(exposition(histogram))
        buckets = [
            samples[("lambgw_t_seconds_bucket", (("le", b), ("op", "Get")))]
            for b in ("0.1", "1.0", "+Inf")
        ]
        self.assertEqual(buckets, [0.0, 1.0, 1.0])
        self.assertEqual(histogram.count("Get"), 1)

    def test_wrong_labels(self) -> None:
        """A sample with the wrong number of labels is refused."""
        self.assertRaises(ValueError, Counter("lambgw_x", "X.", ("a",)).inc, "1", "2")

    def test_gateway_metrics_by_family(self) -> None:
        """Every family of the gateway parses with its name, type and samples."""
        metrics = GatewayMetrics()
        metrics.requests.inc("GetObject", "200")
        metrics.request_seconds.observe(0.02, "GetObject")
        metrics.sent_bytes.inc("GetObject", amount=10)
        metrics.order_used.labels(ORDER).set(1234)
        metrics.spool_bytes.labels("uploads").set(10)
        metrics.network_errors.inc("orders", "NetworkUnavailable")
        families = {f.name: f for f in text_string_to_metric_families(metrics.render())}
        self.assertEqual(
            {name: f.type for name, f in families.items()},
            {
                "lambgw_requests": "counter",
                "lambgw_request_duration_seconds": "histogram",
                "lambgw_received_bytes": "counter",
                "lambgw_sent_bytes": "counter",
                "lambgw_requests_in_flight": "gauge",
                "lambgw_multipart_uploads_open": "gauge",
                "lambgw_spool_bytes": "gauge",
                "lambgw_spool_free_bytes": "gauge",
                "lambgw_order_capacity_bytes": "gauge",
                "lambgw_order_used_bytes": "gauge",
                "lambgw_order_expiry_timestamp_seconds": "gauge",
                "lambgw_network_call_duration_seconds": "histogram",
                "lambgw_network_call_errors": "counter",
                "lambgw_connections_open": "gauge",
                "lambgw_connections_closed": "counter",
                "lambgw_upload_spliced_bytes": "counter",
            },
        )
        (sent,) = families["lambgw_sent_bytes"].samples
        self.assertEqual(
            (sent.name, sent.labels, sent.value),
            ("lambgw_sent_bytes_total", {"operation": "GetObject"}, 10.0),
        )
        (used,) = families["lambgw_order_used_bytes"].samples
        self.assertEqual((used.labels, used.value), ({"order": ORDER}, 1234.0))
        (errors,) = families["lambgw_network_call_errors"].samples
        self.assertEqual(errors.labels, {"call": "orders", "error": "NetworkUnavailable"})
        count = [
            s
            for s in families["lambgw_request_duration_seconds"].samples
            if s.name.endswith("_count")
        ]
        self.assertEqual([(s.labels, s.value) for s in count], [({"operation": "GetObject"}, 1.0)])


class RateWindowTests(SynchronousTestCase):
    """Request rates over a sliding window."""

    def test_old_requests_leave_the_window(self) -> None:
        """Requests older than the window no longer count."""
        clock = Clock()
        window = RateWindow(clock.seconds, window=60)
        window.record(200)
        window.record(503)
        clock.advance(30)
        window.record(404)
        self.assertEqual(window.rates(), Rates(60.0, 3, 1, 1))
        clock.advance(31)
        self.assertEqual(window.rates(), Rates(60.0, 1, 1, 0))


class FakeNetwork:
    """Answers ``orders`` after a delay on a clock, and fails ``order``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def orders(self, account: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.clock.callLater(0.2, d.callback, [])
        return d

    def order(self, account: str, order_id: str) -> Deferred[Any]:
        return fail(NoSuchOrder(order_id))


class TimedNetworkTests(SynchronousTestCase):
    """Network calls are timed and their errors counted."""

    def test_latency(self) -> None:
        """A call's time is observed under its name once it answers."""
        clock = Clock()
        metrics = GatewayMetrics()
        network = TimedNetwork(FakeNetwork(clock), metrics, clock.seconds)  # type: ignore[arg-type]
        d = network.orders("demo")
        self.assertEqual(metrics.network_seconds.count("orders"), 0)
        clock.advance(0.2)
        self.assertEqual(self.successResultOf(d), [])
        samples = parse(exposition(metrics.network_seconds))
        key = ("lambgw_network_call_duration_seconds_bucket", (("call", "orders"), ("le", "0.25")))
        self.assertEqual(samples[key], 1.0)

    def test_errors(self) -> None:
        """A call the network could not answer is counted by its error, and still fails."""
        clock = Clock()
        metrics = GatewayMetrics()
        failing = SimpleNamespace(orders=lambda account: fail(NetworkUnavailable("refused")))
        network = TimedNetwork(failing, metrics, clock.seconds)  # type: ignore[arg-type]
        self.failureResultOf(network.orders("demo"), NetworkUnavailable)
        self.assertEqual(metrics.network_errors.value("orders", "NetworkUnavailable"), 1)

    def test_answers_not_errors(self) -> None:
        """No such order or key is an answer: timed, failed to the caller, not an error."""
        clock = Clock()
        metrics = GatewayMetrics()
        fake = FakeNetwork(clock)
        network = TimedNetwork(fake, metrics, clock.seconds)  # type: ignore[arg-type]
        self.failureResultOf(network.order("demo", ORDER), NoSuchOrder)
        fake.head_object = lambda *args: fail(NoSuchPath("k"))  # type: ignore[attr-defined]
        self.failureResultOf(network.head_object("demo", ORDER, "k"), NoSuchPath)
        self.assertEqual(metrics.network_errors.value("order", "NoSuchOrder"), 0)
        self.assertEqual(metrics.network_errors.value("head_object", "NoSuchPath"), 0)
        self.assertEqual(metrics.network_seconds.count("order"), 1)
        families = {f.name: f for f in text_string_to_metric_families(metrics.render())}
        self.assertEqual(families["lambgw_network_call_errors"].samples, [])


class FakeTransport:
    """A connection that stays open until the test says it closed."""

    connected = True
    closing = False

    def loseConnection(self) -> None:
        self.closing = True


class FakeChannel:
    def __init__(self) -> None:
        self.transport = FakeTransport()


class FakeRequest:
    """A request that finishes when told."""

    def __init__(self, channel: FakeChannel | None, queued: int) -> None:
        self.channel = channel
        self.done: Deferred[None] = Deferred()

    def when_over(self, observer: Callable[[Failure | None], object]) -> None:
        self.done.addBoth(lambda result: observer(result if isinstance(result, Failure) else None))


class InFlightTests(SynchronousTestCase):
    """Requests in flight are counted and waited for."""

    def test_drain_waits_for_requests(self) -> None:
        """Draining fires with 0 once the last request in flight finishes."""
        clock = Clock()
        in_flight = InFlight(clock)
        make = in_flight.request_factory(FakeRequest)  # type: ignore[arg-type]
        first, second = make(None, 0), make(None, 1)
        d = in_flight.drain(30)
        first.done.callback(None)  # type: ignore[attr-defined]
        self.assertNoResult(d)
        second.done.errback(ConnectionError())  # type: ignore[attr-defined]
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_drain_deadline(self) -> None:
        """Draining gives up at its deadline with the number still in flight."""
        clock = Clock()
        in_flight = InFlight(clock)
        in_flight.request_factory(FakeRequest)(None, 0)  # type: ignore[arg-type]
        d = in_flight.drain(30)
        clock.advance(29)
        self.assertNoResult(d)
        clock.advance(1)
        self.assertEqual(self.successResultOf(d), 1)
        self.assertTrue(in_flight.draining)

    def test_drain_closes_connections(self) -> None:
        """A request finished while draining has its connection closed, and waited for."""
        clock = Clock()
        in_flight = InFlight(clock)
        channel = FakeChannel()
        request = in_flight.request_factory(FakeRequest)(channel, 0)  # type: ignore[arg-type]
        d = in_flight.drain(30)
        request.done.callback(None)  # type: ignore[attr-defined]
        self.assertTrue(channel.transport.closing)
        self.assertNoResult(d)
        channel.transport.connected = False
        clock.advance(0.05)
        self.assertEqual(self.successResultOf(d), 0)

    def test_drain_idle(self) -> None:
        """Draining with nothing in flight fires at once."""
        self.assertEqual(self.successResultOf(InFlight(Clock()).drain(30)), 0)


class StatusPageTests(SynchronousTestCase):
    """The status page shows orders as bars, uploads and rates."""

    def page(self, key: str = "photos/cat.jpg") -> str:
        order = Order(ORDER, "demo", 1000, 250, 0.0, 86400.0 * 30)
        upload = OpenUpload("u1", ORDER, key, 3, 3 * 2**20, 3600.0)
        snapshot = StatusSnapshot(
            "demo", "lambgw", 7200.0, 60.0, [order], [upload], Rates(300.0, 10, 2, 1), 1
        )
        return render_status(snapshot).decode("utf-8")

    def test_order_bar(self) -> None:
        """An order shows its id, a bar as wide as its used share, and its expiry."""
        page = self.page()
        self.assertIn(ORDER, page)
        self.assertIn('style="width: 25.0%"', page)
        self.assertIn("250 B of 1000 B (25%)", page)
        self.assertIn("1970-01-31", page)

    def test_upload_escaped(self) -> None:
        """Upload keys are escaped: markup in a key stays text."""
        page = self.page("<script>alert(1)</script>")
        self.assertNotIn("<script>", page)
        self.assertIn("&lt;script&gt;", page)

    def test_several_accounts(self) -> None:
        """With the orders of several accounts, each order names its account."""
        orders = [Order(ORDER, "alice", 10, 1, 0.0, 1e9), Order("B" * 40, "bob", 10, 2, 0.0, 1e9)]
        snapshot = StatusSnapshot("alice", "lambgw", 0.0, 0.0, orders, [], Rates(60, 0, 0, 0), 0)
        page = render_status(snapshot).decode("utf-8")
        self.assertIn("<th>Account</th>", page)
        self.assertIn("<td>bob</td>", page)

    def test_rates(self) -> None:
        """Rates are shown per minute."""
        self.assertIn("<b>2.0</b>requests / min", self.page())


class InlinePool:
    """A thread pool that runs its work at once, in the caller's thread."""

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        try:
            result = f(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class InlineReactor(Clock):
    """A clock whose calls from threads run at once."""

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class FakeOrders:
    def all(self) -> list[Order]:
        return [Order(ORDER, "demo", 1000, 10, 0.0, 1e9)]


class FakeServed:
    """An account served: a gateway with a spool directory, and its uploads."""

    def __init__(self, spool: str) -> None:
        self.gateway = SimpleNamespace(
            account="demo",
            spool_dir=spool,
            spool=SpoolDirectory(spool, spool, None),
            orders=FakeOrders(),
        )
        self.uploads = SimpleNamespace(pool=InlinePool(), open_uploads=lambda: succeed([]))


class ReadinessTests(SynchronousTestCase):
    """/readyz's checks: the network answers and the spool is writable."""

    def monitor(self, network: Any, spool: str) -> Monitor:
        served = [FakeServed(spool)]
        reactor = InlineReactor()
        return Monitor(
            lambda: served,  # type: ignore[arg-type, return-value]
            network,
            GatewayMetrics(),
            RateWindow(reactor.seconds),
            InFlight(reactor),
            reactor,
            "lambgw",
        )

    def test_ready(self) -> None:
        """With the network answering and a writable spool, nothing is wrong."""
        spool = self.mktemp()
        os.makedirs(spool)
        network = SimpleNamespace(orders=lambda account: succeed([]))
        self.assertEqual(self.successResultOf(self.monitor(network, spool).problems()), [])
        self.assertEqual(os.listdir(spool), [])

    def test_not_ready(self) -> None:
        """An unreachable network and a missing spool are both reported."""
        network = SimpleNamespace(orders=lambda account: fail(ConnectionRefusedError()))
        problems = self.successResultOf(self.monitor(network, self.mktemp()).problems())
        self.assertEqual(len(problems), 2)
        self.assertTrue(problems[0].startswith("network unreachable: ConnectionRefusedError"))
        self.assertTrue(problems[1].startswith("spool not writable"))

    def test_refused_at_once(self) -> None:
        """A node that refuses connections makes the gateway unready without waiting."""
        spool = self.mktemp()
        os.makedirs(spool)
        network = SimpleNamespace(orders=lambda account: Deferred())  # would retry for seconds
        monitor = self.monitor(network, spool)
        monitor.probe = lambda: fail(ConnectionRefusedError())
        problems = self.successResultOf(monitor.problems())
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("network unreachable: ConnectionRefusedError"))

    def test_draining(self) -> None:
        """A stopping gateway is not ready."""
        spool = self.mktemp()
        os.makedirs(spool)
        monitor = self.monitor(SimpleNamespace(orders=lambda account: succeed([])), spool)
        monitor.in_flight.drain(30)
        self.assertEqual(self.successResultOf(monitor.problems()), ["shutting down"])

    def test_starting(self) -> None:
        """A gateway whose S3 ports are not open yet is not ready, even if the network answers."""
        spool = self.mktemp()
        os.makedirs(spool)
        monitor = self.monitor(SimpleNamespace(orders=lambda account: succeed([])), spool)
        monitor.listening = lambda: False
        problems = self.successResultOf(monitor.problems())
        self.assertEqual(len(problems), 1)
        self.assertTrue(problems[0].startswith("starting"))

    def test_refresh_sets_gauges(self) -> None:
        """A scrape sets the order and spool gauges."""
        spool = self.mktemp()
        os.makedirs(spool)
        with open(os.path.join(spool, "body"), "wb") as f:
            f.write(b"b" * 42)
        monitor = self.monitor(SimpleNamespace(), spool)
        self.successResultOf(monitor.refresh())
        samples = parse(monitor.metrics.render())
        self.assertEqual(samples[("lambgw_order_capacity_bytes", (("order", ORDER),))], 1000)
        self.assertEqual(samples[("lambgw_spool_bytes", (("area", "bodies"),))], 42)
        self.assertEqual(samples[("lambgw_multipart_uploads_open", ())], 0)
