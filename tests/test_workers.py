"""Tests of the pieces of ``--workers`` that need no process: sums, log records, waits, config."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.logger import LogLevel, eventAsJSON
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from lambgw.config import MAX_WORKERS, ConfigError, cores, load
from lambgw.workers.admin import MetricTotals, merge, parse_exposition
from lambgw.workers.logs import LogRelay
from lambgw.workers.supervisor import (
    STARTED_KEY,
    WorkerProcess,
    describe_end,
    restart_delays,
    worker_command,
)

WORKER_1 = """\
# HELP lambgw_requests S3 requests answered.
# TYPE lambgw_requests counter
lambgw_requests_total{operation="PutObject",status="200"} 3
# HELP lambgw_request_duration_seconds Time from a request's headers to its last byte.
# TYPE lambgw_request_duration_seconds histogram
lambgw_request_duration_seconds_bucket{operation="PutObject",le="0.005"} 1
lambgw_request_duration_seconds_bucket{operation="PutObject",le="+Inf"} 3
lambgw_request_duration_seconds_sum{operation="PutObject"} 0.25
lambgw_request_duration_seconds_count{operation="PutObject"} 3
# HELP lambgw_requests_in_flight S3 requests being received or served.
# TYPE lambgw_requests_in_flight gauge
lambgw_requests_in_flight 2
# HELP lambgw_order_used_bytes Bytes used in an order.
# TYPE lambgw_order_used_bytes gauge
lambgw_order_used_bytes{order="AB"} 100
"""

WORKER_2 = """\
# HELP lambgw_requests S3 requests answered.
# TYPE lambgw_requests counter
lambgw_requests_total{operation="PutObject",status="200"} 4
lambgw_requests_total{operation="GetObject",status="200"} 1
# HELP lambgw_request_duration_seconds Time from a request's headers to its last byte.
# TYPE lambgw_request_duration_seconds histogram
lambgw_request_duration_seconds_bucket{operation="PutObject",le="0.005"} 0
lambgw_request_duration_seconds_bucket{operation="PutObject",le="+Inf"} 4
lambgw_request_duration_seconds_sum{operation="PutObject"} 0.5
lambgw_request_duration_seconds_count{operation="PutObject"} 4
# HELP lambgw_requests_in_flight S3 requests being received or served.
# TYPE lambgw_requests_in_flight gauge
lambgw_requests_in_flight 1
# HELP lambgw_order_used_bytes Bytes used in an order.
# TYPE lambgw_order_used_bytes gauge
lambgw_order_used_bytes{order="AB"} 120
"""


def values(text: str) -> dict[str, float]:
    """Every sample of an exposition, by name and labels."""
    return {k: v for family in parse_exposition(text) for k, v in family.samples.items()}


class MergeTests(SynchronousTestCase):
    """The supervisor's /metrics: the workers' expositions made one."""

    def test_counters_histograms_and_in_flight_add_up(self) -> None:
        """Counters, histogram buckets, sums and counts, and requests in flight are summed."""
        merged = values(merge([parse_exposition(WORKER_1), parse_exposition(WORKER_2)]))
        self.assertEqual(merged['lambgw_requests_total{operation="PutObject",status="200"}'], 7)
        self.assertEqual(merged['lambgw_requests_total{operation="GetObject",status="200"}'], 1)
        bucket = 'lambgw_request_duration_seconds_bucket{operation="PutObject",le="+Inf"}'
        self.assertEqual(merged[bucket], 7)
        self.assertEqual(merged['lambgw_request_duration_seconds_sum{operation="PutObject"}'], 0.75)
        self.assertEqual(merged["lambgw_requests_in_flight"], 3)

    def test_shared_gauges_from_the_first_worker(self) -> None:
        """A gauge of what the workers share (an order's used bytes) is the first's, not a sum."""
        merged = values(merge([parse_exposition(WORKER_1), parse_exposition(WORKER_2)]))
        self.assertEqual(merged['lambgw_order_used_bytes{order="AB"}'], 100)

    def test_headers_kept_once(self) -> None:
        """Each family's HELP and TYPE appear once, before its samples."""
        text = merge([parse_exposition(WORKER_1), parse_exposition(WORKER_2)])
        self.assertEqual(text.count("# TYPE lambgw_requests counter"), 1)
        self.assertLess(
            text.index("# TYPE lambgw_requests counter"), text.index("lambgw_requests_total")
        )

    def test_ended_worker_counts_kept(self) -> None:
        """The counts of a worker that ended stay in the sums; its in-flight gauge does not."""
        totals = MetricTotals()
        totals.answered(11, WORKER_1)
        totals.answered(12, WORKER_2)
        totals.ended(11)
        totals.answered(13, WORKER_1.replace("} 3\n", "} 1\n"))
        merged = values(totals.render([12, 13]))
        self.assertEqual(merged['lambgw_requests_total{operation="PutObject",status="200"}'], 8)
        self.assertEqual(merged["lambgw_requests_in_flight"], 3)

    def test_worker_without_answer_counted_as_last_seen(self) -> None:
        """A running worker that did not answer this time counts with its last answer."""
        totals = MetricTotals()
        totals.answered(11, WORKER_1)
        totals.answered(12, WORKER_2)
        totals.answered(12, WORKER_2)
        merged = values(totals.render([11, 12]))
        self.assertEqual(merged['lambgw_requests_total{operation="PutObject",status="200"}'], 7)


def record(**event: Any) -> bytes:
    """A log record as a worker writes it."""
    event.setdefault("log_level", LogLevel.info)
    event.setdefault("log_namespace", "lambgw.tap")
    event.setdefault("log_time", time.time())
    return b"\x1e" + eventAsJSON(event).encode() + b"\n"


class LogRelayTests(SynchronousTestCase):
    """A worker's log records, published again in the supervisor."""

    def test_records_split_anywhere(self) -> None:
        """Records cut at any byte are published whole, each as soon as its line ends."""
        got: list[dict[str, Any]] = []
        relay = LogRelay(2, got.append)
        data = record(log_format="one {n}", n=1) + record(log_format="two")
        relay.feed(data[:7])
        relay.feed(data[7:40])
        self.assertEqual(got, [])
        relay.feed(data[40:])
        self.assertEqual([e["log_format"] for e in got], ["one {n}", "two"])
        self.assertEqual(got[0]["n"], 1)
        self.assertEqual(got[0]["log_system"], "worker 2 lambgw.tap#info")

    def test_text_published_as_a_warning(self) -> None:
        """A line that is not a record (a traceback on stderr) is published as a warning."""
        got: list[dict[str, Any]] = []
        relay = LogRelay(1, got.append)
        relay.feed(b"Traceback (most recent call last):\n")
        relay.close()
        self.assertEqual(got[0]["line"], "Traceback (most recent call last):")
        self.assertEqual(got[0]["log_level"], LogLevel.warn)


class SupervisionTests(SynchronousTestCase):
    """Restart waits and how ends are told."""

    def test_restart_waits_double_up_to_30s(self) -> None:
        """A worker that keeps ending waits 1, 2, 4, ... then 30 s."""
        delays = restart_delays()
        self.assertEqual([next(delays) for _ in range(7)], [1, 2, 4, 8, 16, 30, 30])

    def test_ends_told(self) -> None:
        """A signal, an exit status and a clean exit are told apart."""
        killed = Failure(error.ProcessTerminated(signal=9))
        failed = Failure(error.ProcessTerminated(exitCode=1))
        done = Failure(error.ProcessDone(0))
        self.assertEqual(describe_end(killed), "was killed by signal 9")
        self.assertEqual(describe_end(failed), "exited with status 1")
        self.assertEqual(describe_end(done), "exited with status 0")


class WorkerCommandTests(SynchronousTestCase):
    def test_working_directory_not_on_the_module_path(self) -> None:
        """A worker started in a directory holding a ``twisted`` package runs the real one."""
        cwd = self.mktemp()
        os.makedirs(os.path.join(cwd, "twisted"))
        with open(os.path.join(cwd, "twisted", "__init__.py"), "w") as f:
            f.write("raise ImportError('the working directory was searched')\n")
        executable, flag, program = worker_command("lambgw", [])(1, "")[:3]
        ran = subprocess.run(
            [executable, flag, program, "--version"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((ran.returncode, ran.stderr), (0, ""))
        self.assertIn("twistd (the Twisted daemon)", ran.stdout)


class FakeSupervisor:
    """What a worker's process protocol reports to."""

    def __init__(self) -> None:
        self.reactor = Clock()
        self.events: list[dict[str, Any]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)


class FakeTransport:
    """A process transport that records the signals sent."""

    pid = 4711

    def __init__(self) -> None:
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class WorkerProcessTests(SynchronousTestCase):
    """A worker as the supervisor sees it."""

    def test_reload_waits_until_started(self) -> None:
        """A reload asked while the worker starts is sent once it says it has started."""
        supervisor = FakeSupervisor()
        worker = WorkerProcess(supervisor, 1, "")  # type: ignore[arg-type]
        transport = FakeTransport()
        worker.makeConnection(transport)  # type: ignore[arg-type]
        worker.reload()
        self.assertEqual(transport.signals, [])
        worker.outReceived(record(log_format="Worker started", **{STARTED_KEY: True}))
        self.assertEqual(transport.signals, ["HUP"])
        worker.reload()
        self.assertEqual(transport.signals, ["HUP", "HUP"])
        self.assertEqual(supervisor.events[0]["log_system"], "worker 1 lambgw.tap#info")


class WorkersConfigTests(SynchronousTestCase):
    """``--workers`` and ``[gateway] workers``."""

    def load(self, text: str = "", **options: str) -> Any:
        home = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, home)
        os.makedirs(os.path.join(home, "config"))
        with open(os.path.join(home, "config", "user.toml"), "w") as f:
            f.write(text)
        return load({"home": home, "account": "demo", **options})

    def test_default_one(self) -> None:
        """Without either, one process serves."""
        self.assertEqual(self.load().workers, 1)

    def test_file_and_flag(self) -> None:
        """The file sets it; the flag wins; ``auto`` is one per core."""
        self.assertEqual(self.load("[gateway]\nworkers = 3\n").workers, 3)
        self.assertEqual(self.load("[gateway]\nworkers = 3\n", workers="2").workers, 2)
        self.assertEqual(self.load('[gateway]\nworkers = "auto"\n').workers, cores())

    def test_bad_values_refused(self) -> None:
        """0, more than the most, and words other than auto are refused with the line."""
        with self.assertRaises(ConfigError) as raised:
            self.load("[gateway]\nworkers = 0\n")
        self.assertIn("line 2: [gateway] workers: expected", str(raised.exception))
        for bad in ("many", str(MAX_WORKERS + 1)):
            with self.assertRaises(ConfigError) as raised:
                self.load(workers=bad)
            self.assertIn("--workers: expected", str(raised.exception))
